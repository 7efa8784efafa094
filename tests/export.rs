//! `imgforge export`: every format checked by real readers (qemu-img check/compare/info, tar),
//! our own structural checks of the VHD footer, the OVA members and the OVF, reproducibility,
//! and bad inputs that must leave nothing behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::Digest;
use util::*;

const MIB: u64 = 1 << 20;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Half random, half text-like bytes: compressible, like a filesystem.
    fn fill(&mut self, b: &mut [u8]) {
        for (i, c) in b.chunks_mut(8).enumerate() {
            let v = if i % 2 == 0 { self.next().to_le_bytes() } else { *b"imgforge" };
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// A sparse raw of `size` bytes: random data regions, written zeros, holes, data in the last
/// (partial) cluster.
fn fixture(dir: &Path, name: &str, size: u64) -> PathBuf {
    let p = dir.join(name);
    let f = File::create(&p).unwrap();
    f.set_len(size).unwrap();
    let mut rng = Rng(0x1234_5678 ^ size);
    let mut put = |off: u64, len: u64, zero: bool| {
        if off + len > size {
            return;
        }
        let mut b = vec![0u8; len as usize];
        if !zero {
            rng.fill(&mut b);
        }
        f.write_all_at(&b, off).unwrap();
    };
    put(0, MIB + 4096, false);
    put(3 * MIB, 2 * MIB, true);
    put(5 * MIB + 512, 40 * 1024, false);
    put(9 * MIB, 3 * MIB + 7 * 512, false);
    if size > 40 * MIB {
        put(34 * MIB, MIB, false);
    }
    put(size - 1536, 1536, false);
    p
}

fn qemu_img(args: &[&str]) -> std::process::Output {
    Command::new("qemu-img").args(args).output().unwrap()
}

fn ok(o: &std::process::Output, what: &str) {
    assert!(o.status.success(), "{what}: {}", show(o));
}

fn virtual_size(fmt: &str, p: &Path) -> u64 {
    let o = qemu_img(&["info", "-f", fmt, "--output=json", p.to_str().unwrap()]);
    ok(&o, "qemu-img info");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["virtual-size"].as_u64().unwrap()
}

fn compare(raw: &Path, fmt: &str, out: &Path) {
    ok(&qemu_img(&["compare", "-f", "raw", "-F", fmt, raw.to_str().unwrap(), out.to_str().unwrap()]), &format!("qemu-img compare {fmt}"));
}

fn check(fmt: &str, out: &Path) {
    let o = qemu_img(&["check", "-f", fmt, "--output=json", out.to_str().unwrap()]);
    ok(&o, &format!("qemu-img check {fmt}"));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for k in ["corruptions", "leaks", "check-errors"] {
        assert!(v[k].as_u64().unwrap_or(0) == 0, "{fmt}: {k} in {v}");
    }
}

/// Our own reading of a VHD footer: cookie, checksum, sizes, type.
fn vhd_footer(p: &Path) -> (u64, u32) {
    let f = File::open(p).unwrap();
    let len = f.metadata().unwrap().len();
    let mut b = [0u8; 512];
    f.read_exact_at(&mut b, len - 512).unwrap();
    assert_eq!(&b[..8], b"conectix");
    let stored = u32::from_be_bytes(b[64..68].try_into().unwrap());
    b[64..68].fill(0);
    let sum = !b.iter().fold(0u32, |a, &x| a.wrapping_add(u32::from(x)));
    assert_eq!(stored, sum, "footer checksum");
    let current = u64::from_be_bytes(b[48..56].try_into().unwrap());
    assert_eq!(current, u64::from_be_bytes(b[40..48].try_into().unwrap()), "original == current size");
    (current, u32::from_be_bytes(b[60..64].try_into().unwrap()))
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

fn export(args: &[&str]) -> std::process::Output {
    run(imgforge().arg("export").args(args))
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn every_format_in_one_run_equals_the_raw_for_qemu_img() {
    let dir = testdir("export-all");
    let size = 45 * MIB + 3 * 512;
    let raw = fixture(dir.path(), "disk.raw", size);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let o = export(&[
        raw.to_str().unwrap(),
        "--format",
        "raw,qcow2,vhd,vhd-dynamic,vmdk,ova",
        "-o",
        out.to_str().unwrap(),
        "--sha256",
        "--verify",
    ]);
    ok(&o, "export");
    // --verify read the VMDK, the OVA and both VHDs back with our own readers.
    let err = String::from_utf8_lossy(&o.stderr);
    for needle in [
        "disk.vmdk: ",
        "disk.ova: members, manifest and OVF consistent",
        "disk.vhd: Fixed VHD footer valid",
        "disk.dynamic.vhd: Dynamic VHD footer valid",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    assert!(err.contains("grains equal to the raw"), "{err}");
    assert_eq!(listing(&out), ["disk.dynamic.vhd", "disk.ova", "disk.qcow2", "disk.raw", "disk.vhd", "disk.vmdk"]);
    // The printed digests are the files' digests.
    let stdout = String::from_utf8_lossy(&o.stdout);
    for line in stdout.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        let bytes = std::fs::read(parts[2]).unwrap();
        assert_eq!(parts[1].parse::<usize>().unwrap(), bytes.len(), "{line}");
        assert_eq!(parts[3], format!("sha256:{}", sha256_hex(&bytes)), "{line}");
    }

    // raw: same bytes, still sparse.
    assert_eq!(std::fs::read(out.join("disk.raw")).unwrap(), std::fs::read(&raw).unwrap());
    let blocks = |p: &Path| std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(p).unwrap()) * 512;
    assert!(blocks(&out.join("disk.raw")) < size / 2, "raw output is not sparse");

    // qcow2
    check("qcow2", &out.join("disk.qcow2"));
    compare(&raw, "qcow2", &out.join("disk.qcow2"));
    assert_eq!(virtual_size("qcow2", &out.join("disk.qcow2")), size);

    // fixed VHD: Azure's whole MiB (rounded up once), footer ours, qemu agrees.
    let vhd = out.join("disk.vhd");
    let vlen = std::fs::metadata(&vhd).unwrap().len();
    assert_eq!((vlen - 512) % MIB, 0);
    assert_eq!(vlen - 512, 46 * MIB);
    assert_eq!(vhd_footer(&vhd), (46 * MIB, 2));
    assert_eq!(virtual_size("vpc", &vhd), 46 * MIB);
    compare(&raw, "vpc", &vhd);
    assert!(blocks(&vhd) < size / 2, "fixed VHD is not sparse");

    // dynamic VHD
    let dynv = out.join("disk.dynamic.vhd");
    assert_eq!(vhd_footer(&dynv).1, 3);
    let head = std::fs::read(&dynv).unwrap();
    assert_eq!(&head[..512], &head[head.len() - 512..], "footer copy at 0");
    compare(&raw, "vpc", &dynv);
    assert_eq!(virtual_size("vpc", &dynv), size);

    // VMDK
    let vmdk = out.join("disk.vmdk");
    check("vmdk", &vmdk);
    compare(&raw, "vmdk", &vmdk);
    assert_eq!(virtual_size("vmdk", &vmdk), size);
    let v = std::fs::read(&vmdk).unwrap();
    assert_eq!(&v[..4], b"KDMV");
    assert_eq!(u32::from_le_bytes(v[4..8].try_into().unwrap()), 3, "header version 3");
    assert_eq!(&v[v.len() - 512..], &[0u8; 512][..], "ends with the EOS marker");
    let descriptor = String::from_utf8_lossy(&v[512..512 * 21]);
    assert!(descriptor.contains("createType=\"streamOptimized\""), "{descriptor}");
    assert!(!descriptor.contains("toolsInstallType"), "{descriptor}");

    // OVA: members in order, manifest exact, digests of the tar bytes, OVF consistent.
    let ova = out.join("disk.ova");
    let t = run(Command::new("tar").arg("-tvf").arg(&ova));
    ok(&t, "tar -t");
    let names: Vec<String> = String::from_utf8_lossy(&t.stdout).lines().map(|l| l.rsplit(' ').next().unwrap().to_string()).collect();
    assert_eq!(names, ["disk.ovf", "disk.mf", "disk-disk1.vmdk"]);
    let x = dir.path().join("x");
    std::fs::create_dir(&x).unwrap();
    ok(&run(Command::new("tar").arg("-xf").arg(&ova).arg("-C").arg(&x)), "tar -x");
    let ovf = std::fs::read(x.join("disk.ovf")).unwrap();
    let member = std::fs::read(x.join("disk-disk1.vmdk")).unwrap();
    let mf = std::fs::read_to_string(x.join("disk.mf")).unwrap();
    assert_eq!(mf, format!("SHA256(disk.ovf)= {}\nSHA256(disk-disk1.vmdk)= {}\n", sha256_hex(&ovf), sha256_hex(&member)));
    compare(&raw, "vmdk", &x.join("disk-disk1.vmdk"));
    check("vmdk", &x.join("disk-disk1.vmdk"));
    let ovf = String::from_utf8(ovf).unwrap();
    assert!(ovf.contains("ovf:href=\"disk-disk1.vmdk\""), "{ovf}");
    assert!(ovf.contains(&format!("ovf:size=\"{}\"", member.len())), "{ovf}");
    assert!(ovf.contains(&format!("ovf:capacity=\"{size}\"")), "{ovf}");
    assert!(ovf.contains("ovf:/disk/vmdisk1"), "{ovf}");
    assert!(ovf.contains("<vssd:VirtualSystemType>vmx-13</vssd:VirtualSystemType>"), "{ovf}");
    let xml = run(Command::new("python3")
        .args(["-c", "import sys, xml.dom.minidom; xml.dom.minidom.parse(sys.argv[1])"])
        .arg(x.join("disk.ovf")));
    ok(&xml, "OVF parses as XML");
}

#[test]
fn aligned_vhd_gets_no_extra_mib_and_sha1_ova_manifest() {
    let dir = testdir("export-aligned");
    let raw = fixture(dir.path(), "a.raw", 40 * MIB);
    let mut sf = Command::new("sfdisk").arg("-q").arg(&raw).stdin(std::process::Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(sf.stdin.as_mut().unwrap(), b"start=2048, size=20480, type=83\n").unwrap();
    assert!(sf.wait().unwrap().success());
    let vhd = dir.path().join("a.vhd");
    ok(&export(&[raw.to_str().unwrap(), "-f", "vhd", "-o", vhd.to_str().unwrap()]), "export vhd");
    assert_eq!(std::fs::metadata(&vhd).unwrap().len(), 40 * MIB + 512);
    compare(&raw, "vpc", &vhd);
    // inspect reads the fixed VHD in place and reports its footer.
    let i = run(imgforge().arg("inspect").arg(&vhd));
    ok(&i, "inspect");
    let text = String::from_utf8_lossy(&i.stdout);
    assert!(
        text.contains(
            "Fixed VHD: footer at byte 41943040, checksum valid, current size 41943040 bytes (is a whole MiB), qemu sees 41943040 bytes"
        ),
        "{text}"
    );
    assert!(text.contains(&format!("start {:>12}  size {:>12}", 2048 * 512, 20480 * 512)), "{text}");
    let ova = dir.path().join("a.ova");
    ok(&export(&[raw.to_str().unwrap(), "-f", "ova", "--ova-digest", "sha1", "-o", ova.to_str().unwrap()]), "export ova");
    let x = dir.path().join("x");
    std::fs::create_dir(&x).unwrap();
    ok(&run(Command::new("tar").arg("-xf").arg(&ova).arg("-C").arg(&x)), "tar -x");
    let mf = std::fs::read_to_string(x.join("a.mf")).unwrap();
    let sha1 = |p: &str| hex::encode(sha1::Sha1::digest(std::fs::read(x.join(p)).unwrap()));
    assert_eq!(mf, format!("SHA1(a.ovf)= {}\nSHA1(a-disk1.vmdk)= {}\n", sha1("a.ovf"), sha1("a-disk1.vmdk")));
}

#[test]
fn two_exports_are_byte_identical() {
    let dir = testdir("export-repro");
    let raw = fixture(dir.path(), "r.raw", 45 * MIB);
    let all = "qcow2,vhd,vhd-dynamic,vmdk,ova";
    let mut outs = Vec::new();
    for (i, epoch) in [(1, None), (2, None), (3, Some("1700000000")), (4, Some("1700000000"))] {
        let out = dir.path().join(format!("o{i}"));
        std::fs::create_dir(&out).unwrap();
        let mut cmd = imgforge();
        cmd.arg("export").arg(&raw).args(["-f", all, "-o"]).arg(&out);
        if let Some(e) = epoch {
            cmd.env("SOURCE_DATE_EPOCH", e);
        } else {
            cmd.env_remove("SOURCE_DATE_EPOCH");
        }
        ok(&run(&mut cmd), "export");
        outs.push(out);
    }
    for name in ["r.qcow2", "r.vhd", "r.dynamic.vhd", "r.vmdk", "r.ova"] {
        let a = std::fs::read(outs[0].join(name)).unwrap();
        assert!(a == std::fs::read(outs[1].join(name)).unwrap(), "{name} differs between two exports");
        assert!(
            std::fs::read(outs[2].join(name)).unwrap() == std::fs::read(outs[3].join(name)).unwrap(),
            "{name} differs with SOURCE_DATE_EPOCH"
        );
    }
    // The epoch reaches the outputs: the OVA's tar members carry it.
    let t = run(Command::new("tar").args(["--list", "--full-time", "-v", "-f"]).arg(outs[2].join("r.ova")).env("TZ", "UTC"));
    ok(&t, "tar");
    assert!(String::from_utf8_lossy(&t.stdout).contains("2023-11-14 22:13:20"), "{}", show(&t));
    // A different content gives different IDs.
    let other = fixture(dir.path(), "s.raw", 46 * MIB);
    let out = dir.path().join("o5");
    std::fs::create_dir(&out).unwrap();
    ok(&export(&[other.to_str().unwrap(), "-f", "vhd", "-o", out.to_str().unwrap()]), "export");
    let id = |p: &Path| {
        let b = std::fs::read(p).unwrap();
        b[b.len() - 512 + 68..b.len() - 512 + 84].to_vec()
    };
    assert_ne!(id(&out.join("s.vhd")), id(&outs[0].join("r.vhd")));
}

#[test]
fn inputs_that_are_not_raw_are_refused_and_nothing_is_written() {
    let dir = testdir("export-bad");
    let raw = fixture(dir.path(), "good.raw", 8 * MIB);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let mut cases: Vec<(PathBuf, &str)> = Vec::new();
    for (fmt, opts) in
        [("qcow2", ""), ("vmdk", "subformat=streamOptimized"), ("vpc", "subformat=fixed,force_size"), ("vpc", "subformat=dynamic")]
    {
        let p = dir.path().join(format!("in-{fmt}-{}", cases.len()));
        let mut args = vec!["convert", "-f", "raw", "-O", fmt];
        if !opts.is_empty() {
            args.extend(["-o", opts]);
        }
        args.extend([raw.to_str().unwrap(), p.to_str().unwrap()]);
        ok(&qemu_img(&args), "qemu-img convert");
        cases.push((p, if fmt == "vpc" { "vhd" } else { fmt }));
    }
    let odd = dir.path().join("odd.raw");
    std::fs::write(&odd, vec![1u8; 1000]).unwrap();
    cases.push((odd, "multiple of 512"));
    cases.push((dir.path().to_path_buf(), "not a regular file"));
    for (input, expect) in &cases {
        let o = export(&[input.to_str().unwrap(), "-f", "raw,vhd,vmdk,ova,qcow2", "-o", out.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "{}: {}", input.display(), show(&o));
        assert!(String::from_utf8_lossy(&o.stderr).contains(expect), "{}: {}", input.display(), show(&o));
        assert!(listing(&out).is_empty(), "{:?}", listing(&out));
    }
    // Over a format's limit (a sparse 3 TiB disk): refused before writing.
    let big = dir.path().join("big.raw");
    File::create(&big).unwrap().set_len(3 << 40).unwrap();
    for fmt in ["vhd", "vhd-dynamic", "vmdk", "ova"] {
        let o = export(&[big.to_str().unwrap(), "-f", fmt, "-o", out.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "{fmt}: {}", show(&o));
        assert!(String::from_utf8_lossy(&o.stderr).contains("limit"), "{fmt}: {}", show(&o));
        assert!(listing(&out).is_empty());
    }
    // Bad option values are usage errors.
    let o = export(&[raw.to_str().unwrap(), "-f", "ova", "--ova-hardware-version", "virtualbox-2.2"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let o = export(&[raw.to_str().unwrap(), "-f", "vhdx"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
}

#[test]
fn a_full_disk_fails_cleanly() {
    if !have_root("a_full_disk_fails_cleanly") {
        return;
    }
    let dir = testdir("export-full");
    let raw = fixture(dir.path(), "f.raw", 45 * MIB);
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    ok(&run(Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m", "imgforge-test-full"]).arg(&small)), "mount tmpfs");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _u = Unmount(small.clone());
    for fmt in ["raw", "vhd", "qcow2", "vhd-dynamic", "vmdk", "ova"] {
        let o = export(&[raw.to_str().unwrap(), "-f", fmt, "-o", small.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "{fmt}: {}", show(&o));
        assert!(String::from_utf8_lossy(&o.stderr).contains("full"), "{fmt}: {}", show(&o));
        assert!(listing(&small).is_empty(), "{fmt}: {:?}", listing(&small));
    }
}

#[test]
fn interrupted_exports_leave_nothing() {
    let dir = testdir("export-int");
    let raw = fixture(dir.path(), "i.raw", 45 * MIB);
    // Make it big enough to be mid-way when the signal lands: 1 GiB of data.
    {
        let f = std::fs::OpenOptions::new().write(true).open(&raw).unwrap();
        f.set_len(1100 * MIB).unwrap();
        let mut rng = Rng(99);
        let mut b = vec![0u8; 8 * MIB as usize];
        for i in 0..128 {
            rng.fill(&mut b);
            f.write_all_at(&b, 64 * MIB + i * 8 * MIB).unwrap();
        }
    }
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    for sig in [nix::sys::signal::Signal::SIGINT, nix::sys::signal::Signal::SIGKILL] {
        let child = imgforge().arg("export").arg(&raw).args(["-f", "vmdk,qcow2,vhd", "-o"]).arg(&out).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(700));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
        let o = child.wait_with_output().unwrap();
        assert!(!o.status.success(), "{sig}: finished before the signal; make the fixture bigger");
        assert!(listing(&out).is_empty(), "{sig}: {:?}", listing(&out));
    }
}

#[test]
fn a_manifest_input_records_its_outputs() {
    let dir = testdir("export-manifest");
    let raw = fixture(dir.path(), "web.raw", 9 * MIB);
    let digest = sha256_hex(&std::fs::read(&raw).unwrap());
    let m = dir.path().join("web.manifest.json");
    let manifest = serde_json::json!({
        "schema": 1, "name": "web", "version": "1", "build_date": "2024-05-01T12:00:00Z",
        "outputs": [{ "format": "raw", "path": raw.display().to_string(), "size": std::fs::metadata(&raw).unwrap().len(), "sha256": digest }]
    });
    std::fs::write(&m, serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
    ok(&export(&[m.to_str().unwrap(), "-f", "vhd", "-f", "qcow2"]), "export");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
    let outs = v["outputs"].as_array().unwrap();
    assert_eq!(outs.len(), 3, "{v}");
    for o in outs {
        let p = PathBuf::from(o["path"].as_str().unwrap());
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(o["sha256"].as_str().unwrap(), sha256_hex(&bytes), "{o}");
        assert_eq!(o["size"].as_u64().unwrap(), bytes.len() as u64);
    }
    assert!(dir.path().join("web.vhd").exists() && dir.path().join("web.qcow2").exists());
}
