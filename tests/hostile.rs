//! Hostile and malformed inputs (issue 19): each case feeds imgforge one broken or malicious
//! input — a partition table, a disk format, a checksums file, a signature, a recipe, an image's
//! contents — and asserts the exact refusal (exit code and the words that name the problem), or
//! a correct build, and that the host is untouched: nothing attached or mounted, no output under
//! a final name, no host file written through the image.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use sha2::Digest;
use util::*;

/// A copy of `src` in `dir` named `name`, changed by `mutate`; returns its path.
fn variant(dir: &Path, src: &Path, name: &str, mutate: impl FnOnce(&std::fs::File)) -> PathBuf {
    let p = dir.join(name);
    std::fs::copy(src, &p).unwrap();
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&p).unwrap();
    mutate(&f);
    f.sync_all().unwrap();
    p
}

fn sha256_of(p: &Path) -> String {
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut std::fs::File::open(p).unwrap(), &mut h).unwrap();
    hex::encode(h.finalize())
}

/// A recipe building `image` pinned by its SHA-256 (no checksums file), plus `extra`.
fn pinned(image: &Path, extra: &str) -> String {
    format!(
        "[image]\nname = \"hostile\"\nversion = \"1.0.0\"\n\n[source]\nurl = \"{}\"\nsha256 = \"{}\"\n\n{extra}",
        image.display(),
        sha256_of(image)
    )
}

/// Builds `recipe_text` in `dir`; checks the host is clean and no output has a final name.
fn build_in(dir: &Path, recipe_text: &str) -> Output {
    let r = recipe(dir, recipe_text);
    let o = run(imgforge().arg("build").arg(&r).arg("-o").arg(dir.join("out")).arg("--no-test"));
    assert_clean(dir);
    o
}

/// The build failed with `code`, its error naming each of `words`, and left no output.
fn refused(dir: &Path, o: &Output, code: i32, words: &[&str]) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "{}", show(o));
    for w in words {
        assert!(err.contains(w), "expected {w:?} in the error:\n{}", show(o));
    }
    let out = dir.join("out");
    let named: Vec<_> = std::fs::read_dir(&out).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(named.is_empty(), "outputs left under final names after a refusal: {named:?}");
}

fn small_raw() -> PathBuf {
    small_upstream().join("small-mbr.raw")
}

/// Writes MBR entry `i` (0-3): status, type, first LBA, sectors.
fn mbr_entry(f: &std::fs::File, i: u64, status: u8, ty: u8, lba: u32, sectors: u32) {
    let mut e = [0u8; 16];
    e[0] = status;
    e[4] = ty;
    e[8..12].copy_from_slice(&lba.to_le_bytes());
    e[12..16].copy_from_slice(&sectors.to_le_bytes());
    f.write_all_at(&e, 446 + 16 * i).unwrap();
}

fn case(name: &str) -> tempfile::TempDir {
    testdir(&format!("hostile-{name}"))
}

// --- partition tables -------------------------------------------------------------------------

#[test]
fn mbr_partition_beyond_the_disk() {
    if !have_root("mbr_partition_beyond_the_disk") {
        return;
    }
    let d = case("mbr-beyond");
    let img = variant(d.path(), &small_raw(), "up.raw", |f| mbr_entry(f, 0, 0, 0x83, 2048, 0x00ff_ffff));
    let o = build_in(d.path(), &pinned(&img, ""));
    refused(
        d.path(),
        &o,
        1,
        &["Failed to read the partition table", "partition 1 ends at byte", "beyond the end of the disk (67108864 bytes)"],
    );
}

#[test]
fn mbr_overlapping_partitions() {
    if !have_root("mbr_overlapping_partitions") {
        return;
    }
    let d = case("mbr-overlap");
    let img = variant(d.path(), &small_raw(), "up.raw", |f| mbr_entry(f, 1, 0, 0x83, 4096, 100));
    let o = build_in(d.path(), &pinned(&img, ""));
    refused(d.path(), &o, 1, &["partitions 1 and 2 overlap"]);
}

