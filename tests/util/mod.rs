//! Shared helpers for imgforge's real-binary tests: the binary, per-test directories, the
//! local upstream images, mounting an output read-only with the host's own tools (an oracle
//! independent of imgforge's code), and the "nothing left behind" check.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `imgforge` under test. Each command gets a registry of its own (never the host's), so
/// that no build is "up to date" because of another test's; a test that uses the registry
/// names one with `--registry`.
pub fn imgforge() -> Command {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let mut c = Command::new(env!("CARGO_BIN_EXE_imgforge"));
    c.env("IMGFORGE_CACHE_DIR", repo().join("target/test-cache"));
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let db = repo().join(format!("target/test-work/registries/{}-{n}.db", std::process::id()));
    c.env("IMGFORGE_REGISTRY", db);
    c
}

/// Whether skips are failures: under CI (`CI=true`, as Jenkins, GitHub Actions and GitLab set
/// it) or `IMGFORGE_STRICT=1` a test that cannot run fails instead of passing quietly.
pub fn strict() -> bool {
    let on = |v: &str| std::env::var(v).is_ok_and(|x| matches!(x.trim(), "1" | "true" | "yes"));
    on("CI") || on("IMGFORGE_STRICT")
}

/// A test that cannot run here: recorded in `target/test-skips.log` (scripts/test counts the
/// lines), printed, and a failure under [`strict`]. Returns `false` for `if !... { return; }`.
pub fn skip(test: &str, why: &str) -> bool {
    use std::io::Write;
    let line = format!("skipped {test}: {why}");
    let log = repo().join("target/test-skips.log");
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&log) {
        let _ = writeln!(f, "{line}");
    }
    eprintln!("{line}");
    assert!(!strict(), "{line} (a skip is a failure under CI=true or IMGFORGE_STRICT=1: run scripts/setup --tests)");
    false
}

/// Whether we can do root things (loop devices, mounts); records a skip if not.
pub fn have_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() && Path::new("/dev/loop-control").exists() {
        return true;
    }
    skip(test, "needs root and /dev/loop-control")
}

/// A fresh directory for one test, under target/ (same filesystem as outputs), removed on drop.
pub fn testdir(name: &str) -> tempfile::TempDir {
    let base = repo().join("target/test-work");
    std::fs::create_dir_all(&base).unwrap();
    tempfile::Builder::new().prefix(&format!("{name}-")).tempdir_in(base).unwrap()
}

fn run_script(script: &str, args: &[&str]) {
    let out = Command::new(repo().join(script)).args(args).output().unwrap();
    assert!(out.status.success(), "{script} failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// A small upstream made once per test process by scripts/make-small-image (with `variant`).
fn small_image(cell: &'static OnceLock<PathBuf>, name: &str, variant: Option<&str>) -> &'static Path {
    cell.get_or_init(|| {
        let dir = repo().join(format!("target/test-upstream/{name}-{}", std::process::id()));
        let mut args = vec![dir.to_str().unwrap()];
        if let Some(v) = variant {
            args.extend(["--variant", v]);
        }
        run_script("scripts/make-small-image", &args);
        dir
    })
}

/// The small MBR upstream.
pub fn small_upstream() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    small_image(&DIR, "small", None)
}

/// The hostile small upstream: /etc/ssh and /etc/machine-id are symlinks to host paths.
pub fn hostile_upstream() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    small_image(&DIR, "hostile", Some("hostile-ssh"))
}

/// The small XFS upstream (GPT, partition 1 the root, XFS labelled "/").
pub fn xfs_upstream() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    small_image(&DIR, "xfs", Some("xfs"))
}

/// The small LVM upstream (GPT, /boot on 1, PV of VG "rhel" on 2 with root (XFS) and swap).
pub fn lvm_upstream() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    small_image(&DIR, "lvm", Some("lvm"))
}

