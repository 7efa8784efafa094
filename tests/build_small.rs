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
    std::os::unix::fs::PermissionsExt::set_mode(&mut std::fs::metadata(ov.join("tool")).unwrap().permissions(), 0o755);
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
    let o = build(dir.path(), &(small_head(up, "small-mbr.qcow2") + PROVISION));
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
    assert_eq!(manifest["provisioners"].as_array().unwrap().len(), 3);
    let sha = manifest["outputs"][0]["sha256"].as_str().unwrap();
    let sum = run(std::process::Command::new("sha256sum").arg(&raw));
    assert!(String::from_utf8_lossy(&sum.stdout).starts_with(sha));
    assert!(manifest["source"]["signing_key_fingerprint"].as_str().unwrap().len() == 40);
    // the output is sparse
    let meta = std::fs::metadata(&raw).unwrap();
    assert!(std::os::unix::fs::MetadataExt::blocks(&meta) * 512 < meta.len() / 2, "output not sparse");
    // no stray files in the output dir
    let names: Vec<String> =
        std::fs::read_dir(dir.path().join("out")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
}
