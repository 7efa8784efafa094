//! Bounds-checked access to untrusted bytes: little-endian fields of a buffer, and reads of
//! the disk that never go past its size.

use std::io::{Read, Seek, SeekFrom};

use super::{Guid, PartitionError, SECTOR, SECTOR_SIZE};

/// Bounds-checked little-endian field access over an untrusted buffer.
pub(super) struct Fields<'a> {
    pub(super) buf: &'a [u8],
    pub(super) what: &'static str,
}

impl Fields<'_> {
    pub(super) fn bytes<const N: usize>(&self, off: usize) -> Result<[u8; N], PartitionError> {
        off.checked_add(N)
            .and_then(|end| self.buf.get(off..end))
            .and_then(|s| <[u8; N]>::try_from(s).ok())
            .ok_or(PartitionError::Truncated { what: self.what, needed: off.saturating_add(N), got: self.buf.len() })
    }

    pub(super) fn u8(&self, off: usize) -> Result<u8, PartitionError> {
        self.bytes::<1>(off).map(|[b]| b)
    }

    pub(super) fn u32(&self, off: usize) -> Result<u32, PartitionError> {
        self.bytes(off).map(u32::from_le_bytes)
    }

    pub(super) fn u64(&self, off: usize) -> Result<u64, PartitionError> {
        self.bytes(off).map(u64::from_le_bytes)
    }

    pub(super) fn guid(&self, off: usize) -> Result<Guid, PartitionError> {
        self.bytes(off).map(Guid)
    }
}

pub(super) fn lba_to_bytes(lba: u64, what: &'static str, object: impl Fn() -> String) -> Result<u64, PartitionError> {
    lba.checked_mul(SECTOR_SIZE).ok_or_else(|| PartitionError::Overflow { what, object: object() })
}

/// Reads `len` bytes at `offset`, refusing to read past `disk_size`.
pub(super) fn read_at<R: Read + Seek>(r: &mut R, offset: u64, len: usize, disk_size: u64) -> Result<Vec<u8>, PartitionError> {
    let end = u64::try_from(len).ok().and_then(|l| offset.checked_add(l));
    if end.is_none_or(|e| e > disk_size) {
        return Err(PartitionError::ReadBeyondDisk { offset, len, disk_size });
    }
    let io_err = |source| PartitionError::Io { offset, len, source };
    r.seek(SeekFrom::Start(offset)).map_err(io_err)?;
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).map_err(io_err)?;
    Ok(buf)
}

pub(super) fn read_sector<R: Read + Seek>(r: &mut R, lba: u64, disk_size: u64) -> Result<Vec<u8>, PartitionError> {
    let offset = lba_to_bytes(lba, "the byte offset", || format!("LBA {lba}"))?;
    read_at(r, offset, SECTOR, disk_size)
}
