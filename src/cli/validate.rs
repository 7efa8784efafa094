//! `imgforge validate RECIPE`

use std::path::PathBuf;

use super::Global;
use crate::recipe::plan::{Overrides, load_plan};

/// Arguments of `imgforge validate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The recipe (TOML).
    pub recipe: PathBuf,
}

/// Checks the recipe and the files it names; prints a summary.
pub fn run(g: &Global, a: &Args) -> anyhow::Result<()> {
    let plan = load_plan(&a.recipe, &Overrides::default())?;
    if g.json {
        let steps: Vec<_> = plan.steps.iter().map(|s| serde_json::json!({ "name": s.label, "type": s.kind })).collect();
        println!(
            "{}",
            serde_json::json!({ "schema": 1, "recipe": a.recipe, "name": plan.name, "version": plan.version, "provisioners": steps, "ok": true })
        );
    } else {
        println!("{}: ok", a.recipe.display());
        println!("  image    {} {}", plan.name, plan.version.as_deref().unwrap_or("(version from git describe)"));
        println!("  source   {}", plan.source.image);
        for (i, s) in plan.steps.iter().enumerate() {
            println!("  step {}   {} ({})", i + 1, s.label, s.kind);
        }
        println!("  output   {} [{}]", plan.output_dir.display(), plan.formats.iter().map(|f| f.name()).collect::<Vec<_>>().join(", "));
    }
    Ok(())
}
