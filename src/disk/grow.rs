//! Grows a raw disk image file and its physically last partition.
//!
//! The file is extended sparsely with `set_len`, then the partition table is
//! rewritten: for GPT the backup header and entry array move to the new end of
//! the disk, the primary header's `alternate_lba` and `last_usable_lba` follow,
//! the protective MBR is widened, and both CRC32s are recomputed; for MBR the
//! partition's entry (and, for a logical partition, its extended container and
//! EBR link) is widened. Partition starts never move. Growing the filesystem
//! inside the partition is left to the caller.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::partition::{
    self, GPT_ENTRY_LAST_LBA_OFFSET, GptHeader, MBR_ENTRY_LEN, MBR_TABLE_OFFSET, MBR_TYPE_PROTECTIVE, Partition, PartitionError,
    PartitionTable, SECTOR_SIZE, TableKind,
};

const SECTOR: usize = 512;

/// What [`grow_disk`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrowOutcome {
    /// Size of the file before, in bytes.
    pub old_size: u64,
    /// Size of the file after, in bytes.
    pub new_size: u64,
    /// Index of the grown partition.
    pub partition: u32,
    /// Size of the partition before, in bytes.
    pub old_part_size: u64,
    /// Size of the partition after, in bytes.
    pub new_part_size: u64,
    /// Whether anything was written; `false` when the disk already had `new_size`
    /// bytes and the table already described the grown layout.
    pub changed: bool,
}

