//! `imgforge image list|show|find`: the registry from the command line.
//!
//! `list` prints every match (exit 0, even for none); `find` is the lookup a pipeline runs to
//! get one image: exit 1 when nothing matches, 2 when several do without `--latest`.

use anyhow::anyhow;

use super::{Global, UsageError};
use crate::registry::query::PackageReq;
use crate::registry::{Query, Record};

/// Arguments of `imgforge image`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The registry: a SQLite file, `sqlite:PATH` or `postgres://…` (default:
    /// $IMGFORGE_REGISTRY or /var/lib/imgforge/registry.db).
    #[arg(long, global = true)]
    pub registry: Option<String>,
    #[command(subcommand)]
    command: Sub,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// List the images matching the filters, newest first.
    List(Filters),
    /// Show one image: ID, NAME (newest) or NAME@VERSION, with its packages.
    Show {
        /// ID, NAME or NAME@VERSION.
        image: String,
    },
    /// Find exactly one image (exit 1: none; exit 2: several, unless --latest).
    Find(FindArgs),
    /// Print the image's software bill of materials (its recorded package list) as JSON.
    Sbom {
        /// ID, NAME or NAME@VERSION.
        image: String,
        /// cyclonedx (1.5) or spdx (2.3).
        #[arg(long, value_enum, default_value = "cyclonedx")]
        format: crate::registry::sbom::Format,
    },
}

/// Filters shared by `list` and `find`.
#[derive(Debug, clap::Args)]
struct Filters {
    /// Image name.
    #[arg(long)]
    name: Option<String>,
    /// Version, exact or with `x` components (`1.x`).
    #[arg(long)]
    version: Option<String>,
    /// candidate, tested, released or revoked.
    #[arg(long)]
    status: Option<String>,
    /// KEY=VALUE (repeatable: all must hold).
    #[arg(long, value_name = "KEY=VALUE")]
    label: Vec<String>,
    /// A glob one of the image's kernels matches (`6.1.*`).
    #[arg(long)]
    kernel: Option<String>,
    /// An installed package, optionally with a version bound: `openssl<3.0.15` (repeatable).
    #[arg(long)]
    package: Vec<String>,
    /// Only images built (at any depth) on this record.
    #[arg(long, value_name = "ID")]
    descendant_of: Option<String>,
    /// Only the record this channel points at (needs --name).
    #[arg(long, requires = "name")]
    channel: Option<String>,
}

#[derive(Debug, clap::Args)]
struct FindArgs {
    #[command(flatten)]
    filters: Filters,
    /// Take the newest match.
    #[arg(long)]
    latest: bool,
    /// Print only this: the record `id`, or the `ami` id in --region.
    #[arg(long, value_name = "id|ami")]
    output: Option<String>,
    /// The region for --output ami.
    #[arg(long)]
    region: Option<String>,
}

