//! The raw pass of the residue scan: after unmount, the disk image's bytes — free space,
//! journals, slack and metadata included — are searched for what the seal removed and no live
//! file holds (secret values of deleted files, the old host names, MACs, IPs, provisioner
//! paths and machine id; see [`Needles::without`]). A hit names the partition and the
//! filesystem block (`(offset - partition start) / block size`, the block size from the
//! superblock).
//!
//! Holes (SEEK_DATA/SEEK_HOLE) are never read: a trimmed image is read only where it holds
//! data. Data is read in chunks, in parallel, with the same multi-literal engine as the file
//! scan. Hits never carry a secret: only the needle's label.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::Instant;

use rayon::prelude::*;

use super::residue::{Engine, NeedleRef, Needles, ResidueError, Shapes};
use crate::disk::fsprobe::{PROBE_LEN, block_size, probe};

/// The raw pass could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum RawScanError {
    /// The search automaton could not be built.
    #[error(transparent)]
    Engine(#[from] ResidueError),
    /// Reading the disk failed.
    #[error("Raw scan: failed to {op} the disk image at offset {offset}: {source}")]
    Io {
        /// What we tried.
        op: &'static str,
        /// Byte offset in the disk.
        offset: u64,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// A partition of the disk, for naming where a hit is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Partition number.
    pub index: u32,
    /// Byte offset in the disk.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
}

/// Where a removed value still is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RawHit {
    /// What it is (a label, never the value).
    pub what: String,
    /// The partition holding it; `None` outside every partition.
    pub partition: Option<u32>,
    /// Its filesystem ("ext4", …; "" when unknown).
    pub fstype: String,
    /// Filesystem block: `(offset - partition start) / block_size`.
    pub block: Option<u64>,
    /// The filesystem's block size, from its superblock.
    pub block_size: Option<u32>,
    /// Byte offset of the first occurrence in the disk.
    pub offset: u64,
    /// Occurrences of this value in this block.
    pub count: u64,
}

impl RawHit {
    /// "hostname x in partition 1 (ext4) block 7126 (byte 414015488 of the disk)".
    pub fn describe(&self) -> String {
        let times = if self.count > 1 { format!(" ({} times)", self.count) } else { String::new() };
        let place = match (self.partition, self.block) {
            (Some(p), Some(b)) => format!(
                "partition {p} ({}) block {b} of {} bytes",
                if self.fstype.is_empty() { "?" } else { &self.fstype },
                self.block_size.unwrap_or(0)
            ),
            (Some(p), None) => format!("partition {p} (no known filesystem)"),
            _ => "outside every partition".to_string(),
        };
        format!("{}{times} in {place} (byte {} of the disk)", self.what, self.offset)
    }
}

/// The raw pass's result.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RawScan {
    /// Values searched for (needles too short or too generic are not: see `notes`).
    pub needles: usize,
    /// What they are (labels, never values), once each.
    pub searched: Vec<String>,
    /// Bytes of data read (holes are skipped).
    pub bytes: u64,
    /// Wall time.
    pub seconds: f64,
    /// What was found, by offset.
    pub hits: Vec<RawHit>,
    /// Needles not searched for, with why.
    pub notes: Vec<String>,
}

impl RawScan {
    /// An error naming every hit's partition and block (at most 20), if there is any.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.hits.is_empty() {
            return Ok(());
        }
        let shown: Vec<String> = self.hits.iter().take(20).map(|h| format!("  {}", h.describe())).collect();
        let more = if self.hits.len() > 20 { format!("\n  … and {} more", self.hits.len() - 20) } else { String::new() };
        anyhow::bail!(
            "the raw disk image still holds {} copies of what the seal removed (free space or journal not cleared):\n{}{more}",
            self.hits.iter().map(|h| h.count).sum::<u64>(),
            shown.join("\n")
        )
    }
}

/// Data is read in pieces of this size.
const CHUNK: u64 = 16 << 20;
/// Bytes read before a piece, so a hit's left boundary is checked against the real byte.
const BACK: u64 = 64;
/// Distinct hits kept (the count of the rest still goes into the total).
const MAX_HITS: usize = 1000;

