//! User-mode networking for the sandbox: slirp4netns gives its network namespace a `tap0` with
//! a default route and a DNS forwarder at 10.0.2.3, and connects out through ordinary sockets
//! of the build host. apt, pip, git and curl work; the host's interfaces, routes and firewall
//! are never touched, and the host's own loopback services are not reachable.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};
use nix::fcntl::OFlag;

/// The address of slirp4netns's DNS forwarder inside the namespace.
pub const SLIRP_DNS: &str = "10.0.2.3";

/// A running slirp4netns; stopping it (drop) cuts the namespace off.
#[derive(Debug)]
pub struct UserNet {
    child: Child,
    /// Its `--exit-fd` read end is in the child: when imgforge dies, this end closes and
    /// slirp4netns exits.
    _exit: OwnedFd,
}

impl UserNet {
    /// Attaches slirp4netns to the network namespace of process `pid` and waits until the
    /// interface is configured.
    /// slirp4netns's messages go to `log`.
    pub fn start(pid: u32, log: &std::path::Path) -> anyhow::Result<Self> {
        let log_file = std::fs::File::create(log).with_context(|| format!("Failed to create {}", log.display()))?;
        let (exit_r, exit_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context("Failed to create a pipe")?;
        let (ready_r, ready_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context("Failed to create a pipe")?;
        let (er, rw) = (exit_r.as_raw_fd(), ready_w.as_raw_fd());
        let mut cmd = Command::new("slirp4netns");
        cmd.args(["--configure", "--mtu=65520", "--disable-host-loopback", "--exit-fd=3", "--ready-fd=4"]);
        cmd.arg(pid.to_string()).arg("tap0");
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log_file).current_dir("/");
        #[allow(unsafe_code)]
        // SAFETY: raw fcntl/dup2 on descriptors that stay open until exec; no allocation.
        unsafe {
            cmd.pre_exec(move || {
                let a = libc::fcntl(er, libc::F_DUPFD, 10);
                let b = libc::fcntl(rw, libc::F_DUPFD, 10);
                if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
        let mut child = cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow::anyhow!(
                    "slirp4netns is not installed: provisioners get their network through it (apt-get install slirp4netns, or run scripts/setup)"
                )
            } else {
                anyhow::Error::from(e).context("Failed to start slirp4netns")
            }
        })?;
        drop((exit_r, ready_w));
        let mut ready = [0u8; 1];
        let got = std::fs::File::from(ready_r).read(&mut ready).unwrap_or(0);
        if got == 0 {
            let _ = child.kill();
            let _ = child.wait();
            let err = std::fs::read_to_string(log).unwrap_or_default();
            bail!("slirp4netns could not set up the sandbox's network: {}", err.trim());
        }
        Ok(Self { child, _exit: exit_w })
    }
}

impl Drop for UserNet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
