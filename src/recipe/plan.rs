//! The validated build plan: every path resolved, every value checked, before any work starts.
//! `imgforge validate` stops here; `imgforge build` goes on from here.

use std::path::{Path, PathBuf};

use crate::export::format::Format;
use crate::export::options::ExportOptions;
use sha2::{Digest, Sha256};
use toml::Spanned;

use super::error::RecipeError;
use super::model::{AnsibleStep, FileStep, OverlayStep, PuppetStep, Recipe, SaltStep, ShellStep};
use super::parse::{Src, recipe_dir, step};
use super::size::parse_size;
use crate::image::mount::RootChoice;
use crate::provision::plan::{AnsiblePlan, NamedStep, PuppetPlan, SaltInstall, SaltPlan, Script, Step};
use crate::source::plan::{Location, PinnedDigest, SourcePlan};

/// Everything a build needs, validated.
#[derive(Debug, Clone)]
pub struct BuildPlan {
    /// Image name.
    pub name: String,
    /// Version; `None` means "ask git at build time".
    pub version: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// Registry labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// `[image] owner`.
    pub owner: Option<String>,
    /// The recipe file.
    pub recipe_path: PathBuf,
    /// Its directory (relative paths resolve here).
    pub recipe_dir: PathBuf,
    /// SHA-256 of the recipe text.
    pub recipe_digest: String,
    /// SHA-256 of what the recipe says (comments, layout, key order and `[output] dir` left
    /// out): the recipe's part of the layer key.
    pub recipe_meaning: String,
    /// What the build starts from.
    pub source: Origin,
    /// Grow the disk to this many bytes.
    pub disk_size: Option<u64>,
    /// Which filesystem is the root, when the recipe says (`[disk] root` or `root_partition`).
    pub root: Option<RootChoice>,
    /// Provisioners in order.
    pub steps: Vec<NamedStep>,
    /// Output directory.
    pub output_dir: PathBuf,
    /// Output formats (always starting with raw).
    pub formats: Vec<Format>,
    /// Options for the formats.
    pub export: ExportOptions,
    /// `[output] upload`.
    pub upload: Option<crate::s3::S3Url>,
    /// `[aws]`, checked (used by `build --publish`).
    pub aws: Option<crate::publish::options::AwsSettings>,
    /// Sealing.
    pub seal: crate::seal::SealPlan,
    /// Image tests run after the outputs are written (`[[test]]`).
    pub tests: Vec<crate::imagetest::plan::Suite>,
    /// The variables the recipe used, with their values (`[vars]`, `[matrix]`, `--var`).
    pub vars: std::collections::BTreeMap<String, String>,
    /// The `[matrix]` entry this image is (0-based).
    pub entry: Option<usize>,
}

/// What a build starts from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// An upstream image, verified.
    Upstream(SourcePlan),
    /// The newest registry record matching the query (`[source] parent`).
    Parent(crate::registry::Query),
}

/// Options from the command line that override the recipe.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--output-dir`.
    pub output_dir: Option<PathBuf>,
    /// `--var NAME=VALUE`, and whether one the recipe does not declare is left alone.
    pub vars: super::expand::Inputs,
    /// `--node NAME`: the image of a `[matrix]` recipe to take.
    pub node: Option<String>,
}

/// Loads, parses and validates a recipe file that defines one image (or, with a `[matrix]`,
/// the one `overrides.node` names).
pub fn load_plan(path: &Path, overrides: &Overrides) -> Result<BuildPlan, RecipeError> {
    let mut plans = load_plans(path, overrides)?;
    let names = || plans.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ");
    match (&overrides.node, plans.len()) {
        (Some(n), _) => match plans.iter().position(|p| &p.name == n) {
            Some(i) => Ok(plans.swap_remove(i)),
            None => {
                Err(RecipeError::new(path, None, format!("--node {n}: the recipe defines no image of that name (it defines {})", names()))
                    .hint("`imgforge plan RECIPE` lists the images a recipe defines"))
            }
        },
        (None, 1) => Ok(plans.swap_remove(0)),
        (None, n) => Err(RecipeError::new(path, None, format!("the recipe's [matrix] defines {n} images ({}): choose one", names()))
            .hint("pass --node NAME, or build them all with `imgforge bake RECIPE`")),
    }
}

/// Loads, parses and validates every image a recipe file defines (one per `[matrix]` entry).
pub fn load_plans(path: &Path, overrides: &Overrides) -> Result<Vec<BuildPlan>, RecipeError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        RecipeError::new(path, None, format!("cannot read the recipe: {e}"))
            .hint("check the path; recipes are TOML files such as recipes/base.toml")
    })?;
    let src = Src { path, text: &text };
    let env = |k: &str| std::env::var(k).ok();
    let variants = super::expand::variants(src, &recipe_dir(path), &overrides.vars, &env)?;
    let mut plans: Vec<BuildPlan> = Vec::with_capacity(variants.len());
    for v in variants {
        let vsrc = Src { path, text: &v.text };
        let recipe = super::parse::parse(vsrc)?;
        let mut p = plan(vsrc, recipe, overrides)?;
        p.vars = v.vars.into_iter().map(|(k, (value, _))| (k, value)).collect();
        p.entry = v.entry;
        if let Some(twin) = plans.iter().find(|q| q.name == p.name) {
            return Err(RecipeError::new(
                path,
                None,
                format!(
                    "matrix entries {} and {} both make an image named {}",
                    twin.entry.map_or(0, |i| i + 1),
                    p.entry.map_or(0, |i| i + 1),
                    p.name
                ),
            )
            .hint("put a matrix variable in [image] name (name = \"app-${node}\")"));
        }
        plans.push(p);
    }
    Ok(plans)
}

