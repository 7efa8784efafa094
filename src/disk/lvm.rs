//! LVM2 read from the disk's bytes: a physical volume's label and metadata area, the volume
//! group's text metadata, and where each logical volume's bytes lie in the disk. Nothing is
//! activated: the host's LVM and device-mapper are never involved (this host has no
//! device-mapper; on one that has, activating an image's VG would meet the host's own VGs of
//! the same name and the host's udev auto-activation). A linear logical volume is one range of
//! its physical volume, so it is attached like a partition: a loop device with an offset and a
//! size limit. Hostile input: every length and offset is checked before use.
//!
//! On-disk format (LVM2 `format_text`): a label sector `LABELONE` in one of the first four
//! sectors, then the PV header (UUID, size, data and metadata area lists); each metadata area
//! starts with a header (` LVM2 x[5A%r0N*>`) whose first location points at the current
//! metadata text in a ring buffer.

/// Where a partition's bytes are read from: `(offset within the partition, length)`.
pub type ReadAt<'a> = dyn Fn(u64, usize) -> std::io::Result<Vec<u8>> + 'a;

/// The most metadata text we read (LVM's default area is 1 MiB; 16 MiB is generous).
const MAX_TEXT: u64 = 16 << 20;
const LABEL_ID: &[u8; 8] = b"LABELONE";
const LABEL_TYPE: &[u8; 8] = b"LVM2 001";
const MDA_MAGIC: &[u8; 16] = b" LVM2 x[5A%r0N*>";
const MDA_HEADER_SIZE: u64 = 512;
/// LVM's CRC seed (`INITIAL_CRC`).
const INITIAL_CRC: u32 = 0xf597_a6cf;

/// A malformed or unsupported LVM structure.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("LVM: {0}")]
pub struct LvmError(pub String);

fn bad(msg: impl Into<String>) -> LvmError {
    LvmError(msg.into())
}

/// LVM's CRC-32: the reflected polynomial 0xEDB88320, seeded, without final inversion.
pub fn lvm_crc(seed: u32, data: &[u8]) -> u32 {
    // crc32fast keeps the state inverted around its updates.
    !crc32fast::Hasher::new_with_initial(!seed).tap_update(data)
}

trait TapUpdate {
    fn tap_update(self, data: &[u8]) -> u32;
}

impl TapUpdate for crc32fast::Hasher {
    fn tap_update(mut self, data: &[u8]) -> u32 {
        self.update(data);
        self.finalize()
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).and_then(|s| s.try_into().ok()).map_or(0, u32::from_le_bytes)
}

fn le64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).and_then(|s| s.try_into().ok()).map_or(0, u64::from_le_bytes)
}

/// "abcdef…" (32 characters) → LVM's dashed form (6-4-4-4-4-4-6).
pub fn dashed(raw: &str) -> String {
    let mut out = String::new();
    for (i, c) in raw.chars().enumerate() {
        if matches!(i, 6 | 10 | 14 | 18 | 22 | 26) {
            out.push('-');
        }
        out.push(c);
    }
    out
}

/// A physical volume's label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvLabel {
    /// Byte offset of the label sector in the partition.
    pub label_at: u64,
    /// The PV's UUID, dashed.
    pub uuid: String,
    /// Size the PV says it has.
    pub device_size: u64,
    /// Metadata areas: (offset, size) in the partition.
    pub metadata_areas: Vec<(u64, u64)>,
}

