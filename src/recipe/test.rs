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
//!
//! [[test]]
//! type = "serverspec"                # RSpec/ServerSpec specs; offline (exec backend in the
//! specs = "spec/base"                # sandbox) or booted (ssh backend)
//! stage = "offline"
//!
//! [[test]]
//! type = "testinfra"                 # pytest-testinfra; chroot backend or ssh
//! tests = "tests/image"
//! stage = "boot"
//!
//! [[test]]
//! type = "boot"                      # boot a throwaway copy in qemu (KVM, else TCG)
//! timeout = "6m"
//! expect = { system_running = true, cloud_init = "done", ssh = true }
//! ```
//!
//! `stage = "boot"` suites need a booted image: without a `type = "boot"` table the image is
//! booted with the default expectations.

use std::path::Path;

use serde::Deserialize;

use super::error::RecipeError;
use super::parse::{Src, typed};
use crate::imagetest::plan::{BootSpec, Checks, CommandCheck, FileCheck, Stage, Suite, SuiteKind};
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

const TYPES_HINT: &str = "use type = \"checks\", \"testinfra\", \"serverspec\" or \"boot\"";

/// `type = "testinfra"` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestinfraTest {
    name: Option<String>,
    /// A test file or directory, relative to the recipe.
    tests: String,
    stage: Option<String>,
}

/// `type = "serverspec"` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerspecTest {
    name: Option<String>,
    /// A directory of `*_spec.rb` files (or one file), relative to the recipe.
    specs: String,
    stage: Option<String>,
}

/// `type = "boot"` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BootTest {
    name: Option<String>,
    stage: Option<String>,
    /// "6m", "300s", "1h" (default 10m).
    timeout: Option<String>,
    #[serde(default)]
    expect: Expect,
}

/// `expect = { … }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    system_running: Option<bool>,
    /// "done", or false to skip the check.
    cloud_init: Option<toml::Value>,
    ssh: Option<bool>,
}

/// A duration: digits with `s`, `m` or `h`. Pure.
fn parse_duration(t: &str) -> Result<std::time::Duration, String> {
    let (n, unit) = t.trim().split_at(t.trim().find(|c: char| !c.is_ascii_digit()).unwrap_or(t.trim().len()));
    let n: u64 = n.parse().map_err(|_| format!("`{t}` is not a duration"))?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("`{t}`: the unit is s, m or h")),
    };
    if !(10..=4 * 3600).contains(&secs) {
        return Err(format!("`{t}` is not between 10s and 4h"));
    }
    Ok(std::time::Duration::from_secs(secs))
}

/// `stage`: offline (the default) or boot.
fn parse_stage(s: Option<&str>) -> Result<Stage, String> {
    match s {
        None | Some("offline") => Ok(Stage::Offline),
        Some("boot") => Ok(Stage::Boot),
        Some(other) => Err(format!("stage `{other}` is not \"offline\" or \"boot\"")),
    }
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
                    stage: Stage::Offline,
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
                let stage = parse_stage(t.stage.as_deref()).map_err(|e| at(e).hint("stage = \"offline\" or \"boot\""))?;
                let path = dir.join(&t.tests);
                if !path.exists() {
                    return Err(at(format!("tests not found: {} (looked at {})", t.tests, path.display()))
                        .hint("`tests` is a file or directory relative to the recipe"));
                }
                Suite { name: t.name.unwrap_or_else(|| format!("testinfra #{}", i + 1)), stage, kind: SuiteKind::Testinfra(path) }
            }
            "serverspec" => {
                let t: ServerspecTest = typed(src, t, "test", i)?;
                let stage = parse_stage(t.stage.as_deref()).map_err(|e| at(e).hint("stage = \"offline\" or \"boot\""))?;
                let path = dir.join(&t.specs);
                let has_specs = path.is_file() || std::fs::read_dir(&path).is_ok_and(|mut d| d.next().is_some());
                if !has_specs {
                    return Err(at(format!("specs not found: {} (looked at {})", t.specs, path.display()))
                        .hint("`specs` is a directory of *_spec.rb files (or one file) relative to the recipe"));
                }
                Suite { name: t.name.unwrap_or_else(|| format!("serverspec #{}", i + 1)), stage, kind: SuiteKind::Serverspec(path) }
            }
            "boot" => {
                let b: BootTest = typed(src, t, "test", i)?;
                if let Some(s) = b.stage.as_deref().filter(|s| *s != "boot") {
                    return Err(at(format!("stage `{s}`: a boot suite is the boot stage")).hint("remove `stage`"));
                }
                let mut spec = BootSpec::default();
                if let Some(t) = &b.timeout {
                    spec.timeout = parse_duration(t).map_err(|e| at(format!("timeout {e}")).hint("write it like \"6m\" or \"300s\""))?;
                }
                spec.system_running = b.expect.system_running.unwrap_or(true);
                spec.ssh = b.expect.ssh.unwrap_or(true);
                spec.cloud_init = match &b.expect.cloud_init {
                    None => Some("done".into()),
                    Some(toml::Value::Boolean(false)) => None,
                    Some(toml::Value::String(s)) if ["done", "disabled"].contains(&s.as_str()) => Some(s.clone()),
                    Some(v) => {
                        return Err(at(format!("expect.cloud_init = {v}"))
                            .hint("cloud_init = \"done\" (the default), \"disabled\" or false (not checked)"));
                    }
                };
                if out.iter().any(|s| matches!(s.kind, SuiteKind::Boot(_))) {
                    return Err(at("a second boot suite".into())
                        .hint("one [[test]] type = \"boot\" per recipe: every boot-stage suite runs on that boot"));
                }
                Suite { name: b.name.unwrap_or_else(|| "boot".into()), stage: Stage::Boot, kind: SuiteKind::Boot(spec) }
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
    let boot_stage = out.iter().filter(|s| s.stage == Stage::Boot && !matches!(s.kind, SuiteKind::Boot(_))).count();
    if let Some(b) = out.iter().find(|s| matches!(&s.kind, SuiteKind::Boot(spec) if !spec.ssh))
        && boot_stage > 0
    {
        return Err(src
            .at(
                tables.first().map_or(0..0, |t| t.span()),
                format!(
                    "[[test]]: {boot_stage} suite(s) run at stage \"boot\" over SSH, but the boot suite `{}` has expect.ssh = false",
                    b.name
                ),
            )
            .hint("set expect.ssh = true, or run those suites offline"));
    }
    if boot_stage > 0 && !out.iter().any(|s| matches!(s.kind, SuiteKind::Boot(_))) {
        out.push(Suite { name: "boot".into(), stage: Stage::Boot, kind: SuiteKind::Boot(BootSpec::default()) });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("6m"), Ok(std::time::Duration::from_secs(360)));
        assert_eq!(parse_duration("300s"), Ok(std::time::Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(std::time::Duration::from_secs(3600)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("6 min").is_err());
        assert!(parse_duration("9h").is_err());
    }
}
