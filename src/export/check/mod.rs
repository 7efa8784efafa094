//! Structural readers for the export formats: a strict streamOptimized VMDK walker and an OVA
//! (tar + OVF + manifest) cross-checker. Used by the tests and by `imgforge export --verify`.
//!
//! Both are strict about what imgforge writes (canonical stream order, one disk per OVA) rather
//! than lenient readers of every variant in the wild.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::vmdk::{FLAGS, GD_AT_END, GRAIN_SECTORS, GTES_PER_GT, MAGIC, MARKER_EOS, MARKER_FOOTER, MARKER_GD, MARKER_GT, SECTOR};

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

fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn rd<R: Read>(r: &mut R, buf: &mut [u8], what: &str, sector: u64) -> Result<(), String> {
    r.read_exact(buf).map_err(|e| format!("reading {what} at sector {sector}: {e}"))
}

/// Parses and checks a sparse header; returns `(capacity, descriptor_offset, descriptor_size, gd_offset, overhead)`.
fn parse_header(h: &[u8]) -> Result<(u64, u64, u64, u64, u64), String> {
    if le32(h, 0) != MAGIC {
        return Err("bad VMDK magic".into());
    }
    if le32(h, 4) != 3 {
        return Err(format!("VMDK version {} (expected 3)", le32(h, 4)));
    }
    if le32(h, 8) != FLAGS {
        return Err(format!("VMDK flags {:#x} (expected {FLAGS:#x})", le32(h, 8)));
    }
    if le64(h, 20) != GRAIN_SECTORS {
        return Err(format!("grainSize {} (expected 128)", le64(h, 20)));
    }
    if le32(h, 44) as u64 != GTES_PER_GT {
        return Err(format!("numGTEsPerGT {} (expected 512)", le32(h, 44)));
    }
    if le64(h, 48) != 0 {
        return Err("rgdOffset is not 0".into());
    }
    if &h[73..77] != b"\n \r\n" {
        return Err("bad newline check characters (file was transferred in text mode?)".into());
    }
    if u16::from_le_bytes([h[77], h[78]]) != 1 {
        return Err("compressAlgorithm is not 1 (deflate)".into());
    }
    if h[72] != 0 || h[79..].iter().any(|&b| b != 0) {
        return Err("uncleanShutdown or header padding is not zero".into());
    }
    Ok((le64(h, 12), le64(h, 28), le64(h, 36), le64(h, 56), le64(h, 64)))
}

/// Walks a streamOptimized VMDK and checks that it is exactly in the canonical stream order:
/// header (v3, flags 0x30001, gdOffset = GD_AT_END) and descriptor, then per grain table its
/// grain markers in ascending LBA and its GT, then GD, FOOTER (header copy with the real
/// gdOffset) and EOS as the last sector. Every GTE must point at the grain marker with the right
/// LBA, every GDE at a GT, and every grain must inflate to 64 KiB (or the disk's tail).
#[cfg(test)]
pub fn check_stream_vmdk(r: impl Read + Seek) -> Result<VmdkReport, String> {
    check_stream_vmdk_with(r, &mut |_, _| {})
}

