//! Free space of an unmounted filesystem punched out of the disk file: every block the
//! filesystem calls free becomes a hole, or zeros where it is smaller than a block of the file
//! holding the disk. Online FITRIM cannot promise that: it skips free runs shorter than the
//! loop device's discard granule (4 KiB), so a small filesystem with 1 KiB blocks kept deleted
//! files' data in them (measured on the small upstream: its old syslog, in block 6287), and an
//! XFS root kept an old /etc/hostname's block.
//!
//! - ext2/3/4: the block bitmaps, as `dumpe2fs` reads them.
//! - XFS: the free-space B+trees, as `xfs_db freesp -d` reads them; then the log, which keeps
//!   old metadata (removed names, short symlink targets, extended attributes), is formatted
//!   afresh with `xfs_db logformat` at a cycle past every LSN the metadata carries.

use std::fs::File;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};
use nix::fcntl::{FallocateFlags, fallocate};

use crate::host::command::CommandRunExt;
use crate::host::loopdev::LoopDevice;

/// The free block ranges `[first, last]` and the block size, from `dumpe2fs` output. Pure.
pub fn parse_dumpe2fs(text: &str) -> anyhow::Result<(u64, Vec<(u64, u64)>)> {
    let block_size: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Block size:"))
        .context("dumpe2fs printed no block size")?
        .trim()
        .parse()
        .context("dumpe2fs printed a block size that is not a number")?;
    let mut ranges = Vec::new();
    // Per group: "  Free blocks: 6258-6261, 6276, 6289-8192" (the header line has no indent).
    for list in text.lines().filter_map(|l| l.strip_prefix("  Free blocks:")) {
        for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (a, b) = item.split_once('-').unwrap_or((item, item));
            let parse = |s: &str| s.trim().parse::<u64>().with_context(|| format!("dumpe2fs: bad free block range {item:?}"));
            let (a, b) = (parse(a)?, parse(b)?);
            if b < a {
                bail!("dumpe2fs: bad free block range {item:?}");
            }
            ranges.push((a, b));
        }
    }
    Ok((block_size, ranges))
}

/// Punches every free block of the ext2/3/4 filesystem of the partition at byte `start` of
/// `disk` (unmounted; `disk_path` is a path other programs can open it by). Returns the bytes
/// punched.
pub fn punch_free_ext(disk: &File, disk_path: &Path, start: u64, size: u64) -> anyhow::Result<u64> {
    let spec = format!("{}?offset={start}", disk_path.display());
    let out = Command::new("dumpe2fs").arg(&spec).run_checked("read the free blocks of an ext filesystem")?;
    let (bs, ranges) = parse_dumpe2fs(&String::from_utf8_lossy(&out.stdout))?;
    let mut punched = 0u64;
    for (a, b) in ranges {
        let off = a.checked_mul(bs).filter(|o| *o < size).context("dumpe2fs: a free block beyond the partition")?;
        let len = (b - a + 1).saturating_mul(bs).min(size - off);
        punch(disk, start + off, len, &format!("the free blocks {a}-{b}"))?;
        punched += len;
    }
    Ok(punched)
}

fn punch(disk: &File, at: u64, len: u64, what: &str) -> anyhow::Result<()> {
    let (o, l) = (i64::try_from(at)?, i64::try_from(len)?);
    fallocate(disk, FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE, o, l)
        .with_context(|| format!("Failed to punch {what} out of the disk file"))
}

/// What `xfs_db` says of an XFS filesystem's geometry and free space.
#[derive(Debug, PartialEq, Eq)]
pub struct XfsFree {
    pub block_size: u64,
    pub ag_blocks: u64,
    pub ag_blklog: u32,
    /// The internal log's first block (an AG-encoded filesystem block number; 0: external log).
    pub log_start: u64,
    pub log_blocks: u64,
    /// Free extents: (allocation group, block in it, length in blocks).
    pub extents: Vec<(u64, u64, u64)>,
}

impl XfsFree {
    /// The byte offset, in the filesystem, of `agbno` in allocation group `agno`.
    fn byte(&self, agno: u64, agbno: u64) -> Option<u64> {
        agno.checked_mul(self.ag_blocks)?.checked_add(agbno)?.checked_mul(self.block_size)
    }

    /// The internal log's byte range in the filesystem, if it has one.
    pub fn log_range(&self) -> Option<(u64, u64)> {
        if self.log_start == 0 || self.log_blocks == 0 || self.ag_blklog >= 64 {
            return None;
        }
        let agno = self.log_start >> self.ag_blklog;
        let agbno = self.log_start & ((1u64 << self.ag_blklog) - 1);
        Some((self.byte(agno, agbno)?, self.log_blocks.checked_mul(self.block_size)?))
    }
}