/// A read-only loop device over `size` bytes at `start` of `raw` (`losetup`): its path.
pub fn attach_ro(raw: &Path, start: u64, size: u64) -> String {
    let out = Command::new("losetup")
        .args(["--find", "--show", "--read-only", "--offset", &start.to_string(), "--sizelimit", &size.to_string()])
        .arg(raw)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Host LVM (the oracle) on partition `partition` of `raw`, through a private configuration
/// that sees only that loop device and writes nothing under /etc/lvm: runs `lvm ARGS…` and
/// returns its stdout. The device path is substituted for `{dev}` in `args`.
pub fn host_lvm(raw: &Path, partition: u32, args: &[&str]) -> String {
    let (_, start, size) = sfdisk_parts(raw).into_iter().find(|p| p.0 == partition).expect("partition");
    let dev = attach_ro(raw, start, size);
    let conf = tempfile::tempdir().unwrap();
    std::fs::write(
        conf.path().join("lvm.conf"),
        format!(
            "devices {{ obtain_device_list_from_udev = 0 use_devicesfile = 0 filter = [ \"a|^{dev}$|\", \"r|.*|\" ] global_filter = [ \"a|^{dev}$|\", \"r|.*|\" ] }}\n\
             backup {{ backup = 0 archive = 0 }}\nglobal {{ locking_dir = \"{}\" }}\n",
            conf.path().display()
        ),
    )
    .unwrap();
    let args: Vec<String> = args.iter().map(|a| a.replace("{dev}", &dev)).collect();
    let o = Command::new("lvm")
        .arg(&args[0])
        .arg("--driverloaded")
        .arg("n")
        .args(&args[1..])
        .env("LVM_SYSTEM_DIR", conf.path())
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .output()
        .unwrap();
    let _ = Command::new("losetup").args(["-d", &dev]).status();
    assert!(o.status.success(), "lvm {args:?}: {}", show(&o));
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// Where logical volume `vg/lv` of the PV on `partition` lies in `raw` (start, size), per host
/// LVM.
pub fn lv_range(raw: &Path, partition: u32, vg_lv: &str) -> (u64, u64) {
    let (_, start, _) = sfdisk_parts(raw).into_iter().find(|p| p.0 == partition).expect("partition");
    let pe_start: u64 =
        host_lvm(raw, partition, &["pvs", "--noheadings", "--units", "b", "--nosuffix", "-o", "pe_start", "{dev}"]).trim().parse().unwrap();
    let vg = vg_lv.split('/').next().unwrap();
    let extent: u64 = host_lvm(raw, partition, &["vgs", "--noheadings", "--units", "b", "--nosuffix", "-o", "vg_extent_size", vg])
        .trim()
        .parse()
        .unwrap();
    let ranges = host_lvm(raw, partition, &["lvs", "--noheadings", "--segments", "-o", "seg_pe_ranges", vg_lv]);
    let r = ranges.trim().rsplit(':').next().unwrap();
    let (a, b) = r.split_once('-').unwrap();
    let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
    (start + pe_start + a * extent, (b - a + 1) * extent)
}

/// The cloud-like upstream (scripts/make-upstream; cached across runs).
pub fn cloud_upstream() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        run_script("scripts/make-upstream", &[]);
        repo().join("target/upstream/cloud")
    })
}

