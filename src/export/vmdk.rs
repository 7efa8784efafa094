//! streamOptimized VMDK writer (VMware "Virtual Disk Format" 1.1/5.0, header version 3).
//!
//! The writer is purely sequential: it only calls [`Write`] on its output, never seeks, so it can
//! stream straight into a tar member (OVA) or a pipe. Layout, in the canonical stream order:
//!
//! 1. sector 0: sparse header (gdOffset = GD_AT_END), sectors 1..=20: descriptor, zero fill to
//!    sector 128 (`overHead`);
//! 2. per 512-grain table with at least one non-zero grain: the grain markers in ascending LBA
//!    order, then a GT marker and the 512-entry GT;
//! 3. GD marker + GD, FOOTER marker + footer (header copy with the real gdOffset), EOS marker.
//!
//! Grains are zlib (RFC 1950) streams made by libdeflate at level [`LEVEL`], compressed in
//! parallel on the rayon pool, [`BATCH_GRAINS`] grains at a time (bounded memory).

use std::cell::RefCell;
use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

use rayon::prelude::*;

use super::spec::{CLUSTER, DiskSpec, FormatWriter, is_zero};

/// Bytes in a sector.
pub const SECTOR: u64 = 512;
/// Sectors per grain (64 KiB grains, equal to [`CLUSTER`]).
pub const GRAIN_SECTORS: u64 = 128;
/// Grain table entries per grain table.
pub const GTES_PER_GT: u64 = 512;
/// Sectors reserved for the embedded descriptor (as qemu and open-vmdk do).
pub const DESCRIPTOR_SECTORS: u64 = 20;
/// Sector where grain data starts (`overHead`): one grain.
pub const OVERHEAD_SECTORS: u64 = 128;
/// `gdOffset` value meaning "the grain directory is at the end; read the footer".
pub const GD_AT_END: u64 = u64::MAX;
/// Header flags: newline test valid (bit 0), compressed grains (bit 16), markers (bit 17).
pub const FLAGS: u32 = 0x0003_0001;
/// `magicNumber` ("KDMV" on disk).
pub const MAGIC: u32 = 0x564D_444B;
/// Marker types.
pub const MARKER_EOS: u32 = 0;
/// Grain table marker type.
pub const MARKER_GT: u32 = 1;
/// Grain directory marker type.
pub const MARKER_GD: u32 = 2;
/// Footer marker type.
pub const MARKER_FOOTER: u32 = 3;
/// libdeflate compression level. Chosen by measurement on a 2 GiB Ubuntu-like cloud image (508 MB
/// of data), single core: level 4 = 162 MB/s, 1.003× qemu's size; level 6 = 118 MB/s, 0.98×;
/// level 9 = 30 MB/s, 0.975×. zlib-rs (flate2) level 6 = 75 MB/s, 1.01×. Level 6 gives the
/// smallest output at a speed that keeps the export far under half of qemu-img's time.
pub const LEVEL: i32 = 6;
/// Grains compressed per parallel batch (4 MiB of input; the compressed output of one batch is at
/// most ~4.1 MiB, so the writer's own memory stays in the single-digit MiB).
pub const BATCH_GRAINS: usize = 64;

/// Largest virtual size accepted: 2016 GiB (2 TiB − 32 GiB).
///
/// Every grain table entry, grain directory entry and the footer's gdOffset are **u32 sector
/// numbers of the output file**, so the whole .vmdk must stay below 2^32 sectors (2 TiB). The
/// output size depends on how well the data compresses; in the worst case (incompressible data)
/// a 64 KiB grain takes 12 bytes of marker + 65 552 bytes of stored-block zlib stream = 129
/// sectors, plus 5 sectors of GT per 512 grains. 2016 GiB of incompressible data therefore needs
/// 33 030 144 × 129.01 + GD ≈ 4.26 × 10^9 sectors < 2^32, so any input under this limit fits.
/// (2 TiB − 1 MiB would only fit when the data compresses.) The writer also checks every offset
/// it records, so a violation can never produce a corrupt file, only an error.
pub const MAX_SIZE: u64 = 2016 * 1024 * 1024 * 1024;

