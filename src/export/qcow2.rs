//! qcow2 (version 3) writer, optionally compressed.
//!
//! Layout: header cluster at 0, then the data clusters in ascending guest order (all-zero
//! clusters and holes stay unallocated: L2 entry 0), then the metadata, written once at the end
//! since the output is seekable: L2 tables (only those with entries), the L1 table, the refcount
//! blocks and the refcount table (which count themselves), and finally the header.
//!
//! Format choices: 64 KiB clusters, 16-bit refcounts, no backing file, no encryption, every
//! feature bit 0, header length 112 with compression type 0 (zlib), as `qemu-img create` writes.
//!
//! Compression: each cluster is compressed on its own as raw deflate (no zlib header) with
//! libdeflate, in parallel on every core, and written in guest order. qemu inflates a cluster with
//! `inflateInit2(-12)` in a single call into a full-cluster buffer, so back-references up to
//! libdeflate's 32 KiB window decode fine (zlib only checks distances against the bytes already
//! produced in that call); miniz_oxide-based readers (imago) do the same. A cluster that does not
//! shrink below the cluster size is stored uncompressed. Compressed clusters are packed back to
//! back at byte granularity, as qemu does (the spec allows a compressed cluster to start inside
//! the last sector of the previous one); each host cluster touched by a compressed cluster gets
//! one reference per compressed cluster touching it, which is what `qemu-img check` counts.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use rayon::prelude::*;

use super::spec::{CLUSTER, DiskSpec, FormatWriter, is_zero};

/// Largest virtual size accepted: 64 TiB. Far above any machine image; it bounds the metadata
/// this writer keeps in memory until `finish` (L1 table ≤ 1 MiB; L2 tables 64 KiB per 512 MiB of
/// guest space holding data, i.e. ≤ 8 GiB only for a fully written 64 TiB disk; refcounts 2 bytes
/// per 64 KiB host cluster) and keeps every host offset well inside the 54-bit field of a
/// compressed cluster descriptor.
pub const MAX_SIZE: u64 = 64 << 40;

/// Options of the qcow2 writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Qcow2Options {
    /// Compress clusters (like `qemu-img convert -c`).
    pub compress: bool,
    /// libdeflate level, 1 (fastest) to 12 (smallest); 0 is taken as 1 and values above 12 as 12.
    /// 6 matches zlib's default ratio; 4–5 trade about 1 % of size for speed.
    pub level: u32,
}

impl Default for Qcow2Options {
    fn default() -> Self {
        Self { compress: false, level: 5 }
    }
}

const CLUSTER_BITS: u32 = 16;
const C: usize = CLUSTER as usize;
/// L2 entries per L2 table (8-byte entries in one cluster).
const L2_ENTRIES: u64 = CLUSTER / 8;
/// Refcount entries per refcount block (16-bit entries in one cluster).
const RB_ENTRIES: u64 = CLUSTER / 2;
const COPIED: u64 = 1 << 63;
const COMPRESSED: u64 = 1 << 62;
/// Bit where the compressed descriptor's sector count starts: x = 62 − (cluster_bits − 8).
const CSIZE_SHIFT: u32 = 62 - (CLUSTER_BITS - 8);
const HEADER_LENGTH: u32 = 112;

/// Empties `file` only when it is not empty already: truncating an ext4 file to zero arms
/// `auto_da_alloc`, which makes the final `close` flush every dirty page synchronously.
fn truncate_if_needed(file: &File) -> io::Result<()> {
    if file.metadata()?.len() != 0 {
        file.set_len(0)?;
    }
    Ok(())
}

fn ioerr(msg: String) -> io::Error {
    io::Error::other(msg)
}

