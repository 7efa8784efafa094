#![allow(clippy::unwrap_used, clippy::expect_used)]
//! End-to-end builds on the small MBR upstream, as root: provisioners, guards, stamp, seal,
//! verification failures, and that nothing is ever left behind.

mod util;

use std::path::Path;

use util::*;

const PROVISION: &str = r#"
[[provision]]
type = "shell"
name = "hello"
inline = [
  "echo provisioned > /etc/provisioned",
  "echo \"build=$IMGFORGE_BUILD path=$PATH\" > /etc/build-env",
  "cat /etc/resolv.conf > /etc/resolv-during-build",
  "test -x /usr/sbin/policy-rc.d && echo yes > /etc/policy-during-build",
  "test -e /proc/1",
  "echo line to stdout; echo line to stderr >&2",
]

[[provision]]
type = "file"
source = "payload.conf"
destination = "/etc/app/"
mode = "0640"

[[provision]]
type = "overlay"
source = "overlay"
"#;

fn setup(name: &str) -> tempfile::TempDir {
    let dir = testdir(name);
    std::fs::write(dir.path().join("payload.conf"), "key = value\n").unwrap();
    let ov = dir.path().join("overlay/usr/local/bin");
    std::fs::create_dir_all(&ov).unwrap();
    std::fs::write(ov.join("tool"), "#!/bin/sh\necho tool\n").unwrap();
    std::fs::set_permissions(ov.join("tool"), std::os::unix::fs::PermissionsExt::from_mode(0o751)).unwrap();
    dir
}

fn build(dir: &Path, recipe_text: &str) -> std::process::Output {
    let r = recipe(dir, recipe_text);
    let o = run(imgforge().arg("build").arg(&r).arg("--output-dir").arg(dir.join("out")));
    assert_clean(dir);
    o
}

fn mode_of(p: &Path) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(&std::fs::symlink_metadata(p).unwrap().permissions()) & 0o7777
}

