//! The errors of reading a partition table: each names the object that failed (the header
//! LBA, the partition index, the EBR) and the on-disk value that was rejected.

use std::io;

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
