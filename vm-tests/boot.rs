//! Boot test: build the cloud-like image with imgforge, with fixed VHD, streamOptimized VMDK and
//! qcow2 outputs, and boot each output under qemu (OVMF; KVM where the host really has it, TCG
//! otherwise) to a login prompt on the serial console. Under TCG a boot takes one to three
//! minutes; two boots run at a time.
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
        "[image]\nname = \"boot\"\nversion = \"1\"\n[source]\nurl = \"{up}/noble-like-cloudimg-amd64.img\"\nchecksums = \"{up}/SHA256SUMS\"\n\n[[provision]]\ntype = \"shell\"\ninline = [\"echo booted-from-imgforge >> /etc/issue\"]\n[output]\nformats = [\"vhd\", \"vmdk\", \"qcow2\"]\n",
        up = up.display()
    );
    let r = recipe(dir.path(), &text);
    let o = run(imgforge().arg("build").arg(&r).arg("-o").arg(dir.path().join("out")));
    assert!(o.status.success(), "{}", show(&o));
    assert_clean(dir.path());
    let images = [("boot.raw", "raw"), ("boot.vhd", "vpc"), ("boot.vmdk", "vmdk"), ("boot.qcow2", "qcow2")];
    for pair in images.chunks(2) {
        std::thread::scope(|s| {
            for &(file, format) in pair {
                let dir = dir.path();
                s.spawn(move || boot_to_login(&dir.join("out").join(file), format, &dir.join(format!("serial-{format}.log"))));
            }
        });
    }
}

fn boot_to_login(image: &std::path::Path, format: &str, log: &std::path::Path) {
    let boot = run(std::process::Command::new(repo().join("vm-tests/boot-to-login.sh"))
        .arg(image)
        .args(["--format", format, "--timeout", "900", "--log"])
        .arg(log));
    assert!(boot.status.success(), "{format}: {}", show(&boot));
    let serial = String::from_utf8_lossy(&std::fs::read(log).unwrap()).into_owned();
    assert!(serial.contains("login:"), "{format}: {serial}");
    // The getty banner carries the provisioner's mark: this is our image, not the upstream.
    assert!(serial.contains("booted-from-imgforge"), "{format}: {serial}");
}
