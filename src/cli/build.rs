//! `imgforge build RECIPE`

use std::path::PathBuf;

use anyhow::Context;

use super::Global;
use crate::pipeline::build::{OnError, Options};
use crate::progress::Events;
use crate::recipe::plan::load_plan;

/// Arguments of `imgforge build`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The recipe (TOML).
    pub recipe: PathBuf,
    #[command(flatten)]
    pub vars: super::RecipeVars,
    /// Output directory (overrides [output] dir).
    #[arg(long, short = 'o')]
    pub output_dir: Option<PathBuf>,
    /// What to do with the working disk when the build fails.
    #[arg(long, value_enum, default_value = "cleanup")]
    pub on_error: OnError,
    /// Download cache (default: $IMGFORGE_CACHE_DIR or /var/cache/imgforge).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// After the build, publish the raw to AWS with the recipe's [aws] settings (see `publish`).
    #[arg(long)]
    pub publish: bool,
    /// Another endpoint for every AWS service, for --publish and [output] upload (also
    /// AWS_ENDPOINT_URL).
    #[arg(long)]
    pub endpoint_url: Option<String>,
    /// Provision, then print what sealing would remove or rewrite, and stop: nothing is sealed
    /// and no output is written.
    #[arg(long)]
    pub seal_dry_run: bool,
    /// The registry to record the build in (and to find a `[source] parent` in): a SQLite
    /// file, `sqlite:PATH` or `postgres://…` (default: $IMGFORGE_REGISTRY or
    /// /var/lib/imgforge/registry.db).
    #[arg(long)]
    pub registry: Option<String>,
    /// Build even when the registry has a record with this build's layer key and its outputs
    /// (a new record; history is never overwritten).
    #[arg(long)]
    pub rebuild: bool,
    /// Do not run the recipe's [[test]] suites after the build (the record stays a candidate).
    #[arg(long)]
    pub no_test: bool,
    /// Where to write the tests' JUnit report (default: OUTPUT_DIR/NAME.tests.xml).
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// When another build holds this layer (same layer key, a shared registry), exit 3 naming
    /// it instead of waiting for its record.
    #[arg(long)]
    pub no_wait: bool,
    /// Seconds between the heartbeats of this build's lease on its layer key; a builder silent
    /// for three periods loses it to the next build of that layer.
    #[arg(long, value_name = "SECS", default_value_t = 30, env = "IMGFORGE_LEASE_PERIOD", value_parser = clap::value_parser!(u64).range(1..))]
    pub lease_period: u64,
    /// Write a Java-properties file for CI (`IMAGE_NAME`, `IMAGE_VERSION`, `RECORD_ID`,
    /// `LAYER_KEY`, `MANIFEST`, `RAW`, `AMI_ID_<REGION>`…), after the publish and upload.
    #[arg(long)]
    pub properties: Option<PathBuf>,
}

