//! Boot test: build the cloud-like image with imgforge, sealed, with a streamOptimized VMDK
//! output, and boot the VMDK (boot-to-login.sh) and the raw (`imgforge test`'s boot stage) under
//! qemu (OVMF; KVM where the host really has it, TCG otherwise) to a login prompt on the serial
//! console and an identity report. Under TCG a boot takes one to three minutes; the two boots
//! run at once. The build enables `fs-uuids`: the image boots with new filesystem UUIDs.
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

/// The same testinfra suite runs offline (chroot backend) and booted (ssh); a ServerSpec suite
/// runs over SSH (specinfra's ssh backend, as root with the boot's throwaway key).
const TESTINFRA: &str = r#"
def test_issue_carries_the_mark(host):
    assert host.file("/etc/issue").contains("booted-from-imgforge")

def test_sshd_installed(host):
    assert host.package("openssh-server").is_installed

def test_firstboot_ran_once_in_order_and_removed_itself(host):
    unit = host.file("/etc/systemd/system/imgforge-firstboot.service")
    if host.backend.NAME == "ssh":
        assert not unit.exists
        assert not host.file("/usr/local/lib/imgforge-firstboot").exists
        assert host.file("/var/lib/firstboot-marks").content_string == "first-boot-1\nfirst-boot-2\n"
        log = host.check_output("journalctl -b -u imgforge-firstboot.service --no-pager -o cat")
        assert "imgforge-firstboot: 02-second done" in log, log
    else:
        assert unit.exists
        assert not host.file("/var/lib/firstboot-marks").exists
def test_machine_id(host):
    machine_id = host.file("/etc/machine-id").content_string.strip()
    if host.backend.NAME == "ssh":
        assert len(machine_id) == 32  # systemd made one at first boot
    else:
        assert machine_id == ""  # sealed: empty until first boot
"#;
const SERVERSPEC: &str = r#"require 'spec_helper'

describe service('ssh') do
  it { should be_running }
end

describe port(22) do
  it { should be_listening }
end

describe command('systemctl is-active report-identity.service') do
  its(:stdout) { should match /active/ }
end
"#;

