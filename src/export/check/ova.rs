//! The OVA cross-checker: tar walk, manifest digests, OVF cross-references, then the disk member
//! through the VMDK walker.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::section::{Section, byte, bytes};
use super::vmdk::{VmdkReport, check_stream_vmdk_with};
use super::xml::{unescape, xml_attr, xml_tags, xml_text};
use super::{CheckError, Where};
use crate::export::spec::is_zero;
use crate::export::vmdk::SECTOR;

/// Tar block size.
const BLOCK: u64 = 512;
/// Largest OVF or manifest member accepted (imgforge writes a few KiB of each).
pub const MAX_TEXT_MEMBER: u64 = 4 << 20;

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

/// Checks an OVA written by imgforge: tar members (`NAME.ovf`, `NAME.mf`, then the disk in
/// References order), manifest format and digests recomputed from the tar bytes, OVF
/// cross-references (References ↔ tar members, Disk ↔ File, Disk capacity ↔ VMDK capacity,
/// HostResource ↔ Disk, disk Item Parent ↔ a controller Item), and the VMDK structure.
#[cfg(test)]
pub fn check_ova(path: impl AsRef<Path>) -> Result<OvaReport, CheckError> {
    check_ova_with(path, &mut |_, _| {})
}

/// [`check_ova`], handing every decompressed grain of the disk to `on_grain(byte_offset, data)`.
pub fn check_ova_with(path: impl AsRef<Path>, on_grain: &mut dyn FnMut(u64, &[u8])) -> Result<OvaReport, CheckError> {
    let path = path.as_ref();
    let io = |what: &str| {
        let what = format!("{what} {}", path.display());
        move |source| CheckError::Io { what, source }
    };
    let mut f = File::open(path).map_err(io("opening"))?;
    let len = f.metadata().map_err(io("reading the size of"))?.len();
    if !len.is_multiple_of(BLOCK) {
        return Err(CheckError::Unaligned { what: "tar", size: len });
    }
    let members = tar_members(&f, len)?;
    let trio: &[TarMember; 3] = members
        .as_slice()
        .try_into()
        .map_err(|_| CheckError::Ova(format!("expected 3 tar members (ovf, mf, vmdk), found {}", members.len())))?;
    let [ovf_m, mf_m, disk_m] = trio;
    let Some(base) = ovf_m.name.strip_suffix(".ovf") else {
        return Err(CheckError::Ova(format!("first member {:?} is not the .ovf", ovf_m.name)));
    };
    if mf_m.name != format!("{base}.mf") {
        return Err(CheckError::Ova(format!("second member {:?} is not {base}.mf", mf_m.name)));
    }
    let ovf = read_text(&f, ovf_m, "OVF")?;
    let manifest = read_text(&f, mf_m, "manifest")?;
    check_manifest(&mut f, trio, &manifest)?;
    let capacity = check_ovf(&ovf, disk_m)?;
    let sec = Section::new(&mut f, disk_m.offset, disk_m.size);
    let vmdk =
        check_stream_vmdk_with(sec, on_grain).map_err(|e| CheckError::Member { member: disk_m.name.clone(), source: Box::new(e) })?;
    if vmdk.capacity.checked_mul(SECTOR) != Some(capacity) {
        return Err(CheckError::Ovf(format!("Disk capacity {capacity} != VMDK capacity {} × 512", vmdk.capacity)));
    }
    Ok(OvaReport { members, manifest, ovf, vmdk })
}

/// Reads a tar header number field (octal, or GNU base-256) of the header at byte `pos`.
fn tar_num(f: &[u8], field: &'static str, pos: u64) -> Result<u64, CheckError> {
    let at = Where::Byte(pos);
    let Some((&first, rest)) = f.split_first() else { return Err(CheckError::field(field, at, "an empty field", "a number")) };
    if first & 0x80 != 0 {
        let v = rest.iter().try_fold(u64::from(first & 0x7f), |v, &b| v.checked_mul(256)?.checked_add(u64::from(b)));
        return v.ok_or_else(|| CheckError::Overflow { what: field, at, expr: "the base-256 number".into() });
    }
    let s: String = f.iter().take_while(|&&b| b != 0 && b != b' ').map(|&b| b as char).collect();
    let s = s.trim_start();
    if s.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(s, 8).map_err(|_| CheckError::field(field, at, format!("{s:?}"), "an octal number"))
}

