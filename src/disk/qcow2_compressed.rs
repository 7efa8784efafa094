//! Where a qcow2 image keeps its compressed clusters, so that conversion can inflate them with
//! libdeflate (about twice as fast as the pure-Rust inflater imago uses: decompression was a
//! fifth of a build's CPU time).
//!
//! An optimisation only: imago still opens and validates the image and maps every range; a
//! cluster is inflated here only where imago reports it as compressed data and this index has
//! it, and anything unexpected (another compression type, an index too large, a cluster that
//! does not inflate to exactly one cluster) makes the caller fall back to imago's own read.
//! The header and tables are hostile input: every offset and count is bounded before use, and
//! nothing is allocated from an unchecked field.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

/// Largest L1 table read (entries): 2^20 entries of 64 KiB clusters map 8 PiB.
const MAX_L1: u64 = 1 << 20;
/// Largest number of L2 tables read; past it the index is abandoned (imago reads everything).
const MAX_L2_TABLES: usize = 1 << 14;

/// A compressed cluster: where its deflate stream starts in the file, and at most how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compressed {
    pub host_offset: u64,
    pub max_len: usize,
}

/// The compressed clusters of an image, by guest cluster index.
#[derive(Debug, Default)]
pub struct Index {
    /// Cluster size in bytes.
    pub cluster_size: u64,
    clusters: HashMap<u64, Compressed>,
}

impl Index {
    /// Reads the index of `file`; `None` when the image is not one this fast path handles
    /// (the caller then lets imago read every cluster).
    pub fn read(file: &File) -> Option<Index> {
        let mut h = [0u8; 104];
        file.read_exact_at(&mut h[..72], 0).ok()?;
        let be32 = |b: &[u8], o: usize| b.get(o..o + 4).and_then(|s| s.try_into().ok()).map(u32::from_be_bytes);
        let be64 = |b: &[u8], o: usize| b.get(o..o + 8).and_then(|s| s.try_into().ok()).map(u64::from_be_bytes);
        if be32(&h, 0)? != 0x5146_49fb {
            return None;
        }
        let version = be32(&h, 4)?;
        let cluster_bits = be32(&h, 20)?;
        if !(9..=21).contains(&cluster_bits) || !(2..=3).contains(&version) {
            return None;
        }
        if version == 3 {
            file.read_exact_at(&mut h[72..104], 72).ok()?;
            let incompatible = be64(&h, 72)?;
            // Only the dirty bit (0) and nothing else: not an external data file (2), not a
            // non-deflate compression type (3), not extended L2 entries (4).
            if incompatible & !1 != 0 {
                return None;
            }
        }
        let size = be64(&h, 24)?;
        let l1_size = u64::from(be32(&h, 36)?);
        let l1_offset = be64(&h, 40)?;
        let cluster_size = 1u64 << cluster_bits;
        let l2_entries = cluster_size / 8;
        let needed_l1 = size.div_ceil(cluster_size.checked_mul(l2_entries)?);
        if l1_size > MAX_L1 || l1_size < needed_l1 {
            return None;
        }
        let mut l1 = vec![0u8; usize::try_from(l1_size * 8).ok()?];
        file.read_exact_at(&mut l1, l1_offset).ok()?;
        let mut clusters = HashMap::new();
        let mut l2 = vec![0u8; usize::try_from(cluster_size).ok()?];
        let x = 62 - (cluster_bits - 8);
        let mut tables = 0usize;
        for (i, e) in l1.chunks_exact(8).enumerate().take(usize::try_from(needed_l1).ok()?) {
            let l2_offset = u64::from_be_bytes(e.try_into().ok()?) & 0x00ff_ffff_ffff_fe00;
            if l2_offset == 0 {
                continue;
            }
            tables += 1;
            if tables > MAX_L2_TABLES {
                return None;
            }
            file.read_exact_at(&mut l2, l2_offset).ok()?;
            for (j, e) in l2.chunks_exact(8).enumerate() {
                let entry = u64::from_be_bytes(e.try_into().ok()?);
                if entry & (1 << 62) == 0 {
                    continue;
                }
                let host_offset = entry & ((1u64 << x) - 1);
                let sectors = ((entry >> x) & ((1u64 << (cluster_bits - 8)) - 1)) + 1;
                let max_len = usize::try_from(sectors * 512 - (host_offset & 511)).ok()?;
                let guest = (i as u64) * l2_entries + j as u64;
                clusters.insert(guest, Compressed { host_offset, max_len });
            }
        }
        Some(Index { cluster_size, clusters })
    }

    /// The compressed cluster holding guest byte `offset`, if any.
    pub fn at(&self, offset: u64) -> Option<Compressed> {
        self.clusters.get(&(offset / self.cluster_size)).copied()
    }

    /// No compressed cluster.
    pub fn is_empty(&self) -> bool {
        self.clusters.is_empty()
    }

