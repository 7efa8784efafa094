//! Boot test: build the cloud-like image with imgforge, sealed, with fixed VHD, streamOptimized
//! VMDK and qcow2 outputs, and boot the VMDK and the qcow2 under qemu (OVMF; KVM where the host
//! really has it, TCG otherwise) to a login prompt on the serial console and an identity report.
//! Under TCG a boot takes one to three minutes; the two boots run at once. The build enables
//! `fs-uuids`: the image boots with new filesystem UUIDs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/util/mod.rs"]
mod util;

use util::*;

fn have_qemu(test: &str) -> bool {
    let ok = std::process::Command::new("qemu-system-x86_64").arg("--version").output().is_ok();
    ok || skip(test, "qemu-system-x86_64 is not installed (scripts/setup --tests)")
}

/// Prints the VM's identity on the serial console once it has an address and sshd ran.
const REPORT_UNIT: &str = "[Unit]\nDescription=imgforge vm-test identity report\nAfter=network-online.target ssh.service imgforge-ssh-keygen.service\nWants=network-online.target\n\n[Service]\nType=oneshot\nExecStart=/usr/local/sbin/report-identity\n\n[Install]\nWantedBy=multi-user.target\n";
const REPORT_SCRIPT: &str = r#"#!/bin/sh
ip=
for i in $(seq 180); do
  ip=$(ip -4 -o addr show scope global | awk '{print $4}' | head -n 1)
  [ -n "$ip" ] && break
  sleep 1
done
key=$(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub | awk '{print $2}')
echo "IMGFORGE-IDENTITY machine-id=$(cat /etc/machine-id) ip=$ip sshd=$(systemctl is-active ssh) hostkey=$key END" > /dev/ttyS0
"#;

