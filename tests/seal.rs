//! `imgforge seal IMAGE` on copies of the cloud-like upstream, as root: a raw sealed in place,
//! a qcow2 sealed and written back, a dry run that changes no byte, residue that fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::path::Path;

use util::*;

fn sha256(p: &Path) -> String {
    let o = run(std::process::Command::new("sha256sum").arg(p));
    String::from_utf8_lossy(&o.stdout).split_whitespace().next().unwrap().to_string()
}

fn copy_raw(dir: &Path) -> std::path::PathBuf {
    let raw = dir.join("up.raw");
    let o =
        run(std::process::Command::new("cp").arg("--sparse=always").arg(cloud_upstream().join("noble-like-cloudimg-amd64.raw")).arg(&raw));
    assert!(o.status.success(), "{}", show(&o));
    raw
}

#[test]
fn raw_is_sealed_in_place_and_dry_run_changes_nothing() {
    if !have_root("raw_is_sealed_in_place_and_dry_run_changes_nothing") {
        return;
    }
    let dir = testdir("seal-raw");
    let raw = copy_raw(dir.path());
    let before = sha256(&raw);

    let o = run(imgforge().args(["seal", "--dry-run"]).arg(&raw));
    assert!(o.status.success(), "{}", show(&o));
    let plan = String::from_utf8_lossy(&o.stdout);
    for want in ["would remove /etc/ssh/ssh_host_ed25519_key", "would run cloud-init clean", "would rewrite /etc/hostname"] {
        assert!(plan.contains(want), "{want}: {plan}");
    }
    assert_eq!(sha256(&raw), before, "a dry run changed the image");
    assert!(!dir.path().join("up.seal.json").exists());

    // Without `logfiles`, the upstream's logs still name its host and address: the residue
    // scan catches them and the command fails, naming file and line.
    let o = run(imgforge().args(["seal", "--disable", "logfiles"]).arg(&raw));
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("/var/log/syslog: line 1: hostname upstream-builder"), "{err}");
    assert!(err.contains("/var/log/syslog: line 2: IP 10.0.2.15"), "{err}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("up.seal.json")).unwrap()).unwrap();
    assert!(report["operations"].as_array().unwrap().iter().all(|o| o != "logfiles"));
    assert_clean(dir.path());

    let o = run(imgforge().arg("seal").arg(&raw));
    assert!(o.status.success(), "{}", show(&o));
    assert_clean(dir.path());
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("up.seal.json")).unwrap()).unwrap();
    assert_eq!(report["residue"]["findings"].as_array().unwrap().len(), 0, "{report}");
    assert!(report["seconds"].as_f64().unwrap() > 0.0);
    let m = RoMount::open(&raw, 1);
    assert_eq!(std::fs::metadata(m.path("/etc/machine-id")).unwrap().len(), 0);
    assert!(!m.path("/etc/ssh/ssh_host_ed25519_key").exists());
    assert!(!m.path("/root/.bash_history").exists());
    assert_eq!(std::fs::metadata(m.path("/var/log/syslog")).unwrap().len(), 0);
    drop(m);
}

#[test]
fn qcow2_is_sealed_and_written_back() {
    if !have_root("qcow2_is_sealed_and_written_back") {
        return;
    }
    let dir = testdir("seal-qcow2");
    let img = dir.path().join("up.qcow2");
    std::fs::copy(cloud_upstream().join("noble-like-cloudimg-amd64.img"), &img).unwrap();
    let o = run(imgforge().arg("seal").arg(&img));
    assert!(o.status.success(), "{}", show(&o));
    assert_clean(dir.path());
    let check = run(std::process::Command::new("qemu-img").arg("check").arg(&img));
    assert!(check.status.success(), "{}", show(&check));
    let raw = dir.path().join("back.raw");
    let c = run(std::process::Command::new("qemu-img").args(["convert", "-O", "raw"]).arg(&img).arg(&raw));
    assert!(c.status.success(), "{}", show(&c));
    let m = RoMount::open(&raw, 1);
    assert_eq!(std::fs::metadata(m.path("/etc/machine-id")).unwrap().len(), 0);
    assert_eq!(m.read("/etc/hostname"), "localhost\n");
    drop(m);
    // No stray working files beside it.
    let mut names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["back.raw", "up.qcow2", "up.seal.json"]);
}