#[test]
fn small_qcow2_end_to_end() {
    if !have_root("small_qcow2_end_to_end") {
        return;
    }
    let up = small_upstream();
    let dir = setup("e2e");
    let o = build(dir.path(), &(small_head(up, "small-mbr.qcow2") + PROVISION + "[output]\nformats = [\"qcow2\", \"vhd\"]\n"));
    assert!(o.status.success(), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("[hello] line to stdout") && err.contains("[hello] line to stderr"), "{err}");

    let raw = dir.path().join("out/small.raw");
    let m = RoMount::open(&raw, 1);
    assert_eq!(m.read("/etc/provisioned"), "provisioned\n");
    let env = m.read("/etc/build-env");
    assert!(env.starts_with("build=1 path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"), "{env}");
    assert!(m.read("/etc/resolv-during-build").contains("imgforge: for the build only"));
    assert_eq!(m.read("/etc/policy-during-build"), "yes\n");
    // Guards are gone and the original resolv.conf is byte-identical.
    assert!(!m.path("/usr/sbin/policy-rc.d").exists());
    assert_eq!(m.read("/etc/resolv.conf"), "nameserver 192.0.2.53\n");
    // file + overlay
    assert_eq!(m.read("/etc/app/payload.conf"), "key = value\n");
    assert_eq!(mode_of(&m.path("/etc/app/payload.conf")), 0o640);
    assert_eq!(mode_of(&m.path("/usr/local/bin/tool")), 0o751);
    // stamp
    let rel = m.read("/etc/imgforge-release");
    assert!(rel.contains("IMGFORGE_IMAGE=\"small\"") && rel.contains("IMGFORGE_VERSION=\"1.0.0\""), "{rel}");
    let os = m.read("/etc/os-release");
    assert!(os.contains("IMAGE_ID=small\nIMAGE_VERSION=1.0.0\n"), "{os}");
    // seal
    let ssh: Vec<_> = std::fs::read_dir(m.path("/etc/ssh")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(ssh.iter().all(|n| !n.to_string_lossy().starts_with("ssh_host_")), "{ssh:?}");
    assert_eq!(std::fs::metadata(m.path("/etc/machine-id")).unwrap().len(), 0);
    // nothing of the build in /run or /tmp of the image
    assert!(!m.path("/run/imgforge").exists());
    drop(m);

    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("out/small.manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["name"], "small");
    // Read from the image's busybox (/bin/sh → busybox, resolved inside the image).
    assert_eq!(manifest["architecture"], if cfg!(target_arch = "x86_64") { "x86_64" } else { "arm64" });
    assert_eq!(manifest["provisioners"].as_array().unwrap().len(), 3);
    let sha = manifest["outputs"][0]["sha256"].as_str().unwrap();
    let sum = run(std::process::Command::new("sha256sum").arg(&raw));
    assert!(String::from_utf8_lossy(&sum.stdout).starts_with(sha));
    assert!(manifest["source"]["signing_key_fingerprint"].as_str().unwrap().len() == 40);
    // the output is sparse
    let meta = std::fs::metadata(&raw).unwrap();
    assert!(std::os::unix::fs::MetadataExt::blocks(&meta) * 512 < meta.len() / 2, "output not sparse");
    // [output] formats: each output listed with its real size and digest, and equal to the raw.
    let outs = manifest["outputs"].as_array().unwrap();
    let formats: Vec<&str> = outs.iter().map(|o| o["format"].as_str().unwrap()).collect();
    assert_eq!(formats, ["raw", "qcow2", "vhd"]);
    for o in outs {
        let bytes = std::fs::read(o["path"].as_str().unwrap()).unwrap();
        assert_eq!(o["size"].as_u64().unwrap(), bytes.len() as u64, "{o}");
        assert_eq!(o["sha256"].as_str().unwrap(), hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)), "{o}");
    }
    for (file, fmt) in [("small.qcow2", "qcow2"), ("small.vhd", "vpc")] {
        let c = run(std::process::Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", fmt])
            .arg(&raw)
            .arg(dir.path().join("out").join(file)));
        assert!(c.status.success(), "{file}: {}", show(&c));
    }
    // no stray files in the output dir
    let mut names: Vec<String> =
        std::fs::read_dir(dir.path().join("out")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["small.manifest.json", "small.qcow2", "small.raw", "small.seal.json", "small.vhd"]);
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// No process runs `needle` — allowing the kernel up to 5 s to finish tearing down a killed
/// build's PID namespace (its processes are killed, but not at the instant the build dies).
fn no_process_matching(needle: &str) -> bool {
    for _ in 0..100 {
        if run(std::process::Command::new("pgrep").args(["-f", needle])).stdout.is_empty() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

#[test]
fn bad_checksum_fails_closed_and_caches_nothing() {
    if !have_root("bad_checksum_fails_closed_and_caches_nothing") {
        return;
    }
    let up = small_upstream();
    let dir = testdir("badsum");
    let sums = std::fs::read_to_string(up.join("SHA256SUMS")).unwrap();
    let real = sums.lines().find(|l| l.ends_with("small-mbr.raw")).unwrap().split_whitespace().next().unwrap().to_string();
    let fake = "0".repeat(64);
    std::fs::write(dir.path().join("SHA256SUMS"), sums.replace(&real, &fake)).unwrap();
    let text = format!(
        "[image]\nname = \"small\"\nversion = \"1\"\n[source]\nurl = \"{}/small-mbr.raw\"\nchecksums = \"SHA256SUMS\"\n",
        up.display()
    );
    let o = build(dir.path(), &text);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let e = stderr(&o);
    assert!(e.contains(&format!("expected SHA256 {fake}")) && e.contains(&format!("got {real}")) && e.contains("SHA256SUMS"), "{e}");
    assert!(!dir.path().join("out/small.raw").exists());
}

#[test]
fn wrong_signing_key_and_tampered_sums_fail_closed() {
    if !have_root("wrong_signing_key_and_tampered_sums_fail_closed") {
        return;
    }
    let up = small_upstream();
    let dir = testdir("badsig");
    let wrong_key = small_head(up, "small-mbr.raw").replace("keys/vendor.asc", "keys/other.asc");
    let o = build(dir.path(), &wrong_key);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(stderr(&o).contains("which is not the pinned key"), "{}", show(&o));

    // A sums file with one extra line no longer matches its signature.
    let mut sums = std::fs::read_to_string(up.join("SHA256SUMS")).unwrap();
    sums.push_str(&format!("{}  extra.img\n", "1".repeat(64)));
    std::fs::write(dir.path().join("SHA256SUMS"), sums).unwrap();
    let tampered = small_head(up, "small-mbr.raw").replace(&format!("{}/SHA256SUMS\"", up.display()), "SHA256SUMS\"");
    let o = build(dir.path(), &tampered);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(stderr(&o).contains("the data does not match the signature"), "{}", show(&o));
    assert!(!dir.path().join("out/small.raw").exists());
}

#[test]
fn failing_provisioner_names_itself_and_kills_its_children() {
    if !have_root("failing_provisioner_names_itself_and_kills_its_children") {
        return;
    }
    let up = small_upstream();
    let dir = testdir("failprov");
    let text = small_head(up, "small-mbr.raw")
        + "[[provision]]\ntype = \"shell\"\ninline = [\"true\"]\n\n[[provision]]\ntype = \"shell\"\nname = \"breaks\"\ninline = [\"sleep 1001 &\", \"echo about to fail\", \"exit 3\"]\n";
    let o = build(dir.path(), &text);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let e = stderr(&o);
    assert!(e.contains("provisioner 2/2 \"breaks\" (shell) failed") && e.contains("exit code 3") && e.contains("about to fail"), "{e}");
    assert!(no_process_matching("sleep 1001"), "the provisioner's background process survived");
    assert!(!dir.path().join("out/small.raw").exists());
    // --on-error keep leaves the disk, unmounted and detached, and says where.
    let r = recipe(dir.path(), &text);
    let o = run(imgforge().arg("build").arg(&r).arg("--output-dir").arg(dir.path().join("out")).args(["--on-error", "keep"]));
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(stderr(&o).contains("small.failed.raw"), "{}", show(&o));
    assert!(dir.path().join("out/small.failed.raw").is_file());
    assert_clean(dir.path());
}

#[test]
fn daemons_and_mounts_left_by_provisioners_do_not_block_teardown() {
    if !have_root("daemons_and_mounts_left_by_provisioners_do_not_block_teardown") {
        return;
    }
    let up = small_upstream();
    let dir = testdir("daemons");
    let text = small_head(up, "small-mbr.raw")
        + "[[provision]]\ntype = \"shell\"\ninline = [\"sleep 1002 &\", \"(cd /tmp && setsid sleep 1003 > /dev/null 2>&1 &)\", \"mkdir -p /mnt/scratch\", \"mount -t tmpfs tmpfs /mnt/scratch\", \"echo x > /mnt/scratch/file\"]\n";
    let o = build(dir.path(), &text);
    assert!(o.status.success(), "{}", show(&o));
    assert!(no_process_matching("sleep 1002") && no_process_matching("sleep 1003"), "a daemon survived the provisioner");
    let m = RoMount::open(&dir.path().join("out/small.raw"), 1);
    assert!(m.path("/mnt/scratch").is_dir() && !m.path("/mnt/scratch/file").exists());
}

#[test]
fn hostile_symlinks_never_reach_the_host() {
    if !have_root("hostile_symlinks_never_reach_the_host") {
        return;
    }
    let canary = Path::new("/tmp/imgforge-host-canary");
    std::fs::create_dir_all(canary.join("ssh")).unwrap();
    std::fs::write(canary.join("ssh/ssh_host_rsa_key"), "HOST KEY\n").unwrap();
    std::fs::write(canary.join("machine-id"), "hostmachineid\n").unwrap();
    let up = hostile_upstream();
    let dir = testdir("hostile");
    let o = build(dir.path(), &small_head(up, "small-mbr.raw"));
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(std::fs::read_to_string(canary.join("ssh/ssh_host_rsa_key")).unwrap(), "HOST KEY\n");
    assert_eq!(std::fs::read_to_string(canary.join("machine-id")).unwrap(), "hostmachineid\n");
    let m = RoMount::open(&dir.path().join("out/small.raw"), 1);
    let mid = std::fs::symlink_metadata(m.path("/etc/machine-id")).unwrap();
    assert!(mid.is_file() && mid.len() == 0, "machine-id should be an empty regular file");
    drop(m);
    // A file provisioner aimed through the symlink fails (or lands inside); the host is untouched.
    std::fs::write(dir.path().join("x.conf"), "x\n").unwrap();
    let text = small_head(up, "small-mbr.raw")
        + "[[provision]]\ntype = \"file\"\nsource = \"x.conf\"\ndestination = \"/etc/ssh/ssh_host_rsa_key\"\n";
    let o = build(dir.path(), &text);
    assert_eq!(std::fs::read_to_string(canary.join("ssh/ssh_host_rsa_key")).unwrap(), "HOST KEY\n", "{}", show(&o));
}

#[test]
fn two_builds_at_once_from_one_upstream() {
    if !have_root("two_builds_at_once_from_one_upstream") {
        return;
    }
    let up = small_upstream();
    let dirs = [testdir("par-a"), testdir("par-b")];
    let children: Vec<_> = dirs
        .iter()
        .map(|d| {
            let r = recipe(d.path(), &(small_head(up, "small-mbr.qcow2") + "[[provision]]\ntype = \"shell\"\ninline = [\"sleep 1\"]\n"));
            imgforge().arg("build").arg(&r).arg("-o").arg(d.path().join("out")).stderr(std::process::Stdio::piped()).spawn().unwrap()
        })
        .collect();
    for (c, d) in children.into_iter().zip(&dirs) {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", show(&o));
        assert!(d.path().join("out/small.raw").is_file());
        assert_clean(d.path());
    }
}

/// Starts a build whose provisioner blocks, waits until it runs, sends `sig`, and checks the
/// host is clean afterwards and the next build succeeds.
fn interrupt_mid_build(name: &str, sig: nix::sys::signal::Signal) {
    interrupt_build_of(name, sig, small_upstream(), "small-mbr.raw");
}

fn interrupt_build_of(name: &str, sig: nix::sys::signal::Signal, up: &Path, image: &str) {
    use std::io::{BufRead, BufReader};
    let dir = testdir(name);
    let r = recipe(
        dir.path(),
        &(small_head(up, image) + "[[provision]]\ntype = \"shell\"\nname = \"slow\"\ninline = [\"echo started\", \"sleep 1004\"]\n"),
    );
    let mut child =
        imgforge().arg("build").arg(&r).arg("-o").arg(dir.path().join("out")).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.contains("[slow] started") {
            break;
        }
    }
    assert!(seen.iter().any(|l| l.contains("[slow] started")), "{seen:?}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
    let pid = child.id();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert!(!status.success(), "{rest:?}");
    assert_clean(dir.path());
    assert!(no_process_matching("sleep 1004"), "the provisioner survived {sig}");
    let out: Vec<_> = std::fs::read_dir(dir.path().join("out")).unwrap().collect();
    assert!(out.is_empty(), "output dir not empty after {sig}: {out:?}");
    assert!(no_device_mapper_volumes(), "a device-mapper volume was left");
    let o = build(dir.path(), &small_head(up, image));
    assert!(o.status.success(), "next build after {sig}: {}", show(&o));
    let stale: Vec<_> = std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&format!("imgforge-{pid}-")))
        .collect();
    assert!(stale.is_empty(), "mount directory of the killed build left in /tmp: {stale:?}");
}

#[test]
fn sigterm_mid_build_cleans_up() {
    if have_root("sigterm_mid_build_cleans_up") {
        interrupt_mid_build("sigterm", nix::sys::signal::Signal::SIGTERM);
    }
}

/// Nothing in /dev/mapper but its control node (imgforge never activates an image's LVM).
fn no_device_mapper_volumes() -> bool {
    std::fs::read_dir("/dev/mapper").map_or(true, |d| d.flatten().all(|e| e.file_name() == "control"))
}

#[test]
fn kill_9_mid_lvm_build_leaves_nothing() {
    if have_root("kill_9_mid_lvm_build_leaves_nothing") {
        interrupt_build_of("kill9-lvm", nix::sys::signal::Signal::SIGKILL, lvm_upstream(), "small-lvm.raw");
    }
}

#[test]
fn kill_9_mid_build_leaves_nothing() {
    if have_root("kill_9_mid_build_leaves_nothing") {
        interrupt_mid_build("kill9", nix::sys::signal::Signal::SIGKILL);
    }
}

#[test]
fn http_source_is_verified_then_cached_by_digest() {
    if !have_root("http_source_is_verified_then_cached_by_digest") {
        return;
    }
    let up = small_upstream();
    let dir = testdir("http");
    let served = dir.path().join("served");
    std::fs::create_dir_all(served.join("keys")).unwrap();
    for f in ["small-mbr.qcow2", "SHA256SUMS", "SHA256SUMS.gpg"] {
        std::fs::copy(up.join(f), served.join(f)).unwrap();
    }
    let server = HttpServer::serve(&served);
    let base = format!("http://127.0.0.1:{}", server.port);
    let text = format!(
        "[image]\nname = \"small\"\nversion = \"1\"\n[source]\nurl = \"{base}/small-mbr.qcow2\"\nchecksums = \"{base}/SHA256SUMS\"\nsignature = \"{base}/SHA256SUMS.gpg\"\nsigning_key = \"{}/keys/vendor.asc\"\n",
        up.display()
    );
    let cache = dir.path().join("cache");
    let r = recipe(dir.path(), &text);
    let build = || run(imgforge().arg("build").arg(&r).arg("-o").arg(dir.path().join("out")).arg("--cache-dir").arg(&cache));
    let o = build();
    assert!(o.status.success(), "{}", show(&o));
    let cached: Vec<String> = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert!(cached[0].starts_with("sha256-"), "{cached:?}");
    // The image is gone upstream: the second build is served from the cache.
    std::fs::remove_file(served.join("small-mbr.qcow2")).unwrap();
    let o = build();
    assert!(o.status.success(), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("using cached download"), "{}", show(&o));
    assert_clean(dir.path());

    // A download whose digest does not match is not cached.
    std::fs::remove_dir_all(&cache).unwrap();
    std::fs::copy(up.join("small-mbr.raw"), served.join("small-mbr.qcow2")).unwrap();
    let o = build();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("checksum mismatch"), "{}", show(&o));
    let left: Vec<_> = std::fs::read_dir(&cache).map(|d| d.collect::<Vec<_>>()).unwrap_or_default();
    assert!(left.is_empty(), "a bad download stayed in the cache: {left:?}");
}

