//! In-root path resolution: the image is hostile.
//!
//! Every path inside the image is resolved with `openat2(RESOLVE_IN_ROOT)` against a directory
//! fd of the image root, so absolute symlinks and `..` stay inside the image, exactly as they
//! would for a process chrooted there. Deletions and renames act on the final component through
//! its parent directory fd and never follow it.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat2, renameat};
use nix::sys::stat::{FileStat, Mode, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

/// An operation inside the image root failed.
#[derive(Debug, thiserror::Error)]
#[error("Failed to {op} {path} inside the image: {source}")]
pub struct ResolveError {
    /// What we tried ("open", "remove", …).
    pub op: &'static str,
    /// The path as seen inside the image.
    pub path: PathBuf,
    /// Cause.
    #[source]
    pub source: Errno,
}

/// The image root, held open.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

type Result<T> = std::result::Result<T, ResolveError>;

fn err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> ResolveError + 'a {
    move |source| ResolveError { op, path: path.to_path_buf(), source }
}

fn how(flags: OFlag, mode: u32) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .mode(Mode::from_bits_truncate(mode))
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

/// `path` relative to the root: leading `/` removed. Pure.
pub fn relative(path: &Path) -> PathBuf {
    path.components().filter(|c| !matches!(c, Component::RootDir | Component::CurDir)).collect()
}

impl Root {
    /// Opens the directory `path` (a host path) as an image root.
    pub fn open(path: &Path) -> Result<Self> {
        let fd =
            nix::fcntl::open(path, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).map_err(err("open root", path))?;
        Ok(Self { fd, path: path.to_path_buf() })
    }

    /// A second handle on the same root (the descriptor duplicated), for a guard that must be
    /// able to act on the image when it is dropped.
    pub fn try_clone(&self) -> Result<Self> {
        let fd = self.fd.try_clone().map_err(|e| ResolveError {
            op: "duplicate the root descriptor",
            path: self.path.clone(),
            source: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        })?;
        Ok(Self { fd, path: self.path.clone() })
    }

    /// The host path of the root (for messages and for chroot(2)).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Host path of an image path, for messages only: never open it.
    pub fn shown(&self, path: &Path) -> PathBuf {
        self.path.join(relative(path))
    }

    /// Opens `path` inside the root, following symlinks only within the root.
    pub fn open_in(&self, path: &Path, flags: OFlag, mode: u32) -> Result<OwnedFd> {
        let rel = relative(path);
        let rel = if rel.as_os_str().is_empty() { PathBuf::from(".") } else { rel };
        openat2(self.fd.as_fd(), &rel, how(flags, mode)).map_err(err("open", path))
    }

    /// An `O_PATH` fd of a directory inside the root (e.g. a mount target).
    pub fn dir(&self, path: &Path) -> Result<OwnedFd> {
        self.open_in(path, OFlag::O_PATH | OFlag::O_DIRECTORY, 0)
    }

    /// The parent directory fd and final name of `path`. The name is a normal component.
    fn parent(&self, path: &Path) -> Result<(OwnedFd, OsString)> {
        let rel = relative(path);
        let name = match rel.components().next_back() {
            Some(Component::Normal(n)) => n.to_os_string(),
            _ => return Err(ResolveError { op: "resolve", path: path.to_path_buf(), source: Errno::EINVAL }),
        };
        let parent = rel.parent().unwrap_or(Path::new(""));
        Ok((self.dir(parent)?, name))
    }

    /// lstat of `path` (final component not followed); `None` if absent.
    pub fn lstat(&self, path: &Path) -> Result<Option<FileStat>> {
        let (dir, name) = match self.parent(path) {
            Ok(p) => p,
            Err(e) if e.source == Errno::ENOENT => return Ok(None),
            Err(e) => return Err(e),
        };
        match fstatat(dir.as_fd(), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(err("stat", path)(e)),
        }
    }

    /// Whether `path` exists (without following its final component).
    pub fn exists(&self, path: &Path) -> Result<bool> {
        Ok(self.lstat(path)?.is_some())
    }

    /// Reads a file (symlinks followed inside the root); `None` if absent.
    pub fn read(&self, path: &Path) -> Result<Option<Vec<u8>>> {
        self.read_at_most(path, u64::MAX)
    }

