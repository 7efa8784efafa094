//! `imgforge explain RECIPE` and `imgforge outdated`: what the layer keys and parent queries
//! say about what needs building.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::Global;
use crate::pipeline::layer;
use crate::pipeline::parent;
use crate::recipe::plan::{Origin, Overrides, load_plan};
use crate::registry::Query;

/// Arguments of `imgforge explain`.
#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// The recipe (TOML).
    pub recipe: PathBuf,
    #[command(flatten)]
    pub vars: super::RecipeVars,
    /// The registry (default: $IMGFORGE_REGISTRY or /var/lib/imgforge/registry.db).
    #[arg(long)]
    pub registry: Option<String>,
}

/// Arguments of `imgforge outdated`.
#[derive(Debug, clap::Args)]
pub struct OutdatedArgs {
    /// Recipes, or directories of recipes (`*.toml`), to check too (never built, or built on
    /// an older parent than their query finds now).
    pub recipes: Vec<PathBuf>,
    /// The registry (default: $IMGFORGE_REGISTRY or /var/lib/imgforge/registry.db).
    #[arg(long)]
    pub registry: Option<String>,
}

/// Runs `imgforge explain`: input by input, why a build would (or would not) rebuild.
pub fn explain(g: &Global, a: &ExplainArgs) -> anyhow::Result<()> {
    let plan = load_plan(&a.recipe, &a.vars.overrides(None))?;
    let store = crate::registry::open(a.registry.as_deref())?;
    let key = layer::key_now(&plan, &*store)?;
    let (last, reasons) = layer::why_build(&*store, &plan.name, &key)?;
    if g.json {
        let v = serde_json::json!({
            "schema": 1, "name": plan.name, "layer_key": key.key, "up_to_date": reasons.is_empty(),
            "newest": last.as_ref().map(|r| &r.id), "reasons": reasons, "inputs": key.inputs,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    match (&last, reasons.is_empty()) {
        (Some(r), true) => println!("up to date: {} {} {} (layer key {})", r.name, r.version, r.id, key.key),
        (Some(r), false) => {
            println!("{}: a build rebuilds it; against {} {} ({}):", plan.name, r.version, r.id, r.build_date);
            for why in &reasons {
                println!("  {why}");
            }
        }
        (None, _) => println!("{}", reasons.join("\n")),
    }
    Ok(())
}

/// One image that needs building again.
#[derive(Debug, serde::Serialize)]
struct Outdated {
    name: String,
    /// The newest record (none: never built).
    record: Option<String>,
    version: Option<String>,
    recipe: String,
    parent: String,
    /// The parent version the record was built on.
    built_on: Option<String>,
    /// The parent version the query finds now.
    now: String,
}

/// Runs `imgforge outdated`: the images (newest record of each name) and recipes whose parent
/// query now finds a newer parent.
pub fn outdated(g: &Global, a: &OutdatedArgs) -> anyhow::Result<()> {
    let store = crate::registry::open(a.registry.as_deref())?;
    let mut recipes: Vec<PathBuf> = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for r in store.find(&Query::default())? {
        if r.parent.record.is_some() && names.insert(r.name.clone()) && Path::new(&r.recipe).is_file() {
            recipes.push(PathBuf::from(&r.recipe));
        }
    }
    for p in &a.recipes {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("Failed to list {}", p.display()))?
                .flatten()
                .map(|e| e.path())
                .filter(|f| f.extension().is_some_and(|e| e == "toml"))
                .collect();
            found.sort();
            recipes.extend(found);
        } else {
            recipes.push(p.clone());
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for path in recipes {
        let canon = std::fs::canonicalize(&path).unwrap_or(path.clone());
        if !seen.insert(canon) {
            continue;
        }
        let Ok(plan) = load_plan(&path, &Overrides::default()) else { continue };
        let Origin::Parent(q) = &plan.source else { continue };
        let now = parent::resolve(&*store, q).with_context(|| format!("{}: the parent query", path.display()))?;
        let last = crate::registry::resolve(&*store, &plan.name)?;
        let built_on = last.as_ref().and_then(|r| r.parent.record.clone());
        if built_on.as_deref() == Some(now.record.id.as_str()) {
            continue;
        }
        out.push(Outdated {
            name: plan.name.clone(),
            record: last.as_ref().map(|r| r.id.clone()),
            version: last.as_ref().map(|r| r.version.clone()),
            recipe: path.display().to_string(),
            parent: now.record.name.clone(),
            built_on: last.as_ref().and_then(|r| r.parent.version.clone()),
            now: now.record.version.clone(),
        });
    }
    if g.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    for o in &out {
        match (&o.record, &o.version) {
            (Some(id), Some(v)) => {
                println!("{} {v} ({id}): parent {} {} → {} ({})", o.name, o.parent, o.built_on.as_deref().unwrap_or("?"), o.now, o.recipe)
            }
            _ => println!("{}: never built; parent {} {} ({})", o.name, o.parent, o.now, o.recipe),
        }
    }
    Ok(())
}