struct Piece {
    /// First byte whose hits this piece reports.
    from: u64,
    /// One past the last.
    to: u64,
    /// What is read: `[read_from, read_to)`.
    read_from: u64,
    read_to: u64,
}

/// Searches the data of `disk` for `needles` (their labels name hits). `parts`: the
/// partitions, for naming where a hit is.
pub fn scan(disk: &File, parts: &[Part], needles: &Needles) -> Result<RawScan, RawScanError> {
    let start = Instant::now();
    let mut out = RawScan::default();
    let engine = Engine::new(needles, &mut out.notes, Shapes::No)?;
    let used = engine.needles();
    out.needles = used.len();
    out.searched = labels(needles, &used);
    if engine.is_empty() {
        out.seconds = start.elapsed().as_secs_f64();
        return Ok(out);
    }
    let size = disk.metadata().map_err(|source| RawScanError::Io { op: "stat", offset: 0, source })?.len();
    let extents = crate::io::extents::data_extents(disk, size).map_err(|source| RawScanError::Io { op: "seek in", offset: 0, source })?;
    let overlap = engine.overlap as u64;
    let mut pieces = Vec::new();
    for (s, e) in extents {
        let mut p = s;
        while p < e {
            let to = (p + CHUNK).min(e);
            pieces.push(Piece { from: p, to, read_from: p.saturating_sub(BACK).max(s), read_to: (to + overlap).min(e) });
            out.bytes += to - p;
            p = to;
        }
    }
    let found: Vec<Result<Vec<(u64, NeedleRef)>, RawScanError>> = pieces
        .par_iter()
        .map_init(Vec::new, |buf: &mut Vec<u8>, piece| {
            let len = usize::try_from(piece.read_to - piece.read_from).unwrap_or(usize::MAX);
            buf.resize(len, 0);
            disk.read_exact_at(buf, piece.read_from).map_err(|source| RawScanError::Io { op: "read", offset: piece.read_from, source })?;
            let from = (piece.from - piece.read_from) as usize;
            let limit = (piece.to - piece.read_from) as usize;
            let mut hits = Vec::new();
            engine.needles_in(buf, from, limit, |s, n| hits.push((piece.read_from + s as u64, n)));
            Ok(hits)
        })
        .collect();
    let layout = Layout::read(disk, parts);
    let mut grouped: BTreeMap<(Option<u32>, Option<u64>, String), RawHit> = BTreeMap::new();
    let mut dropped = 0u64;
    for r in found {
        for (offset, needle) in r? {
            let what = label(needles, needle);
            let (partition, fstype, block, block_size) = layout.place(offset);
            let key = (partition, block.or(partition.is_none().then_some(offset)), what.clone());
            if let Some(h) = grouped.get_mut(&key) {
                h.count += 1;
                h.offset = h.offset.min(offset);
            } else if grouped.len() < MAX_HITS {
                grouped.insert(key, RawHit { what, partition, fstype, block, block_size, offset, count: 1 });
            } else {
                dropped += 1;
            }
        }
    }
    out.hits = grouped.into_values().collect();
    out.hits.sort_by_key(|h| h.offset);
    if dropped > 0 {
        out.notes.push(format!("{dropped} more occurrences in other blocks not listed"));
    }
    out.seconds = start.elapsed().as_secs_f64();
    Ok(out)
}

/// The labels of the needles `used`, once each, in order.
fn labels(needles: &Needles, used: &std::collections::BTreeSet<NeedleRef>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in used.iter().copied() {
        let l = label(needles, r);
        if !out.contains(&l) {
            out.push(l);
        }
    }
    out
}

/// The label of a needle (never a secret value).
fn label(needles: &Needles, n: NeedleRef) -> String {
    let get = |v: &[String], i: usize| v.get(i).cloned().unwrap_or_default();
    match n {
        NeedleRef::Hostname(i) => format!("hostname {}", get(&needles.hostnames, i)),
        NeedleRef::Mac(i) => format!("MAC {}", get(&needles.macs, i)),
        NeedleRef::Ip(i) => format!("IP {}", get(&needles.ips, i)),
        NeedleRef::Path(i) => format!("provisioner path {}", get(&needles.paths, i)),
        NeedleRef::Removed(i) => needles.removed.get(i).map(|r| r.label()).unwrap_or_default(),
    }
}

