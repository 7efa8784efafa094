//! Robustness of [`read`](super::read) on either table kind: truncated, blank and random disks.

use super::gpt::{parse_gpt, parse_gpt_header};
use super::mbr::parse_mbr;
use super::test_support::*;
use super::{PartitionError, read};
use std::io::Cursor;

#[test]
fn truncated_disks_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let disk = std::fs::read(ubuntu_gpt(dir.path(), "64M")).unwrap();
    for len in [0, 100, 511, 512, 600, 1024, 1100, 17 * 1024, 1 << 20, 32 << 20] {
        let err = read_bytes(&disk[..len]).unwrap_err();
        assert!(!err.to_string().is_empty());
    }
    let err = read_bytes(&disk[..1 << 20]).unwrap_err();
    assert!(matches!(err, PartitionError::BothGptHeadersInvalid { .. }), "{err}");
    let err = read(&mut Cursor::new(&disk[..4096]), disk.len() as u64).unwrap_err();
    let PartitionError::BothGptHeadersInvalid { primary, .. } = &err else {
        panic!("{err}");
    };
    assert!(matches!(**primary, PartitionError::Io { offset: 1024, .. }), "{err}");
    let mbr = std::fs::read(mbr_logical(dir.path(), "64M")).unwrap();
    let err = read_bytes(&mbr[..40 << 20]).unwrap_err();
    assert!(matches!(err, PartitionError::BeyondDisk { index: 2, .. }), "{err}");
    let err = read(&mut Cursor::new(&mbr[..(17 << 20) + 512]), mbr.len() as u64).unwrap_err();
    assert!(matches!(err, PartitionError::Io { .. }), "{err}");
}

#[test]
fn blank_disk_has_no_partition_table() {
    let err = read_bytes(&vec![0u8; 1 << 20]).unwrap_err();
    assert_eq!(err.to_string(), "no partition table found on the disk (1048576 bytes): expected a GPT or MBR");
}

fn mutate(rng: &mut XorShift, disk: &mut [u8], regions: &[(usize, usize)]) {
    for _ in 0..1 + rng.below(8) {
        let (start, len) = regions[rng.below(regions.len())];
        let at = start + rng.below(len);
        disk[at] = match rng.below(4) {
            0 => 0,
            1 => 0xFF,
            _ => rng.next() as u8,
        };
    }
}

#[test]
fn random_bytes_and_mutations_never_panic() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for _ in 0..2000 {
        let len = rng.below(8192);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let size = rng.next() % (1 << 40);
        let _ = parse_gpt(&bytes, &bytes, size);
        let _ = parse_mbr(&bytes, size);
        let _ = parse_gpt_header(&bytes, rng.next() % 4, size);
        let _ = read(&mut Cursor::new(&bytes), bytes.len() as u64);
        let _ = read(&mut Cursor::new(&bytes), size);
    }
    let dir = tempfile::tempdir().unwrap();
    let gpt = std::fs::read(esp_root_gpt(dir.path(), "32M")).unwrap();
    let last = gpt.len() / 512 - 1;
    let restore = [(0, 34 * 512), ((last - 32) * 512, 33 * 512)];
    let regions = [restore[0], restore[1], (512, 92), (1024, 256)];
    let mut disk = gpt.clone();
    let mut seen = std::collections::BTreeMap::new();
    for i in 0..3000 {
        mutate(&mut rng, &mut disk, &regions);
        if i % 2 == 0 {
            fix_gpt_crcs(&mut disk, 1);
            fix_gpt_crcs(&mut disk, last as u64);
        }
        let kind = match read_bytes(&disk) {
            Ok(t) => format!("Ok(backup={})", t.used_backup),
            Err(e) => format!("{e:?}").split([' ', '{', '(']).next().unwrap().to_owned(),
        };
        *seen.entry(kind).or_insert(0u32) += 1;
        for (start, len) in restore {
            disk[start..start + len].copy_from_slice(&gpt[start..start + len]);
        }
    }
    eprintln!("GPT mutation outcomes: {seen:?}");
    for kind in ["Ok(backup=false)", "Ok(backup=true)", "BothGptHeadersInvalid"] {
        assert!(seen.contains_key(kind), "no {kind} among {seen:?}");
    }
    assert!(seen.len() >= 6, "mutations reach few code paths: {seen:?}");
    let mbr = std::fs::read(mbr_logical(dir.path(), "64M")).unwrap();
    let regions = [(446, 66), (34_816 * 512 + 446, 66), (53_248 * 512 + 446, 66)];
    let mut disk = mbr.clone();
    for _ in 0..3000 {
        mutate(&mut rng, &mut disk, &regions);
        let _ = read_bytes(&disk);
        for (start, len) in regions {
            disk[start..start + len].copy_from_slice(&mbr[start..start + len]);
        }
    }
}