#[test]
fn inspect_shows_partitions_labels_and_os_release() {
    if !have_root("inspect_shows_partitions_labels_and_os_release") {
        return;
    }
    let up = small_upstream();
    for img in ["small-mbr.raw", "small-mbr.qcow2"] {
        let o = run(imgforge().arg("inspect").arg(up.join(img)));
        assert!(o.status.success(), "{}", show(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains("Mbr partition table") && out.contains("ext4") && out.contains("label=rootfs"), "{out}");
        assert!(out.contains("ID=small"), "{out}");
    }
}

#[test]
fn json_progress_is_one_versioned_event_per_line() {
    if !have_root("json_progress_is_one_versioned_event_per_line") {
        return;
    }
    let up = small_upstream();
    let dir = testdir("json");
    let r = recipe(dir.path(), &(small_head(up, "small-mbr.raw") + "[[provision]]\ntype = \"shell\"\ninline = [\"echo hi\"]\n"));
    let o = run(imgforge().arg("build").arg(&r).arg("-o").arg(dir.path().join("out")).arg("--json"));
    assert!(o.status.success(), "{}", show(&o));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    assert!(events.iter().all(|e| e["schema"] == 1), "{events:?}");
    assert!(events.iter().any(|e| e["event"] == "output" && e["line"] == "hi" && e["provisioner"] == "shell #1"), "{events:?}");
    let last = events.last().unwrap();
    assert_eq!(last["event"], "result");
    assert_eq!(last["outputs"][0]["format"], "raw");
    assert_clean(dir.path());
}

/// A build whose root filesystem cannot be mounted (an unknown incompatible ext4 feature set in
/// its superblock) fails, and leaves nothing: no loop device, no mount, and no mount directory
/// (it used to stay in $TMPDIR until a later build swept it).
#[test]
fn failed_mount_leaves_no_mount_directory() {
    if !have_root("failed_mount_leaves_no_mount_directory") {
        return;
    }
    use std::os::unix::fs::FileExt;
    let up = small_upstream();
    let dir = testdir("badmount");
    let raw = dir.path().join("bad.raw");
    std::fs::copy(up.join("small-mbr.raw"), &raw).unwrap();
    let (_, start, _) = sfdisk_parts(&raw)[0];
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&raw).unwrap();
    // s_feature_incompat: superblock at +1024, field at 0x60.
    let mut incompat = [0u8; 4];
    f.read_exact_at(&mut incompat, start + 1024 + 0x60).unwrap();
    let v = u32::from_le_bytes(incompat) | 0x8000_0000;
    f.write_all_at(&v.to_le_bytes(), start + 1024 + 0x60).unwrap();
    drop(f);
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(&raw).unwrap()))
    };
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let r = recipe(
        dir.path(),
        &format!("[image]\nname = \"bad\"\nversion = \"1\"\n[source]\nurl = \"{}\"\nsha256 = \"{digest}\"\n", raw.display()),
    );
    let o = run(imgforge().arg("build").arg(&r).arg("--output-dir").arg(dir.path().join("out")).env("TMPDIR", &tmp));
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("mount"), "{}", show(&o));
    assert_clean(dir.path());
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}\n{}", show(&o));
}