/// Writes a qcow2 image; see the module documentation.
pub struct Qcow2Writer {
    file: File,
    size: u64,
    compress: bool,
    level: i32,
    /// L2 tables by L1 index (only those with an entry exist).
    l2: Vec<Option<Box<[u64]>>>,
    /// Refcount of every host cluster from 0 to the end of the data.
    refs: Vec<u16>,
    /// Next free byte of the file (cluster aligned unless compressed data ends there).
    pos: u64,
    /// Output assembled by one `write` call in compressed mode.
    out: Vec<u8>,
    /// Allocate data runs before writing them (ext4 and the like; not XFS/btrfs).
    prealloc: bool,
}

impl Qcow2Writer {
    /// Starts a qcow2 image in `file` (emptied first if it is not empty) for `spec`, with `opts`.
    pub fn new(file: File, spec: &DiskSpec, opts: &Qcow2Options) -> io::Result<Self> {
        if spec.size > MAX_SIZE {
            return Err(ioerr(format!(
                "disk of {} bytes is larger than the qcow2 writer's maximum of {MAX_SIZE} bytes (64 TiB)",
                spec.size
            )));
        }
        truncate_if_needed(&file)?;
        let prealloc = !super::copy::clones(&file);
        let l1_size = spec.size.div_ceil(CLUSTER * L2_ENTRIES) as usize;
        Ok(Self {
            file,
            size: spec.size,
            compress: opts.compress,
            level: opts.level.clamp(1, 12) as i32,
            l2: (0..l1_size).map(|_| None).collect(),
            refs: vec![1], // the header cluster
            pos: CLUSTER,
            out: Vec::new(),
            prealloc,
        })
    }

    fn set_l2(&mut self, guest: u64, entry: u64) {
        let cluster = guest / CLUSTER;
        let t = self.l2[(cluster / L2_ENTRIES) as usize].get_or_insert_with(|| vec![0u64; L2_ENTRIES as usize].into_boxed_slice());
        t[(cluster % L2_ENTRIES) as usize] = entry;
    }

    /// Adds one reference to every host cluster in `[start, end)`.
    fn add_refs(&mut self, start: u64, end: u64) -> io::Result<()> {
        let (first, last) = ((start / CLUSTER) as usize, ((end - 1) / CLUSTER) as usize);
        if self.refs.len() <= last {
            self.refs.resize(last + 1, 0);
        }
        for r in &mut self.refs[first..=last] {
            *r = r.checked_add(1).ok_or_else(|| ioerr(format!("refcount overflow at host cluster {first}")))?;
        }
        Ok(())
    }

