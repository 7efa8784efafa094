//! Defensive reader for the GPT and MBR partition tables of raw disk images.
//!
//! The disk contents are untrusted: every size and offset taken from a header is
//! computed with checked arithmetic, every loop is bounded, and a malformed table
//! yields a [`PartitionError`], never a panic. Only 512-byte logical sectors are
//! supported. Reading touches the first sectors of the disk, the GPT entry arrays,
//! the backup GPT header and the EBR chain, never the whole disk.
//!
//! # Why not gptman or mbrman
//!
//! The disk is hostile input (an upstream image, or one a provisioner wrote), and
//! gptman's reader trusts it: `GPT::read_from` does
//! `Vec::with_capacity(header.number_of_partition_entries as usize)` straight from the
//! header, so an attacker who sets the count (up to 2^32-1) and computes a matching
//! header CRC makes it allocate and loop on demand; it rejects any `header_size` other
//! than 92, although UEFI allows up to the sector size; it computes the CRCs through
//! `serialize(..).expect(..)` and an `assert_eq!` on the array length, which panic; and
//! its errors ("invalid header size") do not say which header or partition failed.
//! Here every size and offset is checked arithmetic, the entry count is capped at
//! [`MAX_GPT_ENTRIES`], every read is bounded by the disk size, and each
//! [`PartitionError`] names the header LBA, partition index or EBR it is about. For MBR,
//! mbrman would be a second partition crate for what `mbr.rs` does in about 200 lines:
//! four primary entries and a bounded walk of the EBR chain.
//!
//! # Layout
//!
//! This file holds the table model ([`Partition`], [`PartitionTable`]), [`read`] and
//! the public limits; `gpt.rs` and `mbr.rs` parse the two table kinds (`mbr.rs` also
//! walks the EBR chain and reports where each entry is stored, for `grow`);
//! `fields.rs` has the bounds-checked buffer and disk readers; `error.rs`, `guid.rs`
//! and `types.rs` the error type, [`Guid`] and the well-known [`types`].

mod error;
mod fields;
mod gpt;
mod guid;
mod mbr;
#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;
pub mod types;

use std::io::{Read, Seek};

pub use error::PartitionError;
pub use gpt::{GptHeader, read_gpt_copy, read_verified_gpt};
pub use guid::Guid;
pub use mbr::read_mbr_locations;

use fields::read_sector;
use gpt::{gpt_table, has_gpt_signature};
use mbr::{has_mbr_signature, is_extended_type, mbr_entry, read_mbr_layout};

/// The logical sector size in bytes; the only one supported.
pub const SECTOR_SIZE: u64 = 512;
/// The most GPT partition entries accepted in one entry array.
pub const MAX_GPT_ENTRIES: u32 = 1024;
/// The smallest GPT partition entry size accepted (UEFI spec minimum).
pub const MIN_GPT_ENTRY_SIZE: u32 = 128;
/// The largest GPT partition entry size accepted.
pub const MAX_GPT_ENTRY_SIZE: u32 = 4096;
/// The most logical partitions followed in an MBR extended partition's EBR chain.
pub const MAX_LOGICAL_PARTITIONS: u32 = 128;
/// Byte offset of the inclusive last-LBA field within a GPT partition entry.
pub const GPT_ENTRY_LAST_LBA_OFFSET: usize = 40;
/// Byte offset of the four-entry partition table within an MBR or EBR sector.
pub const MBR_TABLE_OFFSET: usize = 446;
/// Size in bytes of one MBR partition table entry.
pub const MBR_ENTRY_LEN: usize = 16;
/// MBR partition type of a GPT protective partition.
pub const MBR_TYPE_PROTECTIVE: u8 = 0xEE;

/// [`SECTOR_SIZE`] as a buffer length.
const SECTOR: usize = 512;

/// Which kind of partition table a disk carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// GUID partition table (behind a protective MBR).
    Gpt,
    /// DOS/MBR partition table, possibly with logical partitions.
    Mbr,
}

/// One partition of a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// GPT: 1-based entry number. MBR: 1..=4 primaries, 5.. logicals.
    pub index: u32,
    /// Byte offset of the first byte in the disk.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// GPT partition type GUID.
    pub type_guid: Option<Guid>,
    /// MBR partition type byte.
    pub mbr_type: Option<u8>,
    /// GPT unique partition GUID (PARTUUID).
    pub part_guid: Option<Guid>,
    /// GPT partition name (UTF-16LE, decoded lossily); empty for MBR.
    pub name: String,
    /// MBR active flag, or the GPT legacy BIOS bootable attribute (bit 2).
    pub bootable: bool,
}