/// Errors from growing a disk image.
#[derive(Debug, thiserror::Error)]
pub enum GrowError {
    /// The image could not be opened.
    #[error("Failed to open disk image {}: {source}", path.display())]
    Open {
        /// The image.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The image's size could not be read.
    #[error("Failed to stat disk image {}: {source}", path.display())]
    Stat {
        /// The image.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The requested size is smaller than the current size.
    #[error("Failed to grow {} to {requested} bytes: it is already {current} bytes and shrinking is not supported", path.display())]
    Shrink {
        /// The image.
        path: PathBuf,
        /// Current size in bytes.
        current: u64,
        /// Requested size in bytes.
        requested: u64,
    },
    /// The requested size is not a whole number of sectors.
    #[error("Failed to grow {} from {current} to {requested} bytes: {requested} is not a multiple of 512", path.display())]
    Unaligned {
        /// The image.
        path: PathBuf,
        /// Current size in bytes.
        current: u64,
        /// Requested size in bytes.
        requested: u64,
    },
    /// The partition table could not be read.
    #[error("Failed to read the partition table of {}: {source}", path.display())]
    Table {
        /// The image.
        path: PathBuf,
        /// Why.
        source: PartitionError,
    },
    /// The partition to grow does not exist.
    #[error("Failed to grow partition {index} of {}: no such partition", path.display())]
    NoSuchPartition {
        /// The image.
        path: PathBuf,
        /// The requested partition.
        index: u32,
    },
    /// Another partition lies after the one to grow.
    #[error("Failed to grow partition {index} of {}: partition {blocker} (at byte {blocker_start}) is in the way; only the physically last partition can be grown", path.display())]
    NotLast {
        /// The image.
        path: PathBuf,
        /// The requested partition.
        index: u32,
        /// The nearest partition after it.
        blocker: u32,
        /// That partition's start in bytes.
        blocker_start: u64,
    },
    /// Only the backup GPT was valid.
    #[error("Failed to grow {}: the primary GPT is damaged (only the backup is valid); repair the table first", path.display())]
    PrimaryGptDamaged {
        /// The image.
        path: PathBuf,
    },
    /// The new layout would make the partition smaller.
    #[error("Failed to grow partition {index} of {}: its last LBA {old_last_lba} is past the new last usable LBA {new_last_lba}", path.display())]
    WouldShrinkPartition {
        /// The image.
        path: PathBuf,
        /// The partition.
        index: u32,
        /// Its current last LBA.
        old_last_lba: u64,
        /// The last LBA it could get.
        new_last_lba: u64,
    },
    /// An MBR entry cannot hold the new size.
    #[error("Failed to grow MBR partition {index} of {} to {sectors} sectors: MBR sizes are limited to {} sectors", path.display(), u32::MAX)]
    MbrLimit {
        /// The image.
        path: PathBuf,
        /// The partition.
        index: u32,
        /// The size it would need, in sectors.
        sectors: u64,
    },
    /// A size or offset overflowed or fell outside a table buffer.
    #[error("Failed to compute {what} for {}: out of range", path.display())]
    Layout {
        /// The image.
        path: PathBuf,
        /// The quantity.
        what: &'static str,
    },
    /// Reading the image failed.
    #[error("Failed to read {len} bytes at byte offset {offset} of {}: {source}", path.display())]
    Read {
        /// The image.
        path: PathBuf,
        /// Byte offset.
        offset: u64,
        /// Length.
        len: usize,
        /// The I/O error.
        source: io::Error,
    },
    /// Writing the image failed.
    #[error("Failed to write {len} bytes at byte offset {offset} of {}: {source}", path.display())]
    Write {
        /// The image.
        path: PathBuf,
        /// Byte offset.
        offset: u64,
        /// Length.
        len: usize,
        /// The I/O error.
        source: io::Error,
    },
    /// Extending the file failed.
    #[error("Failed to resize {} to {size} bytes: {source}", path.display())]
    Resize {
        /// The image.
        path: PathBuf,
        /// Requested size.
        size: u64,
        /// The I/O error.
        source: io::Error,
    },
    /// Flushing the file failed.
    #[error("Failed to sync {}: {source}", path.display())]
    Sync {
        /// The image.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The rewritten table does not read back.
    #[error("Failed to verify the rewritten partition table of {}: {source}", path.display())]
    Verify {
        /// The image.
        path: PathBuf,
        /// Why.
        source: PartitionError,
    },
    /// The rewritten table reads back with a different partition size.
    #[error("rewritten partition table of {} gives partition {index} {found} bytes, expected {expected}", path.display())]
    VerifyMismatch {
        /// The image.
        path: PathBuf,
        /// The partition.
        index: u32,
        /// Expected size in bytes.
        expected: u64,
        /// Size read back in bytes (0 if missing).
        found: u64,
    },
}

/// One planned write of table bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SectorWrite {
    offset: u64,
    data: Vec<u8>,
}

/// All writes needed to grow, and the resulting partition size.
struct Plan {
    writes: Vec<SectorWrite>,
    new_part_size: u64,
}

/// Grows the raw disk file at `path` to `new_size` bytes and partition
/// `grow_index` to the new end of the disk.
///
/// `new_size` must be at least the current size and a multiple of 512; the file
/// stays sparse (`set_len`). GPT: the backup header and entries move to the new
/// end, the primary's `alternate_lba`/`last_usable_lba` and both CRC32s are
/// updated, and the partition ends at the new last usable LBA. MBR: the partition
/// ends at the disk end. Only the physically last partition may grow; starts never
/// move. When the size is unchanged and the table already describes the grown
/// layout nothing is written and `changed` is `false`. Everything is validated
/// before the file is touched.
pub fn grow_disk(path: &Path, new_size: u64, grow_index: u32) -> Result<GrowOutcome, GrowError> {
    let file = OpenOptions::new().read(true).write(true).open(path).map_err(|source| GrowError::Open { path: path.to_owned(), source })?;
    let old_size = file.metadata().map_err(|source| GrowError::Stat { path: path.to_owned(), source })?.len();
    check_sizes(path, old_size, new_size)?;
    let table = partition::read(&mut &file, old_size).map_err(|source| table_err(path, source))?;
    let target = find_target(path, &table, grow_index)?;
    let plan = match table.kind {
        TableKind::Gpt => plan_gpt(&file, path, old_size, new_size, target)?,
        TableKind::Mbr => plan_mbr(&file, path, old_size, new_size, &table, target)?,
    };
    let outcome = GrowOutcome {
        old_size,
        new_size,
        partition: grow_index,
        old_part_size: target.size,
        new_part_size: plan.new_part_size,
        changed: true,
    };
    if new_size == old_size && is_applied(&file, path, old_size, &plan.writes)? {
        return Ok(GrowOutcome { changed: false, ..outcome });
    }
    apply(&file, path, old_size, new_size, &plan.writes)?;
    verify(&file, path, new_size, grow_index, plan.new_part_size)?;
    Ok(outcome)
}

fn table_err(path: &Path, source: PartitionError) -> GrowError {
    GrowError::Table { path: path.to_owned(), source }
}

fn layout_err(path: &Path, what: &'static str) -> GrowError {
    GrowError::Layout { path: path.to_owned(), what }
}

fn check_sizes(path: &Path, current: u64, requested: u64) -> Result<(), GrowError> {
    if !requested.is_multiple_of(SECTOR_SIZE) {
        return Err(GrowError::Unaligned { path: path.to_owned(), current, requested });
    }
    if requested < current {
        return Err(GrowError::Shrink { path: path.to_owned(), current, requested });
    }
    Ok(())
}

/// The partition to grow, provided no other partition starts after its end (an
/// MBR extended partition does not block its own logical partitions).
fn find_target<'a>(path: &Path, table: &'a PartitionTable, index: u32) -> Result<&'a Partition, GrowError> {
    let target = table.by_index(index).ok_or_else(|| GrowError::NoSuchPartition { path: path.to_owned(), index })?;
    let container = match table.kind {
        TableKind::Mbr if index >= 5 => table.partitions.iter().find(|p| p.is_mbr_extended()).map(|p| p.index),
        _ => None,
    };
    let blocker = table
        .partitions
        .iter()
        .filter(|q| q.index != index && Some(q.index) != container && q.start >= target.end())
        .min_by_key(|q| q.start);
    match blocker {
        Some(b) => Err(GrowError::NotLast { path: path.to_owned(), index, blocker: b.index, blocker_start: b.start }),
        None => Ok(target),
    }
}