/// A clearsigned checksums file (Fedora's CHECKSUM style): `signing_key` without `signature`
/// verifies the inline signature and uses only the signed text; a tampered file or a plain one
/// fails closed.
#[test]
fn clearsigned_checksums_are_verified() {
    if !have_root("clearsigned_checksums_are_verified") {
        return;
    }
    let up = small_upstream();
    let dir = testdir("clearsign");
    let home = dir.path().join("gnupg");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let gpg = |args: &[&str]| {
        let o = run(std::process::Command::new("gpg")
            .env("GNUPGHOME", &home)
            .args(["--batch", "--yes", "--quiet", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args));
        assert!(o.status.success(), "gpg {args:?}: {}", show(&o));
        o.stdout
    };
    gpg(&["--quick-gen-key", "imgforge clearsign test <clear@example.invalid>", "ed25519", "sign", "never"]);
    std::fs::write(dir.path().join("vendor.asc"), gpg(&["--armor", "--export", "clear@example.invalid"])).unwrap();
    let sums = dir.path().join("CHECKSUM");
    let plain = std::fs::read_to_string(up.join("SHA256SUMS")).unwrap();
    std::fs::write(dir.path().join("plain"), &plain).unwrap();
    gpg(&[
        "--local-user",
        "clear@example.invalid",
        "--clearsign",
        "--output",
        sums.to_str().unwrap(),
        dir.path().join("plain").to_str().unwrap(),
    ]);
    let _ = std::process::Command::new("gpgconf").env("GNUPGHOME", &home).args(["--kill", "all"]).status();
    let head = |checksums: &std::path::Path| {
        format!(
            "[image]\nname = \"clear\"\nversion = \"1\"\n[source]\nurl = \"{}\"\nchecksums = \"{}\"\nsigning_key = \"vendor.asc\"\n",
            up.join("small-mbr.raw").display(),
            checksums.display()
        )
    };

    let o = build(dir.path(), &head(&sums));
    assert!(o.status.success(), "{}", show(&o));
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("out/clear.manifest.json")).unwrap()).unwrap();
    assert_eq!(m["source"]["signing_key_fingerprint"].as_str().map(str::len), Some(40), "{m}");

    // One digit of the signed text changed: the signature no longer matches.
    let signed = std::fs::read_to_string(&sums).unwrap();
    let line = signed.lines().find(|l| l.ends_with("small-mbr.raw")).unwrap();
    let flipped = format!("{}{}", if line.starts_with('0') { '1' } else { '0' }, &line[1..]);
    let tampered = dir.path().join("CHECKSUM.tampered");
    std::fs::write(&tampered, signed.replace(line, &flipped)).unwrap();
    let o = build(dir.path(), &head(&tampered));
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("signature check of the clearsigned"), "{}", show(&o));

    // A plain checksums file with a key and no signature: refused, with what to do.
    let o = build(dir.path(), &head(&dir.path().join("plain")));
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not clearsigned"), "{}", show(&o));
}

