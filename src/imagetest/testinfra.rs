//! `type = "testinfra"`: pytest-testinfra suites from the recipe's repository. Offline they run
//! through testinfra's chroot backend, whose `chroot` is `imgforge sandbox-exec` (as for
//! Ansible), so every command a test runs in the image runs in the build sandbox; booted, through
//! its ssh backend with the boot's ssh_config. pytest writes JUnit XML, read back into cases.

use std::path::Path;

use anyhow::{Context, anyhow};

use super::Case;
use super::target::{SSH_ALIAS, Target, run_tool};

/// The host's Python with testinfra (Debian's python3-testinfra or pytest-testinfra).
const PYTHON: &str = "/usr/bin/python3";

/// Runs the tests at `tests` (a file or directory) against `target`.
pub fn run(suite: &str, target: Target<'_>, tests: &Path) -> anyhow::Result<Vec<Case>> {
    let work = tempfile::Builder::new().prefix("imgforge-testinfra-").tempdir().context("Failed to create a temporary directory")?;
    let xml = work.path().join("junit.xml");
    let mut cmd = crate::chroot::run::host_command(PYTHON);
    cmd.args(["-m", "pytest", "-p", "no:cacheprovider", "-q", "--color=no"])
        .arg(format!("--junit-xml={}", xml.display()))
        .env_clear()
        .env("HOME", work.path())
        .env("LANG", "C.UTF-8")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(work.path());
    let mut _sandbox = None;
    let host = match target {
        Target::Chroot(root) => {
            let sandbox = crate::chroot::sandbox::lookup(root.path())
                .ok_or_else(|| anyhow!("no build sandbox for {}: refusing to run testinfra unconfined", root.path().display()))?;
            crate::chroot::sandbox::write_chroot_wrapper(&work.path().join("chroot"), "testinfra")?;
            cmd.arg("--connection=chroot")
                .arg(format!("--hosts={}", root.path().display()))
                .env("PATH", format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", work.path().display()))
                .env(crate::chroot::sandbox::ENV, sandbox.env_value());
            _sandbox = Some(sandbox);
            format!("chroot://{}", root.path().display())
        }
        Target::Ssh(login) => {
            cmd.arg(format!("--hosts=ssh://{SSH_ALIAS}"))
                .arg(format!("--ssh-config={}", login.config.display()))
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
            format!("ssh://{SSH_ALIAS}")
        }
    };
    cmd.arg(tests);
    let clean = |name: &str| clean_name(name, &host);
    run_tool(suite, "pytest", cmd, &xml, &clean, "install python3-testinfra: apt-get install python3-testinfra")
}

/// A pytest case name without the host id testinfra adds to its parameters
/// (`chroot:///tmp/imgforge-mount-…` differs every run). Pure.
fn clean_name(name: &str, host: &str) -> String {
    let bare = host.split_once("://").map_or(host, |(_, h)| h);
    name.replace(host, "").replace(bare, "").replace("[]", "").replace("[-", "[")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_names_lose_the_host() {
        let host = "chroot:///tmp/imgforge-mount-x";
        assert_eq!(clean_name("test_ssh[chroot:///tmp/imgforge-mount-x]", host), "test_ssh");
        assert_eq!(clean_name("test_pkg[chroot:///tmp/imgforge-mount-x-nginx]", host), "test_pkg[nginx]");
        assert_eq!(clean_name("test_pkg[ssh://imgforge-vm-nginx]", "ssh://imgforge-vm"), "test_pkg[nginx]");
    }
}
