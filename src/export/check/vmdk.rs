//! The strict streamOptimized VMDK walker.
//!
//! The stream is read strictly front to back through [`Stream`], which checks every read against
//! the bytes left in the file (and a cap) before allocating, so a header or marker that claims
//! more than the file holds is a [`CheckError::Truncated`] or [`CheckError::TooBig`].

use std::collections::HashMap;
use std::io::{BufReader, Read, Seek, SeekFrom};

use libdeflater::Decompressor;

use super::section::{byte, bytes, bytes_mut, le16, le32, le64, to_usize};
use super::{CheckError, Where};
use crate::export::spec::is_zero;
use crate::export::vmdk::{FLAGS, GD_AT_END, GRAIN_SECTORS, GTES_PER_GT, MAGIC, MARKER_EOS, MARKER_FOOTER, MARKER_GD, MARKER_GT, SECTOR};

/// Largest embedded descriptor accepted: imgforge and qemu write 20 sectors (10 KiB).
pub const MAX_DESCRIPTOR: u64 = 1 << 20;
/// Largest compressed grain accepted: a 64 KiB grain deflates to at most ~64.1 KiB even when
/// incompressible, so 1 MiB only rejects nonsense and bounds the allocation.
pub const MAX_GRAIN_STREAM: u64 = 1 << 20;
/// Bytes in a grain.
const GRAIN_BYTES: usize = (GRAIN_SECTORS * SECTOR) as usize;
/// Sectors of a grain table.
const GT_SECTORS: u64 = GTES_PER_GT * 4 / SECTOR;

/// What [`check_stream_vmdk`] found.
#[allow(dead_code)] // a full report; verify reads part of it, tests the rest
#[derive(Debug, Clone, Default)]
pub struct VmdkReport {
    /// Virtual size in sectors (header `capacity`).
    pub capacity: u64,
    /// Descriptor text (NUL padding removed).
    pub descriptor: String,
    /// Grain markers found.
    pub grains: u64,
    /// Grain tables written.
    pub grain_tables: u64,
    /// Sector of the GD (footer `gdOffset`).
    pub gd_offset: u64,
    /// Total file size in bytes.
    pub file_size: u64,
    /// Sum of the compressed grain sizes.
    pub compressed_bytes: u64,
}

/// Walks a streamOptimized VMDK and checks that it is exactly in the canonical stream order:
/// header (v3, flags 0x30001, gdOffset = GD_AT_END) and descriptor, then per grain table its
/// grain markers in ascending LBA and its GT, then GD, FOOTER (header copy with the real
/// gdOffset) and EOS as the last sector. Every GTE must point at the grain marker with the right
/// LBA, every GDE at a GT, and every grain must inflate to 64 KiB (or the disk's tail).
#[cfg(test)]
pub fn check_stream_vmdk(r: impl Read + Seek) -> Result<VmdkReport, CheckError> {
    check_stream_vmdk_with(r, &mut |_, _| {})
}

/// [`check_stream_vmdk`], handing every decompressed grain to `on_grain(byte_offset, data)`
/// (e.g. to compare it with the raw input).
pub fn check_stream_vmdk_with(r: impl Read + Seek, on_grain: &mut dyn FnMut(u64, &[u8])) -> Result<VmdkReport, CheckError> {
    let mut s = Stream::open(r)?;
    let (hdr, descriptor) = read_prologue(&mut s)?;
    let mut w = Walk::new(hdr, descriptor, s.file_size, on_grain);
    loop {
        if s.left() == 0 {
            return Err(CheckError::bad("stream", Where::Sector(s.sector), "the file ends without an EOS marker"));
        }
        let m = Marker::read(&mut s)?;
        if m.size != 0 {
            w.grain(&mut s, &m)?;
        } else if let Some(rep) = w.metadata(&mut s, &m)? {
            return Ok(rep);
        }
    }
}

/// Sparse header fields that vary (the fixed ones are checked by [`parse_header`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    capacity: u64,
    desc_offset: u64,
    desc_size: u64,
    gd_offset: u64,
    overhead: u64,
}

/// `Err(Field)` unless `found == expected`.
fn expect<T: PartialEq + std::fmt::Display>(field: &'static str, at: Where, found: T, expected: T) -> Result<(), CheckError> {
    if found == expected { Ok(()) } else { Err(CheckError::field(field, at, found, expected)) }
}

