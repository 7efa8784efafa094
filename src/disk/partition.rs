//! Defensive reader for the GPT and MBR partition tables of raw disk images.
//!
//! The disk contents are untrusted: every size and offset taken from a header is
//! computed with checked arithmetic, every loop is bounded, and a malformed table
//! yields a [`PartitionError`], never a panic. Only 512-byte logical sectors are
//! supported. Reading touches the first sectors of the disk, the GPT entry arrays,
//! the backup GPT header and the EBR chain, never the whole disk.

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom};
use std::str::FromStr;

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

const SECTOR: usize = 512;
const GPT_SIGNATURE: &[u8; 8] = b"EFI PART";
const GPT_HEADER_MIN_SIZE: u32 = 92;
const MBR_SIGNATURE: [u8; 2] = [0x55, 0xAA];
const MBR_SIGNATURE_OFFSET: usize = 510;
const LEGACY_BIOS_BOOTABLE: u64 = 1 << 2;
const GPT_NAME_OFFSET: usize = 56;
const GPT_NAME_LEN: usize = 72;

/// Errors from reading or parsing a partition table.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    /// The underlying reader failed.
    #[error("Failed to read {len} bytes at byte offset {offset} of the disk: {source}")]
    Io {
        /// Byte offset of the read.
        offset: u64,
        /// Number of bytes requested.
        len: usize,
        /// The I/O error.
        source: io::Error,
    },
    /// A read would go past the end of the disk.
    #[error("Failed to read {len} bytes at byte offset {offset} of the disk: the disk is only {disk_size} bytes")]
    ReadBeyondDisk {
        /// Byte offset of the read.
        offset: u64,
        /// Number of bytes requested.
        len: usize,
        /// Size of the disk in bytes.
        disk_size: u64,
    },
    /// A buffer is shorter than the structure it should hold.
    #[error("Failed to parse {what}: need {needed} bytes, got {got}")]
    Truncated {
        /// The structure being parsed.
        what: &'static str,
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// A size or offset computed from on-disk values overflowed.
    #[error("Failed to compute {what} for {object}: arithmetic overflow")]
    Overflow {
        /// The quantity being computed.
        what: &'static str,
        /// The object it belongs to.
        object: String,
    },
    /// Neither an MBR signature nor a GPT header was found.
    #[error("no partition table found on the disk ({disk_size} bytes): expected a GPT or MBR")]
    NoPartitionTable {
        /// Size of the disk in bytes.
        disk_size: u64,
    },
    /// A GPT header sits at byte 4096, i.e. the disk uses 4096-byte sectors.
    #[error("Failed to read GPT: a GPT header was found at byte 4096 but not at byte 512; 4096-byte-sector disks are not supported")]
    Unsupported4kSectors,
    /// The sector holds no "EFI PART" signature.
    #[error("Failed to parse GPT header at LBA {lba}: signature is {found:?}, expected \"EFI PART\"")]
    BadGptSignature {
        /// LBA of the header.
        lba: u64,
        /// The bytes found instead.
        found: [u8; 8],
    },
    /// The header size field is out of range.
    #[error("Failed to parse GPT header at LBA {lba}: header size {size} is outside 92..=512")]
    BadHeaderSize {
        /// LBA of the header.
        lba: u64,
        /// The stored header size.
        size: u32,
    },
    /// The header CRC32 does not match.
    #[error("Failed to verify GPT header at LBA {lba}: stored CRC32 {stored:#010x}, computed {computed:#010x}")]
    HeaderCrcMismatch {
        /// LBA of the header.
        lba: u64,
        /// CRC stored in the header.
        stored: u32,
        /// CRC computed over the header.
        computed: u32,
    },
    /// The header's own-LBA field disagrees with where it was read.
    #[error("GPT header read at LBA {lba} says it is at LBA {my_lba}")]
    HeaderLbaMismatch {
        /// LBA the header was read from.
        lba: u64,
        /// LBA stored in the header.
        my_lba: u64,
    },
    /// The partition entry size is not 128..=4096 and a multiple of 8.
    #[error("Failed to parse GPT header at LBA {lba}: partition entry size {size} is not a multiple of 8 in 128..=4096")]
    BadEntrySize {
        /// LBA of the header.
        lba: u64,
        /// The stored entry size.
        size: u32,
    },
    /// The header declares too many partition entries.
    #[error("Failed to parse GPT header at LBA {lba}: {count} partition entries exceed the limit of {max}")]
    TooManyEntries {
        /// LBA of the header.
        lba: u64,
        /// The stored entry count.
        count: u32,
        /// The limit.
        max: u32,
    },
    /// The usable LBA range is empty, outside the disk, or contains the header.
    #[error("GPT header at LBA {lba} has an invalid usable range LBA {first}..={last} for a disk of {disk_sectors} sectors")]
    BadUsableRange {
        /// LBA of the header.
        lba: u64,
        /// First usable LBA.
        first: u64,
        /// Last usable LBA (inclusive).
        last: u64,
        /// Number of sectors on the disk.
        disk_sectors: u64,
    },
    /// The entry array lies outside the disk, overlaps the usable range or the header.
    #[error(
        "GPT header at LBA {lba} places its {sectors}-sector entry array at LBA {entries_lba}, outside the disk or over the usable range or header"
    )]
    BadEntriesLocation {
        /// LBA of the header.
        lba: u64,
        /// First LBA of the entry array.
        entries_lba: u64,
        /// Length of the entry array in sectors.
        sectors: u64,
    },
    /// The entry array CRC32 does not match.
    #[error("Failed to verify GPT partition entries at LBA {entries_lba}: stored CRC32 {stored:#010x}, computed {computed:#010x}")]
    EntriesCrcMismatch {
        /// First LBA of the entry array.
        entries_lba: u64,
        /// CRC stored in the header.
        stored: u32,
        /// CRC computed over the entries.
        computed: u32,
    },
    /// Neither the primary nor the backup GPT could be used.
    #[error("Failed to read GPT: primary is invalid ({primary}); backup is invalid ({backup})")]
    BothGptHeadersInvalid {
        /// Why the primary was rejected.
        primary: Box<PartitionError>,
        /// Why the backup was rejected.
        backup: Box<PartitionError>,
    },
    /// A partition's first LBA is after its last LBA.
    #[error("partition {index} starts at LBA {first_lba}, after its last LBA {last_lba}")]
    StartAfterEnd {
        /// Partition index.
        index: u32,
        /// First LBA.
        first_lba: u64,
        /// Last LBA (inclusive).
        last_lba: u64,
    },
    /// A partition extends past the end of the disk.
    #[error("partition {index} ends at byte {end}, beyond the end of the disk ({disk_size} bytes)")]
    BeyondDisk {
        /// Partition index.
        index: u32,
        /// Exclusive end of the partition in bytes.
        end: u64,
        /// Size of the disk in bytes.
        disk_size: u64,
    },
    /// A GPT partition lies outside the header's usable LBA range.
    #[error("partition {index} spans LBA {first_lba}..={last_lba}, outside the usable range LBA {first_usable}..={last_usable}")]
    OutsideUsable {
        /// Partition index.
        index: u32,
        /// First LBA.
        first_lba: u64,
        /// Last LBA (inclusive).
        last_lba: u64,
        /// First usable LBA.
        first_usable: u64,
        /// Last usable LBA (inclusive).
        last_usable: u64,
    },
    /// Two partitions share sectors.
    #[error("partitions {first} and {second} overlap: {first} ends at byte {first_end}, {second} starts at byte {second_start}")]
    Overlap {
        /// The partition that starts first.
        first: u32,
        /// Its exclusive end in bytes.
        first_end: u64,
        /// The partition that starts second.
        second: u32,
        /// Its start in bytes.
        second_start: u64,
    },
    /// The sector 0 MBR holds a GPT protective partition, so it must be read as GPT.
    #[error("Failed to parse MBR: partition {index} is a GPT protective partition (type 0xEE)")]
    ProtectiveMbr {
        /// Partition slot (1..=4).
        index: u32,
    },
    /// An MBR entry's status byte is neither 0x00 nor 0x80.
    #[error("Failed to parse MBR partition {index}: status byte {status:#04x} is neither 0x00 nor 0x80")]
    BadMbrStatus {
        /// Partition index.
        index: u32,
        /// The status byte.
        status: u8,
    },
    /// An MBR or EBR entry starts on the sector holding its own table.
    #[error("Failed to parse MBR partition {index}: it starts at LBA {lba}, on its own partition table sector")]
    StartsOnTable {
        /// Partition index.
        index: u32,
        /// The table sector's LBA.
        lba: u64,
    },
    /// More than one primary extended partition.
    #[error("Failed to parse MBR: partitions {first} and {second} are both extended partitions")]
    MultipleExtended {
        /// First extended partition.
        first: u32,
        /// Second extended partition.
        second: u32,
    },
    /// An EBR is malformed.
    #[error("Failed to parse EBR at LBA {lba}: {reason}")]
    BadEbr {
        /// LBA of the EBR.
        lba: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// The EBR chain points backwards or outside the extended partition.
    #[error("EBR at LBA {lba} links to LBA {next}, which is not after it inside the extended partition (LBA {ext_start}..{ext_end})")]
    BadEbrLink {
        /// LBA of the EBR.
        lba: u64,
        /// LBA it links to.
        next: u64,
        /// First LBA of the extended partition.
        ext_start: u64,
        /// Exclusive end LBA of the extended partition.
        ext_end: u64,
    },
    /// A logical partition is not inside its extended partition.
    #[error("logical partition {index} (bytes {start}..{end}) lies outside its extended partition {container}")]
    LogicalOutsideExtended {
        /// Logical partition index.
        index: u32,
        /// Its start in bytes.
        start: u64,
        /// Its exclusive end in bytes.
        end: u64,
        /// Index of the extended partition.
        container: u32,
    },
    /// The EBR chain is longer than the limit.
    #[error("Failed to read EBR chain: more than {max} logical partitions")]
    TooManyLogical {
        /// The limit.
        max: u32,
    },
}

