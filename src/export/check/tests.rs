//! Hostile-input tests of the checkers: truncated files, header sizes that overflow or exceed the
//! file, huge tar sizes. Each asserts the error message; before the split most of these panicked
//! (overflow) or tried a huge allocation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::io::Cursor;

use super::ova::{MAX_TEXT_MEMBER, TarMember, read_text};
use super::section::{le16, le32, le64};
use super::vmdk::{MAX_DESCRIPTOR, MAX_GRAIN_STREAM};
use super::xml::{xml_attr, xml_tags, xml_text};
use super::{check_ova, check_stream_vmdk};
use crate::export::ova::tar_header;
use crate::export::vmdk::VmdkOptions;
use crate::export::vmdk::tests::{Fill, export, make_raw, spec, tmpdir};

/// A valid one-grain stream VMDK (1 MiB disk, 64 KiB of random data at 0): header, descriptor
/// (sectors 1..=20), fill to 128, grain marker at 128, GT, GD, footer, EOS.
fn small_vmdk() -> Vec<u8> {
    let d = tmpdir();
    let raw = d.path().join("in.raw");
    make_raw(&raw, 1 << 20, &[(0, 1 << 16, Fill::Random)]);
    let out = d.path().join("s.vmdk");
    export(&raw, &out, &spec(1 << 20, "s"), &VmdkOptions::default());
    let b = std::fs::read(&out).unwrap();
    assert!(check_stream_vmdk(Cursor::new(&b)).is_ok());
    b
}

/// The checker's error for `b`, as text.
fn vmdk_err(b: &[u8]) -> String {
    check_stream_vmdk(Cursor::new(b)).unwrap_err().to_string()
}

/// `b` with the little-endian u64 at `at` replaced.
fn set64(mut b: Vec<u8>, at: usize, v: u64) -> Vec<u8> {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
    b
}

#[test]
fn truncated_vmdk() {
    let good = small_vmdk();
    assert_eq!(vmdk_err(&[]), "header at sector 0 needs 512 bytes, but the file has only 0 left (truncated or corrupt)");
    assert_eq!(vmdk_err(&good[..100]), "VMDK size 100 is not a multiple of 512");
    // Header only.
    assert_eq!(vmdk_err(&good[..512]), "descriptor at sector 1 needs 10240 bytes, but the file has only 0 left (truncated or corrupt)");
    // Cut inside the zero fill before overHead.
    assert_eq!(
        vmdk_err(&good[..64 * 512]),
        "zero fill before overHead at sector 21 needs 54784 bytes, but the file has only 22016 left (truncated or corrupt)"
    );
    // Cut mid-grain: the marker at sector 128 is there, 71 of its data sectors are.
    let size = u64::from(le32(&good, 128 * 512 + 8, "size").unwrap());
    let rest = (12 + size).div_ceil(512) * 512 - 512;
    assert!(rest > 71 * 512, "an incompressible grain spans more than 72 sectors");
    let e = vmdk_err(&good[..200 * 512]);
    assert_eq!(e, format!("grain data at sector 129 needs {rest} bytes, but the file has only 36352 left (truncated or corrupt)"));
    // Cut right after the grain marker sector.
    assert!(
        vmdk_err(&good[..129 * 512]).starts_with(&format!("grain data at sector 129 needs {rest} bytes, but the file has only 0 left"))
    );
}

#[test]
fn descriptor_size_overflows_or_exceeds_the_file() {
    let good = small_vmdk();
    // 1 + descriptorSize overflowed (a panic) before.
    let e = vmdk_err(&set64(good.clone(), 36, u64::MAX));
    assert_eq!(e, "descriptorSize at sector 0 is 18446744073709551615, expected 1 to 127 sectors (to end before overHead 128)");
    // descriptorSize × 512 overflowed (a panic) before; overHead raised so it passes the placement check.
    let b = set64(set64(good.clone(), 36, 1 << 60), 64, 1 << 61);
    assert_eq!(vmdk_err(&b), "descriptor at sector 1: 1152921504606846976 sectors × 512 overflows");
    // 512 TiB: was allocated before reading.
    let b = set64(set64(good.clone(), 36, 1 << 40), 64, 1 << 41);
    let left = good.len() - 512;
    assert_eq!(
        vmdk_err(&b),
        format!("descriptor at sector 1 needs 562949953421312 bytes, but the file has only {left} left (truncated or corrupt)")
    );
    // Just past the end of the file.
    let sectors = good.len() as u64 / 512;
    let b = set64(set64(good.clone(), 36, sectors), 64, sectors + 1);
    let need = sectors * 512;
    assert_eq!(
        vmdk_err(&b),
        format!("descriptor at sector 1 needs {need} bytes, but the file has only {left} left (truncated or corrupt)")
    );
    // Within the file but over the cap.
    let mut big = set64(set64(good[..512].to_vec(), 36, 3000), 64, 3001);
    big.resize(4000 * 512, 0);
    assert_eq!(vmdk_err(&big), format!("descriptor at sector 1 is 1536000 bytes, more than the {MAX_DESCRIPTOR}-byte limit"));
}