/// One sealed build (with `fs-uuids`), booted twice at once: its VMDK by boot-to-login.sh (a
/// format qemu must decode), and its raw by `imgforge test` (offline suites, then a boot test:
/// a copy-on-write view with a NoCloud seed and a throwaway key; system state, cloud-init, and
/// the boot-stage testinfra and ServerSpec suites over SSH). Both reach a login prompt whose
/// banner carries the provisioner's mark, get a DHCP address, run sshd, and have machine ids
/// and SSH host keys of their own, unlike each other and unlike the upstream image. The
/// services were started live-server style during the build and deferred to first boot; the
/// recipe's `[[firstboot]]` scripts ran once, in order, logged to the journal, and their unit
/// removed itself (checked offline and booted by the testinfra suite). One
/// round of two boots: a round is one to three minutes under TCG.
#[test]
fn sealed_image_boots_as_distinct_machines_and_passes_its_boot_tests() {
    const TEST: &str = "sealed_image_boots_as_distinct_machines_and_passes_its_boot_tests";
    if !have_root(TEST) || !have_qemu(TEST) {
        return;
    }
    let up = cloud_upstream();
    let dir = testdir("vmboot");
    let d = dir.path();
    std::fs::write(d.join("report-identity"), REPORT_SCRIPT).unwrap();
    std::fs::write(d.join("report.service"), REPORT_UNIT).unwrap();
    std::fs::create_dir_all(d.join("tests/image")).unwrap();
    std::fs::write(d.join("tests/image/test_booted.py"), TESTINFRA).unwrap();
    std::fs::create_dir_all(d.join("spec/booted")).unwrap();
    std::fs::write(d.join("spec/booted/ssh_spec.rb"), SERVERSPEC).unwrap();
    let text = cloud_head("sealed", "1")
        + "[[provision]]\ntype = \"file\"\nsource = \"report-identity\"\ndestination = \"/usr/local/sbin/report-identity\"\nmode = \"0755\"\n\n[[provision]]\ntype = \"file\"\nsource = \"report.service\"\ndestination = \"/etc/systemd/system/report-identity.service\"\nmode = \"0644\"\n\n[[provision]]\ntype = \"shell\"\nname = \"live-server style\"\ninline = [\"echo booted-from-imgforge >> /etc/issue\", \"systemctl enable --now report-identity.service\", \"service ssh restart\"]\n[[firstboot]]\ninline = [\"echo first-boot-1 >> /var/lib/firstboot-marks\"]\n\n[[firstboot]]\nname = \"second\"\ninline = [\"echo first-boot-2 >> /var/lib/firstboot-marks\"]\n\n[output]\nformats = [\"vmdk\"]\n[seal]\nenable = [\"fs-uuids\"]\n\n"
        + "[[test]]\ntype = \"testinfra\"\nname = \"infra-offline\"\ntests = \"tests/image\"\n\n[[test]]\ntype = \"testinfra\"\nname = \"infra-booted\"\ntests = \"tests/image\"\nstage = \"boot\"\n\n[[test]]\ntype = \"serverspec\"\nname = \"spec-booted\"\nspecs = \"spec/booted\"\nstage = \"boot\"\n\n[[test]]\ntype = \"boot\"\ntimeout = \"15m\"\n";
    let r = recipe(d, &text);
    let db = d.join("registry.db");
    let o = run(imgforge().arg("build").arg(&r).arg("-o").arg(d.join("out")).arg("--no-test").arg("--registry").arg(&db));
    assert!(o.status.success(), "{}", show(&o));
    assert_clean(d);
    // Written live-server style: the starts were deferred to first boot (and the identity line
    // below, printed by the unit, shows it enabled and run at boot, with sshd active).
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("out/sealed.manifest.json")).unwrap()).unwrap();
    let deferred: Vec<&str> = manifest["services"].as_array().unwrap().iter().map(|s| s["unit"].as_str().unwrap()).collect();
    assert_eq!(deferred, ["report-identity.service", "ssh.service"], "{}", manifest["services"]);
    let raw_sha = manifest["outputs"][0]["sha256"].as_str().unwrap().to_string();

    // The upstream image's identity.
    let upraw = up.join("noble-like-cloudimg-amd64.raw");
    let m = RoMount::open(&upraw, 1);
    let up_id = m.read("/etc/machine-id").trim().to_string();
    let fp = run(std::process::Command::new("ssh-keygen").arg("-lf").arg(m.path("/etc/ssh/ssh_host_ed25519_key.pub")));
    let up_key = String::from_utf8_lossy(&fp.stdout).split_whitespace().nth(1).unwrap().to_string();
    drop(m);

    let (vmdk, tested) = std::thread::scope(|s| {
        let vmdk = s.spawn(|| {
            let log = d.join("serial-vmdk.log");
            let boot = run(std::process::Command::new(repo().join("vm-tests/boot-to-login.sh"))
                .arg(d.join("out/sealed.vmdk"))
                .args([
                    "--format",
                    "vmdk",
                    "--timeout",
                    "900",
                    "--mac",
                    "52:54:00:12:34:56",
                    "--until",
                    "login:",
                    "--until",
                    " END",
                    "--log",
                ])
                .arg(&log));
            let serial = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
            assert!(boot.status.success(), "vmdk: {}\n{serial}", show(&boot));
            serial
        });
        let tested = s.spawn(|| run(imgforge().args(["test", "sealed", "--registry"]).arg(&db)));
        (vmdk.join().unwrap(), tested.join().unwrap())
    });
    // `imgforge test`: every case passed, both stages, recorded against the raw's SHA-256.
    assert!(tested.status.success(), "{}", show(&tested));
    let junit = std::fs::read_to_string(d.join("out/sealed.tests.xml")).unwrap();
    let console = String::from_utf8_lossy(&std::fs::read(d.join("out/sealed.boot.log")).unwrap()).into_owned();
    for case in [
        r#"<testcase name="ssh" classname="sealed.boot""#,
        r#"<testcase name="system-running" classname="sealed.boot""#,
        r#"<testcase name="cloud-init" classname="sealed.boot""#,
        r#"<testcase name="test_booted.test_issue_carries_the_mark" classname="sealed.infra-offline""#,
        r#"<testcase name="test_booted.test_machine_id" classname="sealed.infra-offline""#,
        r#"<testcase name="test_booted.test_machine_id" classname="sealed.infra-booted""#,
        r#"<testcase name="test_booted.test_firstboot_ran_once_in_order_and_removed_itself" classname="sealed.infra-offline""#,
        r#"<testcase name="test_booted.test_firstboot_ran_once_in_order_and_removed_itself" classname="sealed.infra-booted""#,
        r#"<testcase name="ssh_spec.Port &quot;22&quot; is expected to be listening" classname="sealed.spec-booted""#,
        r#"<testcase name="ssh_spec.Service &quot;ssh&quot; is expected to be running" classname="sealed.spec-booted""#,
    ] {
        assert!(junit.contains(case), "{case}:\n{junit}\n{console}");
    }
    assert!(!junit.contains("<failure"), "{junit}");
    assert!(junit.contains(r#"<property name="stage" value="boot"/>"#), "{junit}");
    let c = rusqlite::Connection::open(&db).unwrap();
    let (status, data): (String, String) = c.query_row("SELECT status, data FROM records", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    let rec: serde_json::Value = serde_json::from_str(&data).unwrap();
    assert_eq!(status, "tested", "{rec}");
    assert_eq!(rec["tests"][0]["stage"], "offline+boot", "{rec}");
    assert_eq!(rec["tests"][0]["sha256"], raw_sha.as_str(), "{rec}");
    assert_eq!(rec["tests"][0]["passed"], 14, "{rec}");
    // The boot was a throwaway view: the raw is unchanged; nothing of the VM is left.
    let sha = run(std::process::Command::new("sha256sum").arg(d.join("out/sealed.raw")));
    assert!(String::from_utf8_lossy(&sha.stdout).starts_with(&raw_sha), "the boot test wrote to the image");
    let qemus = run(std::process::Command::new("pgrep").args(["-f", "imgforge-boot-test"]));
    assert!(qemus.stdout.is_empty(), "a test VM is still running: {}", show(&qemus));
    assert!(
        std::fs::read_dir(std::env::temp_dir()).unwrap().flatten().all(|e| !e.file_name().to_string_lossy().starts_with("imgforge-boot-")),
        "the boot test's files are left in {}",
        std::env::temp_dir().display()
    );

    let reports: Vec<String> = [(&vmdk, "vmdk"), (&console, "imgforge test")]
        .iter()
        .map(|(serial, what)| {
            // The getty banner carries the provisioner's mark: this is our image, not the upstream.
            assert!(serial.contains("booted-from-imgforge"), "{what}: {serial}");
            serial.lines().find(|l| l.contains("IMGFORGE-IDENTITY")).unwrap_or_else(|| panic!("{what}: {serial}")).to_string()
        })
        .collect();
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
