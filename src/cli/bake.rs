//! `imgforge bake [RECIPES…|DIR]`: builds a plan on this host, `--jobs` at once.

use std::path::PathBuf;

use anyhow::Context;

use super::Global;
use crate::bakery::bake::{self, Result_};
use crate::bakery::plan::Status;

/// Arguments of `imgforge bake`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Recipes, or directories searched for recipes (default: the current directory).
    pub recipes: Vec<PathBuf>,
    /// Set a recipe variable in every recipe that declares it (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = crate::recipe::vars::parse_assignment)]
    pub var: Vec<(String, String)>,
    /// Builds at once (default: from the cores and the free disk space).
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
    /// The registry every build records in and finds parents in (default: $IMGFORGE_REGISTRY
    /// or /var/lib/imgforge/registry.db).
    #[arg(long)]
    pub registry: Option<String>,
    /// Download cache (default: $IMGFORGE_CACHE_DIR or /var/cache/imgforge).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Do not run the recipes' [[test]] suites.
    #[arg(long)]
    pub no_test: bool,
    /// Publish every image built with its recipe's [aws] settings.
    #[arg(long)]
    pub publish: bool,
    /// Another endpoint for every AWS service (also AWS_ENDPOINT_URL).
    #[arg(long)]
    pub endpoint_url: Option<String>,
    /// Write the builds' JUnit report here (one case per image).
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Write a Java-properties file of every image (`<NAME>_IMAGE_VERSION`, `<NAME>_AMI_ID_<REGION>`…).
    #[arg(long)]
    pub properties: Option<PathBuf>,
}

/// Runs `imgforge bake`.
pub fn run(g: &Global, a: &Args) -> anyhow::Result<()> {
    let (plan, builds) = super::plan::load(&a.recipes, &a.var, a.registry.as_deref(), crate::bakery::plan::MAX_MATRIX)?;
    let needs: Vec<&crate::recipe::BuildPlan> =
        plan.nodes.iter().filter(|n| n.status == Status::NeedsBuild).filter_map(|n| builds.get(&n.id)).collect();
    if !needs.is_empty() && !nix::unistd::geteuid().is_root() {
        anyhow::bail!("imgforge bake builds images, which needs root (loop devices, mounts, chroot): run it with sudo");
    }
    let jobs = match a.jobs {
        Some(0) => return Err(super::UsageError("--jobs 0: at least 1".into()).into()),
        Some(j) => j,
        None => default_jobs(&needs),
    };
    let mut build_args: Vec<String> = Vec::new();
    let mut flag = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            build_args.extend([k.to_string(), v]);
        }
    };
    flag("--registry", a.registry.clone());
    flag("--cache-dir", a.cache_dir.as_ref().map(|p| p.display().to_string()));
    flag("--endpoint-url", a.endpoint_url.clone());
    if a.no_test {
        build_args.push("--no-test".into());
    }
    if a.publish {
        build_args.push("--publish".into());
    }
    let events = crate::progress::Events::new(g.json);
    events.step("bake", &format!("{} image(s), {} to build, {jobs} at once", plan.nodes.len(), needs.len()));
    let done = bake::run(&plan, &builds, &bake::Options { jobs, build_args }, &events)?;
    if let Some(path) = &a.junit {
        let xml = bake::junit(&done)?;
        std::fs::write(path, xml).with_context(|| format!("Failed to write {}", path.display()))?;
    }
    if let Some(path) = &a.properties {
        let store = crate::registry::open(a.registry.as_deref())?;
        let mut props = std::collections::BTreeMap::new();
        let list = |r: Result_| done.iter().filter(|d| d.result == r).map(|d| d.node.as_str()).collect::<Vec<_>>().join(",");
        props.insert("IMAGES".to_string(), done.iter().map(|d| d.node.as_str()).collect::<Vec<_>>().join(","));
        props.insert("BUILT".to_string(), list(Result_::Built));
        props.insert("FAILED".to_string(), list(Result_::Failed));
        for d in &done {
            if let Some(r) = d.record.as_deref().map(|id| store.get(id)).transpose()?.flatten() {
                props.extend(crate::bakery::properties::of_record(&format!("{}_", crate::bakery::properties::key_part(&d.node)), &r));
            }
        }
        crate::bakery::properties::write(path, &props)?;
    }
    if g.json {
        events.result(super::events::Outcome::Bake(&super::events::Baked { nodes: done.clone() }))?;
    } else {
        print!("{}", bake::table(&done));
    }
    let failed: Vec<&str> = done.iter().filter(|d| d.result == Result_::Failed).map(|d| d.node.as_str()).collect();
    if !failed.is_empty() {
        let skipped = done.iter().filter(|d| d.result == Result_::Skipped).count();
        anyhow::bail!(
            "{} of {} build(s) failed: {}{}",
            failed.len(),
            done.len(),
            failed.join(", "),
            if skipped > 0 { format!(" ({skipped} image(s) on them not started)") } else { String::new() }
        );
    }
    Ok(())
}

/// Builds at once: one per core, fewer when the free space of the output directories would not
/// hold them all (each needs its disk size, 4 GiB when the recipe does not say, twice: the
/// working disk and the outputs).
fn default_jobs(needs: &[&crate::recipe::BuildPlan]) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let Some(first) = needs.first() else { return cores };
    let per = needs.iter().map(|p| p.disk_size.unwrap_or(4 << 30)).max().unwrap_or(4 << 30).saturating_mul(2);
    let dir = if first.output_dir.exists() { first.output_dir.clone() } else { first.recipe_dir.clone() };
    let free = nix::sys::statvfs::statvfs(&dir).map_or(u64::MAX, |s| s.blocks_available().saturating_mul(s.fragment_size()));
    usize::try_from(free / per.max(1)).unwrap_or(usize::MAX).clamp(1, cores)
}
