//! What the image gets for the provisioning window only, restored exactly afterwards:
//! a working `/etc/resolv.conf` and a `/usr/sbin/policy-rc.d` that forbids starting daemons
//! (`super::services::POLICY_RC_D`).
//!
//! The image's own file (often a symlink into /run) is never written through: it is renamed
//! aside — the entry itself, whatever it is — and renamed back at the end.

use std::path::{Path, PathBuf};

use super::resolve::{ResolveError, Root};

/// A file swapped in for provisioning; `restore()` puts the original entry back, and so does
/// dropping it (a panic or an early return cannot ship the host's resolv.conf or the guard).
#[derive(Debug)]
pub struct SwappedFile {
    root: Root,
    path: PathBuf,
    aside: PathBuf,
    had_original: bool,
    active: bool,
}

impl SwappedFile {
    /// Moves the image's `path` aside (if present) and writes `content` with `mode` there.
    pub fn install(root: &Root, path: &Path, content: &[u8], mode: u32) -> Result<Self, ResolveError> {
        let aside = aside_name(path);
        if root.exists(&aside)? {
            // Left by an earlier, killed build of this very disk: refuse rather than guess.
            return Err(ResolveError { op: "set aside (already exists)", path: aside, source: nix::errno::Errno::EEXIST });
        }
        let had_original = root.exists(path)?;
        if had_original {
            root.rename(path, &aside)?;
        }
        let root = root.try_clone()?;
        let guard = Self { root, path: path.to_path_buf(), aside, had_original, active: true };
        // On failure the guard's drop puts the original back.
        write_new(&guard.root, path, content, mode)?;
        Ok(guard)
    }

    /// Removes ours and puts the original back (or leaves nothing if there was none).
    pub fn restore(mut self) -> Result<(), ResolveError> {
        self.impl_restore()
    }

    fn impl_restore(&mut self) -> Result<(), ResolveError> {
        if !self.active {
            return Ok(());
        }
        self.active = false;
        let root = &self.root;
        if !root.remove_file(&self.path)? && root.exists(&self.path)? {
            // A provisioner replaced it with a directory; remove that only if empty.
            root.remove_dir(&self.path)?;
        }
        if self.had_original {
            root.rename(&self.aside, &self.path)?;
        }
        Ok(())
    }
}

impl Drop for SwappedFile {
    fn drop(&mut self) {
        if let Err(e) = self.impl_restore() {
            tracing::error!(path = %self.path.display(), "Failed to restore the image's file after provisioning: {e}");
        }
    }
}

fn aside_name(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.imgforge-orig"))
}

fn write_new(root: &Root, path: &Path, content: &[u8], mode: u32) -> Result<(), ResolveError> {
    use std::io::Write;
    let mut f = root.create_replacing(path, mode)?;
    f.write_all(content).map_err(|e| ResolveError {
        op: "write",
        path: path.to_path_buf(),
        source: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    })?;
    // create_replacing applied the umask; set the exact mode.
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(|e| ResolveError {
        op: "chmod",
        path: path.to_path_buf(),
        source: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    })
}

/// resolv.conf content for the chroot, from the host's real upstream resolvers: when the host
/// uses the systemd-resolved stub (127.0.0.53), its upstream list is read instead. Pure given
/// the two file contents.
pub fn chroot_resolv_conf(host_resolv: &str, resolved_upstream: Option<&str>) -> String {
    let uses_stub = host_resolv.lines().any(|l| l.split_whitespace().nth(1) == Some("127.0.0.53"));
    let text = match (uses_stub, resolved_upstream) {
        (true, Some(up)) => up,
        _ => host_resolv,
    };
    // The sandbox reaches the host's network through slirp4netns, which keeps the host's
    // loopback out of reach: a resolver on it is asked through slirp's forwarder instead.
    let kept: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("nameserver") || l.starts_with("search") || l.starts_with("domain") || l.starts_with("options"))
        .map(|l| match l.split_whitespace().nth(1) {
            Some(addr) if l.starts_with("nameserver") && is_loopback(addr) => format!("nameserver {}", super::sandbox::net::SLIRP_DNS),
            _ => l.to_string(),
        })
        .collect();
    format!("# imgforge: for the build only; the image's own resolv.conf is restored afterwards\n{}\n", kept.join("\n"))
}