/// Parses `xfs_db -r -c 'sb 0' -c 'p blocksize agblocks agblklog logstart logblocks' -c
/// 'freesp -d'`: the geometry's `name = value` lines, then one `agno agbno len` line per free
/// extent (the histogram after them has five columns and is not read). Pure.
pub fn parse_xfs_db(text: &str) -> anyhow::Result<XfsFree> {
    let field = |name: &str| -> anyhow::Result<u64> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name).and_then(|r| r.trim_start().strip_prefix('=')))
            .with_context(|| format!("xfs_db printed no {name}"))?
            .trim()
            .parse()
            .with_context(|| format!("xfs_db printed a {name} that is not a number"))
    };
    let block_size = field("blocksize")?;
    let ag_blocks = field("agblocks")?;
    if block_size == 0 || ag_blocks == 0 {
        bail!("xfs_db printed a zero block size or AG size");
    }
    let mut extents = Vec::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() != 3 {
            continue;
        }
        let Ok(nums) = cols.iter().map(|c| c.parse::<u64>()).collect::<Result<Vec<_>, _>>() else {
            continue; // the column header
        };
        if nums[1].checked_add(nums[2]).is_none_or(|end| end > ag_blocks) {
            bail!("xfs_db: a free extent beyond its allocation group: {}", line.trim());
        }
        extents.push((nums[0], nums[1], nums[2]));
    }
    Ok(XfsFree {
        block_size,
        ag_blocks,
        ag_blklog: u32::try_from(field("agblklog")?).context("xfs_db: agblklog out of range")?,
        log_start: field("logstart")?,
        log_blocks: field("logblocks")?,
        extents,
    })
}

/// The log's current cycle from its first 512-byte block: every block of the log starts with
/// its cycle number, or with a record header's magic followed by the cycle; the block at the
/// log's start is always in the newest cycle, since each cycle begins there.
pub fn xfs_log_cycle(first_block: &[u8; 8]) -> u32 {
    const XLOG_HEADER_MAGIC: u32 = 0xFEED_BABE;
    let word = |i: usize| u32::from_be_bytes([first_block[i], first_block[i + 1], first_block[i + 2], first_block[i + 3]]);
    if word(0) == XLOG_HEADER_MAGIC { word(4) } else { word(0) }
}

