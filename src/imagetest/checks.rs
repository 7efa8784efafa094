//! `type = "checks"`: declarative checks against the mounted (read-only) image. Files, users and
//! packages are read through the image root (never following a symlink out of it); services and
//! commands run the image's own programs in the build sandbox.

use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use super::Case;
use super::plan::{Checks, CommandCheck, FileCheck};
use crate::chroot::cmd::ChrootCmd;
use crate::chroot::resolve::Root;

/// Runs every check of `c`, one case each.
pub fn run(suite: &str, root: &Root, c: &Checks) -> Vec<Case> {
    let mut out = Vec::new();
    let passwd = root.read(Path::new("/etc/passwd")).ok().flatten().unwrap_or_default();
    let passwd = String::from_utf8_lossy(&passwd).into_owned();
    for f in &c.files {
        out.push(timed(suite, &format!("file {}", f.path), || file(root, f, &passwd)));
    }
    if !c.packages.is_empty() {
        let installed = crate::registry::packages::installed(root).unwrap_or_default();
        for p in &c.packages {
            out.push(timed(suite, &format!("package {p}"), || {
                let have: Vec<&str> = installed.iter().filter(|i| i.name == p.name).map(|i| i.version.as_str()).collect();
                match have.as_slice() {
                    [] => Err(format!("{} is not installed", p.name)),
                    v if v.iter().any(|v| p.accepts(v)) => Ok(()),
                    v => Err(format!("{} is installed at {}, which does not satisfy {p}", p.name, v.join(", "))),
                }
            }));
        }
    }
    for s in &c.services_enabled {
        out.push(timed(suite, &format!("service {s} enabled"), || service_enabled(root, s)));
    }
    for u in &c.users {
        out.push(timed(suite, &format!("user {u}"), || {
            if passwd.lines().any(|l| l.split(':').next() == Some(u.as_str())) { Ok(()) } else { Err(format!("{u} is not in /etc/passwd")) }
        }));
    }
    for cmd in &c.commands {
        out.push(timed(suite, &format!("command {}", cmd.run), || command(root, cmd)));
    }
    out
}

fn timed(suite: &str, name: &str, f: impl FnOnce() -> Result<(), String>) -> Case {
    let start = Instant::now();
    let result = f();
    Case { suite: suite.to_string(), name: name.to_string(), seconds: start.elapsed().as_secs_f64(), failure: result.err() }
}

fn file(root: &Root, f: &FileCheck, passwd: &str) -> Result<(), String> {
    let p = Path::new(&f.path);
    let st = root.lstat(p).map_err(|e| format!("cannot look at {}: {e}", f.path))?;
    if f.absent {
        return match st {
            None => Ok(()),
            Some(st) => Err(format!("{} exists ({})", f.path, kind_of(st.st_mode))),
        };
    }
    let Some(st) = st else { return Err(format!("{} does not exist", f.path)) };
    if let Some(k) = &f.kind
        && kind_of(st.st_mode) != k
    {
        return Err(format!("{} is a {}, not a {k}", f.path, kind_of(st.st_mode)));
    }
    if let Some(m) = &f.mode {
        let want = u32::from_str_radix(m, 8).unwrap_or(u32::MAX);
        let got = st.st_mode & 0o7777;
        if got != want {
            return Err(format!("{} has mode {got:04o}, not {want:04o}", f.path));
        }
    }
    if let Some(o) = &f.owner {
        let want = o
            .parse::<u32>()
            .ok()
            .or_else(|| passwd.lines().find(|l| l.split(':').next() == Some(o.as_str())).and_then(|l| l.split(':').nth(2)?.parse().ok()));
        match want {
            Some(uid) if uid == st.st_uid => {}
            Some(_) => return Err(format!("{} is owned by uid {}, not {o}", f.path, st.st_uid)),
            None => return Err(format!("{} should be owned by {o}, which is not in the image's /etc/passwd", f.path)),
        }
    }
    if let Some(text) = &f.contains {
        let data = root
            .read_at_most(p, 64 << 20)
            .map_err(|e| format!("cannot read {}: {e}", f.path))?
            .ok_or_else(|| format!("{} does not exist", f.path))?;
        if !String::from_utf8_lossy(&data).contains(text.as_str()) {
            return Err(format!("{} does not contain {text:?}", f.path));
        }
    }
    Ok(())
}

fn kind_of(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "file",
        libc::S_IFDIR => "directory",
        libc::S_IFLNK => "symlink",
        libc::S_IFIFO => "fifo",
        libc::S_IFSOCK => "socket",
        libc::S_IFCHR | libc::S_IFBLK => "device",
        _ => "special file",
    }
}

fn service_enabled(root: &Root, unit: &str) -> Result<(), String> {
    if !root.exists(Path::new(crate::chroot::services::SYSTEMCTL)).unwrap_or(false) {
        return Err("the image has no systemctl".into());
    }
    let cmd = ChrootCmd::new(root.path(), crate::chroot::services::SYSTEMCTL).args(["is-enabled", unit]).env("SYSTEMD_OFFLINE", "1");
    let out = cmd.output().map_err(|e| format!("systemctl is-enabled {unit}: {e}"))?;
    let state = String::from_utf8_lossy(&out).lines().next().unwrap_or("").trim().to_string();
    // What `systemctl is-enabled` counts as enabled (exit 0).
    if ["enabled", "enabled-runtime", "static", "alias", "indirect", "generated"].contains(&state.as_str()) {
        Ok(())
    } else {
        Err(format!("{unit} is {}", if state.is_empty() { "not found" } else { &state }))
    }
}

fn command(root: &Root, c: &CommandCheck) -> Result<(), String> {
    let cmd = ChrootCmd::new(root.path(), "/bin/sh")
        .args(["-c", c.run.as_str()])
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", "/root")
        .env("LANG", "C.UTF-8");
    let child = cmd.spawn(Stdio::piped(), Stdio::piped()).map_err(|e| format!("cannot run {:?}: {e}", c.run))?;
    let out = child.wait_with_output().map_err(|e| format!("cannot run {:?}: {e}", c.run))?;
    let code = out.status.code().unwrap_or(-1);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let tail = |b: &[u8]| super::tail(&String::from_utf8_lossy(b));
    if code != c.exit {
        return Err(format!("exited with {code}, expected {}; stdout: {:?}; stderr: {:?}", c.exit, tail(&out.stdout), tail(&out.stderr)));
    }
    if let Some(want) = &c.stdout_contains
        && !stdout.contains(want.as_str())
    {
        return Err(format!("stdout does not contain {want:?}: {:?}", tail(&out.stdout)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_named() {
        assert_eq!(kind_of(libc::S_IFREG | 0o644), "file");
        assert_eq!(kind_of(libc::S_IFLNK | 0o777), "symlink");
        assert_eq!(kind_of(libc::S_IFDIR | 0o755), "directory");
    }
}