    /// Fills `piece` (guest bytes from `offset`) from compressed clusters only. False when a
    /// cluster of the range is not in the index or does not inflate: the caller reads the range
    /// through imago instead.
    pub fn fill(&self, file: &File, offset: u64, piece: &mut [u8], w: &mut Inflater) -> bool {
        let cs = self.cluster_size;
        w.cluster.resize(usize::try_from(cs).unwrap_or(0), 0);
        let mut done = 0usize;
        while done < piece.len() {
            let pos = offset + done as u64;
            let Some(c) = self.at(pos) else { return false };
            let Inflater { dec, scratch, cluster } = w;
            if !inflate(file, c, scratch, dec, cluster) {
                return false;
            }
            let from = usize::try_from(pos % cs).unwrap_or(0);
            let n = (cluster.len() - from).min(piece.len() - done);
            piece[done..done + n].copy_from_slice(&cluster[from..from + n]);
            done += n;
        }
        true
    }
}

/// One worker's inflater and buffers.
pub struct Inflater {
    dec: libdeflater::Decompressor,
    scratch: Vec<u8>,
    cluster: Vec<u8>,
}

impl Default for Inflater {
    fn default() -> Self {
        Self { dec: libdeflater::Decompressor::new(), scratch: Vec::new(), cluster: Vec::new() }
    }
}

/// Inflates the cluster `c` of `file` into `out` (exactly one cluster). False when it does not
/// inflate to exactly `out.len()` bytes: the caller then reads it through imago, which reports
/// the error properly.
pub fn inflate(file: &File, c: Compressed, scratch: &mut Vec<u8>, dec: &mut libdeflater::Decompressor, out: &mut [u8]) -> bool {
    scratch.resize(c.max_len, 0);
    // The last cluster's stream may end before the sectors it claims (the file ends there).
    let Ok(n) = read_up_to(file, scratch, c.host_offset) else { return false };
    matches!(dec.deflate_decompress(&scratch[..n], out), Ok(k) if k == out.len())
}

fn read_up_to(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let n = file.read_at(&mut buf[done..], offset + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn qcow2(dir: &std::path::Path) -> std::path::PathBuf {
        let raw = dir.join("in.raw");
        let data: Vec<u8> = (0..(2u32 << 20)).map(|i| (i % 253) as u8).collect();
        std::fs::write(&raw, &data).unwrap();
        let q = dir.join("in.qcow2");
        let ok = std::process::Command::new("qemu-img").args(["convert", "-c", "-O", "qcow2"]).arg(&raw).arg(&q).status();
        assert!(ok.expect("qemu-img is not installed: run scripts/setup (qemu-utils)").success());
        q
    }

    /// Hostile headers give no index (imago reads everything) instead of huge allocations.
    #[test]
    fn hostile_headers_give_no_index() {
        let dir = tempfile::tempdir().unwrap();
        let q = qcow2(dir.path());
        let good = std::fs::read(&q).unwrap();
        assert!(Index::read(&File::open(&q).unwrap()).is_some());
        for (at, bytes) in [
            (36usize, 0xffff_ffffu32.to_be_bytes().to_vec()), // L1 of 4G entries
            (20, 40u32.to_be_bytes().to_vec()),               // cluster_bits 40
            (40, u64::MAX.to_be_bytes().to_vec()),            // L1 beyond the file
            (72, 8u64.to_be_bytes().to_vec()),                // compression type other than deflate
        ] {
            let mut bad = good.clone();
            bad[at..at + bytes.len()].copy_from_slice(&bytes);
            let p = dir.path().join("bad.qcow2");
            std::fs::write(&p, &bad).unwrap();
            assert!(Index::read(&File::open(&p).unwrap()).is_none(), "field at {at}");
        }
    }

    /// A cluster whose stream is damaged does not fill: the caller falls back to imago.
    #[test]
    fn a_damaged_cluster_does_not_fill() {
        let dir = tempfile::tempdir().unwrap();
        let q = qcow2(dir.path());
        let f = File::open(&q).unwrap();
        let index = Index::read(&f).unwrap();
        let mut w = Inflater::default();
        let mut piece = vec![0u8; 65536];
        assert!(index.fill(&f, 65536, &mut piece, &mut w));
        assert_eq!(piece[..4], [(65536u32 % 253) as u8, (65537u32 % 253) as u8, (65538u32 % 253) as u8, (65539u32 % 253) as u8]);
        let c = index.at(65536).unwrap();
        let mut bytes = std::fs::read(&q).unwrap();
        for b in &mut bytes[c.host_offset as usize..c.host_offset as usize + 16] {
            *b = 0xff;
        }
        let p = dir.path().join("damaged.qcow2");
        std::fs::write(&p, &bytes).unwrap();
        assert!(!index.fill(&File::open(&p).unwrap(), 65536, &mut piece, &mut w));
    }
}
