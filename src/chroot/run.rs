//! Running a process for the build and streaming its output: a chrooted command (PID 1 of its own
//! PID namespace) or a host tool working on the image (ansible-playbook, pip), each line labelled,
//! a stop request honoured, the last lines kept for the error.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::os::fd::OwnedFd;
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::Context;

use super::cmd::ChrootCmd;
use crate::progress::Events;

/// Where provisioners' inputs are placed for the run: the build's own tmpfs on /run, never the
/// image's disk.
pub const RUN_DIR: &str = "/run/imgforge";

/// How many output lines a failure message repeats.
const TAIL_LINES: usize = 20;

/// Spawns `cmd` with stdout and stderr on one pipe, streams its lines, waits (checking for a stop
/// request), and fails with the exit status and the last lines.
pub fn run_streaming(cmd: &ChrootCmd, label: &str, events: &Events) -> anyhow::Result<()> {
    let done = stream(|out, err| Ok(cmd.spawn(out, err)?), label, events, |_| {})?;
    if done.status.success() { Ok(()) } else { Err(done.failure()) }
}

/// Added to a failure whose output shows a refusal.
const SANDBOX_HINT: &str = "\n      (\"Operation not permitted\": provisioners run in the build sandbox, which refuses what needs the \
     build host's root — kernel modules, the clock, reboot, swap, raw I/O, device nodes, mounting /proc or /sys; \
     see README \"The build sandbox\")";

/// A streamed command that has exited.
#[derive(Debug)]
pub struct Finished {
    /// How it exited.
    pub status: std::process::ExitStatus,
    /// Its last output lines.
    pub tail: VecDeque<String>,
}

impl Finished {
    /// "exit code N; last lines: …".
    pub fn failure(&self) -> anyhow::Error {
        let last: Vec<&str> = self.tail.iter().map(String::as_str).collect();
        let shown = if last.is_empty() { String::from("(no output)") } else { last.join("\n      ") };
        let how = self.status.code().map_or_else(|| format!("{}", self.status), |c| format!("exit code {c}"));
        let hint = if last.iter().any(|l| l.contains("Operation not permitted")) { SANDBOX_HINT } else { "" };
        anyhow::anyhow!("{how}; last lines:\n      {shown}{hint}")
    }
}

/// Spawns a command with stdout and stderr on one pipe (`spawn` gets the two write ends), streams
/// its lines with `label` (each also given to `on_line`), and waits for it, checking for a stop
/// request. Returns how it exited, whatever that was.
pub fn stream(
    spawn: impl FnOnce(Stdio, Stdio) -> anyhow::Result<Child>,
    label: &str,
    events: &Events,
    mut on_line: impl FnMut(&str) + Send,
) -> anyhow::Result<Finished> {
    let (read, write) = nix::unistd::pipe().context("Failed to create a pipe")?;
    let write2 = write.try_clone().context("Failed to duplicate a pipe")?;
    let mut child = spawn(Stdio::from(write), Stdio::from(write2))?;
    // Our copies of the write end are gone with the Stdio values; EOF comes when every process
    // holding the pipe (for a chrooted command: its whole PID namespace) is gone.
    std::thread::scope(|s| {
        let reader = s.spawn(|| stream_lines(read, label, events, &mut on_line));
        let status = wait(&mut child);
        let tail = reader.join().unwrap_or_default();
        status.map(|status| Finished { status, tail })
    })
}

/// A host command that forks workers of its own (ansible-playbook, ansible-galaxy, pip), run as
/// the first process of a new PID namespace (`unshare --pid --fork --kill-child`): when it dies
/// — with imgforge, through `PR_SET_PDEATHSIG` — the kernel kills every process of that
/// namespace, its forked workers and the sandboxed commands they started included. Without
/// it, a `kill -9` of the build left ansible's worker (whose fork cleared the parent-death
/// signal) running the task in the image. Build it as `Command::new`, then spawn it with
/// [`spawn_host`].
pub fn host_command(program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    let mut cmd = std::process::Command::new(UNSHARE);
    cmd.args(["--pid", "--fork", "--kill-child=SIGKILL", "--"]).arg(program);
    cmd
}

/// util-linux's `unshare` (Essential on Debian); an absolute path, as the commands it wraps
/// often run with a cleared environment.
const UNSHARE: &str = "/usr/bin/unshare";

/// Spawns a host command (ansible-playbook, pip) with the given stdout/stderr and drops it, so
/// that our copies of the pipe's write end are closed (else the reader never sees EOF). It leads
/// its own process group (a stop request kills the group) and dies with imgforge
/// (`PR_SET_PDEATHSIG`): it works in our private mount namespace and would keep it, and the
/// image's loop devices, alive.
pub fn spawn_host(cmd: std::process::Command, stdout: Stdio, stderr: Stdio) -> std::io::Result<Child> {
    crate::host::command::spawn_tied(cmd, stdout, stderr, libc::SIGKILL)
}

fn stream_lines(read: OwnedFd, label: &str, events: &Events, on_line: &mut dyn FnMut(&str)) -> VecDeque<String> {
    let mut tail = VecDeque::with_capacity(TAIL_LINES);
    let mut reader = BufReader::new(std::fs::File::from(read));
    let mut buf = Vec::new();
    while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
        let line = String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']).to_string();
        events.output(label, &line);
        on_line(&line);
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
        buf.clear();
    }
    tail
}

fn wait(child: &mut Child) -> anyhow::Result<std::process::ExitStatus> {
    loop {
        if let Some(st) = child.try_wait().context("Failed to wait for the provisioner")? {
            return Ok(st);
        }
        if crate::host::signals::stop_requested() {
            // Killing the intermediate process takes PID 1 of the namespace with it
            // (PDEATHSIG), and with it every process the provisioner started.
            let _ = child.kill();
            // A host command leads its own process group (`spawn_host`): take its helpers too.
            // A chrooted command's child leads none, and this finds no group.
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
            let _ = child.wait();
            return Err(crate::host::signals::Interrupted.into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn a_refusal_points_at_the_sandbox() {
        let tail: VecDeque<String> = ["modprobe: ERROR: could not insert 'dummy': Operation not permitted".to_string()].into();
        let done = Finished { status: std::process::ExitStatus::from_raw(1 << 8), tail };
        let e = done.failure().to_string();
        assert!(e.starts_with("exit code 1; last lines:") && e.contains("build sandbox"), "{e}");
        let plain = Finished { status: std::process::ExitStatus::from_raw(2 << 8), tail: ["no such file".to_string()].into() };
        assert!(!plain.failure().to_string().contains("sandbox"));
    }
}
