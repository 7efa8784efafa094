//! Entering the sandbox: what the forked child does between fork and exec.
//!
//! In the build's user namespace (the host's):
//! 1. new mount and PID namespaces; the child forks once more and waits: the grandchild is PID
//!    1 of the new PID namespace, and when it exits the kernel kills everything left in it;
//! 2. a fresh `/proc` for that PID namespace on the image's `/proc`, the writable copy of
//!    `/proc/sys` over its `sys`, `/dev/null` over `sysrq-trigger`;
//! 3. the services shim over the image's `systemctl` (the real one bind-mounted aside);
//! 4. `pivot_root` into the image and detach the host's tree: no path leads out any more
//!    (a chroot can be escaped by its root; a pivoted, detached mount namespace cannot).
//!
//! Then it joins the sandbox's network and user namespaces, takes new mount, UTS and IPC
//! namespaces there (the mounts above become locked: they cannot be unmounted to reveal the
//! real `/proc/sys`), names itself `localhost`, and drops from its bounding set what only a
//! live machine needs. Everything here runs between fork and exec: raw syscalls on buffers
//! prepared before the fork, no allocation, no locks.

use std::ffi::{CStr, CString};
use std::os::fd::RawFd;

/// Capabilities no image build needs, dropped from the bounding set: reading by handle,
/// kernel modules, raw I/O, process accounting, reboot, the clock, TTY configuration, device
/// nodes, audit control, MAC policy, the kernel log, wake alarms, suspend blocking, audit
/// reading, perf and BPF. (Swap, like mounting a fresh /proc, needs the host's root, which
/// the user namespace does not give.)
pub const DROPPED_CAPS: &[(u32, &str)] = &[
    (2, "CAP_DAC_READ_SEARCH"),
    (16, "CAP_SYS_MODULE"),
    (17, "CAP_SYS_RAWIO"),
    (20, "CAP_SYS_PACCT"),
    (22, "CAP_SYS_BOOT"),
    (25, "CAP_SYS_TIME"),
    (26, "CAP_SYS_TTY_CONFIG"),
    (27, "CAP_MKNOD"),
    (30, "CAP_AUDIT_CONTROL"),
    (32, "CAP_MAC_OVERRIDE"),
    (33, "CAP_MAC_ADMIN"),
    (34, "CAP_SYSLOG"),
    (35, "CAP_WAKE_ALARM"),
    (36, "CAP_BLOCK_SUSPEND"),
    (37, "CAP_AUDIT_READ"),
    (38, "CAP_PERFMON"),
    (39, "CAP_BPF"),
];

/// The hostname inside the sandbox: neutral, so nothing of the build host's name is written
/// into the image by tools that record `hostname` (mailname, hosts files, logs).
pub const SANDBOX_HOSTNAME: &CStr = c"localhost";

/// The services shim's bind mounts: the image's systemctl and the file it is put aside to,
/// both as resolved inside the image (canonical host paths under the root).
#[derive(Debug)]
pub struct Shim {
    /// The image's `/usr/bin/systemctl`.
    pub target: CString,
    /// The image's `/run/imgforge/systemctl.real`.
    pub aside: CString,
    /// The shim on the host.
    pub shim: CString,
}

/// Everything the child needs, prepared before the fork.
#[derive(Debug)]
pub struct Enter {
    /// The image root (the build's own mount point).
    pub root: CString,
    /// `<root>/proc` (a mount point of the build).
    pub proc_dir: CString,
    /// `<root>/proc/sys`.
    pub sys_dir: CString,
    /// `<root>/proc/sysrq-trigger`.
    pub sysrq: CString,
    /// The writable copy of /proc/sys on the host.
    pub procsys: CString,
    /// The services shim, when the image has a systemctl.
    pub systemctl: Option<Shim>,
    /// Open descriptors of the sandbox's user and network namespaces.
    pub userns: RawFd,
    /// See `userns`.
    pub netns: RawFd,
}

fn check(rc: libc::c_long) -> std::io::Result<()> {
    if rc < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}

#[allow(unsafe_code)]
fn bind(from: &CStr, to: &CStr) -> std::io::Result<()> {
    // SAFETY: valid NUL-terminated strings; raw syscall.
    check(unsafe { libc::mount(from.as_ptr(), to.as_ptr(), std::ptr::null(), libc::MS_BIND | libc::MS_REC, std::ptr::null()) }.into())
}

impl Enter {
    /// Runs in the forked child. Returns only in the grandchild, ready to exec; the
    /// intermediate process waits for it and exits with its status.
    #[allow(unsafe_code)]
    pub fn enter(&self) -> std::io::Result<()> {
        // SAFETY (whole function): raw async-signal-safe syscalls on valid, NUL-terminated
        // strings owned by `self` and descriptors kept open by the parent; no allocation.
        unsafe {
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL).into())?;
            check(libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWPID).into())?;
            let private = libc::MS_REC | libc::MS_PRIVATE;
            check(libc::mount(std::ptr::null(), c"/".as_ptr(), std::ptr::null(), private, std::ptr::null()).into())?;
            let pid = libc::fork();
            if pid < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if pid > 0 {
                wait_and_exit(pid);
            }
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL).into())?;
            let pflags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
            check(libc::mount(c"proc".as_ptr(), self.proc_dir.as_ptr(), c"proc".as_ptr(), pflags, std::ptr::null()).into())?;
            bind(&self.procsys, &self.sys_dir)?;
            if let Err(e) = bind(c"/dev/null", &self.sysrq)
                && e.raw_os_error() != Some(libc::ENOENT)
            {
                return Err(e);
            }
            if let Some(s) = &self.systemctl {
                bind(&s.target, &s.aside)?;
                bind(&s.shim, &s.target)?;
            }
            check(libc::chdir(self.root.as_ptr()).into())?;
            check(libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()))?;
            check(libc::umount2(c".".as_ptr(), libc::MNT_DETACH).into())?;
            check(libc::chdir(c"/".as_ptr()).into())?;
            check(libc::setns(self.netns, libc::CLONE_NEWNET).into())?;
            check(libc::setns(self.userns, libc::CLONE_NEWUSER).into())?;
            check(libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC).into())?;
            let name = SANDBOX_HOSTNAME.to_bytes();
            check(libc::sethostname(name.as_ptr().cast(), name.len()).into())?;
            for (cap, _) in DROPPED_CAPS {
                // EINVAL: a capability this kernel does not know.
                if libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(*cap), 0, 0, 0) < 0 && *libc::__errno_location() != libc::EINVAL {
                    return Err(std::io::Error::last_os_error());
                }
            }
        }
        Ok(())
    }
}

/// The intermediate process: close everything but stdio (so the parent's exec-status pipe sees
/// EOF once the grandchild execs), wait for the grandchild, exit with its status.
#[allow(unsafe_code)]
fn wait_and_exit(pid: libc::pid_t) -> ! {
    // SAFETY: raw syscalls; `status` is a valid out-pointer; _exit never returns.
    unsafe {
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        let mut status: libc::c_int = 0;
        loop {
            let rc = libc::waitpid(pid, &mut status, 0);
            if rc == pid {
                break;
            }
            if rc < 0 && *libc::__errno_location() != libc::EINTR {
                libc::_exit(127);
            }
        }
        let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) };
        libc::_exit(code)
    }
}