/// Reads the label from the first four sectors; `None` when there is none.
pub fn read_label(read: &ReadAt) -> Result<Option<PvLabel>, LvmError> {
    let head = read(0, 2048).map_err(|e| bad(format!("cannot read the first sectors: {e}")))?;
    for sector in 0..4u64 {
        let at = usize::try_from(sector * 512).unwrap_or(0);
        let Some(s) = head.get(at..at + 512) else { break };
        if s.get(..8) != Some(LABEL_ID) {
            continue;
        }
        if s.get(24..32) != Some(LABEL_TYPE) {
            return Err(bad(format!("label in sector {sector} is not LVM2 001")));
        }
        if le64(s, 8) != sector {
            return Err(bad(format!("label in sector {sector} says it is in sector {}", le64(s, 8))));
        }
        let crc = lvm_crc(INITIAL_CRC, s.get(20..).unwrap_or_default());
        if crc != le32(s, 16) {
            return Err(bad(format!("label checksum mismatch in sector {sector} (stored {:08x}, computed {crc:08x})", le32(s, 16))));
        }
        let off = usize::try_from(le32(s, 20)).unwrap_or(usize::MAX);
        let h = s.get(off..).filter(|h| h.len() >= 48).ok_or_else(|| bad("PV header outside its label sector"))?;
        let raw_uuid = std::str::from_utf8(h.get(..32).unwrap_or_default()).map_err(|_| bad("PV UUID is not text"))?;
        if !raw_uuid.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(bad("PV UUID has characters LVM never writes"));
        }
        let device_size = le64(h, 32);
        // Data areas, then metadata areas; each list ends with a zero entry.
        let mut at = 40usize;
        let mut lists: [Vec<(u64, u64)>; 2] = [Vec::new(), Vec::new()];
        for list in &mut lists {
            loop {
                if at + 16 > h.len() {
                    return Err(bad("PV header lists run past the label sector"));
                }
                let (o, z) = (le64(h, at), le64(h, at + 8));
                at += 16;
                if o == 0 {
                    break;
                }
                list.push((o, z));
            }
        }
        let [_, metadata_areas] = lists;
        return Ok(Some(PvLabel { label_at: sector * 512, uuid: dashed(raw_uuid), device_size, metadata_areas }));
    }
    Ok(None)
}

/// Where the current metadata text is: absolute (offset, size) pieces within the partition
/// (two when it wraps around the ring buffer).
fn text_location(read: &ReadAt, area: (u64, u64)) -> Result<Vec<(u64, u64)>, LvmError> {
    let (start, size) = area;
    let h = read(start, 512).map_err(|e| bad(format!("cannot read the metadata area header at {start}: {e}")))?;
    if h.get(4..20) != Some(MDA_MAGIC) {
        return Err(bad(format!("no metadata area header at offset {start}")));
    }
    let crc = lvm_crc(INITIAL_CRC, h.get(4..).unwrap_or_default());
    if crc != le32(&h, 0) {
        return Err(bad(format!("metadata area header checksum mismatch at offset {start}")));
    }
    if le64(&h, 24) != start {
        return Err(bad(format!("metadata area at {start} says it starts at {}", le64(&h, 24))));
    }
    let (off, len) = (le64(&h, 40), le64(&h, 48));
    if off == 0 || len == 0 {
        return Err(bad(format!("metadata area at {start} holds no metadata")));
    }
    if len > MAX_TEXT || len > size.saturating_sub(MDA_HEADER_SIZE) || off < MDA_HEADER_SIZE || off >= size {
        return Err(bad(format!("metadata text at {off}+{len} does not fit its area ({size} bytes)")));
    }
    let first = len.min(size - off);
    let mut pieces = vec![(start + off, first)];
    if first < len {
        pieces.push((start + MDA_HEADER_SIZE, len - first));
    }
    Ok(pieces)
}

/// Reads the current metadata text of one area and checks its checksum.
pub fn read_text(read: &ReadAt, area: (u64, u64)) -> Result<String, LvmError> {
    let pieces = text_location(read, area)?;
    let mut text = Vec::new();
    for (o, l) in &pieces {
        let n = usize::try_from(*l).map_err(|_| bad("metadata text too large"))?;
        text.extend(read(*o, n).map_err(|e| bad(format!("cannot read metadata text at {o}: {e}")))?);
    }
    let h = read(area.0, 512).map_err(|e| bad(format!("cannot read the metadata area header: {e}")))?;
    if lvm_crc(INITIAL_CRC, &text) != le32(&h, 56) {
        return Err(bad(format!("metadata text checksum mismatch in the area at offset {}", area.0)));
    }
    let end = text.iter().position(|c| *c == 0).unwrap_or(text.len());
    String::from_utf8(text.get(..end).unwrap_or_default().to_vec()).map_err(|_| bad("metadata text is not UTF-8"))
}

// --- the text format -----------------------------------------------------------------------

/// A value in LVM's configuration text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A number.
    Int(i64),
    /// A string.
    Str(String),
    /// `[a, b]`.
    List(Vec<Value>),
    /// `name { … }`.
    Section(Vec<(String, Value)>),
}

