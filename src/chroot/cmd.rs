//! `ChrootCmd`: a command run in the image, inside the build's sandbox (`super::sandbox`).
//!
//! The child enters the sandbox and forks once more: the grandchild is PID 1 of a new PID
//! namespace, pivoted into the image. When it exits, the kernel kills every process left in
//! that namespace (a `sleep 1000 &`, a `gpg-agent --daemon`, a daemon a playbook started), so
//! nothing started by a provisioner outlives it. Both processes carry
//! `PR_SET_PDEATHSIG(SIGKILL)`, so if imgforge itself is killed the chain collapses too.
//! The environment is cleared and set explicitly.

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
    stdin: bool,
}

/// Starting the chrooted command failed.
#[derive(Debug, thiserror::Error)]
pub enum ChrootError {
    /// No sandbox was set up for this image (a bug: every command runs in one).
    #[error("No build sandbox for the image at {root}: refusing to run a command there unconfined")]
    NoSandbox {
        /// Image root.
        root: PathBuf,
    },
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
            stdin: false,
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

    /// Gives the command imgforge's own stdin (for `imgforge sandbox-exec`) instead of none.
    pub fn inherit_stdin(mut self) -> Self {
        self.stdin = true;
        self
    }

    /// Spawns in the image's sandbox with the given stdio. Wait on the returned child; kill it
    /// to kill everything it started.
    pub fn spawn(&self, stdout: Stdio, stderr: Stdio) -> Result<Child, ChrootError> {
        let Some(sandbox) = super::sandbox::lookup(&self.root) else {
            return Err(ChrootError::NoSandbox { root: self.root.clone() });
        };
        let spawn_err = |source| ChrootError::Spawn { program: self.program.clone(), root: self.root.clone(), source };
        let enter = sandbox.enter().map_err(&spawn_err)?;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args).env_clear().envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.stdin(if self.stdin { Stdio::inherit() } else { Stdio::null() }).stdout(stdout).stderr(stderr).current_dir("/");
        #[allow(unsafe_code)]
        // SAFETY: the closure only makes raw syscalls with buffers built before the fork; it
        // allocates nothing and takes no locks. `sandbox` keeps the descriptors open.
        unsafe {
            cmd.pre_exec(move || enter.enter())
        };
        let child = cmd.spawn().map_err(&spawn_err);
        drop(sandbox);
        child
    }

    /// Runs to the end and returns its stdout (stderr goes to imgforge's log at debug level);
    /// for short queries.
    pub fn output(&self) -> Result<Vec<u8>, ChrootError> {
        let child = self.spawn(Stdio::piped(), Stdio::piped())?;
        let out = child.wait_with_output().map_err(|source| ChrootError::Spawn {
            program: self.program.clone(),
            root: self.root.clone(),
            source,
        })?;
        if !out.stderr.is_empty() {
            tracing::debug!("{}: {}", self.program, String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(out.stdout)
    }
}
