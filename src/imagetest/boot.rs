//! `type = "boot"`: the image booted in qemu — a throwaway copy-on-write view of its raw disk
//! (qemu's `snapshot=on`: the raw is opened read-only, the guest's writes go to a deleted
//! temporary file), a NoCloud seed on a small vfat disk (a fresh instance id, a throwaway SSH key
//! for root), user-mode networking restricted to the guest (`restrict=on`: no route to the host
//! or beyond; only sshd is forwarded, to a free port of 127.0.0.1). KVM where it works, else TCG:
//! a KVM boot that qemu aborts or reports broken is booted again under TCG.
//!
//! Cases, in the boot suite: `ssh` (sshd answers with the key), `system-running`
//! (`systemctl is-system-running --wait`: running, or degraded with its failed units named),
//! `cloud-init` (`cloud-init status --wait`); then each `stage = "boot"` suite runs over SSH.
//! The VM is killed by its PID (and dies with imgforge if imgforge dies); its files go with
//! the temporary directory. The serial console is kept next to the JUnit report.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::Case;
use super::plan::{BootSpec, Suite, SuiteKind};
use super::target::{SshLogin, Target};
use crate::host::command::CommandRunExt;
use crate::progress::Events;

/// UEFI firmware (Debian's ovmf), overridable like vm-tests/boot-to-login.sh.
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// Guest memory.
const MEMORY_MIB: u32 = 2048;

/// qemu's acceleration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    fn name(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
        }
    }
}

/// A running VM: killed and reaped on drop.
struct Vm {
    child: Child,
    accel: Accel,
    started: Instant,
    qemu_log: PathBuf,
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Vm {
    /// `Some(why)` once qemu has exited or reported that KVM cannot run this guest.
    fn died(&mut self) -> Option<String> {
        let log = std::fs::read_to_string(&self.qemu_log).unwrap_or_default();
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(format!("qemu exited ({status}): {}", super::tail(&log)));
        }
        if self.accel == Accel::Kvm
            && let Some(line) = log.lines().find(|l| l.contains("KVM internal error") || l.contains("failed to initialize kvm"))
        {
            return Some(format!("KVM cannot run this guest: {}", line.trim()));
        }
        None
    }
}

/// Everything a boot needs on the host side, in one temporary directory.
struct Setup {
    work: tempfile::TempDir,
    raw: PathBuf,
    uefi: bool,
    login: SshLogin,
    serial: PathBuf,
}

/// Boots the raw disk at `raw`, checks `spec`, runs `suites` (stage boot) over SSH. Returns the
/// cases; keeps the serial console at `console`. An error: the boot could not even be tried
/// (no qemu, no firmware).
pub fn run(raw: &Path, name: &str, spec: &BootSpec, suites: &[&Suite], console: &Path, events: &Events) -> anyhow::Result<Vec<Case>> {
    let setup = prepare(raw)?;
    let mut cases = Vec::new();
    let result = boot_and_check(&setup, name, spec, suites, events, &mut cases);
    if let Err(e) = std::fs::copy(&setup.serial, console) {
        tracing::warn!("could not keep the serial console at {}: {e}", console.display());
    }
    result?;
    Ok(cases)
}