impl Value {
    fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Section(items) => items.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
    fn int(&self, key: &str) -> Option<i64> {
        match self.get(key)? {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }
    fn str(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    fn sections(&self) -> impl Iterator<Item = (&str, &Value)> {
        let items: &[(String, Value)] = match self {
            Value::Section(i) => i,
            _ => &[],
        };
        items.iter().filter(|(_, v)| matches!(v, Value::Section(_))).map(|(k, v)| (k.as_str(), v))
    }
}

const MAX_DEPTH: usize = 12;
const MAX_ITEMS: usize = 1 << 20;

struct Parser<'a> {
    b: &'a [u8],
    at: usize,
    items: usize,
}

impl Parser<'_> {
    fn skip(&mut self) {
        while let Some(c) = self.b.get(self.at) {
            if *c == b'#' {
                while self.b.get(self.at).is_some_and(|c| *c != b'\n') {
                    self.at += 1;
                }
            } else if c.is_ascii_whitespace() {
                self.at += 1;
            } else {
                break;
            }
        }
    }
    fn peek(&mut self) -> Option<u8> {
        self.skip();
        self.b.get(self.at).copied()
    }
    fn err(&self, what: &str) -> LvmError {
        bad(format!("metadata text: {what} at byte {}", self.at))
    }
    fn ident(&mut self) -> Result<String, LvmError> {
        self.skip();
        let start = self.at;
        while self.b.get(self.at).is_some_and(|c| c.is_ascii_alphanumeric() || b"_.+-/".contains(c)) {
            self.at += 1;
        }
        if start == self.at {
            return Err(self.err("expected a name"));
        }
        Ok(String::from_utf8_lossy(self.b.get(start..self.at).unwrap_or_default()).into_owned())
    }
    fn value(&mut self, depth: usize) -> Result<Value, LvmError> {
        self.items += 1;
        if self.items > MAX_ITEMS || depth > MAX_DEPTH {
            return Err(self.err("too deep or too many values"));
        }
        match self.peek() {
            Some(b'"') => {
                self.at += 1;
                let mut s = Vec::new();
                loop {
                    match self.b.get(self.at) {
                        None => return Err(self.err("unterminated string")),
                        Some(b'"') => break,
                        Some(b'\\') => {
                            self.at += 1;
                            s.push(*self.b.get(self.at).ok_or_else(|| self.err("unterminated string"))?);
                        }
                        Some(c) => s.push(*c),
                    }
                    self.at += 1;
                }
                self.at += 1;
                Ok(Value::Str(String::from_utf8_lossy(&s).into_owned()))
            }
            Some(b'[') => {
                self.at += 1;
                let mut items = Vec::new();
                loop {
                    match self.peek() {
                        Some(b']') => {
                            self.at += 1;
                            return Ok(Value::List(items));
                        }
                        Some(b',') => self.at += 1,
                        None => return Err(self.err("unterminated list")),
                        Some(_) => items.push(self.value(depth + 1)?),
                    }
                }
            }
            Some(c) if c.is_ascii_digit() || c == b'-' => {
                let start = self.at;
                self.at += 1;
                while self.b.get(self.at).is_some_and(u8::is_ascii_digit) {
                    self.at += 1;
                }
                let t = std::str::from_utf8(self.b.get(start..self.at).unwrap_or_default()).unwrap_or("");
                t.parse().map(Value::Int).map_err(|_| self.err("bad number"))
            }
            _ => Err(self.err("expected a value")),
        }
    }
    fn section(&mut self, depth: usize, top: bool) -> Result<Value, LvmError> {
        if depth > MAX_DEPTH {
            return Err(self.err("sections nested too deep"));
        }
        let mut items = Vec::new();
        loop {
            match self.peek() {
                None if top => return Ok(Value::Section(items)),
                None => return Err(self.err("unterminated section")),
                Some(b'}') if !top => {
                    self.at += 1;
                    return Ok(Value::Section(items));
                }
                Some(_) => {
                    let name = self.ident()?;
                    match self.peek() {
                        Some(b'=') => {
                            self.at += 1;
                            items.push((name, self.value(depth + 1)?));
                        }
                        Some(b'{') => {
                            self.at += 1;
                            items.push((name, self.section(depth + 1, false)?));
                        }
                        _ => return Err(self.err("expected `=` or `{`")),
                    }
                }
            }
        }
    }
}

