//! `machine-id`, `random-seed` and `hostname`.

use super::Run;
use super::scrub::Kind;

/// `machine-id`: /etc/machine-id emptied (or "uninitialized"), never deleted: a missing file
/// breaks read-only /etc and starts firstboot on some distributions. The D-Bus copy becomes a
/// link to it.
pub fn machine_id(r: &mut Run) -> anyhow::Result<()> {
    let content: &[u8] = if r.plan.machine_id_uninitialized { b"uninitialized\n" } else { b"" };
    let detail = if r.plan.machine_id_uninitialized { "\"uninitialized\": first boot" } else { "emptied: a new id on first boot" };
    r.s.rewrite("/etc/machine-id", content, 0o444, detail)?;
    let dbus = "/var/lib/dbus/machine-id";
    match r.s.kind_of(dbus)? {
        Some(Kind::File) => {
            r.s.remove(dbus, "D-Bus copy of the machine id")?;
            r.s.symlink("/etc/machine-id", dbus, "D-Bus reads the new id")?;
        }
        Some(Kind::Link) => r.s.symlink("/etc/machine-id", dbus, "D-Bus reads the new id")?,
        _ => {}
    }
    Ok(())
}

/// Seeds and per-machine secrets the kernel and systemd keep on disk.
const SEEDS: &[&str] = &[
    "/var/lib/systemd/random-seed",
    "/var/lib/urandom/random-seed",
    "/var/lib/random-seed",
    "/var/lib/systemd/credential.secret",
    "/boot/efi/loader/random-seed",
];

/// `random-seed`: clones must not start from the same entropy.
pub fn random_seed(r: &mut Run) -> anyhow::Result<()> {
    for p in SEEDS {
        r.s.remove(p, "random seed")?;
    }
    Ok(())
}

/// The names of /etc/hostname that identify nobody.
pub fn is_neutral_hostname(h: &str) -> bool {
    matches!(h, "" | "localhost" | "localhost.localdomain" | "(none)")
}

/// `hostname`: a neutral /etc/hostname, and /etc/hosts without lines naming the build host or
/// the image's previous name.
pub fn hostname(r: &mut Run) -> anyhow::Result<()> {
    let name = format!("{}\n", r.plan.hostname);
    r.s.rewrite("/etc/hostname", name.as_bytes(), 0o644, "neutral name")?;
    let mut names: Vec<String> = r.old_hostname.iter().chain(r.cx.build_hostname.iter()).cloned().collect();
    names.retain(|n| !is_neutral_hostname(n) && n != &r.plan.hostname);
    if let Some(hosts) = r.s.read("/etc/hosts")? {
        let text = String::from_utf8_lossy(&hosts);
        let kept = hosts_without(&text, &names);
        if kept != text {
            r.s.rewrite("/etc/hosts", kept.as_bytes(), 0o644, &format!("entries for {} removed", names.join(", ")))?;
        }
    }
    Ok(())
}

/// `/etc/hosts` without the lines whose names include one of `names` (short or as the first
/// label of a FQDN), with a `127.0.0.1 localhost` line kept or added. Pure.
pub fn hosts_without(text: &str, names: &[String]) -> String {
    let mut out = String::new();
    let mut has_localhost = false;
    for line in text.lines() {
        let body = line.split('#').next().unwrap_or("");
        let mut fields = body.split_whitespace();
        let addr = fields.next();
        let hosts: Vec<&str> = fields.collect();
        let hit = hosts.iter().any(|h| names.iter().any(|n| h == n || h.split('.').next() == Some(n.as_str())));
        if hit {
            continue;
        }
        if addr == Some("127.0.0.1") && hosts.contains(&"localhost") {
            has_localhost = true;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !has_localhost {
        out.insert_str(0, "127.0.0.1 localhost\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lines_of_the_build_go() {
        let t =
            "127.0.0.1 localhost\n127.0.1.1 upstream-builder.example upstream-builder\n::1 ip6-localhost\n10.1.1.1 ci-runner-7 # build\n";
        let names = vec!["upstream-builder".to_string(), "ci-runner-7".to_string()];
        assert_eq!(hosts_without(t, &names), "127.0.0.1 localhost\n::1 ip6-localhost\n");
        assert_eq!(hosts_without("::1 localhost\n", &[]), "127.0.0.1 localhost\n::1 localhost\n");
        assert!(is_neutral_hostname("localhost") && !is_neutral_hostname("web-1"));
    }
}
