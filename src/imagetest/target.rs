//! Where a suite's commands run: the mounted image through the build sandbox (offline), or a
//! booted copy over SSH with the boot's throwaway key. Also the one way a host tool is run and
//! its JUnit report read back.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use super::Case;
use crate::chroot::resolve::Root;

/// The `Host` alias a boot's ssh_config defines.
pub const SSH_ALIAS: &str = "imgforge-vm";

/// A booted copy's SSH login: user, port forwarded on 127.0.0.1, key, and an ssh_config that
/// says all of it for [`SSH_ALIAS`] (host keys not checked: the machine is new every time).
#[derive(Debug, Clone)]
pub struct SshLogin {
    /// Login user.
    pub user: String,
    /// Port on 127.0.0.1.
    pub port: u16,
    /// Private key (PEM, readable by OpenSSH and Ruby's net-ssh).
    pub key: PathBuf,
    /// ssh_config for [`SSH_ALIAS`].
    pub config: PathBuf,
}

impl SshLogin {
    /// The ssh_config text. Pure.
    pub fn config_text(&self) -> String {
        format!(
            "Host {SSH_ALIAS}\n  HostName 127.0.0.1\n  Port {}\n  User {}\n  IdentityFile {}\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  BatchMode yes\n  ConnectTimeout 10\n  ServerAliveInterval 5\n  ServerAliveCountMax 6\n",
            self.port,
            self.user,
            self.key.display()
        )
    }

    /// `ssh -F CONFIG imgforge-vm COMMAND`.
    pub fn command(&self, remote: &str) -> Command {
        let mut c = Command::new("ssh");
        c.arg("-F").arg(&self.config).arg(SSH_ALIAS).arg(remote);
        c
    }
}

/// Where a suite runs.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// The image mounted read-only, every command in the build sandbox.
    Chroot(&'a Root),
    /// A booted copy.
    Ssh(&'a SshLogin),
}

/// Runs a host tool that writes a JUnit report to `xml`, and reads its cases back (`clean`
/// drops what differs every run from case names). A tool that writes no report is one failed
/// case with its output's tail; a report without cases is one failed case too.
pub fn run_tool(
    suite: &str,
    tool: &str,
    mut cmd: Command,
    xml: &Path,
    clean: &dyn Fn(&str) -> String,
    hint: &str,
) -> anyhow::Result<Vec<Case>> {
    let start = Instant::now();
    // Tied to imgforge (and, built with `host_command`, alone in its PID namespace): a killed
    // build or test run leaves no test tool, and no command it started in the image, running.
    cmd.stdin(std::process::Stdio::null());
    let out = crate::chroot::run::spawn_host(cmd, std::process::Stdio::piped(), std::process::Stdio::piped())
        .and_then(std::process::Child::wait_with_output)
        .map_err(|e| anyhow::anyhow!("Failed to run {tool} ({hint}): {e}"))?;
    let failed =
        |why: String| Case { suite: suite.to_string(), name: tool.into(), seconds: start.elapsed().as_secs_f64(), failure: Some(why) };
    let Ok(text) = std::fs::read_to_string(xml) else {
        let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        return Ok(vec![failed(format!(
            "{tool} exited with {:?} and wrote no report ({hint}): {}",
            out.status.code(),
            super::tail(&said)
        ))]);
    };
    let mut cases = super::junit::read(suite, &text, clean).map_err(|e| anyhow::anyhow!("Failed to read {tool}'s JUnit report: {e:#}"))?;
    if cases.is_empty() {
        let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        cases.push(failed(format!("{tool} ran no test: {}", super::tail(&said))));
    }
    Ok(cases)
}
