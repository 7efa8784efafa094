//! `imgforge plan`: a set of recipes → every image they define (matrix expanded), its parent
//! in the set, its level, its layer key now, and whether it needs a build (with the first
//! reason `imgforge explain` would give).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use crate::pipeline::layer;
use crate::recipe::BuildPlan;
use crate::recipe::expand::Inputs;
use crate::recipe::plan::{Origin, Overrides, load_plans};
use crate::registry::Store;

/// Plan schema version.
pub const SCHEMA: u32 = 1;

/// The most jobs one CI matrix holds (GitHub Actions: 256).
pub const MAX_MATRIX: usize = 256;

/// Whether an image needs a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// A record with this layer key and its outputs exists.
    UpToDate,
    /// A build would build it.
    NeedsBuild,
}

/// One image of the plan.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Node {
    /// The image name (unique in the plan).
    pub id: String,
    /// The recipe, as found.
    pub recipe: String,
    /// The recipe's variables for this image.
    pub vars: BTreeMap<String, String>,
    /// The `[matrix]` entry (0-based), for a matrix recipe.
    pub entry: Option<usize>,
    /// The node this one is built on (its `[source] parent` names an image of the plan).
    pub parent: Option<String>,
    /// The parent query, as the recipe writes it (a parent outside the plan too).
    pub parent_query: Option<String>,
    /// 0: nothing in the plan below it.
    pub level: usize,
    /// The CI stage it runs in (levels cut into matrices of at most 256 jobs).
    pub stage: usize,
    /// The layer key now (unknown while its parent needs a build).
    pub layer_key: Option<String>,
    /// `up-to-date` or `needs-build`.
    pub status: Status,
    /// Why (the first line `imgforge explain` gives), or the record that is up to date.
    pub reason: String,
    /// The record that is up to date.
    pub record: Option<String>,
    /// The arguments of `imgforge build` for this image after the recipe (`--node`, `--var`).
    pub args: Vec<String>,
}

/// The plan of a set of recipes.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Plan {
    /// [`SCHEMA`].
    pub schema: u32,
    /// Every image, by level then name.
    pub nodes: Vec<Node>,
    /// Node ids per level: level N depends only on levels before it.
    pub levels: Vec<Vec<String>>,
    /// The levels cut into CI stages of at most `max_jobs` nodes each.
    pub stages: Vec<Vec<String>>,
}

impl Plan {
    /// The node named `id`.
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }
}

/// The recipes in `paths`: files as given; in a directory, every `*.toml` below it (hidden
/// directories left out) that has an `[image]` table, sorted.
pub fn find_recipes(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if !p.is_dir() {
            out.push(p.clone());
            continue;
        }
        let mut found = Vec::new();
        let mut stack = vec![p.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).with_context(|| format!("Failed to list {}", d.display()))?.flatten() {
                let path = e.path();
                let hidden = e.file_name().to_string_lossy().starts_with('.');
                let Ok(t) = e.file_type() else { continue };
                if t.is_dir() && !hidden {
                    stack.push(path);
                } else if t.is_file() && path.extension().is_some_and(|x| x == "toml") && is_recipe(&path) {
                    found.push(path);
                }
            }
        }
        found.sort();
        out.extend(found);
    }
    let mut seen = BTreeSet::new();
    out.retain(|p| seen.insert(std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())));
    Ok(out)
}

/// A TOML file with an `[image]` table (not a matrix file, not a Cargo.toml).
fn is_recipe(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| toml::from_str::<toml::Table>(&t).ok())
        .is_some_and(|t| t.get("image").is_some_and(toml::Value::is_table))
}