#[test]
fn residue_fails_names_the_file_and_can_be_downgraded() {
    if !have_root("residue_fails_names_the_file_and_can_be_downgraded") {
        return;
    }
    let dir = testdir("seal-residue");
    let text = cloud_head("res", "1")
        + "[[provision]]\ntype = \"shell\"\ninline = [\n  \"mkdir -p /opt/app\",\n  \"printf 'aws_access_key_id = AKIAIOSFODNN7EXAMPLE\\\\n' > /opt/app/credentials\",\n  \"printf -- '-----BEGIN OPENSSH PRIVATE KEY-----\\\\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\\\\n-----END OPENSSH PRIVATE KEY-----\\\\n' > /opt/app/deploy_key\",\n]\n";
    let r = recipe(dir.path(), &text);
    let o = run(imgforge().arg("build").arg(&r).arg("-o").arg(dir.path().join("out")));
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("/opt/app/credentials: line 1") && err.contains("aws-access-key"), "{err}");
    assert!(err.contains("/opt/app/deploy_key: line 1") && err.contains("private-key"), "{err}");
    assert!(!err.contains("AKIAIOSFODNN7EXAMPLE"), "a secret reached the log: {err}");
    assert!(!dir.path().join("out/res.raw").exists());
    assert!(dir.path().join("out/res.seal.json").exists());
    assert_clean(dir.path());

    let r = recipe(dir.path(), &(text.clone() + "\n[seal.residue]\nwarn = [\"aws-access-key\", \"private-key:/opt/app/\"]\n"));
    let o = run(imgforge().arg("build").arg(&r).arg("-o").arg(dir.path().join("out")));
    assert!(o.status.success(), "{}", show(&o));
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("out/res.seal.json")).unwrap()).unwrap();
    let findings = report["residue"]["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 2, "{report}");
    assert!(findings.iter().all(|f| f["severity"] == "warning"), "{report}");
    assert_clean(dir.path());

    // The report cannot be written (a directory holds its name): the error says so instead of
    // pointing at a file that is not there.
    let r = recipe(dir.path(), &text);
    std::fs::create_dir_all(dir.path().join("out2/res.seal.json/x")).unwrap();
    let o = run(imgforge().arg("build").arg(&r).arg("-o").arg(dir.path().join("out2")));
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("/opt/app/credentials: line 1"), "{err}");
    assert!(err.contains("the full list could not be written to"), "{err}");
    assert!(!err.contains("full list in"), "{err}");
    assert_clean(dir.path());
}