fn boot_and_check(
    setup: &Setup,
    name: &str,
    spec: &BootSpec,
    suites: &[&Suite],
    events: &Events,
    cases: &mut Vec<Case>,
) -> anyhow::Result<()> {
    let case = |n: &str, seconds: f64, failure: Option<String>| Case { suite: name.to_string(), name: n.to_string(), seconds, failure };
    let mut accel = choose_accel()?;
    let (mut vm, reached) = loop {
        events.step("test", &format!("booting a copy of the image in qemu ({})", accel.name()));
        let mut vm = start(setup, accel)?;
        let deadline = vm.started + spec.timeout;
        let reached = if spec.ssh { wait_ssh(&setup.login, &mut vm, deadline) } else { wait_console(&setup.serial, &mut vm, deadline) };
        match reached {
            Err(why) if accel == Accel::Kvm && vm.died().is_some() && std::env::var_os("IMGFORGE_VM_ACCEL").is_none() => {
                events.notice(&format!("qemu died under KVM ({why}): booting again under TCG"));
                drop(vm);
                accel = Accel::Tcg;
            }
            r => break (vm, r),
        }
    };
    let deadline = vm.started + spec.timeout;
    let first = if spec.ssh { "ssh" } else { "console" };
    match reached {
        Ok(secs) => cases.push(case(first, secs, None)),
        Err(why) => {
            cases.push(case(
                first,
                vm.started.elapsed().as_secs_f64(),
                Some(format!("{why}; serial console: {}", console_tail(&setup.serial))),
            ));
            return Ok(());
        }
    }
    if !spec.ssh {
        return Ok(());
    }
    let login = &setup.login;
    // cloud-init first: its ssh module may replace the host keys and restart sshd, so the
    // system state and the suites are asked once it is done. Every question is retried while
    // sshd drops connections (ssh's own exit 255), until the boot's deadline.
    let mut checked = Vec::new();
    if let Some(want) = &spec.cloud_init {
        let t = Instant::now();
        let left = deadline.saturating_duration_since(Instant::now()).as_secs().max(10);
        let out = ssh_until(login, &format!("timeout {left} cloud-init status --wait"), deadline, "ask cloud-init for its status")?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let got = text.lines().rev().find_map(|l| l.trim().strip_prefix("status:")).map(str::trim).unwrap_or("");
        let failure = match (out.status.code(), got) {
            (Some(127), _) => Some("cloud-init is not installed in the image (set expect.cloud_init = false)".to_string()),
            (_, g) if g == want => None,
            (_, g) => Some(format!(
                "cloud-init status is {g:?}, not {want:?}: {}",
                super::tail(&(text.clone() + &String::from_utf8_lossy(&out.stderr)))
            )),
        };
        checked.push(case("cloud-init", t.elapsed().as_secs_f64(), failure));
    }
    if spec.system_running {
        let t = Instant::now();
        let left = deadline.saturating_duration_since(Instant::now()).as_secs().max(10);
        let out =
            ssh_until(login, &format!("timeout {left} systemctl is-system-running --wait"), deadline, "ask systemd for the system state")?;
        let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let failed_units = || {
            ssh_until(login, "systemctl list-units --failed --plain --no-legend --no-pager", deadline, "list the failed units")
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout).lines().filter_map(|l| l.split_whitespace().next()).collect::<Vec<_>>().join(", ")
                })
                .unwrap_or_default()
        };
        let failure = match state.as_str() {
            "running" => None,
            "degraded" => {
                events.notice(&format!("the booted image is degraded: failed units {}", failed_units()));
                None
            }
            other => Some(format!(
                "systemctl is-system-running says {other:?} (failed units: {}){}",
                failed_units(),
                if out.status.code() == Some(255) {
                    format!("; ssh: {}", super::tail(&String::from_utf8_lossy(&out.stderr)))
                } else {
                    String::new()
                }
            )),
        };
        cases.push(case("system-running", t.elapsed().as_secs_f64(), failure));
    }
    cases.append(&mut checked);
    for s in suites {
        type Runner = fn(&str, Target<'_>, &Path) -> anyhow::Result<Vec<Case>>;
        let (run, path): (Runner, &PathBuf) = match &s.kind {
            SuiteKind::Testinfra(p) => (super::testinfra::run, p),
            SuiteKind::Serverspec(p) => (super::serverspec::run, p),
            SuiteKind::Checks(_) | SuiteKind::Boot(_) => continue,
        };
        events.step("test", &format!("running the {} suite on the booted copy", s.name));
        if let Err(why) = wait_ssh(login, &mut vm, deadline.max(Instant::now() + Duration::from_secs(60))) {
            cases.push(Case {
                suite: s.name.clone(),
                name: "run".into(),
                seconds: 0.0,
                failure: Some(format!("{why}; serial console: {}", console_tail(&setup.serial))),
            });
            continue;
        }
        let r = run(&s.name, Target::Ssh(login), path);
        match r {
            Ok(c) => cases.extend(c),
            Err(e) => cases.push(Case { suite: s.name.clone(), name: "run".into(), seconds: 0.0, failure: Some(format!("{e:#}")) }),
        }
    }
    drop(vm);
    Ok(())
}

/// KVM when /dev/kvm can be opened (IMGFORGE_VM_ACCEL=kvm|tcg decides instead), else TCG.
fn choose_accel() -> anyhow::Result<Accel> {
    match std::env::var("IMGFORGE_VM_ACCEL").as_deref() {
        Ok("kvm") => Ok(Accel::Kvm),
        Ok("tcg") => Ok(Accel::Tcg),
        Ok(other) => bail!("IMGFORGE_VM_ACCEL must be kvm or tcg, not {other:?}"),
        Err(_) => Ok(if std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok() { Accel::Kvm } else { Accel::Tcg }),
    }
}