/// Reads `buf.len()` bytes of `f` at `pos`.
fn read_at(f: &File, pos: u64, buf: &mut [u8], what: &str) -> Result<(), CheckError> {
    f.read_exact_at(buf, pos).map_err(|source| CheckError::Read { what: what.into(), at: Where::Byte(pos), source })
}

/// Parses the tar at `f` (`len` bytes): members (regular files only, ustar checksums valid, data
/// within the file) and the two zero end blocks.
fn tar_members(f: &File, len: u64) -> Result<Vec<TarMember>, CheckError> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    let mut h = [0u8; BLOCK as usize];
    loop {
        if pos.checked_add(2 * BLOCK).is_none_or(|end| end > len) {
            return Err(CheckError::bad("tar", Where::Byte(pos), "ends without two zero blocks"));
        }
        read_at(f, pos, &mut h, "tar header")?;
        if is_zero(&h) {
            check_tar_end(f, pos)?;
            return Ok(out);
        }
        let m = parse_tar_header(&h, pos)?;
        // pos + 1024 <= len, so the data offset pos + 512 < len.
        let have = len - m.offset;
        if m.size.checked_next_multiple_of(BLOCK).is_none_or(|padded| padded > have) {
            return Err(CheckError::Truncated { what: format!("tar member {:?}", m.name), at: Where::Byte(m.offset), need: m.size, have });
        }
        pos = m.offset + m.size.div_ceil(BLOCK) * BLOCK;
        out.push(m);
    }
}

/// Parses and checks the tar header `h` found at byte `pos`.
fn parse_tar_header(h: &[u8], pos: u64) -> Result<TarMember, CheckError> {
    let at = Where::Byte(pos);
    let sum: u64 = h.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { 32 } else { u64::from(b) }).sum();
    let stored = tar_num(bytes(h, 148, 8, "tar chksum")?, "tar header checksum", pos)?;
    if stored != sum {
        return Err(CheckError::field("tar header checksum", at, stored, sum));
    }
    let magic = bytes(h, 257, 8, "tar magic")?;
    let ustar = magic.starts_with(b"ustar\0");
    if !ustar && magic != b"ustar  \0" {
        return Err(CheckError::field("tar magic", at, magic.escape_ascii(), "ustar\\0 (POSIX) or ustar\\x20\\x20\\0 (GNU)"));
    }
    let kind = byte(h, 156, "tar typeflag")?;
    if kind != b'0' && kind != 0 {
        return Err(CheckError::field("tar typeflag", at, format!("{:?}", kind as char), "'0' (a regular file)"));
    }
    let cstr = |b: &[u8]| String::from_utf8_lossy(b.split(|&c| c == 0).next().unwrap_or_default()).into_owned();
    let mut name = cstr(bytes(h, 0, 100, "tar name")?);
    let prefix = cstr(bytes(h, 345, 155, "tar prefix")?);
    if ustar && !prefix.is_empty() {
        name = format!("{prefix}/{name}");
    }
    let size = tar_num(bytes(h, 124, 12, "tar size")?, "tar size", pos)?;
    Ok(TarMember { name, offset: pos + BLOCK, size })
}

/// Checks the end of the tar: the zero block at `pos` is followed by a second one, and only zeros
/// follow those.
fn check_tar_end(f: &File, pos: u64) -> Result<(), CheckError> {
    let mut second = [0u8; BLOCK as usize];
    read_at(f, pos + BLOCK, &mut second, "tar end block")?;
    if !is_zero(&second) {
        return Err(CheckError::bad("tar", Where::Byte(pos), "a single zero block, not the two that end a tar"));
    }
    let mut at = pos + 2 * BLOCK;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n =
            f.read_at(&mut buf, at).map_err(|source| CheckError::Read { what: "after the tar end".into(), at: Where::Byte(at), source })?;
        let chunk = bytes(&buf, 0, n, "after the tar end")?;
        if chunk.is_empty() {
            return Ok(());
        }
        if !is_zero(chunk) {
            return Err(CheckError::bad("tar", Where::Byte(at), "non-zero bytes after the two end blocks"));
        }
        at += n as u64;
    }
}

