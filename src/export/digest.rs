//! The content digest that export IDs (VHD unique id, VMDK CID, OVF names) derive from, when the
//! input does not come with one: XXH3-128 over the data extents (offset, length, bytes), so holes
//! cost nothing and the same raw always gives the same IDs, widened to 32 bytes with BLAKE3.
//! The IDs only need to be stable and distinct, not collision-resistant against an attacker (a
//! build's manifest brings a SHA-256 instead); XXH3 runs at memory speed, where BLAKE3 on two
//! cores took as long as the kernel copy of a fixed VHD it runs beside.
//!
//! The extents are hashed straight from a read-only memory map of the input: no copy into user
//! space, which matters because the digest runs beside the kernel copy of the same bytes (fixed
//! VHD), and a concurrent read() and page-cache write of one process cost three times their sum.

use std::fs::File;
use std::io;

use super::feed::{chunks, cluster_extents};

/// Digests the data extents of `file`. `stop` is polled between chunks. Chunks are hashed on
/// every core, each with its offset and length, and their digests combined in disk order.
pub fn content_digest(file: &File, size: u64, stop: &(dyn Fn() -> bool + Sync)) -> io::Result<[u8; 32]> {
    use rayon::prelude::*;
    let plan = chunks(&cluster_extents(file, size)?);
    let parts: Vec<u128> = plan
        .par_iter()
        .map(|&(start, end)| -> io::Result<u128> {
            if stop() {
                return Err(io::Error::new(io::ErrorKind::Interrupted, "stopped by a signal"));
            }
            // One chunk mapped at a time per core: resident memory stays a few chunks.
            let map = map::read_only(file, start, end - start)?;
            let mut h = xxhash_rust::xxh3::Xxh3::new();
            h.update(&start.to_le_bytes());
            h.update(&(end - start).to_le_bytes());
            h.update(&map);
            Ok(h.digest128())
        })
        .collect::<io::Result<_>>()?;
    let mut h = blake3::Hasher::new();
    h.update(b"imgforge-content-v2\0");
    h.update(&size.to_le_bytes());
    for p in parts {
        h.update(&p.to_le_bytes());
    }
    Ok(*h.finalize().as_bytes())
}

#[allow(unsafe_code)]
mod map {
    use std::fs::File;
    use std::io;

    /// Maps `len` bytes of `file` from `offset` (a multiple of the page size) read-only,
    /// advised for sequential reading.
    pub fn read_only(file: &File, offset: u64, len: u64) -> io::Result<memmap2::Mmap> {
        let len = usize::try_from(len).map_err(io::Error::other)?;
        // SAFETY: the mapping is read-only and only read through the returned `Mmap`, whose
        // lifetime ends with the digest. The input is a disk image no part of imgforge writes
        // while exporting; another process truncating it meanwhile would make the read fault
        // (SIGBUS) — the same trade the blake3 and ripgrep mmap readers make for speed.
        let map = unsafe { memmap2::MmapOptions::new().offset(offset).len(len).map(file)? };
        map.advise(memmap2::Advice::Sequential)?;
        Ok(map)
    }
}
