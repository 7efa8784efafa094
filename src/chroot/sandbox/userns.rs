//! The build's user and network namespaces, held open by a small process.
//!
//! `cat`, started in a new user namespace (root mapped to root, every id to itself) and a new
//! network namespace, reads its stdin until imgforge closes it or dies — so the namespaces live
//! exactly as long as the build, even after `kill -9`. Every sandboxed command joins both: root
//! there owns its network (firewall rules, routes, links change the namespace, not the host)
//! and its own hostname, mounts and IPC, while everything that needs the host's root (kernel
//! modules, the clock, reboot, swap, raw I/O, device nodes, a fresh /proc or /sys) is refused
//! by the kernel.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};

use anyhow::Context;

/// The identity mapping: every uid/gid to itself, so file ownership in the image is untouched.
const IDENTITY_MAP: &[u8] = b"0 0 4294967295\n";

/// The held namespaces.
#[derive(Debug)]
pub struct Namespaces {
    holder: Child,
    stdin: Option<ChildStdin>,
    /// `/proc/<holder>/ns/user`, open.
    pub user: File,
    /// `/proc/<holder>/ns/net`, open.
    pub net: File,
}

impl Namespaces {
    /// Starts the holder and maps its ids.
    pub fn create() -> anyhow::Result<Self> {
        let mut cmd = Command::new("cat");
        cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null()).env_clear().current_dir("/");
        #[allow(unsafe_code)]
        // SAFETY: one raw syscall, no allocation.
        unsafe {
            cmd.pre_exec(|| {
                if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
        let mut holder = cmd.spawn().context("Failed to create the build sandbox's user and network namespaces (needs root)")?;
        let stdin = holder.stdin.take();
        let mut me = Self { user: File::open("/dev/null")?, net: File::open("/dev/null")?, holder, stdin };
        let pid = me.holder.id();
        for map in ["uid_map", "gid_map"] {
            let path = format!("/proc/{pid}/{map}");
            std::fs::write(&path, IDENTITY_MAP).with_context(|| format!("Failed to write {path} for the build sandbox"))?;
        }
        me.user = File::open(format!("/proc/{pid}/ns/user")).context("Failed to open the sandbox's user namespace")?;
        me.net = File::open(format!("/proc/{pid}/ns/net")).context("Failed to open the sandbox's network namespace")?;
        Ok(me)
    }

    /// The holder's PID (slirp4netns attaches to its network namespace).
    pub fn pid(&self) -> u32 {
        self.holder.id()
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}