/// The key, the seed disk, the firmware's variable store.
fn prepare(raw: &Path) -> anyhow::Result<Setup> {
    let work = tempfile::Builder::new().prefix("imgforge-boot-").tempdir().context("Failed to create a temporary directory")?;
    let w = work.path();
    let uefi = has_esp(raw)?;
    if uefi {
        for f in [OVMF_CODE, OVMF_VARS] {
            if !Path::new(f).is_file() {
                bail!("the image boots with UEFI and {f} is missing: apt-get install ovmf (or scripts/setup --tests)");
            }
        }
        std::fs::copy(OVMF_VARS, w.join("vars.fd")).with_context(|| format!("Failed to copy {OVMF_VARS}"))?;
    }
    let key = w.join("id");
    Command::new("ssh-keygen")
        .args(["-q", "-t", "ecdsa", "-b", "256", "-m", "PEM", "-N", "", "-C", "imgforge-boot-test", "-f"])
        .arg(&key)
        .run_checked("make the boot test's throwaway SSH key")?;
    let public = std::fs::read_to_string(w.join("id.pub")).context("Failed to read the throwaway public key")?;
    let seed_dir = w.join("seed");
    std::fs::create_dir(&seed_dir)?;
    let instance = format!("imgforge-test-{}", crate::registry::record::new_id().to_ascii_lowercase());
    std::fs::write(seed_dir.join("meta-data"), format!("instance-id: {instance}\nlocal-hostname: imgforge-test\n"))?;
    std::fs::write(seed_dir.join("user-data"), user_data(public.trim()))?;
    let seed = w.join("seed.img");
    Command::new("mkfs.vfat").args(["-n", "CIDATA", "-C"]).arg(&seed).arg("2048").run_checked("make the NoCloud seed disk")?;
    Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(&seed)
        .arg(seed_dir.join("meta-data"))
        .arg(seed_dir.join("user-data"))
        .arg("::")
        .run_checked("write the NoCloud seed")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).context("Failed to find a free port")?.port();
    let config = w.join("ssh_config");
    let login = SshLogin { user: "root".into(), port, key, config: config.clone() };
    std::fs::write(&config, login.config_text())?;
    let serial = w.join("serial.log");
    Ok(Setup { raw: raw.to_path_buf(), uefi, login, serial, work })
}

/// The NoCloud user-data: root may log in with the throwaway key (only it). Pure.
fn user_data(public_key: &str) -> String {
    format!("#cloud-config\ndisable_root: false\nssh_pwauth: false\nusers: [default]\nssh_authorized_keys:\n  - {public_key}\n")
}

fn has_esp(raw: &Path) -> anyhow::Result<bool> {
    use crate::disk::partition::types;
    let file = std::fs::File::open(raw).with_context(|| format!("Failed to open {}", raw.display()))?;
    let size = file.metadata()?.len();
    let table = crate::disk::partition::read(&mut &file, size)
        .with_context(|| format!("Failed to read the partition table of {}", raw.display()))?;
    Ok(table.partitions.iter().any(|p| p.type_guid == Some(types::EFI_SYSTEM) || p.mbr_type == Some(0xEF)))
}

/// qemu's arguments. Pure.
fn qemu_args(s: &Setup, accel: Accel) -> Vec<String> {
    let w = s.work.path();
    let (accel_opt, cpu) = match accel {
        Accel::Kvm => ("kvm", "host"),
        Accel::Tcg => ("tcg,thread=multi", "max"),
    };
    let mut a: Vec<String> = [
        "-name",
        "imgforge-boot-test",
        "-machine",
        "q35",
        "-accel",
        accel_opt,
        "-cpu",
        cpu,
        "-smp",
        "2",
        "-nodefaults",
        "-display",
        "none",
        "-monitor",
        "none",
        "-parallel",
        "none",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(["-m".into(), MEMORY_MIB.to_string(), "-serial".into(), format!("file:{}", s.serial.display())]);
    if s.uefi {
        a.extend([
            "-drive".into(),
            format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"),
            "-drive".into(),
            format!("if=pflash,format=raw,unit=1,file={}", w.join("vars.fd").display()),
        ]);
    }
    a.extend([
        "-drive".into(),
        format!("file={},format=raw,if=virtio,snapshot=on,cache=unsafe", s.raw.display().to_string().replace(',', ",,")),
        "-drive".into(),
        format!("file={},format=raw,if=virtio,readonly=on", w.join("seed.img").display()),
        "-nic".into(),
        format!("user,model=virtio-net-pci,restrict=on,hostfwd=tcp:127.0.0.1:{}-:22", s.login.port),
        "-device".into(),
        "virtio-rng-pci".into(),
    ]);
    a
}

fn start(s: &Setup, accel: Accel) -> anyhow::Result<Vm> {
    let qemu_log = s.work.path().join(format!("qemu-{}.log", accel.name()));
    let log = std::fs::File::create(&qemu_log)?;
    std::fs::write(&s.serial, b"")?;
    let mut cmd = Command::new("qemu-system-x86_64");
    // qemu puts snapshot=on's overlay in TMPDIR: here, so it goes with the rest.
    cmd.args(qemu_args(s, accel)).env("TMPDIR", s.work.path()).stdin(Stdio::null());
    let child = crate::chroot::run::spawn_host(cmd, Stdio::from(log.try_clone()?), Stdio::from(log)).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!("qemu-system-x86_64 is not installed: apt-get install qemu-system-x86 (or scripts/setup --tests)")
        } else {
            anyhow::anyhow!("Failed to start qemu-system-x86_64: {e}")
        }
    })?;
    Ok(Vm { child, accel, started: Instant::now(), qemu_log })
}