#[test]
fn selinux_without_setfiles_plants_autorelabel() {
    if !have_root("selinux_without_setfiles_plants_autorelabel") {
        return;
    }
    let dir = testdir("selinux-autorelabel");
    std::fs::write(dir.path().join("config"), "# enforcing, but the image has no setfiles\nSELINUX=enforcing\nSELINUXTYPE=targeted\n")
        .unwrap();
    let text = small_head(small_upstream(), "small-mbr.raw")
        + "[[provision]]\ntype = \"file\"\nsource = \"config\"\ndestination = \"/etc/selinux/config\"\n";
    let o = build(dir.path(), &text);
    assert!(o.status.success(), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("SELinux (enforcing): the image has no setfiles"), "{}", show(&o));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("out/small.manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["selinux"]["relabel"], "autorelabel", "{}", manifest["selinux"]);
    assert_eq!(manifest["selinux"]["mode"], "enforcing");
    let m = RoMount::open(&dir.path().join("out/small.raw"), 1);
    assert!(m.path("/.autorelabel").is_file(), "the first boot must relabel");
    drop(m);
    // Without a config (the plain small image) nothing is said and nothing planted.
    let plain = testdir("selinux-off");
    let o = build(plain.path(), &small_head(small_upstream(), "small-mbr.raw"));
    assert!(o.status.success(), "{}", show(&o));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(plain.path().join("out/small.manifest.json")).unwrap()).unwrap();
    assert!(manifest.get("selinux").is_none(), "{manifest}");
}

