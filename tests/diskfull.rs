//! Full disks (issue 19): the output directory on a small loop-mounted filesystem that fills
//! while the working disk is written (convert), while a provisioner writes into the image, and
//! while an export is written. Each ends with a clear error naming the directory and the space
//! the build needs, nothing under a final name, nothing attached or mounted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::path::Path;
use std::process::Output;

use util::*;

fn build_into(out: &Path, dir: &Path, recipe_text: &str) -> Output {
    let r = recipe(dir, recipe_text);
    let o = run(imgforge().arg("build").arg(&r).arg("-o").arg(out).arg("--no-test"));
    assert_clean(dir);
    // Nothing attached from the output directory, nothing mounted below it (the scratch
    // filesystem itself is mounted there).
    let losetup = String::from_utf8_lossy(&run(std::process::Command::new("losetup").arg("-a")).stdout).to_string();
    assert!(!losetup.contains(&out.display().to_string()), "{losetup}");
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let below = format!("{}/", out.display());
    assert!(!mounts.lines().any(|l| l.contains(&below) || l.contains("imgforge")), "{mounts}");
    o
}

fn full(out: &Path, o: &Output, during: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{}", show(o));
    for w in [format!("the output directory {} is full", out.display()), "bytes free".to_string(), "needs".to_string()] {
        assert!(err.contains(w.as_str()), "{during}: expected {w:?} in:\n{}", show(o));
    }
    eprintln!("{during}: {}", err.lines().find(|l| l.starts_with("imgforge: error")).unwrap_or_default());
    let left: Vec<_> = std::fs::read_dir(out).unwrap().flatten().map(|e| e.file_name()).filter(|n| n != "lost+found").collect();
    assert!(left.is_empty(), "{during}: left in the output directory: {left:?}");
}

#[test]
fn full_while_converting() {
    if !have_root("full_while_converting") {
        return;
    }
    let dir = testdir("full-convert");
    let fs = ScratchFs::new("ext4", &["-q", "-F"], 4 << 20);
    let o = build_into(fs.path(), dir.path(), &small_head(small_upstream(), "small-mbr.qcow2"));
    full(fs.path(), &o, "convert");
}

#[test]
fn full_while_a_provisioner_writes() {
    if !have_root("full_while_a_provisioner_writes") {
        return;
    }
    let dir = testdir("full-provision");
    let fs = ScratchFs::new("ext4", &["-q", "-F"], 24 << 20);
    let text = small_head(small_upstream(), "small-mbr.qcow2")
        + "[disk]\nsize = \"256MiB\"\n\n[[provision]]\ntype = \"shell\"\nname = \"fill\"\ninline = [\"busybox dd if=/dev/urandom of=/big bs=1M count=64\"]\n";
    let o = build_into(fs.path(), dir.path(), &text);
    full(fs.path(), &o, "provisioner");
}

#[test]
fn full_while_exporting() {
    if !have_root("full_while_exporting") {
        return;
    }
    let dir = testdir("full-export");
    // Room for the sparse raw, not for the raw and an uncompressed qcow2 of 40 MiB of data.
    let fs = ScratchFs::new("ext4", &["-q", "-F"], 72 << 20);
    let text = small_head(small_upstream(), "small-mbr.qcow2")
        + "[[provision]]\ntype = \"shell\"\ninline = [\"busybox dd if=/dev/urandom of=/big bs=1M count=40\"]\n\n[output]\nformats = [\"qcow2\"]\n";
    let o = build_into(fs.path(), dir.path(), &text);
    full(fs.path(), &o, "export");
}

/// The output filesystem has inodes for the working disk and the seal report only: the build
/// fails exactly at the manifest write, with ENOSPC, and takes back every name it gave (raw,
/// seal report); no record is made.
#[test]
fn full_at_the_manifest_write() {
    if !have_root("full_at_the_manifest_write") {
        return;
    }
    let dir = testdir("full-manifest");
    let fs = ScratchFs::new("ext4", &["-q", "-F", "-N", "32"], 96 << 20);
    let filler = fs.path().join("filler");
    std::fs::create_dir(&filler).unwrap();
    let free = || nix::sys::statvfs::statvfs(fs.path()).unwrap().files_available();
    let mut i = 0;
    while free() > 2 {
        std::fs::write(filler.join(i.to_string()), b"").unwrap();
        i += 1;
    }
    let out = fs.path().join("out");
    // The output directory itself takes the second-last inode: one is left for the raw and
    // one for the seal report.
    std::fs::remove_file(filler.join("0")).unwrap();
    std::fs::create_dir(&out).unwrap();
    assert_eq!(free(), 2);
    let db = dir.path().join("registry.db");
    let r = recipe(dir.path(), &small_head(small_upstream(), "small-mbr.qcow2"));
    let o = run(imgforge().arg("build").arg(&r).arg("-o").arg(&out).arg("--no-test").arg("--registry").arg(&db));
    assert_clean(dir.path());
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    for w in
        [format!("the output directory {} ran out of inodes", out.display()), "Failed to write the manifest".into(), "No space left".into()]
    {
        assert!(err.contains(w.as_str()), "expected {w:?} in:\n{}", show(&o));
    }
    let left: Vec<_> = std::fs::read_dir(&out).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "left in the output directory: {left:?}");
    assert_eq!(free(), 2, "every inode the build took is free again");
    // The registry holds no record of the failed build.
    let list = run(imgforge().args(["image", "list", "--json", "--registry"]).arg(&db));
    assert!(list.status.success(), "{}", show(&list));
    let records: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(records.as_array().map(Vec::len), Some(0), "{records}");
    // With one more inode the same build succeeds.
    std::fs::remove_file(filler.join("1")).unwrap();
    let o = run(imgforge().arg("build").arg(&r).arg("-o").arg(&out).arg("--no-test").arg("--registry").arg(&db));
    assert!(o.status.success(), "{}", show(&o));
    assert!(out.join("small.manifest.json").exists() && out.join("small.raw").exists());
}
