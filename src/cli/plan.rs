//! `imgforge plan [RECIPES…|DIR]`: the images a set of recipes defines, as a DAG in levels,
//! with each one's layer key and whether it needs a build.

use std::path::PathBuf;

use super::Global;
use crate::bakery::plan::{self, Plan, Status};

/// How the plan is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A table per level (`--json` gives JSON).
    Text,
    /// The plan as JSON.
    Json,
    /// GitHub Actions: the `$GITHUB_OUTPUT` lines of every stage, or with --stage that stage's
    /// matrix.
    GithubMatrix,
}

/// Arguments of `imgforge plan`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Recipes, or directories searched for recipes (`*.toml` with an [image] table; default:
    /// the current directory).
    pub recipes: Vec<PathBuf>,
    /// Set a recipe variable in every recipe that declares it (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = crate::recipe::vars::parse_assignment)]
    pub var: Vec<(String, String)>,
    /// The registry (default: $IMGFORGE_REGISTRY or /var/lib/imgforge/registry.db).
    #[arg(long)]
    pub registry: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// With --format github-matrix: print this stage's matrix alone.
    #[arg(long)]
    pub stage: Option<usize>,
    /// The most jobs in one stage (a CI matrix; GitHub Actions takes 256).
    #[arg(long, default_value_t = plan::MAX_MATRIX)]
    pub max_jobs: usize,
}

/// The recipes of `paths` (default: the current directory) and their plan.
pub fn load(
    paths: &[PathBuf],
    var: &[(String, String)],
    registry: Option<&str>,
    max_jobs: usize,
) -> anyhow::Result<(Plan, std::collections::BTreeMap<String, crate::recipe::BuildPlan>)> {
    let paths = if paths.is_empty() { vec![PathBuf::from(".")] } else { paths.to_vec() };
    let recipes = plan::find_recipes(&paths)?;
    if recipes.is_empty() {
        return Err(super::UsageError(format!(
            "no recipe in {}: a recipe is a .toml file with an [image] table",
            paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        ))
        .into());
    }
    let store = crate::registry::open(registry)?;
    plan::make(&recipes, var, &*store, max_jobs)
}

/// Runs `imgforge plan`.
pub fn run(g: &Global, a: &Args) -> anyhow::Result<()> {
    let (p, _) = load(&a.recipes, &a.var, a.registry.as_deref(), a.max_jobs)?;
    let format = if g.json && a.format == Format::Text { Format::Json } else { a.format };
    match (format, a.stage) {
        (Format::GithubMatrix, Some(s)) if s >= p.stages.len() => {
            Err(super::UsageError(format!("--stage {s}: the plan has {} stage(s)", p.stages.len())).into())
        }
        (Format::GithubMatrix, Some(s)) => {
            println!("{}", crate::bakery::github::matrix(&p, s));
            Ok(())
        }
        (Format::GithubMatrix, None) => {
            print!("{}", crate::bakery::github::output_lines(&p));
            Ok(())
        }
        (Format::Json, _) => {
            println!("{}", serde_json::to_string_pretty(&p)?);
            Ok(())
        }
        (Format::Text, _) => {
            print!("{}", text(&p));
            Ok(())
        }
    }
}

/// The plan as text: one block per level. Pure.
pub fn text(p: &Plan) -> String {
    let needs = p.nodes.iter().filter(|n| n.status == Status::NeedsBuild).count();
    let mut out = format!("{} image(s) in {} level(s); {needs} need a build\n", p.nodes.len(), p.levels.len());
    for (l, ids) in p.levels.iter().enumerate() {
        out.push_str(&format!("level {l}\n"));
        for id in ids {
            let Some(n) = p.node(id) else { continue };
            let status = if n.status == Status::UpToDate { "up-to-date " } else { "needs-build" };
            let on = n.parent.as_ref().map_or(String::new(), |p| format!(" (on {p})"));
            out.push_str(&format!("  {status}  {}{on}  {}: {}\n", n.id, n.recipe, n.reason));
        }
    }
    out
}