/// `blkid -p` of the filesystem at `start` of `raw`: (TYPE, UUID).
fn blkid_at(raw: &Path, start: u64, size: u64) -> (String, String) {
    let o = run(std::process::Command::new("blkid")
        .args(["-p", "-o", "export", "--offset", &start.to_string(), "--size", &size.to_string()])
        .arg(raw));
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let get = |k: &str| text.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).unwrap_or("").to_string();
    (get("TYPE"), get("UUID"))
}

#[test]
fn xfs_root_grows_mounts_beside_its_twin_and_seals() {
    if !have_root("xfs_root_grows_mounts_beside_its_twin_and_seals") {
        return;
    }
    let up = xfs_upstream();
    let upstream = up.join("small-xfs.raw");
    let (_, up_start, up_size) = sfdisk_parts(&upstream)[0];
    assert_eq!(blkid_at(&upstream, up_start, up_size).0, "xfs");
    let dir = testdir("xfs-root");
    let text = small_head(up, "small-xfs.raw")
        + "[disk]\nsize = \"1GiB\"\n\n[seal]\nenable = [\"fs-uuids\"]\n\n\
           [[provision]]\ntype = \"shell\"\ninline = [\"echo xfs > /etc/built-on\", \"df -k / | tail -n 1 > /etc/df\"]\n";
    // The upstream's root mounted on the host: the build's mount meets the same XFS UUID, which
    // the kernel refuses without `nouuid`.
    let twin = RoMount::open(&upstream, 1);
    let o = build(dir.path(), &text);
    drop(twin);
    assert!(o.status.success(), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("mounting partition 1 (xfs) as /"), "{err}");
    let raw = dir.path().join("out/small.raw");
    let (n, start, size) = sfdisk_parts(&raw)[0];
    assert_eq!(n, 1);
    assert!(size > 1000 << 20, "partition 1 not grown: {size}");
    // fs-uuids gave the XFS a new UUID, and fstab follows it.
    let (ty, uuid) = blkid_at(&raw, start, size);
    assert_eq!(ty, "xfs");
    assert!(!uuid.is_empty() && uuid != "6c1f5d6e-2f5a-4c39-9a55-0e0a5bd1c0de", "{uuid}");
    // A consistent filesystem after grow, provisioning, seal, trim and the UUID change.
    let dev = attach_ro(&raw, start, size);
    let repair = run(std::process::Command::new("xfs_repair").args(["-n", &dev]));
    let _ = std::process::Command::new("losetup").args(["-d", &dev]).status();
    assert!(repair.status.success(), "{}", show(&repair));
    let m = RoMount::at(&raw, start, size);
    assert_eq!(m.read("/etc/built-on"), "xfs\n");
    // The provisioner saw the grown filesystem: xfs_growfs ran before it.
    let df = m.read("/etc/df");
    let total_kb: u64 = df.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(total_kb > 900 * 1024, "{df}");
    assert_eq!(m.read("/etc/fstab"), format!("UUID={uuid} / xfs defaults,noatime 1 1\n"));
    assert_eq!(std::fs::metadata(m.path("/etc/machine-id")).unwrap().len(), 0);
    assert!(!m.path("/etc/ssh/ssh_host_rsa_key").exists());
    drop(m);
    let seal = std::fs::read_to_string(dir.path().join("out/small.seal.json")).unwrap();
    assert!(seal.contains("/: synced and trimmed"), "{seal}");
}

