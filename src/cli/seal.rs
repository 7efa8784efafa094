//! `imgforge seal IMAGE` and `imgforge seal --list`.

use std::path::PathBuf;

use anyhow::Context;

use super::{Global, UsageError};
use crate::progress::Events;
use crate::seal::catalog::{Op, listing};

/// Arguments of `imgforge seal`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A raw or qcow2 image, sealed in place.
    #[arg(required_unless_present = "list")]
    pub image: Option<PathBuf>,
    /// List the operations (name, default, description) and exit.
    #[arg(long)]
    pub list: bool,
    /// Print what would be removed or rewritten; mount read-only and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also run this operation (repeatable).
    #[arg(long, value_name = "OP")]
    pub enable: Vec<String>,
    /// Do not run this operation (repeatable).
    #[arg(long, value_name = "OP")]
    pub disable: Vec<String>,
    /// Take [seal] (operations and their options) from this recipe.
    #[arg(long)]
    pub recipe: Option<PathBuf>,
    /// Where to write the JSON report (default: IMAGE's name with .seal.json).
    #[arg(long)]
    pub report: Option<PathBuf>,
}

fn ops(names: &[String]) -> Result<Vec<Op>, UsageError> {
    names
        .iter()
        .map(|n| Op::parse(n).ok_or_else(|| UsageError(format!("unknown seal operation `{n}`; valid operations: {}", Op::names()))))
        .collect()
}

/// Runs `imgforge seal`.
pub fn run(g: &Global, a: &Args) -> anyhow::Result<()> {
    if a.list {
        print!("{}", listing());
        return Ok(());
    }
    let image = a.image.as_ref().ok_or_else(|| UsageError("IMAGE is required".into()))?;
    let base = match &a.recipe {
        Some(r) => crate::recipe::plan::load_plan(r, &crate::recipe::plan::Overrides::default())?.seal,
        None => crate::seal::SealPlan::default(),
    };
    let plan = base.with_changes(&ops(&a.enable)?, &ops(&a.disable)?);
    if !image.is_file() {
        return Err(UsageError(format!("{}: no such image file", image.display())).into());
    }
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!("imgforge seal needs root (loop devices, mounts): run it with sudo");
    }
    crate::host::namespace::enter_private_mount_namespace()?;
    crate::host::signals::install().context("Failed to install signal handlers")?;
    let events = Events::new(g.json);
    let cx = crate::seal::Context {
        build_hostname: nix::unistd::gethostname().ok().map(|h| h.to_string_lossy().into_owned()),
        dry_run: a.dry_run,
        ..Default::default()
    };
    let report = crate::pipeline::seal::seal_image(image, &plan, &cx, &events)?;
    print!("{}", report.text());
    if a.dry_run {
        return Ok(());
    }
    let path = a.report.clone().unwrap_or_else(|| {
        let stem = image.file_stem().map_or_else(|| "image".into(), |s| s.to_string_lossy().into_owned());
        image.with_file_name(format!("{stem}.seal.json"))
    });
    crate::manifest::write(&report, &path)?;
    report.check(&format!("full list in {}", path.display()))?;
    tracing::info!("sealed {} in {:.2} s; report {}", image.display(), report.seconds, path.display());
    Ok(())
}
