//! MBR: the four primary entries of sector 0, the EBR chain of an extended partition, and
//! where each entry is stored (for the grow code, which rewrites entries in place).

use std::io::{Read, Seek};

use super::fields::{Fields, lba_to_bytes, read_sector};
use super::{
    MAX_LOGICAL_PARTITIONS, MBR_ENTRY_LEN, MBR_TABLE_OFFSET, MBR_TYPE_PROTECTIVE, Partition, PartitionError, PartitionTable, SECTOR,
    SECTOR_SIZE, TableKind, check_overlaps,
};

const MBR_SIGNATURE: [u8; 2] = [0x55, 0xAA];
const MBR_SIGNATURE_OFFSET: usize = 510;

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

pub(super) fn is_extended_type(kind: u8) -> bool {
    matches!(kind, 0x05 | 0x0F | 0x85)
}

pub(super) fn has_mbr_signature(sector0: &[u8]) -> bool {
    sector0.get(MBR_SIGNATURE_OFFSET..MBR_SIGNATURE_OFFSET + 2) == Some(&MBR_SIGNATURE[..])
}

/// One decoded 16-byte MBR/EBR entry.
pub(super) struct MbrEntry {
    status: u8,
    pub(super) kind: u8,
    start_lba: u32,
    sectors: u32,
}

pub(super) fn mbr_entry(sector: &[u8], slot: usize) -> Result<MbrEntry, PartitionError> {
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
/// Logical partitions need further reads and are added by [`read`](super::read); an extended
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

pub(super) fn read_mbr_layout<R: Read + Seek>(
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::super::TableKind;
    use super::super::test_support::*;
    use super::*;
    use std::fs::File;
    use std::path::Path;

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
}