fn read_bytes(file: &File, path: &Path, offset: u64, len: usize) -> Result<Vec<u8>, GrowError> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset).map_err(|source| GrowError::Read { path: path.to_owned(), offset, len, source })?;
    Ok(buf)
}

fn put(buf: &mut [u8], offset: usize, data: &[u8], path: &Path, what: &'static str) -> Result<(), GrowError> {
    let dst = offset.checked_add(data.len()).and_then(|end| buf.get_mut(offset..end)).ok_or_else(|| layout_err(path, what))?;
    dst.copy_from_slice(data);
    Ok(())
}

fn lba_offset(path: &Path, lba: u64, what: &'static str) -> Result<u64, GrowError> {
    lba.checked_mul(SECTOR_SIZE).ok_or_else(|| layout_err(path, what))
}

/// LBAs of the grown GPT: (last LBA / backup header, backup entries, last usable).
fn new_gpt_layout(h: &GptHeader, new_size: u64) -> Option<(u64, u64, u64)> {
    let last_lba = (new_size / SECTOR_SIZE).checked_sub(1)?;
    let backup_entries_lba = last_lba.checked_sub(h.entries_sectors().ok()?)?;
    let last_usable = backup_entries_lba.checked_sub(1)?;
    Some((last_lba, backup_entries_lba, last_usable))
}

fn plan_gpt(file: &File, path: &Path, old_size: u64, new_size: u64, target: &Partition) -> Result<Plan, GrowError> {
    let gpt = partition::read_verified_gpt(&mut &*file, old_size).map_err(|source| table_err(path, source))?;
    if gpt.used_backup {
        return Err(GrowError::PrimaryGptDamaged { path: path.to_owned() });
    }
    let old = gpt.header.clone();
    let grown = grow_gpt(gpt.header, gpt.entries, new_size, target, path)?;
    let new_end = lba_offset(path, grown.primary.last_usable_lba.saturating_add(1), "the partition end")?;
    let backup_entries_lba = grown.backup.entries_lba;
    let mut writes = grown.into_writes(path)?;
    writes.extend(old_backup_wipe(file, path, &old, old_size, backup_entries_lba)?);
    writes.extend(protective_mbr(file, path, old_size, new_size)?);
    Ok(Plan { writes, new_part_size: new_end.saturating_sub(target.start) })
}

/// Both GPT copies after growing.
struct GrownGpt {
    primary: GptHeader,
    backup: GptHeader,
    entries: Vec<u8>,
}