/// Validates a parsed recipe into a plan.
pub fn plan(src: Src<'_>, r: Recipe, overrides: &Overrides) -> Result<BuildPlan, RecipeError> {
    let dir = recipe_dir(src.path);
    let name = check_name(src, &r.image.name)?;
    let version = r.image.version.as_ref().map(|v| check_version(src, v)).transpose()?;
    let source = origin(src, &dir, &r.source)?;
    let disk_size = r.disk.size.as_ref().map(|s| disk_size(src, s)).transpose()?;
    let mut steps: Vec<NamedStep> = Vec::new();
    // `[system]` and `[[user]]` first: the recipe's provisioners can use the users.
    if let Some(a) = super::accounts::plan(src, &dir, r.system.as_ref(), &r.user)? {
        steps.push(NamedStep { label: "accounts".into(), kind: "accounts", step: Step::Accounts(a) });
    }
    for (i, t) in r.provision.iter().enumerate() {
        steps.push(named_step(src, &dir, t, i, &name)?);
    }
    // `[[firstboot]]` last: nothing of the build runs them.
    if let Some(f) = super::accounts::firstboot(src, &dir, &r.firstboot)? {
        steps.push(NamedStep { label: "firstboot".into(), kind: "firstboot", step: Step::Firstboot(f) });
    }
    let tests = super::test::plan(src, &dir, &r.test)?;
    let output_dir = match (&overrides.output_dir, &r.output.dir) {
        (Some(d), _) => d.clone(),
        (None, Some(d)) => dir.join(d.get_ref()),
        (None, None) => dir.join("out"),
    };
    // `[gc]` is the janitor's (`imgforge gc --config RECIPE` reads it); checked here so that
    // `imgforge validate` and every build catch its mistakes.
    if let Some(g) = &r.gc {
        crate::gc::rules::Rules::from_section(g.get_ref())
            .map_err(|e| src.at(g.span(), format!("[gc] {e}")).hint("see `imgforge gc --help` and the README's Janitor section"))?;
    }
    Ok(BuildPlan {
        name,
        version,
        description: r.image.description,
        labels: r.image.labels.as_ref().map(|l| check_labels(src, l)).transpose()?.unwrap_or_default(),
        owner: r.image.owner,
        recipe_path: src.path.to_path_buf(),
        recipe_dir: dir,
        recipe_digest: hex::encode(Sha256::digest(src.text.as_bytes())),
        recipe_meaning: meaning_digest(src.text),
        source,
        disk_size,
        root: root_choice(src, &r.disk)?,
        steps,
        output_dir,
        formats: formats(src, &r.output.formats)?,
        export: export_options(src, &r.output)?,
        upload: r.output.upload.as_ref().map(|u| crate::s3::parse_url(u.get_ref()).map_err(|e| src.at(u.span(), e))).transpose()?,
        aws: r.aws.as_ref().map(|a| super::aws::plan(src, a)).transpose()?,

        seal: {
            let mut seal = super::seal::seal_plan(src, &r.seal)?;
            // `[system] hostname`: the name the image boots with, written by the seal.
            if let Some(h) = r.system.as_ref().and_then(|s| s.hostname.as_ref()) {
                let v = h.get_ref();
                let ok = !v.is_empty() && v.len() <= 63 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
                if !ok {
                    return Err(src.at(h.span(), format!("[system] hostname `{v}` is not a valid host name")));
                }
                if r.seal.hostname.name.is_some() {
                    return Err(src.at(h.span(), "[system] hostname and [seal.hostname] name both say the name: keep one"));
                }
                seal.hostname = v.clone();
            }
            seal
        },
        tests,
        vars: std::collections::BTreeMap::new(),
        entry: None,
    })
}

/// SHA-256 of the recipe as data (canonical JSON of the parsed TOML), without `[output] dir`,
/// `[[test]]`, `[aws.promote]` and `[gc]`:
/// where the outputs go does not change what they are. Pure.
fn meaning_digest(text: &str) -> String {
    let mut t: toml::Table = toml::from_str(text).unwrap_or_default();
    if let Some(toml::Value::Table(o)) = t.get_mut("output") {
        o.remove("dir");
    }
    // Tests judge the image; they do not change it (`imgforge test` reruns them). Neither do
    // what a promotion does on AWS or the janitor's rules.
    t.remove("test");
    t.remove("gc");
    // Variables are in the values they were substituted into.
    t.remove("vars");
    t.remove("matrix");
    if let Some(toml::Value::Table(a)) = t.get_mut("aws") {
        a.remove("promote");
    }
    let mut out = String::new();
    canonical(&toml::Value::Table(t), &mut out);
    hex::encode(Sha256::digest(out.as_bytes()))
}

/// A TOML value as text with its tables' keys sorted (whatever order the parser keeps). Pure.
fn canonical(v: &toml::Value, out: &mut String) {
    match v {
        toml::Value::Table(t) => {
            let mut keys: Vec<&String> = t.keys().collect();
            keys.sort();
            out.push('{');
            for k in keys {
                out.push_str(&format!("{k:?}:"));
                canonical(&t[k.as_str()], out);
                out.push(',');
            }
            out.push('}');
        }
        toml::Value::Array(a) => {
            out.push('[');
            for x in a {
                canonical(x, out);
                out.push(',');
            }
            out.push(']');
        }
        toml::Value::String(s) => out.push_str(&format!("{s:?}")),
        other => out.push_str(&other.to_string()),
    }
}

/// Label keys are `[a-z0-9_.-]`, start with a letter, at most 63 characters; values are one line.
fn check_labels(
    src: Src<'_>,
    labels: &Spanned<std::collections::BTreeMap<String, String>>,
) -> Result<std::collections::BTreeMap<String, String>, RecipeError> {
    for (k, v) in labels.get_ref() {
        let key_ok = k.len() <= 63
            && k.starts_with(|c: char| c.is_ascii_lowercase())
            && k.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'));
        if !key_ok {
            return Err(src.at(
                labels.span(),
                format!("[image] labels: key {k:?} must be lowercase letters, digits, '_', '.', '-', starting with a letter (at most 63)"),
            ));
        }
        if v.contains('\n') || v.len() > 256 {
            return Err(src.at(labels.span(), format!("[image] labels: the value of {k} must be one line of at most 256 characters")));
        }
    }
    Ok(labels.get_ref().clone())
}

fn check_name(src: Src<'_>, name: &Spanned<String>) -> Result<String, RecipeError> {
    let n = name.get_ref();
    let ok = !n.is_empty()
        && n.len() <= 64
        && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !n.starts_with('-');
    if ok {
        return Ok(n.clone());
    }
    Err(src
        .at(name.span(), format!("image name `{n}` is not allowed"))
        .hint("use 1-64 characters from a-z, 0-9 and '-', not starting with '-'"))
}

fn check_version(src: Src<'_>, v: &Spanned<String>) -> Result<String, RecipeError> {
    let s = v.get_ref();
    let ok = !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._+-~".contains(&b));
    if ok {
        return Ok(s.clone());
    }
    Err(src
        .at(v.span(), format!("version `{s}` is not allowed"))
        .hint("use letters, digits and . _ + - ~ (e.g. \"1.0.0\"), or leave it out to use git describe"))
}