/// Disk adapter the descriptor (and the OVF controller) advertise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Adapter {
    /// LSI Logic parallel SCSI (`ddb.adapterType = "lsilogic"`).
    #[default]
    LsiLogic,
    /// VMware paravirtual SCSI. The descriptor says `lsilogic` (pvscsi is not a valid ddb value);
    /// the OVF controller says `VirtualSCSI`.
    PvScsi,
    /// IDE (`ddb.adapterType = "ide"`, geometry 16 heads / 63 sectors).
    Ide,
}

impl Adapter {
    /// The command-line name: "lsilogic", "pvscsi" or "ide".
    pub fn name(self) -> &'static str {
        match self {
            Adapter::LsiLogic => "lsilogic",
            Adapter::PvScsi => "pvscsi",
            Adapter::Ide => "ide",
        }
    }

    /// The `ddb.adapterType` value.
    pub fn ddb_adapter_type(self) -> &'static str {
        match self {
            Adapter::LsiLogic | Adapter::PvScsi => "lsilogic",
            Adapter::Ide => "ide",
        }
    }

    /// Geometry `(cylinders, heads, sectors)` for a disk of `capacity` sectors: IDE 16/63, others
    /// 255/63; cylinders = ceil(capacity / (heads × sectors)) capped at 65535.
    pub fn geometry(self, capacity: u64) -> (u64, u64, u64) {
        let (heads, sectors) = match self {
            Adapter::Ide => (16, 63),
            Adapter::LsiLogic | Adapter::PvScsi => (255, 63),
        };
        (capacity.div_ceil(heads * sectors).min(65535), heads, sectors)
    }
}

impl fmt::Display for Adapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Adapter {
    type Err = io::Error;
    fn from_str(s: &str) -> io::Result<Self> {
        match s {
            "lsilogic" => Ok(Adapter::LsiLogic),
            "pvscsi" => Ok(Adapter::PvScsi),
            "ide" => Ok(Adapter::Ide),
            _ => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("unknown disk adapter {s:?} (expected lsilogic, pvscsi or ide)"))),
        }
    }
}

/// Options of the VMDK writer.
#[derive(Debug, Clone)]
pub struct VmdkOptions {
    /// Adapter advertised by `ddb.adapterType` (and the geometry).
    pub adapter: Adapter,
    /// `ddb.virtualHWVersion` (default 4, as qemu and open-vmdk write).
    pub hw_version: u32,
    /// Add `ddb.toolsInstallType` / `ddb.toolsVersion` (default false: they broke VirtualBox 5.2
    /// and VMware Player imports).
    pub tools_lines: bool,
}

impl Default for VmdkOptions {
    fn default() -> Self {
        VmdkOptions { adapter: Adapter::LsiLogic, hw_version: 4, tools_lines: false }
    }
}

/// The embedded descriptor text for `spec` (exact bytes written at sector 1, before NUL padding).
pub fn descriptor(spec: &DiskSpec, opts: &VmdkOptions, extent_file_name: &str) -> io::Result<String> {
    if extent_file_name.is_empty() || extent_file_name.chars().any(|c| c == '"' || c == '/' || c.is_control()) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid VMDK extent file name {extent_file_name:?}")));
    }
    let capacity = spec.size / SECTOR;
    let (cyl, heads, secs) = opts.adapter.geometry(capacity);
    let long: String = spec.uuid("vmdk-long").iter().map(|b| format!("{b:02x}")).collect();
    let mut d = format!(
        "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID={cid:08x}\nparentCID=ffffffff\ncreateType=\"streamOptimized\"\n\n\
         # Extent description\nRW {capacity} SPARSE \"{extent_file_name}\"\n\n\
         # The Disk Data Base\n#DDB\n\n\
         ddb.adapterType = \"{adapter}\"\nddb.geometry.cylinders = \"{cyl}\"\nddb.geometry.heads = \"{heads}\"\n\
         ddb.geometry.sectors = \"{secs}\"\nddb.longContentID = \"{long}\"\nddb.virtualHWVersion = \"{hw}\"\n",
        cid = spec.cid(),
        adapter = opts.adapter.ddb_adapter_type(),
        hw = opts.hw_version,
    );
    if opts.tools_lines {
        d.push_str("ddb.toolsInstallType = \"4\"\nddb.toolsVersion = \"2147483647\"\n");
    }
    if d.len() as u64 > DESCRIPTOR_SECTORS * SECTOR {
        return Err(io::Error::other(format!("VMDK descriptor too long ({} bytes)", d.len())));
    }
    Ok(d)
}