/// The partitions with their filesystem type and block size.
struct Layout(Vec<(Part, String, Option<u32>)>);

impl Layout {
    fn read(disk: &File, parts: &[Part]) -> Self {
        let mut buf = vec![0u8; PROBE_LEN];
        Layout(
            parts
                .iter()
                .map(|p| {
                    buf.fill(0);
                    let want = PROBE_LEN.min(usize::try_from(p.size).unwrap_or(PROBE_LEN));
                    // A partition too short or unreadable has no known block size.
                    let ok = disk.read_exact_at(buf.get_mut(..want).unwrap_or_default(), p.start).is_ok();
                    let (fstype, bs) = if ok { (probe(&buf).fstype, block_size(&buf)) } else { (String::new(), None) };
                    (p.clone(), fstype, bs)
                })
                .collect(),
        )
    }

    /// (partition, fstype, block, block size) of a disk offset.
    fn place(&self, offset: u64) -> (Option<u32>, String, Option<u64>, Option<u32>) {
        match self.0.iter().find(|(p, _, _)| offset >= p.start && offset - p.start < p.size) {
            Some((p, fstype, bs)) => (Some(p.index), fstype.clone(), bs.map(|b| (offset - p.start) / u64::from(b)), *bs),
            None => (None, String::new(), None, None),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::seal::residue::{Removed, RemovedKind};

    const SECRET: &[u8] = b"Zq3vR8tLmN2pXw7YbK4sHd9JfG6cT1aE5uWoQiPz";

    fn needles() -> Needles {
        Needles {
            hostnames: vec!["upstream-builder".into()],
            macs: vec!["52:54:00:12:34:56".into()],
            removed: vec![
                Removed { kind: RemovedKind::AwsSecretKey, bytes: SECRET.to_vec(), from: "/root/.bash_history".into() },
                Removed {
                    kind: RemovedKind::MachineId,
                    bytes: b"b5e2a41ce535ae7857b8d37612f24e8e".to_vec(),
                    from: "/etc/machine-id".into(),
                },
            ],
            ..Needles::default()
        }
    }

    /// A sparse file of `size` bytes with `data` written at each offset.
    fn disk(size: u64, data: &[(u64, &[u8])]) -> (tempfile::NamedTempFile, File) {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(size).unwrap();
        for (off, d) in data {
            f.as_file().write_all_at(d, *off).unwrap();
        }
        let file = f.reopen().unwrap();
        (f, file)
    }

    #[test]
    fn hits_name_partition_block_and_count() {
        let parts = [Part { index: 1, start: 1 << 20, size: 8 << 20 }, Part { index: 2, start: 9 << 20, size: 8 << 20 }];
        let (_f, file) = disk(
            32 << 20,
            &[
                ((1 << 20) + 3 * 4096 + 100, b"export AWS_SECRET_ACCESS_KEY=Zq3vR8tLmN2pXw7YbK4sHd9JfG6cT1aE5uWoQiPz\n"),
                ((1 << 20) + 3 * 4096 + 900, b" Zq3vR8tLmN2pXw7YbK4sHd9JfG6cT1aE5uWoQiPz "),
                ((9 << 20) + 5000, b"\0upstream-builder\n"),
                (20 << 20, b"id=b5e2a41ce535ae7857b8d37612f24e8e\n"),
                // Not a hit: boundaries.
                ((9 << 20) + 9000, b"my-upstream-builder2 b5e2a41ce535ae7857b8d37612f24e8e0 XZq3vR8tLmN2pXw7YbK4sHd9JfG6cT1aE5uWoQiPz"),
            ],
        );
        let r = scan(&file, &parts, &needles()).unwrap();
        let got: Vec<(Option<u32>, Option<u64>, &str, u64)> =
            r.hits.iter().map(|h| (h.partition, h.block, h.what.as_str(), h.count)).collect();
        assert_eq!(
            got,
            vec![
                (Some(1), None, "AWS secret access key (redacted) removed from /root/.bash_history", 2),
                (Some(2), None, "hostname upstream-builder", 1),
                (None, None, "old machine id (redacted) removed from /etc/machine-id", 1),
            ]
        );
        assert_eq!(r.hits[0].offset, (1 << 20) + 3 * 4096 + 100 + 29);
        let err = format!("{:#}", r.check().unwrap_err());
        assert!(err.contains("4 copies") && err.contains("partition 1 (no known filesystem)"), "{err}");
        assert!(!err.contains("Zq3vR8"), "the error shows the secret: {err}");
        // Holes are not read: only the written pages count.
        assert!(r.bytes < 64 << 10, "{} bytes read", r.bytes);
    }

    #[test]
    fn straddling_chunks_and_clean_disks() {
        // A value across a 16 MiB piece boundary, in one data extent that starts at 0.
        let at = CHUNK - 10;
        let mut blob = vec![b'x'; (CHUNK + 4096) as usize];
        blob[at as usize - 1] = b' ';
        blob[at as usize..at as usize + 40].copy_from_slice(SECRET);
        blob[at as usize + 40] = b' ';
        let (_f, file) = disk(CHUNK * 2, &[(0, &blob)]);
        let r = scan(&file, &[], &needles()).unwrap();
        assert_eq!(r.hits.len(), 1, "{:?}", r.hits);
        assert_eq!((r.hits[0].offset, r.hits[0].partition), (at, None));
        assert!(r.hits[0].describe().contains("outside every partition"));
        // Nothing planted: no hit, check passes.
        let (_g, clean) = disk(4 << 20, &[(4096, b"hello localhost")]);
        let r = scan(&clean, &[], &needles()).unwrap();
        assert!(r.hits.is_empty());
        r.check().unwrap();
        assert_eq!(
            r.searched,
            [
                "hostname upstream-builder",
                "MAC 52:54:00:12:34:56",
                "AWS secret access key (redacted) removed from /root/.bash_history",
                "old machine id (redacted) removed from /etc/machine-id"
            ]
        );
        // No needles: nothing read.
        let r = scan(&clean, &[], &Needles::default()).unwrap();
        assert_eq!(r.bytes, 0);
    }

    /// A value left in a free block of a real ext4: the hit names partition and fs block.
    #[test]
    fn free_block_of_an_ext4_named() {
        let dir = tempfile::tempdir().unwrap();
        let fs = dir.path().join("fs.img");
        let tree = dir.path().join("tree");
        std::fs::create_dir(&tree).unwrap();
        std::fs::write(tree.join("placeholder"), b"live data, nothing to see\n").unwrap();
        let made = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-b", "4096", "-d"])
            .arg(&tree)
            .arg(&fs)
            .arg("8M")
            .status()
            .expect("mkfs.ext4 is not installed: run scripts/setup");
        assert!(made.success());
        // The disk: 1 MiB of table space, then the filesystem as partition 3.
        let img = std::fs::read(&fs).unwrap();
        let start = 1u64 << 20;
        // A block debugfs reports free: the last one of the filesystem.
        let block = (img.len() as u64 / 4096) - 1;
        let testb = std::process::Command::new("debugfs").arg("-R").arg(format!("testb {block}")).arg(&fs).output().unwrap();
        assert!(String::from_utf8_lossy(&testb.stdout).contains("not in use"), "{}", String::from_utf8_lossy(&testb.stdout));
        let (_f, file) = disk(start + img.len() as u64, &[(start, &img), (start + block * 4096 + 123, b"\nupstream-builder\n")]);
        let r = scan(&file, &[Part { index: 3, start, size: img.len() as u64 }], &needles()).unwrap();
        assert_eq!(r.hits.len(), 1, "{:?}", r.hits);
        let h = &r.hits[0];
        assert_eq!((h.partition, h.fstype.as_str(), h.block, h.block_size), (Some(3), "ext4", Some(block), Some(4096)));
        let err = format!("{:#}", r.check().unwrap_err());
        assert!(err.contains(&format!("hostname upstream-builder in partition 3 (ext4) block {block} of 4096 bytes")), "{err}");
    }
}