#[test]
fn mbr_extended_chain_that_loops() {
    if !have_root("mbr_extended_chain_that_loops") {
        return;
    }
    let d = case("mbr-ebr-loop");
    let img = variant(d.path(), &small_raw(), "up.raw", |f| {
        // An extended partition in the last 10 MiB (the root partition shortened to end before
        // it) whose second EBR links to itself: a reader that follows links loops forever.
        mbr_entry(f, 0, 0, 0x83, 2048, 100_000);
        mbr_entry(f, 1, 0, 0x05, 110_000, 20_000);
        let ebr = |next_rel: u32| {
            let mut b = [0u8; 512];
            b[446 + 4] = 0x83;
            b[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
            b[446 + 12..446 + 16].copy_from_slice(&10u32.to_le_bytes());
            b[462 + 4] = 0x05;
            b[462 + 8..462 + 12].copy_from_slice(&next_rel.to_le_bytes());
            b[462 + 12..462 + 16].copy_from_slice(&20u32.to_le_bytes());
            b[510] = 0x55;
            b[511] = 0xAA;
            b
        };
        f.write_all_at(&ebr(100), 110_000 * 512).unwrap();
        f.write_all_at(&ebr(100), 110_100 * 512).unwrap();
    });
    let o = build_in(d.path(), &pinned(&img, ""));
    refused(d.path(), &o, 1, &["EBR at LBA 110100 links to LBA 110100, which is not after it"]);
}

#[test]
fn mbr_bad_status_byte() {
    if !have_root("mbr_bad_status_byte") {
        return;
    }
    let d = case("mbr-status");
    let img = variant(d.path(), &small_raw(), "up.raw", |f| f.write_all_at(&[0x42], 446).unwrap());
    let o = build_in(d.path(), &pinned(&img, ""));
    refused(d.path(), &o, 1, &["status byte 0x42 is neither 0x00 nor 0x80"]);
}

#[test]
fn no_partition_table() {
    if !have_root("no_partition_table") {
        return;
    }
    let d = case("no-table");
    let img = variant(d.path(), &small_raw(), "up.raw", |f| f.write_all_at(&[0, 0], 510).unwrap());
    let o = build_in(d.path(), &pinned(&img, ""));
    refused(d.path(), &o, 1, &["no partition table found on the disk (67108864 bytes): expected a GPT or MBR"]);
}

#[test]
fn disk_shorter_than_its_partition() {
    if !have_root("disk_shorter_than_its_partition") {
        return;
    }
    let d = case("short-raw");
    // The file ends 1 MiB into the root partition.
    let img = variant(d.path(), &small_raw(), "up.raw", |f| f.set_len(2 << 20).unwrap());
    let o = build_in(d.path(), &pinned(&img, ""));
    refused(d.path(), &o, 1, &["partition 1 ends at byte", "beyond the end of the disk (2097152 bytes)"]);
}

#[test]
fn empty_and_one_sector_images() {
    if !have_root("empty_and_one_sector_images") {
        return;
    }
    for (len, words) in [
        (0u64, ["Failed to read the partition table", "the disk is only 0 bytes"]),
        (300, ["Failed to read the partition table", "the disk is only 300 bytes"]),
    ] {
        let d = case("tiny");
        let img = variant(d.path(), &small_raw(), "up.raw", |f| f.set_len(len).unwrap());
        let o = build_in(d.path(), &pinned(&img, ""));
        refused(d.path(), &o, 1, &words);
    }
}

#[test]
fn mbr_two_extended_partitions() {
    if !have_root("mbr_two_extended_partitions") {
        return;
    }
    let d = case("mbr-two-ext");
    let img = variant(d.path(), &small_raw(), "up.raw", |f| {
        mbr_entry(f, 0, 0, 0x83, 2048, 60_000);
        mbr_entry(f, 1, 0, 0x05, 70_000, 10_000);
        mbr_entry(f, 2, 0, 0x0f, 90_000, 10_000);
    });
    let o = build_in(d.path(), &pinned(&img, ""));
    refused(d.path(), &o, 1, &["partitions 2 and 3 are both extended partitions"]);
}

#[test]
fn mbr_protective_entry_without_a_gpt() {
    if !have_root("mbr_protective_entry_without_a_gpt") {
        return;
    }
    let d = case("mbr-ee");
    let img = variant(d.path(), &small_raw(), "up.raw", |f| mbr_entry(f, 0, 0, 0xEE, 1, 131_071));
    let o = build_in(d.path(), &pinned(&img, ""));
    // A protective entry promises a GPT; there is none.
    refused(d.path(), &o, 1, &["Failed to read GPT: primary is invalid", "expected \"EFI PART\"", "backup is invalid"]);
}

#[test]
fn partition_without_a_filesystem() {
    if !have_root("partition_without_a_filesystem") {
        return;
    }
    let d = case("no-fs");
    // The root's superblock zeroed: nothing the build could mount.
    let img = variant(d.path(), &small_raw(), "up.raw", |f| f.write_all_at(&[0u8; 4096], (1 << 20) + 1024).unwrap());
    let o = build_in(d.path(), &pinned(&img, ""));
    refused(d.path(), &o, 1, &["no Linux root filesystem found on the disk (found: 1:?)"]);
}

#[test]
fn filesystem_larger_than_its_partition() {
    if !have_root("filesystem_larger_than_its_partition") {
        return;
    }
    let d = case("fs-too-big");
    // The ext4 fills 63 MiB; the table now says its partition is 10 MiB.
    let img = variant(d.path(), &small_raw(), "up.raw", |f| mbr_entry(f, 0, 0, 0x83, 2048, 20_480));
    let o = build_in(d.path(), &pinned(&img, ""));
    refused(d.path(), &o, 1, &["the ext4 filesystem on partition 1 says it is", "larger than the 10485760 bytes it has"]);
}

#[test]
fn gpt_for_4096_byte_sectors() {
    if !have_root("gpt_for_4096_byte_sectors") {
        return;
    }
    let d = case("gpt-4k");
    let img = variant(d.path(), &xfs_raw(), "up.raw", |f| {
        let mut h = vec![0u8; 512];
        f.read_exact_at(&mut h, 512).unwrap();
        f.write_all_at(&h, 4096).unwrap();
        f.write_all_at(&[0u8; 512], 512).unwrap();
    });
    let o = build_in(d.path(), &pinned(&img, ""));
    refused(d.path(), &o, 1, &["4096-byte-sector disks are not supported"]);
}

/// The GPT of `raw` (512-byte sectors): applies `edit` to the partition entries of both the
/// primary and the backup, and `header` to both headers, then fixes every CRC.
fn rewrite_gpt(f: &std::fs::File, edit: impl Fn(&mut Vec<u8>), header: impl Fn(&mut Vec<u8>)) {
    let len = f.metadata().unwrap().len();
    for lba in [1u64, len / 512 - 1] {
        let mut h = vec![0u8; 512];
        f.read_exact_at(&mut h, lba * 512).unwrap();
        assert_eq!(&h[..8], b"EFI PART");
        let entries_lba = u64::from_le_bytes(h[72..80].try_into().unwrap());
        let count = u32::from_le_bytes(h[80..84].try_into().unwrap()) as usize;
        let size = u32::from_le_bytes(h[84..88].try_into().unwrap()) as usize;
        let mut entries = vec![0u8; count * size];
        f.read_exact_at(&mut entries, entries_lba * 512).unwrap();
        edit(&mut entries);
        f.write_all_at(&entries, entries_lba * 512).unwrap();
        h[88..92].copy_from_slice(&crc32fast::hash(&entries).to_le_bytes());
        header(&mut h);
        let hsize = u32::from_le_bytes(h[12..16].try_into().unwrap()) as usize;
        h[16..20].copy_from_slice(&[0; 4]);
        let crc = crc32fast::hash(&h[..hsize]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        f.write_all_at(&h, lba * 512).unwrap();
    }
}

fn xfs_raw() -> PathBuf {
    xfs_upstream().join("small-xfs.raw")
}

#[test]
fn gpt_partition_outside_the_disk() {
    if !have_root("gpt_partition_outside_the_disk") {
        return;
    }
    let d = case("gpt-outside");
    let img =
        variant(d.path(), &xfs_raw(), "up.raw", |f| rewrite_gpt(f, |e| e[40..48].copy_from_slice(&(1u64 << 40).to_le_bytes()), |_| {}));
    let o = build_in(d.path(), &pinned(&img, ""));
    refused(d.path(), &o, 1, &["partition 1 ends at byte 562949953421824, beyond the end of the disk (536870912 bytes)"]);
}

#[test]
fn gpt_overlapping_partitions() {
    if !have_root("gpt_overlapping_partitions") {
        return;
    }
    let d = case("gpt-overlap");
    let img = variant(d.path(), &xfs_raw(), "up.raw", |f| {
        rewrite_gpt(
            f,
            |e| {
                let first = e[..128].to_vec();
                e[128..256].copy_from_slice(&first);
                e[128 + 16] ^= 1; // another unique partition GUID
                e[128 + 32..128 + 40].copy_from_slice(&4096u64.to_le_bytes());
            },
            |_| {},
        )
    });
    let o = build_in(d.path(), &pinned(&img, ""));
    refused(d.path(), &o, 1, &["partitions 1 and 2 overlap"]);
}

#[test]
fn gpt_absurd_entry_count() {
    if !have_root("gpt_absurd_entry_count") {
        return;
    }
    let d = case("gpt-count");
    let img =
        variant(d.path(), &xfs_raw(), "up.raw", |f| rewrite_gpt(f, |_| {}, |h| h[80..84].copy_from_slice(&1_000_000_000u32.to_le_bytes())));
    let o = build_in(d.path(), &pinned(&img, ""));
    refused(d.path(), &o, 1, &["1000000000 partition entries exceed the limit"]);
}

#[test]
fn gpt_both_headers_damaged() {
    if !have_root("gpt_both_headers_damaged") {
        return;
    }
    let d = case("gpt-crc");
    let img = variant(d.path(), &xfs_raw(), "up.raw", |f| {
        let len = f.metadata().unwrap().len();
        for lba in [1, len / 512 - 1] {
            f.write_all_at(&[0xFF], lba * 512 + 40).unwrap();
        }
    });
    let o = build_in(d.path(), &pinned(&img, ""));
    refused(d.path(), &o, 1, &["primary is invalid", "backup is invalid", "stored CRC32"]);
}

// --- disk formats -----------------------------------------------------------------------------

fn qemu_img(args: &[&str]) {
    let o = run(std::process::Command::new("qemu-img").args(args));
    assert!(o.status.success(), "{}", show(&o));
}

#[test]
fn qcow2_with_a_backing_file() {
    if !have_root("qcow2_with_a_backing_file") {
        return;
    }
    let d = case("qcow2-backing");
    let img = d.path().join("up.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-b", &small_raw().display().to_string(), "-F", "raw", &img.display().to_string()]);
    let o = build_in(d.path(), &pinned(&img, ""));
    refused(d.path(), &o, 1, &["up.qcow2", "Backing file", "denied"]);
}

#[test]
fn qcow2_absurd_l1_table() {
    if !have_root("qcow2_absurd_l1_table") {
        return;
    }
    let d = case("qcow2-l1");
    let img = variant(d.path(), &small_upstream().join("small-mbr.qcow2"), "up.qcow2", |f| {
        f.write_all_at(&0x7fff_ffffu32.to_be_bytes(), 36).unwrap()
    });
    let o = build_in(d.path(), &pinned(&img, ""));
    refused(d.path(), &o, 1, &["up.qcow2: not a usable qcow2 image: its L1 table (2147483647 entries", "lies beyond the end of the file"]);
}

#[test]
fn qcow2_unknown_incompatible_feature() {
    if !have_root("qcow2_unknown_incompatible_feature") {
        return;
    }
    let d = case("qcow2-feature");
    let img = variant(d.path(), &small_upstream().join("small-mbr.qcow2"), "up.qcow2", |f| {
        f.write_all_at(&(1u64 << 40).to_be_bytes(), 72).unwrap()
    });
    let o = build_in(d.path(), &pinned(&img, ""));
    refused(d.path(), &o, 1, &["up.qcow2"]);
}

/// Found by the fuzzer (qcow2 target, 10 minutes): 29 bytes whose size field runs past the end
/// of the file; the reader filled the rest with zeros and set out to walk a 245 TB disk.
#[test]
fn qcow2_header_cut_short() {
    if !have_root("qcow2_header_cut_short") {
        return;
    }
    let d = case("qcow2-29");
    let img = d.path().join("up.qcow2");
    let mut b = vec![0u8; 29];
    b[..4].copy_from_slice(b"QFI\xfb");
    b[7] = 2;
    b[16] = 0x33;
    b[23] = 9;
    b[26] = 0xdf;
    std::fs::write(&img, &b).unwrap();
    let o = build_in(d.path(), &pinned(&img, ""));
    refused(d.path(), &o, 1, &["up.qcow2: not a usable qcow2 image: the header needs 72 bytes, the file has 29"]);
}

#[test]
fn qcow2_truncated() {
    if !have_root("qcow2_truncated") {
        return;
    }
    let d = case("qcow2-short");
    let src = small_upstream().join("small-mbr.qcow2");
    let half = std::fs::metadata(&src).unwrap().len() / 2;
    let img = variant(d.path(), &src, "up.qcow2", |f| f.set_len(half).unwrap());
    let o = build_in(d.path(), &pinned(&img, ""));
    refused(d.path(), &o, 1, &["up.qcow2", "offset"]);
}

#[test]
fn vhd_and_vmdk_inputs_are_refused_by_name() {
    if !have_root("vhd_and_vmdk_inputs_are_refused_by_name") {
        return;
    }
    for (fmt, opts, name) in [("vpc", "subformat=dynamic", "vhd"), ("vmdk", "subformat=streamOptimized", "vmdk")] {
        let d = case(name);
        let img = d.path().join(format!("up.{name}"));
        qemu_img(&["convert", "-q", "-f", "raw", "-O", fmt, "-o", opts, &small_raw().display().to_string(), &img.display().to_string()]);
        if name == "vhd" {
            // And a damaged footer checksum.
            let len = std::fs::metadata(&img).unwrap().len();
            let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
            f.write_all_at(&[0xFF; 4], len - 512 + 64).unwrap();
        }
        let o = build_in(d.path(), &pinned(&img, ""));
        refused(d.path(), &o, 1, &[&format!("up.{name}")]);
        assert!(String::from_utf8_lossy(&o.stderr).contains("imgforge reads raw and qcow2 upstream images"), "{}", show(&o));
    }
}

// --- checksums files and signatures -----------------------------------------------------------

/// A recipe over the small raw with `sums` as its checksums file (no signature).
fn with_sums(dir: &Path, sums: &[u8]) -> String {
    let up = dir.join("up");
    std::fs::create_dir_all(&up).unwrap();
    std::os::unix::fs::symlink(small_raw(), up.join("small-mbr.raw")).unwrap();
    std::fs::write(up.join("SHA256SUMS"), sums).unwrap();
    format!(
        "[image]\nname = \"hostile\"\nversion = \"1.0.0\"\n\n[source]\nurl = \"{u}/small-mbr.raw\"\nchecksums = \"{u}/SHA256SUMS\"\n\n",
        u = up.display()
    )
}

#[test]
fn sums_with_crlf_bom_and_unicode_names_still_verify() {
    if !have_root("sums_with_crlf_bom_and_unicode_names_still_verify") {
        return;
    }
    let d = case("sums-crlf");
    let digest = sha256_of(&small_raw());
    let sums = format!("\u{feff}{}  ./bilde-æøå.img\r\n{digest} *small-mbr.raw\r\n", "0".repeat(64));
    let text = with_sums(d.path(), sums.as_bytes());
    let o = build_in(d.path(), &text);
    assert!(o.status.success(), "{}", show(&o));
}

#[test]
fn sums_with_two_digests_for_the_image() {
    if !have_root("sums_with_two_digests_for_the_image") {
        return;
    }
    let d = case("sums-dup");
    let digest = sha256_of(&small_raw());
    let sums = format!("{digest}  small-mbr.raw\n{}  small-mbr.raw\n", "1".repeat(64));
    let o = build_in(d.path(), &with_sums(d.path(), sums.as_bytes()));
    refused(d.path(), &o, 1, &["small-mbr.raw", "SHA256SUMS"]);
}

#[test]
fn sums_without_the_image() {
    if !have_root("sums_without_the_image") {
        return;
    }
    let d = case("sums-missing");
    let sums = format!("{}  other.img\n", "2".repeat(64));
    let o = build_in(d.path(), &with_sums(d.path(), sums.as_bytes()));
    refused(d.path(), &o, 1, &["small-mbr.raw", "SHA256SUMS"]);
}

#[test]
fn sums_with_a_malformed_digest() {
    if !have_root("sums_with_a_malformed_digest") {
        return;
    }
    let d = case("sums-bad");
    let o = build_in(d.path(), &with_sums(d.path(), b"zz12  small-mbr.raw\n"));
    refused(d.path(), &o, 1, &["SHA256SUMS"]);
}

#[test]
fn signature_by_another_key() {
    if !have_root("signature_by_another_key") {
        return;
    }
    let d = case("sig-other");
    let up = small_upstream();
    let text = format!(
        "[image]\nname = \"hostile\"\nversion = \"1.0.0\"\n\n[source]\nurl = \"{u}/small-mbr.raw\"\nchecksums = \"{u}/SHA256SUMS\"\nsignature = \"{u}/SHA256SUMS.gpg\"\nsigning_key = \"{u}/keys/other.asc\"\n\n",
        u = up.display()
    );
    let o = build_in(d.path(), &text);
    refused(d.path(), &o, 1, &["which is not the pinned key"]);
}

#[test]
fn signature_by_an_expired_key() {
    if !have_root("signature_by_an_expired_key") {
        return;
    }
    let d = case("sig-expired");
    let home = d.path().join("gnupg");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let gpg = |args: &[&str]| {
        let o = run(std::process::Command::new("gpg")
            .arg("--homedir")
            .arg(&home)
            .args(["--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args));
        assert!(o.status.success(), "gpg {args:?}: {}", show(&o));
        o
    };
    // A key made in 2020 that expired after a day, used in 2020.
    gpg(&["--faked-system-time", "20200101T000000", "--quick-gen-key", "Expired <expired@example.invalid>", "ed25519", "sign", "1d"]);
    let text = with_sums(d.path(), format!("{}  small-mbr.raw\n", sha256_of(&small_raw())).as_bytes());
    let up = d.path().join("up");
    gpg(&[
        "--faked-system-time",
        "20200101T010000",
        "--detach-sign",
        "-o",
        &up.join("SHA256SUMS.gpg").display().to_string(),
        &up.join("SHA256SUMS").display().to_string(),
    ]);
    let key = gpg(&["--armor", "--export"]).stdout;
    std::fs::write(up.join("key.asc"), key).unwrap();
    let text = text + &format!("signature = \"{u}/SHA256SUMS.gpg\"\nsigning_key = \"{u}/key.asc\"\n", u = up.display());
    // [source] keys follow checksums: move them into the section.
    let text = text.replace("\n\nsignature", "\nsignature");
    let o = build_in(d.path(), &text);
    refused(d.path(), &o, 1, &["pinned key", "the key expired on 2020-01-02T00:00:00Z", "obtain the publisher's current key"]);
}

/// The small upstream's signed sums, with one change: `edit` applied to (sums, signature).
fn signed_variant(dir: &Path, edit: impl FnOnce(&mut Vec<u8>, &mut Vec<u8>)) -> String {
    let up = small_upstream();
    let mine = dir.join("up");
    std::fs::create_dir_all(&mine).unwrap();
    std::os::unix::fs::symlink(small_raw(), mine.join("small-mbr.raw")).unwrap();
    let mut sums = std::fs::read(up.join("SHA256SUMS")).unwrap();
    let mut sig = std::fs::read(up.join("SHA256SUMS.gpg")).unwrap();
    edit(&mut sums, &mut sig);
    std::fs::write(mine.join("SHA256SUMS"), sums).unwrap();
    std::fs::write(mine.join("SHA256SUMS.gpg"), sig).unwrap();
    format!(
        "[image]\nname = \"hostile\"\nversion = \"1.0.0\"\n\n[source]\nurl = \"{m}/small-mbr.raw\"\nchecksums = \"{m}/SHA256SUMS\"\nsignature = \"{m}/SHA256SUMS.gpg\"\nsigning_key = \"{u}/keys/vendor.asc\"\n\n",
        m = mine.display(),
        u = up.display()
    )
}

#[test]
fn sums_changed_after_signing() {
    if !have_root("sums_changed_after_signing") {
        return;
    }
    let d = case("sig-tampered");
    let text = signed_variant(d.path(), |sums, _| sums.extend_from_slice(b"# one more line\n"));
    let o = build_in(d.path(), &text);
    refused(d.path(), &o, 1, &["the data does not match the signature"]);
}

#[test]
fn signature_that_is_not_one() {
    if !have_root("signature_that_is_not_one") {
        return;
    }
    for (bytes, words) in [
        (b"this is not a signature\n".to_vec(), "Failed to parse signature"),
        // A public key where the signature should be.
        (std::fs::read(small_upstream().join("keys/vendor.asc")).unwrap(), "signature"),
    ] {
        let d = case("sig-garbage");
        let text = signed_variant(d.path(), |_, sig| *sig = bytes.clone());
        let o = build_in(d.path(), &text);
        refused(d.path(), &o, 1, &[words]);
    }
}

#[test]
fn recipe_with_an_unknown_key() {
    let d = case("unknown-key");
    let r = recipe(d.path(), "[image]\nname = \"x\"\nversion = \"1\"\ncolour = \"blue\"\n");
    let o = run(imgforge().arg("validate").arg(&r));
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("recipe.toml: line 4") && err.contains("colour"), "{}", show(&o));
}

// --- recipes ----------------------------------------------------------------------------------

#[test]
fn recipe_nested_deeper_than_anyone_writes() {
    let d = case("deep");
    let text = format!("[image]\nname = \"x\"\nversion = \"1\"\n[vars]\nx = {}1{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let r = recipe(d.path(), &text);
    let o = run(imgforge().arg("validate").arg(&r));
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("recipe.toml"), "{}", show(&o));
}

#[test]
fn recipe_with_a_huge_array() {
    let d = case("huge");
    let items = vec!["\"a\""; 1_000_000].join(",");
    let text = format!(
        "[image]\nname = \"x\"\nversion = \"1\"\n\n[source]\nurl = \"x.img\"\nsha256 = \"{}\"\n\n[seal]\nenable = [{items}]\n",
        "0".repeat(64)
    );
    std::fs::write(d.path().join("x.img"), b"").unwrap();
    let r = recipe(d.path(), &text);
    let started = std::time::Instant::now();
    let o = run(imgforge().arg("validate").arg(&r));
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("recipe.toml: line 10"), "{}", show(&o));
    assert!(started.elapsed().as_secs() < 30, "{:?}", started.elapsed());
}

#[test]
fn recipe_that_is_not_text() {
    let d = case("binary-recipe");
    let r = d.path().join("recipe.toml");
    std::fs::write(&r, b"[image]\nname = \"\xff\xfe\"\n\0\0").unwrap();
    let o = run(imgforge().arg("validate").arg(&r));
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("recipe.toml"), "{}", show(&o));
}

// --- image contents ---------------------------------------------------------------------------

/// Runs a build, killing it if it takes longer than `limit` (a hang is a failure, not a wait).
fn build_within(dir: &Path, recipe_text: &str, limit: std::time::Duration) -> Output {
    let r = recipe(dir, recipe_text);
    let child = imgforge()
        .arg("build")
        .arg(&r)
        .arg("-o")
        .arg(dir.join("out"))
        .arg("--no-test")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            std::thread::sleep(std::time::Duration::from_millis(200));
            if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_err() {
                return false;
            }
        }
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
        true
    });
    let o = child.wait_with_output().unwrap();
    let killed = watchdog.join().unwrap();
    assert!(!killed, "the build hung (killed after {limit:?}):\n{}", show(&o));
    assert_clean(dir);
    o
}

