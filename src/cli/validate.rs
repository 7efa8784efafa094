//! `imgforge validate RECIPE`

use std::path::PathBuf;

use super::Global;
use crate::recipe::BuildPlan;
use crate::recipe::plan::{Origin, load_plan, load_plans};

/// Arguments of `imgforge validate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The recipe (TOML).
    pub recipe: PathBuf,
    #[command(flatten)]
    pub vars: super::RecipeVars,
}

/// Checks the recipe (every image of its `[matrix]`, or the `--node` one) and the files it
/// names; prints a summary of each image.
pub fn run(g: &Global, a: &Args) -> anyhow::Result<()> {
    let overrides = a.vars.overrides(None);
    let plans = match &a.vars.node {
        Some(_) => vec![load_plan(&a.recipe, &overrides)?],
        None => load_plans(&a.recipe, &overrides)?,
    };
    for plan in &plans {
        summary(g, a, plan)?;
    }
    Ok(())
}

fn summary(g: &Global, a: &Args, plan: &BuildPlan) -> anyhow::Result<()> {
    // A pinned key that does not parse would only fail at build time: check it here.
    let signing_key = match &plan.source {
        Origin::Upstream(s) => s.signing_key.as_ref(),
        Origin::Parent(_) => None,
    };
    let key = match signing_key {
        Some(p) => {
            let bytes = crate::source::verify::read_key(p)?;
            let fpr = crate::source::signature::fingerprint(&bytes).map_err(|e| {
                crate::error::UsageError(format!(
                    "{}: source.signing_key {} is not an OpenPGP public key ({e}); hint: export the vendor's key with `gpg --armor --export KEYID`",
                    a.recipe.display(),
                    p.display()
                ))
            })?;
            Some(fpr)
        }
        None => None,
    };
    if g.json {
        let steps: Vec<_> = plan.steps.iter().map(|s| serde_json::json!({ "name": s.label, "type": s.kind })).collect();
        println!(
            "{}",
            serde_json::json!({ "schema": 1, "recipe": a.recipe, "name": plan.name, "version": plan.version, "vars": plan.vars, "signing_key": key, "provisioners": steps, "ok": true })
        );
    } else {
        println!("{}: ok", a.recipe.display());
        println!("  image    {} {}", plan.name, plan.version.as_deref().unwrap_or("(version from git describe)"));
        if !plan.vars.is_empty() {
            println!("  vars     {}", plan.vars.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "));
        }
        match &plan.source {
            Origin::Upstream(s) => println!("  source   {}", s.image),
            Origin::Parent(q) => println!("  parent   {}", crate::pipeline::parent::describe(q)),
        }
        if let Some(fpr) = &key {
            println!("  key      {fpr}");
        }
        for (i, s) in plan.steps.iter().enumerate() {
            println!("  step {}   {} ({})", i + 1, s.label, s.kind);
        }
        println!("  output   {} [{}]", plan.output_dir.display(), plan.formats.iter().map(|f| f.name()).collect::<Vec<_>>().join(", "));
    }
    Ok(())
}