/// Parses and checks the fixed fields of a sparse header (or footer) read from `sector`.
fn parse_header(h: &[u8], sector: u64) -> Result<Header, CheckError> {
    let at = Where::Sector(sector);
    let hex = |v: u32| format!("{v:#x}");
    expect("magicNumber", at, hex(le32(h, 0, "magicNumber")?), hex(MAGIC))?;
    expect("version", at, le32(h, 4, "version")?, 3)?;
    expect("flags", at, hex(le32(h, 8, "flags")?), hex(FLAGS))?;
    expect("grainSize", at, le64(h, 20, "grainSize")?, GRAIN_SECTORS)?;
    expect("numGTEsPerGT", at, u64::from(le32(h, 44, "numGTEsPerGT")?), GTES_PER_GT)?;
    expect("rgdOffset", at, le64(h, 48, "rgdOffset")?, 0)?;
    let nl = bytes(h, 73, 4, "newline check characters")?;
    if nl != b"\n \r\n" {
        let found = nl.escape_ascii().to_string();
        return Err(CheckError::field("newline check characters", at, found, "\\n \\r\\n (file was transferred in text mode?)"));
    }
    expect("compressAlgorithm", at, le16(h, 77, "compressAlgorithm")?, 1)?;
    expect("uncleanShutdown", at, byte(h, 72, "uncleanShutdown")?, 0)?;
    if !h.get(79..).is_some_and(is_zero) {
        return Err(CheckError::bad("header padding", at, "is not zero"));
    }
    Ok(Header {
        capacity: le64(h, 12, "capacity")?,
        desc_offset: le64(h, 28, "descriptorOffset")?,
        desc_size: le64(h, 36, "descriptorSize")?,
        gd_offset: le64(h, 56, "gdOffset")?,
        overhead: le64(h, 64, "overHead")?,
    })
}

/// The VMDK being walked: a buffered reader, the file size and the next sector to read.
struct Stream<R> {
    r: BufReader<R>,
    file_size: u64,
    sector: u64,
}

impl<R: Read + Seek> Stream<R> {
    fn open(r: R) -> Result<Self, CheckError> {
        let mut r = BufReader::with_capacity(1 << 20, r);
        let seek = |source| CheckError::Io { what: "seeking in the VMDK".into(), source };
        let file_size = r.seek(SeekFrom::End(0)).map_err(seek)?;
        r.seek(SeekFrom::Start(0)).map_err(seek)?;
        if !file_size.is_multiple_of(SECTOR) {
            return Err(CheckError::Unaligned { what: "VMDK", size: file_size });
        }
        Ok(Self { r, file_size, sector: 0 })
    }

    /// Bytes left from the next sector to the end of the file.
    fn left(&self) -> u64 {
        self.file_size.saturating_sub(self.sector.saturating_mul(SECTOR))
    }

    /// Checks that `what`, `len` bytes at the next sector, lies within the file and under `cap`.
    fn room(&self, what: &str, len: u64, cap: u64) -> Result<usize, CheckError> {
        let at = Where::Sector(self.sector);
        if len > self.left() {
            return Err(CheckError::Truncated { what: what.into(), at, need: len, have: self.left() });
        }
        if len > cap {
            return Err(CheckError::TooBig { what: what.into(), at, size: len, cap });
        }
        to_usize(len, "read length", at)
    }

    /// Fills `buf` (whole sectors) from the next sector on.
    fn read(&mut self, what: &str, buf: &mut [u8]) -> Result<(), CheckError> {
        let len = buf.len() as u64;
        self.room(what, len, u64::MAX)?;
        let at = Where::Sector(self.sector);
        self.r.read_exact(buf).map_err(|source| CheckError::Read { what: what.into(), at, source })?;
        // Within the file, so no overflow.
        self.sector += len.div_ceil(SECTOR);
        Ok(())
    }