impl Filters {
    fn query(&self) -> anyhow::Result<Query> {
        let labels = self
            .label
            .iter()
            .map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or_else(|| UsageError(format!("--label {l}: write KEY=VALUE")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(s) = &self.status
            && !crate::registry::record::STATUSES.contains(&s.as_str())
        {
            return Err(UsageError(format!("--status {s}: one of {}", crate::registry::record::STATUSES.join(", "))).into());
        }
        let packages = self
            .package
            .iter()
            .map(|p| PackageReq::parse(p).map_err(|e| UsageError(format!("--package {p}: {e}"))))
            .collect::<Result<_, _>>()?;
        Ok(Query {
            name: self.name.clone(),
            version: self.version.clone(),
            status: self.status.clone(),
            labels,
            kernel: self.kernel.clone(),
            packages,
            descendant_of: self.descendant_of.clone(),
            channel: self.channel.clone(),
        })
    }
}

/// Runs `imgforge image`.
pub fn run(g: &Global, a: &Args) -> anyhow::Result<()> {
    let store = crate::registry::open(a.registry.as_deref())?;
    match &a.command {
        Sub::List(f) => {
            let found = crate::registry::search(&*store, &f.query()?)?;
            print_records(g, &found)
        }
        Sub::Show { image } => {
            let r = crate::registry::resolve(&*store, image)?.ok_or_else(|| anyhow!("no image {image} in the registry"))?;
            if g.json {
                print!("{}", crate::registry::json::record(&r)?);
            } else {
                print!("{}", describe(&r));
            }
            Ok(())
        }
        Sub::Sbom { image, format } => {
            let r = crate::registry::resolve(&*store, image)?.ok_or_else(|| anyhow!("no image {image} in the registry"))?;
            println!("{}", serde_json::to_string_pretty(&crate::registry::sbom::document(&r, *format))?);
            Ok(())
        }
        Sub::Find(f) => {
            let found = crate::registry::search(&*store, &f.filters.query()?)?;
            let one = match (found.as_slice(), f.latest) {
                ([], _) => anyhow::bail!("no image matches"),
                ([one], _) | ([one, ..], true) => one,
                (many, false) => {
                    print_records(g, many)?;
                    return Err(UsageError(format!("{} images match: add --latest, or narrow the query", many.len())).into());
                }
            };
            match (f.output.as_deref(), &f.region) {
                (Some("id"), _) => println!("{}", one.id),
                (Some("ami"), Some(region)) => {
                    let ami =
                        one.amis.get(region).ok_or_else(|| anyhow!("{} {} ({}) has no AMI in {region}", one.name, one.version, one.id))?;
                    println!("{ami}");
                }
                (Some("ami"), None) => return Err(UsageError("--output ami needs --region".into()).into()),
                (Some(other), _) => return Err(UsageError(format!("--output {other}: id or ami")).into()),
                (None, _) => print_records(g, std::slice::from_ref(one))?,
            }
            Ok(())
        }
    }
}

/// After a publish: adds the AMI ids and the snapshot id to the registry record the manifest
/// names (a manifest of an older build, or of a build recorded in another registry, gets a
/// notice).
pub fn record_published(
    registry: Option<&str>,
    manifest: &std::path::Path,
    rec: &crate::manifest::AwsRecord,
    events: &crate::progress::Events,
) -> anyhow::Result<()> {
    let Ok(m) = crate::manifest::read(manifest) else { return Ok(()) };
    let Some(id) = m.record else { return Ok(()) };
    events.step("record-publish", "recording the AMIs in the image registry record");
    let mut store = crate::registry::open(registry)?;
    let published = crate::registry::Published {
        amis: rec.images.clone(),
        snapshots: std::collections::BTreeMap::from([(rec.region.clone(), rec.snapshot_id.clone())]),
        ..crate::registry::Published::default()
    };
    if store.add_published(&id, &published)? {
        events.output("registry", &format!("recorded the AMI ids in {id}"));
    } else {
        events.notice(&format!("record {id} (from {}) is not in this registry: its AMI ids are not recorded there", manifest.display()));
    }
    Ok(())
}

/// After `[output] upload`: the S3 URLs of the outputs into the build's record (a layered
/// build on another host fetches its parent's raw from there).
pub fn record_uploaded(
    registry: Option<&str>,
    manifest: &std::path::Path,
    uploaded: &[crate::s3::Uploaded],
    events: &crate::progress::Events,
) -> anyhow::Result<()> {
    let Ok(m) = crate::manifest::read(manifest) else { return Ok(()) };
    let Some(id) = m.record else { return Ok(()) };
    let abs = |p: &str| std::path::absolute(p).map_or_else(|_| p.to_string(), |a| a.display().to_string());
    let urls = uploaded.iter().map(|u| (abs(&u.path), u.url.clone())).collect();
    let mut store = crate::registry::open(registry)?;
    if store.add_published(&id, &crate::registry::Published { urls, ..crate::registry::Published::default() })? {
        events.output("registry", &format!("recorded the S3 URLs of the outputs in {id}"));
    }
    Ok(())
}

/// A delta base (snapshot id, parent raw) and the parent's AMI id.
type ParentPublished = (Option<(String, std::path::PathBuf)>, Option<String>);

/// For a layered image's manifest, from the registry: its parent's snapshot in `region` with
/// the parent's raw (the base of a delta upload: only the blocks that differ are sent), and the
/// parent's AMI id there. Nothing when the image is not layered, the parent was not published
/// in that region, or its raw is gone (then with a notice: the upload is a full one).
pub fn parent_published(
    registry: Option<&str>,
    manifest: &std::path::Path,
    region: Option<&str>,
    events: &crate::progress::Events,
) -> anyhow::Result<ParentPublished> {
    let Ok(m) = crate::manifest::read(manifest) else { return Ok((None, None)) };
    let (Some(parent), Some(region)) = (m.source.parent, region) else { return Ok((None, None)) };
    let store = crate::registry::open(registry)?;
    let Some(r) = store.get(&parent.record)? else {
        events.notice(&format!("the parent record {} is not in this registry: no delta upload", parent.record));
        return Ok((None, None));
    };
    let ami = r.amis.get(region).cloned();
    let Some(snap) = r.snapshots.get(region) else { return Ok((None, ami)) };
    match r.outputs.iter().find(|o| o.format == "raw" && o.in_place()) {
        Some(raw) => {
            events.output("publish", &format!("delta upload over {} {}'s snapshot {snap}", r.name, r.version));
            Ok((Some((snap.clone(), std::path::PathBuf::from(&raw.path))), ami))
        }
        None => {
            events.notice(&format!("the raw of {} {} ({}) is gone: a full upload instead of a delta over {snap}", r.name, r.version, r.id));
            Ok((None, ami))
        }
    }
}

fn print_records(g: &Global, records: &[Record]) -> anyhow::Result<()> {
    if g.json {
        print!("{}", crate::registry::json::records(records)?);
        return Ok(());
    }
    for r in records {
        let labels: Vec<String> = r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("{}  {} {}  {}  {}  {}", r.id, r.name, r.version, r.status, r.build_date, labels.join(","));
    }
    Ok(())
}

fn describe(r: &Record) -> String {
    let mut s = format!("{} {} ({})\n  status: {}\n  built: {} by {}\n", r.name, r.version, r.id, r.status, r.build_date, r.owner);
    if let Some(c) = &r.git_commit {
        s.push_str(&format!("  commit: {c}\n"));
    }
    match (&r.parent.record, &r.parent.url) {
        (Some(p), _) => s.push_str(&format!("  parent: record {p} ({})\n", r.parent.digest)),
        (None, Some(u)) => s.push_str(&format!("  upstream: {u} ({})\n", r.parent.digest)),
        _ => {}
    }
    for (k, v) in &r.labels {
        s.push_str(&format!("  label: {k}={v}\n"));
    }
    if let Some(a) = &r.architecture {
        s.push_str(&format!("  architecture: {a}\n"));
    }
    s.push_str(&format!("  kernels: {}\n  packages: {}\n", r.kernels.join(", "), r.packages.len()));
    for o in &r.outputs {
        s.push_str(&format!("  output: {} {} ({} bytes, sha256 {})\n", o.format, o.path, o.size, o.sha256));
    }
    for (region, ami) in &r.amis {
        s.push_str(&format!("  ami: {region} {ami}\n"));
    }
    s
}
