//! The content digest that export IDs (VHD unique id, VMDK CID, OVF names) derive from, when the
//! input does not come with one: BLAKE3 over the data extents (offset, length, bytes), so holes
//! cost nothing and the same raw always gives the same IDs.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::feed::{chunks, cluster_extents};

/// Digests the data extents of `file`. `stop` is polled between chunks.
pub fn content_digest(file: &File, size: u64, stop: &(dyn Fn() -> bool + Sync)) -> io::Result<[u8; 32]> {
    let mut h = blake3::Hasher::new();
    h.update(b"imgforge-content-v1\0");
    h.update(&size.to_le_bytes());
    let mut buf = Vec::new();
    for (start, end) in chunks(&cluster_extents(file, size)?) {
        if stop() {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "stopped by a signal"));
        }
        buf.resize((end - start) as usize, 0);
        file.read_exact_at(&mut buf, start)?;
        h.update(&start.to_le_bytes());
        h.update(&(end - start).to_le_bytes());
        h.update_rayon(&buf);
    }
    Ok(*h.finalize().as_bytes())
}