/// Writes a recipe into `dir` and returns its path.
pub fn recipe(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("recipe.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// A recipe head for the small upstream, signed, with version 1.0.0.
pub fn small_head(up: &Path, image: &str) -> String {
    format!(
        "[image]\nname = \"small\"\nversion = \"1.0.0\"\n\n[source]\nurl = \"{up}/{image}\"\nchecksums = \"{up}/SHA256SUMS\"\nsignature = \"{up}/SHA256SUMS.gpg\"\nsigning_key = \"{up}/keys/vendor.asc\"\n\n",
        up = up.display()
    )
}

/// A recipe head for the cloud-like upstream (`cloud_upstream()`), checksum and signature
/// verified, ending with a blank line.
pub fn cloud_head(name: &str, version: &str) -> String {
    format!(
        "[image]\nname = \"{name}\"\nversion = \"{version}\"\n\n[source]\nurl = \"{up}/noble-like-cloudimg-amd64.img\"\nchecksums = \"{up}/SHA256SUMS\"\nsignature = \"{up}/SHA256SUMS.gpg\"\nsigning_key = \"{up}/keys/vendor.asc\"\n\n",
        up = cloud_upstream().display()
    )
}

/// Runs a command, returning its output.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

/// Prints a command's output for the test log.
pub fn show(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Nothing of ours is left: no loop device backed by a file under `dir`, no mount under it or
/// named imgforge in this (the host's) mount namespace, no imgforge mount directory in /tmp.
pub fn assert_clean(dir: &Path) {
    // Autoclear may finish a moment after the process exits.
    for _ in 0..100 {
        if leftovers(dir).is_empty() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("left behind: {:?}", leftovers(dir));
}

fn leftovers(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let dirs = dir.to_string_lossy().to_string();
    let losetup = Command::new("losetup").args(["-a"]).output().unwrap();
    for l in String::from_utf8_lossy(&losetup.stdout).lines() {
        if l.contains(&dirs) {
            found.push(format!("loop: {l}"));
        }
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    for l in mounts.lines() {
        if l.contains(&dirs) || l.contains("imgforge") {
            found.push(format!("mount: {l}"));
        }
    }
    found
}

/// Partitions of a raw disk per `sfdisk --json` (the oracle): (number, start bytes, size bytes).
pub fn sfdisk_parts(raw: &Path) -> Vec<(u32, u64, u64)> {
    let out = Command::new("sfdisk").arg("--json").arg(raw).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let table = &v["partitiontable"];
    let sector = table["sectorsize"].as_u64().unwrap_or(512);
    table["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let node = p["node"].as_str().unwrap();
            let digits: String = node.chars().rev().take_while(char::is_ascii_digit).collect::<Vec<_>>().into_iter().rev().collect();
            let n: u32 = digits.parse().unwrap();
            (n, p["start"].as_u64().unwrap() * sector, p["size"].as_u64().unwrap() * sector)
        })
        .collect()
}

/// A partition of a raw image mounted read-only with losetup + mount(8). Released on drop.
pub struct RoMount {
    pub dir: tempfile::TempDir,
    dev: String,
}

impl RoMount {
    pub fn open(raw: &Path, partition: u32) -> RoMount {
        let (_, start, size) = sfdisk_parts(raw).into_iter().find(|p| p.0 == partition).expect("partition");
        RoMount::at(raw, start, size)
    }

    /// The filesystem at `start` (`size` bytes) of `raw`, mounted read-only without replaying
    /// its journal.
    pub fn at(raw: &Path, start: u64, size: u64) -> RoMount {
        let dev = attach_ro(raw, start, size);
        let dir = tempfile::Builder::new().prefix("ro-check-").tempdir().unwrap();
        let ty = Command::new("blkid").args(["-p", "-o", "value", "-s", "TYPE", &dev]).output().unwrap();
        let opts = match String::from_utf8_lossy(&ty.stdout).trim() {
            // Without nouuid: the kernel registers the UUID, as a host's own mount would.
            "xfs" => "ro,norecovery",
            "ext2" | "ext3" | "ext4" => "ro,noload",
            _ => "ro",
        };
        let m = Command::new("mount").args(["-o", opts, &dev]).arg(dir.path()).output().unwrap();
        if !m.status.success() {
            let _ = Command::new("losetup").args(["-d", &dev]).status();
            panic!("mount failed: {}", show(&m));
        }
        RoMount { dir, dev }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p.trim_start_matches('/'))
    }

    pub fn read(&self, p: &str) -> String {
        std::fs::read_to_string(self.path(p)).unwrap_or_else(|e| panic!("read {p}: {e}"))
    }
}

impl Drop for RoMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// A scratch filesystem (`mkfs.<fstype>` on a sparse file, loop-attached, mounted read-write);
/// unmounted and detached on drop.
pub struct ScratchFs {
    pub dir: tempfile::TempDir,
    dev: String,
    _file: tempfile::TempDir,
}

impl ScratchFs {
    pub fn new(fstype: &str, mkfs_args: &[&str], size: u64) -> ScratchFs {
        let file = tempfile::Builder::new().prefix("scratch-fs-").tempdir_in(repo().join("target")).unwrap();
        let img = file.path().join("fs.img");
        std::fs::File::create(&img).unwrap().set_len(size).unwrap();
        let o = Command::new(format!("mkfs.{fstype}")).args(mkfs_args).arg(&img).output().unwrap();
        assert!(o.status.success(), "mkfs.{fstype}: {}", show(&o));
        let out = Command::new("losetup").args(["--find", "--show"]).arg(&img).output().unwrap();
        assert!(out.status.success(), "{}", show(&out));
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let dir = tempfile::Builder::new().prefix("scratch-mnt-").tempdir().unwrap();
        let m = Command::new("mount").arg(&dev).arg(dir.path()).output().unwrap();
        if !m.status.success() {
            let _ = Command::new("losetup").args(["-d", &dev]).status();
            panic!("mount failed: {}", show(&m));
        }
        ScratchFs { dir, dev, _file: file }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for ScratchFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// A static file server on 127.0.0.1 (python's http.server), stopped on drop.
pub struct HttpServer {
    child: std::process::Child,
    pub port: u16,
}

impl HttpServer {
    pub fn serve(dir: &Path) -> HttpServer {
        use std::io::{BufRead, BufReader};
        let mut child = std::process::Command::new("python3")
            .args(["-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory"])
            .arg(dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.split("port ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().parse().unwrap();
        HttpServer { child, port }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