/// [`check_stream_vmdk`], handing every decompressed grain to `on_grain(byte_offset, data)`
/// (e.g. to compare it with the raw input).
pub fn check_stream_vmdk_with(r: impl Read + Seek, on_grain: &mut dyn FnMut(u64, &[u8])) -> Result<VmdkReport, String> {
    let mut r = BufReader::with_capacity(1 << 20, r);
    let file_size = r.seek(SeekFrom::End(0)).map_err(|e| format!("seek: {e}"))?;
    r.seek(SeekFrom::Start(0)).map_err(|e| format!("seek: {e}"))?;
    if !file_size.is_multiple_of(SECTOR) {
        return Err(format!("file size {file_size} is not a multiple of 512"));
    }
    let mut header = [0u8; 512];
    rd(&mut r, &mut header, "header", 0)?;
    let (capacity, desc_off, desc_size, gd_off, overhead) = parse_header(&header)?;
    if gd_off != GD_AT_END {
        return Err(format!("header gdOffset {gd_off:#x} (expected GD_AT_END in a stream)"));
    }
    if capacity == 0 {
        return Err("capacity is 0".into());
    }
    if desc_off != 1 || desc_size == 0 || 1 + desc_size > overhead {
        return Err(format!("descriptor at {desc_off}+{desc_size} does not fit before overHead {overhead}"));
    }
    let mut desc = vec![0u8; (desc_size * SECTOR) as usize];
    rd(&mut r, &mut desc, "descriptor", 1)?;
    let text_len = desc.iter().position(|&b| b == 0).unwrap_or(desc.len());
    if desc[text_len..].iter().any(|&b| b != 0) {
        return Err("descriptor padding is not all NUL".into());
    }
    let descriptor = String::from_utf8(desc[..text_len].to_vec()).map_err(|_| "descriptor is not UTF-8".to_string())?;
    if !descriptor.lines().any(|l| l == "createType=\"streamOptimized\"") {
        return Err("descriptor lacks createType=\"streamOptimized\"".into());
    }
    let extent = descriptor.lines().find(|l| l.starts_with("RW ") || l.starts_with("RDONLY ")).ok_or("descriptor has no extent line")?;
    let ext_sectors: u64 = extent.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or("bad extent line")?;
    if ext_sectors != capacity || extent.split_whitespace().nth(2) != Some("SPARSE") {
        return Err(format!("extent line {extent:?} does not match capacity {capacity} SPARSE"));
    }
    let mut fill = vec![0u8; ((overhead - 1 - desc_size) * SECTOR) as usize];
    rd(&mut r, &mut fill, "zero fill", 1 + desc_size)?;
    if fill.iter().any(|&b| b != 0) {
        return Err("bytes between descriptor and overHead are not zero".into());
    }

    let grains_total = capacity.div_ceil(GRAIN_SECTORS);
    let tables_total = grains_total.div_ceil(GTES_PER_GT);
    let tail = ((capacity - (grains_total - 1) * GRAIN_SECTORS) * SECTOR) as usize;
    let mut rep = VmdkReport { capacity, descriptor, file_size, ..Default::default() };
    let mut sector = overhead;
    // Grain marker sector -> grain index, for grains not yet covered by a GT.
    let mut pending: Vec<(u64, u64)> = Vec::new();
    let mut last_grain: Option<u64> = None;
    // GT data sector -> table index.
    let mut gts: HashMap<u64, u64> = HashMap::new();
    let mut last_table: Option<u64> = None;
    let mut gd_seen: Option<u64> = None;
    let mut footer_seen = false;
    let mut dec = libdeflater::Decompressor::new();
    let mut out = vec![0u8; 65536];
    let mut sec = [0u8; 512];
    loop {
        if sector * SECTOR >= file_size {
            return Err("file ends without an EOS marker".into());
        }
        rd(&mut r, &mut sec, "marker", sector)?;
        let num = le64(&sec, 0);
        let size = le32(&sec, 8);
        if size != 0 {
            if gd_seen.is_some() {
                return Err(format!("grain marker at sector {sector} after the GD"));
            }
            let lba = num;
            if !lba.is_multiple_of(GRAIN_SECTORS) || lba >= capacity {
                return Err(format!("grain marker at sector {sector}: bad LBA {lba}"));
            }
            let grain = lba / GRAIN_SECTORS;
            if last_grain.is_some_and(|g| grain <= g) {
                return Err(format!("grain marker at sector {sector}: LBA {lba} not ascending"));
            }
            if last_table.is_some_and(|t| grain / GTES_PER_GT <= t) {
                return Err(format!("grain marker at sector {sector}: LBA {lba} belongs to a table already written"));
            }
            if let Some(&(_, g0)) = pending.first()
                && g0 / GTES_PER_GT != grain / GTES_PER_GT
            {
                return Err(format!(
                    "grain marker at sector {sector}: table {} started before the GT of table {}",
                    grain / GTES_PER_GT,
                    g0 / GTES_PER_GT
                ));
            }
            let total = (12 + size as u64).div_ceil(SECTOR) * SECTOR;
            let mut buf = vec![0u8; total as usize];
            buf[..512].copy_from_slice(&sec);
            rd(&mut r, &mut buf[512..], "grain", sector + 1)?;
            let data_end = 12 + size as usize;
            if buf[data_end..].iter().any(|&b| b != 0) {
                return Err(format!("grain marker at sector {sector}: padding is not zero"));
            }
            let want = if grain == grains_total - 1 { tail } else { 65536 };
            let n = dec
                .zlib_decompress(&buf[12..data_end], &mut out[..want])
                .map_err(|e| format!("grain at LBA {lba} (sector {sector}) does not inflate: {e}"))?;
            if n != want {
                return Err(format!("grain at LBA {lba} inflates to {n} bytes (expected {want})"));
            }
            on_grain(lba * SECTOR, &out[..want]);
            rep.grains += 1;
            rep.compressed_bytes += size as u64;
            pending.push((sector, grain));
            last_grain = Some(grain);
            sector += total / SECTOR;
            continue;
        }
        let kind = le32(&sec, 12);
        if sec[16..].iter().any(|&b| b != 0) {
            return Err(format!("metadata marker at sector {sector}: padding is not zero"));
        }
        match kind {
            MARKER_GT => {
                if gd_seen.is_some() || num != 4 {
                    return Err(format!("GT marker at sector {sector}: numSectors {num} or after GD"));
                }
                let table = match pending.first() {
                    Some(&(_, g)) => g / GTES_PER_GT,
                    None => last_table.map_or(0, |t| t + 1),
                };
                if table >= tables_total {
                    return Err(format!("GT at sector {sector} is for table {table}, beyond the disk"));
                }
                let mut gt = vec![0u8; 2048];
                rd(&mut r, &mut gt, "GT", sector + 1)?;
                let mut expect: HashMap<u64, u64> = pending.iter().map(|&(s, g)| (g % GTES_PER_GT, s)).collect();
                for i in 0..GTES_PER_GT {
                    let e = le32(&gt, (i * 4) as usize) as u64;
                    let want = expect.remove(&i).unwrap_or(0);
                    if e != want {
                        return Err(format!("GT {table} (sector {}) entry {i} = {e}, expected {want}", sector + 1));
                    }
                }
                gts.insert(sector + 1, table);
                last_table = Some(table);
                rep.grain_tables += 1;
                pending.clear();
                sector += 5;
            }
            MARKER_GD => {
                if gd_seen.is_some() || !pending.is_empty() {
                    return Err(format!("GD marker at sector {sector}: duplicate, or grains without a GT"));
                }
                let gd_sectors = (tables_total * 4).div_ceil(SECTOR);
                if num != gd_sectors {
                    return Err(format!("GD marker at sector {sector}: numSectors {num}, expected {gd_sectors}"));
                }
                let mut gd = vec![0u8; (gd_sectors * SECTOR) as usize];
                rd(&mut r, &mut gd, "GD", sector + 1)?;
                let mut seen = 0;
                for t in 0..tables_total {
                    let e = le32(&gd, (t * 4) as usize) as u64;
                    if e != 0 {
                        if gts.get(&e) != Some(&t) {
                            return Err(format!("GD entry {t} = {e} does not point at GT {t}"));
                        }
                        seen += 1;
                    }
                }
                if seen != gts.len() || gd[(tables_total * 4) as usize..].iter().any(|&b| b != 0) {
                    return Err("GD does not reference every GT, or its padding is not zero".into());
                }
                gd_seen = Some(sector + 1);
                sector += 1 + gd_sectors;
            }
            MARKER_FOOTER => {
                let Some(gd) = gd_seen else { return Err(format!("FOOTER at sector {sector} before the GD")) };
                if num != 1 || footer_seen {
                    return Err(format!("FOOTER marker at sector {sector}: numSectors {num} or duplicate"));
                }
                let mut f = [0u8; 512];
                rd(&mut r, &mut f, "footer", sector + 1)?;
                let (fcap, fdo, fds, fgd, fov) = parse_header(&f)?;
                if (fcap, fdo, fds, fov) != (capacity, desc_off, desc_size, overhead) || fgd != gd {
                    return Err(format!("footer does not match the header (footer gdOffset {fgd}, GD at {gd})"));
                }
                rep.gd_offset = fgd;
                footer_seen = true;
                sector += 2;
            }
            MARKER_EOS => {
                if !footer_seen || num != 0 {
                    return Err(format!("EOS at sector {sector} before the footer, or numSectors {num}"));
                }
                if (sector + 1) * SECTOR != file_size {
                    return Err(format!("{} bytes after the EOS marker", file_size - (sector + 1) * SECTOR));
                }
                return Ok(rep);
            }
            k => return Err(format!("unknown marker type {k} at sector {sector}")),
        }
    }
}