/// Every file under `dir` with its content (the host side of a canary).
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
                out.push((p, Vec::new()));
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

/// Symlinks to host paths planted at every path the build writes, rewrites, empties or
/// removes after the provisioners (stamp, seal, first-boot install, relabel fallback):
/// either a correct build or a clear refusal, and the host files they point at are untouched.
#[test]
fn symlinks_at_every_path_imgforge_touches_never_reach_the_host() {
    if !have_root("symlinks_at_every_path_imgforge_touches_never_reach_the_host") {
        return;
    }
    let d = case("symlinks");
    // Outside the recipe's directory: a link naming the build's own directory is residue the
    // seal refuses (the residue scan reads link targets), which is not what this test is about.
    let canary_dir = tempfile::Builder::new().prefix("imgforge-hostile-canary-").tempdir().unwrap();
    let canary = canary_dir.path().to_path_buf();
    for (name, is_dir) in [
        ("hostname", false),
        ("hosts", false),
        ("release", false),
        ("os-release", false),
        ("history", false),
        ("machine-id", false),
        ("authorized_keys", false),
        ("unit", false),
        ("autorelabel", false),
        ("resolv.conf", false),
        ("policy", false),
        ("logdir", true),
        ("tmpdir", true),
        ("fbdir", true),
        ("sshdir", true),
    ] {
        let p = canary.join(name);
        if is_dir {
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("keep"), format!("host {name}\n")).unwrap();
        } else {
            std::fs::create_dir_all(&canary).unwrap();
            std::fs::write(&p, format!("host {name}\n")).unwrap();
        }
    }
    let before = snapshot(&canary);
    let c = canary.display();
    let plant = [
        format!("ln -sf {c}/hostname /etc/hostname"),
        format!("ln -sf {c}/hosts /etc/hosts"),
        format!("ln -sf {c}/release /etc/imgforge-release"),
        format!("rm -f /etc/os-release && ln -s {c}/os-release /etc/os-release"),
        format!("ln -sf {c}/history /root/.bash_history"),
        format!("rm -f /etc/machine-id && ln -s {c}/machine-id /etc/machine-id"),
        format!("mkdir -p /root/.ssh && ln -sf {c}/authorized_keys /root/.ssh/authorized_keys"),
        format!("rm -rf /etc/ssh && ln -s {c}/sshdir /etc/ssh"),
        format!("mkdir -p /etc/systemd/system && ln -sf {c}/unit /etc/systemd/system/imgforge-firstboot.service"),
        format!("mkdir -p /usr/local/lib && ln -sfn {c}/fbdir /usr/local/lib/imgforge-firstboot"),
        format!("mkdir -p /etc/selinux && echo SELINUX=enforcing > /etc/selinux/config && ln -sf {c}/autorelabel /.autorelabel"),
        format!("ln -sfn {c}/logdir /var/log/app"),
        format!("ln -sfn {c}/tmpdir /tmp/link"),
        format!("ln -sfn {c}/tmpdir /var/tmp/link"),
        format!("ln -sf {c}/resolv.conf /etc/resolv.conf"),
        format!("mkdir -p /usr/sbin && ln -sf {c}/policy /usr/sbin/policy-rc.d"),
    ];
    let inline: Vec<String> = plant.iter().map(|l| format!("{l:?}")).collect();
    let head =
        small_head(small_upstream(), "small-mbr.raw") + &format!("[[provision]]\ntype = \"shell\"\ninline = [{}]\n\n", inline.join(", "));
    // Stamp, seal and the SELinux fallback meet the links: the build goes through, writing
    // regular files inside the image.
    let o = build_within(d.path(), &head, std::time::Duration::from_secs(300));
    assert_eq!(snapshot(&canary), before, "a host file changed through the image:\n{}", show(&o));
    assert!(o.status.success(), "{}", show(&o));
    let m = RoMount::open(&d.path().join("out/small.raw"), 1);
    for p in ["/etc/hostname", "/etc/imgforge-release", "/etc/machine-id", "/.autorelabel"] {
        assert!(std::fs::symlink_metadata(m.path(p)).unwrap().is_file(), "{p} is not a regular file in the image");
    }
    // (symlink_metadata: following the link would land on the host canary.)
    // (authorized_keys is kept: the recipe's provisioner made it, and ssh-userdir keeps the
    // recipe's keys.)
    assert!(std::fs::symlink_metadata(m.path("/root/.bash_history")).is_err(), "the history link is still in the image");
    drop(m);
    // The first-boot installer meets links at its own paths: refused, naming the path.
    std::fs::remove_dir_all(d.path().join("out")).unwrap();
    let o = build_within(d.path(), &(head + "[[firstboot]]\ninline = [\"echo first\"]\n"), std::time::Duration::from_secs(300));
    assert_eq!(snapshot(&canary), before, "a host file changed through the image:\n{}", show(&o));
    refused(d.path(), &o, 1, &["firstboot", "usr/local/lib/imgforge-firstboot"]);
}

