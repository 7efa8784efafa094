//! VHD (Microsoft Virtual Hard Disk, spec v1.0) writers: fixed and dynamic, plus a footer parser
//! and a detector used by inspect and by upload input checks.
//!
//! Every integer in VHD structures is big-endian. Footers are written so that qemu, Hyper-V and
//! Azure all see the same size: creator application `"win "` (qemu then trusts *current size*
//! instead of the CHS product), creator host OS `Wi2k`, geometry from the spec's algorithm, and
//! original size = current size.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::spec::{CLUSTER, DiskSpec, FormatWriter, is_zero};

/// Largest virtual size written: 2040 GiB (`0xff000000` sectors). qemu refuses bigger VHDs, and
/// the dynamic format's 32-bit sector offsets cap files below 2 TiB anyway.
pub const MAX_SIZE: u64 = 2040 * GIB;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// Size of a VHD footer (and of the footer copy at the start of a dynamic VHD).
pub const FOOTER_SIZE: usize = 512;
/// Size of the dynamic disk header.
pub const DYN_HEADER_SIZE: usize = 1024;
/// Block size of dynamic VHDs written here (2 MiB, the usual value).
pub const BLOCK_SIZE: u64 = 2 * MIB;
/// Absolute offset of the BAT in dynamic VHDs written here.
pub const BAT_OFFSET: u64 = 1536;

const COOKIE: &[u8; 8] = b"conectix";
const DYN_COOKIE: &[u8; 8] = b"cxsparse";
const CREATOR_APP: &[u8; 4] = b"win ";
const CREATOR_VERSION: u32 = 0x000a_0000;
const CREATOR_OS: &[u8; 4] = b"Wi2k";
/// Seconds between the Unix epoch and 2000-01-01 00:00:00 UTC (the VHD epoch).
const VHD_EPOCH: u64 = 946_684_800;
/// Bitmap preceding each 2 MiB block: 4096 sectors / 8 = 512 bytes.
const BITMAP_SIZE: usize = 512;

/// Footer disk type values.
const TYPE_FIXED: u32 = 2;
const TYPE_DYNAMIC: u32 = 3;
const TYPE_DIFFERENCING: u32 = 4;

/// The kind of VHD a file holds, from its footer's disk type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VhdKind {
    /// Disk type 2: raw data followed by the footer.
    Fixed,
    /// Disk type 3: sparse, block allocation table.
    Dynamic,
    /// Disk type 4: dynamic layout with a parent image.
    Differencing,
}

/// Cylinders / heads / sectors-per-track as stored in the footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Cylinders (16 bits).
    pub cylinders: u16,
    /// Heads (8 bits).
    pub heads: u8,
    /// Sectors per track (8 bits).
    pub sectors: u8,
}

impl Geometry {
    /// C × H × S × 512: the size readers that ignore *current size* believe.
    pub fn bytes(&self) -> u64 {
        u64::from(self.cylinders) * u64::from(self.heads) * u64::from(self.sectors) * 512
    }
}

/// CHS geometry of a disk of `size` bytes, per the VHD specification's algorithm (the same as
/// qemu's `calculate_geometry` and Microsoft's azure-vhd-utils). C×H×S is usually smaller than
/// the size; it is clamped to 65535/16/255 for disks of about 127 GiB and more.
pub fn chs_geometry(size: u64) -> Geometry {
    let mut total = size / 512;
    if total > 65535 * 16 * 255 {
        total = 65535 * 16 * 255;
    }
    let (spt, heads, cth);
    if total >= 65535 * 16 * 63 {
        spt = 255;
        heads = 16;
        cth = total / spt;
    } else {
        let mut s = 17;
        let mut c = total / s;
        let mut h = c.div_ceil(1024).max(4);
        // The spec writes (cth + 1023) / 1024, i.e. div_ceil.
        if c >= h * 1024 || h > 16 {
            s = 31;
            h = 16;
            c = total / s;
        }
        if c >= h * 1024 {
            s = 63;
            h = 16;
            c = total / s;
        }
        spt = s;
        heads = h;
        cth = c;
    }
    let cylinders = cth / heads;
    Geometry {
        cylinders: u16::try_from(cylinders).unwrap_or(u16::MAX),
        heads: u8::try_from(heads).unwrap_or(u8::MAX),
        sectors: u8::try_from(spt).unwrap_or(u8::MAX),
    }
}