/// One tar member found by [`check_ova`].
#[derive(Debug, Clone)]
pub struct TarMember {
    /// Member name.
    pub name: String,
    /// Offset of the member's data in the tar.
    pub offset: u64,
    /// Data size in bytes.
    pub size: u64,
}

/// What [`check_ova`] found.
#[allow(dead_code)] // a full report; verify reads part of it, tests the rest
#[derive(Debug, Clone)]
pub struct OvaReport {
    /// Members in tar order.
    pub members: Vec<TarMember>,
    /// Manifest text.
    pub manifest: String,
    /// OVF text.
    pub ovf: String,
    /// The disk's VMDK report.
    pub vmdk: VmdkReport,
}

/// Reads a tar header field as octal or GNU base-256.
fn tar_num(f: &[u8]) -> Result<u64, String> {
    if f[0] & 0x80 != 0 {
        let mut v: u64 = (f[0] & 0x7f) as u64;
        for &b in &f[1..] {
            v = v.checked_mul(256).and_then(|v| v.checked_add(b as u64)).ok_or("tar number overflow")?;
        }
        return Ok(v);
    }
    let s: String = f.iter().take_while(|&&b| b != 0 && b != b' ').map(|&b| b as char).collect();
    let s = s.trim_start();
    if s.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(s, 8).map_err(|_| format!("bad tar number {s:?}"))
}