/// FIFOs where the build reads, empties or removes files: nothing blocks forever.
#[test]
fn fifos_where_files_should_be_do_not_hang_the_build() {
    if !have_root("fifos_where_files_should_be_do_not_hang_the_build") {
        return;
    }
    let d = case("fifos");
    let fifos = [
        "/root/.bash_history",
        "/var/log/messages",
        "/etc/machine-id",
        "/etc/hostname",
        "/etc/os-release",
        "/etc/resolv.conf.fifo",
        "/tmp/fifo",
        "/home/fifo-user-file",
    ];
    let inline: Vec<String> = fifos.iter().map(|p| format!("\"rm -f {p} && mkdir -p $(dirname {p}) && busybox mkfifo {p}\"")).collect();
    let text =
        small_head(small_upstream(), "small-mbr.raw") + &format!("[[provision]]\ntype = \"shell\"\ninline = [{}]\n", inline.join(", "));
    let o = build_within(d.path(), &text, std::time::Duration::from_secs(180));
    if o.status.success() {
        let m = RoMount::open(&d.path().join("out/small.raw"), 1);
        // machine-id became an empty regular file; the history FIFO is gone.
        let mid = std::fs::symlink_metadata(m.path("/etc/machine-id")).unwrap();
        assert!(mid.is_file() && mid.len() == 0);
        assert!(!m.path("/root/.bash_history").exists());
    } else {
        assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    }
}

