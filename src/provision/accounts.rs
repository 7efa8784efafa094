//! `[system]` and `[[user]]` applied in the image: time zone, locale, users (the image's own
//! useradd/usermod, chrooted in the build sandbox), passwords (written into /etc/shadow, never
//! passed on a command line), authorized_keys. Every file is reached through the image root
//! (no symlink leads out of it).

use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use nix::fcntl::OFlag;

use super::plan::{AccountsPlan, Password, UserPlan};
use crate::chroot::cmd::ChrootCmd;
use crate::chroot::resolve::Root;
use crate::chroot::run::run_streaming;
use crate::progress::Events;

/// Applies the plan.
pub fn run(root: &Root, label: &str, p: &AccountsPlan, events: &Events) -> anyhow::Result<()> {
    if let Some(tz) = &p.timezone {
        timezone(root, tz)?;
        events.output(label, &format!("time zone {tz}"));
    }
    if let Some(l) = &p.locale {
        locale(root, label, l, events)?;
    }
    for u in &p.users {
        user(root, label, u, events)?;
    }
    set_password(root, "root", &p.root_password, events)?;
    Ok(())
}

fn read_text(root: &Root, path: &str) -> anyhow::Result<String> {
    Ok(String::from_utf8_lossy(&root.read(Path::new(path))?.unwrap_or_default()).into_owned())
}

fn timezone(root: &Root, tz: &str) -> anyhow::Result<()> {
    let zone = PathBuf::from("/usr/share/zoneinfo").join(tz);
    if !root.exists(&zone)? {
        bail!("[system] timezone {tz}: the image has no {} (is tzdata installed?)", zone.display());
    }
    root.remove_file(Path::new("/etc/localtime"))?;
    root.symlink(&zone, Path::new("/etc/localtime"))?;
    if root.exists(Path::new("/etc/timezone"))? || root.exists(Path::new("/etc/debian_version"))? {
        root.write(Path::new("/etc/timezone"), format!("{tz}\n").as_bytes(), 0o644)?;
    }
    Ok(())
}

fn locale(root: &Root, label: &str, l: &str, events: &Events) -> anyhow::Result<()> {
    let line = format!("LANG={l}\n");
    if root.exists(Path::new("/etc/default"))? {
        root.write(Path::new("/etc/default/locale"), line.as_bytes(), 0o644)?;
    }
    root.write(Path::new("/etc/locale.conf"), line.as_bytes(), 0o644)?;
    let generator = ["/usr/sbin/locale-gen", "/sbin/locale-gen"].into_iter().find(|p| root.exists(Path::new(p)).unwrap_or(false));
    match (generator, root.exists(Path::new("/etc/locale.gen"))?) {
        (Some(g), true) => {
            let text = read_text(root, "/etc/locale.gen")?;
            let charset = l.split_once('.').map_or("ISO-8859-1", |(_, c)| c);
            let wanted = format!("{l} {charset}");
            let mut found = false;
            let mut out: Vec<String> = text
                .lines()
                .map(|x| {
                    let bare = x.trim_start_matches('#').trim();
                    if bare == wanted {
                        found = true;
                        wanted.clone()
                    } else {
                        x.to_string()
                    }
                })
                .collect();
            if !found {
                out.push(wanted);
            }
            root.write(Path::new("/etc/locale.gen"), (out.join("\n") + "\n").as_bytes(), 0o644)?;
            run_streaming(&ChrootCmd::new(root.path(), g), label, events).context("locale-gen failed")?;
            events.output(label, &format!("locale {l} (generated)"));
        }
        _ => events.notice(&format!("[system] locale {l}: LANG is set, but the image has no locale-gen to generate it (install locales)")),
    }
    Ok(())
}

fn user(root: &Root, label: &str, u: &UserPlan, events: &Events) -> anyhow::Result<()> {
    let groups = read_text(root, "/etc/group")?;
    let missing: Vec<&str> = u.groups.iter().map(String::as_str).filter(|g| super::owner::lookup(&groups, g).is_none()).collect();
    if !missing.is_empty() {
        bail!("[[user]] {}: the image has no group {} (create it in an earlier layer, or drop it)", u.name, missing.join(", "));
    }
    let passwd = read_text(root, "/etc/passwd")?;
    let exists = super::owner::lookup(&passwd, &u.name).is_some();
    let tool = if exists { "usermod" } else { "useradd" };
    let program = ["/usr/sbin/", "/sbin/"]
        .iter()
        .map(|d| format!("{d}{tool}"))
        .find(|p| root.exists(Path::new(p)).unwrap_or(false))
        .with_context(|| format!("[[user]] {}: the image has no {tool} (the passwd or shadow-utils package)", u.name))?;
    let mut cmd = ChrootCmd::new(root.path(), &program);
    if !exists {
        cmd = cmd.arg("--create-home");
    }
    if let Some(id) = u.uid {
        cmd = cmd.arg("--uid").arg(id.to_string());
    }
    if let Some(s) = &u.shell {
        cmd = cmd.arg("--shell").arg(s);
    }
    if !u.groups.is_empty() {
        if exists {
            cmd = cmd.arg("--append");
        }
        cmd = cmd.arg("--groups").arg(u.groups.join(","));
    }
    if exists && u.uid.is_none() && u.shell.is_none() && u.groups.is_empty() {
        events.output(label, &format!("user {} already exists", u.name));
    } else {
        run_streaming(&cmd.arg(&u.name), label, events).with_context(|| format!("[[user]] {}: {tool} failed", u.name))?;
        events.output(label, &format!("user {} {}", u.name, if exists { "updated" } else { "created" }));
    }
    set_password(root, &u.name, &u.password, events)?;
    if !u.keys.is_empty() {
        authorized_keys(root, u)?;
    }
    Ok(())
}