    fn write_plain(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let n = data.len().div_ceil(C);
        let mut run: Option<usize> = None;
        for i in 0..=n {
            let nonzero = i < n && !is_zero(&data[i * C..((i + 1) * C).min(data.len())]);
            match (nonzero, run) {
                (true, None) => run = Some(i),
                (false, Some(r)) => {
                    run = None;
                    let host = self.pos;
                    if self.prealloc {
                        super::copy::preallocate(&self.file, host, ((i - r) * C) as u64)
                            .map_err(|e| io::Error::new(e.kind(), format!("allocating qcow2 data at offset {host}: {e}")))?;
                    }
                    self.file
                        .write_all_at(&data[r * C..(i * C).min(data.len())], host)
                        .map_err(|e| io::Error::new(e.kind(), format!("writing qcow2 data at offset {host}: {e}")))?;
                    for k in r..i {
                        let h = host + ((k - r) * C) as u64;
                        self.set_l2(offset + (k * C) as u64, h | COPIED);
                        self.add_refs(h, h + CLUSTER)?;
                    }
                    self.pos += ((i - r) * C) as u64;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn write_compressed(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let level = self.level;
        let clusters: Vec<(usize, &[u8])> = data.chunks(C).enumerate().filter(|(_, c)| !is_zero(c)).collect();
        let packed: Vec<Option<Vec<u8>>> = clusters.par_iter().map(|&(_, c)| compress_cluster(c, level)).collect::<io::Result<_>>()?;
        let start = self.pos;
        self.out.clear();
        for ((i, raw), z) in clusters.into_iter().zip(packed) {
            let guest = offset + (i * C) as u64;
            match z {
                Some(z) => {
                    let host = self.pos;
                    let last_sector = (host + z.len() as u64 - 1) / 512;
                    let extra = last_sector - host / 512;
                    self.set_l2(guest, COMPRESSED | (extra << CSIZE_SHIFT) | host);
                    self.add_refs(host, host + z.len() as u64)?;
                    self.out.extend_from_slice(&z);
                    self.pos += z.len() as u64;
                }
                None => {
                    let host = self.pos.div_ceil(CLUSTER) * CLUSTER;
                    self.out.resize((host - start) as usize, 0);
                    self.out.extend_from_slice(raw);
                    self.out.resize((host + CLUSTER - start) as usize, 0);
                    self.set_l2(guest, host | COPIED);
                    self.add_refs(host, host + CLUSTER)?;
                    self.pos = host + CLUSTER;
                }
            }
        }
        if !self.out.is_empty() {
            self.file
                .write_all_at(&self.out, start)
                .map_err(|e| io::Error::new(e.kind(), format!("writing qcow2 data at offset {start}: {e}")))?;
        }
        Ok(())
    }
}

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, libdeflater::Compressor)>> = const { RefCell::new(None) };
}

/// Raw-deflates one cluster (a short last cluster is zero-padded to a full one, since readers
/// expect a whole cluster out). `None` when the result would not be smaller than a cluster.
fn compress_cluster(c: &[u8], level: i32) -> io::Result<Option<Vec<u8>>> {
    let padded;
    let input = if c.len() < C {
        let mut p = vec![0u8; C];
        p[..c.len()].copy_from_slice(c);
        padded = p;
        &padded[..]
    } else {
        c
    };
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            let lvl = libdeflater::CompressionLvl::new(level).map_err(|e| ioerr(format!("bad compression level {level}: {e:?}")))?;
            *slot = Some((level, libdeflater::Compressor::new(lvl)));
        }
        let Some((_, comp)) = slot.as_mut() else {
            return Err(ioerr("compressor missing".into()));
        };
        let mut out = vec![0u8; C - 1];
        match comp.deflate_compress(input, &mut out) {
            Ok(n) => {
                out.truncate(n);
                Ok(Some(out))
            }
            Err(libdeflater::CompressionError::InsufficientSpace) => Ok(None),
        }
    })
}

/// Where the metadata goes, in host clusters.
struct Layout {
    l2: u64,
    l1: u64,
    rb: u64,
    rb_count: u64,
    rt: u64,
    rt_clusters: u64,
    total: u64,
}

fn layout(data_clusters: u64, l2_count: u64, l1_size: u64) -> Layout {
    let l1_clusters = (l1_size * 8).div_ceil(CLUSTER);
    let fixed = data_clusters + l2_count + l1_clusters;
    let (mut rb_count, mut rt_clusters) = (1u64, 1u64);
    // The refcount structures count themselves: grow until they cover everything.
    loop {
        let total = fixed + rb_count + rt_clusters;
        let rb = total.div_ceil(RB_ENTRIES);
        let rt = (rb * 8).div_ceil(CLUSTER).max(1);
        if rb == rb_count && rt == rt_clusters {
            break;
        }
        (rb_count, rt_clusters) = (rb.max(rb_count), rt.max(rt_clusters));
    }
    let l2 = data_clusters;
    let l1 = l2 + l2_count;
    let rb = l1 + l1_clusters;
    let rt = rb + rb_count;
    Layout { l2, l1, rb, rb_count, rt, rt_clusters, total: rt + rt_clusters }
}

