//! Boot test: build the cloud-like image with imgforge and boot the output under qemu (OVMF;
//! KVM where the host really has it, TCG otherwise) to a login prompt on the serial console.
//! One boot: under TCG it takes one to three minutes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/util/mod.rs"]
mod util;

use util::*;

#[test]
fn built_cloud_image_boots_to_login() {
    if !have_root("built_cloud_image_boots_to_login") {
        return;
    }
    if std::process::Command::new("qemu-system-x86_64").arg("--version").output().is_err() {
        eprintln!("skipped built_cloud_image_boots_to_login: qemu-system-x86_64 is not installed");
        return;
    }
    let up = cloud_upstream();
    let dir = testdir("vmboot");
    let text = format!(
        "[image]\nname = \"boot\"\nversion = \"1\"\n[source]\nurl = \"{up}/noble-like-cloudimg-amd64.img\"\nchecksums = \"{up}/SHA256SUMS\"\n\n[[provision]]\ntype = \"shell\"\ninline = [\"echo booted-from-imgforge >> /etc/issue\"]\n",
        up = up.display()
    );
    let r = recipe(dir.path(), &text);
    let o = run(imgforge().arg("build").arg(&r).arg("-o").arg(dir.path().join("out")));
    assert!(o.status.success(), "{}", show(&o));
    assert_clean(dir.path());
    let log = dir.path().join("serial.log");
    let boot = run(std::process::Command::new(repo().join("vm-tests/boot-to-login.sh"))
        .arg(dir.path().join("out/boot.raw"))
        .args(["--timeout", "900", "--log"])
        .arg(&log));
    assert!(boot.status.success(), "{}", show(&boot));
    let serial = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
    assert!(serial.contains("login:"), "{serial}");
    // The getty banner carries the provisioner's mark: this is our image, not the upstream.
    assert!(serial.contains("booted-from-imgforge"), "{serial}");
}