impl GrownGpt {
    /// Writes in a safe order: the new backup first, then the primary.
    fn into_writes(self, path: &Path) -> Result<Vec<SectorWrite>, GrowError> {
        Ok(vec![
            SectorWrite { offset: lba_offset(path, self.backup.entries_lba, "the backup entries")?, data: self.entries.clone() },
            SectorWrite { offset: lba_offset(path, self.backup.my_lba, "the backup header")?, data: self.backup.encode() },
            SectorWrite { offset: lba_offset(path, self.primary.entries_lba, "the primary entries")?, data: self.entries },
            SectorWrite { offset: lba_offset(path, self.primary.my_lba, "the primary header")?, data: self.primary.encode() },
        ])
    }
}

/// Computes the grown primary and backup headers and the entry array in which
/// `target` ends at the new last usable LBA.
fn grow_gpt(h: GptHeader, mut entries: Vec<u8>, new_size: u64, target: &Partition, path: &Path) -> Result<GrownGpt, GrowError> {
    let (last_lba, backup_entries_lba, last_usable) = new_gpt_layout(&h, new_size).ok_or_else(|| layout_err(path, "the new GPT layout"))?;
    let old_last_lba = (target.end() / SECTOR_SIZE).saturating_sub(1);
    if last_usable < old_last_lba {
        return Err(GrowError::WouldShrinkPartition {
            path: path.to_owned(),
            index: target.index,
            old_last_lba,
            new_last_lba: last_usable,
        });
    }
    set_gpt_last_lba(&mut entries, &h, target.index, last_usable, path)?;
    let primary = GptHeader { alternate_lba: last_lba, last_usable_lba: last_usable, entries_crc32: crc32fast::hash(&entries), ..h };
    let backup = GptHeader { my_lba: last_lba, alternate_lba: primary.my_lba, entries_lba: backup_entries_lba, ..primary.clone() };
    Ok(GrownGpt { primary, backup, entries })
}

fn set_gpt_last_lba(entries: &mut [u8], h: &GptHeader, index: u32, last_lba: u64, path: &Path) -> Result<(), GrowError> {
    let offset = usize::try_from(index.saturating_sub(1))
        .ok()
        .zip(usize::try_from(h.entry_size).ok())
        .and_then(|(i, size)| i.checked_mul(size))
        .and_then(|o| o.checked_add(GPT_ENTRY_LAST_LBA_OFFSET))
        .ok_or_else(|| layout_err(path, "the partition entry offset"))?;
    put(entries, offset, &last_lba.to_le_bytes(), path, "the partition entry")
}

/// Zeroes the old backup GPT when a valid one sits entirely after the old usable
/// area and before the new backup entries, so no stale header is left behind.
fn old_backup_wipe(
    file: &File,
    path: &Path,
    primary: &GptHeader,
    old_size: u64,
    new_backup_entries_lba: u64,
) -> Result<Option<SectorWrite>, GrowError> {
    let Ok(old) = partition::read_gpt_copy(&mut &*file, primary.alternate_lba, old_size) else {
        return Ok(None);
    };
    let sectors = old.header.entries_sectors().ok();
    let entries_end = sectors.and_then(|s| old.header.entries_lba.checked_add(s));
    let start = old.header.entries_lba.min(old.header.my_lba);
    let end = entries_end.map(|e| e.max(old.header.my_lba.saturating_add(1)));
    let Some(end) = end else { return Ok(None) };
    if start <= primary.last_usable_lba || end > new_backup_entries_lba {
        return Ok(None);
    }
    let len = end
        .checked_sub(start)
        .and_then(|n| n.checked_mul(SECTOR_SIZE))
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| layout_err(path, "the old backup GPT size"))?;
    Ok(Some(SectorWrite { offset: lba_offset(path, start, "the old backup GPT")?, data: vec![0; len] }))
}