/// Resolves `file://`, `http(s)://` or a recipe-relative path; local files must exist.
fn location(src: Src<'_>, dir: &Path, v: &Spanned<String>, what: &str) -> Result<Location, RecipeError> {
    let s = v.get_ref();
    let loc = if let Some(p) = s.strip_prefix("file://") {
        Location::Path(PathBuf::from(p))
    } else if s.starts_with("http://") || s.starts_with("https://") {
        return Ok(Location::Url(s.clone()));
    } else if let Some((scheme, _)) = s.split_once("://") {
        return Err(src
            .at(v.span(), format!("{what}: unsupported scheme `{scheme}://`"))
            .hint("use file://, http://, https:// or a path relative to the recipe"));
    } else {
        Location::Path(dir.join(s))
    };
    if let Location::Path(p) = &loc
        && !p.is_file()
    {
        return Err(src.at(v.span(), format!("{what}: file not found: {s} (looked at {})", p.display())).hint(
            "fix the path (relative paths start at the recipe's directory); for the local upstream images run scripts/make-upstream first",
        ));
    }
    Ok(loc)
}

fn origin(src: Src<'_>, dir: &Path, s: &Spanned<super::model::Source>) -> Result<Origin, RecipeError> {
    let (span, s) = (s.span(), s.get_ref());
    match (&s.url, &s.parent) {
        (Some(url), None) => Ok(Origin::Upstream(source_plan(src, dir, s, url)?)),
        (None, Some(p)) => {
            let extra = [&s.checksums, &s.sha256, &s.sha512, &s.signature, &s.signing_key];
            if extra.iter().any(|e| e.is_some()) {
                return Err(src
                    .at(p.span(), "[source] parent comes with its verification: the parent's recorded sha256")
                    .hint("remove checksums, sha256, sha512, signature and signing_key (they verify an upstream url)"));
            }
            parent_query(src, p).map(Origin::Parent)
        }
        (Some(_), Some(p)) => Err(src
            .at(p.span(), "[source] has both url and parent")
            .hint("start from an upstream image (url = …) or from a registered image (parent = { name = … }), not both")),
        (None, None) => Err(src
            .at(span, "[source] names no image")
            .hint("add url = \"…\" with checksums = \"SHA256SUMS\", or parent = { name = \"base\", status = \"tested\" }")),
    }
}

/// `[source] parent = { … }` as a registry query.
fn parent_query(src: Src<'_>, p: &Spanned<super::model::ParentQuery>) -> Result<crate::registry::Query, RecipeError> {
    let q = p.get_ref();
    if q.name.is_empty() {
        return Err(src.at(p.span(), "[source] parent needs a name").hint("parent = { name = \"base\" }"));
    }
    if let Some(s) = &q.status
        && !crate::registry::record::STATUSES.contains(&s.as_str())
    {
        return Err(src
            .at(p.span(), format!("[source] parent: unknown status {s:?}"))
            .hint(format!("use one of {}", crate::registry::record::STATUSES.join(", "))));
    }
    let packages = q
        .packages
        .iter()
        .map(|r| crate::registry::query::PackageReq::parse(r).map_err(|e| src.at(p.span(), format!("[source] parent: {e}"))))
        .collect::<Result<_, _>>()?;
    Ok(crate::registry::Query {
        name: Some(q.name.clone()),
        version: q.version.clone(),
        status: q.status.clone(),
        labels: q.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        kernel: q.kernel.clone(),
        packages,
        descendant_of: None,
        channel: q.channel.clone(),
    })
}

fn source_plan(src: Src<'_>, dir: &Path, s: &super::model::Source, url: &Spanned<String>) -> Result<SourcePlan, RecipeError> {
    let image = location(src, dir, url, "source.url")?;
    let checksums = s.checksums.as_ref().map(|c| location(src, dir, c, "source.checksums")).transpose()?;
    let pinned = pinned_digest(src, s)?;
    if checksums.is_none() && pinned.is_none() {
        return Err(src
            .at(url.span(), "the source image is not verified")
            .hint("add `checksums = \"SHA256SUMS\"` (or sha256 = \"<hex>\"): imgforge never builds from an unverified image"));
    }
    let signature = s.signature.as_ref().map(|c| location(src, dir, c, "source.signature")).transpose()?;
    let signing_key = match (&s.signature, &s.signing_key, &s.checksums) {
        (Some(sig), None, _) => {
            return Err(src
                .at(sig.span(), "source.signature needs source.signing_key")
                .hint("add signing_key = \"keys/vendor.asc\" (the vendor's public key, pinned in your repository)"));
        }
        (None, Some(k), None) => {
            return Err(src
                .at(k.span(), "source.signing_key without source.checksums: there is nothing for it to check")
                .hint("add checksums = \"SHA256SUMS\" (with signature = \"SHA256SUMS.gpg\", or a clearsigned checksums file such as Fedora's CHECKSUM)"));
        }
        (Some(sig), Some(_), None) => {
            return Err(src
                .at(sig.span(), "source.signature is checked over the checksums file, but there is no source.checksums")
                .hint("add checksums = \"SHA256SUMS\""));
        }
        // With a signature: a detached signature over the checksums file; without one: the
        // checksums file itself must be clearsigned (Fedora's CHECKSUM).
        (_, Some(k), Some(_)) => match location(src, dir, k, "source.signing_key")? {
            Location::Path(p) => Some(p),
            Location::Url(_) => {
                return Err(src
                    .at(k.span(), "source.signing_key must be a local file")
                    .hint("pin the vendor key in your repository; a key fetched with the image proves nothing"));
            }
        },
        (None, None, _) => None,
    };
    Ok(SourcePlan { image, checksums, pinned, signature, signing_key })
}

fn pinned_digest(src: Src<'_>, s: &super::model::Source) -> Result<Option<PinnedDigest>, RecipeError> {
    let given: Vec<(&'static str, usize, &Spanned<String>)> =
        [("sha256", 64, &s.sha256), ("sha512", 128, &s.sha512)].into_iter().filter_map(|(a, n, v)| v.as_ref().map(|v| (a, n, v))).collect();
    match given.as_slice() {
        [] => Ok(None),
        [(algo, len, v)] => {
            let hex = v.get_ref().trim().to_ascii_lowercase();
            if hex.len() != *len || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(src
                    .at(v.span(), format!("source.{algo} must be {len} hex digits"))
                    .hint("copy the digest from the vendor's checksums file"));
            }
            Ok(Some(PinnedDigest { algo, hex }))
        }
        [_, (_, _, v), ..] => Err(src.at(v.span(), "give only one of sha256 and sha512")),
    }
}