/// VHD checksum: one's complement of the byte sum, with the checksum field itself counted as 0.
/// `field` is the offset of the 4-byte checksum field inside `buf`.
pub fn checksum(buf: &[u8], field: usize) -> u32 {
    let sum = buf
        .iter()
        .enumerate()
        .fold(0u32, |acc, (i, &b)| if (field..field + 4).contains(&i) { acc } else { acc.wrapping_add(u32::from(b)) });
    !sum
}

/// Virtual size of a fixed VHD for a raw disk of `raw_size` bytes (Azure rule): rounded up to a
/// whole MiB only when it is not one already — an aligned disk never gains a MiB.
pub fn fixed_virtual_size(raw_size: u64) -> u64 {
    raw_size.div_ceil(MIB).saturating_mul(MIB)
}

fn timestamp(spec: &DiskSpec) -> u32 {
    u32::try_from(spec.epoch.saturating_sub(VHD_EPOCH)).unwrap_or(u32::MAX)
}

fn encode_footer(spec: &DiskSpec, size: u64, disk_type: u32, data_offset: u64) -> [u8; FOOTER_SIZE] {
    let mut f = [0u8; FOOTER_SIZE];
    let g = chs_geometry(size);
    f[0..8].copy_from_slice(COOKIE);
    f[8..12].copy_from_slice(&2u32.to_be_bytes());
    f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    f[16..24].copy_from_slice(&data_offset.to_be_bytes());
    f[24..28].copy_from_slice(&timestamp(spec).to_be_bytes());
    f[28..32].copy_from_slice(CREATOR_APP);
    f[32..36].copy_from_slice(&CREATOR_VERSION.to_be_bytes());
    f[36..40].copy_from_slice(CREATOR_OS);
    f[40..48].copy_from_slice(&size.to_be_bytes());
    f[48..56].copy_from_slice(&size.to_be_bytes());
    f[56..58].copy_from_slice(&g.cylinders.to_be_bytes());
    f[58] = g.heads;
    f[59] = g.sectors;
    f[60..64].copy_from_slice(&disk_type.to_be_bytes());
    f[68..84].copy_from_slice(&spec.uuid("vhd"));
    let c = checksum(&f, 64);
    f[64..68].copy_from_slice(&c.to_be_bytes());
    f
}

/// The 512-byte footer of a fixed VHD whose data part is `virtual_size` bytes (use
/// [`fixed_virtual_size`]). The file is the data, zero-padded to `virtual_size`, then this footer.
pub fn fixed_footer(spec: &DiskSpec, virtual_size: u64) -> [u8; FOOTER_SIZE] {
    encode_footer(spec, virtual_size, TYPE_FIXED, u64::MAX)
}

/// The footer of a dynamic VHD of `size` bytes (data offset 512: the dynamic header follows the
/// footer copy at the start of the file).
pub fn dynamic_footer(spec: &DiskSpec, size: u64) -> [u8; FOOTER_SIZE] {
    encode_footer(spec, size, TYPE_DYNAMIC, FOOTER_SIZE as u64)
}

/// Number of BAT entries of a dynamic VHD of `size` bytes: exactly `ceil(size / 2 MiB)` (Azure
/// rejects a longer BAT).
pub fn bat_entries(size: u64) -> u32 {
    u32::try_from(size.div_ceil(BLOCK_SIZE)).unwrap_or(u32::MAX)
}

/// The 1024-byte dynamic disk header for a disk of `size` bytes, BAT at [`BAT_OFFSET`].
pub fn dynamic_header(size: u64) -> [u8; DYN_HEADER_SIZE] {
    let mut h = [0u8; DYN_HEADER_SIZE];
    h[0..8].copy_from_slice(DYN_COOKIE);
    h[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
    h[16..24].copy_from_slice(&BAT_OFFSET.to_be_bytes());
    h[24..28].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    h[28..32].copy_from_slice(&bat_entries(size).to_be_bytes());
    h[32..36].copy_from_slice(&(BLOCK_SIZE as u32).to_be_bytes());
    let c = checksum(&h, 36);
    h[36..40].copy_from_slice(&c.to_be_bytes());
    h
}

/// A parsed VHD footer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    /// Features field (bit 1 is always set; bit 0 = temporary).
    pub features: u32,
    /// File format version (0x00010000).
    pub format_version: u32,
    /// Offset of the dynamic header; all ones for fixed disks.
    pub data_offset: u64,
    /// Seconds since 2000-01-01 UTC.
    pub timestamp: u32,
    /// Creator application, e.g. `"win "`, `"qemu"`, `"qem2"`, `"vpc "`.
    pub creator_app: [u8; 4],
    /// Creator version (major << 16 | minor).
    pub creator_version: u32,
    /// Creator host OS, e.g. `"Wi2k"`.
    pub creator_os: [u8; 4],
    /// Size at creation.
    pub original_size: u64,
    /// Current virtual size.
    pub current_size: u64,
    /// CHS geometry.
    pub geometry: Geometry,
    /// Raw disk type (2 fixed, 3 dynamic, 4 differencing).
    pub disk_type: u32,
    /// Stored checksum.
    pub checksum: u32,
    /// True when the stored checksum matches the content.
    pub checksum_ok: bool,
    /// Unique id (16 raw bytes).
    pub unique_id: [u8; 16],
    /// Saved-state flag.
    pub saved_state: u8,
}