/// Reads a text member (OVF or manifest), at most [`MAX_TEXT_MEMBER`] bytes.
pub(super) fn read_text(f: &File, m: &TarMember, what: &'static str) -> Result<String, CheckError> {
    let at = Where::Byte(m.offset);
    if m.size > MAX_TEXT_MEMBER {
        return Err(CheckError::TooBig { what: format!("{what} {:?}", m.name), at, size: m.size, cap: MAX_TEXT_MEMBER });
    }
    let mut b = vec![0u8; super::section::to_usize(m.size, what, at)?];
    read_at(f, m.offset, &mut b, what)?;
    String::from_utf8(b).map_err(|e| CheckError::bad(what, at, format!("is not UTF-8 ({e})")))
}

/// Lowercase hex digest (`alg` SHA1 or SHA256) of member `m`.
fn digest_member(f: &mut File, m: &TarMember, alg: &str) -> Result<String, CheckError> {
    let mut r = Section::new(f, m.offset, m.size);
    let mut buf = vec![0u8; 1 << 20];
    let mut s256 = Sha256::new();
    let mut s1 = Sha1::new();
    loop {
        let n = r.read(&mut buf).map_err(|source| CheckError::Read {
            what: format!("member {:?}", m.name),
            at: Where::Byte(m.offset),
            source,
        })?;
        let chunk = bytes(&buf, 0, n, "digest chunk")?;
        if chunk.is_empty() {
            break;
        }
        match alg {
            "SHA1" => s1.update(chunk),
            _ => s256.update(chunk),
        }
    }
    let d: Vec<u8> = match alg {
        "SHA1" => s1.finalize().to_vec(),
        _ => s256.finalize().to_vec(),
    };
    Ok(d.iter().map(|b| format!("{b:02x}")).collect())
}

/// Manifest: one `ALG(name)= hex\n` line per member except itself, the ovf then the disk, each
/// digest recomputed from the tar bytes.
fn check_manifest(f: &mut File, members: &[TarMember; 3], manifest: &str) -> Result<(), CheckError> {
    if !manifest.ends_with('\n') {
        return Err(CheckError::Manifest("does not end with a newline".into()));
    }
    let listed = manifest.lines().map(|line| check_manifest_line(f, members, line)).collect::<Result<Vec<_>, _>>()?;
    let [ovf_m, _, disk_m] = members;
    if listed != [ovf_m.name.as_str(), disk_m.name.as_str()] {
        return Err(CheckError::Manifest(format!("lists {listed:?}, expected the ovf then the disk")));
    }
    Ok(())
}

/// Checks one manifest line; returns the member name it lists.
fn check_manifest_line<'a>(f: &mut File, members: &[TarMember; 3], line: &'a str) -> Result<&'a str, CheckError> {
    let malformed = || CheckError::Manifest(format!("bad line {line:?}"));
    let (alg, rest) = line.split_once('(').ok_or_else(malformed)?;
    let (name, hex) = rest.rsplit_once(")= ").ok_or_else(malformed)?;
    let hex_len = match alg {
        "SHA1" => 40,
        "SHA256" => 64,
        _ => return Err(CheckError::Manifest(format!("algorithm {alg:?} (expected SHA1 or SHA256)"))),
    };
    if hex.len() != hex_len || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(CheckError::Manifest(format!("the digest for {name} is not {hex_len} lowercase hex digits")));
    }
    let m =
        members.iter().find(|m| m.name == name).ok_or_else(|| CheckError::Manifest(format!("lists {name}, which is not in the tar")))?;
    let [_, mf_m, _] = members;
    if m.name == mf_m.name {
        return Err(CheckError::Manifest("lists itself".into()));
    }
    let actual = digest_member(f, m, alg)?;
    if actual != hex {
        return Err(CheckError::Digest { alg: alg.into(), name: name.into(), actual, listed: hex.into() });
    }
    Ok(name)
}

/// OVF cross-checks against the disk member; returns the Disk's capacity in bytes.
fn check_ovf(ovf: &str, disk_m: &TarMember) -> Result<u64, CheckError> {
    if !ovf.trim_end().ends_with("</Envelope>") || !ovf.contains("xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\"") {
        return Err(CheckError::Ovf("not an OVF 1.0 Envelope".into()));
    }
    let file_id = check_file_ref(ovf, disk_m)?;
    let (capacity, disk_id) = check_disk(ovf, file_id)?;
    check_items(ovf, disk_id)?;
    Ok(capacity)
}

/// The exactly one item of `tags` (named `what` in the error).
fn only<'a>(tags: &[&'a str], what: &str) -> Result<&'a str, CheckError> {
    match tags {
        [one] => Ok(one),
        _ => Err(CheckError::Ovf(format!("expected 1 {what}, found {}", tags.len()))),
    }
}

