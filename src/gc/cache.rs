//! The local cache bound (`imgforge gc --cache-max GiB`): cached upstream downloads
//! (`CACHE/sha256-<hex>`) and fetched parent raws (`CACHE/parents/sha256-<hex>.raw`) are evicted
//! least recently used first (builds mark an entry used when they take it) until the cache fits,
//! except parent raws that a live record was built on: its next delta publish needs them.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// One cache entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Its path.
    pub path: PathBuf,
    /// `upstream` or `parent`.
    pub kind: &'static str,
    /// Bytes it takes on disk (allocated blocks: raws are sparse).
    pub bytes: u64,
    /// Last used (access time, seconds since the epoch).
    pub used: u64,
    /// The SHA-256 (hex) its name carries, for a parent raw.
    pub sha256: Option<String>,
}

/// The entries of the cache at `dir` (a missing cache is empty).
pub fn scan(dir: &Path) -> anyhow::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for (sub, kind) in [(dir.to_path_buf(), "upstream"), (dir.join("parents"), "parent")] {
        let Ok(rd) = std::fs::read_dir(&sub) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix("sha256-").or_else(|| name.strip_prefix("sha512-")) else { continue };
            // Never follow a symlink; only regular files are entries.
            let Ok(m) = e.path().symlink_metadata() else { continue };
            if !m.is_file() {
                continue;
            }
            let sha256 = (kind == "parent").then(|| rest.trim_end_matches(".raw").to_string());
            out.push(Entry { path: e.path(), kind, bytes: m.blocks() * 512, used: u64::try_from(m.atime()).unwrap_or(0), sha256 });
        }
    }
    Ok(out)
}

/// What to evict so that the cache takes at most `max` bytes, oldest use first, never a parent
/// raw in `needed`; and why each entry is kept. Pure.
pub fn plan(entries: &[Entry], max: u64, needed: &BTreeSet<String>) -> (Vec<Entry>, Vec<(Entry, String)>) {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by_key(|e| (e.used, e.path.clone()));
    let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
    let (mut evict, mut keep) = (Vec::new(), Vec::new());
    for e in sorted {
        if e.sha256.as_ref().is_some_and(|s| needed.contains(s)) {
            keep.push((e.clone(), "a live record was built on it (its delta parent)".to_string()));
        } else if total > max {
            total -= e.bytes;
            evict.push(e.clone());
        } else {
            keep.push((e.clone(), "the cache fits".to_string()));
        }
    }
    (evict, keep)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn e(name: &str, kind: &'static str, bytes: u64, used: u64) -> Entry {
        Entry { path: name.into(), kind, bytes, used, sha256: (kind == "parent").then(|| name.to_string()) }
    }

    #[test]
    fn oldest_first_until_it_fits_and_never_a_needed_parent() {
        let entries = [e("a", "upstream", 4, 10), e("p", "parent", 4, 5), e("b", "upstream", 4, 20), e("c", "upstream", 4, 30)];
        let (evict, keep) = plan(&entries, 8, &BTreeSet::from(["p".to_string()]));
        let names: Vec<&str> = evict.iter().map(|x| x.path.to_str().unwrap()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(keep[0].1, "a live record was built on it (its delta parent)");
        let (evict, _) = plan(&entries, 100, &BTreeSet::new());
        assert!(evict.is_empty());
    }
}
