//! Local crash leftovers: the working files of builds that died, in the output directories of
//! the registry's records and in the cache — imgforge's hidden working files (`.imgforge-work-*`
//! working disks, `.download-*` / `.incoming-*` partial downloads, `.manifest-*` unfinished
//! manifests) older than the grace period that no process has open.
//!
//! Temporary directories (`/tmp/imgforge-*`) are not swept here: a live build's private mounts
//! are invisible from this namespace, and removing a directory another namespace mounted on
//! would detach that mount. The mount directories of dead builds are removed by the next build.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

/// Hidden working files imgforge writes beside outputs and in the cache.
const WORK_PREFIXES: [&str; 4] = [".imgforge-work-", ".download-", ".incoming-", ".manifest-"];

/// One local leftover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Local {
    /// Its path.
    pub path: PathBuf,
    /// `file`.
    pub kind: &'static str,
    /// Bytes it takes.
    pub bytes: u64,
    /// Last modified (seconds since the epoch).
    pub modified: u64,
}

/// The local leftovers in `dirs` (output directories, the cache).
pub fn find(dirs: &BTreeSet<PathBuf>, grace: Duration) -> Vec<Local> {
    let now = crate::stamp::unix_now();
    let old = |m: &std::fs::Metadata| {
        let t = m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(now, |d| d.as_secs());
        (now.saturating_sub(t) >= grace.as_secs()).then_some(t)
    };
    let mut out = Vec::new();
    for dir in dirs {
        let Ok(rd) = std::fs::read_dir(dir) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !WORK_PREFIXES.iter().any(|p| name.starts_with(p)) {
                continue;
            }
            let Ok(m) = e.path().symlink_metadata() else { continue };
            let Some(modified) = old(&m).filter(|_| m.is_file()) else { continue };
            if !crate::host::procscan::users_of(&e.path()).is_empty() {
                continue;
            }
            out.push(Local { path: e.path(), kind: "file", bytes: std::os::unix::fs::MetadataExt::blocks(&m) * 512, modified });
        }
    }
    out
}

/// Removes a leftover, checking again that no process has it open.
pub fn remove(l: &Local) -> anyhow::Result<String> {
    let users = crate::host::procscan::users_of(&l.path);
    if !users.is_empty() {
        return Ok(format!("kept {}{}", l.path.display(), crate::host::procscan::describe(&users)));
    }
    match std::fs::remove_file(&l.path) {
        Ok(()) => Ok(format!("removed leftover {} {}", l.kind, l.path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(format!("{} was already gone", l.path.display())),
        Err(e) => Err(e).with_context(|| format!("Failed to remove {}", l.path.display())),
    }
}