/// The 512-byte sparse extent header (also the footer, with the real `gd_offset`).
pub fn header_bytes(capacity: u64, gd_offset: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&3u32.to_le_bytes());
    h[8..12].copy_from_slice(&FLAGS.to_le_bytes());
    h[12..20].copy_from_slice(&capacity.to_le_bytes());
    h[20..28].copy_from_slice(&GRAIN_SECTORS.to_le_bytes());
    h[28..36].copy_from_slice(&1u64.to_le_bytes());
    h[36..44].copy_from_slice(&DESCRIPTOR_SECTORS.to_le_bytes());
    h[44..48].copy_from_slice(&(GTES_PER_GT as u32).to_le_bytes());
    // rgdOffset (48..56) = 0.
    h[56..64].copy_from_slice(&gd_offset.to_le_bytes());
    h[64..72].copy_from_slice(&OVERHEAD_SECTORS.to_le_bytes());
    // uncleanShutdown (72) = 0.
    h[73..77].copy_from_slice(b"\n \r\n");
    h[77..79].copy_from_slice(&1u16.to_le_bytes());
    h
}

/// A metadata marker sector (`numSectors`, size 0, `type`).
fn metadata_marker(num_sectors: u64, kind: u32) -> [u8; 512] {
    let mut m = [0u8; 512];
    m[0..8].copy_from_slice(&num_sectors.to_le_bytes());
    m[12..16].copy_from_slice(&kind.to_le_bytes());
    m
}

thread_local! {
    static COMPRESSOR: RefCell<Option<libdeflater::Compressor>> = const { RefCell::new(None) };
}

/// A whole grain marker (12-byte header + zlib stream, zero-padded to 512) for `data` at grain
/// `lba` (sectors), or `None` when `data` is all zeros.
fn grain_marker(lba: u64, data: &[u8]) -> io::Result<Option<Vec<u8>>> {
    if is_zero(data) {
        return Ok(None);
    }
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let c = match &mut *slot {
            Some(c) => c,
            None => {
                let lvl =
                    libdeflater::CompressionLvl::new(LEVEL).map_err(|e| io::Error::other(format!("libdeflate level {LEVEL}: {e:?}")))?;
                slot.insert(libdeflater::Compressor::new(lvl))
            }
        };
        let bound = c.zlib_compress_bound(data.len());
        let mut out = vec![0u8; (12 + bound).next_multiple_of(SECTOR as usize)];
        let n = c.zlib_compress(data, &mut out[12..]).map_err(|e| io::Error::other(format!("compressing grain at sector {lba}: {e}")))?;
        out[0..8].copy_from_slice(&lba.to_le_bytes());
        out[8..12].copy_from_slice(&(n as u32).to_le_bytes());
        let total = (12 + n).next_multiple_of(SECTOR as usize);
        out[12 + n..total].fill(0);
        out.truncate(total);
        Ok(Some(out))
    })
}

/// Writes a streamOptimized VMDK sequentially into `W`.
pub struct VmdkWriter<W: Write + Send> {
    out: W,
    /// Bytes written so far (always a multiple of 512 between calls).
    pos: u64,
    size: u64,
    capacity: u64,
    /// Next offset `write` may be called with.
    next_offset: u64,
    /// Index of the grain table being filled, and its entries.
    gt_index: u64,
    gt: Vec<u32>,
    gt_used: bool,
    gd: Vec<u32>,
}