/// Widens a protective MBR entry that covered the whole old disk.
fn protective_mbr(file: &File, path: &Path, old_size: u64, new_size: u64) -> Result<Option<SectorWrite>, GrowError> {
    let mut sector = read_bytes(file, path, 0, SECTOR)?;
    let old_cover = sectors_after_mbr(old_size);
    for slot in 0..4usize {
        let base = slot_base(slot, path)?;
        let entry = sector.get(base..base.saturating_add(MBR_ENTRY_LEN)).unwrap_or_default();
        let (Some(&kind), Some(start), Some(size)) = (entry.get(4), le_u32(entry, 8), le_u32(entry, 12)) else {
            continue;
        };
        if kind == MBR_TYPE_PROTECTIVE && start == 1 && size == old_cover && size != u32::MAX {
            let new_sectors = new_size / SECTOR_SIZE;
            let end_lba = new_sectors.saturating_sub(1);
            put(&mut sector, base.saturating_add(5), &chs(end_lba), path, "the protective MBR")?;
            put(&mut sector, base.saturating_add(12), &sectors_after_mbr(new_size).to_le_bytes(), path, "the protective MBR")?;
            return Ok(Some(SectorWrite { offset: 0, data: sector }));
        }
    }
    Ok(None)
}

/// Sectors from LBA 1 to the end of a disk of `size` bytes, capped at `u32::MAX`.
fn sectors_after_mbr(size: u64) -> u32 {
    u32::try_from((size / SECTOR_SIZE).saturating_sub(1)).unwrap_or(u32::MAX)
}

fn le_u32(buf: &[u8], offset: usize) -> Option<u32> {
    let bytes = buf.get(offset..offset.checked_add(4)?)?;
    <[u8; 4]>::try_from(bytes).ok().map(u32::from_le_bytes)
}

fn slot_base(slot: usize, path: &Path) -> Result<usize, GrowError> {
    slot.checked_mul(MBR_ENTRY_LEN).and_then(|o| o.checked_add(MBR_TABLE_OFFSET)).ok_or_else(|| layout_err(path, "the MBR entry offset"))
}

/// CHS address of `lba` in the conventional 255-head, 63-sector geometry, or the
/// 1023/254/63 overflow marker past cylinder 1023.
fn chs(lba: u64) -> [u8; 3] {
    const HEADS: u64 = 255;
    const SECTORS: u64 = 63;
    let cylinder = lba / (HEADS * SECTORS);
    if cylinder > 1023 {
        return [0xFE, 0xFF, 0xFF];
    }
    let head = (lba / SECTORS) % HEADS;
    let sector = lba % SECTORS + 1;
    let byte = |v: u64| u8::try_from(v & 0xFF).unwrap_or(0xFF);
    [byte(head), byte(sector | ((cylinder >> 8) << 6)), byte(cylinder)]
}

fn plan_mbr(file: &File, path: &Path, old_size: u64, new_size: u64, table: &PartitionTable, target: &Partition) -> Result<Plan, GrowError> {
    let locations = partition::read_mbr_locations(&mut &*file, old_size).map_err(|source| table_err(path, source))?;
    let location =
        |index: u32| locations.iter().find(|l| l.index == index).ok_or_else(|| GrowError::NoSuchPartition { path: path.to_owned(), index });
    let end_lba = new_size / SECTOR_SIZE;
    let mut cache = SectorCache::new(file, path);
    let loc = location(target.index)?;
    let span = (target.index, target.start / SECTOR_SIZE, end_lba);
    cache.set_size(loc.table_lba, loc.slot, span)?;
    if target.index >= 5 {
        let container = table.partitions.iter().find(|p| p.is_mbr_extended()).ok_or_else(|| layout_err(path, "the extended partition"))?;
        let span = (container.index, container.start / SECTOR_SIZE, end_lba);
        cache.set_size(0, location(container.index)?.slot, span)?;
        if let Some(link) = loc.link_lba {
            cache.set_size(link, 1, (target.index, loc.table_lba, end_lba))?;
        }
    }
    let new_end = lba_offset(path, end_lba, "the partition end")?;
    Ok(Plan { writes: cache.into_writes()?, new_part_size: new_end.saturating_sub(target.start) })
}

/// MBR/EBR sectors of one image loaded for modification, by LBA.
struct SectorCache<'a> {
    file: &'a File,
    path: &'a Path,
    sectors: BTreeMap<u64, Vec<u8>>,
}

impl<'a> SectorCache<'a> {
    fn new(file: &'a File, path: &'a Path) -> Self {
        SectorCache { file, path, sectors: BTreeMap::new() }
    }