/// Parses the tar at `f`: members (regular files only, ustar checksums valid) and the two zero
/// end blocks.
fn tar_members(f: &mut File, len: u64) -> Result<Vec<TarMember>, String> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    let mut h = [0u8; 512];
    loop {
        if pos + 1024 > len {
            return Err("tar ends without two zero blocks".into());
        }
        f.seek(SeekFrom::Start(pos)).map_err(|e| e.to_string())?;
        f.read_exact(&mut h).map_err(|e| format!("reading tar header at {pos}: {e}"))?;
        if h.iter().all(|&b| b == 0) {
            let mut h2 = [0u8; 512];
            f.read_exact(&mut h2).map_err(|e| e.to_string())?;
            if h2.iter().any(|&b| b != 0) {
                return Err(format!("single zero block at {pos}"));
            }
            let mut rest = Vec::new();
            f.read_to_end(&mut rest).map_err(|e| e.to_string())?;
            if rest.iter().any(|&b| b != 0) {
                return Err("non-zero bytes after the tar end blocks".into());
            }
            return Ok(out);
        }
        let sum: u64 = h.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { 32 } else { b as u64 }).sum();
        if tar_num(&h[148..156])? != sum {
            return Err(format!("bad tar header checksum at {pos}"));
        }
        if &h[257..263] != b"ustar\0" && &h[257..265] != b"ustar  \0" {
            return Err(format!("tar header at {pos} is not ustar/gnu"));
        }
        if h[156] != b'0' && h[156] != 0 {
            return Err(format!("tar member at {pos} is not a regular file (type {:?})", h[156] as char));
        }
        let cstr = |b: &[u8]| String::from_utf8_lossy(&b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())]).into_owned();
        let mut name = cstr(&h[0..100]);
        let prefix = cstr(&h[345..500]);
        if &h[257..263] == b"ustar\0" && !prefix.is_empty() {
            name = format!("{prefix}/{name}");
        }
        let size = tar_num(&h[124..136])?;
        out.push(TarMember { name, offset: pos + 512, size });
        pos += 512 + size.div_ceil(512) * 512;
    }
}

