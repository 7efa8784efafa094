//! `ssh-hostkeys` and `ssh-userdir`.

use anyhow::bail;

use super::Run;
use super::catalog::Op;
use super::homes::homes;
use super::inventory::{Origin, SshInventory};
use super::plan::UserKeyFiles;
use super::report::Kept;
use super::scrub::{Kind, join};

/// The oneshot unit installed when nothing else in the image regenerates SSH host keys.
pub const KEYGEN_UNIT: &str = "[Unit]\nDescription=Generate SSH host keys on first boot (installed by imgforge)\nConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key\nBefore=ssh.service sshd.service\n\n[Service]\nType=oneshot\nExecStart=/usr/bin/ssh-keygen -A\n\n[Install]\nWantedBy=multi-user.target ssh.service sshd.service\n";

/// Where that unit goes.
pub const KEYGEN_UNIT_PATH: &str = "/etc/systemd/system/imgforge-ssh-keygen.service";
const KEYGEN_WANTS: &str = "/etc/systemd/system/multi-user.target.wants/imgforge-ssh-keygen.service";

/// Units of distributions whose sshd regenerates its own keys (RHEL family, Fedora, SUSE).
const NATIVE_REGENERATORS: &[&str] = &[
    "/usr/lib/systemd/system/sshd-keygen.service",
    "/usr/lib/systemd/system/sshd-keygen@.service",
    "/lib/systemd/system/sshd-keygen.service",
    "/lib/systemd/system/sshd-keygen@.service",
    "/usr/lib/systemd/system/sshd-gen-keys-start.service",
];

/// `ssh-hostkeys`: removes the host keys, then makes sure something makes new ones on first
/// boot, or fails.
pub fn hostkeys(r: &mut Run) -> anyhow::Result<()> {
    for name in r.s.list("/etc/ssh")? {
        if name.starts_with("ssh_host_") {
            r.s.remove(&join("/etc/ssh", &name), "host key")?;
        }
    }
    if r.s.kind_of("/usr/sbin/sshd")?.is_none() {
        r.notes.push("ssh-hostkeys: no sshd in the image, no regenerator needed".into());
        return Ok(());
    }
    for k in NATIVE_REGENERATORS {
        if r.s.kind_of(k)?.is_some() {
            r.ssh_regenerators.push((*k).to_string());
            return Ok(());
        }
    }
    let systemd = r.s.kind_of("/usr/lib/systemd/systemd")?.is_some() || r.s.kind_of("/lib/systemd/systemd")?.is_some();
    if systemd && r.plan.install_keygen_unit {
        r.s.mkdir_all("/etc/systemd/system/multi-user.target.wants", 0o755)?;
        r.s.rewrite(KEYGEN_UNIT_PATH, KEYGEN_UNIT.as_bytes(), 0o644, "first-boot ssh-keygen -A")?;
        r.s.symlink(KEYGEN_UNIT_PATH, KEYGEN_WANTS, "enabled")?;
        r.ssh_regenerators.push(KEYGEN_UNIT_PATH.to_string());
        return Ok(());
    }
    if cloud_init_ssh_module(r)? {
        r.ssh_regenerators.push("cloud-init ssh module (instance state cleaned)".into());
        return Ok(());
    }
    let why = if systemd { "[seal.ssh-hostkeys] install_unit = false" } else { "the image has no systemd for imgforge's keygen unit" };
    bail!(
        "nothing in the image would regenerate SSH host keys on first boot ({why}, no sshd-keygen unit, no cloud-init ssh module with clean state): sshd would not start; install one, or disable ssh-hostkeys"
    )
}

/// cloud-init regenerates host keys on a new instance when its ssh module runs and its state
/// is cleaned (the `cloud-init` operation).
fn cloud_init_ssh_module(r: &Run) -> anyhow::Result<bool> {
    if !r.plan.enabled.contains(&super::catalog::Op::CloudInit) || r.s.kind_of("/usr/bin/cloud-init")?.is_none() {
        return Ok(false);
    }
    let cfg = r.s.read("/etc/cloud/cloud.cfg")?.unwrap_or_default();
    Ok(String::from_utf8_lossy(&cfg).lines().any(|l| matches!(l.trim(), "- ssh" | "- [ssh, once]" | "- [ssh, always]")))
}

/// Private key file names ssh-keygen uses.
fn is_key_name(name: &str) -> bool {
    let base = name.strip_suffix(".pub").unwrap_or(name);
    base.starts_with("id_") && !base.contains('.')
}

/// What `ssh-userdir` does with one `authorized_keys` or `known_hosts` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Remove it, with this reason.
    Remove(String),
    /// Keep it, with this reason (listed as kept in the report).
    Keep(String),
    /// Keep the recipe's lines only: rewrite with `content` (detail for the change, reason for
    /// the kept list).
    Strip {
        /// The recipe's lines.
        content: Vec<u8>,
        /// Why it was rewritten.
        detail: String,
        /// Why it was kept.
        reason: String,
    },
}