/// The plan of `recipes` against `store`, and each image's build plan. `cli` are the `--var`s:
/// each must be declared by at least one recipe, and is given to the images that use it.
pub fn make(
    recipes: &[PathBuf],
    cli: &[(String, String)],
    store: &dyn Store,
    max_jobs: usize,
) -> anyhow::Result<(Plan, BTreeMap<String, BuildPlan>)> {
    let overrides = Overrides { vars: Inputs { cli: cli.to_vec(), lenient: true }, ..Overrides::default() };
    let mut plans: BTreeMap<String, (PathBuf, BuildPlan)> = BTreeMap::new();
    for r in recipes {
        for p in load_plans(r, &overrides)? {
            if let Some((other, _)) = plans.get(&p.name) {
                return Err(crate::error::UsageError(format!(
                    "{} and {} both define an image named {}: image names are unique in a plan",
                    other.display(),
                    r.display(),
                    p.name
                ))
                .into());
            }
            plans.insert(p.name.clone(), (r.clone(), p));
        }
    }
    if let Some((k, _)) = cli.iter().find(|(k, _)| !plans.values().any(|(_, p)| p.vars.contains_key(k))) {
        return Err(crate::error::UsageError(format!("--var {k}: no recipe of the plan declares a variable `{k}`")).into());
    }
    let parents: BTreeMap<String, Option<String>> = plans
        .iter()
        .map(|(id, (_, p))| {
            let parent = match &p.source {
                Origin::Parent(q) => q.name.clone().filter(|n| plans.contains_key(n)),
                Origin::Upstream(_) => None,
            };
            (id.clone(), parent)
        })
        .collect();
    let level = super::graph::levels(&parents).map_err(crate::error::UsageError)?;
    let stages = super::graph::stages(&level, max_jobs);
    let stage_of: BTreeMap<&str, usize> = stages.iter().enumerate().flat_map(|(i, s)| s.iter().map(move |n| (n.as_str(), i))).collect();
    let depth = level.values().max().map_or(0, |m| m + 1);
    let levels: Vec<Vec<String>> = (0..depth).map(|l| level.iter().filter(|(_, v)| **v == l).map(|(k, _)| k.clone()).collect()).collect();
    let mut nodes: Vec<Node> = Vec::new();
    for id in levels.iter().flatten() {
        let (recipe, p) = &plans[id];
        let parent = parents[id].clone();
        let parent_query = match &p.source {
            Origin::Parent(q) => Some(crate::pipeline::parent::describe(q)),
            Origin::Upstream(_) => None,
        };
        let parent_needs = parent.as_ref().and_then(|pid| nodes.iter().find(|n| &n.id == pid)).filter(|n| n.status == Status::NeedsBuild);
        let (layer_key, status, reason, record) = match parent_needs {
            Some(pn) => (None, Status::NeedsBuild, format!("its parent {} needs a build", pn.id), None),
            None => match layer::key_now(p, store) {
                Err(e) => (None, Status::NeedsBuild, format!("no layer key yet: {}", first_line(&format!("{e:#}"))), None),
                Ok(key) => {
                    let (last, reasons) = layer::why_build(store, &p.name, &key)?;
                    match (reasons.first(), last) {
                        (None, Some(r)) => {
                            (Some(key.key), Status::UpToDate, format!("{} {} ({}) is up to date", r.name, r.version, r.id), Some(r.id))
                        }
                        (Some(why), _) => (Some(key.key), Status::NeedsBuild, why.clone(), None),
                        (None, None) => (Some(key.key), Status::NeedsBuild, "never built".into(), None),
                    }
                }
            },
        };
        let mut args = Vec::new();
        if p.entry.is_some() {
            args.extend(["--node".to_string(), id.clone()]);
        }
        for (k, v) in cli.iter().filter(|(k, _)| p.vars.contains_key(k)) {
            args.extend(["--var".to_string(), format!("{k}={v}")]);
        }
        nodes.push(Node {
            id: id.clone(),
            recipe: recipe.display().to_string(),
            vars: p.vars.clone(),
            entry: p.entry,
            parent,
            parent_query,
            level: level[id],
            stage: stage_of.get(id.as_str()).copied().unwrap_or(0),
            layer_key,
            status,
            reason,
            record,
            args,
        });
    }
    let builds = plans.into_iter().map(|(id, (_, p))| (id, p)).collect();
    Ok((Plan { schema: SCHEMA, nodes, levels, stages }, builds))
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}
