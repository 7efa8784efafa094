//! The one way sealing changes the image: remove, truncate, rewrite or create a path, each
//! recorded with the operation that did it. In a dry run the same calls only record what they
//! would do. Every path is resolved inside the image root; a final symlink is removed or
//! replaced, never followed.

use std::io::Write;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::FileStat;

use super::catalog::Op;
use super::residue::Removed;
use crate::chroot::resolve::{ResolveError, Root};

/// What happened to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionKind {
    /// Deleted (file, symlink or empty directory).
    Removed,
    /// Emptied in place (owner and mode kept).
    Truncated,
    /// Content replaced in place.
    Rewritten,
    /// Created (file, directory or symlink).
    Created,
    /// A command of the image ran.
    Ran,
}

/// One recorded change.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Action {
    /// The operation that made it.
    pub op: Op,
    /// Path inside the image (or the command for `Ran`).
    pub path: String,
    /// What was done.
    pub action: ActionKind,
    /// Why or how, when it helps a reader.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// File type of an lstat result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Link,
    /// Anything else (device, fifo, socket).
    Other,
}

/// The kind of `st`.
pub fn kind(st: &FileStat) -> Kind {
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => Kind::File,
        libc::S_IFDIR => Kind::Dir,
        libc::S_IFLNK => Kind::Link,
        _ => Kind::Other,
    }
}

/// Records and (unless dry) applies changes for one operation at a time.
#[derive(Debug)]
pub struct Scrubber<'a> {
    /// The image root.
    pub root: &'a Root,
    /// Only record.
    pub dry_run: bool,
    op: Op,
    actions: Vec<Action>,
    /// Secret values of the files removed, emptied or rewritten (see [`Scrubber::harvest`]).
    removed: Vec<Removed>,
    /// Files too large to read for secrets before they went.
    unread: Vec<String>,
    /// Image paths overwritten before they go, secrets or not (`[seal] scrub`).
    scrub: Vec<String>,
}

/// Files larger than this are not read for secrets before the seal deletes them (package
/// archives, journals): the note says which.
const MAX_HARVEST: i64 = 64 << 20;

type Result<T> = std::result::Result<T, ResolveError>;

impl<'a> Scrubber<'a> {
    /// A scrubber for `root`.
    pub fn new(root: &'a Root, dry_run: bool) -> Self {
        Self { root, dry_run, op: Op::MachineId, actions: Vec::new(), removed: Vec::new(), unread: Vec::new(), scrub: Vec::new() }
    }

    /// Paths (files, or directories for everything under them) overwritten before they go.
    pub fn set_scrub(&mut self, paths: &[String]) {
        self.scrub = paths.to_vec();
    }

    fn listed_for_scrub(&self, path: &str) -> bool {
        self.scrub.iter().any(|p| path == p || path.strip_prefix(p.as_str()).is_some_and(|r| r.starts_with('/')))
    }

    /// Overwrites the regular file `path` in place with zeros, to its length, and syncs it:
    /// on a filesystem that cannot discard (or under a snapshot of the disk), the blocks it
    /// frees no longer hold what it held.
    fn overwrite(&self, path: &str, len: i64) -> Result<()> {
        let fd = self.root.open_in(Path::new(path), OFlag::O_WRONLY | OFlag::O_NOFOLLOW, 0)?;
        let mut f = std::fs::File::from(fd);
        let zeros = [0u8; 64 * 1024];
        let mut left = u64::try_from(len).unwrap_or(0);
        while left > 0 {
            let n = usize::try_from(left.min(zeros.len() as u64)).unwrap_or(zeros.len());
            f.write_all(zeros.get(..n).unwrap_or_default()).map_err(|e| io_error("overwrite", path, &e))?;
            left -= n as u64;
        }
        f.sync_data().map_err(|e| io_error("sync", path, &e))
    }