fn blkid_uuid(raw: &Path, start: u64) -> String {
    let o = run(std::process::Command::new("blkid").args(["-p", "-o", "value", "-s", "UUID", "-O", &start.to_string()]).arg(raw));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// `fs-uuids`: both ext4 filesystems get new UUIDs, fsck-clean, and the fstab and kernel
/// command line planted with the old root UUID name the new one.
#[test]
fn fs_uuids_change_every_ext4_and_their_references() {
    if !have_root("fs_uuids_change_every_ext4_and_their_references") {
        return;
    }
    let dir = testdir("seal-uuids");
    let raw = copy_raw(dir.path());
    let parts = sfdisk_parts(&raw);
    let (_, root_start, root_size) = *parts.iter().find(|p| p.0 == 1).unwrap();
    let (_, boot_start, boot_size) = *parts.iter().find(|p| p.0 == 16).unwrap();
    let (old_root, old_boot) = (blkid_uuid(&raw, root_start), blkid_uuid(&raw, boot_start));
    // Plant references with debugfs on a loop device of the root partition.
    std::fs::write(dir.path().join("fstab"), format!("UUID={old_root} / ext4 defaults 0 1\nLABEL=BOOT /boot ext4 defaults 0 2\n")).unwrap();
    std::fs::write(dir.path().join("cmdline"), format!("root=UUID={old_root} ro console=ttyS0\n")).unwrap();
    let lo = run(std::process::Command::new("losetup")
        .args(["--find", "--show", "--offset", &root_start.to_string(), "--sizelimit", &root_size.to_string()])
        .arg(&raw));
    let dev = String::from_utf8_lossy(&lo.stdout).trim().to_string();
    let cmds = format!(
        "rm /etc/fstab\nwrite {0}/fstab /etc/fstab\nmkdir /etc/kernel\nwrite {0}/cmdline /etc/kernel/cmdline\n",
        dir.path().display()
    );
    std::fs::write(dir.path().join("cmds"), cmds).unwrap();
    let dbg = run(std::process::Command::new("debugfs").arg("-w").arg("-f").arg(dir.path().join("cmds")).arg(&dev));
    let _ = run(std::process::Command::new("losetup").args(["-d", &dev]));
    assert!(dbg.status.success(), "{}", show(&dbg));

    let o = run(imgforge().args(["seal", "--enable", "fs-uuids"]).arg(&raw));
    assert!(o.status.success(), "{}", show(&o));
    assert_clean(dir.path());
    let (new_root, new_boot) = (blkid_uuid(&raw, root_start), blkid_uuid(&raw, boot_start));
    assert!(new_root.len() == 36 && new_root != old_root && new_boot != old_boot, "{old_root} {new_root} {old_boot} {new_boot}");
    for (start, size) in [(root_start, root_size), (boot_start, boot_size)] {
        let lo = run(std::process::Command::new("losetup")
            .args(["--find", "--show", "--read-only", "--offset", &start.to_string(), "--sizelimit", &size.to_string()])
            .arg(&raw));
        let dev = String::from_utf8_lossy(&lo.stdout).trim().to_string();
        let fsck = run(std::process::Command::new("e2fsck").args(["-fn", &dev]));
        let _ = run(std::process::Command::new("losetup").args(["-d", &dev]));
        assert!(fsck.status.success(), "{}", show(&fsck));
    }
    let m = RoMount::open(&raw, 1);
    assert_eq!(m.read("/etc/fstab"), format!("UUID={new_root} / ext4 defaults 0 1\nLABEL=BOOT /boot ext4 defaults 0 2\n"));
    assert_eq!(m.read("/etc/kernel/cmdline"), format!("root=UUID={new_root} ro console=ttyS0\n"));
    drop(m);
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("up.seal.json")).unwrap()).unwrap();
    assert_eq!(report["fs_uuids"].as_array().unwrap().len(), 2, "{report}");
}