    /// Reads at most `max` bytes of the regular file `path`; `None` if absent. The open never
    /// blocks and anything but a regular file (a hostile image's FIFO or device node where a
    /// config file should be) is an error, not a hang.
    pub fn read_at_most(&self, path: &Path, max: u64) -> Result<Option<Vec<u8>>> {
        let fd = match self.open_in(path, OFlag::O_RDONLY | OFlag::O_NONBLOCK, 0) {
            Ok(fd) => fd,
            Err(e) if e.source == Errno::ENOENT => return Ok(None),
            Err(e) => return Err(e),
        };
        let file = File::from(fd);
        if !file.metadata().map_err(|e| io_err("read", path, &e))?.is_file() {
            return Err(ResolveError { op: "read (not a regular file)", path: path.to_path_buf(), source: Errno::EINVAL });
        }
        let mut buf = Vec::new();
        file.take(max).read_to_end(&mut buf).map_err(|e| io_err("read", path, &e))?;
        Ok(Some(buf))
    }

    /// Writes `data` to `path` (created with `mode` if absent, truncated if present; symlinks
    /// followed inside the root).
    pub fn write(&self, path: &Path, data: &[u8], mode: u32) -> Result<()> {
        let fd = self.open_in(path, OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC, mode)?;
        File::from(fd).write_all(data).map_err(|e| io_err("write", path, &e))
    }

    /// Creates a new file at `path`, replacing a non-directory already there (a symlink is
    /// replaced, never followed).
    pub fn create_replacing(&self, path: &Path, mode: u32) -> Result<File> {
        let (dir, name) = self.parent(path)?;
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let open = || nix::fcntl::openat(dir.as_fd(), name.as_os_str(), flags, Mode::from_bits_truncate(mode));
        let fd = match open() {
            Err(Errno::EEXIST) => {
                unlinkat(dir.as_fd(), name.as_os_str(), UnlinkatFlags::NoRemoveDir).map_err(err("replace", path))?;
                open()
            }
            other => other,
        }
        .map_err(err("create", path))?;
        Ok(File::from(fd))
    }

    /// Writes `data` as a new regular file at `path`, replacing whatever non-directory stands
    /// there (a symlink is replaced, never followed).
    pub fn write_replacing(&self, path: &Path, data: &[u8], mode: u32) -> Result<()> {
        let mut f = self.create_replacing(path, mode)?;
        f.write_all(data).map_err(|e| io_err("write", path, &e))
    }

    /// Removes a file or symlink (never following it); `false` if it was absent.
    pub fn remove_file(&self, path: &Path) -> Result<bool> {
        let (dir, name) = match self.parent(path) {
            Ok(p) => p,
            Err(e) if e.source == Errno::ENOENT => return Ok(false),
            Err(e) => return Err(e),
        };
        match unlinkat(dir.as_fd(), name.as_os_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(err("remove", path)(e)),
        }
    }

