//! `ChrootCmd`: a command run chrooted in the image, in its own mount and PID namespaces.
//!
//! The child unshares a mount and a PID namespace and forks once more: the grandchild is PID 1
//! of the new PID namespace, mounts a fresh `/proc` for it, chroots and execs. When it exits,
//! the kernel kills every process left in that namespace (a `sleep 1000 &`, a `gpg-agent
//! --daemon`), so nothing started by a provisioner outlives it. Both processes carry
//! `PR_SET_PDEATHSIG(SIGKILL)`, so if imgforge itself is killed the chain collapses too.
//! The environment is cleared and set explicitly.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The PATH every chrooted command gets: full sbin/bin, so `useradd` and friends are found.
pub const CHROOT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A command to run inside the image root.
#[derive(Debug, Clone)]
pub struct ChrootCmd {
    root: PathBuf,
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

/// Starting the chrooted command failed.
#[derive(Debug, thiserror::Error)]
pub enum ChrootError {
    /// A path or argument held a NUL byte.
    #[error("Failed to prepare the chroot command: {0} contains a NUL byte")]
    Nul(String),
    /// fork/exec failed.
    #[error("Failed to start {program} chrooted in {root}: {source}")]
    Spawn {
        /// Program.
        program: String,
        /// Image root.
        root: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

impl ChrootCmd {
    /// A command `program` (an absolute path inside the image) chrooted at `root`.
    pub fn new(root: &Path, program: &str) -> Self {
        let env = [
            ("PATH", CHROOT_PATH),
            ("HOME", "/root"),
            ("LANG", "C.UTF-8"),
            ("TERM", "dumb"),
            ("DEBIAN_FRONTEND", "noninteractive"),
            ("IMGFORGE_BUILD", "1"),
        ];
        Self {
            root: root.to_path_buf(),
            program: program.to_string(),
            args: Vec::new(),
            env: env.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect(),
        }
    }

    /// Adds an argument.
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    /// Adds arguments.
    pub fn args<S: Into<String>>(mut self, a: impl IntoIterator<Item = S>) -> Self {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable (replacing a default of the same name).
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.retain(|(key, _)| key != k);
        self.env.push((k.to_string(), v.to_string()));
        self
    }

    /// Spawns with the given stdio. Wait on the returned child; kill it to kill everything.
    pub fn spawn(&self, stdout: Stdio, stderr: Stdio) -> Result<Child, ChrootError> {
        let root = CString::new(self.root.as_os_str().as_bytes()).map_err(|_| ChrootError::Nul(self.root.display().to_string()))?;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args).env_clear().envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr).current_dir("/");
        let ctx = ChildCtx { root, proc_: c"proc", proc_dir: c"/proc", slash: c"/" };
        #[allow(unsafe_code)]
        // SAFETY: the closure only makes raw syscalls with CStrings built before the fork; it
        // allocates nothing and takes no locks.
        unsafe {
            cmd.pre_exec(move || ctx.enter())
        };
        cmd.spawn().map_err(|source| ChrootError::Spawn { program: self.program.clone(), root: self.root.clone(), source })
    }
}

struct ChildCtx {
    root: CString,
    proc_: &'static std::ffi::CStr,
    proc_dir: &'static std::ffi::CStr,
    slash: &'static std::ffi::CStr,
}

fn check(rc: libc::c_long) -> std::io::Result<()> {
    if rc < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}

impl ChildCtx {
    /// Runs in the forked child before exec. Returns only in the grandchild (PID 1 of the new
    /// PID namespace); the intermediate process waits for it and exits with its status.
    #[allow(unsafe_code)]
    fn enter(&self) -> std::io::Result<()> {
        // SAFETY (whole function): raw async-signal-safe syscalls on valid, NUL-terminated
        // strings owned by `self`; no allocation between fork and exec.
        unsafe {
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL).into())?;
            check(libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWPID).into())?;
            let flags = libc::MS_REC | libc::MS_PRIVATE;
            check(libc::mount(std::ptr::null(), self.slash.as_ptr(), std::ptr::null(), flags, std::ptr::null()).into())?;
            let pid = libc::fork();
            if pid < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if pid > 0 {
                wait_and_exit(pid);
            }
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL).into())?;
            check(libc::chroot(self.root.as_ptr()).into())?;
            check(libc::chdir(self.slash.as_ptr()).into())?;
            let pflags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
            check(libc::mount(self.proc_.as_ptr(), self.proc_dir.as_ptr(), self.proc_.as_ptr(), pflags, std::ptr::null()).into())?;
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