/// Waits until sshd lets root in with the key; the seconds since qemu started.
fn wait_ssh(login: &SshLogin, vm: &mut Vm, deadline: Instant) -> Result<f64, String> {
    loop {
        if let Some(why) = vm.died() {
            return Err(why);
        }
        let ok = login.command("true").stdin(Stdio::null()).output().is_ok_and(|o| o.status.success());
        if ok {
            return Ok(vm.started.elapsed().as_secs_f64());
        }
        if Instant::now() >= deadline {
            return Err(format!("sshd did not let root in with the seed's key within {}s", (deadline - vm.started).as_secs()));
        }
        std::thread::sleep(Duration::from_secs(3));
    }
}

/// Runs `remote` over SSH, again every 3 s while ssh itself fails (exit 255: sshd refusing or
/// dropping connections while it restarts) and the deadline has not passed.
fn ssh_until(login: &SshLogin, remote: &str, deadline: Instant, what: &str) -> anyhow::Result<std::process::Output> {
    loop {
        let out = login.command(remote).stdin(Stdio::null()).run_any_status(what)?;
        if out.status.code() != Some(255) || Instant::now() >= deadline {
            return Ok(out);
        }
        std::thread::sleep(Duration::from_secs(3));
    }
}

/// Without SSH: waits for a login prompt on the serial console.
fn wait_console(serial: &Path, vm: &mut Vm, deadline: Instant) -> Result<f64, String> {
    loop {
        if let Some(why) = vm.died() {
            return Err(why);
        }
        if std::fs::read(serial).is_ok_and(|b| b.windows(6).any(|w| w == b"login:")) {
            return Ok(vm.started.elapsed().as_secs_f64());
        }
        if Instant::now() >= deadline {
            return Err(format!("no login prompt on the serial console within {}s", (deadline - vm.started).as_secs()));
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// The serial console's last lines, without terminal escapes.
fn console_tail(serial: &Path) -> String {
    let text = String::from_utf8_lossy(&std::fs::read(serial).unwrap_or_default()).into_owned();
    let mut clean = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        if c != '\r' {
            clean.push(c);
        }
    }
    super::tail(&clean)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_is_throwaway_and_the_guest_reaches_nothing_but_its_sshd() {
        let work = tempfile::tempdir().unwrap();
        let login = SshLogin { user: "root".into(), port: 40022, key: work.path().join("id"), config: work.path().join("c") };
        let s = Setup { raw: "/srv/out/web,1.raw".into(), uefi: true, login, serial: work.path().join("serial.log"), work };
        let a = qemu_args(&s, Accel::Tcg).join(" ");
        assert!(a.contains("-drive file=/srv/out/web,,1.raw,format=raw,if=virtio,snapshot=on,cache=unsafe"), "{a}");
        assert!(a.contains("restrict=on,hostfwd=tcp:127.0.0.1:40022-:22"), "{a}");
        assert!(a.contains("-accel tcg,thread=multi -cpu max"), "{a}");
        assert!(a.contains("if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd"), "{a}");
        assert!(a.contains("seed.img,format=raw,if=virtio,readonly=on"), "{a}");
        let u = user_data("ecdsa-sha2-nistp256 AAAA imgforge-boot-test");
        assert!(u.starts_with("#cloud-config\ndisable_root: false\n"), "{u}");
        assert!(u.ends_with("  - ecdsa-sha2-nistp256 AAAA imgforge-boot-test\n"), "{u}");
    }
}
