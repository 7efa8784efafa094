//! The build sandbox: where every command imgforge runs in the image runs.
//!
//! One per build (per mounted image): a user namespace mapping every id to itself and a network
//! namespace, held by a small process (`userns`); user-mode networking for it (`net`); a
//! writable copy of `/proc/sys` (`procsys`); the services shim (`super::services`). Each
//! command then enters it (`enter`): own mount, PID, UTS and IPC namespaces, pivoted into the
//! image, capabilities of a live machine dropped. Nothing a recipe runs reaches the build
//! host's hostname, kernel parameters, network, clock, swap, devices or processes.
//!
//! Commands find the sandbox of their image root through a registry: [`Sandbox::create`]
//! registers it and dropping it unregisters, so a command for an image without one fails
//! instead of running unconfined.

pub mod enter;
pub mod net;
pub mod procsys;
pub mod userns;

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;

use super::resolve::Root;
use super::run::RUN_DIR;
use super::services;

/// Where a sandboxed `systemd` looks to decide it is the service manager: made for the build
/// so that `service`, init scripts and CM tools take their systemd paths (into the shim).
const SYSTEMD_MARKER: &str = "/run/systemd/system";

/// The environment variable that hands a sandbox to `imgforge sandbox-exec` (Ansible's chroot
/// connection): `<holder pid>:<procsys dir>:<shim path>`.
pub const ENV: &str = "IMGFORGE_SANDBOX";

/// What a command needs to enter the sandbox of `root`.
#[derive(Debug)]
pub struct Handle {
    root: PathBuf,
    holder: u32,
    user: std::fs::File,
    net: std::fs::File,
    procsys: PathBuf,
    shim: PathBuf,
}

static REGISTRY: Mutex<Vec<Arc<Handle>>> = Mutex::new(Vec::new());

/// The sandbox of the image mounted at `root`, if there is one.
pub fn lookup(root: &Path) -> Option<Arc<Handle>> {
    REGISTRY.lock().ok()?.iter().find(|h| h.root == root).cloned()
}

fn register(h: Arc<Handle>) {
    if let Ok(mut r) = REGISTRY.lock() {
        r.push(h);
    }
}

fn unregister(root: &Path) {
    if let Ok(mut r) = REGISTRY.lock() {
        r.retain(|h| h.root != root);
    }
}

/// The host path of the regular file `path` resolves to inside the image (symlinks followed
/// only within the image), if it is one and lies under `root`.
fn in_image(image: &Root, root: &Path, path: &str) -> Option<PathBuf> {
    let fd = image.open_in(Path::new(path), nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_NOFOLLOW, 0).ok()?;
    let st = nix::sys::stat::fstat(&fd).ok()?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return None;
    }
    let host = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    let root = std::fs::canonicalize(root).ok()?;
    host.starts_with(&root).then_some(host)
}

fn cstr(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in a path"))
}

impl Handle {
    /// What the forked child does before exec, prepared now (no allocation after the fork).
    ///
    /// The image paths the shim is bind-mounted on are resolved here, inside the image root,
    /// and handed over as the canonical host paths of what they resolved to: before it pivots,
    /// the child sees the host's tree, and a symlink the image planted (`/usr/bin` → the host's
    /// `/usr/bin`) must not bind a host file into the sandbox. (Descriptors cannot be handed
    /// over: they name mounts of the build's namespace, not of the child's copy. Nothing of the
    /// sandbox runs between this and the child's mounts to change the paths: every sandboxed
    /// process dies with its command.) `/proc` is the build's own mount point; what is under it
    /// once the fresh procfs is mounted there is the kernel's.
    pub fn enter(&self) -> std::io::Result<enter::Enter> {
        let r = &self.root;
        let image = Root::open(r).map_err(std::io::Error::other)?;
        let systemctl = match (in_image(&image, r, services::SYSTEMCTL), in_image(&image, r, &services::real_systemctl())) {
            (Some(target), Some(aside)) => Some(enter::Shim { target: cstr(&target)?, aside: cstr(&aside)?, shim: cstr(&self.shim)? }),
            _ => None,
        };
        Ok(enter::Enter {
            root: cstr(r)?,
            proc_dir: cstr(&r.join("proc"))?,
            sys_dir: cstr(&r.join("proc/sys"))?,
            sysrq: cstr(&r.join("proc/sysrq-trigger"))?,
            procsys: cstr(&self.procsys)?,
            systemctl,
            userns: self.user.as_raw_fd(),
            netns: self.net.as_raw_fd(),
        })
    }