    /// Reads `sectors` sectors (at most `cap` bytes) into a new buffer.
    fn read_sectors(&mut self, what: &'static str, sectors: u64, cap: u64) -> Result<Vec<u8>, CheckError> {
        let at = Where::Sector(self.sector);
        let len =
            sectors.checked_mul(SECTOR).ok_or_else(|| CheckError::Overflow { what, at, expr: format!("{sectors} sectors × 512") })?;
        let mut buf = vec![0u8; self.room(what, len, cap)?];
        self.read(what, &mut buf)?;
        Ok(buf)
    }
}

/// Reads and checks the header, the descriptor and the zero fill up to `overHead`.
fn read_prologue<R: Read + Seek>(s: &mut Stream<R>) -> Result<(Header, String), CheckError> {
    let mut h = [0u8; 512];
    s.read("header", &mut h)?;
    let hdr = parse_header(&h, 0)?;
    check_stream_header(&hdr)?;
    let descriptor = read_descriptor(s, &hdr)?;
    check_fill(s, hdr.overhead)?;
    Ok((hdr, descriptor))
}

/// The header checks specific to a stream: gdOffset, capacity, descriptor placement.
fn check_stream_header(h: &Header) -> Result<(), CheckError> {
    let at = Where::Sector(0);
    if h.gd_offset != GD_AT_END {
        return Err(CheckError::field("gdOffset", at, format!("{:#x}", h.gd_offset), "GD_AT_END (0xffffffffffffffff) in a stream"));
    }
    if h.capacity == 0 {
        return Err(CheckError::field("capacity", at, 0, "at least 1 sector"));
    }
    if h.capacity.checked_mul(SECTOR).is_none() {
        return Err(CheckError::Overflow { what: "capacity", at, expr: format!("{} sectors × 512", h.capacity) });
    }
    expect("descriptorOffset", at, h.desc_offset, 1)?;
    if h.desc_size == 0 || h.desc_size.checked_add(1).is_none_or(|end| end > h.overhead) {
        let expected = format!("1 to {} sectors (to end before overHead {})", h.overhead.saturating_sub(1), h.overhead);
        return Err(CheckError::field("descriptorSize", at, h.desc_size, expected));
    }
    Ok(())
}

/// Reads the descriptor (sector 1, `descriptorSize` sectors) and checks its text.
fn read_descriptor<R: Read + Seek>(s: &mut Stream<R>, hdr: &Header) -> Result<String, CheckError> {
    let desc = s.read_sectors("descriptor", hdr.desc_size, MAX_DESCRIPTOR)?;
    let at = Where::Sector(1);
    let text_len = desc.iter().position(|&b| b == 0).unwrap_or(desc.len());
    let (text, padding) = desc.split_at(text_len);
    if !is_zero(padding) {
        return Err(CheckError::bad("descriptor", at, "the padding after the text is not all NUL"));
    }
    let text = String::from_utf8(text.to_vec()).map_err(|e| CheckError::bad("descriptor", at, format!("is not UTF-8 ({e})")))?;
    if !text.lines().any(|l| l == "createType=\"streamOptimized\"") {
        return Err(CheckError::bad("descriptor", at, "lacks createType=\"streamOptimized\""));
    }
    let extent = text
        .lines()
        .find(|l| l.starts_with("RW ") || l.starts_with("RDONLY "))
        .ok_or_else(|| CheckError::bad("descriptor", at, "has no extent line"))?;
    let mut words = extent.split_whitespace().skip(1);
    let sectors: Option<u64> = words.next().and_then(|w| w.parse().ok());
    if sectors != Some(hdr.capacity) || words.next() != Some("SPARSE") {
        let problem = format!("extent line {extent:?} does not match capacity {} SPARSE", hdr.capacity);
        return Err(CheckError::bad("descriptor", at, problem));
    }
    Ok(text)
}

/// Checks that the sectors from after the descriptor up to `overhead` are zeros, a grain at a time.
fn check_fill<R: Read + Seek>(s: &mut Stream<R>, overhead: u64) -> Result<(), CheckError> {
    let mut left = overhead.saturating_sub(s.sector);
    let len = left.checked_mul(SECTOR).ok_or_else(|| CheckError::Overflow {
        what: "zero fill",
        at: Where::Sector(s.sector),
        expr: format!("{left} sectors × 512"),
    })?;
    s.room("zero fill before overHead", len, u64::MAX)?;
    let mut buf = vec![0u8; GRAIN_BYTES];
    while left > 0 {
        let n = left.min(GRAIN_SECTORS);
        let at = Where::Sector(s.sector);
        let chunk = bytes_mut(&mut buf, 0, to_usize(n * SECTOR, "zero fill", at)?, "zero fill")?;
        s.read("zero fill", chunk)?;
        if !is_zero(chunk) {
            return Err(CheckError::bad("zero fill", at, "bytes between the descriptor and overHead are not zero"));
        }
        left -= n;
    }
    Ok(())
}

