//! FITRIM on a mounted filesystem, so freed blocks become holes in the disk file; syncfs
//! before it (ext4 frees a deleted file's blocks only when the journal transaction that
//! deleted it commits, and FITRIM skips blocks not yet free); and, where discard does not
//! work, zeros written over the free space instead.

use std::os::fd::AsRawFd;
use std::path::Path;

#[repr(C)]
struct FstrimRange {
    start: u64,
    len: u64,
    minlen: u64,
}

nix::ioctl_readwrite!(fitrim, b'X', 121, FstrimRange);

/// Trims the filesystem mounted at `dir` (opened by the caller); returns bytes trimmed.
pub fn trim(dir: &std::fs::File, shown: &Path) -> Result<u64, TrimError> {
    let mut range = FstrimRange { start: 0, len: u64::MAX, minlen: 0 };
    #[allow(unsafe_code)]
    // SAFETY: `dir` is an open fd and `range` a valid, exclusively borrowed fstrim_range.
    unsafe { fitrim(dir.as_raw_fd(), &mut range) }.map_err(|source| TrimError { op: "trim", dir: shown.to_path_buf(), source })?;
    Ok(range.len)
}

/// FITRIM failed.
#[derive(Debug, thiserror::Error)]
#[error("Failed to {op} the filesystem at {dir}: {source}")]
pub struct TrimError {
    /// What we tried ("trim", "sync").
    pub op: &'static str,
    /// Mount point.
    pub dir: std::path::PathBuf,
    /// Cause.
    #[source]
    pub source: nix::Error,
}

/// syncfs(2) on the filesystem holding `dir`: dirty data written, the journal committed.
pub fn sync(dir: &std::fs::File, shown: &Path) -> Result<(), TrimError> {
    nix::unistd::syncfs(dir).map_err(|source| TrimError { op: "sync", dir: shown.to_path_buf(), source })
}

/// Name of the file [`zero_free`] fills.
const ZERO_FILE: &str = ".imgforge-zero-fill";

/// Overwrites the free space of the filesystem mounted at `dir` with zeros: a file of zeros
/// written until the filesystem is full, synced, removed, and the removal synced. For
/// filesystems that cannot discard. Returns the bytes written.
pub fn zero_free(dir: &Path) -> Result<u64, ZeroError> {
    use std::io::Write;
    let path = dir.join(ZERO_FILE);
    let err = |op: &'static str| move |source: std::io::Error| ZeroError { op, path: dir.join(ZERO_FILE), source };
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&path).map_err(err("create"))?;
    let zeros = vec![0u8; 1 << 20];
    let mut written = 0u64;
    let filled = loop {
        match f.write(&zeros) {
            Ok(0) => break Ok(()),
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT) => break Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    // Remove the file whatever happened; a failed fill is reported after.
    let synced = f.sync_all();
    drop(f);
    std::fs::remove_file(&path).map_err(err("remove"))?;
    filled.map_err(err("write"))?;
    synced.map_err(err("sync"))?;
    let d = std::fs::File::open(dir).map_err(err("open the directory of"))?;
    nix::unistd::syncfs(&d).map_err(|e| ZeroError { op: "sync after removing", path, source: e.into() })?;
    Ok(written)
}

/// Zeroing the free space failed.
#[derive(Debug, thiserror::Error)]
#[error("Failed to {op} {path} (zeroing the free space of a filesystem that cannot discard): {source}")]
pub struct ZeroError {
    /// What we tried.
    pub op: &'static str,
    /// The fill file.
    pub path: std::path::PathBuf,
    /// Cause.
    #[source]
    pub source: std::io::Error,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A 4 MiB tmpfs filled with zeros and left empty (needs root to mount).
    #[test]
    fn zero_free_fills_then_removes() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped zero_free_fills_then_removes: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        nix::mount::mount(Some("tmpfs"), dir.path(), Some("tmpfs"), nix::mount::MsFlags::empty(), Some("size=4m")).unwrap();
        struct Unmount<'a>(&'a Path);
        impl Drop for Unmount<'_> {
            fn drop(&mut self) {
                let _ = nix::mount::umount(self.0);
            }
        }
        let _u = Unmount(dir.path());
        std::fs::write(dir.path().join("keep"), b"kept").unwrap();
        let n = zero_free(dir.path()).unwrap();
        assert!(n > 3 << 20 && n <= 4 << 20, "{n} bytes written");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["keep"]);
        assert_eq!(std::fs::read(dir.path().join("keep")).unwrap(), b"kept");
    }
}