/// A GUID stored in GPT's mixed-endian layout.
///
/// `Display` and `FromStr` use the canonical uppercase text form, e.g.
/// `4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// Builds a GUID from its text-form fields (`d1-d2-d3-d4[0..2]-d4[2..8]`).
    pub const fn from_fields(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Guid {
        let [a0, a1, a2, a3] = d1.to_le_bytes();
        let [b0, b1] = d2.to_le_bytes();
        let [c0, c1] = d3.to_le_bytes();
        let [e0, e1, e2, e3, e4, e5, e6, e7] = d4;
        Guid([a0, a1, a2, a3, b0, b1, c0, c1, e0, e1, e2, e3, e4, e5, e6, e7])
    }

    /// Whether this is the all-zero GUID.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a0, a1, a2, a3, b0, b1, c0, c1, e0, e1, e2, e3, e4, e5, e6, e7] = self.0;
        write!(
            f,
            "{:08X}-{:04X}-{:04X}-{e0:02X}{e1:02X}-{e2:02X}{e3:02X}{e4:02X}{e5:02X}{e6:02X}{e7:02X}",
            u32::from_le_bytes([a0, a1, a2, a3]),
            u16::from_le_bytes([b0, b1]),
            u16::from_le_bytes([c0, c1]),
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

/// Error from parsing a GUID's text form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Failed to parse GUID {input:?}: expected 32 hex digits in 8-4-4-4-12 groups")]
pub struct GuidParseError {
    /// The rejected text.
    pub input: String,
}

impl FromStr for Guid {
    type Err = GuidParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || GuidParseError { input: s.to_owned() };
        if s.len() != 36 {
            return Err(err());
        }
        let mut text = [0u8; 16];
        let mut nibbles = 0usize;
        for (pos, c) in s.chars().enumerate() {
            if matches!(pos, 8 | 13 | 18 | 23) {
                if c != '-' {
                    return Err(err());
                }
                continue;
            }
            let digit = c.to_digit(16).and_then(|d| u8::try_from(d).ok());
            let byte = text.get_mut(nibbles / 2);
            match (digit, byte) {
                (Some(d), Some(b)) => *b = (*b << 4) | d,
                _ => return Err(err()),
            }
            nibbles += 1;
        }
        if nibbles != 32 {
            return Err(err());
        }
        let [t0, t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, t11, t12, t13, t14, t15] = text;
        Ok(Guid([t3, t2, t1, t0, t5, t4, t7, t6, t8, t9, t10, t11, t12, t13, t14, t15]))
    }
}

/// Well-known GPT partition type GUIDs.
pub mod types {
    use super::Guid;

    /// Linux root (/) on x86-64 (sgdisk code 8304).
    pub const LINUX_ROOT_X86_64: Guid = Guid::from_fields(0x4F68_BCE3, 0xE8CD, 0x4DB1, [0x96, 0xE7, 0xFB, 0xCA, 0xF9, 0x84, 0xB7, 0x09]);
    /// Linux root (/) on AArch64 (sgdisk code 8305).
    pub const LINUX_ROOT_AARCH64: Guid = Guid::from_fields(0xB921_B045, 0x1DF0, 0x41C3, [0xAF, 0x44, 0x4C, 0x6F, 0x28, 0x0D, 0x3F, 0xAE]);
    /// Generic Linux filesystem data (sgdisk code 8300).
    #[cfg(test)]
    pub const LINUX_FS: Guid = Guid::from_fields(0x0FC6_3DAF, 0x8483, 0x4772, [0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D, 0xE4]);
    /// EFI system partition (sgdisk code EF00).
    pub const EFI_SYSTEM: Guid = Guid::from_fields(0xC12A_7328, 0xF81F, 0x11D2, [0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B]);
    /// BIOS boot partition for GRUB on GPT (sgdisk code EF02).
    #[cfg(test)]
    pub const BIOS_BOOT: Guid = Guid::from_fields(0x2168_6148, 0x6449, 0x6E6F, [0x74, 0x4E, 0x65, 0x65, 0x64, 0x45, 0x46, 0x49]);
    /// Extended boot loader partition, /boot (sgdisk code EA00).
    #[cfg(test)]
    pub const XBOOTLDR: Guid = Guid::from_fields(0xBC13_C2FF, 0x59E6, 0x4262, [0xA3, 0x52, 0xB2, 0x75, 0xFD, 0x6F, 0x71, 0x72]);
}

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

/// A GPT header as stored on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptHeader {
    /// Revision field (1.0 is 0x00010000).
    pub revision: u32,
    /// Header size in bytes (92..=512).
    pub header_size: u32,
    /// LBA of this header.
    pub my_lba: u64,
    /// LBA of the other header.
    pub alternate_lba: u64,
    /// First usable LBA.
    pub first_usable_lba: u64,
    /// Last usable LBA (inclusive).
    pub last_usable_lba: u64,
    /// Disk GUID.
    pub disk_guid: Guid,
    /// First LBA of this copy's partition entry array.
    pub entries_lba: u64,
    /// Number of partition entries.
    pub num_entries: u32,
    /// Size of one partition entry in bytes.
    pub entry_size: u32,
    /// CRC32 of the partition entry array.
    pub entries_crc32: u32,
}

impl GptHeader {
    /// Length of the partition entry array in bytes.
    pub fn entries_len(&self) -> Result<usize, PartitionError> {
        let len = u64::from(self.num_entries).checked_mul(u64::from(self.entry_size)).and_then(|n| usize::try_from(n).ok());
        len.ok_or_else(|| PartitionError::Overflow {
            what: "the partition entry array size",
            object: format!("GPT header at LBA {}", self.my_lba),
        })
    }

    /// Length of the partition entry array in whole sectors.
    pub fn entries_sectors(&self) -> Result<u64, PartitionError> {
        let len = u64::from(self.num_entries).checked_mul(u64::from(self.entry_size));
        len.map(|n| n.div_ceil(SECTOR_SIZE)).ok_or_else(|| PartitionError::Overflow {
            what: "the partition entry array size",
            object: format!("GPT header at LBA {}", self.my_lba),
        })
    }

    /// Serialises the header into a 512-byte sector with a freshly computed CRC32.
    /// Bytes past `header_size` (clamped to 92..=512) are zero.
    pub fn encode(&self) -> Vec<u8> {
        let len = usize::try_from(self.header_size).unwrap_or(SECTOR).clamp(92, SECTOR);
        let unsigned = self.encode_with_crc(0);
        let crc = crc32fast::hash(unsigned.get(..len).unwrap_or(&unsigned));
        self.encode_with_crc(crc)
    }

    fn encode_with_crc(&self, crc: u32) -> Vec<u8> {
        let mut v = Vec::with_capacity(SECTOR);
        v.extend_from_slice(GPT_SIGNATURE);
        v.extend_from_slice(&self.revision.to_le_bytes());
        v.extend_from_slice(&self.header_size.to_le_bytes());
        v.extend_from_slice(&crc.to_le_bytes());
        v.extend_from_slice(&[0; 4]);
        for lba in [self.my_lba, self.alternate_lba, self.first_usable_lba, self.last_usable_lba] {
            v.extend_from_slice(&lba.to_le_bytes());
        }
        v.extend_from_slice(&self.disk_guid.0);
        v.extend_from_slice(&self.entries_lba.to_le_bytes());
        v.extend_from_slice(&self.num_entries.to_le_bytes());
        v.extend_from_slice(&self.entry_size.to_le_bytes());
        v.extend_from_slice(&self.entries_crc32.to_le_bytes());
        v.resize(SECTOR, 0);
        v
    }
}