impl Partition {
    /// Exclusive end of the partition in bytes.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.size)
    }

    /// Whether this is an MBR extended partition (type 0x05, 0x0F or 0x85).
    pub fn is_mbr_extended(&self) -> bool {
        self.mbr_type.is_some_and(is_extended_type)
    }
}

/// A disk's partition table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionTable {
    /// GPT or MBR.
    pub kind: TableKind,
    /// Logical sector size in bytes (always 512).
    pub sector_size: u64,
    /// GPT disk GUID.
    pub disk_guid: Option<Guid>,
    /// MBR disk identifier (bytes 440..444 of sector 0); `None` for GPT.
    pub mbr_disk_id: Option<u32>,
    /// The partitions, sorted by index; MBR includes the extended container.
    pub partitions: Vec<Partition>,
    /// GPT: byte offset of the first usable LBA. MBR: byte 512.
    pub first_usable: u64,
    /// GPT: inclusive last byte of the last usable LBA. MBR: last byte of the disk's last full sector.
    pub last_usable: u64,
    /// GPT: the primary copy was corrupt and the backup at the last LBA was used.
    pub used_backup: bool,
}

impl PartitionTable {
    /// The partition with this index, if any.
    pub fn by_index(&self, i: u32) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.index == i)
    }

    /// The partition that ends last on the disk; on a tie (an extended partition and
    /// its last logical) the one starting later.
    #[cfg(test)]
    pub fn physically_last(&self) -> Option<&Partition> {
        self.partitions.iter().max_by_key(|p| (p.end(), p.start))
    }
}

/// Reads the partition table of a raw disk of `disk_size` bytes.
///
/// A protective MBR (type 0xEE) selects GPT, as does an "EFI PART" signature at
/// LBA 1 when sector 0 has no MBR signature at all (a 0x55AA MBR without a 0xEE
/// entry wins over a stale GPT, as in the Linux kernel). The primary
/// GPT is used when its header and entry array CRCs verify, otherwise the backup at
/// the last LBA (then `used_backup` is set). Otherwise a 0x55AA-signed MBR is read,
/// following the EBR chain of an extended partition. Reads only the table areas.
pub fn read<R: Read + Seek>(r: &mut R, disk_size: u64) -> Result<PartitionTable, PartitionError> {
    let sector0 = read_sector(r, 0, disk_size)?;
    match detect(r, &sector0, disk_size)? {
        TableKind::Gpt => {
            let gpt = read_verified_gpt(r, disk_size)?;
            gpt_table(&gpt.header, &gpt.entries, disk_size, gpt.used_backup)
        }
        TableKind::Mbr => read_mbr_layout(r, &sector0, disk_size).map(|(table, _)| table),
    }
}

fn detect<R: Read + Seek>(r: &mut R, sector0: &[u8], disk_size: u64) -> Result<TableKind, PartitionError> {
    let signed = has_mbr_signature(sector0);
    let protective = signed && (0..4).any(|slot| mbr_entry(sector0, slot).is_ok_and(|e| e.kind == MBR_TYPE_PROTECTIVE));
    if protective {
        return Ok(TableKind::Gpt);
    }
    if signed {
        return Ok(TableKind::Mbr);
    }
    if has_gpt_signature(r, 1, disk_size)? {
        return Ok(TableKind::Gpt);
    }
    if has_gpt_signature(r, 8, disk_size)? {
        return Err(PartitionError::Unsupported4kSectors);
    }
    Err(PartitionError::NoPartitionTable { disk_size })
}

/// Rejects overlapping partitions. `container` is an MBR extended partition, which
/// may (and must) contain the logical partitions but no primary.
fn check_overlaps(parts: &[Partition], container: Option<u32>) -> Result<(), PartitionError> {
    let mut sorted: Vec<&Partition> = parts.iter().filter(|p| Some(p.index) != container).collect();
    sorted.sort_by_key(|p| (p.start, p.index));
    let mut pairs: Vec<(&Partition, &Partition)> = sorted
        .windows(2)
        .filter_map(|w| match w {
            [a, b] => Some((*a, *b)),
            _ => None,
        })
        .collect();
    if let Some(c) = container.and_then(|i| parts.iter().find(|p| p.index == i)) {
        pairs.extend(parts.iter().filter(|p| p.index <= 4 && p.index != c.index).map(|p| if p.start <= c.start { (p, c) } else { (c, p) }));
    }
    for (a, b) in pairs {
        if a.end() > b.start && b.end() > a.start {
            return Err(PartitionError::Overlap { first: a.index, first_end: a.end(), second: b.index, second_start: b.start });
        }
    }
    Ok(())
}
