//! The shell provisioner: a script run chrooted in the image, in its own PID namespace, its
//! output streamed line by line with the provisioner's label.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;

use super::plan::Script;
use crate::chroot::cmd::ChrootCmd;
use crate::chroot::resolve::Root;
use crate::chroot::run::{RUN_DIR, run_streaming};
use crate::progress::Events;

/// Runs one shell step; `n` is its 1-based index.
pub fn run(
    root: &Root,
    n: usize,
    label: &str,
    script: &Script,
    env: &BTreeMap<String, String>,
    shell: &str,
    events: &Events,
) -> anyhow::Result<()> {
    let in_image = format!("{RUN_DIR}/provision-{n}");
    let (body, direct) = match script {
        Script::Inline(s) => (s.as_bytes().to_vec(), false),
        Script::File(p) => {
            let b = std::fs::read(p).with_context(|| format!("Failed to read script {}", p.display()))?;
            let direct = b.starts_with(b"#!");
            (b, direct)
        }
    };
    root.write(Path::new(&in_image), &body, 0o700)?;
    let mut cmd = if direct {
        ChrootCmd::new(root.path(), &in_image)
    } else {
        let c = ChrootCmd::new(root.path(), shell);
        if is_posix_shell(shell) { c.arg("-e").arg(&in_image) } else { c.arg(&in_image) }
    };
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    let result = run_streaming(&cmd, label, events);
    let _ = root.remove_file(Path::new(&in_image));
    result
}

fn is_posix_shell(shell: &str) -> bool {
    matches!(shell.rsplit('/').next(), Some("sh" | "bash" | "dash" | "ash" | "zsh" | "ksh"))
}
