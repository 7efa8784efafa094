//! The version and commit of a build, from the recipe or the recipe's git repository.

use std::path::Path;
use std::process::Command;

use anyhow::Context;

use crate::host::command::CommandRunExt;

/// `git describe --tags --always --dirty` in `dir`.
pub fn git_describe(dir: &Path) -> anyhow::Result<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["describe", "--tags", "--always", "--dirty"])
        .run_checked("find the version with git describe")
        .context("the recipe has no [image] version and its directory is not in a git repository; set version = \"1.0.0\" in [image]")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `git rev-parse HEAD` in `dir`, or `None` outside a repository.
pub fn git_commit(dir: &Path) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(["rev-parse", "HEAD"]).run_checked("read the git commit").ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The tag at HEAD in `dir` (`git describe --tags --exact-match`), or `None` (no repository, no
/// tag there).
pub fn git_tag(dir: &Path) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["describe", "--tags", "--exact-match", "HEAD"])
        .run_checked("read the git tag")
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string()).filter(|t| !t.is_empty())
}