/// Writes `name`'s password field in /etc/shadow (owner and mode kept).
fn set_password(root: &Root, name: &str, p: &Password, events: &Events) -> anyhow::Result<()> {
    let field = match p {
        Password::Keep => return Ok(()),
        Password::Locked => None,
        Password::Hash(h) => Some(h.clone()),
        Password::Random => {
            let clear = random_password()?;
            let hash = sha_crypt::sha512_simple(&clear, &sha_crypt::Sha512Params::default())
                .map_err(|e| anyhow::anyhow!("Failed to hash {name}'s random password: {e:?}"))?;
            // Shown once, on the terminal: never through the log, the manifest or a file.
            eprintln!("imgforge: {name}'s password in this image is {clear} (shown once; it is in no log, manifest or file)");
            Some(hash)
        }
    };
    let path = Path::new("/etc/shadow");
    let Some(st) = root.lstat(path)? else { bail!("the image has no /etc/shadow: cannot set {name}'s password") };
    let text = read_text(root, "/etc/shadow")?;
    let mut found = false;
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            let mut f: Vec<&str> = l.split(':').collect();
            if f.first() != Some(&name) || f.len() < 2 {
                return l.to_string();
            }
            found = true;
            let locked;
            f[1] = match &field {
                Some(h) => h.as_str(),
                // Already without a usable password: as is; else locked the way passwd -l does.
                None if f[1].starts_with('!') || f[1].starts_with('*') => f[1],
                None => {
                    locked = format!("!{}", f[1]);
                    &locked
                }
            };
            f.join(":")
        })
        .collect();
    if !found {
        bail!("{name} is not in the image's /etc/shadow");
    }
    let mut out = root.create_replacing(path, st.st_mode & 0o7777)?;
    out.write_all((lines.join("\n") + "\n").as_bytes()).context("Failed to write /etc/shadow")?;
    std::os::unix::fs::fchown(&out, Some(st.st_uid), Some(st.st_gid)).context("Failed to chown /etc/shadow")?;
    let _ = events;
    Ok(())
}

/// 20 characters from [A-Za-z0-9], from the kernel's random source.
fn random_password() -> anyhow::Result<String> {
    const SET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut bytes = [0u8; 64];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .context("Failed to read /dev/urandom")?;
    // Rejection sampling: no bias toward the first characters.
    let limit = 256 - 256 % SET.len();
    let pw: String =
        bytes.iter().filter(|b| usize::from(**b) < limit).map(|b| char::from(SET[usize::from(*b) % SET.len()])).take(20).collect();
    if pw.len() < 20 {
        return random_password();
    }
    Ok(pw)
}

/// `~/.ssh/authorized_keys` of the user: the recipe's keys after the lines already there (no
/// duplicates), 0600 in a 0700 `.ssh`, owned by the user.
fn authorized_keys(root: &Root, u: &UserPlan) -> anyhow::Result<()> {
    let passwd = read_text(root, "/etc/passwd")?;
    let entry = passwd
        .lines()
        .find(|l| l.split(':').next() == Some(u.name.as_str()))
        .with_context(|| format!("{} is not in /etc/passwd", u.name))?;
    let f: Vec<&str> = entry.split(':').collect();
    let (uid, gid, home) = match f.as_slice() {
        [_, _, uid, gid, _, home, ..] => (uid.parse::<u32>()?, gid.parse::<u32>()?, PathBuf::from(home)),
        _ => bail!("{}'s /etc/passwd line is malformed", u.name),
    };
    if !home.is_absolute() || home == Path::new("/") {
        bail!("[[user]] {}: home {} cannot hold authorized_keys", u.name, home.display());
    }
    let ssh = home.join(".ssh");
    root.mkdir_all(&ssh, 0o700)?;
    let dir = root.open_in(&ssh, OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0)?;
    nix::unistd::fchown(dir.as_fd(), Some(uid.into()), Some(gid.into())).context("Failed to chown ~/.ssh")?;
    let path = ssh.join("authorized_keys");
    let old = read_text(root, &path.to_string_lossy())?;
    let mut lines: Vec<&str> = old.lines().filter(|l| !l.trim().is_empty()).collect();
    for k in &u.keys {
        if !lines.contains(&k.as_str()) {
            lines.push(k);
        }
    }
    let mut out = root.create_replacing(&path, 0o600)?;
    out.write_all((lines.join("\n") + "\n").as_bytes()).context("Failed to write authorized_keys")?;
    std::os::unix::fs::fchown(&out, Some(uid), Some(gid)).context("Failed to chown authorized_keys")?;
    Ok(())
}