/// Punches every free block of the XFS filesystem at byte `start` of `disk` (unmounted cleanly:
/// the build mounted and unmounted it), then formats its internal log afresh. Returns the bytes
/// punched.
pub fn punch_free_xfs(disk: &File, start: u64, size: u64) -> anyhow::Result<u64> {
    use std::os::unix::fs::FileExt;
    let dev = LoopDevice::attach(disk, start, size, false).context("Failed to attach the XFS filesystem to read its free space")?;
    let out = Command::new("xfs_db")
        .args(["-r", "-c", "sb 0", "-c", "p blocksize agblocks agblklog logstart logblocks", "-c", "freesp -d"])
        .arg(dev.path())
        .run_checked("read the free extents of an XFS filesystem")?;
    let free = parse_xfs_db(&String::from_utf8_lossy(&out.stdout))?;
    if let Some((log_at, _)) = free.log_range().filter(|(a, l)| a.checked_add(*l).is_some_and(|end| end <= size)) {
        let mut head = [0u8; 8];
        disk.read_exact_at(&mut head, start + log_at).context("Failed to read the XFS log's first block")?;
        let cycle = xfs_log_cycle(&head).checked_add(2).context("the XFS log's cycle number is at its limit")?;
        Command::new("xfs_db")
            .args(["-x", "-c", &format!("logformat -c {cycle}")])
            .arg(dev.path())
            .run_checked("format the XFS log afresh (it keeps old metadata)")?;
    }
    dev.close().context("Failed to detach the XFS filesystem")?;
    let mut punched = 0u64;
    for &(agno, agbno, len) in &free.extents {
        let off = free.byte(agno, agbno).filter(|o| *o < size).context("xfs_db: a free extent beyond the filesystem")?;
        let bytes = len.saturating_mul(free.block_size).min(size - off);
        punch(disk, start + off, bytes, &format!("the free extent {agno}/{agbno}+{len}"))?;
        punched += bytes;
    }
    Ok(punched)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn dumpe2fs_free_lists() {
        let text = "Free blocks:              53103\nBlock size:               1024\nGroup 0: (Blocks 1-8192)\n  Free blocks: 6258-6261, 6276, 6289-8192\n  Free inodes: 30-2016\nGroup 1: (Blocks 8193-16384)\n  Free blocks: \n";
        assert_eq!(parse_dumpe2fs(text).unwrap(), (1024, vec![(6258, 6261), (6276, 6276), (6289, 8192)]));
        assert!(parse_dumpe2fs("  Free blocks: 1-2\n").is_err());
        assert!(parse_dumpe2fs("Block size: 4096\n  Free blocks: 9-3\n").is_err());
    }

    /// A deleted file's data in a lone free 1 KiB block (which FITRIM on a loop device skips)
    /// is gone from the disk file; live files are intact.
    #[test]
    fn free_blocks_of_an_ext4_are_punched() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir(&tree).unwrap();
        std::fs::write(tree.join("live"), b"live data stays\n").unwrap();
        let fs = dir.path().join("fs.img");
        let made = Command::new("mkfs.ext4").args(["-q", "-F", "-b", "1024", "-d"]).arg(&tree).arg(&fs).arg("4M").status().unwrap();
        assert!(made.success());
        // A free block past the live data, with a secret in it: a deleted file's leftovers.
        let text = String::from_utf8_lossy(&Command::new("dumpe2fs").arg(&fs).output().unwrap().stdout).into_owned();
        let (bs, ranges) = parse_dumpe2fs(&text).unwrap();
        let block = ranges[0].0;
        // The disk: the filesystem at 1 MiB.
        let disk = tempfile::NamedTempFile::new().unwrap();
        let start = 1u64 << 20;
        let img = std::fs::read(&fs).unwrap();
        disk.as_file().write_all_at(&img, start).unwrap();
        disk.as_file().write_all_at(b"deleted-secret-value", start + block * bs + 10).unwrap();
        let punched = punch_free_ext(disk.as_file(), disk.path(), start, img.len() as u64).unwrap();
        assert!(punched >= bs * (ranges[0].1 - ranges[0].0 + 1), "{punched}");
        let after = std::fs::read(disk.path()).unwrap();
        assert!(memchr::memmem::find(&after, b"deleted-secret-value").is_none());
        assert!(memchr::memmem::find(&after, b"live data stays").is_some());
        let check = Command::new("e2fsck").args(["-fn"]).arg(format!("{}?offset={start}", disk.path().display())).output().unwrap();
        assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    }

    #[test]
    fn xfs_db_output() {
        let text = "blocksize = 4096\nagblocks = 20480\nagblklog = 15\nlogstart = 65542\nlogblocks = 16384\n   agno    agbno      len\n       0       11        5\n       2    16394     4086\n   from      to extents  blocks    pct\n      1       1      16      16   0.02\n";
        let f = parse_xfs_db(text).unwrap();
        assert_eq!(f.extents, vec![(0, 11, 5), (2, 16394, 4086)]);
        // AG 2, block 6.
        assert_eq!(f.log_range(), Some(((2 * 20480 + 6) * 4096, 16384 * 4096)));
        assert!(parse_xfs_db(&text.replace("16394     4086", "20000     4086")).is_err(), "past its AG");
        assert!(parse_xfs_db("agblocks = 1\n").is_err());
        assert_eq!(xfs_log_cycle(&[0xfe, 0xed, 0xba, 0xbe, 0, 0, 0, 7]), 7);
        assert_eq!(xfs_log_cycle(&[0, 0, 0, 3, 0xfe, 0xed, 0xba, 0xbe]), 3);
    }

    fn sh(cmd: &str) -> String {
        let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
        assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A removed file's data (in a free extent) and its name (in the log) are gone from the disk
    /// file after the punch; live files are intact, xfs_repair finds nothing wrong and the
    /// kernel mounts the filesystem (its log's cycle is past every metadata LSN).
    #[test]
    fn free_extents_and_log_of_an_xfs_are_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk");
        let start = 1u64 << 20;
        let size = 320u64 << 20;
        std::fs::File::create(&disk).unwrap().set_len(start + size + (1 << 20)).unwrap();
        let mnt = dir.path().join("m");
        std::fs::create_dir(&mnt).unwrap();
        let d = disk.display();
        let m = mnt.display();
        let dev = sh(&format!("losetup -f --show -o {start} --sizelimit {size} {d}"));
        let made = std::panic::catch_unwind(|| {
            sh(&format!("mkfs.xfs -q {dev} && mount {dev} {m}"));
            sh(&format!(
                "echo 'live data stays' > {m}/live && for i in 1 2 3 4 5 6 7 8; do echo removed-secret-$i > {m}/removed-name-$i; done; sync"
            ));
            sh(&format!("rm {m}/removed-*; sync; umount {m}"));
        });
        sh(&format!("umount {m} 2>/dev/null; losetup -d {dev}"));
        made.unwrap();
        let before = std::fs::read(&disk).unwrap();
        assert!(memchr::memmem::find(&before, b"removed-secret-3").is_some(), "the test needs the removed data on the disk");
        assert!(memchr::memmem::find(&before, b"removed-name-3").is_some(), "the test needs the removed names in the log");
        drop(before);
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&disk).unwrap();
        let punched = punch_free_xfs(&file, start, size).unwrap();
        assert!(punched > 100 << 20, "{punched}");
        drop(file);
        let after = std::fs::read(&disk).unwrap();
        assert!(memchr::memmem::find(&after, b"removed-secret-").is_none());
        assert!(memchr::memmem::find(&after, b"removed-name-").is_none());
        assert!(memchr::memmem::find(&after, b"live data stays").is_some());
        let dev = sh(&format!("losetup -f --show -o {start} --sizelimit {size} {d}"));
        let repair = Command::new("xfs_repair").arg("-n").arg(&dev).output().unwrap();
        let mounted = Command::new("mount").arg(&dev).arg(&mnt).status().unwrap();
        let live = std::fs::read_to_string(mnt.join("live"));
        sh(&format!("umount {m} 2>/dev/null; losetup -d {dev}"));
        assert!(repair.status.success(), "{}{}", String::from_utf8_lossy(&repair.stdout), String::from_utf8_lossy(&repair.stderr));
        assert!(mounted.success());
        assert_eq!(live.unwrap(), "live data stays\n");
    }
}