    /// Sets the entry in `slot` of sector `lba` to span `start_lba..end_lba`
    /// (absolute), keeping its stored start; `span.0` names the partition in errors.
    fn set_size(&mut self, lba: u64, slot: usize, span: (u32, u64, u64)) -> Result<(), GrowError> {
        let (index, start_lba, end_lba) = span;
        let path = self.path;
        if end_lba <= start_lba {
            return Err(layout_err(path, "the new MBR partition size"));
        }
        let sectors = end_lba.saturating_sub(start_lba);
        let size = u32::try_from(sectors).map_err(|_| GrowError::MbrLimit { path: path.to_owned(), index, sectors })?;
        let sector = match self.sectors.entry(lba) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let offset = lba_offset(path, lba, "an MBR sector")?;
                e.insert(read_bytes(self.file, path, offset, SECTOR)?)
            }
        };
        let base = slot_base(slot, path)?;
        let end_chs = chs(end_lba.saturating_sub(1));
        put(sector, base.saturating_add(5), &end_chs, path, "an MBR entry")?;
        put(sector, base.saturating_add(12), &size.to_le_bytes(), path, "an MBR entry")
    }

    fn into_writes(self) -> Result<Vec<SectorWrite>, GrowError> {
        let path = self.path;
        self.sectors
            .into_iter()
            .map(|(lba, data)| {
                let offset = lba_offset(path, lba, "an MBR sector")?;
                Ok(SectorWrite { offset, data })
            })
            .collect()
    }
}

/// Whether every planned write already matches the file's contents.
fn is_applied(file: &File, path: &Path, size: u64, writes: &[SectorWrite]) -> Result<bool, GrowError> {
    for w in writes {
        let fits = u64::try_from(w.data.len()).ok().and_then(|len| w.offset.checked_add(len)).is_some_and(|end| end <= size);
        if !fits || read_bytes(file, path, w.offset, w.data.len())? != w.data {
            return Ok(false);
        }
    }
    Ok(true)
}

fn apply(file: &File, path: &Path, old_size: u64, new_size: u64, writes: &[SectorWrite]) -> Result<(), GrowError> {
    if new_size != old_size {
        file.set_len(new_size).map_err(|source| GrowError::Resize { path: path.to_owned(), size: new_size, source })?;
    }
    for w in writes {
        file.write_all_at(&w.data, w.offset).map_err(|source| GrowError::Write {
            path: path.to_owned(),
            offset: w.offset,
            len: w.data.len(),
            source,
        })?;
    }
    file.sync_all().map_err(|source| GrowError::Sync { path: path.to_owned(), source })
}