/// The decision for a file of kind `what` ("authorized keys") under the option `key`
/// (`authorized_keys`) set to `policy`, given its origin. Pure.
pub fn judge(policy: UserKeyFiles, origin: Origin, what: &str, key: &str) -> Verdict {
    match (policy, origin) {
        (UserKeyFiles::Keep, _) => Verdict::Keep(format!("[seal.ssh-userdir] {key} = \"keep\"")),
        (UserKeyFiles::RemoveAll, _) => Verdict::Remove(format!("{what} ({key} = \"remove-all\")")),
        (UserKeyFiles::RemoveUpstream, Origin::Unknown) => {
            Verdict::Remove(format!("{what}; sealed outside a build, so counted as the upstream's"))
        }
        (UserKeyFiles::RemoveUpstream, Origin::Upstream) => Verdict::Remove(format!("{what} that came with the upstream image")),
        (UserKeyFiles::RemoveUpstream, Origin::Created) => Verdict::Keep("created by the recipe's provisioners".into()),
        (UserKeyFiles::RemoveUpstream, Origin::Changed { dropped: 0, .. }) => {
            Verdict::Keep("changed by the recipe's provisioners (none of the upstream's lines left)".into())
        }
        (UserKeyFiles::RemoveUpstream, Origin::Changed { rest, dropped }) => Verdict::Strip {
            content: rest,
            detail: format!("the upstream's {dropped} line(s) removed, the recipe's kept"),
            reason: format!("changed by the recipe's provisioners; the {dropped} line(s) the upstream had were removed"),
        },
    }
}

/// `ssh-userdir`: private keys (and their .pub), whatever their origin; `known_hosts` and
/// `authorized_keys` by origin and the options (by default the upstream's go and the recipe's
/// stay, see `inventory`).
pub fn userdir(r: &mut Run) -> anyhow::Result<()> {
    let inventory = r.cx.ssh_inventory.as_ref();
    if inventory.is_none() && [r.plan.authorized_keys, r.plan.known_hosts].contains(&UserKeyFiles::RemoveUpstream) {
        r.notes.push(
            "ssh-userdir: sealed outside a build, nothing tells the recipe's authorized_keys/known_hosts from the upstream's: all removed"
                .into(),
        );
    }
    for home in homes(&r.s)? {
        let dir = join(&home, ".ssh");
        for name in r.s.list(&dir)? {
            let p = join(&dir, &name);
            let kind = r.s.kind_of(&p)?;
            let content = if kind == Some(Kind::File) { r.s.read(&p)? } else { None };
            let origin = || SshInventory::origin(inventory, &p, content.as_deref());
            let verdict = if is_key_name(&name) {
                Verdict::Remove(match origin() {
                    Origin::Upstream => "user key from the upstream image".into(),
                    Origin::Created | Origin::Changed { .. } => "user key made during provisioning".into(),
                    Origin::Unknown => "user key".into(),
                })
            } else if matches!(name.as_str(), "known_hosts" | "known_hosts.old") {
                judge(r.plan.known_hosts, origin(), "hosts seen by an earlier machine", "known_hosts")
            } else if matches!(name.as_str(), "authorized_keys" | "authorized_keys2") {
                judge(r.plan.authorized_keys, origin(), "authorized keys", "authorized_keys")
            } else if content.as_deref().is_some_and(is_private_key) {
                Verdict::Remove("private key".into())
            } else {
                continue;
            };
            match verdict {
                Verdict::Remove(why) => {
                    r.s.remove(&p, &why)?;
                }
                Verdict::Keep(reason) => r.kept.push(Kept { op: Op::SshUserdir, path: p, reason }),
                Verdict::Strip { content, detail, reason } => {
                    r.s.rewrite(&p, &content, 0o600, &detail)?;
                    r.kept.push(Kept { op: Op::SshUserdir, path: p, reason });
                }
            }
        }
    }
    Ok(())
}

/// Whether a file's content starts like a private key (PEM, OpenSSH, PuTTY).
pub fn is_private_key(data: &[u8]) -> bool {
    let head = String::from_utf8_lossy(&data[..data.len().min(256)]).into_owned();
    let head = head.trim_start();
    (head.starts_with("-----BEGIN ") && head.lines().next().is_some_and(|l| l.contains("PRIVATE KEY")))
        || head.starts_with("PuTTY-User-Key-File")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names() {
        assert!(is_key_name("id_ed25519") && is_key_name("id_rsa.pub") && is_key_name("id_ecdsa_sk"));
        assert!(!is_key_name("config") && !is_key_name("id_rsa.bak.pub"));
        assert!(is_private_key(b"-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n"));
        assert!(!is_private_key(b"ssh-ed25519 AAAA user@host\n"));
    }

    #[test]
    fn verdicts() {
        let j = |p, o| judge(p, o, "authorized keys", "authorized_keys");
        use UserKeyFiles::*;
        assert_eq!(j(RemoveUpstream, Origin::Upstream), Verdict::Remove("authorized keys that came with the upstream image".into()));
        assert!(matches!(j(RemoveUpstream, Origin::Unknown), Verdict::Remove(w) if w.contains("outside a build")));
        assert_eq!(j(RemoveUpstream, Origin::Created), Verdict::Keep("created by the recipe's provisioners".into()));
        assert!(matches!(j(RemoveUpstream, Origin::Changed { rest: b"k\n".to_vec(), dropped: 0 }), Verdict::Keep(_)));
        let v = j(RemoveUpstream, Origin::Changed { rest: b"k\n".to_vec(), dropped: 2 });
        assert!(matches!(&v, Verdict::Strip { content, reason, .. } if content == b"k\n" && reason.contains("2 line(s)")), "{v:?}");
        for o in [Origin::Created, Origin::Upstream, Origin::Unknown] {
            assert!(matches!(j(RemoveAll, o.clone()), Verdict::Remove(w) if w.contains("remove-all")));
            assert_eq!(j(Keep, o), Verdict::Keep("[seal.ssh-userdir] authorized_keys = \"keep\"".into()));
        }
    }
}