/// Runs a build.
pub fn run(g: &Global, a: &Args) -> anyhow::Result<()> {
    let plan = load_plan(&a.recipe, &a.vars.overrides(a.output_dir.clone()))?;
    if a.publish && plan.aws.is_none() {
        return Err(anyhow::Error::new(super::UsageError(format!(
            "{}: --publish needs an [aws] section in the recipe (at least `region`, or an empty [aws] to use the AWS config's)",
            a.recipe.display()
        ))));
    }
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!("imgforge build needs root (loop devices, mounts, chroot): run it with sudo");
    }
    // Before any thread exists: unshare(CLONE_NEWNS) applies to the calling thread only.
    crate::host::namespace::enter_private_mount_namespace()?;
    crate::host::signals::install().context("Failed to install signal handlers")?;
    let events = Events::new(g.json);
    let opts = Options {
        on_error: a.on_error,
        cache_dir: a.cache_dir.clone().unwrap_or_else(crate::source::fetch::default_cache_dir),
        seal_dry_run: a.seal_dry_run,
        registry: a.registry.clone(),
        rebuild: a.rebuild,
        endpoint_url: a.endpoint_url.clone(),
        no_test: a.no_test,
        junit: a.junit.clone(),
        lease_period: std::time::Duration::from_secs(a.lease_period),
        no_wait: a.no_wait,
    };
    let manifest = match crate::pipeline::build::run(&plan, &opts, &events)? {
        crate::pipeline::build::Outcome::Built(m) => m,
        crate::pipeline::build::Outcome::SealPlan(report) => {
            print!("{}", report.text());
            return Ok(());
        }
        crate::pipeline::build::Outcome::UpToDate(r) => {
            if g.json {
                events.result(super::events::Outcome::UpToDate(&r))?;
            } else {
                println!("up to date: {} {} {}", r.name, r.version, r.id);
            }
            // Publishing an image already built: its own manifest (publish reuses an AMI that
            // already holds it).
            if let (true, Some(settings)) = (a.publish, plan.aws.clone()) {
                publish(g, a, &events, std::path::PathBuf::from(&r.manifest), settings)?;
            }
            return write_properties(a, Some(&r.id));
        }
    };
    for o in &manifest.outputs {
        tracing::info!("built {} ({} bytes, sha256 {})", o.path, o.size, o.sha256);
    }
    events.result(super::events::Outcome::Build(&manifest))?;
    if let (true, Some(settings)) = (a.publish, plan.aws.clone()) {
        publish(g, a, &events, plan.output_dir.join(format!("{}.manifest.json", plan.name)), settings)?;
    }
    // After the publish, so the manifest uploaded holds the AMI ids too.
    if let Some(dest) = &plan.upload {
        let mut files: Vec<PathBuf> = manifest.outputs.iter().map(|o| PathBuf::from(&o.path)).collect();
        // The seal report and the manifest travel with the image.
        files.push(plan.output_dir.join(format!("{}.seal.json", plan.name)));
        files.push(plan.output_dir.join(format!("{}.manifest.json", plan.name)));
        let uploaded = crate::s3::upload(dest, &files, a.endpoint_url.as_deref())?;
        for u in &uploaded {
            tracing::info!("uploaded {} to {}", u.path, u.url);
        }
        super::image::record_uploaded(
            a.registry.as_deref(),
            &plan.output_dir.join(format!("{}.manifest.json", plan.name)),
            &uploaded,
            &events,
        )?;
    }
    write_properties(a, manifest.record.as_deref())
}

/// `--properties`: the record as CI reads it (read back from the registry, so the AMIs a
/// publish added are there).
fn write_properties(a: &Args, record: Option<&str>) -> anyhow::Result<()> {
    let (Some(path), Some(id)) = (&a.properties, record) else { return Ok(()) };
    let store = crate::registry::open(a.registry.as_deref())?;
    let r = store.get(id)?.with_context(|| format!("record {id} is not in the registry"))?;
    crate::bakery::properties::write(path, &crate::bakery::properties::of_record("", &r))
}

/// `--publish`: the build's manifest to AMIs, the ids into the registry record.
fn publish(g: &Global, a: &Args, events: &Events, manifest: PathBuf, settings: crate::publish::options::AwsSettings) -> anyhow::Result<()> {
    let region = settings.region.clone().or_else(env_region);
    let (parent, ancestor_ami) = super::image::parent_published(a.registry.as_deref(), &manifest, region.as_deref(), events)?;
    let req = crate::publish::Request {
        image: manifest,
        settings,
        endpoint_url: a.endpoint_url.clone(),
        parent,
        ancestor_ami,
        force: false,
        dry_run: false,
    };
    if let Some(rec) = crate::publish::run(&req, events)? {
        super::image::record_published(a.registry.as_deref(), &req.image, &rec, events)?;
        super::publish::report(g, events, &rec)?;
    }
    Ok(())
}

/// The region the AWS SDK would take from the environment.
pub fn env_region() -> Option<String> {
    ["AWS_REGION", "AWS_DEFAULT_REGION"].iter().find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
}