    /// The value of [`ENV`] for a helper process started by a host tool.
    pub fn env_value(&self) -> String {
        format!("{}:{}:{}", self.holder, self.procsys.display(), self.shim.display())
    }

    /// A handle from [`ENV`]'s value, for `imgforge sandbox-exec`; registered until the process
    /// exits.
    pub fn register_from_env(root: &Path, value: &str) -> anyhow::Result<()> {
        let mut f = value.splitn(3, ':');
        let (Some(pid), Some(procsys), Some(shim)) = (f.next(), f.next(), f.next()) else {
            anyhow::bail!("{ENV} is malformed: {value:?}");
        };
        let open = |ns: &str| {
            let p = format!("/proc/{pid}/ns/{ns}");
            std::fs::File::open(&p).with_context(|| format!("Failed to open {p} (is the build still running?)"))
        };
        register(Arc::new(Handle {
            root: root.to_path_buf(),
            holder: pid.parse().with_context(|| format!("{ENV} is malformed: {value:?}"))?,
            user: open("user")?,
            net: open("net")?,
            procsys: procsys.into(),
            shim: shim.into(),
        }));
        Ok(())
    }
}

/// A build's sandbox; dropping it stops its network, ends its namespaces and removes what it
/// put in the image's /run.
#[derive(Debug)]
pub struct Sandbox {
    root: Root,
    handle: Arc<Handle>,
    procsys: procsys::Snapshot,
    _net: Option<net::UserNet>,
    _ns: userns::Namespaces,
    marker_made: bool,
    _tmpfs: Tmpfs,
    _dir: tempfile::TempDir,
}

/// A tmpfs over the sandbox's directory (the /proc/sys copy: ~1300 small files, 0.9 s to create
/// on the build host's disk while it writes the image back, a few ms in memory). It lives in the
/// build's private mount namespace, so it goes with the build even after `kill -9`; unmounted
/// (lazily) on drop, before the directory is removed.
#[derive(Debug)]
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path) -> anyhow::Result<Self> {
        use nix::mount::MsFlags;
        nix::mount::mount(Some("tmpfs"), dir, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=0700,size=64m"))
            .with_context(|| format!("Failed to mount a tmpfs on {}", dir.display()))?;
        Ok(Self(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Err(e) = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH) {
            tracing::warn!("Failed to unmount the sandbox's tmpfs {}: {e}", self.0.display());
        }
    }
}

impl Sandbox {
    /// Sets up the sandbox for the image mounted at `root` (with networking when `network`).
    pub fn create(root: &Root, network: bool, events: &crate::progress::Events) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("imgforge-sandbox-").tempdir().context("Failed to create a temporary directory")?;
        let tmpfs = Tmpfs::mount(dir.path())?;
        let sys = dir.path().join("proc-sys");
        std::fs::create_dir(&sys).with_context(|| format!("Failed to create {}", sys.display()))?;
        let procsys = events
            .phase("sandbox", "copy /proc/sys (provisioners' sysctl writes land in the copy)", || procsys::Snapshot::take(&sys))
            .context("Failed to copy /proc/sys for the build sandbox")?;
        let shim = dir.path().join("systemctl");
        write_exec(&shim, services::SYSTEMCTL_SHIM.as_bytes())?;
        let ns = events.phase("sandbox", "create the user and network namespaces (held by a small process)", userns::Namespaces::create)?;
        let net = if network {
            let log = dir.path().join("slirp4netns.log");
            Some(
                events
                    .phase("sandbox", "start slirp4netns (user-mode network for provisioners)", || net::UserNet::start(ns.pid(), &log))?,
            )
        } else {
            None
        };
        root.mkdir_all(Path::new(&services::state_dir()), 0o700)?;
        root.write(Path::new(&services::real_systemctl()), b"", 0o755)?;
        let marker_made = !root.exists(Path::new(SYSTEMD_MARKER))?;
        if marker_made {
            root.mkdir_all(Path::new(SYSTEMD_MARKER), 0o755)?;
        }
        let handle = Arc::new(Handle {
            root: root.path().to_path_buf(),
            holder: ns.pid(),
            user: ns.user.try_clone().context("Failed to duplicate a descriptor")?,
            net: ns.net.try_clone().context("Failed to duplicate a descriptor")?,
            procsys: sys,
            shim,
        });
        register(handle.clone());
        Ok(Self { root: root.try_clone()?, handle, procsys, _net: net, _ns: ns, marker_made, _tmpfs: tmpfs, _dir: dir })
    }

    /// Kernel parameters written in the sandbox (they changed only its copy of /proc/sys).
    pub fn sysctl_changes(&self) -> Vec<(String, String)> {
        self.procsys.changes()
    }

    /// Service starts deferred to first boot so far, each with its enabled state in the image.
    pub fn deferred_services(&self) -> anyhow::Result<Vec<services::Deferred>> {
        let mut list = services::read_log(&self.root)?;
        for d in &mut list {
            d.enabled = self.is_enabled(&d.unit)?;
        }
        Ok(list)
    }

    fn is_enabled(&self, unit: &str) -> anyhow::Result<String> {
        if !self.root.exists(Path::new(services::SYSTEMCTL))? {
            return Ok("no-systemd".into());
        }
        let cmd = super::cmd::ChrootCmd::new(self.root.path(), services::SYSTEMCTL).args(["is-enabled", unit]).env("SYSTEMD_OFFLINE", "1");
        let out = cmd.output().with_context(|| format!("Failed to run systemctl is-enabled {unit} in the image"))?;
        let first = String::from_utf8_lossy(&out).lines().next().unwrap_or("").trim().to_string();
        Ok(if first.is_empty() || first.contains(' ') { "not-found".to_string() } else { first })
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        unregister(&self.handle.root);
        let run = Path::new(RUN_DIR);
        for p in [services::log_path(), services::real_systemctl()] {
            let _ = self.root.remove_file(Path::new(&p));
        }
        let _ = self.root.remove_tree(&run.join("services"));
        if self.marker_made {
            let _ = self.root.remove_dir(Path::new(SYSTEMD_MARKER));
        }
    }
}

