//! FITRIM on a mounted filesystem, so freed blocks become holes in the disk file.

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
    unsafe { fitrim(dir.as_raw_fd(), &mut range) }.map_err(|source| TrimError { dir: shown.to_path_buf(), source })?;
    Ok(range.len)
}

/// FITRIM failed.
#[derive(Debug, thiserror::Error)]
#[error("Failed to trim the filesystem at {dir}: {source}")]
pub struct TrimError {
    /// Mount point.
    pub dir: std::path::PathBuf,
    /// Cause.
    #[source]
    pub source: nix::Error,
}