/// A GPT header plus its partition entry array, both CRC-verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedGpt {
    /// The header that was used.
    pub header: GptHeader,
    /// The raw partition entry array (`num_entries * entry_size` bytes).
    pub entries: Vec<u8>,
    /// The primary copy was corrupt and this is the backup at the last LBA.
    pub used_backup: bool,
}

/// Where an MBR partition's 16-byte table entry is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MbrEntryLocation {
    /// Partition index (1..=4 primaries, 5.. logicals).
    pub index: u32,
    /// LBA of the sector holding the entry: 0 for primaries, the EBR for logicals.
    pub table_lba: u64,
    /// Slot 0..=3 of the entry within that sector.
    pub slot: usize,
    /// For a logical partition other than the first, the LBA of the previous EBR,
    /// whose second slot links to `table_lba`.
    pub link_lba: Option<u64>,
}

/// Bounds-checked little-endian field access over an untrusted buffer.
struct Fields<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl Fields<'_> {
    fn bytes<const N: usize>(&self, off: usize) -> Result<[u8; N], PartitionError> {
        off.checked_add(N)
            .and_then(|end| self.buf.get(off..end))
            .and_then(|s| <[u8; N]>::try_from(s).ok())
            .ok_or(PartitionError::Truncated { what: self.what, needed: off.saturating_add(N), got: self.buf.len() })
    }

    fn u8(&self, off: usize) -> Result<u8, PartitionError> {
        self.bytes::<1>(off).map(|[b]| b)
    }

    fn u32(&self, off: usize) -> Result<u32, PartitionError> {
        self.bytes(off).map(u32::from_le_bytes)
    }

    fn u64(&self, off: usize) -> Result<u64, PartitionError> {
        self.bytes(off).map(u64::from_le_bytes)
    }

    fn guid(&self, off: usize) -> Result<Guid, PartitionError> {
        self.bytes(off).map(Guid)
    }
}

fn is_extended_type(kind: u8) -> bool {
    matches!(kind, 0x05 | 0x0F | 0x85)
}

fn lba_to_bytes(lba: u64, what: &'static str, object: impl Fn() -> String) -> Result<u64, PartitionError> {
    lba.checked_mul(SECTOR_SIZE).ok_or_else(|| PartitionError::Overflow { what, object: object() })
}

