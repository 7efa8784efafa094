//! `imgforge validate RECIPE`

use std::path::PathBuf;

use super::Global;
use crate::recipe::plan::{Origin, Overrides, load_plan};

/// Arguments of `imgforge validate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The recipe (TOML).
    pub recipe: PathBuf,
}

/// Checks the recipe and the files it names; prints a summary.
pub fn run(g: &Global, a: &Args) -> anyhow::Result<()> {
    let plan = load_plan(&a.recipe, &Overrides::default())?;
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
            serde_json::json!({ "schema": 1, "recipe": a.recipe, "name": plan.name, "version": plan.version, "signing_key": key, "provisioners": steps, "ok": true })
        );
    } else {
        println!("{}: ok", a.recipe.display());
        println!("  image    {} {}", plan.name, plan.version.as_deref().unwrap_or("(version from git describe)"));
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
