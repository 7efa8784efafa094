//! Provisioners, run in order against the mounted image: shell (chrooted, own PID namespace),
//! file and overlay (copied by imgforge through the in-root resolver).
pub mod copy;
pub mod owner;
pub mod shell;

use std::path::Path;
use std::time::Instant;

use anyhow::Context;

use crate::chroot::resolve::Root;
use crate::progress::Events;
use crate::recipe::plan::{NamedStep, Step};

/// What a provisioner run is measured by, for the manifest.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepReport {
    /// Label.
    pub name: String,
    /// Type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Wall time.
    pub seconds: f64,
}

/// Runs every step in order; stops at the first failure, naming the step and its index.
pub fn run_all(steps: &[NamedStep], root: &Root, events: &Events) -> anyhow::Result<Vec<StepReport>> {
    let total = steps.len();
    let mut reports = Vec::with_capacity(total);
    for (i, s) in steps.iter().enumerate() {
        crate::host::signals::check()?;
        let n = i + 1;
        events.step("provision", &format!("provisioner {n}/{total}: {} ({})", s.label, s.kind));
        let start = Instant::now();
        run_one(s, n, root, events).with_context(|| format!("provisioner {n}/{total} \"{}\" ({}) failed", s.label, s.kind))?;
        reports.push(StepReport { name: s.label.clone(), kind: s.kind.to_string(), seconds: start.elapsed().as_secs_f64() });
    }
    Ok(reports)
}

fn run_one(s: &NamedStep, n: usize, root: &Root, events: &Events) -> anyhow::Result<()> {
    match &s.step {
        Step::Shell { script, env, shell } => shell::run(root, n, &s.label, script, env, shell, events),
        Step::File { source, destination, into_dir, mode, owner } => {
            let ids = owner::resolve(root, owner.as_deref())?;
            let dest = copy::file_destination(root, source, destination, *into_dir)?;
            copy::copy_in(root, source, &dest, &copy::Attrs { mode: *mode, ids })
        }
        Step::Overlay { source, owner } => {
            let ids = owner::resolve(root, owner.as_deref())?;
            copy::copy_in(root, source, Path::new("/"), &copy::Attrs { mode: None, ids })
        }
    }
}