/// One marker sector: `num` is the LBA (grain) or numSectors (metadata), `size` the compressed
/// size (0 for metadata), `kind` the metadata type.
struct Marker {
    sector: u64,
    num: u64,
    size: u32,
    kind: u32,
    raw: [u8; 512],
}

impl Marker {
    fn read<R: Read + Seek>(s: &mut Stream<R>) -> Result<Self, CheckError> {
        let sector = s.sector;
        let mut raw = [0u8; 512];
        s.read("marker", &mut raw)?;
        let (num, size, kind) = (le64(&raw, 0, "marker value")?, le32(&raw, 8, "marker size")?, le32(&raw, 12, "marker type")?);
        Ok(Self { sector, num, size, kind, raw })
    }
}

/// The walk's state after the prologue.
struct Walk<'a> {
    hdr: Header,
    grains_total: u64,
    tables_total: u64,
    /// Bytes of the last grain.
    tail: usize,
    rep: VmdkReport,
    /// (marker sector, grain index) of grains not yet covered by a GT.
    pending: Vec<(u64, u64)>,
    last_grain: Option<u64>,
    /// Table index -> sector of its GT data.
    gts: HashMap<u64, u64>,
    last_table: Option<u64>,
    /// Sector of the GD data, once seen.
    gd_seen: Option<u64>,
    footer_seen: bool,
    dec: Decompressor,
    /// A grain marker and its data.
    buf: Vec<u8>,
    /// One inflated grain.
    out: Vec<u8>,
    on_grain: &'a mut dyn FnMut(u64, &[u8]),
}

impl<'a> Walk<'a> {
    fn new(hdr: Header, descriptor: String, file_size: u64, on_grain: &'a mut dyn FnMut(u64, &[u8])) -> Self {
        let grains_total = hdr.capacity.div_ceil(GRAIN_SECTORS);
        let tail_sectors = match hdr.capacity % GRAIN_SECTORS {
            0 => GRAIN_SECTORS,
            r => r,
        };
        Walk {
            hdr,
            grains_total,
            tables_total: grains_total.div_ceil(GTES_PER_GT),
            tail: (tail_sectors * SECTOR) as usize, // at most 64 KiB
            rep: VmdkReport { capacity: hdr.capacity, descriptor, file_size, ..Default::default() },
            pending: Vec::new(),
            last_grain: None,
            gts: HashMap::new(),
            last_table: None,
            gd_seen: None,
            footer_seen: false,
            dec: Decompressor::new(),
            buf: Vec::new(),
            out: vec![0u8; GRAIN_BYTES],
            on_grain,
        }
    }

    /// A grain marker: order, data, inflation; hands the grain to `on_grain`.
    fn grain<R: Read + Seek>(&mut self, s: &mut Stream<R>, m: &Marker) -> Result<(), CheckError> {
        let at = Where::Sector(m.sector);
        let grain = self.grain_index(m)?;
        let data_end = read_grain(s, m, &mut self.buf)?;
        let want = if grain + 1 == self.grains_total { self.tail } else { GRAIN_BYTES };
        let lba = m.num;
        let input = bytes(&self.buf, 12, data_end.saturating_sub(12), "grain data")?;
        let out = bytes_mut(&mut self.out, 0, want, "inflated grain")?;
        let n = self
            .dec
            .zlib_decompress(input, out)
            .map_err(|e| CheckError::bad(format!("grain at LBA {lba}"), at, format!("does not inflate: {e}")))?;
        if n != want {
            return Err(CheckError::bad(format!("grain at LBA {lba}"), at, format!("inflates to {n} bytes (expected {want})")));
        }
        // lba < capacity, and capacity × 512 was checked not to overflow.
        (self.on_grain)(lba * SECTOR, out);
        self.rep.grains += 1;
        self.rep.compressed_bytes += u64::from(m.size);
        self.pending.push((m.sector, grain));
        self.last_grain = Some(grain);
        Ok(())
    }