fn root_choice(src: Src<'_>, d: &super::model::Disk) -> Result<Option<RootChoice>, RecipeError> {
    let hint = "write one of root = { lvm = \"vg/root\" }, { label = \"root\" }, { uuid = \"…\" } or { partition = 2 }";
    let spec = match (&d.root, &d.root_partition) {
        (None, None) => return Ok(None),
        (None, Some(n)) => return Ok(Some(RootChoice::Partition(*n.get_ref()))),
        (Some(r), Some(_)) => return Err(src.at(r.span(), "give [disk] root or root_partition, not both").hint(hint)),
        (Some(r), None) => r,
    };
    let r = spec.get_ref();
    let mut given = Vec::new();
    if let Some(v) = &r.lvm {
        let ok = v.split_once('/').is_some_and(|(vg, lv)| !vg.is_empty() && !lv.is_empty() && !lv.contains('/'));
        if !ok {
            return Err(src.at(spec.span(), format!("[disk] root: lvm = \"{v}\" is not \"VG/LV\"")).hint(hint));
        }
        given.push(RootChoice::Volume(v.clone()));
    }
    if let Some(v) = &r.label {
        given.push(RootChoice::Label(v.clone()));
    }
    if let Some(v) = &r.uuid {
        given.push(RootChoice::Uuid(v.clone()));
    }
    if let Some(n) = r.partition {
        given.push(RootChoice::Partition(n));
    }
    match given.len() {
        1 => Ok(given.pop()),
        0 => Err(src.at(spec.span(), "[disk] root names nothing").hint(hint)),
        _ => Err(src.at(spec.span(), "[disk] root: give exactly one of lvm, label, uuid, partition").hint(hint)),
    }
}

fn disk_size(src: Src<'_>, s: &Spanned<String>) -> Result<u64, RecipeError> {
    let n = parse_size(s.get_ref())
        .map_err(|m| src.at(s.span(), format!("disk.size: {m}")).hint("write a size such as \"4GiB\", \"8G\" or \"512MiB\""))?;
    if n == 0 || n % (1 << 20) != 0 {
        return Err(src
            .at(s.span(), format!("disk.size: {n} bytes is not a whole number of MiB"))
            .hint("use a size such as \"4GiB\" or \"4100MiB\""));
    }
    Ok(n)
}

fn formats(src: Src<'_>, list: &[Spanned<String>]) -> Result<Vec<Format>, RecipeError> {
    let mut out = vec![Format::Raw];
    for f in list {
        match Format::parse(f.get_ref()) {
            Some(fmt) if !out.contains(&fmt) => out.push(fmt),
            Some(_) => {}
            None => {
                return Err(src
                    .at(f.span(), format!("output format `{}` is not supported", f.get_ref()))
                    .hint(format!("supported formats: {}", crate::export::format::names())));
            }
        }
    }
    Ok(out)
}

fn export_options(src: Src<'_>, o: &crate::recipe::model::Output) -> Result<ExportOptions, RecipeError> {
    use crate::export::options::{check_machine, parse_adapter, parse_digest, parse_firmware, parse_hw_version};
    let hint = "see [output.vmdk] / [output.ova] in the README";
    fn field<T, U>(
        src: Src<'_>,
        v: &Option<Spanned<T>>,
        default: U,
        parse: impl Fn(&T) -> Result<U, String>,
        hint: &str,
    ) -> Result<U, RecipeError> {
        match v {
            None => Ok(default),
            Some(s) => parse(s.get_ref()).map_err(|e| src.at(s.span(), e).hint(hint)),
        }
    }
    let d = ExportOptions::default();
    let cpus = o.ova.cpus.as_ref().map_or(d.cpus, |c| *c.get_ref());
    let memory_mib = o.ova.memory_mib.as_ref().map_or(d.memory_mib, |m| *m.get_ref());
    if let Err(e) = check_machine(cpus, memory_mib) {
        let span = o.ova.cpus.as_ref().map(|c| c.span()).or(o.ova.memory_mib.as_ref().map(|m| m.span())).unwrap_or(0..0);
        return Err(src.at(span, e).hint(hint));
    }
    Ok(ExportOptions {
        adapter: field(src, &o.vmdk.adapter, d.adapter, |s| parse_adapter(s), hint)?,
        hardware_version: field(src, &o.ova.hardware_version, d.hardware_version.clone(), |s| parse_hw_version(s), hint)?,
        cpus,
        memory_mib,
        digest: field(src, &o.ova.digest, d.digest, |s| parse_digest(s), hint)?,
        firmware: field(src, &o.ova.firmware, None, |s| parse_firmware(s), hint)?,
        qcow2_compress: o.qcow2.compress.unwrap_or(false),
    })
}

fn named_step(src: Src<'_>, dir: &Path, t: &Spanned<toml::Table>, i: usize, image: &str) -> Result<NamedStep, RecipeError> {
    let kind = t.get_ref().get("type").and_then(|v| v.as_str()).unwrap_or("");
    let at = |m: String| {
        let hint = if m.contains("not found") {
            "paths in [[provision]] are relative to the recipe's directory; fix the path or create the file"
        } else {
            "see the README's recipe reference for this provisioner type"
        };
        src.at(t.span(), format!("[[provision]] #{}: {m}", i + 1)).hint(hint)
    };
    let (label, kind, step) = match kind {
        "shell" => {
            let s: ShellStep = step(src, t, i)?;
            (s.name.clone(), "shell", shell_step(dir, s).map_err(at)?)
        }
        "file" => {
            let s: FileStep = step(src, t, i)?;
            (s.name.clone(), "file", file_step(dir, s).map_err(at)?)
        }
        "overlay" => {
            let s: OverlayStep = step(src, t, i)?;
            (s.name.clone(), "overlay", overlay_step(dir, s).map_err(at)?)
        }
        "ansible" => {
            let s: AnsibleStep = step(src, t, i)?;
            (s.name.clone(), "ansible", ansible_step(dir, s).map_err(at)?)
        }
        "salt" => {
            let s: SaltStep = step(src, t, i)?;
            (s.name.clone(), "salt", salt_step(dir, s).map_err(at)?)
        }
        "puppet" => {
            let s: PuppetStep = step(src, t, i)?;
            (s.name.clone(), "puppet", puppet_step(dir, s, image).map_err(at)?)
        }
        "" => return Err(at("missing `type`".into()).hint(TYPES_HINT)),
        other => return Err(at(format!("unknown provisioner type `{other}`")).hint(TYPES_HINT)),
    };
    let label = label.unwrap_or_else(|| format!("{kind} #{}", i + 1));
    Ok(NamedStep { label, kind, step })
}