/// `References/File` must name the disk member with its size; returns the File's id.
fn check_file_ref<'a>(ovf: &'a str, disk_m: &TarMember) -> Result<&'a str, CheckError> {
    let file = only(&xml_tags(ovf, "File"), "References/File")?;
    let missing = |what: &str| CheckError::Ovf(format!("File without {what}"));
    let href = xml_attr(file, "ovf:href").map(unescape).ok_or_else(|| missing("ovf:href"))?;
    let file_id = xml_attr(file, "ovf:id").ok_or_else(|| missing("ovf:id"))?;
    let size: u64 = xml_attr(file, "ovf:size").and_then(|s| s.parse().ok()).ok_or_else(|| missing("a numeric ovf:size"))?;
    if href != disk_m.name || size != disk_m.size {
        return Err(CheckError::Ovf(format!("File {href} size {size} does not match tar member {} size {}", disk_m.name, disk_m.size)));
    }
    Ok(file_id)
}

/// `DiskSection/Disk` must reference the File, in bytes, streamOptimized; returns its capacity
/// and diskId.
fn check_disk<'a>(ovf: &'a str, file_id: &str) -> Result<(u64, &'a str), CheckError> {
    let disk = only(&xml_tags(ovf, "Disk"), "DiskSection/Disk")?;
    let bad = |what: &str| Err(CheckError::Ovf(format!("Disk {what}")));
    if xml_attr(disk, "ovf:fileRef") != Some(file_id) {
        return bad("fileRef does not match File id");
    }
    if xml_attr(disk, "ovf:capacityAllocationUnits").is_some_and(|u| u != "byte") {
        return bad("capacityAllocationUnits is not byte");
    }
    if xml_attr(disk, "ovf:format") != Some("http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized") {
        return bad("format is not the streamOptimized URI");
    }
    let Some(capacity) = xml_attr(disk, "ovf:capacity").and_then(|s| s.parse().ok()) else { return bad("without numeric capacity") };
    let Some(disk_id) = xml_attr(disk, "ovf:diskId") else { return bad("without diskId") };
    Ok((capacity, disk_id))
}

/// Text of `rasd:name` in an Item.
fn rasd(item: &str, name: &str) -> Option<String> {
    xml_text(item, &format!("rasd:{name}")).map(str::to_string)
}

/// Items: the disk (17) must point at the Disk and at a controller (5 or 6) by InstanceID;
/// InstanceIDs unique; every ethernet Item (10) connected to a NetworkSection network.
fn check_items(ovf: &str, disk_id: &str) -> Result<(), CheckError> {
    let items: Vec<&str> = ovf.split("<Item").skip(1).filter_map(|s| s.split("</Item>").next()).collect();
    let disk_items: Vec<&str> = items.iter().copied().filter(|it| rasd(it, "ResourceType").as_deref() == Some("17")).collect();
    let disk_item = only(&disk_items, "disk Item")?;
    let err = |what: &str| CheckError::Ovf(what.into());
    if rasd(disk_item, "HostResource") != Some(format!("ovf:/disk/{disk_id}")) {
        return Err(err("disk Item HostResource does not match the Disk diskId"));
    }
    let parent = rasd(disk_item, "Parent").ok_or_else(|| err("disk Item without Parent"))?;
    let ctrl = items
        .iter()
        .find(|it| rasd(it, "InstanceID").as_deref() == Some(&parent))
        .ok_or_else(|| err("disk Item Parent matches no Item"))?;
    if !matches!(rasd(ctrl, "ResourceType").as_deref(), Some("5" | "6")) {
        return Err(err("disk Item Parent is not an IDE or SCSI controller"));
    }
    let mut ids: Vec<String> = items.iter().filter_map(|it| rasd(it, "InstanceID")).collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    if ids.len() != n || n != items.len() {
        return Err(err("Item InstanceIDs are missing or not unique"));
    }
    for it in items.iter().filter(|it| rasd(it, "ResourceType").as_deref() == Some("10")) {
        let conn = rasd(it, "Connection").ok_or_else(|| err("ethernet Item without Connection"))?;
        if !xml_tags(ovf, "Network").iter().any(|t| xml_attr(t, "ovf:name").map(unescape).as_deref() == Some(&conn)) {
            return Err(CheckError::Ovf(format!("ethernet Connection {conn:?} is not in the NetworkSection")));
        }
    }
    Ok(())
}