    /// Removes an empty directory; `false` if absent.
    pub fn remove_dir(&self, path: &Path) -> Result<bool> {
        let (dir, name) = self.parent(path)?;
        match unlinkat(dir.as_fd(), name.as_os_str(), UnlinkatFlags::RemoveDir) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(err("remove directory", path)(e)),
        }
    }

    /// Renames `from` to `to` inside the root; the entries themselves are moved, not followed.
    pub fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        let (fdir, fname) = self.parent(from)?;
        let (tdir, tname) = self.parent(to)?;
        renameat(fdir.as_fd(), fname.as_os_str(), tdir.as_fd(), tname.as_os_str()).map_err(err("rename", from))
    }

    /// Creates `path` and its missing parents as directories with `mode`.
    pub fn mkdir_all(&self, path: &Path, mode: u32) -> Result<()> {
        let rel = relative(path);
        let mut cur = PathBuf::new();
        for comp in rel.components() {
            cur.push(comp);
            let (dir, name) = self.parent(&cur)?;
            match mkdirat(dir.as_fd(), name.as_os_str(), Mode::from_bits_truncate(mode)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(err("create directory", &cur)(e)),
            }
        }
        // The result must be a directory reachable inside the root.
        self.dir(path).map(drop)
    }

    /// Names in a directory (not `.`/`..`); empty if the directory is absent.
    pub fn list(&self, path: &Path) -> Result<Vec<OsString>> {
        let fd = match self.open_in(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0) {
            Ok(fd) => fd,
            Err(e) if e.source == Errno::ENOENT => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let dir = nix::dir::Dir::from_fd(fd).map_err(err("list", path))?;
        let mut names = Vec::new();
        for entry in dir {
            let entry = entry.map_err(err("list", path))?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name != "." && name != ".." {
                names.push(name.to_os_string());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Removes a file, symlink or whole directory tree, never following a symlink (a symlink
    /// inside the tree is removed, not what it points to); `false` if nothing was there.
    pub fn remove_tree(&self, path: &Path) -> Result<bool> {
        let Some(st) = self.lstat(path)? else { return Ok(false) };
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return self.remove_file(path);
        }
        for name in self.list(path)? {
            self.remove_tree(&path.join(name))?;
        }
        self.remove_dir(path)
    }

    /// Creates the character device node `path` (`major`:`minor`) with exactly `mode`.
    pub fn mknod_char(&self, path: &Path, mode: u32, major: u64, minor: u64) -> Result<()> {
        let (dir, name) = self.parent(path)?;
        let kind = nix::sys::stat::SFlag::S_IFCHR;
        nix::sys::stat::mknodat(dir.as_fd(), name.as_os_str(), kind, Mode::from_bits_truncate(mode), nix::sys::stat::makedev(major, minor))
            .map_err(err("create device node", path))?;
        // mknod applied the umask.
        nix::sys::stat::fchmodat(
            dir.as_fd(),
            name.as_os_str(),
            Mode::from_bits_truncate(mode),
            nix::sys::stat::FchmodatFlags::NoFollowSymlink,
        )
        .map_err(err("chmod", path))
    }

    /// Creates a symlink `path` → `target` (target stored as is, never resolved by us).
    pub fn symlink(&self, target: &Path, path: &Path) -> Result<()> {
        let (dir, name) = self.parent(path)?;
        nix::unistd::symlinkat(target, dir.as_fd(), name.as_os_str()).map_err(err("create symlink", path))
    }

    /// Sets the extended attribute `name` of `path` itself: resolved within the root, a final
    /// symlink labelled rather than followed (an `O_PATH | O_NOFOLLOW` descriptor, reached
    /// through `/proc/self/fd`).
    pub fn set_xattr(&self, path: &Path, name: &str, value: &[u8]) -> Result<()> {
        let fd = if relative(path).as_os_str().is_empty() {
            self.open_in(path, OFlag::O_PATH, 0)?
        } else {
            let (dir, leaf) = self.parent(path)?;
            openat2(dir.as_fd(), leaf.as_os_str(), how(OFlag::O_PATH | OFlag::O_NOFOLLOW, 0)).map_err(err("open", path))?
        };
        let proc = std::ffi::CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(|_| ResolveError {
            op: "set attribute",
            path: path.to_path_buf(),
            source: Errno::EINVAL,
        })?;
        let cname = std::ffi::CString::new(name).map_err(|_| ResolveError {
            op: "set attribute",
            path: path.to_path_buf(),
            source: Errno::EINVAL,
        })?;
        #[allow(unsafe_code)]
        // SAFETY: both strings are NUL-terminated and outlive the call; `value` is a valid slice.
        let rc = unsafe { libc::setxattr(proc.as_ptr(), cname.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
        if rc != 0 {
            return Err(err("set attribute", path)(Errno::last()));
        }
        drop(fd);
        Ok(())
    }
}

fn io_err(op: &'static str, path: &Path, e: &std::io::Error) -> ResolveError {
    let source = e.raw_os_error().map(Errno::from_raw).unwrap_or(Errno::EIO);
    ResolveError { op, path: path.to_path_buf(), source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[allow(unsafe_code)]
    fn lget(path: &Path, name: &str) -> Option<Vec<u8>> {
        let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        let n = std::ffi::CString::new(name).unwrap();
        let mut buf = [0u8; 256];
        // SAFETY: valid C strings and buffer.
        let len = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        (len >= 0).then(|| buf[..len as usize].to_vec())
    }

    #[test]
    fn set_xattr_labels_the_link_never_its_target() {
        if !nix::unistd::Uid::effective().is_root() {
            return;
        }
        let img = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let host_file = outside.path().join("passwd");
        std::fs::write(&host_file, b"host").unwrap();
        std::fs::create_dir(img.path().join("etc")).unwrap();
        std::fs::write(img.path().join("etc/app.conf"), b"x").unwrap();
        symlink(&host_file, img.path().join("etc/link")).unwrap();
        let root = Root::open(img.path()).unwrap();
        root.set_xattr(Path::new("/etc/app.conf"), "trusted.imgforge", b"etc_t\0").unwrap();
        root.set_xattr(Path::new("/etc/link"), "trusted.imgforge", b"link_t\0").unwrap();
        root.set_xattr(Path::new("/"), "trusted.imgforge", b"root_t\0").unwrap();
        assert_eq!(lget(&img.path().join("etc/app.conf"), "trusted.imgforge").unwrap(), b"etc_t\0");
        assert_eq!(lget(&img.path().join("etc/link"), "trusted.imgforge").unwrap(), b"link_t\0");
        assert_eq!(lget(img.path(), "trusted.imgforge").unwrap(), b"root_t\0");
        assert_eq!(lget(&host_file, "trusted.imgforge"), None, "followed the symlink out of the root");
        assert!(root.set_xattr(Path::new("/etc/missing"), "trusted.imgforge", b"x").is_err());
    }

    #[test]
    fn reads_only_regular_files_and_never_blocks() {
        let img = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(img.path().join("etc")).unwrap();
        std::fs::write(img.path().join("etc/os-release"), b"ID=debian\n").unwrap();
        nix::unistd::mkfifo(&img.path().join("etc/fstab"), Mode::from_bits_truncate(0o644)).unwrap();
        let root = Root::open(img.path()).unwrap();
        assert_eq!(root.read(Path::new("/etc/os-release")).unwrap().unwrap(), b"ID=debian\n");
        assert_eq!(root.read_at_most(Path::new("/etc/os-release"), 2).unwrap().unwrap(), b"ID");
        assert_eq!(root.read(Path::new("/etc/missing")).unwrap(), None);
        // A FIFO (nobody writing) would block a plain open and read forever.
        assert_eq!(root.read(Path::new("/etc/fstab")).unwrap_err().source, Errno::EINVAL);
        assert!(root.read(Path::new("/etc")).is_err());
    }

    #[test]
    fn remove_tree_does_not_follow_symlinks_out() {
        let (host, img, root) = hostile();
        std::fs::create_dir_all(img.path().join("run/x/a/b")).unwrap();
        std::fs::write(img.path().join("run/x/a/b/f"), b"1").unwrap();
        symlink(host.path(), img.path().join("run/x/a/out")).unwrap();
        assert!(root.remove_tree(Path::new("/run/x")).unwrap());
        assert!(!img.path().join("run/x").exists() && host.path().join("secret").exists());
        assert!(!root.remove_tree(Path::new("/run/x")).unwrap());
        // A symlink given as the path itself is removed, not followed.
        assert!(root.remove_tree(Path::new("/etc/ssh")).unwrap());
        assert!(host.path().join("secret").exists());
    }

    fn hostile() -> (tempfile::TempDir, tempfile::TempDir, Root) {
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("secret"), b"host").unwrap();
        let img = tempfile::tempdir().unwrap();
        std::fs::create_dir(img.path().join("etc")).unwrap();
        symlink(host.path(), img.path().join("etc/ssh")).unwrap();
        symlink(host.path().join("secret"), img.path().join("etc/machine-id")).unwrap();
        symlink("../../../../../..", img.path().join("etc/up")).unwrap();
        let root = Root::open(img.path()).unwrap();
        (host, img, root)
    }

    #[test]
    fn absolute_symlink_dir_stays_inside_root() {
        let (host, _img, root) = hostile();
        assert!(root.read(Path::new("/etc/ssh/secret")).unwrap().is_none());
        assert!(!root.remove_file(Path::new("/etc/ssh/secret")).unwrap());
        assert!(root.write(Path::new("/etc/ssh/secret"), b"x", 0o600).is_err());
        assert_eq!(std::fs::read(host.path().join("secret")).unwrap(), b"host");
    }

    #[test]
    fn symlinked_file_is_removed_not_followed() {
        let (host, img, root) = hostile();
        assert!(root.remove_file(Path::new("/etc/machine-id")).unwrap());
        assert!(!img.path().join("etc/machine-id").exists());
        assert_eq!(std::fs::read(host.path().join("secret")).unwrap(), b"host");
    }

    #[test]
    fn writing_through_a_symlink_lands_inside_the_root() {
        let (host, img, root) = hostile();
        // /etc/machine-id -> <host>/secret resolves to <img><host>/secret, which does not exist.
        assert!(root.write(Path::new("/etc/machine-id"), b"", 0o444).is_err());
        let f = root.create_replacing(Path::new("/etc/machine-id"), 0o444).unwrap();
        drop(f);
        assert!(img.path().join("etc/machine-id").is_file());
        assert_eq!(std::fs::read(host.path().join("secret")).unwrap(), b"host");
    }

    #[test]
    fn dotdot_cannot_climb_out() {
        let (_host, _img, root) = hostile();
        let listed = root.list(Path::new("/etc/up")).unwrap();
        assert!(listed.contains(&OsString::from("etc")), "{listed:?}");
        assert!(root.list(Path::new("/../../..")).unwrap().contains(&OsString::from("etc")));
    }

    #[test]
    fn mkdir_all_and_rename() {
        let (_host, img, root) = hostile();
        root.mkdir_all(Path::new("/a/b/c"), 0o755).unwrap();
        root.write(Path::new("/a/b/c/f"), b"1", 0o644).unwrap();
        root.rename(Path::new("/a/b/c/f"), Path::new("/a/g")).unwrap();
        assert_eq!(std::fs::read(img.path().join("a/g")).unwrap(), b"1");
        assert!(root.mkdir_all(Path::new("/etc/ssh/new"), 0o755).is_err());
    }
}
