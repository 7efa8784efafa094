//! Reads a raw disk once, in ascending order, and feeds its data extents to format writers.
//! Holes (SEEK_HOLE) are never read. A reader thread keeps the next chunk ready while the
//! writers work on the current one.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;

use super::spec::{CLUSTER, FormatWriter};

/// Bytes handed to writers per call (a multiple of [`CLUSTER`]).
pub const CHUNK: u64 = 8 * 1024 * 1024;

/// Bytes read and written at a time by copy-only writers (a multiple of [`CLUSTER`]): a read
/// followed by a write of the same 1 MiB finds it in the CPU cache; 8 MiB does not, and costs
/// three times as much system time on ext4.
const PIECE: u64 = 1024 * 1024;

/// Data extents of `file` rounded out to [`CLUSTER`] boundaries, merged, clipped to `size`.
pub fn cluster_extents(file: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (start, end) in crate::io::extents::data_extents(file, size)? {
        let s = start / CLUSTER * CLUSTER;
        let e = end.div_ceil(CLUSTER).saturating_mul(CLUSTER).min(size);
        match out.last_mut() {
            Some(last) if last.1 >= s => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    Ok(out)
}

/// Splits extents into chunks of at most [`CHUNK`] bytes that never cross a CHUNK boundary.
pub fn chunks(extents: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &(s, e) in extents {
        let mut p = s;
        while p < e {
            let next = ((p / CHUNK) + 1).saturating_mul(CHUNK).min(e);
            out.push((p, next));
            p = next;
        }
    }
    out
}

#[cfg(test)]
/// Feeds every data chunk of `file` (size `size`) to each writer in turn, in ascending order.
/// `stop` is polled between chunks; when it returns true, feeding ends with `Interrupted`.
pub fn feed(file: &File, size: u64, writers: &mut [&mut dyn FormatWriter], stop: &dyn Fn() -> bool) -> io::Result<()> {
    feed_counted(file, size, writers, stop, &AtomicU64::new(0))
}

/// [`feed`], adding the bytes of each chunk to `done` once every writer has taken it.
pub fn feed_counted(
    file: &File,
    size: u64,
    writers: &mut [&mut dyn FormatWriter],
    stop: &dyn Fn() -> bool,
    done: &AtomicU64,
) -> io::Result<()> {
    let plan = chunks(&cluster_extents(file, size)?);
    if !writers.iter().any(|w| w.compresses()) {
        // Copy-only writers: read and write in turn on this thread (see FormatWriter::compresses),
        // in pieces small enough to stay in the CPU cache between the read and the write.
        let mut buf = Vec::with_capacity(PIECE as usize);
        for &(start, end) in &plan {
            if stop() {
                return Err(io::Error::new(io::ErrorKind::Interrupted, "stopped by a signal"));
            }
            let mut at = start;
            while at < end {
                let next = (at + PIECE).min(end);
                buf.resize((next - at) as usize, 0);
                file.read_exact_at(&mut buf, at)?;
                for w in writers.iter_mut() {
                    w.write(at, &buf)?;
                }
                at = next;
            }
            done.fetch_add(end - start, Ordering::Relaxed);
        }
        return Ok(());
    }
    // Three buffers circulate: one being filled, one queued, one with the writers. Reusing them
    // avoids faulting in fresh pages for every chunk.
    let (tx, rx) = sync_channel::<io::Result<(u64, Vec<u8>)>>(2);
    let (back_tx, back_rx) = sync_channel::<Vec<u8>>(3);
    for _ in 0..3 {
        let _ = back_tx.send(Vec::with_capacity(CHUNK as usize));
    }
    std::thread::scope(|s| {
        // Owned here, so that an early return (a writer failed) drops it before the scope joins
        // the reader: a reader waiting for a buffer then sees the channel closed and ends.
        let back_tx = back_tx;
        s.spawn(move || {
            for &(start, end) in &plan {
                let Ok(mut buf) = back_rx.recv() else { return };
                buf.resize((end - start) as usize, 0);
                let r = file.read_exact_at(&mut buf, start).map(|()| (start, buf));
                let failed = r.is_err();
                if tx.send(r).is_err() || failed {
                    return;
                }
            }
        });
        for item in rx {
            if stop() {
                return Err(io::Error::new(io::ErrorKind::Interrupted, "stopped by a signal"));
            }
            let (offset, buf) = item?;
            for w in writers.iter_mut() {
                w.write(offset, &buf)?;
            }
            done.fetch_add(buf.len() as u64, Ordering::Relaxed);
            let _ = back_tx.send(buf);
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn chunks_respect_boundaries() {
        let c = chunks(&[(0, CHUNK + CLUSTER), (3 * CHUNK - CLUSTER, 3 * CHUNK + 512)]);
        assert_eq!(c, vec![(0, CHUNK), (CHUNK, CHUNK + CLUSTER), (3 * CHUNK - CLUSTER, 3 * CHUNK), (3 * CHUNK, 3 * CHUNK + 512)]);
    }
}
