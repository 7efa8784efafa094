//! `ssh-hostkeys` and `ssh-userdir`.

use anyhow::bail;

use super::Run;
use super::homes::homes;
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

/// `ssh-userdir`: private keys (and their .pub), known_hosts, authorized_keys (unless kept),
/// agent sockets and ssh config leftovers of every account's ~/.ssh.
pub fn userdir(r: &mut Run) -> anyhow::Result<()> {
    for home in homes(&r.s)? {
        let dir = join(&home, ".ssh");
        for name in r.s.list(&dir)? {
            let p = join(&dir, &name);
            let kind = r.s.kind_of(&p)?;
            let why = if is_key_name(&name) {
                Some("user key")
            } else if matches!(name.as_str(), "known_hosts" | "known_hosts.old") {
                Some("hosts seen from the build")
            } else if matches!(name.as_str(), "authorized_keys" | "authorized_keys2") {
                (!r.plan.keep_authorized_keys).then_some("authorized keys")
            } else if kind == Some(Kind::File) && is_private_key(&r.s.read(&p)?.unwrap_or_default()) {
                Some("private key")
            } else {
                None
            };
            if let Some(why) = why {
                r.s.remove(&p, why)?;
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
}
