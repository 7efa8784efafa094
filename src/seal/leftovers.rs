//! The file scrubs: provisioning leftovers, histories, logs, temporary files, package caches,
//! crash dumps, login records and backup copies.

use super::Run;
use super::homes::homes;
use super::scrub::{Kind, base, join};

/// Image paths every build may leave (imgforge's own run directory, tool state of
/// configuration-management runs).
const BUILD_LEFTOVERS: &[&str] =
    &[crate::chroot::run::RUN_DIR, "/var/tmp/imgforge", "/root/.ansible", "/root/.ansible_async", "/root/.cache/salt"];

/// `provisioner-files`: what the build copied in for provisioning only, and the `[seal] scrub`
/// paths (overwritten first, see [`super::scrub::Scrubber::set_scrub`]).
pub fn provisioner_files(r: &mut Run) -> anyhow::Result<()> {
    let mut paths: Vec<String> = BUILD_LEFTOVERS.iter().map(|p| (*p).to_string()).collect();
    paths.extend(r.cx.provisioner_paths.iter().cloned());
    paths.extend(r.plan.provisioner_paths.iter().cloned());
    for p in paths {
        r.s.remove(&p, "provisioning only")?;
    }
    for p in &r.plan.scrub {
        if !r.s.remove(p, "[seal] scrub")? {
            r.notes.push(format!("[seal] scrub: {p} is not in the image"));
        }
    }
    Ok(())
}

/// History files, relative to a home directory.
const HISTORIES: &[&str] = &[
    ".bash_history",
    ".zsh_history",
    ".zhistory",
    ".history",
    ".sh_history",
    ".ash_history",
    ".python_history",
    ".lesshst",
    ".mysql_history",
    ".psql_history",
    ".sqlite_history",
    ".node_repl_history",
    ".rediscli_history",
    ".viminfo",
    ".wget-hsts",
    ".local/share/fish/fish_history",
];

/// `shell-history`: histories of root and every user.
pub fn shell_history(r: &mut Run) -> anyhow::Result<()> {
    for home in homes(&r.s)? {
        for h in HISTORIES {
            r.s.remove(&join(&home, h), "history")?;
        }
    }
    Ok(())
}

/// Login records: the `utmp` operation's, left alone by `logfiles`.
const UTMP: &[&str] = &["/var/log/wtmp", "/var/log/btmp", "/var/log/lastlog", "/var/log/faillog"];

/// Whether a log file name is a rotated copy (removed rather than truncated: an empty `.gz`
/// is not a valid archive).
pub fn is_rotated(name: &str) -> bool {
    const ARCHIVES: &[&str] = &[".gz", ".xz", ".bz2", ".zst", ".lz4", ".old"];
    if ARCHIVES.iter().any(|s| name.ends_with(s)) {
        return true;
    }
    // name.1, name.2 … and logrotate's dateext name-20240103
    let tail = name.rsplit(['.', '-']).next().unwrap_or("");
    let sep = name.len().checked_sub(tail.len() + 1).and_then(|i| name.as_bytes().get(i).copied());
    !tail.is_empty()
        && tail.bytes().all(|b| b.is_ascii_digit())
        && match sep {
            Some(b'.') => tail.len() <= 3,
            Some(b'-') => tail.len() == 8 || tail.len() == 10,
            _ => false,
        }
}