    /// Reads the regular file `path` (not through a symlink) for secrets before its content
    /// goes: what the raw pass later searches the disk for. A file that holds one, or that
    /// `[seal] scrub` lists, is then overwritten with zeros in place (`true`). Nothing in a dry
    /// run.
    pub fn harvest(&mut self, path: &str) -> Result<bool> {
        if self.dry_run {
            return Ok(false);
        }
        let Some(st) = self.stat(path)? else { return Ok(false) };
        if kind(&st) != Kind::File || st.st_size == 0 {
            return Ok(false);
        }
        let mut secret = false;
        if st.st_size > MAX_HARVEST {
            self.unread.push(path.to_string());
        } else if let Some(data) = self.read(path)? {
            for r in super::residue::secrets_in(&data, path) {
                secret = true;
                if !self.removed.iter().any(|o| o.bytes == r.bytes) {
                    self.removed.push(r);
                }
            }
        }
        if secret || self.listed_for_scrub(path) {
            self.overwrite(path, st.st_size)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// The secret values harvested, and the files too large to read.
    pub fn take_removed(&mut self) -> (Vec<Removed>, Vec<String>) {
        (std::mem::take(&mut self.removed), std::mem::take(&mut self.unread))
    }

    /// Sets the operation the following changes are recorded under.
    pub fn set_op(&mut self, op: Op) {
        self.op = op;
    }

    /// Everything recorded so far.
    pub fn actions(&self) -> &[Action] {
        &self.actions
    }

    /// Takes the recorded actions.
    pub fn into_actions(self) -> Vec<Action> {
        self.actions
    }

    /// Records a change made by other means (an image command).
    pub fn record(&mut self, path: &str, action: ActionKind, detail: &str) {
        self.actions.push(Action { op: self.op, path: path.to_string(), action, detail: detail.to_string() });
    }

    /// lstat of `path`, `None` when absent (also when a parent is missing or not a directory).
    pub fn stat(&self, path: &str) -> Result<Option<FileStat>> {
        match self.root.lstat(Path::new(path)) {
            Err(e) if matches!(e.source, Errno::ENOTDIR | Errno::ENOENT) => Ok(None),
            other => other,
        }
    }

    /// The kind of `path`, `None` when absent.
    pub fn kind_of(&self, path: &str) -> Result<Option<Kind>> {
        Ok(self.stat(path)?.as_ref().map(kind))
    }

    /// Names in directory `dir` (empty when absent or not a directory — a symlinked directory
    /// counts as absent, so nothing is ever listed through a link).
    pub fn list(&self, dir: &str) -> Result<Vec<String>> {
        if self.kind_of(dir)? != Some(Kind::Dir) {
            return Ok(Vec::new());
        }
        Ok(self.root.list(Path::new(dir))?.into_iter().map(|n| n.to_string_lossy().into_owned()).collect())
    }

    /// Every path below `dir` (depth first, children before their directory), never through a
    /// symlink; with each one's kind.
    pub fn walk(&self, dir: &str) -> Result<Vec<(String, Kind)>> {
        let mut out = Vec::new();
        self.walk_into(dir, &mut out)?;
        Ok(out)
    }

    fn walk_into(&self, dir: &str, out: &mut Vec<(String, Kind)>) -> Result<()> {
        for name in self.list(dir)? {
            let p = join(dir, &name);
            let Some(k) = self.kind_of(&p)? else { continue };
            if k == Kind::Dir {
                self.walk_into(&p, out)?;
            }
            out.push((p, k));
        }
        Ok(())
    }

    /// Reads a regular file (not through a final symlink); `None` if absent or not a file.
    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        if self.kind_of(path)? != Some(Kind::File) {
            return Ok(None);
        }
        self.root.read(Path::new(path))
    }

    /// Removes a file, symlink or whole directory tree; records every entry removed. `false`
    /// if nothing was there.
    pub fn remove(&mut self, path: &str, detail: &str) -> Result<bool> {
        let Some(k) = self.kind_of(path)? else { return Ok(false) };
        if k == Kind::Dir {
            for (p, k) in self.walk(path)? {
                self.remove_one(&p, k, detail)?;
            }
        }
        self.remove_one(path, k, detail)?;
        Ok(true)
    }

    fn remove_one(&mut self, path: &str, k: Kind, detail: &str) -> Result<()> {
        let scrubbed = k == Kind::File && self.harvest(path)?;
        if !self.dry_run {
            if k == Kind::Dir {
                self.root.remove_dir(Path::new(path))?;
            } else {
                self.root.remove_file(Path::new(path))?;
            }
        }
        if scrubbed {
            self.record(path, ActionKind::Removed, &format!("{detail} (overwritten with zeros first)"));
        } else {
            self.record(path, ActionKind::Removed, detail);
        }
        Ok(())
    }

    /// Removes everything inside `dir`, keeping `dir` itself (and its owner and mode). Entries
    /// for which `keep(name)` holds stay.
    pub fn clear_dir(&mut self, dir: &str, keep: impl Fn(&str) -> bool, detail: &str) -> Result<()> {
        for name in self.list(dir)? {
            if !keep(&name) {
                self.remove(&join(dir, &name), detail)?;
            }
        }
        Ok(())
    }

    /// Empties a regular file in place (owner, mode, inode kept). Symlinks and empty files are
    /// left alone. `true` if it was truncated.
    pub fn truncate(&mut self, path: &str, detail: &str) -> Result<bool> {
        let Some(st) = self.stat(path)? else { return Ok(false) };
        if kind(&st) != Kind::File || st.st_size == 0 {
            return Ok(false);
        }
        let scrubbed = self.harvest(path)?;
        if !self.dry_run {
            let fd = self.root.open_in(Path::new(path), OFlag::O_WRONLY | OFlag::O_TRUNC | OFlag::O_NOFOLLOW, 0)?;
            drop(fd);
        }
        let detail = if scrubbed { format!("{detail} (overwritten with zeros first)") } else { detail.to_string() };
        self.record(path, ActionKind::Truncated, &detail);
        Ok(true)
    }

    /// Replaces the content of `path`. A regular file is rewritten in place (owner and mode
    /// kept); a symlink or an absent path becomes a new regular file with `mode`. Nothing is
    /// recorded when the content is already `data`.
    pub fn rewrite(&mut self, path: &str, data: &[u8], mode: u32, detail: &str) -> Result<()> {
        let k = self.kind_of(path)?;
        if k == Some(Kind::File) && self.read(path)?.as_deref() == Some(data) {
            return Ok(());
        }
        let action = if k == Some(Kind::File) { ActionKind::Rewritten } else { ActionKind::Created };
        if k == Some(Kind::File) {
            self.harvest(path)?;
        }
        if !self.dry_run {
            let mut f = if k == Some(Kind::File) {
                let fd = self.root.open_in(Path::new(path), OFlag::O_WRONLY | OFlag::O_TRUNC | OFlag::O_NOFOLLOW, 0)?;
                std::fs::File::from(fd)
            } else {
                self.root.create_replacing(Path::new(path), mode)?
            };
            f.write_all(data).map_err(|e| ResolveError {
                op: "write",
                path: path.into(),
                source: e.raw_os_error().map_or(Errno::EIO, Errno::from_raw),
            })?;
        }
        let detail = if k == Some(Kind::Link) && detail.is_empty() { "symlink replaced by a file" } else { detail };
        self.record(path, action, detail);
        Ok(())
    }

    /// Creates directories (recorded only when new).
    pub fn mkdir_all(&mut self, path: &str, mode: u32) -> Result<()> {
        if self.kind_of(path)? == Some(Kind::Dir) {
            return Ok(());
        }
        if !self.dry_run {
            self.root.mkdir_all(Path::new(path), mode)?;
        }
        self.record(path, ActionKind::Created, "directory");
        Ok(())
    }

    /// Makes `path` a symlink to `target` (replacing a file or link already there).
    pub fn symlink(&mut self, target: &str, path: &str, detail: &str) -> Result<()> {
        let k = self.kind_of(path)?;
        if k == Some(Kind::Link) {
            let dir = self.root.dir(Path::new(parent(path)))?;
            let cur = nix::fcntl::readlinkat(&dir, base(path));
            if cur.is_ok_and(|c| c == std::ffi::OsStr::new(target)) {
                return Ok(());
            }
        }
        if k == Some(Kind::File) {
            self.harvest(path)?;
        }
        if !self.dry_run {
            if k.is_some() {
                self.root.remove_file(Path::new(path))?;
            }
            self.root.symlink(Path::new(target), Path::new(path))?;
        }
        let sep = if detail.is_empty() { "" } else { "; " };
        self.record(path, ActionKind::Created, &format!("symlink to {target}{sep}{detail}"));
        Ok(())
    }
}

/// An I/O error on an image path, as the image-root API reports them.
fn io_error(op: &'static str, path: &str, e: &std::io::Error) -> ResolveError {
    ResolveError { op, path: Path::new(path).to_path_buf(), source: e.raw_os_error().map_or(Errno::EIO, Errno::from_raw) }
}

/// `dir/name` for image paths.
pub fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') { format!("{dir}{name}") } else { format!("{dir}/{name}") }
}

