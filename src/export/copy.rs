//! Sparse copies for the formats that are the raw bytes themselves (raw, fixed VHD): the kernel
//! copies the data extents (copy_file_range, no trip through user space) on every core; holes
//! stay holes.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::feed::{chunks, cluster_extents};

/// Copies the data of `src` (size `size`) into `dst` at the same offsets, then sets `dst`'s
/// length to `len` (≥ `size`; the tail reads as zeros).
pub fn sparse_copy(src: &File, dst: &File, size: u64, len: u64, stop: &(dyn Fn() -> bool + Sync), done: &AtomicU64) -> io::Result<()> {
    dst.set_len(len)?;
    let plan = chunks(&cluster_extents(src, size)?);
    let next = AtomicUsize::new(0);
    let prealloc = !clones(dst);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| -> io::Result<()> {
                    let mut fallback: Option<Vec<u8>> = None;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&(start, end)) = plan.get(i) else { return Ok(()) };
                        if stop() {
                            return Err(io::Error::new(io::ErrorKind::Interrupted, "stopped by a signal"));
                        }
                        if fallback.is_none() {
                            match kernel_copy(src, dst, start, end, prealloc) {
                                Ok(()) => {
                                    done.fetch_add(end - start, Ordering::Relaxed);
                                    continue;
                                }
                                Err(e) if unsupported(&e) => fallback = Some(Vec::new()),
                                Err(e) => return Err(e),
                            }
                        }
                        if let Some(buf) = fallback.as_mut() {
                            buf.resize((end - start) as usize, 0);
                            src.read_exact_at(buf, start)?;
                            dst.write_all_at(buf, start)?;
                            done.fetch_add(end - start, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| h.join().unwrap_or_else(|_| Err(io::Error::other("copy thread panicked"))))
    })
}

/// Allocates `[offset, offset + len)` of `file` before it is written. On ext4, buffered writes
/// and copy_file_range into allocated blocks cost a third of writes into a hole (delayed
/// allocation per page); a full disk also fails here, before any byte is written. Filesystems
/// without fallocate just skip it.
pub fn preallocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let (Ok(off), Ok(n)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Err(io::Error::other(format!("offset {offset}+{len} out of range")));
    };
    match nix::fcntl::fallocate(file, nix::fcntl::FallocateFlags::empty(), off, n) {
        Ok(()) | Err(nix::errno::Errno::EOPNOTSUPP) => Ok(()),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// Whether `file` lives on a filesystem where copy_file_range shares extents (reflink) instead
/// of copying: XFS and btrfs. Preallocating there would force a real copy.
pub fn clones(file: &File) -> bool {
    use nix::sys::statfs::{BTRFS_SUPER_MAGIC, XFS_SUPER_MAGIC, fstatfs};
    fstatfs(file).is_ok_and(|s| s.filesystem_type() == XFS_SUPER_MAGIC || s.filesystem_type() == BTRFS_SUPER_MAGIC)
}

fn kernel_copy(src: &File, dst: &File, start: u64, end: u64, prealloc: bool) -> io::Result<()> {
    if prealloc {
        preallocate(dst, start, end - start)?;
    }
    let mut off_in = i64::try_from(start).map_err(io::Error::other)?;
    let mut off_out = off_in;
    let mut left = (end - start) as usize;
    while left > 0 {
        let n = nix::fcntl::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), left)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("input ended at byte {off_in}")));
        }
        left -= n;
    }
    Ok(())
}

fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EXDEV | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP))
}