    /// Checks a grain marker's place in the stream; returns its grain index.
    fn grain_index(&self, m: &Marker) -> Result<u64, CheckError> {
        let (lba, at) = (m.num, Where::Sector(m.sector));
        let bad = |problem: String| Err(CheckError::bad("grain marker", at, problem));
        if self.gd_seen.is_some() {
            return bad("after the GD".into());
        }
        if !lba.is_multiple_of(GRAIN_SECTORS) || lba >= self.hdr.capacity {
            return bad(format!("bad LBA {lba} (capacity {} sectors)", self.hdr.capacity));
        }
        let grain = lba / GRAIN_SECTORS;
        let table = grain / GTES_PER_GT;
        if self.last_grain.is_some_and(|g| grain <= g) {
            return bad(format!("LBA {lba} not ascending"));
        }
        if self.last_table.is_some_and(|t| table <= t) {
            return bad(format!("LBA {lba} belongs to a table already written"));
        }
        if let Some(&(_, g0)) = self.pending.first()
            && g0 / GTES_PER_GT != table
        {
            return bad(format!("table {table} started before the GT of table {}", g0 / GTES_PER_GT));
        }
        Ok(grain)
    }

    /// A metadata marker (GT, GD, FOOTER, EOS); returns the report at EOS.
    fn metadata<R: Read + Seek>(&mut self, s: &mut Stream<R>, m: &Marker) -> Result<Option<VmdkReport>, CheckError> {
        if !m.raw.get(16..).is_some_and(is_zero) {
            return Err(CheckError::bad("metadata marker", Where::Sector(m.sector), "padding is not zero"));
        }
        match m.kind {
            MARKER_GT => self.gt(s, m)?,
            MARKER_GD => self.gd(s, m)?,
            MARKER_FOOTER => self.footer(s, m)?,
            MARKER_EOS => return self.eos(s, m).map(Some),
            k => return Err(CheckError::bad("marker", Where::Sector(m.sector), format!("unknown marker type {k}"))),
        }
        Ok(None)
    }

    /// A GT marker and its table: entry i must point at the marker of grain i of the table.
    fn gt<R: Read + Seek>(&mut self, s: &mut Stream<R>, m: &Marker) -> Result<(), CheckError> {
        let at = Where::Sector(m.sector);
        if self.gd_seen.is_some() || m.num != GT_SECTORS {
            return Err(CheckError::bad("GT marker", at, format!("numSectors {} (expected {GT_SECTORS}), or after the GD", m.num)));
        }
        let table = match self.pending.first() {
            Some(&(_, g)) => g / GTES_PER_GT,
            None => self.last_table.map_or(0, |t| t + 1),
        };
        if table >= self.tables_total {
            return Err(CheckError::bad("GT marker", at, format!("for table {table}, beyond the disk's {} tables", self.tables_total)));
        }
        let gt_sector = s.sector;
        let gt = s.read_sectors("GT", GT_SECTORS, GT_SECTORS * SECTOR)?;
        let mut expect: HashMap<u64, u64> = self.pending.iter().map(|&(s, g)| (g % GTES_PER_GT, s)).collect();
        for i in 0..GTES_PER_GT {
            let found = u64::from(le32(&gt, (i * 4) as usize, "GT entry")?);
            let expected = expect.remove(&i).unwrap_or(0);
            if found != expected {
                return Err(CheckError::Entry { table: format!("GT {table}"), at: Where::Sector(gt_sector), entry: i, found, expected });
            }
        }
        self.gts.insert(table, gt_sector);
        self.last_table = Some(table);
        self.rep.grain_tables += 1;
        self.pending.clear();
        Ok(())
    }

