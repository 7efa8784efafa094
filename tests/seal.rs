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
    let up = cloud_upstream();
    let dir = testdir("seal-residue");
    let text = format!(
        "[image]\nname = \"res\"\nversion = \"1\"\n[source]\nurl = \"{up}/noble-like-cloudimg-amd64.img\"\nchecksums = \"{up}/SHA256SUMS\"\n\n[[provision]]\ntype = \"shell\"\ninline = [\n  \"mkdir -p /opt/app\",\n  \"printf 'aws_access_key_id = AKIAIOSFODNN7EXAMPLE\\\\n' > /opt/app/credentials\",\n  \"printf -- '-----BEGIN OPENSSH PRIVATE KEY-----\\\\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\\\\n-----END OPENSSH PRIVATE KEY-----\\\\n' > /opt/app/deploy_key\",\n]\n",
        up = up.display()
    );
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

    let r = recipe(dir.path(), &(text + "\n[seal.residue]\nwarn = [\"aws-access-key\", \"private-key:/opt/app/\"]\n"));
    let o = run(imgforge().arg("build").arg(&r).arg("-o").arg(dir.path().join("out")));
    assert!(o.status.success(), "{}", show(&o));
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("out/res.seal.json")).unwrap()).unwrap();
    let findings = report["residue"]["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 2, "{report}");
    assert!(findings.iter().all(|f| f["severity"] == "warning"), "{report}");
    assert_clean(dir.path());
}
