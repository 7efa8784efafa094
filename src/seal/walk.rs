//! Walks the image tree without ever following a symlink.
//!
//! Directories are opened one by one relative to their parent's fd with
//! `O_DIRECTORY|O_NOFOLLOW`; only the fds of the current directory's ancestors are held.
//! Files are listed by their image path and opened later (in parallel) with [`open_file`]:
//! `openat2` beneath the image root with `RESOLVE_NO_SYMLINKS`, so no component of the path —
//! the file itself included — can be a symlink, and then checked to be a regular file.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{Mode, SFlag, fstat, fstatat};
use nix::sys::statfs::{self, FsType, fstatfs};

use crate::chroot::resolve::relative;
use crate::seal::residue::ResidueError;

/// The regular files of the tree, by image path (`/etc/hostname`), in a stable order.
#[derive(Debug, Default)]
pub struct Walked {
    /// Regular files.
    pub files: Vec<PathBuf>,
    /// Symbolic links and their targets (text of the image too), read during the walk from
    /// the parent directory's fd; never followed.
    pub links: Vec<(PathBuf, Vec<u8>)>,
    /// What was left out and why (skipped prefixes, pseudo filesystems, races).
    pub notes: Vec<String>,
}

/// Pseudo filesystems never entered when mounted inside the tree: what they hold is not in
/// the image (`devtmpfs` reports `TMPFS_MAGIC`).
const PSEUDO: [(FsType, &str); 14] = [
    (statfs::PROC_SUPER_MAGIC, "proc"),
    (statfs::SYSFS_MAGIC, "sysfs"),
    (statfs::TMPFS_MAGIC, "tmpfs"),
    (statfs::DEVPTS_SUPER_MAGIC, "devpts"),
    (statfs::CGROUP_SUPER_MAGIC, "cgroup"),
    (statfs::CGROUP2_SUPER_MAGIC, "cgroup2"),
    (statfs::DEBUGFS_MAGIC, "debugfs"),
    (statfs::TRACEFS_MAGIC, "tracefs"),
    (statfs::SECURITYFS_MAGIC, "securityfs"),
    (statfs::SELINUX_MAGIC, "selinuxfs"),
    (statfs::BPF_FS_MAGIC, "bpf"),
    (statfs::HUGETLBFS_MAGIC, "hugetlbfs"),
    (statfs::NSFS_MAGIC, "nsfs"),
    (statfs::USBDEVICE_SUPER_MAGIC, "usbfs"),
];

fn fail<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> ResidueError + 'a {
    move |source| ResidueError::Io { op, path: path.display().to_string(), source }
}

/// Whether the image path `path` is one of the `skip` prefixes or below one.
fn skipped(path: &Path, skip: &[&str]) -> bool {
    skip.iter().map(|s| s.trim_end_matches('/')).any(|s| !s.is_empty() && path.starts_with(s))
}

/// Lists every regular file under `root_dir` (an fd of the image root, `O_PATH` is enough),
/// skipping the image paths in `skip` and their subtrees, and never entering a pseudo
/// filesystem mounted inside the tree. The root itself is always walked.
pub fn walk(root_dir: BorrowedFd<'_>, skip: &[&str]) -> Result<Walked, ResidueError> {
    let top = Path::new("/");
    let dir =
        Dir::openat(root_dir, ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).map_err(fail("open", top))?;
    let dev = fstat(dir.as_fd()).map_err(fail("stat", top))?.st_dev;
    let mut out = Walked::default();
    let mut path = PathBuf::from("/");
    walk_dir(dir, dev, &mut path, skip, &mut out)?;
    Ok(out)
}