    /// The GD marker and directory: entry t must be the sector of table t's GT, or 0 if none.
    fn gd<R: Read + Seek>(&mut self, s: &mut Stream<R>, m: &Marker) -> Result<(), CheckError> {
        let at = Where::Sector(m.sector);
        if self.gd_seen.is_some() || !self.pending.is_empty() {
            return Err(CheckError::bad("GD marker", at, "duplicate, or grains without a GT"));
        }
        // tables_total <= 2^64 / 2^16, so × 4 fits.
        let entry_bytes = self.tables_total * 4;
        let gd_sectors = entry_bytes.div_ceil(SECTOR);
        if m.num != gd_sectors {
            return Err(CheckError::bad("GD marker", at, format!("numSectors {}, expected {gd_sectors}", m.num)));
        }
        let gd_sector = s.sector;
        let gd = s.read_sectors("GD", gd_sectors, u64::MAX)?;
        let gd_at = Where::Sector(gd_sector);
        for t in 0..self.tables_total {
            let found = u64::from(le32(&gd, to_usize(t * 4, "GD entry", gd_at)?, "GD entry")?);
            let expected = self.gts.get(&t).copied().unwrap_or(0);
            if found != expected {
                return Err(CheckError::Entry { table: "GD".into(), at: gd_at, entry: t, found, expected });
            }
        }
        if !gd.get(to_usize(entry_bytes, "GD", gd_at)?..).is_some_and(is_zero) {
            return Err(CheckError::bad("GD", gd_at, "padding is not zero"));
        }
        self.gd_seen = Some(gd_sector);
        Ok(())
    }

    /// The FOOTER marker and footer: a header copy whose gdOffset is the GD's sector.
    fn footer<R: Read + Seek>(&mut self, s: &mut Stream<R>, m: &Marker) -> Result<(), CheckError> {
        let at = Where::Sector(m.sector);
        let Some(gd) = self.gd_seen else { return Err(CheckError::bad("FOOTER marker", at, "before the GD")) };
        if m.num != 1 || self.footer_seen {
            return Err(CheckError::bad("FOOTER marker", at, format!("numSectors {} (expected 1), or duplicate", m.num)));
        }
        let footer_sector = s.sector;
        let mut f = [0u8; 512];
        s.read("footer", &mut f)?;
        let foot = parse_header(&f, footer_sector)?;
        let fat = Where::Sector(footer_sector);
        expect("footer gdOffset", fat, foot.gd_offset, gd)?;
        if (Header { gd_offset: self.hdr.gd_offset, ..foot }) != self.hdr {
            return Err(CheckError::bad("footer", fat, format!("does not match the header ({foot:?} vs {:?})", self.hdr)));
        }
        self.rep.gd_offset = gd;
        self.footer_seen = true;
        Ok(())
    }

    /// The EOS marker: after the footer, and the file's last sector.
    fn eos<R: Read + Seek>(&mut self, s: &Stream<R>, m: &Marker) -> Result<VmdkReport, CheckError> {
        let at = Where::Sector(m.sector);
        if !self.footer_seen || m.num != 0 {
            return Err(CheckError::bad("EOS marker", at, format!("before the footer, or numSectors {} (expected 0)", m.num)));
        }
        if s.left() != 0 {
            return Err(CheckError::bad("EOS marker", at, format!("{} bytes follow it", s.left())));
        }
        Ok(std::mem::take(&mut self.rep))
    }
}

/// Reads grain marker `m`'s data into `buf` (marker sector included) and checks its zero padding;
/// returns the end of the compressed data in `buf`.
fn read_grain<R: Read + Seek>(s: &mut Stream<R>, m: &Marker, buf: &mut Vec<u8>) -> Result<usize, CheckError> {
    let at = Where::Sector(m.sector);
    let size = u64::from(m.size);
    if size > MAX_GRAIN_STREAM {
        return Err(CheckError::TooBig { what: "grain marker's compressed data".into(), at, size, cap: MAX_GRAIN_STREAM });
    }
    // size <= 1 MiB: no overflow below.
    let total = (12 + size).div_ceil(SECTOR) * SECTOR;
    let rest = s.room("grain data", total - SECTOR, u64::MAX)?;
    buf.clear();
    buf.extend_from_slice(&m.raw);
    buf.resize(m.raw.len() + rest, 0);
    s.read("grain data", bytes_mut(buf, m.raw.len(), rest, "grain data")?)?;
    let data_end = 12 + size as usize;
    if !buf.get(data_end..).is_some_and(is_zero) {
        return Err(CheckError::bad("grain marker", at, "padding is not zero"));
    }
    Ok(data_end)
}
