//! What every format writer is told about the disk it writes, and the contract between the
//! export driver and the writers.
//!
//! The driver reads the raw input once, in ascending order, and hands each writer the data
//! extents (holes are never read). Writers detect all-zero clusters themselves.

use sha2::{Digest, Sha256};

/// Alignment of every chunk the driver hands out (and the VMDK grain / qcow2 cluster size).
pub const CLUSTER: u64 = 64 * 1024;

/// The disk being exported.
#[derive(Debug, Clone)]
pub struct DiskSpec {
    /// Virtual size in bytes; always a multiple of 512.
    pub size: u64,
    /// Seconds since the Unix epoch for every timestamp written (SOURCE_DATE_EPOCH, or derived
    /// from the input), so that two exports of one input are byte-identical.
    pub epoch: u64,
    /// Digest of the input's content; every UUID/CID is derived from it.
    pub digest: [u8; 32],
    /// Base name without extension (used in descriptors: VMDK extent, OVF names).
    pub name: String,
}

impl DiskSpec {
    /// A stable RFC 4122 version-4-shaped UUID for `purpose` (e.g. "vhd", "vmdk"), derived
    /// from the content digest. Bytes are in RFC 4122 (big-endian) order.
    pub fn uuid(&self, purpose: &str) -> [u8; 16] {
        let mut h = Sha256::new();
        h.update(b"imgforge-export-id\0");
        h.update(purpose.as_bytes());
        h.update([0]);
        h.update(self.digest);
        let d = h.finalize();
        let mut u = [0u8; 16];
        u.copy_from_slice(&d[..16]);
        u[6] = (u[6] & 0x0f) | 0x40;
        u[8] = (u[8] & 0x3f) | 0x80;
        u
    }

    /// A stable 32-bit content id (VMDK CID): never `ffffffff` or `fffffffe`.
    pub fn cid(&self) -> u32 {
        let u = self.uuid("cid");
        let c = u32::from_be_bytes([u[0], u[1], u[2], u[3]]);
        if c >= 0xffff_fffe { 0x1234_5678 } else { c }
    }
}

/// A format writer fed by the export driver.
///
/// Contract:
/// - `write` is called in strictly ascending, non-overlapping order of `offset`;
/// - `offset` is a multiple of [`CLUSTER`], and `data.len()` is a multiple of [`CLUSTER`] unless
///   the chunk ends exactly at `DiskSpec::size` (the disk's last, partial cluster);
/// - ranges never passed to `write` are zeros; chunks may still contain all-zero clusters;
/// - `finish` is called once, after the last `write`, and writes trailing metadata and flushes.
///   It does not fsync or rename: the driver does.
pub trait FormatWriter: Send {
    /// Writes one chunk of disk data.
    fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()>;
    /// Completes the output.
    fn finish(self: Box<Self>) -> std::io::Result<()>;
    /// Whether `write` spends its time compressing (then reading ahead on another thread pays);
    /// writers that only copy bytes into the page cache run in the reading thread, because a
    /// concurrent read and buffered write of one process on ext4 cost three times their sum.
    fn compresses(&self) -> bool {
        false
    }
}

/// True when every byte is zero (compared 16 bytes at a time).
pub fn is_zero(b: &[u8]) -> bool {
    let words = b.chunks_exact(16);
    let tail = words.remainder();
    words.fold(0u128, |acc, c| acc | u128::from_ne_bytes(c.try_into().unwrap_or([1; 16]))) == 0 && tail.iter().all(|&x| x == 0)
}

/// Fills `buf` with xorshift64 noise (incompressible test data).
#[cfg(test)]
pub fn test_noise(buf: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    for c in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = c.len();
        c.copy_from_slice(&x.to_le_bytes()[..n]);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        let s = DiskSpec { size: 512, epoch: 0, digest: [7; 32], name: "x".into() };
        assert_eq!(s.uuid("vhd"), s.uuid("vhd"));
        assert_ne!(s.uuid("vhd"), s.uuid("vmdk"));
        assert_eq!(s.uuid("vhd")[6] >> 4, 4);
        let t = DiskSpec { digest: [8; 32], ..s.clone() };
        assert_ne!(s.uuid("vhd"), t.uuid("vhd"));
        assert!(s.cid() < 0xffff_fffe);
    }

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[0; 65536]));
        let mut b = vec![0u8; 65537];
        b[65536] = 1;
        assert!(!is_zero(&b));
        b[65536] = 0;
        b[3] = 1;
        assert!(!is_zero(&b));
        assert!(is_zero(&[]));
    }
}
