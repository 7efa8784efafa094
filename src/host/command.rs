//! Every external command goes through `CommandRunExt`: logged, stderr captured, its tail in
//! the error.

use std::process::{Command, Output};

/// How much of stderr goes into an error.
const STDERR_TAIL: usize = 1024;

/// A failed external command.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// It could not be started.
    #[error("Failed to {what}: could not run {program}: {source}{}", install_hint(program, source))]
    Spawn {
        /// The step, in words.
        what: String,
        /// Program name.
        program: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// It exited unsuccessfully.
    #[error("Failed to {what}: {program} exited with {status}{tail}")]
    Status {
        /// The step, in words.
        what: String,
        /// Program name.
        program: String,
        /// Exit status.
        status: std::process::ExitStatus,
        /// Last part of stderr, preformatted.
        tail: String,
    },
}

/// The Debian/Ubuntu package that provides a host program imgforge runs.
pub fn package_of(program: &str) -> Option<&'static str> {
    let name = program.rsplit('/').next().unwrap_or(program);
    Some(match name {
        "e2fsck" | "resize2fs" | "tune2fs" | "mkfs.ext4" | "debugfs" | "dumpe2fs" => "e2fsprogs",
        "slirp4netns" => "slirp4netns",
        "xfs_growfs" | "xfs_admin" | "xfs_repair" | "xfs_db" => "xfsprogs",
        "mcopy" | "mdir" | "mtype" | "mformat" | "mmd" => "mtools",
        "mkfs.vfat" | "fsck.vfat" => "dosfstools",
        "qemu-img" => "qemu-utils",
        "gpg" | "gpgconf" => "gnupg",
        "git" => "git",
        "tar" => "tar",
        "python3" => "python3",
        "ansible-playbook" | "ansible-galaxy" => "ansible",
        "ssh" | "ssh-keygen" => "openssh-client",
        "qemu-system-x86_64" => "qemu-system-x86",
        "rspec" => "ruby-serverspec",
        _ => return None,
    })
}

/// ": install it with `apt-get install PKG`" when `source` says the program is missing.
fn install_hint(program: &str, source: &std::io::Error) -> String {
    if source.kind() != std::io::ErrorKind::NotFound {
        return String::new();
    }
    match package_of(program) {
        Some(pkg) => format!(" ({program} is not installed: apt-get install {pkg}, or run scripts/setup)"),
        None => format!(" ({program} is not installed on the build host)"),
    }
}

/// Runs a command to completion, capturing its output.
pub trait CommandRunExt {
    /// Runs; success only on exit status 0. `what` says what the step does ("grow the root
    /// filesystem").
    fn run_checked(&mut self, what: &str) -> Result<Output, CommandError>;
    /// Runs to completion whatever its exit status (for tools such as e2fsck whose non-zero
    /// codes carry meaning); only a failure to start is an error.
    fn run_any_status(&mut self, what: &str) -> Result<Output, CommandError>;
}

impl CommandRunExt for Command {
    fn run_checked(&mut self, what: &str) -> Result<Output, CommandError> {
        let out = self.run_any_status(what)?;
        if out.status.success() {
            return Ok(out);
        }
        let program = self.get_program().to_string_lossy().into_owned();
        Err(CommandError::Status { what: what.to_string(), program, status: out.status, tail: tail(&out.stderr) })
    }

    fn run_any_status(&mut self, what: &str) -> Result<Output, CommandError> {
        let program = self.get_program().to_string_lossy().into_owned();
        tracing::debug!(command = ?self, "running");
        self.output().map_err(|source| CommandError::Spawn { what: what.to_string(), program, source })
    }
}

/// The last KiB of `stderr` as ": …text" or "" when empty.
pub fn tail(stderr: &[u8]) -> String {
    let start = stderr.len().saturating_sub(STDERR_TAIL);
    let text = String::from_utf8_lossy(stderr.get(start..).unwrap_or_default());
    let text = text.trim();
    if text.is_empty() { String::new() } else { format!(": {text}") }
}

/// Spawns `cmd` leading its own process group, with `signal` sent to it when imgforge dies
/// (`PR_SET_PDEATHSIG`): SIGKILL for a helper working in our namespace, SIGTERM for a child
/// imgforge that cleans up after itself.
pub fn spawn_tied(
    mut cmd: std::process::Command,
    stdout: std::process::Stdio,
    stderr: std::process::Stdio,
    signal: libc::c_int,
) -> std::io::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    #[allow(unsafe_code)]
    // SAFETY: the closure makes one async-signal-safe syscall and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    cmd.stdout(stdout).stderr(stderr).spawn()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_missing_tool_names_its_package() {
        let empty = tempfile::tempdir().unwrap();
        let err = Command::new("resize2fs").env("PATH", empty.path()).run_checked("grow the root filesystem").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("resize2fs is not installed: apt-get install e2fsprogs"), "{text}");
        let err = Command::new("mdir").env("PATH", empty.path()).run_any_status("list the ESP").unwrap_err();
        assert!(err.to_string().contains("apt-get install mtools"), "{err}");
        let err = Command::new("no-such-tool-here").env("PATH", empty.path()).run_checked("x").unwrap_err();
        assert!(err.to_string().ends_with("(no-such-tool-here is not installed on the build host)"), "{err}");
    }
}