/// Re-reads the table (and, for GPT, the backup copy at the new last LBA) and
/// checks the grown partition's size.
fn verify(file: &File, path: &Path, size: u64, index: u32, expected: u64) -> Result<(), GrowError> {
    let verify_err = |source| GrowError::Verify { path: path.to_owned(), source };
    let table = partition::read(&mut &*file, size).map_err(verify_err)?;
    if table.kind == TableKind::Gpt {
        let last_lba = (size / SECTOR_SIZE).saturating_sub(1);
        partition::read_gpt_copy(&mut &*file, last_lba, size).map_err(verify_err)?;
    }
    let found = table.by_index(index).map_or(0, |p| p.size);
    if table.used_backup || found != expected {
        return Err(GrowError::VerifyMismatch { path: path.to_owned(), index, expected, found });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::super::partition::test_support::*;
    use super::*;
    use std::os::unix::fs::MetadataExt;

    const MIB: u64 = 1 << 20;

    fn s(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    fn table(path: &Path) -> PartitionTable {
        let f = File::open(path).unwrap();
        partition::read(&mut &f, f.metadata().unwrap().len()).unwrap()
    }

    #[test]
    fn grows_ubuntu_layout_and_moves_backup_gpt() {
        let dir = tempfile::tempdir().unwrap();
        let path = ubuntu_gpt(dir.path(), "64M");
        let before: Vec<_> = [14, 15, 16].map(|i| sgdisk_info(&path, i)).into();
        let root_before = sgdisk_info(&path, 1);
        let out = grow_disk(&path, 96 * MIB, 1).unwrap();
        let last_usable = 96 * MIB / 512 - 34;
        assert_eq!(
            out,
            GrowOutcome {
                old_size: 64 * MIB,
                new_size: 96 * MIB,
                partition: 1,
                old_part_size: (131_038 - 75_776 + 1) * 512,
                new_part_size: (last_usable - 75_776 + 1) * 512,
                changed: true,
            }
        );
        let verify = run("sgdisk", &["-v", s(&path)], None);
        assert!(verify.contains("No problems found"), "{verify}");
        let (_, _, sg_last_usable) = sgdisk_disk(&path);
        assert_eq!(sg_last_usable, last_usable);
        let root = sgdisk_info(&path, 1);
        assert_eq!((root.first, root.last), (root_before.first, last_usable));
        assert_eq!((root.part_guid, root.name), (root_before.part_guid, root_before.name));
        let after: Vec<_> = [14, 15, 16].map(|i| sgdisk_info(&path, i)).into();
        assert_eq!(before, after);
        let info = run("qemu-img", &["info", "--output=json", "-f", "raw", s(&path)], None);
        assert!(info.contains("\"virtual-size\": 100663296"), "{info}");
        let meta = std::fs::metadata(&path).unwrap();
        assert!(meta.blocks() * 512 < 4 * MIB, "not sparse: {} blocks", meta.blocks());
        let t = table(&path);
        assert!(!t.used_backup);
        assert_eq!(t.by_index(1).unwrap().size, out.new_part_size);
        let mbr = std::fs::read(&path).unwrap();
        assert_eq!(mbr[446 + 12..446 + 16], (96 * MIB / 512 - 1).to_le_bytes()[..4]);
    }

    #[test]
    fn growing_again_to_the_same_size_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        let path = ubuntu_gpt(dir.path(), "64M");
        grow_disk(&path, 96 * MIB, 1).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let again = grow_disk(&path, 96 * MIB, 1).unwrap();
        assert!(!again.changed);
        assert_eq!((again.old_size, again.new_size), (96 * MIB, 96 * MIB));
        assert_eq!(again.old_part_size, again.new_part_size);
        assert!(std::fs::read(&path).unwrap() == bytes);
    }

    #[test]
    fn fixes_a_disk_already_extended_without_its_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = esp_root_gpt(dir.path(), "32M");
        run("truncate", &["-s", "48M", s(&path)], None);
        let out = grow_disk(&path, 48 * MIB, 2).unwrap();
        assert!(out.changed);
        assert_eq!(out.old_size, out.new_size);
        let verify = run("sgdisk", &["-v", s(&path)], None);
        assert!(verify.contains("No problems found"), "{verify}");
        assert_eq!(sgdisk_info(&path, 2).last, 48 * MIB / 512 - 34);
        let bytes = std::fs::read(&path).unwrap();
        let old_backup = (32 * MIB - 512) as usize;
        assert!(bytes[old_backup - 32 * 512..old_backup + 512].iter().all(|&b| b == 0));
    }

    #[test]
    fn grows_esp_root_layout() {
        let dir = tempfile::tempdir().unwrap();
        let path = esp_root_gpt(dir.path(), "32M");
        let esp = sgdisk_info(&path, 1);
        let out = grow_disk(&path, 48 * MIB, 2).unwrap();
        assert_eq!(out.partition, 2);
        let verify = run("sgdisk", &["-v", s(&path)], None);
        assert!(verify.contains("No problems found"), "{verify}");
        assert_eq!(sgdisk_info(&path, 2).last, 48 * MIB / 512 - 34);
        assert_eq!(sgdisk_info(&path, 1), esp);
    }

    #[test]
    fn refuses_to_grow_a_partition_that_is_not_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = ubuntu_gpt(dir.path(), "64M");
        let bytes = std::fs::read(&path).unwrap();
        let err = grow_disk(&path, 96 * MIB, 15).unwrap_err();
        assert!(matches!(err, GrowError::NotLast { index: 15, blocker: 16, .. }), "{err}");
        assert!(err.to_string().contains("partition 16 (at byte 22020096) is in the way"), "{err}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 64 * MIB);
        assert!(std::fs::read(&path).unwrap() == bytes);
        let err = grow_disk(&path, 96 * MIB, 2).unwrap_err();
        assert!(matches!(err, GrowError::NoSuchPartition { index: 2, .. }), "{err}");
    }

    #[test]
    fn rejects_bad_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let path = ubuntu_gpt(dir.path(), "64M");
        let err = grow_disk(&path, 32 * MIB, 1).unwrap_err();
        assert!(matches!(err, GrowError::Shrink { current, requested, .. } if current == 64 * MIB && requested == 32 * MIB));
        assert!(err.to_string().contains("to 33554432 bytes: it is already 67108864 bytes"), "{err}");
        let err = grow_disk(&path, 96 * MIB + 100, 1).unwrap_err();
        assert!(matches!(err, GrowError::Unaligned { .. }), "{err}");
        assert!(err.to_string().contains("from 67108864 to 100663396 bytes"), "{err}");
        let err = grow_disk(&dir.path().join("missing.raw"), 96 * MIB, 1).unwrap_err();
        assert!(matches!(err, GrowError::Open { .. }), "{err}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 64 * MIB);
    }

    #[test]
    fn refuses_a_damaged_primary_gpt() {
        let dir = tempfile::tempdir().unwrap();
        let path = ubuntu_gpt(dir.path(), "64M");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[512 + 60] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = grow_disk(&path, 96 * MIB, 1).unwrap_err();
        assert!(matches!(err, GrowError::PrimaryGptDamaged { .. }), "{err}");
        assert!(std::fs::read(&path).unwrap() == bytes);
    }

    #[test]
    fn grows_single_mbr_partition() {
        let dir = tempfile::tempdir().unwrap();
        let path = mbr_single(dir.path(), "64M");
        let out = grow_disk(&path, 96 * MIB, 1).unwrap();
        assert_eq!(out.new_part_size, 96 * MIB - MIB);
        let (_, parts) = sfdisk_json(&path);
        assert_eq!(parts.len(), 1);
        assert_eq!((parts[0].start, parts[0].size), (2048, 96 * MIB / 512 - 2048));
        assert!(parts[0].bootable);
        run("sfdisk", &["--verify", s(&path)], None);
        assert!(!grow_disk(&path, 96 * MIB, 1).unwrap().changed);
    }

    #[test]
    fn grows_last_logical_partition_and_its_container() {
        let dir = tempfile::tempdir().unwrap();
        let path = mbr_logical(dir.path(), "64M");
        let (_, before) = sfdisk_json(&path);
        let out = grow_disk(&path, 96 * MIB, 6).unwrap();
        let end = 96 * MIB / 512;
        assert_eq!(out.new_part_size, (end - 55_296) * 512);
        let (_, after) = sfdisk_json(&path);
        assert_eq!(after[0], before[0]);
        assert_eq!(after[2], before[2]);
        assert_eq!((after[1].index, after[1].start, after[1].size), (2, 34_816, end - 34_816));
        assert_eq!((after[3].index, after[3].start, after[3].size), (6, 55_296, end - 55_296));
        let verify = run("sfdisk", &["--verify", s(&path)], None);
        assert!(!verify.to_lowercase().contains("overlap"), "{verify}");
        let bytes = std::fs::read(&path).unwrap();
        let link = 34_816 * 512 + 446 + 16 + 12;
        assert_eq!(bytes[link..link + 4], ((end - 53_248) as u32).to_le_bytes());
        assert_eq!(table(&path).by_index(6).unwrap().size, out.new_part_size);
    }

    #[test]
    fn refuses_mbr_partitions_that_are_not_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = mbr_logical(dir.path(), "64M");
        let err = grow_disk(&path, 96 * MIB, 5).unwrap_err();
        assert!(matches!(err, GrowError::NotLast { index: 5, blocker: 6, .. }), "{err}");
        let err = grow_disk(&path, 96 * MIB, 1).unwrap_err();
        assert!(matches!(err, GrowError::NotLast { index: 1, blocker: 2, .. }), "{err}");
    }

    #[test]
    fn chs_matches_sfdisk_geometry() {
        assert_eq!(chs(131_071), [0x28, 0x20, 0x08]);
        assert_eq!(chs(0), [0, 1, 0]);
        assert_eq!(chs(u64::MAX), [0xFE, 0xFF, 0xFF]);
    }
}