/// Parses LVM's configuration text format. Pure.
pub fn parse(text: &str) -> Result<Value, LvmError> {
    Parser { b: text.as_bytes(), at: 0, items: 0 }.section(0, true)
}

// --- the volume group ----------------------------------------------------------------------

/// A physical volume as the VG metadata lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhysicalVolume {
    /// Its key in the metadata ("pv0").
    pub key: String,
    /// Its UUID, dashed.
    pub id: String,
    /// Where its extents start, in bytes.
    pub pe_start: u64,
    /// How many extents it has.
    pub pe_count: u64,
}

/// One segment of a logical volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// First LV extent.
    pub start_extent: u64,
    /// Extents.
    pub extent_count: u64,
    /// "striped", "mirror", "raid1", "thin", …
    pub kind: String,
    /// (PV key, first PV extent) per stripe.
    pub stripes: Vec<(String, u64)>,
}

/// A logical volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalVolume {
    /// Its name.
    pub name: String,
    /// Whether it is a user-visible volume (not a RAID image or thin pool part).
    pub visible: bool,
    /// Its segments.
    pub segments: Vec<Segment>,
}

/// A volume group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeGroup {
    /// Its name.
    pub name: String,
    /// Its UUID, dashed.
    pub id: String,
    /// Metadata sequence number.
    pub seqno: u64,
    /// Extent size in bytes.
    pub extent_size: u64,
    /// Its physical volumes.
    pub pvs: Vec<PhysicalVolume>,
    /// Its logical volumes.
    pub lvs: Vec<LogicalVolume>,
}

fn count(v: &Value, key: &str, what: &str) -> Result<u64, LvmError> {
    v.int(key).and_then(|n| u64::try_from(n).ok()).ok_or_else(|| bad(format!("{what} has no valid `{key}`")))
}

