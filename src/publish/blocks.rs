//! Which 512 KiB blocks a publish sends. Pure: extents in, block indices and decisions out.
//!
//! - Holes (per SEEK_DATA/SEEK_HOLE) are never read.
//! - Unencrypted, no parent: a block that holds only zeros is skipped (a new snapshot reads
//!   unwritten blocks as zeros), like coldsnap.
//! - Encrypted: every block of the volume is written, holes as zeros without reading them
//!   (an encrypted snapshot's unwritten blocks do not read as zeros).
//! - With a parent snapshot: unwritten blocks keep the parent's data, so a block is sent when it
//!   differs from the parent's raw, including blocks that became zero or a hole.

use sha2::{Digest, Sha256};

/// EBS snapshot block size: the only `DataLength` PutSnapshotBlock accepts.
pub const BLOCK: u64 = 512 * 1024;

/// Number of blocks covering `size` bytes (the last one zero-padded).
pub fn block_count(size: u64) -> u64 {
    size.div_ceil(BLOCK)
}

/// Indices of the blocks that `extents` (byte ranges, ascending) touch. Pure.
pub fn blocks_of(extents: &[(u64, u64)]) -> Vec<u64> {
    let mut out: Vec<u64> = Vec::new();
    for &(s, e) in extents {
        if e <= s {
            continue;
        }
        let first = s / BLOCK;
        let last = (e - 1) / BLOCK;
        for b in first..=last {
            if out.last().is_none_or(|&l| l < b) {
                out.push(b);
            }
        }
    }
    out
}

/// Merges two ascending, deduplicated index lists. Pure.
pub fn union(a: &[u64], b: &[u64]) -> Vec<u64> {
    let mut out = Vec::with_capacity(a.len().max(b.len()));
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let next = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) if x == y => {
                i += 1;
                j += 1;
                x
            }
            (Some(&x), Some(&y)) if x < y => {
                i += 1;
                x
            }
            (Some(_), Some(&y)) | (None, Some(&y)) => {
                j += 1;
                y
            }
            (Some(&x), None) => {
                i += 1;
                x
            }
            (None, None) => break,
        };
        out.push(next);
    }
    out
}

/// How blocks are chosen for one upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// New unencrypted snapshot: data blocks that are not all zeros.
    Sparse,
    /// New encrypted snapshot: every block.
    Full,
    /// Incremental on a parent snapshot: blocks that differ from the parent's raw.
    Delta,
}

/// The blocks to consider (read, then maybe send), in ascending order. `data` and
/// `parent_data` are the data blocks (see [`blocks_of`]) of the image and the parent raw.
pub fn candidates(mode: Mode, total: u64, data: &[u64], parent_data: &[u64]) -> Vec<u64> {
    match mode {
        Mode::Sparse => data.to_vec(),
        Mode::Full => (0..total).collect(),
        Mode::Delta => union(data, parent_data).into_iter().filter(|&b| b < total).collect(),
    }
}

/// Whether every byte is zero.
pub fn is_zero(buf: &[u8]) -> bool {
    let mut chunks = buf.chunks_exact(16);
    let body = chunks.by_ref().all(|c| c == [0u8; 16]);
    body && chunks.remainder().iter().all(|&b| b == 0)
}

/// Whether a block read from the image (`block`, zero-padded to [`BLOCK`]) is sent. `parent`
/// is the same block of the parent raw (zero-padded) in [`Mode::Delta`].
pub fn should_send(mode: Mode, block: &[u8], parent: Option<&[u8]>) -> bool {
    match mode {
        Mode::Sparse => !is_zero(block),
        Mode::Full => true,
        Mode::Delta => match parent {
            Some(p) => p != block,
            None => true,
        },
    }
}

/// The raw SHA-256 of a block.
pub fn sha256(block: &[u8]) -> [u8; 32] {
    Sha256::digest(block).into()
}

/// LINEAR aggregate checksum: SHA-256 over the raw digests of the written blocks in ascending
/// block index (as coldsnap computes it). `digests` must be sorted by index.
pub fn linear_checksum<'a>(digests: impl IntoIterator<Item = &'a [u8; 32]>) -> [u8; 32] {
    let mut h = Sha256::new();
    for d in digests {
        h.update(d);
    }
    h.finalize().into()
}

/// Size in GiB, rounded up, at least 1.
pub fn gib_ceil(size: u64) -> u64 {
    size.div_ceil(1 << 30).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_of_extents() {
        assert_eq!(blocks_of(&[]), Vec::<u64>::new());
        assert_eq!(blocks_of(&[(0, 1)]), vec![0]);
        assert_eq!(blocks_of(&[(0, BLOCK)]), vec![0]);
        assert_eq!(blocks_of(&[(0, BLOCK + 1)]), vec![0, 1]);
        assert_eq!(blocks_of(&[(10, 20), (30, 40), (BLOCK * 3 - 1, BLOCK * 3 + 1)]), vec![0, 2, 3]);
        assert_eq!(blocks_of(&[(5, 5)]), Vec::<u64>::new());
    }

    #[test]
    fn union_merges() {
        assert_eq!(union(&[1, 3, 5], &[2, 3, 6]), vec![1, 2, 3, 5, 6]);
        assert_eq!(union(&[], &[2]), vec![2]);
        assert_eq!(union(&[4], &[]), vec![4]);
    }

    #[test]
    fn candidates_by_mode() {
        assert_eq!(candidates(Mode::Sparse, 10, &[1, 4], &[2]), vec![1, 4]);
        assert_eq!(candidates(Mode::Full, 3, &[1], &[]), vec![0, 1, 2]);
        // A block that is data only in the parent must be considered (it may have become zero).
        assert_eq!(candidates(Mode::Delta, 10, &[1, 4], &[2, 4, 12]), vec![1, 2, 4]);
    }

    #[test]
    fn zero_and_send() {
        let z = vec![0u8; BLOCK as usize];
        let mut d = z.clone();
        d[BLOCK as usize - 1] = 1;
        assert!(is_zero(&z));
        assert!(!is_zero(&d));
        assert!(is_zero(&[0u8; 7]));
        assert!(!is_zero(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]));
        assert!(!should_send(Mode::Sparse, &z, None));
        assert!(should_send(Mode::Sparse, &d, None));
        assert!(should_send(Mode::Full, &z, None));
        assert!(!should_send(Mode::Delta, &d, Some(&d)));
        assert!(should_send(Mode::Delta, &z, Some(&d)), "a block that became zero is sent");
    }

    #[test]
    fn linear_is_sha_of_concatenated_digests() {
        let a = sha256(b"a");
        let b = sha256(b"b");
        let mut cat = a.to_vec();
        cat.extend_from_slice(&b);
        assert_eq!(linear_checksum([&a, &b]), sha256(&cat));
    }

    #[test]
    fn gib() {
        assert_eq!(gib_ceil(1), 1);
        assert_eq!(gib_ceil(1 << 30), 1);
        assert_eq!(gib_ceil((1 << 30) + 1), 2);
        assert_eq!(block_count(BLOCK + 1), 2);
    }
}