impl Footer {
    /// The kind of disk, when the type is one of fixed, dynamic or differencing.
    pub fn kind(&self) -> Option<VhdKind> {
        match self.disk_type {
            TYPE_FIXED => Some(VhdKind::Fixed),
            TYPE_DYNAMIC => Some(VhdKind::Dynamic),
            TYPE_DIFFERENCING => Some(VhdKind::Differencing),
            _ => None,
        }
    }

    /// The size qemu reports for this footer: *current size* for the creator applications qemu
    /// trusts (`win `, `qem2`, `d2v `, `CTXS`, `tap\0`) or geometry 65535/16/255, else C×H×S×512.
    pub fn qemu_size(&self) -> u64 {
        let trusted = matches!(&self.creator_app, b"win " | b"qem2" | b"d2v " | b"CTXS" | b"tap\0");
        let g = self.geometry;
        if trusted || (g.cylinders == 65535 && g.heads == 16 && g.sectors == 255) { self.current_size } else { g.bytes() }
    }
}

fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn be64(b: &[u8], o: usize) -> u64 {
    (u64::from(be32(b, o)) << 32) | u64::from(be32(b, o + 4))
}

/// Parses a footer from `buf` (512 bytes, or 511 for the old Virtual PC footer whose last
/// reserved byte is missing). `None` when `buf` is too short or the cookie is not `conectix`. A
/// bad checksum is reported through [`Footer::checksum_ok`].
pub fn parse_footer(buf: &[u8]) -> Option<Footer> {
    if buf.len() < FOOTER_SIZE - 1 || &buf[0..8] != COOKIE {
        return None;
    }
    let mut b = [0u8; FOOTER_SIZE];
    let n = buf.len().min(FOOTER_SIZE);
    b[..n].copy_from_slice(&buf[..n]);
    let stored = be32(&b, 64);
    let mut id = [0u8; 16];
    id.copy_from_slice(&b[68..84]);
    Some(Footer {
        features: be32(&b, 8),
        format_version: be32(&b, 12),
        data_offset: be64(&b, 16),
        timestamp: be32(&b, 24),
        creator_app: [b[28], b[29], b[30], b[31]],
        creator_version: be32(&b, 32),
        creator_os: [b[36], b[37], b[38], b[39]],
        original_size: be64(&b, 40),
        current_size: be64(&b, 48),
        geometry: Geometry { cylinders: u16::from_be_bytes([b[56], b[57]]), heads: b[58], sectors: b[59] },
        disk_type: be32(&b, 60),
        checksum: stored,
        checksum_ok: checksum(&b, 64) == stored,
        unique_id: id,
        saved_state: b[84],
    })
}

/// Finds and parses the VHD footer of `file`: at `len − 512`, else the 511-byte footer of old
/// Virtual PC at `len − 511`, else the footer copy at offset 0 (dynamic and differencing disks).
/// Returns the footer and its offset; `Ok(None)` when there is no `conectix` cookie at any of
/// these places. The checksum is not checked here (see [`Footer::checksum_ok`]).
pub fn find_footer(file: &File) -> io::Result<Option<(u64, Footer)>> {
    let len = file.metadata()?.len();
    let mut buf = [0u8; FOOTER_SIZE];
    if len >= FOOTER_SIZE as u64 {
        for (off, n) in [(len - FOOTER_SIZE as u64, FOOTER_SIZE), (len - (FOOTER_SIZE as u64 - 1), FOOTER_SIZE - 1), (0, FOOTER_SIZE)] {
            let b = &mut buf[..n];
            file.read_exact_at(b, off).map_err(|e| io::Error::new(e.kind(), format!("reading a VHD footer at offset {off}: {e}")))?;
            if let Some(f) = parse_footer(b) {
                return Ok(Some((off, f)));
            }
        }
    }
    Ok(None)
}

