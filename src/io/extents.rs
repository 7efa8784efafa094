//! Where a file holds data: SEEK_DATA/SEEK_HOLE, so that copies, digests and scans never read
//! (or make the kernel allocate page cache for) a hole.

use std::fs::File;
use std::os::fd::AsFd;

/// Data extents `[start, end)` of a file, via SEEK_DATA/SEEK_HOLE.
pub fn data_extents(f: &File, size: u64) -> std::io::Result<Vec<(u64, u64)>> {
    use nix::unistd::{Whence, lseek};
    let mut out = Vec::new();
    let mut pos: i64 = 0;
    let size = i64::try_from(size).map_err(|_| std::io::Error::other("file too large"))?;
    while pos < size {
        let start = match lseek(f.as_fd(), pos, Whence::SeekData) {
            Ok(s) => s,
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let end = lseek(f.as_fd(), start, Whence::SeekHole)?;
        out.push((start as u64, end as u64));
        pos = end;
    }
    Ok(out)
}