#[test]
fn lvm_root_used_without_activation() {
    if !have_root("lvm_root_used_without_activation") {
        return;
    }
    let up = lvm_upstream();
    let upstream = up.join("small-lvm.raw");
    let ids = |raw: &Path| {
        host_lvm(raw, 2, &["pvs", "--noheadings", "-o", "pv_uuid,vg_name,vg_uuid", "{dev}"])
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let before = ids(&upstream);
    assert_eq!(before[1], "rhel");
    let dir = testdir("lvm-root");
    let text = small_head(up, "small-lvm.raw")
        + "[[provision]]\ntype = \"shell\"\ninline = [\"echo lvm > /etc/built-on\", \"echo boot > /boot/built-on\"]\n";
    let o = build(dir.path(), &text);
    assert!(o.status.success(), "{}", show(&o));
    assert!(no_device_mapper_volumes());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("mounting logical volume rhel/root (xfs) as /"), "{err}");
    let raw = dir.path().join("out/small.raw");
    // Where host LVM says the root volume is, the build's files are.
    let (start, size) = lv_range(&raw, 2, "rhel/root");
    let m = RoMount::at(&raw, start, size);
    assert_eq!(m.read("/etc/built-on"), "lvm\n");
    assert_eq!(std::fs::metadata(m.path("/etc/machine-id")).unwrap().len(), 0);
    drop(m);
    let boot = RoMount::open(&raw, 1);
    assert_eq!(boot.read("/built-on"), "boot\n", "/boot (partition 1, from fstab) was mounted for provisioning");
    drop(boot);
    // lvm-uuids: new PV and VG UUIDs, the names kept; host LVM reads the metadata cleanly.
    let after = ids(&raw);
    assert_eq!(after[1], "rhel");
    assert_ne!(after[0], before[0], "PV UUID unchanged");
    assert_ne!(after[2], before[2], "VG UUID unchanged");
    host_lvm(&raw, 2, &["vgck", "rhel"]);
    let lvs = host_lvm(&raw, 2, &["lvs", "--noheadings", "-o", "lv_name", "rhel"]);
    assert_eq!(lvs.split_whitespace().collect::<Vec<_>>(), ["root", "swap"]);
    let seal = std::fs::read_to_string(dir.path().join("out/small.seal.json")).unwrap();
    assert!(seal.contains(&after[0]) && seal.contains(&after[2]), "{seal}");

    // What cannot be done is refused with what was found.
    let grow = build(dir.path(), &(small_head(up, "small-lvm.raw") + "[disk]\nsize = \"1GiB\"\n"));
    assert!(!grow.status.success());
    assert!(String::from_utf8_lossy(&grow.stderr).contains("the root is the logical volume rhel/root"), "{}", show(&grow));
    let wrong = build(dir.path(), &(small_head(up, "small-lvm.raw") + "[disk]\nroot = { lvm = \"rhel/home\" }\n"));
    assert!(!wrong.status.success());
    let e = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        e.contains("[disk] root lvm = \"rhel/home\": nothing on the disk matches it")
            && e.contains("lvm rhel/root:xfs")
            && e.contains("lvm rhel/swap:swap"),
        "{e}"
    );
    let swap = build(dir.path(), &(small_head(up, "small-lvm.raw") + "[disk]\nroot = { lvm = \"rhel/swap\" }\n"));
    assert!(String::from_utf8_lossy(&swap.stderr).contains("holds swap, not a Linux root filesystem"), "{}", show(&swap));
    assert!(no_device_mapper_volumes());
}