/// Detects a VHD: `Ok(Some(kind))` for a footer with a valid checksum, `Ok(None)` when the file is
/// not a VHD, and an `InvalidData` error naming the offset and both checksums when the footer's
/// checksum is wrong (current qemu refuses such images, and Azure would too) or its disk type is
/// unknown.
pub fn detect(file: &File) -> io::Result<Option<VhdKind>> {
    let Some((off, f)) = find_footer(file)? else {
        return Ok(None);
    };
    if !f.checksum_ok {
        let mut b = [0u8; FOOTER_SIZE];
        let n = if off == 0 { FOOTER_SIZE } else { (file.metadata()?.len() - off) as usize };
        file.read_exact_at(&mut b[..n], off)?;
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("VHD footer at offset {off} has a bad checksum: stored {:#010x}, computed {:#010x}", f.checksum, checksum(&b, 64)),
        ));
    }
    match f.kind() {
        Some(k) => Ok(Some(k)),
        None => {
            Err(io::Error::new(io::ErrorKind::InvalidData, format!("VHD footer at offset {off} has unknown disk type {}", f.disk_type)))
        }
    }
}

/// Empties `file` only when it is not empty already: truncating an ext4 file to zero arms
/// `auto_da_alloc`, which makes the final `close` flush every dirty page synchronously.
fn truncate_if_needed(file: &File) -> io::Result<()> {
    if file.metadata()?.len() != 0 {
        file.set_len(0)?;
    }
    Ok(())
}

fn check_size(size: u64) -> io::Result<()> {
    if size > MAX_SIZE {
        return Err(io::Error::other(format!("disk of {size} bytes is larger than the VHD maximum of {MAX_SIZE} bytes (2040 GiB)")));
    }
    if !size.is_multiple_of(512) {
        return Err(io::Error::other(format!("disk size {size} is not a multiple of 512")));
    }
    Ok(())
}

fn ctx(what: &str, off: u64) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("writing VHD {what} at offset {off}: {e}"))
}

/// Fixed VHD through the generic path (tests; exports use a kernel copy plus [`fixed_footer`]): every non-zero cluster is written at its own offset, the
/// file is extended (sparsely) to [`fixed_virtual_size`] and the footer is appended.
#[cfg(test)]
pub struct FixedVhdWriter {
    file: File,
    virtual_size: u64,
    footer: [u8; FOOTER_SIZE],
}

#[cfg(test)]
impl FixedVhdWriter {
    /// Starts a fixed VHD in `file` (emptied first if it is not empty) for `spec`.
    pub fn new(file: File, spec: &DiskSpec) -> io::Result<Self> {
        let virtual_size = fixed_virtual_size(spec.size);
        check_size(virtual_size)?;
        truncate_if_needed(&file)?;
        Ok(Self { file, virtual_size, footer: fixed_footer(spec, virtual_size) })
    }
}