impl<W: Write + Send> VmdkWriter<W> {
    /// Writes the header, the descriptor and the zero fill up to sector 128.
    pub fn new(mut out: W, spec: &DiskSpec, opts: &VmdkOptions, extent_file_name: &str) -> io::Result<Self> {
        if spec.size == 0 || !spec.size.is_multiple_of(SECTOR) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("VMDK size {} is not a positive multiple of 512", spec.size)));
        }
        if spec.size > MAX_SIZE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("disk size {} exceeds the streamOptimized VMDK limit of {MAX_SIZE} bytes (32-bit sector offsets)", spec.size),
            ));
        }
        let capacity = spec.size / SECTOR;
        let desc = descriptor(spec, opts, extent_file_name)?;
        let mut head = vec![0u8; (OVERHEAD_SECTORS * SECTOR) as usize];
        head[..512].copy_from_slice(&header_bytes(capacity, GD_AT_END));
        head[512..512 + desc.len()].copy_from_slice(desc.as_bytes());
        out.write_all(&head).map_err(|e| io::Error::new(e.kind(), format!("writing VMDK header: {e}")))?;
        let grains = spec.size.div_ceil(CLUSTER);
        let gd = vec![0u32; grains.div_ceil(GTES_PER_GT) as usize];
        Ok(VmdkWriter {
            out,
            pos: OVERHEAD_SECTORS * SECTOR,
            size: spec.size,
            capacity,
            next_offset: 0,
            gt_index: 0,
            gt: vec![0u32; GTES_PER_GT as usize],
            gt_used: false,
            gd,
        })
    }

    /// Current output position in sectors, as a u32 table entry.
    fn sector32(&self) -> io::Result<u32> {
        u32::try_from(self.pos / SECTOR).map_err(|_| {
            io::Error::other(format!("VMDK output reached {} bytes: streamOptimized offsets are 32-bit sectors (2 TiB)", self.pos))
        })
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b).map_err(|e| io::Error::new(e.kind(), format!("writing VMDK at byte {}: {e}", self.pos)))?;
        self.pos += b.len() as u64;
        Ok(())
    }

    /// Emits the current grain table (when it holds a grain) and records it in the GD.
    fn flush_gt(&mut self) -> io::Result<()> {
        if !self.gt_used {
            return Ok(());
        }
        self.put(&metadata_marker(4, MARKER_GT))?;
        let gde = self.sector32()?;
        let mut b = Vec::with_capacity(2048);
        for e in &self.gt {
            b.extend_from_slice(&e.to_le_bytes());
        }
        self.put(&b)?;
        self.gd[self.gt_index as usize] = gde;
        self.gt.fill(0);
        self.gt_used = false;
        Ok(())
    }

    /// Writes the metadata after the last grain and returns the inner writer and the total
    /// number of bytes written. Does not flush `W`.
    pub fn finish_inner(mut self) -> io::Result<(W, u64)> {
        self.flush_gt()?;
        let gd_sectors = (self.gd.len() as u64 * 4).div_ceil(SECTOR);
        self.put(&metadata_marker(gd_sectors, MARKER_GD))?;
        let gd_offset = u64::from(self.sector32()?);
        let mut b = vec![0u8; (gd_sectors * SECTOR) as usize];
        for (i, e) in self.gd.iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&e.to_le_bytes());
        }
        self.put(&b)?;
        self.put(&metadata_marker(1, MARKER_FOOTER))?;
        self.put(&header_bytes(self.capacity, gd_offset))?;
        self.put(&[0u8; 512])?;
        self.sector32()?;
        Ok((self.out, self.pos))
    }

    fn write_chunk(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let end = offset.checked_add(data.len() as u64).ok_or_else(|| io::Error::other("VMDK chunk offset overflow"))?;
        if !offset.is_multiple_of(CLUSTER)
            || offset < self.next_offset
            || end > self.size
            || (!(data.len() as u64).is_multiple_of(CLUSTER) && end != self.size)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "VMDK writer: chunk [{offset}, {end}) violates the writer contract (next offset {}, size {})",
                    self.next_offset, self.size
                ),
            ));
        }
        self.next_offset = end;
        let first_grain = offset / CLUSTER;
        let grains: Vec<&[u8]> = data.chunks(CLUSTER as usize).collect();
        for (b, batch) in grains.chunks(BATCH_GRAINS).enumerate() {
            let base = first_grain + (b * BATCH_GRAINS) as u64;
            let markers: Vec<io::Result<Option<Vec<u8>>>> =
                batch.par_iter().enumerate().map(|(i, g)| grain_marker((base + i as u64) * GRAIN_SECTORS, g)).collect();
            for (i, m) in markers.into_iter().enumerate() {
                let Some(m) = m? else { continue };
                let grain = base + i as u64;
                let table = grain / GTES_PER_GT;
                if table != self.gt_index {
                    self.flush_gt()?;
                    self.gt_index = table;
                }
                let gte = self.sector32()?;
                self.put(&m)?;
                self.gt[(grain % GTES_PER_GT) as usize] = gte;
                self.gt_used = true;
            }
        }
        Ok(())
    }
}