/// A byte range of a file as a `Read + Seek` (a tar member).
pub(crate) struct Section<'a> {
    f: &'a mut File,
    start: u64,
    len: u64,
    pos: u64,
}

impl<'a> Section<'a> {
    /// The `len` bytes of `f` from `start`.
    pub(crate) fn new(f: &'a mut File, start: u64, len: u64) -> Self {
        Self { f, start, len, pos: 0 }
    }
}

impl Read for Section<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.len.saturating_sub(self.pos)) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.f.seek(SeekFrom::Start(self.start + self.pos))?;
        let got = self.f.read(&mut buf[..n])?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl Seek for Section<'_> {
    fn seek(&mut self, p: SeekFrom) -> io::Result<u64> {
        let new = match p {
            SeekFrom::Start(s) => Some(s),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = new.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek out of range"))?;
        Ok(self.pos)
    }
}

fn read_member(f: &mut File, m: &TarMember) -> Result<Vec<u8>, String> {
    let mut b = vec![0u8; m.size as usize];
    f.seek(SeekFrom::Start(m.offset)).map_err(|e| e.to_string())?;
    f.read_exact(&mut b).map_err(|e| format!("reading {}: {e}", m.name))?;
    Ok(b)
}

fn digest_member(f: &mut File, m: &TarMember, alg: &str) -> Result<String, String> {
    f.seek(SeekFrom::Start(m.offset)).map_err(|e| e.to_string())?;
    let mut r = (&mut *f).take(m.size);
    let mut buf = vec![0u8; 1 << 20];
    let mut s256 = Sha256::new();
    let mut s1 = Sha1::new();
    loop {
        let n = r.read(&mut buf).map_err(|e| format!("reading {}: {e}", m.name))?;
        if n == 0 {
            break;
        }
        match alg {
            "SHA1" => s1.update(&buf[..n]),
            _ => s256.update(&buf[..n]),
        }
    }
    let d: Vec<u8> = match alg {
        "SHA1" => s1.finalize().to_vec(),
        _ => s256.finalize().to_vec(),
    };
    Ok(d.iter().map(|b| format!("{b:02x}")).collect())
}

/// Value of attribute `name` in the tag text `tag` (`name="value"`).
pub fn xml_attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let pat = format!(" {name}=\"");
    let i = tag.find(&pat)? + pat.len();
    let j = tag[i..].find('"')?;
    Some(&tag[i..i + j])
}

/// Every start tag `<name ...>` in `xml`, as the text between `<` and `>`.
pub fn xml_tags<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
    let pat = format!("<{name}");
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = xml[from..].find(&pat) {
        let s = from + i;
        let after = xml.as_bytes().get(s + pat.len()).copied();
        let Some(e) = xml[s..].find('>') else { break };
        if matches!(after, Some(b' ' | b'>' | b'/' | b'\n')) {
            out.push(&xml[s..s + e + 1]);
        }
        from = s + e + 1;
    }
    out
}

