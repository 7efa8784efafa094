//! Provisioners, run in order against the mounted image: shell (chrooted, own PID namespace),
//! file and overlay (copied by imgforge through the in-root resolver), and the
//! configuration-management tools: ansible (on the host, chroot connection), salt and puppet
//! (chrooted, their inputs copied to the build's tmpfs /run for the run only).
pub mod accounts;
pub mod ansible;
pub mod copy;
pub mod firstboot;
pub mod owner;
pub mod plan;
pub mod puppet;
pub mod salt;
pub mod shell;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;

use crate::chroot::resolve::Root;
use crate::progress::Events;
use plan::{NamedStep, Script, Step};

/// What a provisioner run is measured by, for the manifest.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct StepReport {
    /// Label.
    pub name: String,
    /// Type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Wall time.
    pub seconds: f64,
    /// What a configuration-management tool reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
}

/// Resource/task counts a configuration-management tool reported for one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Summary {
    /// Changed tasks/states/resources.
    pub changed: u64,
    /// Ones that were already right (ansible `ok` counts changed ones too; we report ok minus
    /// changed, as salt and puppet do).
    pub ok: u64,
    /// Failed ones.
    pub failed: u64,
}

/// The host paths a step reads (the residue scan looks for them in the image).
pub fn host_inputs(step: &Step) -> Vec<&Path> {
    match step {
        Step::Shell { script: Script::File(p), .. } => vec![p],
        Step::Shell { .. } | Step::Accounts(_) | Step::Firstboot(_) => vec![],
        Step::File { source, .. } | Step::Overlay { source, .. } => vec![source],
        Step::Ansible(a) => {
            let mut v: Vec<&Path> = vec![&a.playbook];
            v.extend(a.roles_path.iter().chain(&a.collections_path).chain(&a.requirements).map(PathBuf::as_path));
            v
        }
        Step::Salt(s) => {
            let house = match &s.install {
                plan::SaltInstall::Pip { wheelhouse: Some(w), .. } => Some(w),
                _ => None,
            };
            std::iter::once(&s.state_tree).chain(&s.pillar_tree).chain(house).map(PathBuf::as_path).collect()
        }
        Step::Puppet(p) => std::iter::once(&p.manifest).chain(&p.module_path).chain(&p.hiera_config).map(PathBuf::as_path).collect(),
    }
}

/// The image paths step `n` (1-based) puts there for its run only: removed by the step itself,
/// and again by the seal's `provisioner-files` should a failure have left them.
pub fn image_paths(step: &Step, n: usize) -> Vec<String> {
    match step {
        Step::Ansible(_) => vec![ansible::remote_tmp()],
        Step::Salt(s) => salt::image_paths(s, n),
        Step::Puppet(_) => vec![puppet::run_dir(n)],
        Step::Shell { .. } | Step::File { .. } | Step::Overlay { .. } | Step::Accounts(_) | Step::Firstboot(_) => vec![],
    }
}

/// Checks, before a build starts, that the host has what the steps run on the host.
pub fn preflight(steps: &[NamedStep]) -> anyhow::Result<()> {
    for (i, s) in steps.iter().enumerate() {
        if let Step::Ansible(_) = s.step {
            ansible::check_host().with_context(|| format!("provisioner {} \"{}\" (ansible)", i + 1, s.label))?;
        }
    }
    Ok(())
}

/// Runs every step in order; stops at the first failure, naming the step and its index.
/// `cache_dir` is imgforge's cache directory (salt's wheel cache is in it).
pub fn run_all(steps: &[NamedStep], root: &Root, cache_dir: &Path, events: &Events) -> anyhow::Result<Vec<StepReport>> {
    let total = steps.len();
    let mut reports = Vec::with_capacity(total);
    for (i, s) in steps.iter().enumerate() {
        crate::host::signals::check()?;
        let n = i + 1;
        events.step("provision", &format!("provisioner {n}/{total}: {} ({})", s.label, s.kind));
        let start = Instant::now();
        let summary = run_one(s, n, root, cache_dir, events)
            .with_context(|| format!("provisioner {n}/{total} \"{}\" ({}) failed", s.label, s.kind))?;
        if let Some(sum) = summary {
            events.output(&s.label, &format!("summary: {} changed, {} ok, {} failed", sum.changed, sum.ok, sum.failed));
        }
        reports.push(StepReport { name: s.label.clone(), kind: s.kind.to_string(), seconds: start.elapsed().as_secs_f64(), summary });
    }
    Ok(reports)
}

fn run_one(s: &NamedStep, n: usize, root: &Root, cache_dir: &Path, events: &Events) -> anyhow::Result<Option<Summary>> {
    match &s.step {
        Step::Ansible(p) => ansible::run(root, &s.label, p, events).map(Some),
        Step::Salt(p) => salt::run(root, n, &s.label, p, cache_dir, events).map(Some),
        Step::Puppet(p) => puppet::run(root, n, &s.label, p, events).map(Some),
        other => run_plain(other, n, &s.label, root, events).map(|()| None),
    }
}

fn run_plain(step: &Step, n: usize, label: &str, root: &Root, events: &Events) -> anyhow::Result<()> {
    match step {
        Step::Shell { script, env, shell } => shell::run(root, n, label, script, env, shell, events),
        Step::File { source, destination, into_dir, mode, owner } => {
            let ids = owner::resolve(root, owner.as_deref())?;
            let dest = copy::file_destination(root, source, destination, *into_dir)?;
            copy::copy_in(root, source, &dest, &copy::Attrs { mode: *mode, ids })
        }
        Step::Overlay { source, owner } => {
            let ids = owner::resolve(root, owner.as_deref())?;
            copy::copy_in(root, source, Path::new("/"), &copy::Attrs { mode: None, ids })
        }
        Step::Accounts(p) => accounts::run(root, label, p, events),
        Step::Firstboot(p) => firstboot::install(root, label, p, events),
        Step::Ansible(_) | Step::Salt(_) | Step::Puppet(_) => Ok(()),
    }
}