/// `logfiles`: every file under /var/log emptied in place (directories, owners and modes
/// kept), rotated copies and journal files removed (the journal directory is named after the
/// build's machine id).
pub fn logfiles(r: &mut Run) -> anyhow::Result<()> {
    for (p, k) in r.s.walk("/var/log")? {
        if UTMP.contains(&p.as_str()) {
            continue;
        }
        let in_journal = p.starts_with("/var/log/journal/");
        match k {
            Kind::File if in_journal || is_rotated(base(&p)) => {
                r.s.remove(&p, if in_journal { "journal" } else { "rotated log" })?;
            }
            Kind::File => {
                r.s.truncate(&p, "log")?;
            }
            Kind::Dir if in_journal && is_machine_id(base(&p)) => {
                r.s.remove(&p, "journal of the build's machine id")?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn is_machine_id(name: &str) -> bool {
    name.len() == 32 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `tmp-files`: the contents of /tmp and /var/tmp.
pub fn tmp_files(r: &mut Run) -> anyhow::Result<()> {
    r.s.clear_dir("/tmp", |_| false, "temporary file")?;
    r.s.clear_dir("/var/tmp", |_| false, "temporary file")?;
    Ok(())
}

/// `package-cache`: downloaded packages and package-manager caches.
pub fn package_cache(r: &mut Run) -> anyhow::Result<()> {
    for name in r.s.list("/var/cache/apt/archives")? {
        if name.ends_with(".deb") {
            r.s.remove(&join("/var/cache/apt/archives", &name), "downloaded package")?;
        }
    }
    r.s.clear_dir("/var/cache/apt/archives/partial", |_| false, "partial download")?;
    for name in r.s.list("/var/cache/apt")? {
        if name.ends_with(".bin") {
            r.s.remove(&join("/var/cache/apt", &name), "apt cache")?;
        }
    }
    if r.plan.apt_lists {
        r.s.clear_dir("/var/lib/apt/lists", |n| n == "partial" || n == "lock", "apt package lists")?;
        r.s.clear_dir("/var/lib/apt/lists/partial", |_| false, "apt package lists")?;
    }
    for d in ["/var/cache/dnf", "/var/cache/yum", "/var/cache/zypp/packages"] {
        r.s.clear_dir(d, |_| false, "package cache")?;
    }
    r.s.remove("/root/.cache/pip", "pip cache")?;
    Ok(())
}

/// `crash-data`: core dumps and crash reports.
pub fn crash_data(r: &mut Run) -> anyhow::Result<()> {
    for d in ["/var/crash", "/var/lib/systemd/coredump", "/var/spool/abrt", "/var/lib/apport/coredump", "/var/tmp/abrt"] {
        r.s.clear_dir(d, |_| false, "crash data")?;
    }
    Ok(())
}

/// `utmp`: login records emptied (owner and mode kept).
pub fn utmp(r: &mut Run) -> anyhow::Result<()> {
    for p in UTMP {
        r.s.truncate(p, "login records")?;
    }
    Ok(())
}

/// Whether a file under /etc is a backup copy left by an account tool or package manager.
pub fn is_backup(path: &str) -> bool {
    const ACCOUNT: &[&str] = &["/etc/passwd-", "/etc/shadow-", "/etc/group-", "/etc/gshadow-", "/etc/subuid-", "/etc/subgid-"];
    const SUFFIXES: &[&str] = &[
        ".dpkg-old",
        ".dpkg-dist",
        ".dpkg-new",
        ".dpkg-bak",
        ".dpkg-tmp",
        ".rpmsave",
        ".rpmnew",
        ".rpmorig",
        ".ucf-old",
        ".ucf-dist",
        ".ucf-new",
        "~",
    ];
    ACCOUNT.contains(&path) || SUFFIXES.iter().any(|s| path.ends_with(s))
}

/// `backup-files`: /etc/passwd- and friends, package-manager and editor backups under /etc.
pub fn backup_files(r: &mut Run) -> anyhow::Result<()> {
    for (p, k) in r.s.walk("/etc")? {
        if k != Kind::Dir && is_backup(&p) {
            r.s.remove(&p, "backup copy")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_names() {
        for y in ["syslog.1", "syslog.2.gz", "dpkg.log.12", "messages-20240103", "auth.log.old", "x.zst"] {
            assert!(is_rotated(y), "{y}");
        }
        for n in ["syslog", "auth.log", "cloud-init.log", "Xorg.0.log", "php8.2-fpm.log", "boot.log"] {
            assert!(!is_rotated(n), "{n}");
        }
    }

    #[test]
    fn backups() {
        assert!(is_backup("/etc/shadow-") && is_backup("/etc/ssh/sshd_config.ucf-old") && is_backup("/etc/fstab~"));
        assert!(!is_backup("/etc/shadow") && !is_backup("/etc/default/grub"));
    }
}