/// Reads `len` bytes at `offset`, refusing to read past `disk_size`.
fn read_at<R: Read + Seek>(r: &mut R, offset: u64, len: usize, disk_size: u64) -> Result<Vec<u8>, PartitionError> {
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

fn read_sector<R: Read + Seek>(r: &mut R, lba: u64, disk_size: u64) -> Result<Vec<u8>, PartitionError> {
    let offset = lba_to_bytes(lba, "the byte offset", || format!("LBA {lba}"))?;
    read_at(r, offset, SECTOR, disk_size)
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

fn has_mbr_signature(sector0: &[u8]) -> bool {
    sector0.get(MBR_SIGNATURE_OFFSET..MBR_SIGNATURE_OFFSET + 2) == Some(&MBR_SIGNATURE[..])
}

fn has_gpt_signature<R: Read + Seek>(r: &mut R, lba: u64, disk_size: u64) -> Result<bool, PartitionError> {
    let offset = lba_to_bytes(lba, "the byte offset", || format!("LBA {lba}"))?;
    if offset.checked_add(SECTOR_SIZE).is_none_or(|end| end > disk_size) {
        return Ok(false);
    }
    Ok(read_at(r, offset, GPT_SIGNATURE.len(), disk_size)? == GPT_SIGNATURE)
}

/// Reads the GPT header and entry array, preferring the primary at LBA 1 and
/// falling back to the backup at the disk's last LBA when the primary fails its
/// signature, layout or CRC checks.
pub fn read_verified_gpt<R: Read + Seek>(r: &mut R, disk_size: u64) -> Result<VerifiedGpt, PartitionError> {
    let primary_err = match read_gpt_copy(r, 1, disk_size) {
        Ok(gpt) => return Ok(gpt),
        Err(e) => e,
    };
    if matches!(primary_err, PartitionError::BadGptSignature { .. }) && has_gpt_signature(r, 8, disk_size)? {
        return Err(PartitionError::Unsupported4kSectors);
    }
    let last_lba = (disk_size / SECTOR_SIZE).saturating_sub(1);
    match read_gpt_copy(r, last_lba, disk_size) {
        Ok(gpt) => Ok(gpt),
        Err(backup_err) => Err(PartitionError::BothGptHeadersInvalid { primary: Box::new(primary_err), backup: Box::new(backup_err) }),
    }
}

/// Reads and verifies the GPT header at `lba` and the entry array it points to.
/// `used_backup` is set when `lba` is not 1.
pub fn read_gpt_copy<R: Read + Seek>(r: &mut R, lba: u64, disk_size: u64) -> Result<VerifiedGpt, PartitionError> {
    let sector = read_sector(r, lba, disk_size)?;
    let header = parse_gpt_header(&sector, lba, disk_size)?;
    let offset = lba_to_bytes(header.entries_lba, "the entry array offset", || format!("GPT header at LBA {lba}"))?;
    let entries = read_at(r, offset, header.entries_len()?, disk_size)?;
    verify_entries_crc(&header, &entries)?;
    Ok(VerifiedGpt { header, entries, used_backup: lba != 1 })
}

/// Parses a primary GPT: the header sector read from LBA 1 and its entry array.
///
/// Verifies signature, header size, both CRC32s and the header layout against
/// `disk_size`, then decodes the non-empty entries and checks their bounds.
#[cfg(test)]
pub fn parse_gpt(header_lba1: &[u8], entries: &[u8], disk_size: u64) -> Result<PartitionTable, PartitionError> {
    let header = parse_gpt_header(header_lba1, 1, disk_size)?;
    verify_entries_crc(&header, entries)?;
    gpt_table(&header, entries, disk_size, false)
}

/// Parses and validates a GPT header sector that was read from `lba` of a disk of
/// `disk_size` bytes: signature, size, CRC32, entry geometry and LBA layout.
pub fn parse_gpt_header(sector: &[u8], lba: u64, disk_size: u64) -> Result<GptHeader, PartitionError> {
    let f = Fields { buf: sector, what: "GPT header" };
    let signature: [u8; 8] = f.bytes(0)?;
    if &signature != GPT_SIGNATURE {
        return Err(PartitionError::BadGptSignature { lba, found: signature });
    }
    let header_size = f.u32(12)?;
    verify_header_crc(sector, lba, header_size, f.u32(16)?)?;
    let header = GptHeader {
        revision: f.u32(8)?,
        header_size,
        my_lba: f.u64(24)?,
        alternate_lba: f.u64(32)?,
        first_usable_lba: f.u64(40)?,
        last_usable_lba: f.u64(48)?,
        disk_guid: f.guid(56)?,
        entries_lba: f.u64(72)?,
        num_entries: f.u32(80)?,
        entry_size: f.u32(84)?,
        entries_crc32: f.u32(88)?,
    };
    validate_gpt_header(&header, lba, disk_size)?;
    Ok(header)
}

fn verify_header_crc(sector: &[u8], lba: u64, header_size: u32, stored: u32) -> Result<(), PartitionError> {
    let len = usize::try_from(header_size)
        .ok()
        .filter(|_| (GPT_HEADER_MIN_SIZE..=512).contains(&header_size))
        .ok_or(PartitionError::BadHeaderSize { lba, size: header_size })?;
    let bytes = sector.get(..len).ok_or(PartitionError::Truncated { what: "GPT header", needed: len, got: sector.len() })?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(bytes.get(..16).unwrap_or_default());
    hasher.update(&[0; 4]);
    hasher.update(bytes.get(20..).unwrap_or_default());
    let computed = hasher.finalize();
    if computed != stored {
        return Err(PartitionError::HeaderCrcMismatch { lba, stored, computed });
    }
    Ok(())
}

fn validate_gpt_header(h: &GptHeader, lba: u64, disk_size: u64) -> Result<(), PartitionError> {
    if h.my_lba != lba {
        return Err(PartitionError::HeaderLbaMismatch { lba, my_lba: h.my_lba });
    }
    if !h.entry_size.is_multiple_of(8) || !(MIN_GPT_ENTRY_SIZE..=MAX_GPT_ENTRY_SIZE).contains(&h.entry_size) {
        return Err(PartitionError::BadEntrySize { lba, size: h.entry_size });
    }
    if h.num_entries > MAX_GPT_ENTRIES {
        return Err(PartitionError::TooManyEntries { lba, count: h.num_entries, max: MAX_GPT_ENTRIES });
    }
    let disk_sectors = disk_size / SECTOR_SIZE;
    let usable = h.first_usable_lba..=h.last_usable_lba;
    if h.first_usable_lba == 0 || usable.is_empty() || h.last_usable_lba >= disk_sectors || usable.contains(&h.my_lba) {
        return Err(PartitionError::BadUsableRange { lba, first: h.first_usable_lba, last: h.last_usable_lba, disk_sectors });
    }
    validate_entries_location(h, lba, disk_sectors)
}

fn validate_entries_location(h: &GptHeader, lba: u64, disk_sectors: u64) -> Result<(), PartitionError> {
    let sectors = h.entries_sectors()?;
    let err = PartitionError::BadEntriesLocation { lba, entries_lba: h.entries_lba, sectors };
    let Some(end) = h.entries_lba.checked_add(sectors) else {
        return Err(err);
    };
    let array = h.entries_lba..end;
    let overlaps_usable = h.entries_lba <= h.last_usable_lba && end > h.first_usable_lba;
    if h.entries_lba == 0 || end > disk_sectors || overlaps_usable || array.contains(&h.my_lba) {
        return Err(err);
    }
    Ok(())
}

fn verify_entries_crc(h: &GptHeader, entries: &[u8]) -> Result<(), PartitionError> {
    let len = h.entries_len()?;
    let bytes =
        entries.get(..len).ok_or(PartitionError::Truncated { what: "GPT partition entry array", needed: len, got: entries.len() })?;
    let computed = crc32fast::hash(bytes);
    if computed != h.entries_crc32 {
        return Err(PartitionError::EntriesCrcMismatch { entries_lba: h.entries_lba, stored: h.entries_crc32, computed });
    }
    Ok(())
}

/// Builds the table from a verified header and entry array.
fn gpt_table(h: &GptHeader, entries: &[u8], disk_size: u64, used_backup: bool) -> Result<PartitionTable, PartitionError> {
    let entry_size = usize::try_from(h.entry_size).map_err(|_| PartitionError::BadEntrySize { lba: h.my_lba, size: h.entry_size })?;
    let mut partitions = Vec::new();
    for index in 1..=h.num_entries.min(MAX_GPT_ENTRIES) {
        let raw = gpt_entry_slice(entries, index, entry_size)?;
        if let Some(p) = parse_gpt_entry(raw, index, h, disk_size)? {
            partitions.push(p);
        }
    }
    check_overlaps(&partitions, None)?;
    let object = || format!("GPT header at LBA {}", h.my_lba);
    let first_usable = lba_to_bytes(h.first_usable_lba, "the first usable byte", object)?;
    let last_usable = h
        .last_usable_lba
        .checked_add(1)
        .and_then(|n| n.checked_mul(SECTOR_SIZE))
        .and_then(|n| n.checked_sub(1))
        .ok_or_else(|| PartitionError::Overflow { what: "the last usable byte", object: object() })?;
    Ok(PartitionTable {
        kind: TableKind::Gpt,
        sector_size: SECTOR_SIZE,
        disk_guid: Some(h.disk_guid),
        mbr_disk_id: None,
        partitions,
        first_usable,
        last_usable,
        used_backup,
    })
}

fn gpt_entry_slice(entries: &[u8], index: u32, entry_size: usize) -> Result<&[u8], PartitionError> {
    let offset = usize::try_from(index.saturating_sub(1)).ok().and_then(|i| i.checked_mul(entry_size));
    let end = offset.and_then(|o| o.checked_add(entry_size));
    match (offset, end) {
        (Some(o), Some(e)) => {
            entries.get(o..e).ok_or(PartitionError::Truncated { what: "GPT partition entry array", needed: e, got: entries.len() })
        }
        _ => Err(PartitionError::Overflow { what: "the entry offset", object: format!("partition {index}") }),
    }
}

fn parse_gpt_entry(raw: &[u8], index: u32, h: &GptHeader, disk_size: u64) -> Result<Option<Partition>, PartitionError> {
    let f = Fields { buf: raw, what: "GPT partition entry" };
    let type_guid = f.guid(0)?;
    if type_guid.is_zero() {
        return Ok(None);
    }
    let first_lba = f.u64(32)?;
    let last_lba = f.u64(GPT_ENTRY_LAST_LBA_OFFSET)?;
    let (start, end) = gpt_byte_range(index, first_lba, last_lba, disk_size)?;
    if first_lba < h.first_usable_lba || last_lba > h.last_usable_lba {
        return Err(PartitionError::OutsideUsable {
            index,
            first_lba,
            last_lba,
            first_usable: h.first_usable_lba,
            last_usable: h.last_usable_lba,
        });
    }
    let name_bytes: [u8; GPT_NAME_LEN] = f.bytes(GPT_NAME_OFFSET)?;
    Ok(Some(Partition {
        index,
        start,
        size: end.saturating_sub(start),
        type_guid: Some(type_guid),
        mbr_type: None,
        part_guid: Some(f.guid(16)?),
        name: decode_utf16_name(&name_bytes),
        bootable: f.u64(48)? & LEGACY_BIOS_BOOTABLE != 0,
    }))
}

/// Byte range `start..end` of a GPT partition, checked against the disk size.
fn gpt_byte_range(index: u32, first_lba: u64, last_lba: u64, disk_size: u64) -> Result<(u64, u64), PartitionError> {
    if first_lba > last_lba {
        return Err(PartitionError::StartAfterEnd { index, first_lba, last_lba });
    }
    let object = || format!("partition {index}");
    let end = last_lba
        .checked_add(1)
        .and_then(|n| n.checked_mul(SECTOR_SIZE))
        .ok_or_else(|| PartitionError::Overflow { what: "the end byte", object: object() })?;
    if end > disk_size {
        return Err(PartitionError::BeyondDisk { index, end, disk_size });
    }
    Ok((lba_to_bytes(first_lba, "the start byte", object)?, end))
}

fn decode_utf16_name(bytes: &[u8]) -> String {
    let units = bytes
        .chunks_exact(2)
        .map(|pair| match pair {
            [lo, hi] => u16::from_le_bytes([*lo, *hi]),
            _ => 0,
        })
        .take_while(|&u| u != 0);
    char::decode_utf16(units).map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER)).collect()
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

/// One decoded 16-byte MBR/EBR entry.
struct MbrEntry {
    status: u8,
    kind: u8,
    start_lba: u32,
    sectors: u32,
}

fn mbr_entry(sector: &[u8], slot: usize) -> Result<MbrEntry, PartitionError> {
    let base = slot
        .checked_mul(MBR_ENTRY_LEN)
        .and_then(|o| o.checked_add(MBR_TABLE_OFFSET))
        .ok_or_else(|| PartitionError::Overflow { what: "the entry offset", object: format!("MBR slot {slot}") })?;
    let f = Fields { buf: sector, what: "MBR partition entry" };
    Ok(MbrEntry {
        status: f.u8(base)?,
        kind: f.u8(base.saturating_add(4))?,
        start_lba: f.u32(base.saturating_add(8))?,
        sectors: f.u32(base.saturating_add(12))?,
    })
}

/// Turns an MBR/EBR entry whose start is relative to `base_lba` into a partition;
/// `None` for an empty entry.
fn mbr_partition(e: &MbrEntry, index: u32, base_lba: u64, disk_size: u64) -> Result<Option<Partition>, PartitionError> {
    if e.kind == 0 || e.sectors == 0 {
        return Ok(None);
    }
    if e.status != 0x00 && e.status != 0x80 {
        return Err(PartitionError::BadMbrStatus { index, status: e.status });
    }
    if e.start_lba == 0 {
        return Err(PartitionError::StartsOnTable { index, lba: base_lba });
    }
    let (start, size) = mbr_byte_range(e, index, base_lba, disk_size)?;
    Ok(Some(Partition {
        index,
        start,
        size,
        type_guid: None,
        mbr_type: Some(e.kind),
        part_guid: None,
        name: String::new(),
        bootable: e.status == 0x80,
    }))
}

/// Byte offset and size of an MBR/EBR entry relative to `base_lba`, checked
/// against the disk size.
fn mbr_byte_range(e: &MbrEntry, index: u32, base_lba: u64, disk_size: u64) -> Result<(u64, u64), PartitionError> {
    let object = || format!("partition {index}");
    let overflow = |what| PartitionError::Overflow { what, object: object() };
    let start_lba = base_lba.checked_add(u64::from(e.start_lba)).ok_or_else(|| overflow("the start LBA"))?;
    let start = lba_to_bytes(start_lba, "the start byte", object)?;
    let size = lba_to_bytes(u64::from(e.sectors), "the size", object)?;
    let end = start.checked_add(size).ok_or_else(|| overflow("the end byte"))?;
    if end > disk_size {
        return Err(PartitionError::BeyondDisk { index, end, disk_size });
    }
    Ok((start, size))
}

/// Parses the four primary entries of an MBR sector 0.
///
/// Logical partitions need further reads and are added by [`read`]; an extended
/// partition appears here as a primary with its type 0x05/0x0F/0x85.
pub fn parse_mbr(sector0: &[u8], disk_size: u64) -> Result<PartitionTable, PartitionError> {
    let primaries = parse_mbr_primaries(sector0, disk_size)?;
    let f = Fields { buf: sector0, what: "MBR" };
    let disk_sectors = disk_size / SECTOR_SIZE;
    Ok(PartitionTable {
        kind: TableKind::Mbr,
        sector_size: SECTOR_SIZE,
        disk_guid: None,
        mbr_disk_id: Some(f.u32(440)?),
        partitions: primaries.into_iter().map(|(p, _)| p).collect(),
        first_usable: SECTOR_SIZE,
        last_usable: disk_sectors.saturating_mul(SECTOR_SIZE).saturating_sub(1),
        used_backup: false,
    })
}

fn parse_mbr_primaries(sector0: &[u8], disk_size: u64) -> Result<Vec<(Partition, usize)>, PartitionError> {
    if sector0.len() < SECTOR {
        return Err(PartitionError::Truncated { what: "MBR", needed: SECTOR, got: sector0.len() });
    }
    if !has_mbr_signature(sector0) {
        return Err(PartitionError::NoPartitionTable { disk_size });
    }
    let mut out: Vec<(Partition, usize)> = Vec::new();
    for (slot, index) in (0..4usize).zip(1u32..) {
        let e = mbr_entry(sector0, slot)?;
        if e.kind == MBR_TYPE_PROTECTIVE {
            return Err(PartitionError::ProtectiveMbr { index });
        }
        if let Some(p) = mbr_partition(&e, index, 0, disk_size)? {
            if let Some((first, _)) = out.iter().find(|(q, _)| q.is_mbr_extended() && p.is_mbr_extended()) {
                return Err(PartitionError::MultipleExtended { first: first.index, second: index });
            }
            out.push((p, slot));
        }
    }
    let parts: Vec<Partition> = out.iter().map(|(p, _)| p.clone()).collect();
    check_overlaps(&parts, None)?;
    Ok(out)
}

/// Reads the location of every MBR partition's table entry, including the EBR
/// holding each logical partition. Fails unless the disk has a plain MBR.
pub fn read_mbr_locations<R: Read + Seek>(r: &mut R, disk_size: u64) -> Result<Vec<MbrEntryLocation>, PartitionError> {
    let sector0 = read_sector(r, 0, disk_size)?;
    read_mbr_layout(r, &sector0, disk_size).map(|(_, locations)| locations)
}

fn read_mbr_layout<R: Read + Seek>(
    r: &mut R,
    sector0: &[u8],
    disk_size: u64,
) -> Result<(PartitionTable, Vec<MbrEntryLocation>), PartitionError> {
    let mut table = parse_mbr(sector0, disk_size)?;
    let mut locations: Vec<MbrEntryLocation> = parse_mbr_primaries(sector0, disk_size)?
        .into_iter()
        .map(|(p, slot)| MbrEntryLocation { index: p.index, table_lba: 0, slot, link_lba: None })
        .collect();
    let container = table.partitions.iter().find(|p| p.is_mbr_extended()).cloned();
    if let Some(container) = container {
        for (p, location) in walk_ebr_chain(r, &container, disk_size)? {
            table.partitions.push(p);
            locations.push(location);
        }
        check_overlaps(&table.partitions, Some(container.index))?;
    }
    Ok((table, locations))
}

/// Follows the EBR chain of `container`, bounded by [`MAX_LOGICAL_PARTITIONS`] and
/// by requiring each link to point strictly forward inside the container.
fn walk_ebr_chain<R: Read + Seek>(
    r: &mut R,
    container: &Partition,
    disk_size: u64,
) -> Result<Vec<(Partition, MbrEntryLocation)>, PartitionError> {
    let ext = (container.start / SECTOR_SIZE, container.end() / SECTOR_SIZE);
    let mut ebr = ext.0;
    let mut link_lba = None;
    let mut index = 5u32;
    let mut out = Vec::new();
    for _ in 0..MAX_LOGICAL_PARTITIONS {
        let sector = read_sector(r, ebr, disk_size)?;
        let (logical, next) = parse_ebr(&sector, ebr, ext, index, disk_size)?;
        if let Some(p) = logical {
            check_inside(&p, container)?;
            let location = MbrEntryLocation { index, table_lba: ebr, slot: 0, link_lba };
            out.push((p, location));
            index = index.saturating_add(1);
        }
        match next {
            None => return Ok(out),
            Some(n) => {
                link_lba = Some(ebr);
                ebr = n;
            }
        }
    }
    Err(PartitionError::TooManyLogical { max: MAX_LOGICAL_PARTITIONS })
}

fn check_inside(p: &Partition, container: &Partition) -> Result<(), PartitionError> {
    if p.start < container.start || p.end() > container.end() {
        return Err(PartitionError::LogicalOutsideExtended { index: p.index, start: p.start, end: p.end(), container: container.index });
    }
    Ok(())
}

/// Parses one EBR at `lba` of the extended partition spanning LBA `ext.0..ext.1`:
/// its logical partition (if any) and the LBA of the next EBR (if any).
fn parse_ebr(
    sector: &[u8],
    lba: u64,
    ext: (u64, u64),
    index: u32,
    disk_size: u64,
) -> Result<(Option<Partition>, Option<u64>), PartitionError> {
    if !has_mbr_signature(sector) {
        return Err(PartitionError::BadEbr { lba, reason: "no 0x55AA signature" });
    }
    let data = mbr_entry(sector, 0)?;
    if is_extended_type(data.kind) {
        return Err(PartitionError::BadEbr { lba, reason: "its first entry is an extended partition" });
    }
    let logical = mbr_partition(&data, index, lba, disk_size)?;
    let link = mbr_entry(sector, 1)?;
    if !is_extended_type(link.kind) || link.start_lba == 0 {
        return Ok((logical, None));
    }
    let next = ext.0.checked_add(u64::from(link.start_lba));
    match next {
        Some(n) if n > lba && n < ext.1 => Ok((logical, Some(n))),
        _ => Err(PartitionError::BadEbrLink { lba, next: next.unwrap_or(u64::MAX), ext_start: ext.0, ext_end: ext.1 }),
    }
}

/// Fixture builders and tool-output parsers shared by the disk module's tests.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
pub(crate) mod test_support {
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};

    /// Finds a tool on PATH or in the sbin directories.
    fn tool_path(name: &str) -> PathBuf {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let dirs = std::env::split_paths(&path).chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from));
        for dir in dirs {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
        panic!("{name} is not installed; the disk tests need gdisk (sgdisk), fdisk (sfdisk) and qemu-utils (qemu-img)");
    }

    /// Runs `tool args` with optional stdin; panics with its output unless it succeeds.
    pub fn run(tool: &str, args: &[&str], stdin: Option<&str>) -> String {
        let mut child = Command::new(tool_path(tool))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("failed to run {tool}: {e}"));
        let mut pipe = child.stdin.take().unwrap();
        if let Some(input) = stdin {
            pipe.write_all(input.as_bytes()).unwrap();
        }
        drop(pipe);
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{tool} {args:?} failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        stdout
    }

    fn s(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    /// A sparse file of `size` (truncate syntax, e.g. "64M").
    pub fn blank(dir: &Path, name: &str, size: &str) -> PathBuf {
        let path = dir.join(name);
        run("truncate", &["-s", size, s(&path)], None);
        path
    }

    /// (a) Ubuntu cloud layout: 14 BIOS boot 4 MiB at 1 MiB, 15 ESP, 16 /boot
    /// (XBOOTLDR), 1 x86-64 root physically last filling the disk.
    pub fn ubuntu_gpt(dir: &Path, size: &str) -> PathBuf {
        let path = blank(dir, "ubuntu.raw", size);
        let args = [
            "-n",
            "14:2048:+4M",
            "-t",
            "14:EF02",
            "-c",
            "14:bios",
            "-n",
            "15:0:+16M",
            "-t",
            "15:EF00",
            "-c",
            "15:UEFI",
            "-A",
            "15:set:2",
            "-n",
            "16:0:+16M",
            "-t",
            "16:EA00",
            "-c",
            "16:BOOT",
            "-n",
            "1:0:0",
            "-t",
            "1:8304",
            "-c",
            "1:cloudimg-rootfs",
        ];
        run("sgdisk", &[&args[..], &[s(&path)]].concat(), None);
        path
    }

    /// (b) ESP = 1, root = 2 filling the disk.
    pub fn esp_root_gpt(dir: &Path, size: &str) -> PathBuf {
        let path = blank(dir, "esp-root.raw", size);
        let args = ["-n", "1:2048:+8M", "-t", "1:EF00", "-c", "1:bööt ✓", "-n", "2:0:0", "-t", "2:8304"];
        run("sgdisk", &[&args[..], &[s(&path)]].concat(), None);
        path
    }

    /// (c) MBR with one bootable Linux partition filling the disk.
    pub fn mbr_single(dir: &Path, size: &str) -> PathBuf {
        let path = blank(dir, "mbr.raw", size);
        run("sfdisk", &["-q", s(&path)], Some("label: dos\n,,83,*\n"));
        path
    }

    /// (d) MBR with a 16 MiB primary, an extended partition and two logicals.
    pub fn mbr_logical(dir: &Path, size: &str) -> PathBuf {
        let path = blank(dir, "mbr-ext.raw", size);
        run("sfdisk", &["-q", s(&path)], Some("label: dos\n,16M,83\n,,5\n,8M,83\n,,83\n"));
        path
    }

    /// One partition as `sgdisk -i N` shows it.
    #[derive(Debug, PartialEq, Eq)]
    pub struct SgdiskPart {
        pub type_guid: String,
        pub part_guid: String,
        pub first: u64,
        pub last: u64,
        pub attrs: u64,
        pub name: String,
    }

    fn after<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines().find_map(|l| l.strip_prefix(prefix)).unwrap_or_else(|| panic!("no {prefix:?} in {text}")).trim()
    }

    fn first_word(text: &str) -> &str {
        text.split_whitespace().next().unwrap()
    }

    /// Parses `sgdisk -i index path`.
    pub fn sgdisk_info(path: &Path, index: u32) -> SgdiskPart {
        let out = run("sgdisk", &["-i", &index.to_string(), s(path)], None);
        let name = after(&out, "Partition name:");
        SgdiskPart {
            type_guid: first_word(after(&out, "Partition GUID code:")).to_owned(),
            part_guid: after(&out, "Partition unique GUID:").to_owned(),
            first: first_word(after(&out, "First sector:")).parse().unwrap(),
            last: first_word(after(&out, "Last sector:")).parse().unwrap(),
            attrs: u64::from_str_radix(after(&out, "Attribute flags:"), 16).unwrap(),
            name: name.trim_matches('\'').to_owned(),
        }
    }

    /// (disk GUID, first usable LBA, last usable LBA) from `sgdisk -p`.
    pub fn sgdisk_disk(path: &Path) -> (String, u64, u64) {
        let out = run("sgdisk", &["-p", s(path)], None);
        let guid = after(&out, "Disk identifier (GUID):").to_owned();
        let usable = after(&out, "First usable sector is ");
        let (first, last) = usable.split_once(", last usable sector is ").unwrap();
        (guid, first.parse().unwrap(), last.parse().unwrap())
    }

    /// One partition as `sfdisk --json` shows it.
    #[derive(Debug, PartialEq, Eq)]
    pub struct SfdiskPart {
        pub index: u32,
        pub start: u64,
        pub size: u64,
        pub kind: u8,
        pub bootable: bool,
    }

    fn json_value<'a>(object: &'a str, key: &str) -> Option<&'a str> {
        let pattern = format!("\"{key}\":");
        let rest = &object[object.find(&pattern)? + pattern.len()..];
        let end = rest.find([',', '\n', '}']).unwrap_or(rest.len());
        Some(rest[..end].trim().trim_matches('"'))
    }

    /// Parses `sfdisk --json path`: (disk id, partitions).
    pub fn sfdisk_json(path: &Path) -> (u32, Vec<SfdiskPart>) {
        let out = run("sfdisk", &["--json", s(path)], None);
        let id = json_value(&out, "id").unwrap().trim_start_matches("0x");
        let list = &out[out.find("\"partitions\"").unwrap()..];
        let parts = list
            .split('{')
            .skip(1)
            .map(|object| {
                let node = json_value(object, "node").unwrap();
                let digits = node.len() - node.chars().rev().take_while(char::is_ascii_digit).count();
                SfdiskPart {
                    index: node[digits..].parse().unwrap(),
                    start: json_value(object, "start").unwrap().parse().unwrap(),
                    size: json_value(object, "size").unwrap().parse().unwrap(),
                    kind: u8::from_str_radix(json_value(object, "type").unwrap(), 16).unwrap(),
                    bootable: json_value(object, "bootable") == Some("true"),
                }
            })
            .collect();
        (u32::from_str_radix(id, 16).unwrap(), parts)
    }

    fn le32(buf: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(buf[off..off + 4].try_into().unwrap())
    }

    fn le64(buf: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(buf[off..off + 8].try_into().unwrap())
    }

    /// Recomputes the entry-array and header CRC32s of the GPT header at `lba`
    /// of an in-memory disk, when its fields are sane enough to locate them.
    pub fn fix_gpt_crcs(disk: &mut [u8], lba: u64) {
        let h = lba as usize * 512;
        if disk.len() < h + 512 {
            return;
        }
        let entries_at = le64(disk, h + 72).saturating_mul(512);
        let len = u64::from(le32(disk, h + 80)) * u64::from(le32(disk, h + 84));
        if len <= 4 << 20 && entries_at.saturating_add(len) <= disk.len() as u64 {
            let crc = crc32fast::hash(&disk[entries_at as usize..(entries_at + len) as usize]);
            disk[h + 88..h + 92].copy_from_slice(&crc.to_le_bytes());
        }
        let size = le32(disk, h + 12) as usize;
        if (92..=512).contains(&size) {
            disk[h + 16..h + 20].fill(0);
            let crc = crc32fast::hash(&disk[h..h + size]);
            disk[h + 16..h + 20].copy_from_slice(&crc.to_le_bytes());
        }
    }

    /// Tiny xorshift64 generator for the no-panic fuzz loops.
    pub struct XorShift(pub u64);

    impl XorShift {
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        pub fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::test_support::*;
    use super::*;
    use std::fs::File;
    use std::io::Cursor;
    use std::path::Path;

    fn read_path(path: &Path) -> Result<PartitionTable, PartitionError> {
        let mut f = File::open(path).unwrap();
        let size = f.metadata().unwrap().len();
        read(&mut f, size)
    }

    fn read_bytes(disk: &[u8]) -> Result<PartitionTable, PartitionError> {
        read(&mut Cursor::new(disk), disk.len() as u64)
    }

    fn assert_matches_sgdisk(path: &Path, table: &PartitionTable) {
        let (disk_guid, first_usable, last_usable) = sgdisk_disk(path);
        assert_eq!(table.disk_guid.unwrap().to_string(), disk_guid);
        assert_eq!(table.first_usable, first_usable * 512);
        assert_eq!(table.last_usable, (last_usable + 1) * 512 - 1);
        for p in &table.partitions {
            let sg = sgdisk_info(path, p.index);
            assert_eq!(p.start, sg.first * 512, "start of {}", p.index);
            assert_eq!(p.size, (sg.last - sg.first + 1) * 512, "size of {}", p.index);
            assert_eq!(p.type_guid.unwrap().to_string(), sg.type_guid);
            assert_eq!(p.part_guid.unwrap().to_string(), sg.part_guid);
            assert_eq!(p.name, sg.name);
            assert_eq!(p.bootable, sg.attrs & 4 != 0);
            assert_eq!(p.mbr_type, None);
        }
    }

    #[test]
    fn reads_ubuntu_cloud_layout_like_sgdisk() {
        let dir = tempfile::tempdir().unwrap();
        let path = ubuntu_gpt(dir.path(), "64M");
        let t = read_path(&path).unwrap();
        assert_eq!(t.kind, TableKind::Gpt);
        assert!(!t.used_backup);
        assert_eq!(t.sector_size, 512);
        let indices: Vec<u32> = t.partitions.iter().map(|p| p.index).collect();
        assert_eq!(indices, [1, 14, 15, 16]);
        assert_matches_sgdisk(&path, &t);
        assert_eq!(t.by_index(14).unwrap().start, 1 << 20);
        assert_eq!(t.by_index(14).unwrap().size, 4 << 20);
        assert_eq!(t.by_index(14).unwrap().type_guid, Some(types::BIOS_BOOT));
        assert_eq!(t.by_index(15).unwrap().type_guid, Some(types::EFI_SYSTEM));
        assert!(t.by_index(15).unwrap().bootable);
        assert_eq!(t.by_index(16).unwrap().type_guid, Some(types::XBOOTLDR));
        assert_eq!(t.by_index(1).unwrap().type_guid, Some(types::LINUX_ROOT_X86_64));
        assert_eq!(t.by_index(1).unwrap().name, "cloudimg-rootfs");
        assert_eq!(t.physically_last().unwrap().index, 1);
        assert!(t.by_index(2).is_none());
    }

    #[test]
    fn reads_esp_root_layout_like_sgdisk() {
        let dir = tempfile::tempdir().unwrap();
        let path = esp_root_gpt(dir.path(), "32M");
        let t = read_path(&path).unwrap();
        assert_eq!(t.partitions.len(), 2);
        assert_matches_sgdisk(&path, &t);
        assert_eq!(t.by_index(1).unwrap().name, "bööt ✓");
        assert_eq!(t.physically_last().unwrap().index, 2);
    }

    #[test]
    fn parse_gpt_matches_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = ubuntu_gpt(dir.path(), "64M");
        let disk = std::fs::read(&path).unwrap();
        let parsed = parse_gpt(&disk[512..1024], &disk[1024..1024 + 128 * 128], disk.len() as u64).unwrap();
        assert_eq!(parsed, read_bytes(&disk).unwrap());
        let err = parse_gpt(&disk[512..1024], &disk[1024..2048], disk.len() as u64).unwrap_err();
        assert!(matches!(err, PartitionError::Truncated { .. }), "{err}");
    }

    fn assert_matches_sfdisk(path: &Path, table: &PartitionTable) {
        let (id, parts) = sfdisk_json(path);
        assert_eq!(table.mbr_disk_id, Some(id));
        assert_eq!(table.partitions.len(), parts.len());
        for (p, sf) in table.partitions.iter().zip(&parts) {
            assert_eq!(p.index, sf.index);
            assert_eq!(p.start, sf.start * 512, "start of {}", p.index);
            assert_eq!(p.size, sf.size * 512, "size of {}", p.index);
            assert_eq!(p.mbr_type, Some(sf.kind));
            assert_eq!(p.bootable, sf.bootable);
            assert_eq!((p.type_guid, p.part_guid, p.name.as_str()), (None, None, ""));
        }
    }

    #[test]
    fn reads_single_partition_mbr_like_sfdisk() {
        let dir = tempfile::tempdir().unwrap();
        let path = mbr_single(dir.path(), "64M");
        let t = read_path(&path).unwrap();
        assert_eq!(t.kind, TableKind::Mbr);
        assert_eq!(t.disk_guid, None);
        assert_matches_sfdisk(&path, &t);
        assert!(t.by_index(1).unwrap().bootable);
        assert_eq!(t.by_index(1).unwrap().start, 1 << 20);
        let mut disk = std::fs::read(&path).unwrap();
        disk[512..520].copy_from_slice(b"EFI PART"); // stale GPT signature
        assert_eq!(read_bytes(&disk).unwrap(), t);
        let gpt = std::fs::read(ubuntu_gpt(dir.path(), "64M")).unwrap();
        let mut unsigned = gpt.clone();
        unsigned[..512].fill(0); // GPT without any MBR is still read
        assert_eq!(read_bytes(&unsigned).unwrap(), read_bytes(&gpt).unwrap());
    }

    #[test]
    fn reads_extended_and_logical_partitions_like_sfdisk() {
        let dir = tempfile::tempdir().unwrap();
        let path = mbr_logical(dir.path(), "64M");
        let t = read_path(&path).unwrap();
        let indices: Vec<u32> = t.partitions.iter().map(|p| p.index).collect();
        assert_eq!(indices, [1, 2, 5, 6]);
        assert_matches_sfdisk(&path, &t);
        assert!(t.by_index(2).unwrap().is_mbr_extended());
        assert_eq!(t.physically_last().unwrap().index, 6);
        let mut f = File::open(&path).unwrap();
        let locations = read_mbr_locations(&mut f, 64 << 20).unwrap();
        let logical6 = locations.iter().find(|l| l.index == 6).unwrap();
        let logical5 = locations.iter().find(|l| l.index == 5).unwrap();
        assert_eq!(logical5.link_lba, None);
        assert_eq!(logical6.link_lba, Some(logical5.table_lba));
        assert_eq!(logical5.table_lba * 512, t.by_index(2).unwrap().start);
    }

    #[test]
    fn parse_mbr_lists_primaries_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = mbr_logical(dir.path(), "64M");
        let disk = std::fs::read(&path).unwrap();
        let t = parse_mbr(&disk[..512], disk.len() as u64).unwrap();
        let indices: Vec<u32> = t.partitions.iter().map(|p| p.index).collect();
        assert_eq!(indices, [1, 2]);
        let gpt = std::fs::read(ubuntu_gpt(dir.path(), "64M")).unwrap();
        let err = parse_mbr(&gpt[..512], gpt.len() as u64).unwrap_err();
        assert!(matches!(err, PartitionError::ProtectiveMbr { index: 1 }), "{err}");
    }

    #[test]
    fn guid_text_round_trips() {
        let cases = [
            (types::LINUX_ROOT_X86_64, "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"),
            (types::LINUX_FS, "0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
            (types::EFI_SYSTEM, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
            (types::BIOS_BOOT, "21686148-6449-6E6F-744E-656564454649"),
            (types::XBOOTLDR, "BC13C2FF-59E6-4262-A352-B275FD6F7172"),
            (types::LINUX_ROOT_AARCH64, "B921B045-1DF0-41C3-AF44-4C6F280D3FAE"),
        ];
        for (guid, text) in cases {
            assert_eq!(guid.to_string(), text);
            assert_eq!(text.parse::<Guid>().unwrap(), guid);
            assert_eq!(text.to_lowercase().parse::<Guid>().unwrap(), guid);
        }
        assert_eq!(types::EFI_SYSTEM.0[..4], [0x28, 0x73, 0x2A, 0xC1]);
        for bad in [
            "",
            "C12A7328F81F11D2BA4B00A0C93EC93B",
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93",
            "G12A7328-F81F-11D2-BA4B-00A0C93EC93B",
            "C12A7328-F81F-11D2-BA4B+00A0C93EC93B",
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93ß",
        ] {
            let err = bad.parse::<Guid>().unwrap_err();
            assert!(err.to_string().starts_with("Failed to parse GUID"), "{err}");
        }
    }

    #[test]
    fn damaged_primary_header_falls_back_to_backup() {
        let dir = tempfile::tempdir().unwrap();
        let disk = std::fs::read(ubuntu_gpt(dir.path(), "64M")).unwrap();
        let good = read_bytes(&disk).unwrap();
        let mut bad = disk.clone();
        bad[512 + 40] ^= 0x01; // first_usable_lba
        let t = read_bytes(&bad).unwrap();
        assert!(t.used_backup);
        assert_eq!(t.partitions, good.partitions);
        let mut bad = disk.clone();
        bad[1024 + 130] ^= 0xFF; // second entry in the primary array
        assert!(read_bytes(&bad).unwrap().used_backup);
        let mut bad = disk.clone();
        bad[512..520].fill(0); // no primary signature
        assert!(read_bytes(&bad).unwrap().used_backup);
    }

    #[test]
    fn damaged_primary_and_backup_headers_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut disk = std::fs::read(ubuntu_gpt(dir.path(), "64M")).unwrap();
        let last = disk.len() - 512;
        disk[512 + 60] ^= 0x01;
        disk[last + 60] ^= 0x01;
        let err = read_bytes(&disk).unwrap_err();
        assert!(matches!(err, PartitionError::BothGptHeadersInvalid { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("LBA 1: stored CRC32") && text.contains("LBA 131071: stored CRC32"), "{text}");
    }

    /// Rewrites entry `index`'s last LBA in both arrays and fixes all CRCs.
    fn set_last_lba(disk: &mut [u8], index: usize, last_lba: u64) {
        let backup_header = disk.len() / 512 - 1;
        let backup_entries = (backup_header - 32) * 512;
        for array in [1024, backup_entries] {
            let off = array + (index - 1) * 128 + 40;
            disk[off..off + 8].copy_from_slice(&last_lba.to_le_bytes());
        }
        fix_gpt_crcs(disk, 1);
        fix_gpt_crcs(disk, backup_header as u64);
    }

    #[test]
    fn partition_beyond_the_disk_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut disk = std::fs::read(esp_root_gpt(dir.path(), "32M")).unwrap();
        set_last_lba(&mut disk, 2, 70_000);
        let err = read_bytes(&disk).unwrap_err();
        let disk_size = disk.len() as u64;
        assert!(matches!(err, PartitionError::BeyondDisk { index: 2, end: 35_840_512, disk_size: d } if d == disk_size), "{err}");
        assert_eq!(err.to_string(), "partition 2 ends at byte 35840512, beyond the end of the disk (33554432 bytes)");
        let pure = parse_gpt(&disk[512..1024], &disk[1024..1024 + 16384], disk_size).unwrap_err();
        assert!(matches!(pure, PartitionError::BeyondDisk { index: 2, .. }), "{pure}");
    }

    #[test]
    fn start_after_end_outside_usable_and_overlap_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let disk = std::fs::read(esp_root_gpt(dir.path(), "32M")).unwrap();
        let mut bad = disk.clone();
        set_last_lba(&mut bad, 2, 100);
        let err = read_bytes(&bad).unwrap_err();
        assert!(matches!(err, PartitionError::StartAfterEnd { index: 2, last_lba: 100, .. }), "{err}");
        let mut bad = disk.clone();
        set_last_lba(&mut bad, 2, 65_534); // past last usable 65502, inside the disk
        let err = read_bytes(&bad).unwrap_err();
        assert!(matches!(err, PartitionError::OutsideUsable { index: 2, .. }), "{err}");
        let mut bad = disk.clone();
        set_last_lba(&mut bad, 1, 20_480); // ESP runs into partition 2 at 18432
        let err = read_bytes(&bad).unwrap_err();
        assert!(matches!(err, PartitionError::Overlap { first: 1, second: 2, .. }), "{err}");
        assert!(err.to_string().starts_with("partitions 1 and 2 overlap"), "{err}");
    }

    #[test]
    fn truncated_disks_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let disk = std::fs::read(ubuntu_gpt(dir.path(), "64M")).unwrap();
        for len in [0, 100, 511, 512, 600, 1024, 1100, 17 * 1024, 1 << 20, 32 << 20] {
            let err = read_bytes(&disk[..len]).unwrap_err();
            assert!(!err.to_string().is_empty());
        }
        let err = read_bytes(&disk[..1 << 20]).unwrap_err();
        assert!(matches!(err, PartitionError::BothGptHeadersInvalid { .. }), "{err}");
        let err = read(&mut Cursor::new(&disk[..4096]), disk.len() as u64).unwrap_err();
        let PartitionError::BothGptHeadersInvalid { primary, .. } = &err else {
            panic!("{err}");
        };
        assert!(matches!(**primary, PartitionError::Io { offset: 1024, .. }), "{err}");
        let mbr = std::fs::read(mbr_logical(dir.path(), "64M")).unwrap();
        let err = read_bytes(&mbr[..40 << 20]).unwrap_err();
        assert!(matches!(err, PartitionError::BeyondDisk { index: 2, .. }), "{err}");
        let err = read(&mut Cursor::new(&mbr[..(17 << 20) + 512]), mbr.len() as u64).unwrap_err();
        assert!(matches!(err, PartitionError::Io { .. }), "{err}");
    }

    #[test]
    fn blank_disk_has_no_partition_table() {
        let err = read_bytes(&vec![0u8; 1 << 20]).unwrap_err();
        assert_eq!(err.to_string(), "no partition table found on the disk (1048576 bytes): expected a GPT or MBR");
    }

    #[test]
    fn gpt_with_4096_byte_sectors_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let disk = std::fs::read(ubuntu_gpt(dir.path(), "64M")).unwrap();
        let mut moved = disk.clone();
        moved.copy_within(512..1024, 4096);
        moved[512..1024].fill(0);
        let err = read_bytes(&moved).unwrap_err();
        assert!(matches!(err, PartitionError::Unsupported4kSectors), "{err}");
        moved[..512].fill(0);
        let err = read_bytes(&moved).unwrap_err();
        assert!(err.to_string().contains("4096-byte-sector disks are not supported"), "{err}");
    }

    #[test]
    fn ebr_loops_and_bad_links_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let disk = std::fs::read(mbr_logical(dir.path(), "64M")).unwrap();
        let ebr2 = 53_248 * 512;
        let mut bad = disk.clone();
        // second EBR links back to the first one (relative start 0 is "none", so use a backwards 1)
        bad[ebr2 + 446 + 16 + 4] = 0x05;
        bad[ebr2 + 446 + 16 + 8..ebr2 + 446 + 16 + 12].copy_from_slice(&1u32.to_le_bytes());
        let err = read_bytes(&bad).unwrap_err();
        assert!(matches!(err, PartitionError::BadEbrLink { lba: 53_248, .. }), "{err}");
        let mut bad = disk.clone();
        bad[ebr2 + 510] = 0;
        let err = read_bytes(&bad).unwrap_err();
        assert!(matches!(err, PartitionError::BadEbr { lba: 53_248, .. }), "{err}");
        let mut bad = disk.clone();
        bad[446] = 0x42;
        let err = read_bytes(&bad).unwrap_err();
        assert!(matches!(err, PartitionError::BadMbrStatus { index: 1, status: 0x42 }), "{err}");
    }

    fn mutate(rng: &mut XorShift, disk: &mut [u8], regions: &[(usize, usize)]) {
        for _ in 0..1 + rng.below(8) {
            let (start, len) = regions[rng.below(regions.len())];
            let at = start + rng.below(len);
            disk[at] = match rng.below(4) {
                0 => 0,
                1 => 0xFF,
                _ => rng.next() as u8,
            };
        }
    }

    #[test]
    fn random_bytes_and_mutations_never_panic() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..2000 {
            let len = rng.below(8192);
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let size = rng.next() % (1 << 40);
            let _ = parse_gpt(&bytes, &bytes, size);
            let _ = parse_mbr(&bytes, size);
            let _ = parse_gpt_header(&bytes, rng.next() % 4, size);
            let _ = read(&mut Cursor::new(&bytes), bytes.len() as u64);
            let _ = read(&mut Cursor::new(&bytes), size);
        }
        let dir = tempfile::tempdir().unwrap();
        let gpt = std::fs::read(esp_root_gpt(dir.path(), "32M")).unwrap();
        let last = gpt.len() / 512 - 1;
        let restore = [(0, 34 * 512), ((last - 32) * 512, 33 * 512)];
        let regions = [restore[0], restore[1], (512, 92), (1024, 256)];
        let mut disk = gpt.clone();
        let mut seen = std::collections::BTreeMap::new();
        for i in 0..3000 {
            mutate(&mut rng, &mut disk, &regions);
            if i % 2 == 0 {
                fix_gpt_crcs(&mut disk, 1);
                fix_gpt_crcs(&mut disk, last as u64);
            }
            let kind = match read_bytes(&disk) {
                Ok(t) => format!("Ok(backup={})", t.used_backup),
                Err(e) => format!("{e:?}").split([' ', '{', '(']).next().unwrap().to_owned(),
            };
            *seen.entry(kind).or_insert(0u32) += 1;
            for (start, len) in restore {
                disk[start..start + len].copy_from_slice(&gpt[start..start + len]);
            }
        }
        eprintln!("GPT mutation outcomes: {seen:?}");
        for kind in ["Ok(backup=false)", "Ok(backup=true)", "BothGptHeadersInvalid"] {
            assert!(seen.contains_key(kind), "no {kind} among {seen:?}");
        }
        assert!(seen.len() >= 6, "mutations reach few code paths: {seen:?}");
        let mbr = std::fs::read(mbr_logical(dir.path(), "64M")).unwrap();
        let regions = [(446, 66), (34_816 * 512 + 446, 66), (53_248 * 512 + 446, 66)];
        let mut disk = mbr.clone();
        for _ in 0..3000 {
            mutate(&mut rng, &mut disk, &regions);
            let _ = read_bytes(&disk);
            for (start, len) in regions {
                disk[start..start + len].copy_from_slice(&mbr[start..start + len]);
            }
        }
    }
}