/// Device nodes in the upstream (a /dev/zero as machine-id, a block device among the logs, a
/// /dev/null as history): never read from or written to as files.
#[test]
fn device_nodes_in_the_upstream_are_not_opened() {
    if !have_root("device_nodes_in_the_upstream_are_not_opened") {
        return;
    }
    let d = case("devnodes");
    let img = variant(d.path(), &small_raw(), "up.raw", |_| {});
    {
        let (_, start, size) = sfdisk_parts(&img)[0];
        let out = run(std::process::Command::new("losetup")
            .args(["--find", "--show", "--offset", &start.to_string(), "--sizelimit", &size.to_string()])
            .arg(&img));
        assert!(out.status.success(), "{}", show(&out));
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let mnt = tempfile::Builder::new().prefix("ro-check-devnodes-").tempdir().unwrap();
        assert!(run(std::process::Command::new("mount").arg(&dev).arg(mnt.path())).status.success());
        let m = mnt.path();
        for (path, kind, major, minor) in [
            ("etc/machine-id", "c", "1", "5"),
            ("var/log/disk", "b", "7", "0"),
            ("root/.bash_history", "c", "1", "3"),
            ("etc/hostname", "c", "1", "5"),
        ] {
            let _ = std::fs::remove_file(m.join(path));
            let o = run(std::process::Command::new("mknod").arg(m.join(path)).args([kind, major, minor]));
            assert!(o.status.success(), "{}", show(&o));
        }
        let _ = run(std::process::Command::new("umount").arg(m));
        let _ = run(std::process::Command::new("losetup").args(["-d", &dev]));
    }
    let o = build_within(d.path(), &pinned(&img, ""), std::time::Duration::from_secs(180));
    if o.status.success() {
        let m = RoMount::open(&d.path().join("out/hostile.raw"), 1);
        let mid = std::fs::symlink_metadata(m.path("/etc/machine-id")).unwrap();
        assert!(mid.is_file() && mid.len() == 0, "machine-id must become an empty regular file");
        // Replaced by regular files where the seal writes; removed where it removes; a device
        // node among the logs left alone (logfiles truncates regular files only).
        assert_eq!(m.read("/etc/hostname"), "localhost\n");
        assert!(!m.path("root/.bash_history").exists());
        let disk = std::fs::symlink_metadata(m.path("var/log/disk")).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_block_device(&disk.file_type()));
    } else {
        assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    }
}

/// A root filesystem with 100 000 files (in one directory): the seal's walks and residue scan
/// finish, and the build succeeds.
#[test]
fn a_hundred_thousand_files() {
    if !have_root("a_hundred_thousand_files") {
        return;
    }
    let d = case("many-files");
    let text = small_head(small_upstream(), "small-mbr.raw")
        + "[disk]\nsize = \"512MiB\"\n\n[[provision]]\ntype = \"shell\"\ninline = [\"mkdir -p /srv/many && cd /srv/many && i=0 && while [ $i -lt 100000 ]; do : > f$i; i=$((i+1)); done\", \"ls /srv/many | wc -l > /srv/count\"]\n";
    let started = std::time::Instant::now();
    let o = build_within(d.path(), &text, std::time::Duration::from_secs(600));
    assert!(o.status.success(), "{}", show(&o));
    let m = RoMount::open(&d.path().join("out/small.raw"), 1);
    assert_eq!(m.read("/srv/count").trim(), "100000");
    eprintln!("100 000 files: built in {:?}", started.elapsed());
}