impl<W: Write + Send> FormatWriter for VmdkWriter<W> {
    fn compresses(&self) -> bool {
        true
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.write_chunk(offset, data)
    }

    fn finish(self: Box<Self>) -> io::Result<()> {
        let (mut out, _) = self.finish_inner()?;
        out.flush().map_err(|e| io::Error::new(e.kind(), format!("flushing VMDK: {e}")))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::export::check::{check_stream_vmdk, check_stream_vmdk_with};
    use crate::export::feed::feed;
    use std::fs::File;
    use std::io::{BufWriter, Read};
    use std::os::unix::fs::FileExt;
    use std::path::Path;
    use std::process::Command;

    const MIB: u64 = 1024 * 1024;

    /// Tiny deterministic PRNG.
    pub(crate) struct XorShift(pub u64);
    impl XorShift {
        pub(crate) fn fill(&mut self, b: &mut [u8]) {
            for c in b.chunks_mut(8) {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                let v = self.0.to_le_bytes();
                c.copy_from_slice(&v[..c.len()]);
            }
        }
    }

    /// What to put in a region of a test raw image.
    #[derive(Clone, Copy)]
    pub(crate) enum Fill {
        /// Incompressible bytes.
        Random,
        /// Compressible text.
        Text,
        /// Zeros, actually written (allocated, not a hole).
        Zeros,
    }

    /// Creates a sparse raw file of `size` bytes with the given regions; the rest are holes.
    pub(crate) fn make_raw(path: &Path, size: u64, regions: &[(u64, u64, Fill)]) {
        let f = File::create(path).unwrap();
        f.set_len(size).unwrap();
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for &(start, len, fill) in regions {
            let mut b = vec![0u8; len as usize];
            match fill {
                Fill::Random => rng.fill(&mut b),
                Fill::Text => {
                    let text = b"imgforge bakes machine images; the quick brown fox jumps over the lazy dog 0123456789\n";
                    for (i, x) in b.iter_mut().enumerate() {
                        *x = text[(i + (i / 4096) * 7) % text.len()];
                    }
                }
                Fill::Zeros => {}
            }
            f.write_all_at(&b, start).unwrap();
        }
    }

    /// The regions of the main test image (size [`MAIN_SIZE`]).
    pub(crate) fn main_regions() -> Vec<(u64, u64, Fill)> {
        vec![
            (0, MIB, Fill::Random),
            (MIB, MIB, Fill::Zeros),
            (2 * MIB + 4096, 4096, Fill::Random),
            (3 * MIB - 1, 1, Fill::Random),
            (20 * MIB, 13 * MIB, Fill::Text), // crosses the 32 MiB grain-table boundary
            (35 * MIB + 7 * 512, MIB - 7 * 512, Fill::Random),
            (37 * MIB, 3 * 512, Fill::Random), // the last, partial grain
        ]
    }

    /// 37 MiB + 3 sectors: two grain tables and a partial last grain.
    pub(crate) const MAIN_SIZE: u64 = 37 * MIB + 3 * 512;

    pub(crate) fn spec(size: u64, name: &str) -> DiskSpec {
        DiskSpec { size, epoch: 1_700_000_000, digest: [42; 32], name: name.into() }
    }

    pub(crate) fn tmpdir() -> tempfile::TempDir {
        tempfile::Builder::new().prefix("exp-vmdk-").tempdir_in("/tmp").unwrap()
    }

    /// Writes `raw` as a stream VMDK at `out` through `feed`.
    pub(crate) fn export(raw: &Path, out: &Path, spec: &DiskSpec, opts: &VmdkOptions) {
        let input = File::open(raw).unwrap();
        let w = BufWriter::new(File::create(out).unwrap());
        let name = out.file_name().unwrap().to_str().unwrap();
        let mut vw = VmdkWriter::new(w, spec, opts, name).unwrap();
        feed(&input, spec.size, &mut [&mut vw], &|| false).unwrap();
        FormatWriter::finish(Box::new(vw)).unwrap();
    }

    pub(crate) fn run(cmd: &mut Command) -> String {
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{cmd:?} failed: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    }

    /// qemu-img check, compare and virtual size, plus our checker with grain-by-grain comparison.
    pub(crate) fn verify_with_qemu(raw: &Path, vmdk: &Path, size: u64) -> crate::export::check::VmdkReport {
        run(Command::new("qemu-img").args(["check", "-f", "vmdk"]).arg(vmdk));
        run(Command::new("qemu-img").args(["compare", "-f", "raw", "-F", "vmdk"]).arg(raw).arg(vmdk));
        let info = run(Command::new("qemu-img").args(["info", "--output=json", "-f", "vmdk"]).arg(vmdk));
        assert!(info.contains(&format!("\"virtual-size\": {size},")), "{info}");
        let mut rawf = File::open(raw).unwrap();
        let mut expect = vec![0u8; size as usize];
        rawf.read_exact(&mut expect).unwrap();
        let mut seen = vec![0u8; size as usize];
        let rep = check_stream_vmdk_with(File::open(vmdk).unwrap(), &mut |off, data| {
            assert_eq!(data, &expect[off as usize..off as usize + data.len()], "grain at {off}");
            seen[off as usize..off as usize + data.len()].copy_from_slice(data);
        })
        .unwrap();
        assert!(seen == expect, "grains do not reassemble the raw");
        assert_eq!(rep.file_size, std::fs::metadata(vmdk).unwrap().len());
        rep
    }

    #[test]
    fn main_image_roundtrip_and_determinism() {
        let d = tmpdir();
        let raw = d.path().join("in.raw");
        make_raw(&raw, MAIN_SIZE, &main_regions());
        let spec = spec(MAIN_SIZE, "disk");
        let out = d.path().join("disk.vmdk");
        export(&raw, &out, &spec, &VmdkOptions::default());
        let rep = verify_with_qemu(&raw, &out, MAIN_SIZE);
        // Non-zero grains: 16 (random MiB) + 1 (2 MiB+4 KiB) + 1 (3 MiB−1) + 208 (13 MiB text) + 16 + 1 (tail).
        assert_eq!(rep.grains, 16 + 1 + 1 + 208 + 16 + 1);
        assert_eq!(rep.grain_tables, 2);
        assert_eq!(rep.capacity, MAIN_SIZE / 512);

        // Same extent file name so the descriptor matches.
        let d2 = tmpdir();
        let out2b = d2.path().join("disk.vmdk");
        export(&raw, &out2b, &spec, &VmdkOptions::default());
        assert!(std::fs::read(&out).unwrap() == std::fs::read(&out2b).unwrap(), "two exports differ");
    }

    #[test]
    fn skipped_middle_table_and_aligned_end() {
        // 100 MiB: grain tables 0..=3; table 1 (32..64 MiB) and table 3 have no data -> GDE 0.
        let d = tmpdir();
        let raw = d.path().join("in.raw");
        let size = 100 * MIB;
        make_raw(&raw, size, &[(5 * MIB, 64 * 1024, Fill::Random), (70 * MIB, 3 * MIB, Fill::Text), (40 * MIB, MIB, Fill::Zeros)]);
        let out = d.path().join("big.vmdk");
        export(&raw, &out, &spec(size, "big"), &VmdkOptions { adapter: Adapter::Ide, ..Default::default() });
        let rep = verify_with_qemu(&raw, &out, size);
        assert_eq!((rep.grains, rep.grain_tables), (1 + 48, 2));
    }

    #[test]
    fn tiny_and_empty_disks() {
        let d = tmpdir();
        for (size, regions) in [(512u64, vec![(0u64, 512u64, Fill::Random)]), (3 * MIB, vec![])] {
            let raw = d.path().join(format!("in{size}.raw"));
            make_raw(&raw, size, &regions);
            let out = d.path().join(format!("t{size}.vmdk"));
            export(&raw, &out, &spec(size, "t"), &VmdkOptions::default());
            let rep = verify_with_qemu(&raw, &out, size);
            assert_eq!(rep.grains, regions.len() as u64);
        }
    }

    #[test]
    fn descriptor_snapshot() {
        let s = spec(MAIN_SIZE, "disk");
        let d = descriptor(&s, &VmdkOptions::default(), "disk-disk1.vmdk").unwrap();
        // Exact text; CID and longContentID are the values derived from digest [42; 32].
        let expect = r#"# Disk DescriptorFile
version=1
encoding="UTF-8"
CID=408e8f1a
parentCID=ffffffff
createType="streamOptimized"

# Extent description
RW 75779 SPARSE "disk-disk1.vmdk"

# The Disk Data Base
#DDB

ddb.adapterType = "lsilogic"
ddb.geometry.cylinders = "5"
ddb.geometry.heads = "255"
ddb.geometry.sectors = "63"
ddb.longContentID = "c6c31b3aa7d849de833c09aeb5584f47"
ddb.virtualHWVersion = "4"
"#;
        assert_eq!(d, expect);
        assert!(!d.contains("tools"));

        let t = descriptor(&s, &VmdkOptions { adapter: Adapter::PvScsi, hw_version: 6, tools_lines: true }, "x.vmdk").unwrap();
        assert!(t.contains("ddb.adapterType = \"lsilogic\"\n"));
        assert!(t.contains("ddb.virtualHWVersion = \"6\"\n"));
        assert!(t.ends_with("ddb.toolsInstallType = \"4\"\nddb.toolsVersion = \"2147483647\"\n"));
        let i = descriptor(&s, &VmdkOptions { adapter: Adapter::Ide, ..Default::default() }, "x.vmdk").unwrap();
        assert!(i.contains("ddb.adapterType = \"ide\"\nddb.geometry.cylinders = \"76\"\nddb.geometry.heads = \"16\"\n"));
        assert!(descriptor(&s, &VmdkOptions::default(), "a\"b").is_err());
    }

    #[test]
    fn adapter_names_and_geometry() {
        for a in [Adapter::LsiLogic, Adapter::PvScsi, Adapter::Ide] {
            assert_eq!(a.name().parse::<Adapter>().unwrap(), a);
        }
        assert!("buslogic".parse::<Adapter>().is_err());
        assert_eq!(Adapter::LsiLogic.geometry(2_097_152), (131, 255, 63));
        assert_eq!(Adapter::Ide.geometry(MAX_SIZE / 512), (65535, 16, 63));
    }

    #[test]
    fn limits_and_contract_violations() {
        assert!(VmdkWriter::new(Vec::new(), &spec(MAX_SIZE + 512, "x"), &VmdkOptions::default(), "x.vmdk").is_err());
        assert!(VmdkWriter::new(Vec::new(), &spec(0, "x"), &VmdkOptions::default(), "x.vmdk").is_err());
        assert!(VmdkWriter::new(Vec::new(), &spec(1000, "x"), &VmdkOptions::default(), "x.vmdk").is_err());
        // Worst case (incompressible) output at MAX_SIZE still fits in 32-bit sectors.
        let grains = MAX_SIZE / CLUSTER;
        let worst = OVERHEAD_SECTORS + grains * 129 + grains.div_ceil(512) * 5 + 1 + (grains.div_ceil(512) * 4).div_ceil(512) + 3;
        assert!(worst < 1 << 32);
        let z = vec![0u8; 65536];
        let mut w = VmdkWriter::new(Vec::new(), &spec(4 * CLUSTER, "x"), &VmdkOptions::default(), "x.vmdk").unwrap();
        w.write(CLUSTER, &z).unwrap();
        assert!(w.write(0, &z).is_err(), "backwards");
        assert!(w.write(2 * CLUSTER, &z[..512]).is_err(), "short chunk not at the end");
        assert!(w.write(3 * CLUSTER, &[0u8; 2 * 65536]).is_err(), "past the end");
        assert!(w.write(2 * CLUSTER + 512, &z).is_err(), "unaligned");
    }

    #[test]
    fn incompressible_grain_expands_and_is_valid() {
        let mut b = vec![0u8; 65536];
        XorShift(7).fill(&mut b);
        let m = grain_marker(128, &b).unwrap().unwrap();
        assert_eq!(m.len() % 512, 0);
        assert!(m.len() <= 129 * 512);
        assert_eq!(u64::from_le_bytes(m[0..8].try_into().unwrap()), 128);
        let n = u32::from_le_bytes(m[8..12].try_into().unwrap()) as usize;
        assert!(n > 65536, "random data expands slightly ({n})");
        // RFC 1950 zlib header: CM 8, (CMF*256+FLG) % 31 == 0.
        assert_eq!(m[12], 0x78);
        assert_eq!((u16::from(m[12]) * 256 + u16::from(m[13])) % 31, 0);
        let mut out = vec![0u8; 65536];
        assert_eq!(libdeflater::Decompressor::new().zlib_decompress(&m[12..12 + n], &mut out).unwrap(), 65536);
        assert!(out == b);
        assert!(grain_marker(0, &[0u8; 65536]).unwrap().is_none());
    }

    #[test]
    fn checker_detects_corruption() {
        let d = tmpdir();
        let raw = d.path().join("in.raw");
        make_raw(&raw, MAIN_SIZE, &main_regions());
        let out = d.path().join("c.vmdk");
        export(&raw, &out, &spec(MAIN_SIZE, "c"), &VmdkOptions::default());
        let good = std::fs::read(&out).unwrap();
        assert!(check_stream_vmdk(std::io::Cursor::new(&good)).is_ok());
        // Locate the first GT via the footer -> GD -> GDE 0.
        let footer = &good[good.len() - 1024..good.len() - 512];
        let gd = u64::from_le_bytes(footer[56..64].try_into().unwrap()) as usize * 512;
        let gt0 = u32::from_le_bytes(good[gd..gd + 4].try_into().unwrap()) as usize * 512;
        let mut bad = good.clone();
        bad[gt0 + 4] ^= 1; // GTE 1
        let e = check_stream_vmdk(std::io::Cursor::new(&bad)).unwrap_err().to_string();
        assert!(e.contains("GT 0"), "{e}");
        // Truncated EOS.
        let e = check_stream_vmdk(std::io::Cursor::new(&good[..good.len() - 512])).unwrap_err().to_string();
        assert!(e.contains("EOS"), "{e}");
        // Bytes after EOS.
        let mut longer = good.clone();
        longer.extend_from_slice(&[0u8; 512]);
        assert!(check_stream_vmdk(std::io::Cursor::new(&longer)).is_err());
        // A flipped bit inside a compressed grain.
        let mut g = good.clone();
        g[128 * 512 + 100] ^= 0x10;
        assert!(check_stream_vmdk(std::io::Cursor::new(&g)).is_err());
        // Wrong header version.
        let mut v = good.clone();
        v[4] = 1;
        assert!(check_stream_vmdk(std::io::Cursor::new(&v)).unwrap_err().to_string().contains("version"));
    }
}