/// Text content of the first `<name>…</name>` element in `xml`.
pub fn xml_text<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let i = xml.find(&open)? + open.len();
    let j = xml[i..].find(&close)?;
    Some(&xml[i..i + j])
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}

/// Checks an OVA written by imgforge: tar members (`NAME.ovf`, `NAME.mf`, then the disk in
/// References order), manifest format and digests recomputed from the tar bytes, OVF
/// cross-references (References ↔ tar members, Disk ↔ File, Disk capacity ↔ VMDK capacity,
/// HostResource ↔ Disk, disk Item Parent ↔ a controller Item), and the VMDK structure.
#[cfg(test)]
pub fn check_ova(path: impl AsRef<Path>) -> Result<OvaReport, String> {
    check_ova_with(path, &mut |_, _| {})
}

/// [`check_ova`], handing every decompressed grain of the disk to `on_grain(byte_offset, data)`.
pub fn check_ova_with(path: impl AsRef<Path>, on_grain: &mut dyn FnMut(u64, &[u8])) -> Result<OvaReport, String> {
    let path = path.as_ref();
    let mut f = File::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    if !len.is_multiple_of(512) {
        return Err(format!("tar size {len} is not a multiple of 512"));
    }
    let members = tar_members(&mut f, len)?;
    if members.len() != 3 {
        return Err(format!("expected 3 tar members (ovf, mf, vmdk), found {}", members.len()));
    }
    let ovf_m = &members[0];
    let mf_m = &members[1];
    let disk_m = &members[2];
    let Some(base) = ovf_m.name.strip_suffix(".ovf") else { return Err(format!("first member {:?} is not the .ovf", ovf_m.name)) };
    if mf_m.name != format!("{base}.mf") {
        return Err(format!("second member {:?} is not {base}.mf", mf_m.name));
    }
    let ovf = String::from_utf8(read_member(&mut f, ovf_m)?).map_err(|_| "OVF is not UTF-8".to_string())?;
    let manifest = String::from_utf8(read_member(&mut f, mf_m)?).map_err(|_| "manifest is not UTF-8".to_string())?;

    // Manifest: one `ALG(name)= hex\n` line per member except itself.
    if !manifest.ends_with('\n') {
        return Err("manifest does not end with a newline".into());
    }
    let mut listed = Vec::new();
    for line in manifest.lines() {
        let (alg, rest) = line.split_once('(').ok_or_else(|| format!("bad manifest line {line:?}"))?;
        let (name, hex) = rest.rsplit_once(")= ").ok_or_else(|| format!("bad manifest line {line:?}"))?;
        let hex_len = match alg {
            "SHA1" => 40,
            "SHA256" => 64,
            _ => return Err(format!("manifest algorithm {alg:?} (expected SHA1 or SHA256)")),
        };
        if hex.len() != hex_len || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(format!("manifest digest for {name} is not {hex_len} lowercase hex digits"));
        }
        let m = members.iter().find(|m| m.name == name).ok_or_else(|| format!("manifest lists {name}, which is not in the tar"))?;
        if m.name == mf_m.name {
            return Err("manifest lists itself".into());
        }
        let actual = digest_member(&mut f, m, alg)?;
        if actual != hex {
            return Err(format!("{alg} of {name} is {actual}, manifest says {hex}"));
        }
        listed.push(name.to_string());
    }
    if listed != [ovf_m.name.clone(), disk_m.name.clone()] {
        return Err(format!("manifest lists {listed:?}, expected the ovf then the disk"));
    }

    // OVF cross-checks.
    if !ovf.trim_end().ends_with("</Envelope>") || !ovf.contains("xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\"") {
        return Err("OVF is not an OVF 1.0 Envelope".into());
    }
    let files = xml_tags(&ovf, "File");
    if files.len() != 1 {
        return Err(format!("expected 1 References/File, found {}", files.len()));
    }
    let href = xml_attr(files[0], "ovf:href").map(unescape).ok_or("File without ovf:href")?;
    let file_id = xml_attr(files[0], "ovf:id").ok_or("File without ovf:id")?;
    let file_size: u64 = xml_attr(files[0], "ovf:size").and_then(|s| s.parse().ok()).ok_or("File without a numeric ovf:size")?;
    if href != disk_m.name || file_size != disk_m.size {
        return Err(format!("File {href} size {file_size} does not match tar member {} size {}", disk_m.name, disk_m.size));
    }
    let disks = xml_tags(&ovf, "Disk");
    if disks.len() != 1 {
        return Err(format!("expected 1 DiskSection/Disk, found {}", disks.len()));
    }
    if xml_attr(disks[0], "ovf:fileRef") != Some(file_id) {
        return Err("Disk fileRef does not match File id".into());
    }
    if xml_attr(disks[0], "ovf:capacityAllocationUnits").is_some_and(|u| u != "byte") {
        return Err("Disk capacityAllocationUnits is not byte".into());
    }
    if xml_attr(disks[0], "ovf:format") != Some("http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized") {
        return Err("Disk format is not the streamOptimized URI".into());
    }
    let capacity: u64 = xml_attr(disks[0], "ovf:capacity").and_then(|s| s.parse().ok()).ok_or("Disk without numeric capacity")?;
    let disk_id = xml_attr(disks[0], "ovf:diskId").ok_or("Disk without diskId")?;

    // Items: the disk (17) must point at the disk and at a controller (5 or 6) by InstanceID.
    let items: Vec<&str> = ovf.split("<Item").skip(1).filter_map(|s| s.split("</Item>").next()).collect();
    let field = |it: &str, n: &str| xml_text(it, &format!("rasd:{n}")).map(str::to_string);
    let disk_items: Vec<&&str> = items.iter().filter(|it| field(it, "ResourceType").as_deref() == Some("17")).collect();
    if disk_items.len() != 1 {
        return Err(format!("expected 1 disk Item, found {}", disk_items.len()));
    }
    if field(disk_items[0], "HostResource") != Some(format!("ovf:/disk/{disk_id}")) {
        return Err("disk Item HostResource does not match the Disk diskId".into());
    }
    let parent = field(disk_items[0], "Parent").ok_or("disk Item without Parent")?;
    let ctrl = items.iter().find(|it| field(it, "InstanceID").as_deref() == Some(&parent)).ok_or("disk Item Parent matches no Item")?;
    if !matches!(field(ctrl, "ResourceType").as_deref(), Some("5" | "6")) {
        return Err("disk Item Parent is not an IDE or SCSI controller".into());
    }
    let mut ids: Vec<String> = items.iter().filter_map(|it| field(it, "InstanceID")).collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    if ids.len() != n || n != items.len() {
        return Err("Item InstanceIDs are missing or not unique".into());
    }
    for it in &items {
        if field(it, "ResourceType").as_deref() == Some("10") {
            let conn = field(it, "Connection").ok_or("ethernet Item without Connection")?;
            if !xml_tags(&ovf, "Network").iter().any(|t| xml_attr(t, "ovf:name").map(unescape).as_deref() == Some(&conn)) {
                return Err(format!("ethernet Connection {conn:?} is not in the NetworkSection"));
            }
        }
    }

    let sec = Section { f: &mut f, start: disk_m.offset, len: disk_m.size, pos: 0 };
    let vmdk = check_stream_vmdk_with(sec, on_grain).map_err(|e| format!("{}: {e}", disk_m.name))?;
    if vmdk.capacity * SECTOR != capacity {
        return Err(format!("Disk capacity {capacity} != VMDK capacity {} × 512", vmdk.capacity));
    }
    Ok(OvaReport { members, manifest, ovf, vmdk })
}
