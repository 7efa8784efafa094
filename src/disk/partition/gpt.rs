//! GPT: header validation, the entry array and its CRCs, and the fallback to the backup copy.

use std::io::{Read, Seek};

use super::fields::{Fields, lba_to_bytes, read_at, read_sector};
use super::{
    GPT_ENTRY_LAST_LBA_OFFSET, Guid, MAX_GPT_ENTRIES, MAX_GPT_ENTRY_SIZE, MIN_GPT_ENTRY_SIZE, Partition, PartitionError, PartitionTable,
    SECTOR, SECTOR_SIZE, TableKind, check_overlaps,
};

const GPT_SIGNATURE: &[u8; 8] = b"EFI PART";
const GPT_HEADER_MIN_SIZE: u32 = 92;
const LEGACY_BIOS_BOOTABLE: u64 = 1 << 2;
const GPT_NAME_OFFSET: usize = 56;
const GPT_NAME_LEN: usize = 72;

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

pub(super) fn has_gpt_signature<R: Read + Seek>(r: &mut R, lba: u64, disk_size: u64) -> Result<bool, PartitionError> {
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
pub(super) fn gpt_table(h: &GptHeader, entries: &[u8], disk_size: u64, used_backup: bool) -> Result<PartitionTable, PartitionError> {
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::super::test_support::*;
    use super::super::{TableKind, types};
    use super::*;
    use std::path::Path;

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
}