/// `ssh-userdir` in a build: the upstream's root authorized_keys (planted in the upstream with
/// debugfs) is removed, the key a shell provisioner installs for `demo` ships, and a file the
/// recipe appended to keeps only the recipe's line; the report says what was kept and why.
/// `authorized_keys = "remove-all"` removes the recipe's too.
#[test]
fn recipe_authorized_keys_stay_upstream_ones_go() {
    if !have_root("recipe_authorized_keys_stay_upstream_ones_go") {
        return;
    }
    let dir = testdir("seal-userkeys");
    let up = dir.path().join("up.raw");
    let o = run(std::process::Command::new("cp").arg("--sparse=always").arg(small_upstream().join("small-mbr.raw")).arg(&up));
    assert!(o.status.success(), "{}", show(&o));
    let (_, start, size) = *sfdisk_parts(&up).iter().find(|p| p.0 == 1).unwrap();
    std::fs::write(dir.path().join("old_key"), "ssh-ed25519 AAAAC3upstream old-instance@cloud\n").unwrap();
    let cmds = format!(
        "mkdir /root/.ssh\nwrite {0}/old_key /root/.ssh/authorized_keys\nmkdir /home/ops\nmkdir /home/ops/.ssh\nwrite {0}/old_key /home/ops/.ssh/authorized_keys\n",
        dir.path().display()
    );
    std::fs::write(dir.path().join("cmds"), cmds).unwrap();
    let lo = run(std::process::Command::new("losetup")
        .args(["--find", "--show", "--offset", &start.to_string(), "--sizelimit", &size.to_string()])
        .arg(&up));
    let dev = String::from_utf8_lossy(&lo.stdout).trim().to_string();
    let dbg = run(std::process::Command::new("debugfs").arg("-w").arg("-f").arg(dir.path().join("cmds")).arg(&dev));
    let _ = run(std::process::Command::new("losetup").args(["-d", &dev]));
    assert!(dbg.status.success() && !String::from_utf8_lossy(&dbg.stderr).contains("rror"), "{}", show(&dbg));

    let text = format!(
        "[image]\nname = \"keys\"\nversion = \"1\"\n[source]\nurl = \"{}\"\nsha256 = \"{}\"\n\n[[provision]]\ntype = \"shell\"\ninline = [\n  \"mkdir -p /home/demo/.ssh\",\n  \"echo 'ssh-ed25519 AAAAC3demo demo@recipe' > /home/demo/.ssh/authorized_keys\",\n  \"echo 'ssh-ed25519 AAAAC3ops ops@recipe' >> /home/ops/.ssh/authorized_keys\",\n]\n",
        up.display(),
        sha256(&up)
    );
    let r = recipe(dir.path(), &text);
    let o = run(imgforge().arg("build").arg(&r).arg("-o").arg(dir.path().join("out")));
    assert!(o.status.success(), "{}", show(&o));
    assert_clean(dir.path());
    let m = RoMount::open(&dir.path().join("out/keys.raw"), 1);
    assert_eq!(m.read("/home/demo/.ssh/authorized_keys"), "ssh-ed25519 AAAAC3demo demo@recipe\n");
    assert_eq!(m.read("/home/ops/.ssh/authorized_keys"), "ssh-ed25519 AAAAC3ops ops@recipe\n");
    assert!(!m.path("/root/.ssh/authorized_keys").exists());
    assert!(m.path("/root/.ssh").is_dir());
    drop(m);
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("out/keys.seal.json")).unwrap()).unwrap();
    let kept = report["kept"].as_array().unwrap();
    let reason = |p: &str| kept.iter().find(|k| k["path"] == p).map(|k| k["reason"].as_str().unwrap().to_string()).unwrap_or_default();
    assert_eq!(reason("/home/demo/.ssh/authorized_keys"), "created by the recipe's provisioners", "{report}");
    assert!(reason("/home/ops/.ssh/authorized_keys").contains("the 1 line(s) the upstream had were removed"), "{report}");
    assert!(kept.iter().all(|k| k["op"] == "ssh-userdir"), "{report}");
    let removed = report["actions"].as_array().unwrap().iter().find(|a| a["path"] == "/root/.ssh/authorized_keys").unwrap();
    assert_eq!(removed["action"], "removed");
    assert_eq!(removed["detail"], "authorized keys that came with the upstream image");

    let r = recipe(dir.path(), &(text + "\n[seal.ssh-userdir]\nauthorized_keys = \"remove-all\"\n"));
    let o = run(imgforge().arg("build").arg(&r).arg("-o").arg(dir.path().join("out")));
    assert!(o.status.success(), "{}", show(&o));
    assert_clean(dir.path());
    let m = RoMount::open(&dir.path().join("out/keys.raw"), 1);
    assert!(!m.path("/home/demo/.ssh/authorized_keys").exists() && !m.path("/home/ops/.ssh/authorized_keys").exists());
    drop(m);
}
