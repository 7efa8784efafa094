//! `type = "serverspec"`: RSpec/ServerSpec specs from the recipe's repository, run with the
//! host's Debian packages (ruby-serverspec, ruby-rspec-junit-formatter; nothing goes into the
//! image). imgforge supplies the `spec_helper` the specs require (on the load path before
//! theirs), so specs written for live servers run unchanged:
//! - offline: specinfra's `exec` backend with its shell set to a script that runs `/bin/sh` in
//!   the image through `imgforge sandbox-exec` — every command a resource runs (`test -f`,
//!   `dpkg-query`, `systemctl is-enabled`) runs in the build sandbox, reading the image;
//! - booted: the `ssh` backend as root on the forwarded port with the boot's throwaway key.
//!
//! rspec_junit_formatter writes JUnit XML, read back into cases.

use std::path::Path;

use anyhow::{Context, anyhow};

use super::Case;
use super::target::{Target, run_tool};

/// Debian's rspec.
const RSPEC: &str = "/usr/bin/rspec";

/// The PATH the image's commands get (specinfra's `set :path`).
const IMAGE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs the specs at `specs` (a directory of `*_spec.rb`, or one file) against `target`.
pub fn run(suite: &str, target: Target<'_>, specs: &Path) -> anyhow::Result<Vec<Case>> {
    let work = tempfile::Builder::new().prefix("imgforge-serverspec-").tempdir().context("Failed to create a temporary directory")?;
    let helper_dir = work.path().join("helper");
    std::fs::create_dir(&helper_dir).with_context(|| format!("Failed to create {}", helper_dir.display()))?;
    let xml = work.path().join("junit.xml");
    // rspec runs in the specs' directory on a relative path: JUnit class names come from the
    // spec files' paths (`image_spec`), the same every run.
    let (cwd, arg) = match (specs.is_dir(), specs.parent(), specs.file_name()) {
        (true, _, _) => (specs.to_path_buf(), std::ffi::OsString::from(".")),
        (false, Some(parent), Some(file)) => (parent.to_path_buf(), file.to_os_string()),
        _ => anyhow::bail!("{}: not a spec directory or file", specs.display()),
    };
    let mut cmd = crate::chroot::run::host_command(RSPEC);
    cmd.env_clear().env("HOME", work.path()).env("LANG", "C.UTF-8").env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").current_dir(&cwd);
    let mut _sandbox = None;
    let helper = match target {
        Target::Chroot(root) => {
            let sandbox = crate::chroot::sandbox::lookup(root.path())
                .ok_or_else(|| anyhow!("no build sandbox for {}: refusing to run serverspec unconfined", root.path().display()))?;
            let chroot = work.path().join("chroot");
            crate::chroot::sandbox::write_chroot_wrapper(&chroot, "serverspec")?;
            let shell = work.path().join("image-sh");
            crate::chroot::sandbox::write_private_script(&shell, &shell_script(&chroot, root.path()))?;
            cmd.env(crate::chroot::sandbox::ENV, sandbox.env_value());
            _sandbox = Some(sandbox);
            offline_helper(&shell)
        }
        Target::Ssh(login) => ssh_helper(login.port, &login.user, &login.key),
    };
    std::fs::write(helper_dir.join("spec_helper.rb"), helper).context("Failed to write the spec helper")?;
    cmd.arg("--no-color")
        .arg("-I")
        .arg(&helper_dir)
        .args(["--require", "spec_helper", "--format", "RspecJunitFormatter", "--out"])
        .arg(&xml)
        .args(["--format", "progress"])
        .arg(arg);
    run_tool(suite, "rspec", cmd, &xml, &|n| n.to_string(), "install ruby-serverspec and ruby-rspec-junit-formatter")
}

/// The shell specinfra runs each command with (`SHELL -c COMMAND`): `/bin/sh` in the image,
/// in the sandbox. Pure.
fn shell_script(chroot: &Path, root: &Path) -> String {
    format!(
        "#!/bin/sh\n# specinfra's shell for imgforge: /bin/sh in the image, in the build sandbox\nexec '{}' '{}' /bin/sh \"$@\"\n",
        chroot.display(),
        root.display()
    )
}

/// spec_helper.rb for the offline stage. Pure.
fn offline_helper(shell: &Path) -> String {
    format!(
        "# imgforge: the image, read-only, through the build sandbox\nrequire 'serverspec'\nset :backend, :exec\nset :shell, {:?}\nset :path, {IMAGE_PATH:?}\n",
        shell.display().to_string()
    )
}

/// spec_helper.rb for the boot stage. Pure.
fn ssh_helper(port: u16, user: &str, key: &Path) -> String {
    format!(
        "# imgforge: the booted copy, over SSH with the boot's throwaway key\nrequire 'serverspec'\nrequire 'net/ssh'\nset :backend, :ssh\nset :host, '127.0.0.1'\nset :disable_sudo, true\nset :path, {IMAGE_PATH:?}\nset :ssh_options, {{ user: {user:?}, port: {port}, keys: [{:?}], keys_only: true, verify_host_key: :never, user_known_hosts_file: '/dev/null', non_interactive: true, timeout: 30 }}\n",
        key.display().to_string()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_name_the_backend_and_its_access() {
        let h = offline_helper(Path::new("/tmp/w/image-sh"));
        assert!(h.contains("set :backend, :exec\nset :shell, \"/tmp/w/image-sh\"\n"), "{h}");
        let h = ssh_helper(2222, "root", Path::new("/tmp/w/id"));
        assert!(h.contains("set :backend, :ssh") && h.contains("port: 2222") && h.contains("keys: [\"/tmp/w/id\"]"), "{h}");
        let s = shell_script(Path::new("/tmp/w/chroot"), Path::new("/tmp/m"));
        assert!(s.ends_with("exec '/tmp/w/chroot' '/tmp/m' /bin/sh \"$@\"\n"), "{s}");
    }
}
