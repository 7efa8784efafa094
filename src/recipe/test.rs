//! `[[test]]`: the image tests of a recipe, as written and as planned.
//!
//! ```toml
//! [[test]]
//! type = "checks"                    # declarative, offline, against the sealed image
//! files = [ { path = "/usr/sbin/policy-rc.d", absent = true },
//!           { path = "/etc/timezone", contains = "Etc/UTC" } ]
//! packages = ["nginx", "openssh-server>=1:9"]
//! services_enabled = ["ssh"]
//! users = ["demo"]
//! commands = [ { run = "getent passwd demo", exit = 0 } ]
//! ```

use std::path::Path;

use serde::Deserialize;

use super::error::RecipeError;
use super::parse::{Src, typed};
use crate::imagetest::plan::{Checks, CommandCheck, FileCheck, Suite, SuiteKind};
use crate::registry::query::PackageReq;

/// `type = "checks"` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChecksTest {
    name: Option<String>,
    #[serde(default)]
    stage: Option<String>,
    #[serde(default)]
    files: Vec<FileCheck>,
    #[serde(default)]
    packages: Vec<String>,
    #[serde(default)]
    services_enabled: Vec<String>,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    commands: Vec<CommandCheck>,
}

const TYPES_HINT: &str = "use type = \"checks\" or \"testinfra\" (serverspec and boot suites are not in this imgforge yet)";

/// `type = "testinfra"` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestinfraTest {
    name: Option<String>,
    /// A test file or directory, relative to the recipe.
    tests: String,
    stage: Option<String>,
}

/// Plans every `[[test]]` table.
pub fn plan(src: Src<'_>, dir: &Path, tables: &[toml::Spanned<toml::Table>]) -> Result<Vec<Suite>, RecipeError> {
    let mut out: Vec<Suite> = Vec::new();
    for (i, t) in tables.iter().enumerate() {
        let kind = t.get_ref().get("type").and_then(|v| v.as_str()).unwrap_or("");
        let at = |m: String| src.at(t.span(), format!("[[test]] #{}: {m}", i + 1));
        let suite = match kind {
            "checks" => {
                let c: ChecksTest = typed(src, t, "test", i)?;
                if let Some(s) = c.stage.as_deref().filter(|s| *s != "offline") {
                    return Err(at(format!("stage `{s}`: checks run offline only")).hint("remove `stage` or set stage = \"offline\""));
                }
                for f in &c.files {
                    if !f.path.starts_with('/') {
                        return Err(at(format!("files: `{}` is not an absolute path", f.path)).hint("paths are inside the image, from /"));
                    }
                    if f.absent && (f.contains.is_some() || f.mode.is_some() || f.owner.is_some() || f.kind.is_some()) {
                        return Err(at(format!("files: `{}` is both absent and described", f.path))
                            .hint("an absent path has no content, mode, owner or kind"));
                    }
                    if let Some(m) = &f.mode
                        && u32::from_str_radix(m, 8).map_or(true, |v| v > 0o7777)
                    {
                        return Err(
                            at(format!("files: `{}`: mode `{m}` is not octal permission bits", f.path)).hint("write it like \"0644\"")
                        );
                    }
                    if let Some(k) = f.kind.as_deref().filter(|k| !["file", "directory", "symlink"].contains(k)) {
                        return Err(at(format!("files: `{}`: kind `{k}`", f.path)).hint("kind is \"file\", \"directory\" or \"symlink\""));
                    }
                }
                let packages = c
                    .packages
                    .iter()
                    .map(|p| {
                        PackageReq::parse(p).map_err(|e| {
                            at(format!("packages: {e:#}"))
                                .hint("write a name, optionally with <, <=, =, >= or > and a version: \"openssh-server>=1:9\"")
                        })
                    })
                    .collect::<Result<_, _>>()?;
                let name = c.name.unwrap_or_else(|| format!("checks #{}", i + 1));
                Suite {
                    name,
                    kind: SuiteKind::Checks(Checks {
                        files: c.files,
                        packages,
                        services_enabled: c.services_enabled,
                        users: c.users,
                        commands: c.commands,
                    }),
                }
            }
            "testinfra" => {
                let t: TestinfraTest = typed(src, t, "test", i)?;
                if let Some(s) = t.stage.as_deref().filter(|s| *s != "offline") {
                    return Err(at(format!("stage `{s}`: this imgforge runs testinfra offline only (its chroot backend)"))
                        .hint("remove `stage` or set stage = \"offline\""));
                }
                let path = dir.join(&t.tests);
                if !path.exists() {
                    return Err(at(format!("tests not found: {} (looked at {})", t.tests, path.display()))
                        .hint("`tests` is a file or directory relative to the recipe"));
                }
                Suite { name: t.name.unwrap_or_else(|| format!("testinfra #{}", i + 1)), kind: SuiteKind::Testinfra(path) }
            }
            "" => return Err(at("missing `type`".into()).hint(TYPES_HINT)),
            other => return Err(at(format!("unknown test type `{other}`")).hint(TYPES_HINT)),
        };
        if out.iter().any(|s| s.name == suite.name) {
            return Err(at(format!("a second suite named `{}`", suite.name))
                .hint("give each [[test]] its own `name`: JUnit case names must be unique"));
        }
        out.push(suite);
    }
    Ok(out)
}