/// The volume group described by metadata text. Pure.
pub fn volume_group(text: &str) -> Result<VolumeGroup, LvmError> {
    let top = parse(text)?;
    let (name, vg) = top.sections().next().ok_or_else(|| bad("metadata text describes no volume group"))?;
    let what = format!("volume group {name}");
    let sectors = |n: u64, key: &str| n.checked_mul(512).ok_or_else(|| bad(format!("{what}: `{key}` overflows")));
    let extent_size = sectors(count(vg, "extent_size", &what)?, "extent_size")?;
    if extent_size == 0 {
        return Err(bad(format!("{what}: extent_size is 0")));
    }
    let mut pvs = Vec::new();
    for (key, pv) in vg.get("physical_volumes").map(|p| p.sections().collect::<Vec<_>>()).unwrap_or_default() {
        let w = format!("{what}, {key}");
        pvs.push(PhysicalVolume {
            key: key.to_string(),
            id: pv.str("id").ok_or_else(|| bad(format!("{w} has no id")))?.to_string(),
            pe_start: sectors(count(pv, "pe_start", &w)?, "pe_start")?,
            pe_count: count(pv, "pe_count", &w)?,
        });
    }
    let mut lvs = Vec::new();
    for (lv_name, lv) in vg.get("logical_volumes").map(|p| p.sections().collect::<Vec<_>>()).unwrap_or_default() {
        let w = format!("{what}, logical volume {lv_name}");
        let visible = matches!(lv.get("status"), Some(Value::List(s)) if s.contains(&Value::Str("VISIBLE".into())));
        let mut segments = Vec::new();
        for (seg_name, seg) in lv.sections() {
            let ws = format!("{w}, {seg_name}");
            let stripes = match seg.get("stripes") {
                Some(Value::List(items)) => items
                    .chunks(2)
                    .map(|pair| match pair {
                        [Value::Str(pv), Value::Int(pe)] => {
                            u64::try_from(*pe).map(|pe| (pv.clone(), pe)).map_err(|_| bad(format!("{ws}: negative extent")))
                        }
                        _ => Err(bad(format!("{ws}: stripes are not (pv, extent) pairs"))),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                _ => Vec::new(),
            };
            segments.push(Segment {
                start_extent: count(seg, "start_extent", &ws)?,
                extent_count: count(seg, "extent_count", &ws)?,
                kind: seg.str("type").unwrap_or("").to_string(),
                stripes,
            });
        }
        segments.sort_by_key(|s| s.start_extent);
        lvs.push(LogicalVolume { name: lv_name.to_string(), visible, segments });
    }
    Ok(VolumeGroup {
        name: name.to_string(),
        id: vg.str("id").ok_or_else(|| bad(format!("{what} has no id")))?.to_string(),
        seqno: count(vg, "seqno", &what)?,
        extent_size,
        pvs,
        lvs,
    })
}

/// Where a linear logical volume lies: one range of one physical volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extent {
    /// The PV's UUID.
    pub pv: String,
    /// Byte offset in the PV.
    pub offset: u64,
    /// Bytes.
    pub size: u64,
}

impl VolumeGroup {
    /// The single PV range an LV occupies, or why it has none (striped over several, mirrored,
    /// thin, split over discontiguous ranges).
    pub fn extent(&self, lv: &LogicalVolume) -> Result<Extent, String> {
        let mut range: Option<(String, u64, u64)> = None; // (pv key, first PV extent, extents)
        let mut next_lv_extent = 0u64;
        for s in &lv.segments {
            let [(pv, pe)] = s.stripes.as_slice() else {
                return Err(format!("segment at extent {} is {} over {} stripes", s.start_extent, s.kind, s.stripes.len()));
            };
            if s.kind != "striped" {
                return Err(format!("segment at extent {} is {}", s.start_extent, s.kind));
            }
            if s.start_extent != next_lv_extent {
                return Err(format!("segments leave a gap at extent {next_lv_extent}"));
            }
            range = match range {
                None => Some((pv.clone(), *pe, s.extent_count)),
                Some((p, first, n)) if p == *pv && first.checked_add(n) == Some(*pe) => Some((p, first, n + s.extent_count)),
                Some(_) => return Err(format!("its {} segments are not one contiguous range of one PV", lv.segments.len())),
            };
            next_lv_extent = s.start_extent.checked_add(s.extent_count).ok_or("extent count overflows")?;
        }
        let (key, first, n) = range.ok_or("it has no segments")?;
        let pv = self.pvs.iter().find(|p| p.key == key).ok_or_else(|| format!("its segment names {key}, which the VG does not list"))?;
        if first.checked_add(n).is_none_or(|end| end > pv.pe_count) {
            return Err(format!("its extents {first}+{n} lie beyond {key}'s {} extents", pv.pe_count));
        }
        let offset = first.checked_mul(self.extent_size).and_then(|b| b.checked_add(pv.pe_start)).ok_or("offset overflows")?;
        let size = n.checked_mul(self.extent_size).ok_or("size overflows")?;
        Ok(Extent { pv: pv.id.clone(), offset, size })
    }
}

/// `/dev/mapper/` name of `vg/lv`: dashes in each name doubled, joined by one dash. Pure.
pub fn mapper_name(vg: &str, lv: &str) -> String {
    format!("{}-{}", vg.replace('-', "--"), lv.replace('-', "--"))
}

/// A [`ReadAt`] over the partition at `start` (`size` bytes) of `disk`: a read past the
/// partition's end is an error, never bytes of the next one.
pub fn partition_reader(disk: &std::fs::File, start: u64, size: u64) -> impl Fn(u64, usize) -> std::io::Result<Vec<u8>> + '_ {
    move |o, n| {
        if o.checked_add(n as u64).is_none_or(|e| e > size) {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{o}+{n} lies outside the partition")));
        }
        let mut b = vec![0u8; n];
        std::os::unix::fs::FileExt::read_exact_at(disk, &mut b, start + o)?;
        Ok(b)
    }
}

/// Reads a PV's label and the newest metadata of its areas: `None` when the partition holds
/// no LVM label.
pub fn read_pv(read: &ReadAt, partition_size: u64) -> Result<Option<(PvLabel, VolumeGroup)>, LvmError> {
    let Some(label) = read_label(read)? else { return Ok(None) };
    let mut best: Option<VolumeGroup> = None;
    let mut errors = Vec::new();
    for &(o, z) in &label.metadata_areas {
        if o.checked_add(z).is_none_or(|end| end > partition_size) || z < MDA_HEADER_SIZE {
            errors.push(format!("metadata area {o}+{z} lies outside the partition ({partition_size} bytes)"));
            continue;
        }
        match read_text(read, (o, z)).and_then(|t| volume_group(&t)) {
            Ok(vg) if best.as_ref().is_none_or(|b| vg.seqno > b.seqno) => best = Some(vg),
            Ok(_) => {}
            Err(e) => errors.push(e.0),
        }
    }
    match best {
        Some(vg) => Ok(Some((label, vg))),
        None if errors.is_empty() => Err(bad(format!("PV {} has no metadata area", label.uuid))),
        None => Err(bad(format!("PV {}: {}", label.uuid, errors.join("; ")))),
    }
}