fn walk_dir(mut dir: Dir, dev: u64, path: &mut PathBuf, skip: &[&str], out: &mut Walked) -> Result<(), ResidueError> {
    let mut entries: Vec<(Vec<u8>, Option<Type>)> = Vec::new();
    for entry in dir.iter() {
        let entry = entry.map_err(fail("list", path))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            entries.push((name.to_vec(), entry.file_type()));
        }
    }
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    for (name, typ) in entries {
        let name = OsStr::from_bytes(&name);
        path.push(name);
        let result = walk_entry(&dir, name, typ, dev, path, skip, out);
        path.pop();
        result?;
    }
    Ok(())
}

fn walk_entry(
    dir: &Dir,
    name: &OsStr,
    typ: Option<Type>,
    dev: u64,
    path: &mut PathBuf,
    skip: &[&str],
    out: &mut Walked,
) -> Result<(), ResidueError> {
    if skipped(path, skip) {
        out.notes.push(format!("{}: skipped as asked", path.display()));
        return Ok(());
    }
    let typ = match typ {
        Some(t) => t,
        None => match fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
                SFlag::S_IFDIR => Type::Directory,
                SFlag::S_IFREG => Type::File,
                SFlag::S_IFLNK => Type::Symlink,
                _ => return Ok(()),
            },
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(fail("stat", path)(e)),
        },
    };
    match typ {
        Type::File => out.files.push(path.clone()),
        Type::Symlink => match nix::fcntl::readlinkat(dir.as_fd(), name) {
            Ok(target) => out.links.push((path.clone(), target.into_vec())),
            // Gone, or no longer a link: the tree changed under us.
            Err(Errno::ENOENT | Errno::EINVAL) => {}
            Err(e) => return Err(fail("read the symlink", path)(e)),
        },
        Type::Directory => {
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let sub = match Dir::openat(dir.as_fd(), name, flags, Mode::empty()) {
                Ok(d) => d,
                Err(Errno::ENOENT) => return Ok(()),
                Err(e @ (Errno::ELOOP | Errno::ENOTDIR)) => {
                    out.notes.push(format!("{}: not entered: {e}", path.display()));
                    return Ok(());
                }
                Err(e) => return Err(fail("open directory", path)(e)),
            };
            let sub_dev = fstat(sub.as_fd()).map_err(fail("stat", path))?.st_dev;
            if sub_dev != dev {
                let fs = fstatfs(sub.as_fd()).map_err(fail("statfs", path))?.filesystem_type();
                if let Some((_, fs_name)) = PSEUDO.iter().find(|(t, _)| *t == fs) {
                    out.notes.push(format!("{}: {fs_name} mounted here, not entered", path.display()));
                    return Ok(());
                }
            }
            walk_dir(sub, sub_dev, path, skip, out)?;
        }
        // Sockets, fifos and devices hold nothing of the image's own.
        _ => {}
    }
    Ok(())
}

/// Opens the regular file at image path `path` for reading, beneath `root_dir` and without
/// following any symlink on the way. `Ok(None)` if it vanished or is no longer a regular file
/// reachable without symlinks (the tree changed under us).
pub fn open_file(root_dir: BorrowedFd<'_>, path: &Path) -> Result<Option<File>, ResidueError> {
    let rel = relative(path);
    let base = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let resolve = ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS;
    // O_NOATIME keeps the scan from touching the image's atimes; it needs ownership or
    // CAP_FOWNER, so fall back without it.
    let fd = match openat2(root_dir, &rel, OpenHow::new().flags(base | OFlag::O_NOATIME).resolve(resolve)) {
        Err(Errno::EPERM) => openat2(root_dir, &rel, OpenHow::new().flags(base).resolve(resolve)),
        other => other,
    };
    let fd = match fd {
        Ok(fd) => fd,
        Err(Errno::ENOENT | Errno::ELOOP | Errno::ENXIO | Errno::ENOTDIR) => return Ok(None),
        Err(e) => return Err(fail("open", path)(e)),
    };
    let st = fstat(fd.as_fd()).map_err(fail("stat", path))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Ok(None);
    }
    Ok(Some(File::from(fd)))
}