/// One sealed build (with `fs-uuids`), booted twice at once: from its VMDK and from its qcow2
/// (each a format qemu must decode; the fixed VHD is the raw plus a footer, byte-compared with
/// qemu-img in tests/export.rs), with different MACs, one of them the upstream build's own. Both
/// reach a login prompt whose banner carries the provisioner's mark, get a DHCP address, run
/// sshd, and have machine ids and SSH host keys of their own, unlike each other and unlike the
/// upstream image. The services were started live-server style during the build and deferred
/// to first boot. One round of two boots: a round is one to three minutes under TCG.
#[test]
fn sealed_image_boots_as_distinct_machines() {
    const TEST: &str = "sealed_image_boots_as_distinct_machines";
    if !have_root(TEST) || !have_qemu(TEST) {
        return;
    }
    let up = cloud_upstream();
    let dir = testdir("vmboot");
    std::fs::write(dir.path().join("report-identity"), REPORT_SCRIPT).unwrap();
    std::fs::write(dir.path().join("report.service"), REPORT_UNIT).unwrap();
    let text = cloud_head("sealed", "1")
        + "[[provision]]\ntype = \"file\"\nsource = \"report-identity\"\ndestination = \"/usr/local/sbin/report-identity\"\nmode = \"0755\"\n\n[[provision]]\ntype = \"file\"\nsource = \"report.service\"\ndestination = \"/etc/systemd/system/report-identity.service\"\nmode = \"0644\"\n\n[[provision]]\ntype = \"shell\"\nname = \"live-server style\"\ninline = [\"echo booted-from-imgforge >> /etc/issue\", \"systemctl enable --now report-identity.service\", \"service ssh restart\"]\n[output]\nformats = [\"vhd\", \"vmdk\", \"qcow2\"]\n[seal]\nenable = [\"fs-uuids\"]\n";
    let r = recipe(dir.path(), &text);
    let o = run(imgforge().arg("build").arg(&r).arg("-o").arg(dir.path().join("out")));
    assert!(o.status.success(), "{}", show(&o));
    assert_clean(dir.path());
    // Written live-server style: the starts were deferred to first boot (and the identity line
    // below, printed by the unit, shows it enabled and run at boot, with sshd active).
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("out/sealed.manifest.json")).unwrap()).unwrap();
    let deferred: Vec<&str> = manifest["services"].as_array().unwrap().iter().map(|s| s["unit"].as_str().unwrap()).collect();
    assert_eq!(deferred, ["report-identity.service", "ssh.service"], "{}", manifest["services"]);

    // The upstream image's identity.
    let upraw = up.join("noble-like-cloudimg-amd64.raw");
    let m = RoMount::open(&upraw, 1);
    let up_id = m.read("/etc/machine-id").trim().to_string();
    let fp = run(std::process::Command::new("ssh-keygen").arg("-lf").arg(m.path("/etc/ssh/ssh_host_ed25519_key.pub")));
    let up_key = String::from_utf8_lossy(&fp.stdout).split_whitespace().nth(1).unwrap().to_string();
    drop(m);

    let vms = [("sealed.vmdk", "vmdk", "52:54:00:12:34:56"), ("sealed.qcow2", "qcow2", "52:54:00:ab:cd:ef")];
    let reports: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = vms
            .iter()
            .map(|&(file, format, mac)| {
                let (image, log) = (dir.path().join("out").join(file), dir.path().join(format!("serial-{format}.log")));
                s.spawn(move || {
                    let boot = run(std::process::Command::new(repo().join("vm-tests/boot-to-login.sh"))
                        .arg(&image)
                        .args(["--format", format, "--timeout", "900", "--mac", mac, "--until", "login:", "--until", " END", "--log"])
                        .arg(&log));
                    let serial = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
                    assert!(boot.status.success(), "{format} ({mac}): {}\n{serial}", show(&boot));
                    // The getty banner carries the provisioner's mark: this is our image, not the upstream.
                    assert!(serial.contains("booted-from-imgforge"), "{format}: {serial}");
                    serial.lines().find(|l| l.contains("IMGFORGE-IDENTITY")).unwrap().to_string()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let field = |r: &str, k: &str| -> String {
        r.split_whitespace().find_map(|f| f.strip_prefix(&format!("{k}="))).unwrap_or_default().to_string()
    };
    for r in &reports {
        assert!(field(r, "ip").starts_with("10.0.2."), "no DHCP address: {r}");
        assert_eq!(field(r, "sshd"), "active", "{r}");
        assert_eq!(field(r, "machine-id").len(), 32, "{r}");
        assert!(field(r, "hostkey").starts_with("SHA256:"), "{r}");
        assert_ne!(field(r, "machine-id"), up_id, "machine id of the upstream image: {r}");
        assert_ne!(field(r, "hostkey"), up_key, "host key of the upstream image: {r}");
    }
    assert_ne!(field(&reports[0], "machine-id"), field(&reports[1], "machine-id"), "{reports:?}");
    assert_ne!(field(&reports[0], "hostkey"), field(&reports[1], "hostkey"), "{reports:?}");
}

/// qemu 10 on a paravirtual /dev/kvm passes a short firmware probe, then aborts on an MSR
/// assertion once the real boot starts. boot-to-login.sh must then boot again under TCG instead
/// of failing. A stand-in qemu plays that host: under KVM it prints the firmware's banner and
/// aborts; under TCG it prints a login prompt.
#[test]
fn kvm_that_dies_after_the_probe_falls_back_to_tcg() {
    let test = "kvm_that_dies_after_the_probe_falls_back_to_tcg";
    if std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_err() {
        skip(test, "needs a readable and writable /dev/kvm (the probe only tries KVM there)");
        return;
    }
    let dir = testdir("kvmfallback");
    let fake = dir.path().join("qemu-system-x86_64");
    std::fs::write(
        &fake,
        "#!/bin/sh\nserial= accel=\nwhile [ $# -gt 0 ]; do\n  case $1 in\n    -serial) serial=${2#file:}; shift ;;\n    -accel) accel=$2; shift ;;\n  esac\n  shift\ndone\necho \"$accel\" >> \"$FAKE_QEMU_ACCELS\"\ncase $accel in\n  kvm) echo 'BdsDxe: loading Boot0001' >> \"$serial\"; sleep 1.5; echo \"kvm_buf_set_msrs: Assertion failed\" >&2; kill -ABRT $$ ;;\n  *) echo 'fake login:' >> \"$serial\"; sleep 30 ;;\nesac\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let image = dir.path().join("disk.raw");
    std::fs::File::create(&image).unwrap().set_len(1 << 20).unwrap();
    let log = dir.path().join("serial.log");
    let o = run(std::process::Command::new(repo().join("vm-tests/boot-to-login.sh"))
        .arg(&image)
        .args(["--format", "raw", "--timeout", "20", "--log"])
        .arg(&log)
        .env("QEMU", &fake)
        .env("FAKE_QEMU_ACCELS", dir.path().join("accels"))
        .env_remove("IMGFORGE_VM_ACCEL"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{}", show(&o));
    assert!(err.contains("acceleration: kvm (probed)"), "{err}");
    assert!(err.contains("qemu exited early (status 134)"), "{err}");
    assert!(err.contains("falling back to TCG"), "{err}");
    assert!(err.contains("(tcg)"), "{err}");
    // The probe, the KVM boot that died, the TCG boot.
    let accels = std::fs::read_to_string(dir.path().join("accels")).unwrap();
    let boots: Vec<&str> = accels.lines().collect();
    assert_eq!(boots.len(), 3, "{accels}");
    assert_eq!(boots[1], "kvm", "{accels}");
    assert!(boots[2].starts_with("tcg"), "{accels}");
}
