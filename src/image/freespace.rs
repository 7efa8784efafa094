//! Free space of an unmounted ext2/3/4 filesystem punched out of the disk file: every block the
//! block bitmaps (as `dumpe2fs` reads them) call free becomes a hole, or zeros where it is
//! smaller than a block of the file holding the disk. Online FITRIM cannot promise that:
//! it skips free runs shorter than the loop device's discard granule (4 KiB), so a small
//! filesystem with 1 KiB blocks kept deleted files' data in them (measured on the small
//! upstream: its old syslog, in block 6287).

use std::fs::File;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};
use nix::fcntl::{FallocateFlags, fallocate};

use crate::host::command::CommandRunExt;

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
        let (o, l) = (i64::try_from(start + off)?, i64::try_from(len)?);
        fallocate(disk, FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE, o, l)
            .with_context(|| format!("Failed to punch the free blocks {a}-{b} out of the disk file"))?;
        punched += len;
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
}