fn is_loopback(addr: &str) -> bool {
    addr.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The chroot resolv.conf built from this host's files.
pub fn host_resolv_conf() -> String {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let upstream = std::fs::read_to_string("/run/systemd/resolve/resolv.conf").ok();
    chroot_resolv_conf(&host, upstream.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chroot::services::POLICY_RC_D;
    use std::os::unix::fs::symlink;

    #[test]
    fn stub_resolver_is_replaced_by_upstream() {
        let out = chroot_resolv_conf("nameserver 127.0.0.53\noptions edns0\n", Some("nameserver 10.0.0.2\nsearch corp.example\n"));
        assert!(out.contains("nameserver 10.0.0.2\nsearch corp.example"), "{out}");
        assert!(!out.contains("127.0.0.53"));
        let plain = chroot_resolv_conf("# x\nnameserver 1.1.1.1\n", None);
        assert!(plain.ends_with("nameserver 1.1.1.1\n"), "{plain}");
        let local = chroot_resolv_conf("nameserver 127.0.0.1\nnameserver ::1\nnameserver 10.1.1.1\n", None);
        assert!(local.ends_with("nameserver 10.0.2.3\nnameserver 10.0.2.3\nnameserver 10.1.1.1\n"), "{local}");
    }

    #[test]
    fn dangling_symlink_is_restored_exactly() {
        let img = tempfile::tempdir().unwrap();
        std::fs::create_dir(img.path().join("etc")).unwrap();
        symlink("../run/systemd/resolve/stub-resolv.conf", img.path().join("etc/resolv.conf")).unwrap();
        let root = Root::open(img.path()).unwrap();
        let g = SwappedFile::install(&root, Path::new("/etc/resolv.conf"), b"nameserver 1.2.3.4\n", 0o644).unwrap();
        assert_eq!(std::fs::read(img.path().join("etc/resolv.conf")).unwrap(), b"nameserver 1.2.3.4\n");
        g.restore().unwrap();
        assert_eq!(std::fs::read_link(img.path().join("etc/resolv.conf")).unwrap(), Path::new("../run/systemd/resolve/stub-resolv.conf"));
        assert_eq!(std::fs::read_dir(img.path().join("etc")).unwrap().count(), 1);
    }

    #[test]
    fn absent_original_leaves_nothing() {
        let img = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(img.path().join("usr/sbin")).unwrap();
        let root = Root::open(img.path()).unwrap();
        let g = SwappedFile::install(&root, Path::new("/usr/sbin/policy-rc.d"), POLICY_RC_D, 0o755).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(img.path().join("usr/sbin/policy-rc.d")).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o755);
        g.restore().unwrap();
        assert_eq!(std::fs::read_dir(img.path().join("usr/sbin")).unwrap().count(), 0);
    }

    #[test]
    fn dropping_the_guard_restores_the_original() {
        let img = tempfile::tempdir().unwrap();
        std::fs::create_dir(img.path().join("etc")).unwrap();
        std::fs::write(img.path().join("etc/resolv.conf"), b"nameserver 10.9.9.9\n").unwrap();
        let root = Root::open(img.path()).unwrap();
        let g = SwappedFile::install(&root, Path::new("/etc/resolv.conf"), b"nameserver 1.2.3.4\n", 0o644).unwrap();
        drop(root);
        assert_eq!(std::fs::read(img.path().join("etc/resolv.conf")).unwrap(), b"nameserver 1.2.3.4\n");
        // An early return or a panic between install and restore: the drop restores.
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _g = g;
            panic!("a provisioner step panicked");
        }));
        assert!(panicked.is_err());
        assert_eq!(std::fs::read(img.path().join("etc/resolv.conf")).unwrap(), b"nameserver 10.9.9.9\n");
        assert_eq!(std::fs::read_dir(img.path().join("etc")).unwrap().count(), 1);
    }
}