/// Writes at `path` (a new file, owner-only) the `chroot` a host tool (Ansible's chroot
/// connection, testinfra's chroot backend) calls: `imgforge sandbox-exec ROOT PROGRAM ARGS…`
/// with this very executable (`/proc/PID/exe`, even if its file is replaced during the build),
/// so every command the tool runs in the image runs in this sandbox. `tool` names it in a comment.
pub fn write_chroot_wrapper(path: &Path, tool: &str) -> anyhow::Result<()> {
    let me = format!("/proc/{}/exe", std::process::id());
    let body =
        format!("#!/bin/sh\n# {tool}'s chroot for imgforge: every command runs in the build sandbox\nexec '{me}' sandbox-exec \"$@\"\n");
    write_private_script(path, &body)
}

/// Writes a new owner-only executable script at `path` (refused if something is there).
pub fn write_private_script(path: &Path, body: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o700)
        .open(path)
        .with_context(|| format!("Failed to create {}", path.display()))?;
    f.write_all(body.as_bytes()).with_context(|| format!("Failed to write {}", path.display()))
}

fn write_exec(path: &Path, body: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, body).with_context(|| format!("Failed to write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).with_context(|| format!("Failed to chmod {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn shim_targets_never_resolve_to_the_host() {
        let img = tempfile::tempdir().unwrap();
        let root_path = std::fs::canonicalize(img.path()).unwrap();
        std::fs::create_dir_all(root_path.join("usr")).unwrap();
        std::fs::create_dir_all(root_path.join("etc")).unwrap();
        std::fs::write(root_path.join("etc/systemctl"), b"in the image").unwrap();
        // /usr/bin -> the host's /etc: resolved in the image, it is the image's /etc.
        symlink("/etc", root_path.join("usr/bin")).unwrap();
        let root = Root::open(&root_path).unwrap();
        assert_eq!(in_image(&root, &root_path, "/usr/bin/systemctl"), Some(root_path.join("etc/systemctl")));
        // A final symlink is not followed, even to a file in the image.
        std::fs::create_dir_all(root_path.join("sbin")).unwrap();
        symlink("/etc/systemctl", root_path.join("sbin/systemctl")).unwrap();
        assert_eq!(in_image(&root, &root_path, "/sbin/systemctl"), None);
        // Escaping with .. stays in the image; a missing file is none.
        assert_eq!(in_image(&root, &root_path, "/../../../../usr/bin/systemctl"), Some(root_path.join("etc/systemctl")));
        assert_eq!(in_image(&root, &root_path, "/usr/bin/missing"), None);
    }
}