const TYPES_HINT: &str = "use type = \"shell\", \"file\", \"overlay\", \"ansible\", \"salt\" or \"puppet\"";

fn existing(dir: &Path, rel: &str, what: &str) -> Result<PathBuf, String> {
    let p = dir.join(rel);
    if p.exists() { Ok(p) } else { Err(format!("{what} not found: {rel} (looked at {})", p.display())) }
}

fn shell_step(dir: &Path, s: ShellStep) -> Result<Step, String> {
    let script = match (s.inline, s.script) {
        (Some(lines), None) => Script::Inline(lines.join("\n")),
        (None, Some(f)) => Script::File(existing(dir, &f, "script")?),
        _ => return Err("give exactly one of `inline` and `script`".into()),
    };
    let shell = s.shell.unwrap_or_else(|| "/bin/sh".into());
    if !shell.starts_with('/') {
        return Err(format!("shell `{shell}` must be an absolute path inside the image"));
    }
    Ok(Step::Shell { script, env: s.env, shell })
}

fn file_step(dir: &Path, s: FileStep) -> Result<Step, String> {
    let source = existing(dir, &s.source, "source")?;
    if !s.destination.starts_with('/') {
        return Err(format!("destination `{}` must be an absolute path inside the image", s.destination));
    }
    let mode = s.mode.as_deref().map(parse_mode).transpose()?;
    check_owner(s.owner.as_deref())?;
    Ok(Step::File { source, into_dir: s.destination.ends_with('/'), destination: PathBuf::from(s.destination), mode, owner: s.owner })
}

fn overlay_step(dir: &Path, s: OverlayStep) -> Result<Step, String> {
    let source = existing(dir, &s.source, "overlay tree")?;
    if !source.is_dir() {
        return Err(format!("overlay source {} is not a directory", source.display()));
    }
    check_owner(s.owner.as_deref())?;
    Ok(Step::Overlay { source, owner: s.owner })
}

fn ansible_step(dir: &Path, s: AnsibleStep) -> Result<Step, String> {
    let playbook = existing(dir, &s.playbook, "playbook")?;
    let dirs = |list: &[String], what: &str| list.iter().map(|d| existing_dir(dir, d, what)).collect::<Result<Vec<_>, _>>();
    let roles_path = dirs(&s.roles_path, "roles_path directory")?;
    let collections_path = dirs(&s.collections_path, "collections_path directory")?;
    let requirements = s.requirements.as_deref().map(|r| existing(dir, r, "requirements")).transpose()?;
    let vars: serde_json::Map<String, serde_json::Value> =
        s.extra_vars.into_iter().map(|(k, v)| Ok((k, toml_to_json(v)?))).collect::<Result<_, String>>()?;
    let extra_vars = serde_json::Value::Object(vars).to_string();
    Ok(Step::Ansible(Box::new(AnsiblePlan {
        playbook,
        roles_path,
        collections_path,
        requirements,
        extra_vars,
        tags: s.tags,
        skip_tags: s.skip_tags,
    })))
}

fn toml_to_json(v: toml::Value) -> Result<serde_json::Value, String> {
    match v {
        toml::Value::Datetime(d) => Ok(serde_json::Value::String(d.to_string())),
        other => serde_json::to_value(other).map_err(|e| format!("extra_vars: {e}")),
    }
}

/// A salt wheelhouse: a directory holding at least a pip and a salt wheel.
fn wheelhouse(dir: &Path, rel: &str) -> Result<PathBuf, String> {
    let p = existing_dir(dir, rel, "wheelhouse directory")?;
    let names: Vec<String> = std::fs::read_dir(&p)
        .map_err(|e| format!("wheelhouse {rel}: cannot list {}: {e}", p.display()))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    for want in ["pip", "salt"] {
        if !names.iter().any(|n| crate::provision::salt::is_wheel_of(n, want)) {
            return Err(format!(
                "wheelhouse {rel} has no {want}-*.whl: fill it with `pip wheel -w {rel} pip '{}'` run with the image's Python and architecture (or copy imgforge's cache, <cache dir>/salt-wheels/<key>, from an earlier build)",
                crate::provision::salt::SALT_REQUIREMENT
            ));
        }
    }
    Ok(p)
}

fn salt_step(dir: &Path, s: SaltStep) -> Result<Step, String> {
    let state_tree = existing_dir(dir, &s.state_tree, "state_tree directory")?;
    let pillar_tree = s.pillar_tree.as_deref().map(|p| existing_dir(dir, p, "pillar_tree directory")).transpose()?;
    // salt-call itself is known to pass a highstate without a top file.
    if s.states.is_empty() && !state_tree.join("top.sls").is_file() {
        return Err(format!(
            "state_tree {} has no top.sls, and `states` is empty: a highstate needs a top file (or list the states to apply)",
            s.state_tree
        ));
    }
    if s.minion_id.is_empty() || !s.minion_id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(format!("minion_id `{}` must be letters, digits, `-`, `_` and `.`", s.minion_id));
    }
    let install = match (s.install.as_deref().unwrap_or("none"), s.keep, &s.wheelhouse) {
        ("none", false, None) => SaltInstall::None,
        ("none", true, _) => return Err("keep = true only applies to install = \"pip\"".into()),
        ("none", _, Some(_)) => return Err("wheelhouse only applies to install = \"pip\"".into()),
        ("pip", keep, house) => SaltInstall::Pip { keep, wheelhouse: house.as_deref().map(|h| wheelhouse(dir, h)).transpose()? },
        (other, _, _) => return Err(format!("install = \"{other}\" is not one of \"none\", \"pip\"")),
    };
    if let Some(bad) = s.states.iter().find(|st| st.is_empty() || st.contains([',', ' '])) {
        return Err(format!("state `{bad}` is not a state name such as \"nginx\" or \"web.tls\""));
    }
    Ok(Step::Salt(Box::new(SaltPlan { state_tree, pillar_tree, minion_id: s.minion_id, states: s.states, install })))
}

