//! `imgforge publish IMAGE [--region R] [--name TEMPLATE] [--dry-run] …`

use std::path::PathBuf;

use anyhow::Context;

use super::{Global, UsageError};
use crate::progress::Events;
use crate::publish::options::{self, AwsSettings};
use crate::publish::{Request, run as publish};

/// Arguments of `imgforge publish`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A raw disk, or a build manifest (`NAME.manifest.json`) naming one; the manifest gets the
    /// AMI ids.
    pub image: PathBuf,
    /// The registry whose record (named by the manifest) gets the AMI ids (default:
    /// $IMGFORGE_REGISTRY or /var/lib/imgforge/registry.db).
    #[arg(long)]
    pub registry: Option<String>,
    /// Take the `[aws]` settings from this recipe (flags override them).
    #[arg(long)]
    pub recipe: Option<PathBuf>,
    /// AWS region (default: the recipe's, else the AWS config chain's).
    #[arg(long)]
    pub region: Option<String>,
    /// AMI name template: {name} {version} {timestamp} {date} {commit} {arch}.
    #[arg(long)]
    pub name: Option<String>,
    /// Print every AWS call with its parameters and make none.
    #[arg(long)]
    pub dry_run: bool,
    /// Another endpoint for every AWS service (also AWS_ENDPOINT_URL).
    #[arg(long)]
    pub endpoint_url: Option<String>,
    /// Delta upload: the snapshot of the parent image…
    #[arg(long, requires = "parent_image")]
    pub parent_snapshot: Option<String>,
    /// …and the parent's raw disk: only blocks that differ from it are sent.
    #[arg(long, requires = "parent_snapshot")]
    pub parent_image: Option<PathBuf>,
    /// Replace an AMI of the same name that holds other bytes.
    #[arg(long)]
    pub force: bool,
    /// Concurrent block uploads (default 16).
    #[arg(long)]
    pub workers: Option<usize>,
    /// legacy-bios, uefi or uefi-preferred (default: from the image).
    #[arg(long)]
    pub boot_mode: Option<String>,
    /// x86_64 or arm64 (default: from the image).
    #[arg(long)]
    pub architecture: Option<String>,
    /// Encrypt the snapshot (with --kms-key-id, else the account's default key).
    #[arg(long)]
    pub encrypted: bool,
    /// KMS key for --encrypted.
    #[arg(long)]
    pub kms_key_id: Option<String>,
    /// Extra tag KEY=VALUE on the AMI and snapshot (repeat).
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    /// Copy the AMI to these regions (repeat or comma-separate).
    #[arg(long = "copy-to-region", value_delimiter = ',')]
    pub copy_to_regions: Vec<String>,
    /// Accounts (12 digits) or `all` allowed to launch it (repeat or comma-separate).
    #[arg(long = "launch-permission", value_delimiter = ',')]
    pub launch_permissions: Vec<String>,
    /// Root volume size in GiB (default: the image's size rounded up).
    #[arg(long)]
    pub volume_size: Option<u64>,
    /// Root volume type (default gp3).
    #[arg(long)]
    pub volume_type: Option<String>,
}

/// Recipe settings with the flags applied, checked.
fn settings(a: &Args) -> anyhow::Result<AwsSettings> {
    let mut s = match &a.recipe {
        Some(r) => crate::recipe::plan::load_plan(r, &Default::default())?.aws.unwrap_or_else(AwsSettings::defaults),
        None => AwsSettings::defaults(),
    };
    let u = |e: String| anyhow::Error::new(UsageError(e));
    if let Some(r) = &a.region {
        options::check_region(r).map_err(u)?;
        s.region = Some(r.clone());
    }
    if let Some(n) = &a.name {
        s.name_template = Some(n.clone());
    }
    if let Some(w) = a.workers {
        s.workers = w;
    }
    if let Some(b) = &a.boot_mode {
        s.boot_mode = Some(options::parse_boot_mode(b).map_err(u)?);
    }
    if let Some(x) = &a.architecture {
        s.architecture = Some(options::parse_arch(x).map_err(u)?);
    }
    if a.encrypted {
        s.encrypted = true;
    }
    if let Some(k) = &a.kms_key_id {
        options::check_kms_key(k).map_err(u)?;
        s.kms_key_id = Some(k.clone());
    }
    for t in &a.tags {
        let (k, v) = t.split_once('=').ok_or_else(|| u(format!("--tag `{t}` is not KEY=VALUE")))?;
        options::check_tag(k, v).map_err(u)?;
        s.tags.insert(k.to_string(), v.to_string());
    }
    for r in &a.copy_to_regions {
        options::check_region(r).map_err(u)?;
        s.copy_to_regions.push(r.clone());
    }
    for acct in &a.launch_permissions {
        options::check_account(acct).map_err(u)?;
        s.launch_permissions.push(acct.clone());
    }
    if let Some(v) = a.volume_size {
        s.volume_size = Some(v);
    }
    if let Some(t) = &a.volume_type {
        options::check_volume_type(t).map_err(u)?;
        s.volume_type = t.clone();
    }
    if let Some(e) = &a.endpoint_url
        && !(e.starts_with("http://") || e.starts_with("https://"))
    {
        return Err(u(format!("--endpoint-url `{e}` is not an http(s) URL")));
    }
    Ok(s)
}

/// Runs a publish.
pub fn run(g: &Global, a: &Args) -> anyhow::Result<()> {
    let settings = settings(a)?;
    crate::host::signals::install().context("Failed to install signal handlers")?;
    let events = Events::new(g.json);
    let given = a.parent_snapshot.clone().zip(a.parent_image.clone());
    let is_manifest = a.image.to_string_lossy().ends_with(".manifest.json");
    let region = settings.region.clone().or_else(super::build::env_region);
    let (found, ancestor_ami) = if is_manifest {
        super::image::parent_published(a.registry.as_deref(), &a.image, region.as_deref(), &events)?
    } else {
        (None, None)
    };
    let req = Request {
        image: a.image.clone(),
        settings,
        endpoint_url: a.endpoint_url.clone(),
        parent: given.or(found),
        ancestor_ami,
        force: a.force,
        dry_run: a.dry_run,
    };
    if let Some(rec) = publish(&req, &events)? {
        if is_manifest {
            super::image::record_published(a.registry.as_deref(), &req.image, &rec, &events)?;
        }
        report(g, &events, &rec)?;
    }
    Ok(())
}

/// Prints a record: one "region ami" line per region, or the JSON result event.
pub fn report(g: &Global, events: &Events, rec: &crate::publish::Record) -> anyhow::Result<()> {
    if g.json {
        events.result(super::events::Outcome::Publish(rec))?;
    } else {
        for (region, id) in &rec.images {
            println!("{region} {id} {}", rec.name);
        }
    }
    Ok(())
}