#[test]
fn hostile_vmdk_header_and_marker_fields() {
    let good = small_vmdk();
    let e = vmdk_err(&set64(good.clone(), 12, 1 << 60));
    assert_eq!(e, "capacity at sector 0: 1152921504606846976 sectors × 512 overflows");
    let mut v = good.clone();
    v[4] = 1;
    assert_eq!(vmdk_err(&v), "version at sector 0 is 1, expected 3");
    // A grain marker claiming 4 GiB of compressed data (was a 4 GiB allocation).
    let mut g = good.clone();
    g[128 * 512 + 8..128 * 512 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
    let e = vmdk_err(&g);
    assert_eq!(e, format!("grain marker's compressed data at sector 128 is 4294967295 bytes, more than the {MAX_GRAIN_STREAM}-byte limit"));
    // A GT entry pointing elsewhere names the table, its sector and the entry.
    // The GT's data is followed by the GD marker, GD, FOOTER marker, footer and EOS.
    let gt = good.len() / 512 - 9;
    let mut t = good.clone();
    t[gt * 512] ^= 1;
    assert_eq!(vmdk_err(&t), format!("GT 0 at sector {gt}: entry 0 is 129, expected 128"));
}

#[test]
fn byte_readers_and_xml_finders_fail_softly() {
    assert_eq!(le32(&[1, 2, 3], 0, "x").unwrap_err().to_string(), "x: 4 bytes at offset 0 run past the end of the 3-byte buffer");
    assert_eq!(
        le64(&[0; 8], usize::MAX, "y").unwrap_err().to_string(),
        format!("y: 8 bytes at offset {} run past the end of the 8-byte buffer", usize::MAX)
    );
    assert_eq!(le16(&[0; 8], 7, "z").unwrap_err().to_string(), "z: 2 bytes at offset 7 run past the end of the 8-byte buffer");
    assert_eq!(le16(&[1, 2], 0, "w").unwrap(), 0x0201);
    assert_eq!(xml_tags("<File ovf:id=\"a\"", "File"), Vec::<&str>::new());
    assert_eq!(xml_tags("<File/><Filex/><File a=\"1\">", "File"), ["<File/>", "<File a=\"1\">"]);
    assert_eq!(xml_attr("<File ovf:id=\"open", "ovf:id"), None);
    assert_eq!(xml_text("<a>text", "a"), None);
}

/// A tar of one header (for "v.ovf") whose size field is `size` (12 bytes), the checksum fixed,
/// then the two zero end blocks.
fn tar_with_size_field(size: &[u8; 12]) -> Vec<u8> {
    let mut h = tar_header("v.ovf", 1, 0).unwrap();
    h[124..136].copy_from_slice(size);
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut t = h.to_vec();
    t.resize(512 + 1024, 0);
    t
}

fn ova_err(tar: &[u8]) -> String {
    let d = tmpdir();
    let p = d.path().join("t.ova");
    std::fs::write(&p, tar).unwrap();
    check_ova(&p).unwrap_err().to_string()
}

#[test]
fn ova_tar_header_claims_a_huge_size() {
    // One byte more than the file holds after the header (1025 = octal 2001).
    assert_eq!(
        ova_err(&tar_with_size_field(b"00000002001\0")),
        "tar member \"v.ovf\" at byte 512 needs 1025 bytes, but the file has only 1024 left (truncated or corrupt)"
    );
    // u64::MAX in GNU base-256: rounding it up to a block overflowed (a panic) before.
    let mut max = [0xffu8; 12];
    max[..4].copy_from_slice(&[0x80, 0, 0, 0]);
    assert_eq!(
        ova_err(&tar_with_size_field(&max)),
        "tar member \"v.ovf\" at byte 512 needs 18446744073709551615 bytes, but the file has only 1024 left (truncated or corrupt)"
    );
    // The largest octal size (8 GiB - 1).
    assert_eq!(
        ova_err(&tar_with_size_field(b"77777777777\0")),
        "tar member \"v.ovf\" at byte 512 needs 8589934591 bytes, but the file has only 1024 left (truncated or corrupt)"
    );
    // A base-256 number beyond 64 bits.
    let huge = [0xffu8; 12];
    assert_eq!(ova_err(&tar_with_size_field(&huge)), "tar size at byte 0: the base-256 number overflows");
    // A text member within the file but over the cap is refused before allocating.
    let d = tmpdir();
    let p = d.path().join("big.tar");
    File::create(&p).unwrap().set_len(8 << 20).unwrap();
    let m = TarMember { name: "big.ovf".into(), offset: 512, size: 5 << 20 };
    let e = read_text(&File::open(&p).unwrap(), &m, "OVF").unwrap_err().to_string();
    assert_eq!(e, format!("OVF \"big.ovf\" at byte 512 is 5242880 bytes, more than the {MAX_TEXT_MEMBER}-byte limit"));
}
