//! `imgforge test IMAGE|RECORD`: runs a recipe's `[[test]]` suites again on an image the registry
//! knows, writes the JUnit report and records the verdict.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::Global;
use crate::imagetest::plan::Stage;
use crate::progress::Events;

/// Arguments of `imgforge test`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A record id, an image name (its newest record) or NAME@VERSION.
    pub image: String,
    /// The recipe whose [[test]] suites to run (default: the recipe the record was built from).
    #[arg(long)]
    pub recipe: Option<PathBuf>,
    #[command(flatten)]
    pub vars: super::RecipeVars,
    /// Which suites: `offline` (against the read-only disk) or `boot` (a throwaway boot, over
    /// SSH); repeat it for both (the default).
    #[arg(long, value_enum)]
    pub stage: Vec<Stage>,
    /// Where to write the JUnit report (default: beside the raw, NAME.tests.xml).
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// The registry (a SQLite file, `sqlite:PATH` or `postgres://…`; default: $IMGFORGE_REGISTRY
    /// or /var/lib/imgforge/registry.db).
    #[arg(long)]
    pub registry: Option<String>,
}

/// Runs the tests.
pub fn run(g: &Global, a: &Args) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("imgforge test needs root (loop devices, a read-only mount, the build sandbox): run it with sudo");
    }
    crate::host::namespace::enter_private_mount_namespace()?;
    crate::host::signals::install().context("Failed to install signal handlers")?;
    let events = Events::new(g.json);
    let mut store = crate::registry::open(a.registry.as_deref()).context("Failed to open the image registry")?;
    let Some(record) = crate::registry::resolve(&*store, &a.image)? else {
        return Err(anyhow::Error::new(super::UsageError(format!(
            "the registry has no image {:?} (a record id, a name or NAME@VERSION)",
            a.image
        ))));
    };
    let recipe = a.recipe.clone().unwrap_or_else(|| PathBuf::from(&record.recipe));
    // A [matrix] recipe: the image of the record's name.
    let mut overrides = a.vars.overrides(None);
    if overrides.node.is_none() && record.recipe == recipe.display().to_string() {
        overrides.node = Some(record.name.clone());
    }
    let plan = crate::recipe::plan::load_plan(&recipe, &overrides)
        .with_context(|| format!("Failed to load the recipe of {} {} ({})", record.name, record.version, recipe.display()))?;
    if plan.tests.is_empty() {
        return Err(anyhow::Error::new(super::UsageError(format!("{} has no [[test]] suites", recipe.display()))));
    }
    let Some(raw) = record.outputs.iter().find(|o| o.format == "raw") else {
        bail!("{} {} ({}) has no raw output to test", record.name, record.version, record.id);
    };
    if raw.path.starts_with("s3://") || !raw.in_place() {
        bail!("{} {} ({}): its raw output {} is gone or was replaced since the build", record.name, record.version, record.id, raw.path);
    }
    let path = Path::new(&raw.path);
    let sha256 =
        crate::io::hash::digest_file(path, crate::io::hash::Algo::Sha256, None).with_context(|| format!("Failed to hash {}", raw.path))?;
    if sha256 != raw.sha256 {
        bail!(
            "{}: its SHA-256 is {sha256}, not the {} the registry recorded for {}: the image changed since the build",
            raw.path,
            raw.sha256,
            record.id
        );
    }
    let subject =
        crate::imagetest::Subject { name: record.name.clone(), version: record.version.clone(), record: Some(record.id.clone()), sha256 };
    let dir = path.parent().unwrap_or(Path::new("."));
    let junit = a.junit.clone().unwrap_or_else(|| crate::imagetest::default_junit(dir, &record.name));
    let stages = if a.stage.is_empty() { vec![Stage::Offline, Stage::Boot] } else { a.stage.clone() };
    if !plan.tests.iter().any(|t| stages.contains(&t.stage)) {
        let names: Vec<&str> = stages.iter().map(|s| s.as_str()).collect();
        return Err(anyhow::Error::new(super::UsageError(format!(
            "{} has no [[test]] suites at stage {}",
            recipe.display(),
            names.join(" or ")
        ))));
    }
    let run = crate::imagetest::run_and_report(&subject, path, plan.root.as_ref(), &plan.tests, &stages, &junit, &events)?;
    crate::imagetest::record(&mut *store, &record.id, &run)?;
    println!("tested: {} {} {}", record.name, record.version, record.id);
    Ok(())
}
