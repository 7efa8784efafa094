//! `imgforge sandbox-exec ROOT PROGRAM [ARGS…]` (hidden): what Ansible's chroot connection runs
//! instead of chroot(1), so that every module it starts runs in the build's sandbox.
//!
//! The build hands the sandbox over in `IMGFORGE_SANDBOX` (see `chroot::sandbox::ENV`). The
//! command gets this process's environment (Ansible's, which the chroot connection passes on),
//! stdin, stdout and stderr, and its exit status becomes ours, as with chroot(1).

use std::path::PathBuf;
use std::process::{ExitCode, Stdio};

use crate::chroot::cmd::ChrootCmd;
use crate::chroot::sandbox::{ENV, Handle};

/// Arguments of `imgforge sandbox-exec`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image root (a build's mount point).
    pub root: PathBuf,
    /// The program, as a path inside the image.
    pub program: String,
    /// Its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Runs it; exit code as chroot(1): the command's, or 125 when it could not be started.
pub fn run(a: &Args) -> ExitCode {
    match spawn(a) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("imgforge sandbox-exec: {}", super::render(&e));
            ExitCode::from(125)
        }
    }
}

fn spawn(a: &Args) -> anyhow::Result<u8> {
    let value = std::env::var(ENV).map_err(|_| anyhow::anyhow!("{ENV} is not set: this command is run by imgforge build only"))?;
    Handle::register_from_env(&a.root, &value)?;
    let mut cmd = ChrootCmd::new(&a.root, &a.program).args(a.args.iter().cloned()).inherit_stdin();
    for (k, v) in std::env::vars() {
        if k != ENV && k != "PATH" {
            cmd = cmd.env(&k, &v);
        }
    }
    let mut child = cmd.spawn(Stdio::inherit(), Stdio::inherit())?;
    let status = child.wait()?;
    use std::os::unix::process::ExitStatusExt;
    let code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Ok(u8::try_from(code).unwrap_or(255))
}