/// A new LVM UUID (32 characters from LVM's alphabet), dashed.
pub fn random_id() -> std::io::Result<String> {
    const ALPHABET: &[u8; 62] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut out = String::new();
    let mut f = std::fs::File::open("/dev/urandom")?;
    while out.len() < 32 {
        let mut b = [0u8; 64];
        std::io::Read::read_exact(&mut f, &mut b)?;
        // Rejection sampling: 248 = 4 × 62, so every character is equally likely.
        out.extend(b.iter().filter(|x| **x < 248).map(|x| char::from(ALPHABET[usize::from(*x % 62)])).take(32 - out.len()));
    }
    Ok(dashed(&out))
}

/// Rewrites a physical volume (the partition at `start`, `size` bytes of `disk`) with each
/// `(old, new)` UUID of `replace` swapped: the PV UUID in its label and every UUID in the text
/// of each metadata area, with their checksums. The UUIDs keep their length, so the text keeps
/// its place in the ring buffer. Read back and checked before returning.
pub fn rewrite_uuids(disk: &std::fs::File, start: u64, size: u64, replace: &[(String, String)]) -> Result<(), LvmError> {
    use std::os::unix::fs::FileExt;
    if replace.iter().any(|(o, n)| o.len() != n.len() || o.len() != 38) {
        return Err(bad("UUID replacements must be dashed 32-character LVM UUIDs"));
    }
    let read = partition_reader(disk, start, size);
    let write = |o: u64, b: &[u8]| disk.write_all_at(b, start + o).map_err(|e| bad(format!("cannot write at offset {o}: {e}")));
    let swap = |mut b: Vec<u8>| {
        for (old, new) in replace {
            for form in [(old.clone(), new.clone()), (old.replace('-', ""), new.replace('-', ""))] {
                let (o, n) = (form.0.as_bytes(), form.1.as_bytes());
                let mut i = 0;
                while i + o.len() <= b.len() {
                    if b.get(i..i + o.len()) == Some(o) {
                        b.splice(i..i + o.len(), n.iter().copied());
                        i += o.len();
                    } else {
                        i += 1;
                    }
                }
            }
        }
        b
    };
    let label = read_label(&read)?.ok_or_else(|| bad("no LVM label"))?;
    // The label sector: PV UUID (undashed) in the PV header, then the sector's checksum.
    let mut sector = read(label.label_at, 512).map_err(|e| bad(format!("cannot read the label: {e}")))?;
    let hdr = usize::try_from(le32(&sector, 20)).unwrap_or(usize::MAX);
    let uuid = sector.get(hdr..hdr + 32).ok_or_else(|| bad("PV header outside its label sector"))?.to_vec();
    let swapped = swap(uuid);
    sector.get_mut(hdr..hdr + 32).ok_or_else(|| bad("PV header outside its label sector"))?.copy_from_slice(&swapped);
    let crc = lvm_crc(INITIAL_CRC, sector.get(20..).unwrap_or_default());
    sector.get_mut(16..20).unwrap_or_default().copy_from_slice(&crc.to_le_bytes());
    for &(o, z) in &label.metadata_areas {
        let pieces = text_location(&read, (o, z))?;
        let mut text = Vec::new();
        for (po, pl) in &pieces {
            let n = usize::try_from(*pl).map_err(|_| bad("metadata text too large"))?;
            text.extend(read(*po, n).map_err(|e| bad(format!("cannot read metadata text: {e}")))?);
        }
        let text = swap(text);
        let mut at = 0usize;
        for (po, pl) in &pieces {
            let n = usize::try_from(*pl).unwrap_or(0);
            write(*po, text.get(at..at + n).unwrap_or_default())?;
            at += n;
        }
        let mut h = read(o, 512).map_err(|e| bad(format!("cannot read the metadata area header: {e}")))?;
        h.get_mut(56..60).unwrap_or_default().copy_from_slice(&lvm_crc(INITIAL_CRC, &text).to_le_bytes());
        let hcrc = lvm_crc(INITIAL_CRC, h.get(4..).unwrap_or_default());
        h.get_mut(..4).unwrap_or_default().copy_from_slice(&hcrc.to_le_bytes());
        write(o, &h)?;
    }
    write(label.label_at, &sector)?;
    // Read back: the label and every area must check out with the new UUIDs.
    let (again, _) = read_pv(&read, size)?.ok_or_else(|| bad("the label is gone after rewriting"))?;
    let want = replace.iter().find(|(old, _)| *old == label.uuid).map_or(label.uuid.clone(), |(_, n)| n.clone());
    if again.uuid != want {
        return Err(bad(format!("PV UUID reads back as {}, not {want}", again.uuid)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first 16 KiB of a 400 MiB PV made by Debian's LVM 2.03.16 (`pvcreate`, `vgcreate
    /// rhel`, `lvcreate -n root -L 320m`, `lvcreate -n swap -L 8m`).
    const PV_HEAD: &[u8] = include_bytes!("testdata/lvm-pv-head.bin");

    fn reader(bytes: &[u8]) -> impl Fn(u64, usize) -> std::io::Result<Vec<u8>> + '_ {
        move |o, n| {
            let mut out = vec![0u8; n];
            let o = usize::try_from(o).unwrap();
            if o < bytes.len() {
                let m = n.min(bytes.len() - o);
                out[..m].copy_from_slice(&bytes[o..o + m]);
            }
            Ok(out)
        }
    }

    #[test]
    fn reads_a_pv_made_by_lvm() {
        let (label, vg) = read_pv(&reader(PV_HEAD), 400 << 20).unwrap().unwrap();
        assert_eq!(label.label_at, 512);
        assert_eq!(label.uuid, "w9grNa-ySxV-iWSC-SSNI-XOnz-pZ0Y-tSckUu");
        assert_eq!(label.device_size, 400 << 20);
        assert_eq!(label.metadata_areas, vec![(4096, 0xff000)]);
        assert_eq!((vg.name.as_str(), vg.id.as_str(), vg.seqno), ("rhel", "6k51K9-MOoB-hwfF-MSMQ-OEBI-Vp19-kdOL3g", 3));
        assert_eq!(vg.extent_size, 4 << 20);
        assert_eq!(vg.pvs, vec![PhysicalVolume { key: "pv0".into(), id: label.uuid.clone(), pe_start: 1 << 20, pe_count: 99 }]);
        let names: Vec<&str> = vg.lvs.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["root", "swap"]);
        assert_eq!(vg.extent(&vg.lvs[0]).unwrap(), Extent { pv: label.uuid.clone(), offset: 1 << 20, size: 320 << 20 });
        assert_eq!(vg.extent(&vg.lvs[1]).unwrap(), Extent { pv: label.uuid.clone(), offset: (1 << 20) + (320 << 20), size: 8 << 20 });
    }

    #[test]
    fn refuses_what_does_not_check_out() {
        // A flipped byte in the label, in the metadata area header, in the text.
        for at in [0x210 + 8, 0x1000 + 30, 0x1c00 + 10] {
            let mut b = PV_HEAD.to_vec();
            b[at] ^= 1;
            assert!(read_pv(&reader(&b), 400 << 20).is_err(), "flipped byte at {at:#x} accepted");
        }
        // The metadata area beyond the partition.
        assert!(read_pv(&reader(PV_HEAD), 64 << 10).unwrap_err().0.contains("outside the partition"));
        // No label at all.
        assert_eq!(read_pv(&reader(&[0u8; 4096]), 1 << 20).unwrap(), None);
    }

    #[test]
    fn rewrites_uuids_in_label_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pv");
        let mut bytes = vec![0u8; 1 << 20];
        bytes[..PV_HEAD.len()].copy_from_slice(PV_HEAD);
        // The area is 0xff000 bytes at 4096: the whole first MiB holds it.
        std::fs::write(&path, &bytes).unwrap();
        let f = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        let (pv, vg) = ("w9grNa-ySxV-iWSC-SSNI-XOnz-pZ0Y-tSckUu", "6k51K9-MOoB-hwfF-MSMQ-OEBI-Vp19-kdOL3g");
        let (new_pv, new_vg) = (random_id().unwrap(), random_id().unwrap());
        assert_eq!(new_pv.len(), 38);
        let swap = [(pv.to_string(), new_pv.clone()), (vg.to_string(), new_vg.clone())];
        rewrite_uuids(&f, 0, 1 << 20, &swap).unwrap();
        let after = std::fs::read(&path).unwrap();
        let (label, group) = read_pv(&reader(&after), 1 << 20).unwrap().unwrap();
        assert_eq!((label.uuid.as_str(), group.id.as_str()), (new_pv.as_str(), new_vg.as_str()));
        assert_eq!(group.pvs[0].id, new_pv);
        assert_eq!(group.seqno, 3, "the same metadata, only its UUIDs changed");
        assert_eq!(probe_uuid(&after), new_pv);
        // Nothing else changed: same length, differences only where the UUIDs were.
        let diff = PV_HEAD.iter().zip(&after).filter(|(a, b)| a != b).count();
        assert!(diff > 0 && diff < 200, "{diff} bytes changed");
        assert!(rewrite_uuids(&f, 0, 1 << 20, &[("short".into(), "x".into())]).is_err());
    }

    fn probe_uuid(b: &[u8]) -> String {
        crate::disk::fsprobe::probe(b).uuid
    }

    #[test]
    fn text_format() {
        let v = parse("# c\nvg {\nid = \"a\\\"b\" # x\nlist = [\"pv0\", 0, -1]\nsub { n = 5 }\n}\ncontents = \"Text\"\n").unwrap();
        let vg = v.get("vg").unwrap();
        assert_eq!(vg.str("id"), Some("a\"b"));
        assert_eq!(vg.get("list"), Some(&Value::List(vec![Value::Str("pv0".into()), Value::Int(0), Value::Int(-1)])));
        assert_eq!(vg.get("sub").unwrap().int("n"), Some(5));
        for broken in ["vg {", "vg { id = \"x }", "x = [1, 2", "= 3", "vg { a b }"] {
            assert!(parse(broken).is_err(), "{broken:?}");
        }
        let deep = "a {".repeat(100) + &"}".repeat(100);
        assert!(parse(&deep).is_err());
    }

    #[test]
    fn linear_only() {
        let seg = |start, count, kind: &str, stripes: Vec<(&str, u64)>| Segment {
            start_extent: start,
            extent_count: count,
            kind: kind.into(),
            stripes: stripes.into_iter().map(|(p, e)| (p.to_string(), e)).collect(),
        };
        let vg = VolumeGroup {
            name: "vg".into(),
            id: "x".into(),
            seqno: 1,
            extent_size: 4 << 20,
            pvs: vec![
                PhysicalVolume { key: "pv0".into(), id: "A".into(), pe_start: 1 << 20, pe_count: 100 },
                PhysicalVolume { key: "pv1".into(), id: "B".into(), pe_start: 1 << 20, pe_count: 100 },
            ],
            lvs: Vec::new(),
        };
        let lv = |segments| LogicalVolume { name: "lv".into(), visible: true, segments };
        // Two segments that continue each other on one PV: one range.
        let ok = lv(vec![seg(0, 10, "striped", vec![("pv0", 5)]), seg(10, 5, "striped", vec![("pv0", 15)])]);
        assert_eq!(vg.extent(&ok).unwrap(), Extent { pv: "A".into(), offset: (1 << 20) + 5 * (4 << 20), size: 15 * (4 << 20) });
        let split = lv(vec![seg(0, 10, "striped", vec![("pv0", 0)]), seg(10, 5, "striped", vec![("pv1", 0)])]);
        assert!(vg.extent(&split).unwrap_err().contains("not one contiguous range"));
        let striped = lv(vec![seg(0, 10, "striped", vec![("pv0", 0), ("pv1", 0)])]);
        assert!(vg.extent(&striped).unwrap_err().contains("2 stripes"));
        let thin = lv(vec![seg(0, 10, "thin", vec![("pv0", 0)])]);
        assert!(vg.extent(&thin).unwrap_err().contains("thin"));
        let beyond = lv(vec![seg(0, 10, "striped", vec![("pv0", 95)])]);
        assert!(vg.extent(&beyond).unwrap_err().contains("beyond"));
        let huge = lv(vec![seg(0, u64::MAX, "striped", vec![("pv0", 1)])]);
        assert!(vg.extent(&huge).is_err());
        assert_eq!(mapper_name("my-vg", "lv_root"), "my--vg-lv_root");
    }
}