fn puppet_step(dir: &Path, s: PuppetStep, image: &str) -> Result<Step, String> {
    let manifest = existing(dir, &s.manifest, "manifest")?;
    let module_path = s.module_path.iter().map(|d| existing_dir(dir, d, "module_path directory")).collect::<Result<Vec<_>, _>>()?;
    let hiera_config = s.hiera_config.as_deref().map(|h| existing(dir, h, "hiera_config")).transpose()?;
    // Its directory (with the data it names) is copied in for the run: not the recipe's own.
    if let Some(h) = &hiera_config
        && h.parent().is_none_or(|p| p == dir)
    {
        return Err("hiera_config must sit in its own directory with its data (e.g. puppet/hiera/hiera.yaml): that directory is copied into the image for the run".into());
    }
    if let Some(bad) = s.facts.keys().find(|k| k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')) {
        return Err(format!("fact name `{bad}` must be letters, digits and `_` (it becomes FACTER_{bad})"));
    }
    let certname = s.certname.unwrap_or_else(|| image.to_string());
    Ok(Step::Puppet(Box::new(PuppetPlan { manifest, module_path, hiera_config, facts: s.facts, certname })))
}

fn existing_dir(dir: &Path, rel: &str, what: &str) -> Result<PathBuf, String> {
    let p = existing(dir, rel, what)?;
    if p.is_dir() { Ok(p) } else { Err(format!("{what} {rel} is not a directory (looked at {})", p.display())) }
}

/// "0644" / "644" / "0o644" → 0o644. Pure.
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let t = s.trim_start_matches("0o");
    match u32::from_str_radix(t, 8) {
        Ok(m) if m <= 0o7777 => Ok(m),
        _ => Err(format!("mode `{s}` is not an octal file mode such as \"0644\"")),
    }
}