#[cfg(test)]
impl FormatWriter for FixedVhdWriter {
    fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        // Write runs of non-zero clusters; zero clusters stay holes.
        let mut run: Option<usize> = None;
        let n = data.len().div_ceil(CLUSTER as usize);
        for i in 0..=n {
            let nonzero = i < n && {
                let s = i * CLUSTER as usize;
                !is_zero(&data[s..(s + CLUSTER as usize).min(data.len())])
            };
            match (nonzero, run) {
                (true, None) => run = Some(i),
                (false, Some(r)) => {
                    let s = r * CLUSTER as usize;
                    let e = (i * CLUSTER as usize).min(data.len());
                    let off = offset + s as u64;
                    self.file.write_all_at(&data[s..e], off).map_err(ctx("data", off))?;
                    run = None;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> io::Result<()> {
        self.file.set_len(self.virtual_size)?;
        self.file.write_all_at(&self.footer, self.virtual_size).map_err(ctx("footer", self.virtual_size))?;
        Ok(())
    }
}

/// Dynamic VHD: footer copy at 0, dynamic header at 512, BAT at 1536, then one block (512-byte
/// all-ones bitmap + 2 MiB data) per 2 MiB block that holds a non-zero byte, in ascending order,
/// then the footer. All-zero blocks stay unallocated.
pub struct DynamicVhdWriter {
    file: File,
    size: u64,
    footer: [u8; FOOTER_SIZE],
    bat: Vec<u32>,
    /// Bitmap followed by the current block's data.
    buf: Vec<u8>,
    /// Index of the block in `buf`, when it holds non-zero data.
    dirty: Option<u64>,
    /// Where the next block goes.
    next: u64,
}

impl DynamicVhdWriter {
    /// Starts a dynamic VHD in `file` (emptied first if it is not empty) for `spec`; virtual size = `spec.size`.
    pub fn new(file: File, spec: &DiskSpec) -> io::Result<Self> {
        check_size(spec.size)?;
        truncate_if_needed(&file)?;
        let entries = bat_entries(spec.size) as u64;
        let bat_bytes = (entries * 4).div_ceil(512) * 512;
        let mut buf = vec![0u8; BITMAP_SIZE + BLOCK_SIZE as usize];
        buf[..BITMAP_SIZE].fill(0xff);
        Ok(Self {
            file,
            size: spec.size,
            footer: dynamic_footer(spec, spec.size),
            bat: vec![u32::MAX; entries as usize],
            buf,
            dirty: None,
            next: BAT_OFFSET + bat_bytes,
        })
    }

    fn flush_block(&mut self) -> io::Result<()> {
        let Some(block) = self.dirty.take() else {
            return Ok(());
        };
        let sector = u32::try_from(self.next / 512).map_err(|_| io::Error::other("dynamic VHD larger than 2 TiB"))?;
        self.file.write_all_at(&self.buf, self.next).map_err(ctx("block", self.next))?;
        self.bat[block as usize] = sector;
        self.next += self.buf.len() as u64;
        self.buf[BITMAP_SIZE..].fill(0);
        Ok(())
    }
}

impl FormatWriter for DynamicVhdWriter {
    fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        if offset + data.len() as u64 > self.size {
            return Err(io::Error::other(format!("write at {offset}+{} past the disk size {}", data.len(), self.size)));
        }
        for (i, c) in data.chunks(CLUSTER as usize).enumerate() {
            if is_zero(c) {
                continue;
            }
            let off = offset + (i as u64) * CLUSTER;
            let block = off / BLOCK_SIZE;
            if self.dirty != Some(block) {
                self.flush_block()?;
                self.dirty = Some(block);
            }
            let s = BITMAP_SIZE + (off % BLOCK_SIZE) as usize;
            self.buf[s..s + c.len()].copy_from_slice(c);
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.flush_block()?;
        let bat_bytes = (self.bat.len() * 4).div_ceil(512) * 512;
        let mut bat = vec![0xffu8; bat_bytes];
        for (i, e) in self.bat.iter().enumerate() {
            bat[i * 4..i * 4 + 4].copy_from_slice(&e.to_be_bytes());
        }
        let mut head = Vec::with_capacity(BAT_OFFSET as usize + bat_bytes);
        head.extend_from_slice(&self.footer);
        head.extend_from_slice(&dynamic_header(self.size));
        head.extend_from_slice(&bat);
        self.file.write_all_at(&head, 0).map_err(ctx("header and BAT", 0))?;
        self.file.write_all_at(&self.footer, self.next).map_err(ctx("footer", self.next))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::export::feed::feed;
    use std::path::Path;
    use std::process::Command;

    use crate::export::spec::test_noise as noise;

    /// A sparse raw file of `size` bytes: noise at each `(offset, len)` of `data`, written zeros at
    /// each `(offset, len)` of `zeros` (allocated, not holes), holes elsewhere.
    fn make_raw(path: &Path, size: u64, data: &[(u64, u64)], zeros: &[(u64, u64)]) -> File {
        let f = File::options().read(true).write(true).create(true).truncate(true).open(path).unwrap();
        f.set_len(size).unwrap();
        for (i, &(o, l)) in data.iter().enumerate() {
            let mut b = vec![0u8; l as usize];
            noise(&mut b, 0x9e37_79b9 + i as u64);
            f.write_all_at(&b, o).unwrap();
        }
        for &(o, l) in zeros {
            f.write_all_at(&vec![0u8; l as usize], o).unwrap();
        }
        f
    }

    fn spec(size: u64) -> DiskSpec {
        DiskSpec { size, epoch: 1_700_000_000, digest: [0x42; 32], name: "disk".into() }
    }

    fn qemu(args: &[&str]) -> (i32, String, String) {
        let o = Command::new("qemu-img").args(args).output().expect("qemu-img");
        (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
    }

    fn qemu_virtual_size(fmt: &str, path: &Path) -> u64 {
        let (rc, out, err) = qemu(&["info", "-f", fmt, "--output=json", path.to_str().unwrap()]);
        assert_eq!(rc, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["virtual-size"].as_u64().unwrap()
    }

    fn assert_same(raw: &Path, fmt: &str, out: &Path) {
        let (rc, o, e) = qemu(&["compare", "-f", "raw", "-F", fmt, raw.to_str().unwrap(), out.to_str().unwrap()]);
        assert_eq!(rc, 0, "qemu-img compare: {o}{e}");
    }

    fn export(raw: &File, size: u64, w: &mut dyn FormatWriter) {
        feed(raw, size, &mut [w], &|| false).unwrap();
    }

    fn write_fixed(raw: &File, spec: &DiskSpec, out: &Path) {
        let f = File::options().read(true).write(true).create(true).truncate(true).open(out).unwrap();
        let mut w = Box::new(FixedVhdWriter::new(f, spec).unwrap());
        export(raw, spec.size, w.as_mut());
        w.finish().unwrap();
    }

    fn write_dynamic(raw: &File, spec: &DiskSpec, out: &Path) {
        let f = File::options().read(true).write(true).create(true).truncate(true).open(out).unwrap();
        let mut w = Box::new(DynamicVhdWriter::new(f, spec).unwrap());
        export(raw, spec.size, w.as_mut());
        w.finish().unwrap();
    }

    const SMALL: u64 = 37 * MIB + 3 * 512;

    fn small_raw(dir: &Path) -> (std::path::PathBuf, File) {
        let p = dir.join("small.raw");
        let f = make_raw(
            &p,
            SMALL,
            &[(0, 3 * MIB), (20 * MIB + 4096, 70_000), (26 * MIB - 512, 1024), (SMALL - 1000, 1000)],
            &[(5 * MIB, 4 * MIB), (12 * MIB + 65536, 65536)],
        );
        (p, f)
    }

    #[test]
    fn geometry_vectors() {
        let g = |s: u64| {
            let g = chs_geometry(s);
            (g.cylinders, g.heads, g.sectors)
        };
        assert_eq!(g(100 * MIB), (1003, 12, 17));
        assert_eq!(chs_geometry(100 * MIB).bytes() / 512, 204_612);
        assert_eq!(g(GIB), (2080, 16, 63));
        assert_eq!(chs_geometry(GIB).bytes() / 512, 2_096_640);
        assert_eq!(g(10 * GIB), (20805, 16, 63));
        assert_eq!(g(64 * GIB), (32896, 16, 255));
        assert_eq!(g(127 * GIB + 512 * MIB), (65535, 16, 255));
        assert_eq!(g(2040 * GIB), (65535, 16, 255));
    }

    #[test]
    fn azure_rounding() {
        assert_eq!(fixed_virtual_size(MIB), MIB);
        assert_eq!(fixed_virtual_size(30 * MIB), 30 * MIB);
        assert_eq!(fixed_virtual_size(30 * MIB + 512), 31 * MIB);
        assert_eq!(fixed_virtual_size(SMALL), 38 * MIB);
    }

    #[test]
    fn footer_roundtrip_and_checksum() {
        let s = spec(30 * MIB);
        let f = fixed_footer(&s, 30 * MIB);
        let p = parse_footer(&f).unwrap();
        assert!(p.checksum_ok);
        assert_eq!(p.kind(), Some(VhdKind::Fixed));
        assert_eq!((p.current_size, p.original_size), (30 * MIB, 30 * MIB));
        assert_eq!(&p.creator_app, b"win ");
        assert_eq!(&p.creator_os, b"Wi2k");
        assert_eq!(p.creator_version, 0x000a_0000);
        assert_eq!(p.data_offset, u64::MAX);
        assert_eq!(p.timestamp, 1_700_000_000 - 946_684_800);
        assert_eq!(p.unique_id, s.uuid("vhd"));
        assert_eq!(p.geometry, chs_geometry(30 * MIB));
        assert_eq!(p.qemu_size(), 30 * MIB);
        // The checksum field holds !sum of the other bytes.
        let sum = f.iter().enumerate().filter(|(i, _)| !(64..68).contains(i)).fold(0u32, |a, (_, &b)| a.wrapping_add(b as u32));
        assert_eq!(u32::from_be_bytes(f[64..68].try_into().unwrap()), !sum);
        let mut bad = f;
        bad[100] ^= 1;
        assert!(!parse_footer(&bad).unwrap().checksum_ok);
        assert!(parse_footer(&[0u8; 512]).is_none());
        // Timestamps saturate at the VHD epoch.
        let early = DiskSpec { epoch: 5, ..s };
        assert_eq!(parse_footer(&fixed_footer(&early, MIB)).unwrap().timestamp, 0);
        let h = dynamic_header(5 * MIB);
        assert_eq!(&h[0..8], b"cxsparse");
        assert_eq!(checksum(&h, 36), u32::from_be_bytes(h[36..40].try_into().unwrap()));
        assert_eq!(u32::from_be_bytes(h[28..32].try_into().unwrap()), 3);
    }

    #[test]
    fn fixed_unaligned() {
        let dir = tempfile::tempdir().unwrap();
        let (raw_p, raw) = small_raw(dir.path());
        let s = spec(SMALL);
        let out = dir.path().join("out.vhd");
        write_fixed(&raw, &s, &out);
        let len = std::fs::metadata(&out).unwrap().len();
        assert_eq!(len, 38 * MIB + 512);
        assert_eq!((len - 512) % MIB, 0);
        let o = File::open(&out).unwrap();
        assert_eq!(detect(&o).unwrap(), Some(VhdKind::Fixed));
        let (off, f) = find_footer(&o).unwrap().unwrap();
        assert_eq!(off, 38 * MIB);
        assert!(f.checksum_ok);
        assert_eq!(f.current_size, 38 * MIB);
        assert_eq!(qemu_virtual_size("vpc", &out), 38 * MIB);
        // Extend a copy of the raw to the rounded size: the padding reads as zeros.
        let padded = dir.path().join("padded.raw");
        std::fs::copy(&raw_p, &padded).unwrap();
        File::options().write(true).open(&padded).unwrap().set_len(38 * MIB).unwrap();
        assert_same(&padded, "vpc", &out);
        // Without -f, qemu probes a fixed VHD as raw (the F2 pain): check that is what happens.
        let (_, info, _) = qemu(&["info", "--output=json", out.to_str().unwrap()]);
        assert!(info.contains("\"raw\""), "{info}");
        // The fixed_footer() path the driver uses produces the same footer.
        let mut tail = [0u8; 512];
        o.read_exact_at(&mut tail, 38 * MIB).unwrap();
        assert_eq!(tail, fixed_footer(&s, fixed_virtual_size(SMALL)));
        // Output stays sparse: the 8 MiB hole region is not allocated.
        use std::os::unix::fs::MetadataExt;
        assert!(std::fs::metadata(&out).unwrap().blocks() * 512 < 20 * MIB);
    }

    #[test]
    fn fixed_aligned_large_sparse() {
        let dir = tempfile::tempdir().unwrap();
        let size = 700 * MIB;
        let raw_p = dir.path().join("big.raw");
        let raw = make_raw(&raw_p, size, &[(MIB, 100_000), (600 * MIB, 2 * MIB), (size - 512, 512)], &[(10 * MIB, MIB)]);
        let s = spec(size);
        let out = dir.path().join("out.vhd");
        write_fixed(&raw, &s, &out);
        let len = std::fs::metadata(&out).unwrap().len();
        assert_eq!(len, size + 512, "no MiB added to an aligned disk");
        assert_eq!(qemu_virtual_size("vpc", &out), size);
        assert_same(&raw_p, "vpc", &out);
        assert_eq!(detect(&File::open(&out).unwrap()).unwrap(), Some(VhdKind::Fixed));
    }

    fn read_at(f: &File, off: u64, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        f.read_exact_at(&mut b, off).unwrap();
        b
    }

    fn check_dynamic(raw_p: &Path, raw: &File, size: u64, dir: &Path) -> Vec<u32> {
        let s = spec(size);
        let out = dir.join("dyn.vhd");
        write_dynamic(raw, &s, &out);
        let o = File::open(&out).unwrap();
        let len = o.metadata().unwrap().len();
        assert_eq!(detect(&o).unwrap(), Some(VhdKind::Dynamic));
        let head = read_at(&o, 0, 512);
        let tail = read_at(&o, len - 512, 512);
        assert_eq!(head, tail, "footer copy at 0 == footer at end");
        let f = parse_footer(&tail).unwrap();
        assert!(f.checksum_ok);
        assert_eq!((f.current_size, f.original_size, f.data_offset), (size, size, 512));
        let h = read_at(&o, 512, 1024);
        assert_eq!(&h[0..8], b"cxsparse");
        assert_eq!(checksum(&h, 36), u32::from_be_bytes(h[36..40].try_into().unwrap()));
        let entries = u32::from_be_bytes(h[28..32].try_into().unwrap());
        assert_eq!(entries as u64, size.div_ceil(BLOCK_SIZE));
        assert_eq!(u64::from_be_bytes(h[16..24].try_into().unwrap()), BAT_OFFSET);
        let bat_bytes = (entries as usize * 4).div_ceil(512) * 512;
        let bat = read_at(&o, BAT_OFFSET, bat_bytes);
        assert!(bat[entries as usize * 4..].iter().all(|&b| b == 0xff), "BAT padding is 0xFF");
        let bat: Vec<u32> = bat[..entries as usize * 4].chunks(4).map(|c| u32::from_be_bytes(c.try_into().unwrap())).collect();
        // Blocks in ascending order, back to back, each with an all-ones bitmap.
        let mut expect = (BAT_OFFSET + bat_bytes as u64) / 512;
        for &e in bat.iter().filter(|&&e| e != u32::MAX) {
            assert_eq!(e as u64, expect);
            assert!(read_at(&o, e as u64 * 512, 512).iter().all(|&b| b == 0xff));
            expect += (512 + BLOCK_SIZE) / 512;
        }
        assert_eq!(len, expect * 512 + 512);
        assert_eq!(qemu_virtual_size("vpc", &out), size);
        let (rc, o2, e2) = qemu(&["check", "-f", "vpc", out.to_str().unwrap()]);
        if rc != 0 && !(o2.contains("not support") || e2.contains("not support")) {
            panic!("qemu-img check: {o2}{e2}");
        }
        assert_same(raw_p, "vpc", &out);
        // Determinism.
        let out2 = dir.join("dyn2.vhd");
        write_dynamic(raw, &s, &out2);
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&out2).unwrap());
        bat
    }

    #[test]
    fn dynamic_small() {
        let dir = tempfile::tempdir().unwrap();
        let (raw_p, raw) = small_raw(dir.path());
        let bat = check_dynamic(&raw_p, &raw, SMALL, dir.path());
        assert_eq!(bat.len(), 19);
        let allocated: Vec<usize> = bat.iter().enumerate().filter(|(_, e)| **e != u32::MAX).map(|(i, _)| i).collect();
        // Noise in blocks 0, 1 (0..3 MiB), 10 (20 MiB + 4096), 12 (26 MiB − 512 → blocks 12 and 13),
        // and the last one; written zeros (5..9 MiB, 12 MiB) stay unallocated.
        assert_eq!(allocated, vec![0, 1, 10, 12, 13, 18]);
    }

    #[test]
    fn dynamic_large_sparse() {
        let dir = tempfile::tempdir().unwrap();
        let size = 1300 * MIB + 512;
        let raw_p = dir.path().join("big.raw");
        let raw = make_raw(&raw_p, size, &[(0, 65536), (700 * MIB + 3 * 65536, 65536), (size - 512, 512)], &[(100 * MIB, 4 * MIB)]);
        let bat = check_dynamic(&raw_p, &raw, size, dir.path());
        assert_eq!(bat.len(), 651);
        assert_eq!(bat.iter().filter(|e| **e != u32::MAX).count(), 3);
    }

    #[test]
    fn detect_kinds_and_bad_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let (_, raw) = small_raw(dir.path());
        let s = spec(SMALL);
        // Not a VHD.
        assert_eq!(detect(&raw).unwrap(), None);
        // Dynamic, detected from the copy at 0 when the end footer is gone.
        let d = dir.path().join("d.vhd");
        write_dynamic(&raw, &s, &d);
        let df = File::options().read(true).write(true).open(&d).unwrap();
        let len = df.metadata().unwrap().len();
        df.set_len(len - 512).unwrap();
        assert_eq!(find_footer(&df).unwrap().unwrap().0, 0);
        assert_eq!(detect(&df).unwrap(), Some(VhdKind::Dynamic));
        // Old Virtual PC 511-byte footer.
        let v = dir.path().join("v.vhd");
        let vf = File::options().read(true).write(true).create(true).truncate(true).open(&v).unwrap();
        vf.set_len(MIB).unwrap();
        vf.write_all_at(&fixed_footer(&spec(MIB), MIB)[..511], MIB).unwrap();
        assert_eq!(find_footer(&vf).unwrap().unwrap().0, MIB);
        assert_eq!(detect(&vf).unwrap(), Some(VhdKind::Fixed));
        // Corrupted checksum.
        let x = dir.path().join("x.vhd");
        write_fixed(&raw, &s, &x);
        let xf = File::options().read(true).write(true).open(&x).unwrap();
        let end = xf.metadata().unwrap().len() - 512;
        xf.write_all_at(&[0x7f], end + 200).unwrap();
        let e = detect(&xf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("bad checksum"), "{e}");
        assert!(e.to_string().contains(&format!("offset {end}")), "{e}");
    }

    #[test]
    fn refuses_too_big() {
        let dir = tempfile::tempdir().unwrap();
        let f = File::create(dir.path().join("x")).unwrap();
        assert!(FixedVhdWriter::new(f.try_clone().unwrap(), &spec(MAX_SIZE + MIB)).is_err());
        assert!(DynamicVhdWriter::new(f, &spec(MAX_SIZE + 512)).is_err());
    }
}