/// The parent of an image path ("/" for top-level entries).
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// The final component of an image path.
pub fn base(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn paths() {
        assert_eq!(join("/", "etc"), "/etc");
        assert_eq!(join("/etc", "ssh"), "/etc/ssh");
        assert_eq!(parent("/etc/ssh"), "/etc");
        assert_eq!(parent("/etc"), "/");
        assert_eq!(base("/etc/ssh"), "ssh");
    }

    #[test]
    fn dry_run_records_without_changing() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("var/tmp/a")).unwrap();
        std::fs::write(d.path().join("var/tmp/a/f"), b"x").unwrap();
        std::fs::write(d.path().join("log"), b"x").unwrap();
        let root = Root::open(d.path()).unwrap();
        let mut s = Scrubber::new(&root, true);
        s.clear_dir("/var/tmp", |_| false, "").unwrap();
        s.truncate("/log", "").unwrap();
        s.rewrite("/new", b"1", 0o644, "").unwrap();
        assert_eq!(s.actions().len(), 4, "{:?}", s.actions());
        assert!(d.path().join("var/tmp/a/f").exists());
        assert_eq!(std::fs::read(d.path().join("log")).unwrap(), b"x");
        assert!(!d.path().join("new").exists());
    }

    #[test]
    fn removal_never_follows_links() {
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("keep"), b"host").unwrap();
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("tmp")).unwrap();
        symlink(host.path(), d.path().join("tmp/link")).unwrap();
        symlink(host.path().join("keep"), d.path().join("tmp/file")).unwrap();
        let root = Root::open(d.path()).unwrap();
        let mut s = Scrubber::new(&root, false);
        s.clear_dir("/tmp", |_| false, "").unwrap();
        s.truncate("/tmp/file", "").unwrap();
        assert!(std::fs::read_dir(d.path().join("tmp")).unwrap().next().is_none());
        assert_eq!(std::fs::read(host.path().join("keep")).unwrap(), b"host");
    }
}