impl FormatWriter for Qcow2Writer {
    fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        if !offset.is_multiple_of(CLUSTER) || offset + data.len() as u64 > self.size {
            return Err(ioerr(format!("qcow2: bad chunk at {offset}+{} for a disk of {} bytes", data.len(), self.size)));
        }
        if self.compress { self.write_compressed(offset, data) } else { self.write_plain(offset, data) }
    }

    fn compresses(&self) -> bool {
        self.compress
    }

    fn finish(mut self: Box<Self>) -> io::Result<()> {
        let data_clusters = self.pos.div_ceil(CLUSTER);
        self.refs.resize(data_clusters as usize, 0);
        let l1_size = self.l2.len() as u64;
        let l2_count = self.l2.iter().filter(|t| t.is_some()).count() as u64;
        let lay = layout(data_clusters, l2_count, l1_size);
        let mut meta = vec![0u8; ((lay.total - lay.l2) * CLUSTER) as usize];
        let at = |cluster: u64| ((cluster - lay.l2) * CLUSTER) as usize;
        // L2 tables and the L1 table.
        let mut next_l2 = lay.l2;
        for (i, t) in self.l2.iter().enumerate() {
            let Some(t) = t else { continue };
            let base = at(next_l2);
            for (k, e) in t.iter().enumerate() {
                meta[base + k * 8..base + k * 8 + 8].copy_from_slice(&e.to_be_bytes());
            }
            let l1e = (next_l2 * CLUSTER) | COPIED;
            let o = at(lay.l1) + i * 8;
            meta[o..o + 8].copy_from_slice(&l1e.to_be_bytes());
            next_l2 += 1;
        }
        // Refcount blocks: data clusters as counted, metadata clusters 1.
        for h in 0..lay.total {
            let r = self.refs.get(h as usize).copied().unwrap_or(1);
            let o = at(lay.rb) + (h * 2) as usize;
            meta[o..o + 2].copy_from_slice(&r.to_be_bytes());
        }
        for b in 0..lay.rb_count {
            let o = at(lay.rt) + (b * 8) as usize;
            meta[o..o + 8].copy_from_slice(&((lay.rb + b) * CLUSTER).to_be_bytes());
        }
        let mo = lay.l2 * CLUSTER;
        self.file.write_all_at(&meta, mo).map_err(|e| io::Error::new(e.kind(), format!("writing qcow2 metadata at offset {mo}: {e}")))?;

        let mut h = [0u8; HEADER_LENGTH as usize + 8]; // + the header extension end marker (zeros)
        h[0..4].copy_from_slice(b"QFI\xfb");
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        h[20..24].copy_from_slice(&CLUSTER_BITS.to_be_bytes());
        h[24..32].copy_from_slice(&self.size.to_be_bytes());
        h[36..40].copy_from_slice(&u32::try_from(l1_size).map_err(|_| ioerr("L1 table too large".into()))?.to_be_bytes());
        let l1_offset = if l1_size == 0 { 0 } else { lay.l1 * CLUSTER };
        h[40..48].copy_from_slice(&l1_offset.to_be_bytes());
        h[48..56].copy_from_slice(&(lay.rt * CLUSTER).to_be_bytes());
        h[56..60].copy_from_slice(&u32::try_from(lay.rt_clusters).map_err(|_| ioerr("refcount table too large".into()))?.to_be_bytes());
        h[96..100].copy_from_slice(&4u32.to_be_bytes()); // refcount_order: 16-bit
        h[100..104].copy_from_slice(&HEADER_LENGTH.to_be_bytes());
        // 104: compression type 0 (zlib) + padding; 112..120: end-of-extensions marker.
        self.file.write_all_at(&h, 0).map_err(|e| io::Error::new(e.kind(), format!("writing the qcow2 header: {e}")))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::export::feed::feed;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    const MIB: u64 = 1 << 20;

    use crate::export::spec::test_noise as noise;

    /// Compressible bytes: text-like lines with a counter.
    fn text(len: usize, seed: u64) -> Vec<u8> {
        let mut v = Vec::with_capacity(len + 64);
        let mut i = seed;
        while v.len() < len {
            v.extend_from_slice(format!("line {i:08} of some fairly repetitive log output\n").as_bytes());
            i += 1;
        }
        v.truncate(len);
        v
    }

    enum Fill {
        Noise,
        Text,
        Zeros,
    }

    /// A sparse raw file of `size` bytes with the given regions written, holes elsewhere.
    fn make_raw(path: &Path, size: u64, regions: &[(u64, u64, Fill)]) -> File {
        let f = File::options().read(true).write(true).create(true).truncate(true).open(path).unwrap();
        f.set_len(size).unwrap();
        for (i, (o, l, fill)) in regions.iter().enumerate() {
            let b = match fill {
                Fill::Noise => {
                    let mut b = vec![0u8; *l as usize];
                    noise(&mut b, 0x51_7cc1_b727_220a + i as u64);
                    b
                }
                Fill::Text => text(*l as usize, i as u64 * 1000),
                Fill::Zeros => vec![0u8; *l as usize],
            };
            f.write_all_at(&b, *o).unwrap();
        }
        f
    }

    fn spec(size: u64) -> DiskSpec {
        DiskSpec { size, epoch: 1_700_000_000, digest: [0x17; 32], name: "disk".into() }
    }

    fn qemu(args: &[&str]) -> (i32, String, String) {
        let o = Command::new("qemu-img").args(args).output().expect("qemu-img");
        (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
    }

    fn write(raw: &File, spec: &DiskSpec, opts: &Qcow2Options, out: &Path) {
        let f = File::options().read(true).write(true).create(true).truncate(true).open(out).unwrap();
        let mut w = Box::new(Qcow2Writer::new(f, spec, opts).unwrap());
        feed(raw, spec.size, &mut [w.as_mut() as &mut dyn FormatWriter], &|| false).unwrap();
        w.finish().unwrap();
    }

    /// Runs every qemu-img oracle on `out` and returns the `qemu-img map` entries.
    fn verify(raw_p: &Path, out: &Path, size: u64) -> Vec<serde_json::Value> {
        let o = out.to_str().unwrap();
        let (rc, js, err) = qemu(&["check", "-f", "qcow2", "--output=json", o]);
        assert_eq!(rc, 0, "qemu-img check: {js}{err}");
        let v: serde_json::Value = serde_json::from_str(&js).unwrap();
        for k in ["leaks", "corruptions", "check-errors", "leaks-fixed", "corruptions-fixed"] {
            assert!(v.get(k).is_none_or(|x| x.as_u64() == Some(0)), "{k} in {js}");
        }
        let (rc, js, err) = qemu(&["info", "-f", "qcow2", "--output=json", o]);
        assert_eq!(rc, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&js).unwrap();
        assert_eq!(v["virtual-size"].as_u64(), Some(size));
        assert_eq!(v["format-specific"]["data"]["compat"].as_str(), Some("1.1"));
        assert_eq!(v["cluster-size"].as_u64(), Some(CLUSTER));
        let (rc, so, se) = qemu(&["compare", "-f", "raw", "-F", "qcow2", raw_p.to_str().unwrap(), o]);
        assert_eq!(rc, 0, "qemu-img compare: {so}{se}");
        let (rc, js, err) = qemu(&["map", "-f", "qcow2", "--output=json", o]);
        assert_eq!(rc, 0, "{err}");
        serde_json::from_str::<serde_json::Value>(&js).unwrap().as_array().unwrap().clone()
    }

    /// True when `qemu-img map` says `[start, start+len)` holds no data.
    fn unallocated(map: &[serde_json::Value], start: u64, len: u64) -> bool {
        map.iter().all(|e| {
            let (s, l) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
            let overlaps = s < start + len && start < s + l;
            !overlaps || (e["data"] == serde_json::Value::Bool(false) && e["zero"] == serde_json::Value::Bool(true))
        })
    }

    const SMALL: u64 = 37 * MIB + 3 * 512;

    fn small(dir: &Path) -> (PathBuf, File) {
        let p = dir.join("small.raw");
        let f = make_raw(
            &p,
            SMALL,
            &[
                (0, 3 * MIB, Fill::Noise),
                (3 * MIB, 2 * MIB, Fill::Text),
                (5 * MIB, 4 * MIB, Fill::Zeros),
                (20 * MIB + 4096, 70_000, Fill::Text),
                (24 * MIB, 6 * MIB, Fill::Text),
                (33 * MIB, 65536, Fill::Noise),
                (SMALL - 1000, 1000, Fill::Text),
            ],
        );
        (p, f)
    }

    fn plain() -> Qcow2Options {
        Qcow2Options { compress: false, level: 5 }
    }

    fn packed() -> Qcow2Options {
        Qcow2Options { compress: true, level: 5 }
    }

    #[test]
    fn layout_fixed_point() {
        let l = layout(10, 1, 1);
        assert_eq!((l.l2, l.l1, l.rb, l.rb_count, l.rt, l.total), (10, 11, 12, 1, 13, 14));
        // Exactly at the boundary of one refcount block: the refcount structures spill over.
        let l = layout(RB_ENTRIES - 3, 0, 1);
        assert_eq!((l.rb_count, l.total), (1, RB_ENTRIES));
        let l = layout(RB_ENTRIES - 2, 0, 1);
        assert_eq!((l.rb_count, l.total), (2, RB_ENTRIES + 2));
        assert!(l.total <= l.rb_count * RB_ENTRIES);
        let l = layout(40 * RB_ENTRIES * 1000, 100, 1);
        assert!(l.total <= l.rb_count * RB_ENTRIES && l.rt_clusters * CLUSTER >= l.rb_count * 8);
    }

    #[test]
    fn plain_small() {
        let dir = tempfile::tempdir().unwrap();
        let (raw_p, raw) = small(dir.path());
        let out = dir.path().join("p.qcow2");
        write(&raw, &spec(SMALL), &plain(), &out);
        let map = verify(&raw_p, &out, SMALL);
        assert!(unallocated(&map, 5 * MIB, 4 * MIB), "written zeros stay unallocated: {map:?}");
        assert!(unallocated(&map, 9 * MIB, 11 * MIB), "holes stay unallocated");
        // Host file: header + 3+2 MiB + 2 clusters (70 000 bytes at +4096) + 6 MiB + 1 + 1 last, + 4 metadata clusters.
        let data_clusters = (5 * MIB + 6 * MIB) / CLUSTER + 2 + 1 + 1;
        assert_eq!(std::fs::metadata(&out).unwrap().len(), (1 + data_clusters + 4) * CLUSTER);
        // Determinism.
        let out2 = dir.path().join("p2.qcow2");
        write(&raw, &spec(SMALL), &plain(), &out2);
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&out2).unwrap());
    }

    #[test]
    fn compressed_small() {
        let dir = tempfile::tempdir().unwrap();
        let (raw_p, raw) = small(dir.path());
        let out = dir.path().join("c.qcow2");
        write(&raw, &spec(SMALL), &packed(), &out);
        let map = verify(&raw_p, &out, SMALL);
        assert!(unallocated(&map, 5 * MIB, 4 * MIB), "written zeros stay unallocated: {map:?}");
        let outp = dir.path().join("p.qcow2");
        write(&raw, &spec(SMALL), &plain(), &outp);
        let (c, p) = (std::fs::metadata(&out).unwrap().len(), std::fs::metadata(&outp).unwrap().len());
        assert!(c < p - 7 * MIB, "compressed {c} vs plain {p}");
        // The L2 entries mix compressed descriptors and (for the noise) plain COPIED clusters.
        let f = File::open(&out).unwrap();
        let mut h = [0u8; 112];
        f.read_exact_at(&mut h, 0).unwrap();
        let l1_off = u64::from_be_bytes(h[40..48].try_into().unwrap());
        let mut e = [0u8; 8];
        f.read_exact_at(&mut e, l1_off).unwrap();
        let l2_off = u64::from_be_bytes(e) & !COPIED;
        let mut l2 = vec![0u8; C];
        f.read_exact_at(&mut l2, l2_off).unwrap();
        let ent: Vec<u64> = l2.chunks(8).map(|c| u64::from_be_bytes(c.try_into().unwrap())).collect();
        assert!(ent[..48].iter().all(|e| e & COPIED != 0 && e & COMPRESSED == 0), "noise is stored plain");
        assert!(ent[48..80].iter().all(|e| e & COMPRESSED != 0 && e & COPIED == 0), "text is compressed");
        assert!(ent[80..144].iter().all(|&e| e == 0), "zeros and holes unallocated");
        // Compressed clusters are packed back to back: each one ends in the sector its
        // descriptor names, exactly where the next one starts.
        let off = |e: u64| e & ((1 << CSIZE_SHIFT) - 1);
        let extra = |e: u64| (e >> CSIZE_SHIFT) & 0xff;
        for w in ent[48..80].windows(2) {
            assert!(off(w[1]) > off(w[0]));
            assert_eq!((off(w[1]) - 1) / 512, off(w[0]) / 512 + extra(w[0]), "{:x} {:x}", w[0], w[1]);
        }
        // Determinism (parallel compression, ordered output).
        let out2 = dir.path().join("c2.qcow2");
        write(&raw, &spec(SMALL), &packed(), &out2);
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&out2).unwrap());
    }

    fn big(dir: &Path) -> (PathBuf, File, u64) {
        // > 1 GiB virtual: three L2 tables in use, one (512 MiB..1 GiB) holding only zeros.
        let size = 1600 * MIB + 512;
        let p = dir.join("big.raw");
        let f = make_raw(
            &p,
            size,
            &[
                (0, MIB, Fill::Text),
                (511 * MIB, 2 * MIB, Fill::Noise),
                (700 * MIB, MIB, Fill::Zeros),
                (1100 * MIB + 3 * 65536, 200_000, Fill::Text),
                (size - 512, 512, Fill::Noise),
            ],
        );
        (p, f, size)
    }

    #[test]
    fn plain_big_sparse() {
        let dir = tempfile::tempdir().unwrap();
        let (raw_p, raw, size) = big(dir.path());
        let out = dir.path().join("p.qcow2");
        write(&raw, &spec(size), &plain(), &out);
        let map = verify(&raw_p, &out, size);
        assert!(unallocated(&map, 513 * MIB, 587 * MIB));
        let mut h = [0u8; 112];
        File::open(&out).unwrap().read_exact_at(&mut h, 0).unwrap();
        assert_eq!(u32::from_be_bytes(h[36..40].try_into().unwrap()), 4, "l1_size");
    }

    #[test]
    fn compressed_big_sparse() {
        let dir = tempfile::tempdir().unwrap();
        let (raw_p, raw, size) = big(dir.path());
        let out = dir.path().join("c.qcow2");
        write(&raw, &spec(size), &packed(), &out);
        let map = verify(&raw_p, &out, size);
        assert!(unallocated(&map, 513 * MIB, 587 * MIB));
    }

    #[test]
    fn empty_and_tiny_disks() {
        let dir = tempfile::tempdir().unwrap();
        for (size, opts) in [(0, plain()), (512, packed()), (CLUSTER, plain())] {
            let p = dir.path().join("t.raw");
            let raw = make_raw(&p, size, &[]);
            let out = dir.path().join("t.qcow2");
            write(&raw, &spec(size), &opts, &out);
            verify(&p, &out, size);
        }
    }

    #[test]
    fn refuses_too_big() {
        let dir = tempfile::tempdir().unwrap();
        let f = File::create(dir.path().join("x")).unwrap();
        assert!(Qcow2Writer::new(f, &spec(MAX_SIZE + 512), &plain()).is_err());
    }
}