fn check_owner(owner: Option<&str>) -> Result<(), String> {
    match owner {
        Some(o) if o.split(':').count() > 2 || o.is_empty() => Err(format!("owner `{o}` must be \"user\" or \"user:group\"")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(text: &str) -> Result<BuildPlan, RecipeError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("up.img"), b"x").unwrap();
        std::fs::write(dir.path().join("SUMS"), b"x").unwrap();
        let path = dir.path().join("r.toml");
        std::fs::write(&path, text).unwrap();
        load_plan(&path, &Overrides::default())
    }

    const HEAD: &str = "[image]\nname = \"base\"\nversion = \"1.0\"\n[source]\nurl = \"up.img\"\nchecksums = \"SUMS\"\n";

    #[test]
    fn recipe_meaning_ignores_layout_comments_order_and_output_dir() {
        let a = meaning_digest("[image]\nname = \"x\"\nversion = \"1\"\n[output]\ndir = \"out\"\nformats = [\"qcow2\"]\n");
        let b =
            meaning_digest("# same\n[output]\nformats = [ \"qcow2\" ]\ndir = \"elsewhere\"\n\n[image]\nversion = \"1\"\nname = \"x\"\n");
        let c = meaning_digest("[image]\nname = \"x\"\nversion = \"2\"\n[output]\nformats = [\"qcow2\"]\n");
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn urls_are_shown_without_credentials_and_ancestors_without_host_paths() {
        let u = Location::Url("https://user:secret@example.com:8443/images/a.qcow2?X-Amz-Signature=abc#x".into());
        assert_eq!(u.to_string(), "https://example.com:8443/images/a.qcow2");
        assert_eq!(u.ancestor(), "https://example.com:8443/images/a.qcow2");
        assert_eq!(crate::source::plan::public_url("http://example.com"), "http://example.com");
        let p = Location::Path(PathBuf::from("/home/ci/work/recipes/../upstream/noble.img"));
        assert_eq!(p.to_string(), "/home/ci/work/recipes/../upstream/noble.img");
        assert_eq!(p.ancestor(), "noble.img");
    }

    #[test]
    fn test_suites_plan_their_stages_and_one_boot() {
        use crate::imagetest::plan::{BootSpec, Stage, SuiteKind};
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("up.img"), b"x").unwrap();
        std::fs::write(dir.path().join("SUMS"), b"x").unwrap();
        std::fs::create_dir_all(dir.path().join("spec")).unwrap();
        std::fs::write(dir.path().join("spec/a_spec.rb"), b"").unwrap();
        let plan = |tests: &str| {
            let path = dir.path().join("r.toml");
            std::fs::write(&path, format!("{HEAD}{tests}")).unwrap();
            load_plan(&path, &Overrides::default())
        };
        // A boot-stage suite without a boot table: one boot with the defaults, after it.
        let p = plan("[[test]]\ntype = \"serverspec\"\nspecs = \"spec\"\nstage = \"boot\"\n").unwrap();
        assert_eq!(p.tests.len(), 2);
        assert!(matches!(&p.tests[0].kind, SuiteKind::Serverspec(_)) && p.tests[0].stage == Stage::Boot);
        assert!(matches!(&p.tests[1].kind, SuiteKind::Boot(b) if *b == BootSpec::default()));
        // Offline by default; a boot table with its own timeout and expectations.
        let p = plan("[[test]]\ntype = \"serverspec\"\nspecs = \"spec\"\n[[test]]\ntype = \"boot\"\ntimeout = \"6m\"\nexpect = { cloud_init = false }\n")
            .unwrap();
        assert_eq!(p.tests[0].stage, Stage::Offline);
        let want = BootSpec { timeout: std::time::Duration::from_secs(360), cloud_init: None, ..BootSpec::default() };
        assert!(matches!(&p.tests[1].kind, SuiteKind::Boot(b) if *b == want), "{:?}", p.tests[1]);
        // Refusals name the line.
        for (tests, says) in [
            ("[[test]]\ntype = \"boot\"\n\n[[test]]\ntype = \"boot\"\nname = \"again\"\n", "line 10: [[test]] #2: a second boot suite"),
            ("[[test]]\ntype = \"serverspec\"\nspecs = \"spec\"\nstage = \"later\"\n", "stage `later` is not"),
            ("[[test]]\ntype = \"serverspec\"\nspecs = \"nothing\"\n", "specs not found: nothing"),
            ("[[test]]\ntype = \"boot\"\nexpect = { cloud_init = \"maybe\" }\n", "expect.cloud_init = \"maybe\""),
            ("[[test]]\ntype = \"boot\"\ntimeout = \"6 min\"\n", "the unit is s, m or h"),
            (
                "[[test]]\ntype = \"boot\"\nexpect = { ssh = false }\n[[test]]\ntype = \"serverspec\"\nspecs = \"spec\"\nstage = \"boot\"\n",
                "has expect.ssh = false",
            ),
        ] {
            let e = plan(tests).unwrap_err().to_string();
            assert!(e.contains(says), "{tests}: {e}");
        }
    }

    #[test]
    fn good_recipe_plans() {
        let p = planned(&format!("{HEAD}[disk]\nsize = \"4GiB\"\n[[provision]]\ntype = \"shell\"\ninline = [\"a\", \"b\"]\n")).unwrap();
        assert_eq!(p.disk_size, Some(4 << 30));
        assert_eq!(p.steps[0].label, "shell #1");
        assert!(matches!(&p.steps[0].step, Step::Shell { script: Script::Inline(s), .. } if s == "a\nb"));
    }

    #[test]
    fn bad_size_names_line() {
        let e = planned(&format!("{HEAD}[disk]\nsize = \"4 gigs\"\n")).unwrap_err();
        assert_eq!(e.line, Some(8), "{e}");
        assert!(e.hint.is_some());
    }

    #[test]
    fn missing_file_names_line() {
        let e = planned("[image]\nname = \"base\"\n[source]\nurl = \"nope.img\"\nsha256 = \"00\"\n").unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.message.contains("file not found"), "{e}");
    }

    #[test]
    fn unverified_source_refused() {
        let e = planned("[image]\nname = \"base\"\n[source]\nurl = \"up.img\"\n").unwrap_err();
        assert!(e.message.contains("not verified"), "{e}");
    }

    #[test]
    fn signature_needs_key() {
        let e = planned(&format!("{HEAD}signature = \"SUMS\"\n")).unwrap_err();
        assert_eq!(e.line, Some(7), "{e}");
    }

    #[test]
    fn provisioner_errors_name_the_table() {
        let e =
            planned(&format!("{HEAD}[[provision]]\ntype = \"shell\"\ninline = [\"x\"]\n\n[[provision]]\ntype = \"shel\"\n")).unwrap_err();
        assert!(e.message.contains("#2") && e.message.contains("unknown provisioner type"), "{e}");
        let e = planned(&format!("{HEAD}[[provision]]\ntype = \"file\"\nsource = \"up.img\"\ndestination = \"/x\"\nmood = \"0644\"\n"))
            .unwrap_err();
        assert!(e.message.contains("unknown field `mood`"), "{e}");
        assert_eq!(e.line, Some(11), "{e}");
    }

    #[test]
    fn cm_provisioners_plan_and_name_missing_paths() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["up.img", "SUMS", "site.yml", "salt/top.sls", "pp/site.pp", "pp/modules/m/manifests/init.pp"] {
            std::fs::create_dir_all(dir.path().join(d).parent().unwrap()).unwrap();
            std::fs::write(dir.path().join(d), b"x").unwrap();
        }
        let plan_text = |t: &str| {
            let path = dir.path().join("r.toml");
            std::fs::write(&path, format!("{HEAD}{t}")).unwrap();
            load_plan(&path, &Overrides::default())
        };
        let p = plan_text(
            "[[provision]]\ntype = \"ansible\"\nplaybook = \"site.yml\"\nextra_vars = { role = \"web\", port = 80 }\ntags = [\"a\"]\n\n\
             [[provision]]\ntype = \"salt\"\nstate_tree = \"salt\"\nminion_id = \"rails-base-01\"\ninstall = \"pip\"\n\n\
             [[provision]]\ntype = \"puppet\"\nmanifest = \"pp/site.pp\"\nmodule_path = [\"pp/modules\"]\nfacts = { role = \"web\" }\n",
        )
        .unwrap();
        assert!(matches!(&p.steps[0].step, Step::Ansible(a) if a.extra_vars == r#"{"port":80,"role":"web"}"# && a.tags == ["a"]));
        assert!(
            matches!(&p.steps[1].step, Step::Salt(s) if s.install == SaltInstall::Pip { keep: false, wheelhouse: None } && s.states.is_empty())
        );
        assert!(matches!(&p.steps[2].step, Step::Puppet(pp) if pp.certname == "base" && pp.facts["role"] == "web"));
        assert_eq!((p.steps[0].kind, p.steps[1].label.as_str()), ("ansible", "salt #2"));
        let e = plan_text("[[provision]]\ntype = \"ansible\"\nplaybook = \"nope.yml\"\n").unwrap_err();
        assert!(e.message.contains("playbook not found: nope.yml") && e.line == Some(7), "{e}");
        let e = plan_text("[[provision]]\ntype = \"salt\"\nstate_tree = \"pp\"\nminion_id = \"x\"\n").unwrap_err();
        assert!(e.message.contains("no top.sls") && e.line == Some(7), "{e}");
        let e = plan_text("[[provision]]\ntype = \"salt\"\nstate_tree = \"salt\"\nminion_id = \"x\"\ninstall = \"apt\"\n").unwrap_err();
        assert!(e.message.contains("install = \"apt\""), "{e}");
        let salt = "[[provision]]\ntype = \"salt\"\nstate_tree = \"salt\"\nminion_id = \"x\"\n";
        let e = plan_text(&format!("{salt}install = \"pip\"\nwheelhouse = \"wheels/\"\n")).unwrap_err();
        assert!(e.message.contains("wheelhouse directory not found: wheels/") && e.line == Some(7), "{e}");
        std::fs::create_dir_all(dir.path().join("wheels")).unwrap();
        std::fs::write(dir.path().join("wheels/pip-24.0-py3-none-any.whl"), b"x").unwrap();
        let e = plan_text(&format!("{salt}install = \"pip\"\nwheelhouse = \"wheels/\"\n")).unwrap_err();
        assert!(e.message.contains("wheelhouse wheels/ has no salt-*.whl") && e.message.contains("pip wheel -w wheels/"), "{e}");
        std::fs::write(dir.path().join("wheels/salt-3006.9-py3-none-any.whl"), b"x").unwrap();
        let p = plan_text(&format!("{salt}install = \"pip\"\nwheelhouse = \"wheels/\"\n")).unwrap();
        assert!(
            matches!(&p.steps[0].step, Step::Salt(s) if matches!(&s.install, SaltInstall::Pip { wheelhouse: Some(w), .. } if w.ends_with("wheels/")))
        );
        let e = plan_text(&format!("{salt}wheelhouse = \"wheels/\"\n")).unwrap_err();
        assert!(e.message.contains("wheelhouse only applies to install = \"pip\""), "{e}");
        let e = plan_text("[[provision]]\ntype = \"puppet\"\nmanifest = \"pp/site.pp\"\nmodule_path = [\"pp/site.pp\"]\n").unwrap_err();
        assert!(e.message.contains("not a directory"), "{e}");
        let e = plan_text("[[provision]]\ntype = \"puppet\"\nmanifest = \"pp/site.pp\"\nfacts = { \"bad-name\" = \"x\" }\n").unwrap_err();
        assert!(e.message.contains("FACTER_bad-name"), "{e}");
        std::fs::write(dir.path().join("hiera.yaml"), b"version: 5\n").unwrap();
        let e = plan_text("[[provision]]\ntype = \"puppet\"\nmanifest = \"pp/site.pp\"\nhiera_config = \"hiera.yaml\"\n").unwrap_err();
        assert!(e.message.contains("its own directory"), "{e}");
    }

    #[test]
    fn bad_name_and_format() {
        assert!(planned(&HEAD.replace("\"base\"", "\"Base_1\"")).unwrap_err().message.contains("not allowed"));
        let e = planned(&format!("{HEAD}[output]\nformats = [\"raw\", \"vhdx\"]\n")).unwrap_err();
        assert!(e.message.contains("vhdx"), "{e}");
        assert!(e.hint.as_deref().unwrap_or("").contains("vhd-dynamic"), "{e}");
    }

    #[test]
    fn output_formats_and_options() {
        let p = planned(&format!(
            "{HEAD}[output]\nformats = [\"ova\", \"vhd\", \"ova\"]\n[output.vmdk]\nadapter = \"pvscsi\"\n[output.ova]\nhardware_version = \"vmx-19\"\ncpus = 4\ndigest = \"sha1\"\n[output.qcow2]\ncompress = true\n"
        ))
        .unwrap();
        assert_eq!(p.formats, [Format::Raw, Format::Ova, Format::Vhd]);
        assert_eq!(p.export.hardware_version, "vmx-19");
        assert_eq!(p.export.cpus, 4);
        assert!(p.export.qcow2_compress);
        assert!(matches!(p.export.adapter, crate::export::vmdk::Adapter::PvScsi));
        // A bad value names its line.
        let text = format!("{HEAD}[output]\nformats = [\"ova\"]\n[output.ova]\nhardware_version = \"virtualbox-2.2\"\n");
        let e = planned(&text).unwrap_err();
        assert!(e.message.contains("virtualbox-2.2"), "{e}");
        assert_eq!(e.line, Some(text.lines().count()), "{e}");
        let e = planned(&format!("{HEAD}[output.vmdk]\nadapter = \"scsi\"\n")).unwrap_err();
        assert!(e.message.contains("lsilogic, pvscsi or ide"), "{e}");
        let e = planned(&format!("{HEAD}[output.ova]\ncpus = 0\n")).unwrap_err();
        assert!(e.message.contains("CPUs"), "{e}");
        let e = planned(&format!("{HEAD}[output.ova]\nram = 4\n")).unwrap_err();
        assert!(e.message.contains("unknown field `ram`"), "{e}");
    }

    #[test]
    fn seal_section() {
        let p = planned(&format!(
            "{HEAD}[seal]\nenable = [\"user-accounts\"]\ndisable = [\"logfiles\"]\n[seal.machine-id]\nuninitialized = true\n[seal.residue]\nwarn = [\"ip\", \"private-key:/etc/ssl/private/\"]\n"
        ))
        .unwrap();
        use crate::seal::catalog::Op;
        assert!(p.seal.enabled.contains(&Op::UserAccounts) && !p.seal.enabled.contains(&Op::Logfiles));
        assert!(p.seal.machine_id_uninitialized);
        assert_eq!(p.seal.warn.len(), 2);
        let e = planned(&format!("{HEAD}[seal]\ndisable = [\"logfiles\", \"machine_id\"]\n")).unwrap_err().to_string();
        assert!(e.contains("line 8") && e.contains("unknown operation `machine_id`") && e.contains("valid operations: cloud-init,"), "{e}");
        let e = planned(&format!("{HEAD}[seal.residue]\nwarn = [\"secret\"]\n")).unwrap_err().to_string();
        assert!(e.contains("line 8") && e.contains("valid kinds: private-key"), "{e}");
        let e = planned(&format!("{HEAD}[seal.machine-id]\nuninitialised = true\n")).unwrap_err().to_string();
        assert!(e.contains("uninitialised"), "{e}");
    }

    #[test]
    fn ssh_userdir_options_and_the_older_spelling() {
        use crate::seal::plan::UserKeyFiles;
        let p = planned(HEAD).unwrap();
        assert_eq!((p.seal.authorized_keys, p.seal.known_hosts), (UserKeyFiles::RemoveUpstream, UserKeyFiles::RemoveUpstream));
        let p = planned(&format!("{HEAD}[seal.ssh-userdir]\nauthorized_keys = \"remove-all\"\nknown_hosts = \"keep\"\n")).unwrap();
        assert_eq!((p.seal.authorized_keys, p.seal.known_hosts), (UserKeyFiles::RemoveAll, UserKeyFiles::Keep));
        let p = planned(&format!("{HEAD}[seal.ssh-userdir]\nkeep_authorized_keys = true\n")).unwrap();
        assert_eq!(p.seal.authorized_keys, UserKeyFiles::Keep);
        let p = planned(&format!("{HEAD}[seal.ssh-userdir]\nkeep_authorized_keys = false\n")).unwrap();
        assert_eq!(p.seal.authorized_keys, UserKeyFiles::RemoveAll);
        let e = planned(&format!("{HEAD}[seal.ssh-userdir]\nauthorized_keys = \"upstream\"\n")).unwrap_err().to_string();
        assert!(
            e.contains("line 8") && e.contains("unknown value `upstream`") && e.contains("\"remove-upstream\", \"remove-all\", \"keep\""),
            "{e}"
        );
        let e = planned(&format!("{HEAD}[seal.ssh-userdir]\nauthorized_keys = \"keep\"\nkeep_authorized_keys = true\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 9") && e.contains("both keep_authorized_keys and authorized_keys"), "{e}");
    }
}
