//! `user-accounts` and `ca-certificates` (both off by default).

use super::Run;
use super::homes::parse_passwd;
use super::scrub::{ActionKind, Kind, join};
use crate::chroot::cmd::ChrootCmd;

/// The uid range of ordinary accounts (Debian and RHEL agree; 65534 is nobody).
const USER_UIDS: std::ops::RangeInclusive<u32> = 1000..=59999;

/// `user-accounts`: ordinary accounts not listed in `keep`, their private groups, group
/// memberships, subordinate ids, homes under /home and mail spools.
pub fn user_accounts(r: &mut Run) -> anyhow::Result<()> {
    let Some(passwd) = r.s.read("/etc/passwd")? else { return Ok(()) };
    let passwd = String::from_utf8_lossy(&passwd).into_owned();
    let gone: Vec<_> =
        parse_passwd(&passwd).into_iter().filter(|a| USER_UIDS.contains(&a.uid) && !r.plan.keep_users.contains(&a.name)).collect();
    if gone.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = gone.iter().map(|a| a.name.clone()).collect();
    let detail = format!("accounts removed: {}", names.join(", "));
    for (file, private_groups) in [("/etc/passwd", false), ("/etc/shadow", false), ("/etc/group", true), ("/etc/gshadow", true)] {
        let Some(st) = r.s.stat(file)? else { continue };
        let Some(text) = r.s.read(file)? else { continue };
        let text = String::from_utf8_lossy(&text);
        let new = without_accounts(&text, &names, private_groups);
        if new != text {
            r.s.rewrite(file, new.as_bytes(), st.st_mode & 0o7777, &detail)?;
        }
    }
    for file in ["/etc/subuid", "/etc/subgid"] {
        let Some(text) = r.s.read(file)? else { continue };
        let text = String::from_utf8_lossy(&text);
        let new = without_accounts(&text, &names, false);
        if new != text {
            let mode = r.s.stat(file)?.map_or(0o644, |st| st.st_mode & 0o7777);
            r.s.rewrite(file, new.as_bytes(), mode, &detail)?;
        }
    }
    for a in &gone {
        if a.home.starts_with("/home/") && r.s.kind_of(&a.home)? == Some(Kind::Dir) {
            r.s.remove(&a.home, &format!("home of {}", a.name))?;
        }
        for spool in ["/var/mail", "/var/spool/mail"] {
            r.s.remove(&join(spool, &a.name), &format!("mail of {}", a.name))?;
        }
    }
    Ok(())
}

/// A passwd/shadow/group/gshadow/subuid text without the lines of `names`; in group files also
/// without those names in member lists (a group named like a removed user is its private group
/// and goes too). Pure.
pub fn without_accounts(text: &str, names: &[String], group_file: bool) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let mut f: Vec<String> = line.split(':').map(str::to_string).collect();
        if f.first().is_some_and(|n| names.contains(n)) {
            continue;
        }
        if group_file && let Some(members) = f.last_mut() {
            let kept: Vec<&str> = members.split(',').filter(|m| !m.is_empty() && !names.iter().any(|n| n == m)).collect();
            *members = kept.join(",");
        }
        out.push_str(&f.join(":"));
        out.push('\n');
    }
    out
}

/// Where administrators add their own CAs.
const LOCAL_CAS: &[&str] = &["/usr/local/share/ca-certificates", "/etc/pki/ca-trust/source/anchors", "/etc/pki/trust/anchors"];

/// `ca-certificates`: locally added CA certificates removed, the bundle rebuilt by the image's
/// own tool.
pub fn ca_certificates(r: &mut Run) -> anyhow::Result<()> {
    let before = r.s.actions().len();
    for d in LOCAL_CAS {
        r.s.clear_dir(d, |_| false, "locally added CA certificate")?;
    }
    if r.s.actions().len() == before {
        return Ok(());
    }
    let tools = [("/usr/sbin/update-ca-certificates", &["--fresh"][..]), ("/usr/bin/update-ca-trust", &["extract"][..])];
    for (tool, args) in tools {
        if r.s.kind_of(tool)?.is_some() {
            let line = format!("{tool} {}", args.join(" "));
            if !r.s.dry_run {
                let mut cmd = ChrootCmd::new(r.s.root.path(), tool);
                for a in args {
                    cmd = cmd.arg(*a);
                }
                crate::chroot::run::run_streaming(&cmd, "seal ca-certificates", r.events)?;
            }
            r.s.record(&line, ActionKind::Ran, "CA bundle rebuilt");
            return Ok(());
        }
    }
    r.notes.push("ca-certificates: no update-ca-certificates/update-ca-trust in the image; the bundle was not rebuilt".into());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_leave_every_file() {
        let names = vec!["debian".to_string()];
        let passwd = "root:x:0:0:root:/root:/bin/bash\ndebian:x:1000:1000::/home/debian:/bin/bash\n";
        assert_eq!(without_accounts(passwd, &names, false), "root:x:0:0:root:/root:/bin/bash\n");
        let group = "adm:x:4:syslog,debian\nsudo:x:27:debian\ndebian:x:1000:\n";
        assert_eq!(without_accounts(group, &names, true), "adm:x:4:syslog\nsudo:x:27:\n");
    }
}
