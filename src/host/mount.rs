//! The build's mounts, owned by one value: `MountTree`.
//!
//! Every mount under the image root is made through `MountTree`, with its target already
//! resolved inside the image root (see `chroot::resolve`) and passed as `/proc/self/fd/N`, so a
//! symlink in the image can never redirect a mount onto the host. Teardown does not trust our
//! own list: it reads `/proc/self/mountinfo` and unmounts everything at or below the root,
//! deepest and newest first, never lazily. A failed unmount is an error that names the mount
//! and the processes still using it.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, umount2};
use sys_mount::{Mount, MountFlags};

use super::procscan;

/// Errors from mounting and unmounting.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// mount(2) failed.
    #[error("Failed to mount {source_desc} ({fstype}) on {target}: {err}")]
    Mount {
        /// What was mounted.
        source_desc: String,
        /// Filesystem type.
        fstype: String,
        /// Where, as a path under the image root.
        target: PathBuf,
        /// Cause.
        #[source]
        err: std::io::Error,
    },
    /// umount(2) failed.
    #[error("Failed to unmount {target}: {err}{holders}")]
    Unmount {
        /// Mount point.
        target: PathBuf,
        /// Cause.
        #[source]
        err: nix::Error,
        /// Processes found using it, preformatted ("" if none).
        holders: String,
    },
    /// /proc/self/mountinfo could not be read.
    #[error("Failed to read /proc/self/mountinfo: {0}")]
    MountInfo(#[source] std::io::Error),
}

/// What to mount.
#[derive(Debug, Clone)]
pub struct MountSpec<'a> {
    /// Device or pseudo source ("proc", "/dev/loop3", a host path for binds).
    pub source: &'a Path,
    /// Filesystem type; `None` for a bind mount.
    pub fstype: Option<&'a str>,
    /// Flags (BIND, RDONLY, NOSUID…).
    pub flags: MountFlags,
    /// Filesystem options.
    pub data: Option<&'a str>,
}

/// All mounts at and below one root directory, released together.
#[derive(Debug)]
pub struct MountTree {
    root: Option<PathBuf>,
}

impl MountTree {
    /// Starts an empty tree rooted at `root` (a directory path on the host, not a mount yet).
    pub fn new(root: PathBuf) -> Self {
        Self { root: Some(root) }
    }

    /// Mounts `spec` on the directory `target_fd`, which the caller resolved inside the root;
    /// `shown` is its path for messages and teardown.
    pub fn mount_at(&mut self, spec: &MountSpec<'_>, target_fd: impl AsFd, shown: &Path) -> Result<(), MountError> {
        let magic = super::fd::self_path(&target_fd);
        let mut builder = Mount::builder().flags(spec.flags);
        if let Some(fstype) = spec.fstype {
            builder = builder.fstype(fstype);
        }
        if let Some(data) = spec.data {
            builder = builder.data(data);
        }
        builder.mount(spec.source, &magic).map_err(|err| MountError::Mount {
            source_desc: spec.source.display().to_string(),
            fstype: spec.fstype.unwrap_or("bind").to_string(),
            target: shown.to_path_buf(),
            err,
        })?;
        tracing::debug!(source = %spec.source.display(), target = %shown.display(), "mounted");
        Ok(())
    }

    /// Unmounts everything at or below the root, deepest first. Checked path.
    pub fn close(mut self) -> Result<(), MountError> {
        self.impl_close()
    }

    fn impl_close(&mut self) -> Result<(), MountError> {
        let Some(root) = self.root.take() else {
            return Ok(());
        };
        unmount_all_under(&root)
    }
}

impl Drop for MountTree {
    fn drop(&mut self) {
        if let Err(e) = self.impl_close() {
            tracing::error!("{e}");
        }
    }
}

/// Unmounts every mount at or under `root` listed in /proc/self/mountinfo, deepest and newest
/// first, without MNT_DETACH.
pub fn unmount_all_under(root: &Path) -> Result<(), MountError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").map_err(MountError::MountInfo)?;
    for target in teardown_order(&text, root) {
        if let Err(err) = umount2(&target, MntFlags::UMOUNT_NOFOLLOW) {
            // EINVAL: no longer a mount point (it went away with its parent) — re-check.
            if err == nix::Error::EINVAL && !is_mounted(&target)? {
                continue;
            }
            let holders = procscan::describe(&procscan::users_of(&target));
            return Err(MountError::Unmount { target, err, holders });
        }
        tracing::debug!(target = %target.display(), "unmounted");
    }
    Ok(())
}

fn is_mounted(target: &Path) -> Result<bool, MountError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").map_err(MountError::MountInfo)?;
    Ok(mount_points(&text).any(|p| p == target))
}

/// Mount points listed in a mountinfo text, in file order (oldest first), unescaped.
pub fn mount_points(mountinfo: &str) -> impl Iterator<Item = PathBuf> + '_ {
    mountinfo.lines().filter_map(|line| line.split(' ').nth(4)).map(|p| PathBuf::from(unescape_mountinfo(p)))
}

/// The mount points at or below `root`, in the order they must be unmounted. Pure.
pub fn teardown_order(mountinfo: &str, root: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mount_points(mountinfo).filter(|p| p.starts_with(root)).collect();
    // Newest first, then deepest first (stable, so stacked mounts keep newest-first order).
    found.reverse();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

/// Decodes the octal escapes (`\040` for space and so on) mountinfo uses in paths.
pub fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (bytes.get(i), octal) {
            (Some(b'\\'), Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (Some(b), _) => {
                out.push(*b);
                i += 1;
            }
            (None, _) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 1 8:1 / / rw - ext4 /dev/vda rw
100 22 7:0 / /tmp/w/root rw - ext4 /dev/loop0 rw
101 100 7:1 / /tmp/w/root/boot rw - ext4 /dev/loop1 rw
102 100 0:5 / /tmp/w/root/proc rw - proc proc rw
103 100 0:6 / /tmp/w/root/dev rw - devtmpfs udev rw
104 103 0:7 / /tmp/w/root/dev/pts rw - devpts devpts rw
105 100 0:8 / /tmp/w/root/my\\040dir rw - tmpfs tmpfs rw
106 102 0:9 / /tmp/w/root/proc rw - proc proc rw
107 22 0:9 / /tmp/w/rootfs rw - tmpfs tmpfs rw
";

    #[test]
    fn teardown_is_deepest_and_newest_first_and_stays_under_root() {
        let order = teardown_order(INFO, Path::new("/tmp/w/root"));
        let shown: Vec<String> = order.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(
            shown,
            [
                "/tmp/w/root/dev/pts",
                "/tmp/w/root/proc",
                "/tmp/w/root/my dir",
                "/tmp/w/root/dev",
                "/tmp/w/root/proc",
                "/tmp/w/root/boot",
                "/tmp/w/root",
            ]
        );
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape_mountinfo("a\\040b\\011c\\\\"), "a b\tc\\\\");
    }
}
