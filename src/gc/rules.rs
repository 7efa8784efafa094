//! The janitor's rules: `[gc]` in a recipe, or in a janitor file for many images
//! (`imgforge gc --config FILE`), with command-line overrides.
//!
//! ```toml
//! [gc]
//! keep_last = 5             # per image name, among records no channel points at
//! keep_days = 30            # never retire a younger record
//! max_days = 180            # older than this: retired regardless of keep_last (guards still hold)
//! keep_released = true      # records a channel points at, or pointed at within keep_days
//! launch_template_versions = "default-and-latest"   # or "all": which versions count as in use
//! ```

use std::path::Path;

use anyhow::{Context, bail};
use serde::Deserialize;

/// `[gc]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcSection {
    /// Records to keep per image name (default 5).
    pub keep_last: Option<usize>,
    /// Minimum age in days (default 30).
    pub keep_days: Option<u64>,
    /// Maximum age in days (default: none).
    pub max_days: Option<u64>,
    /// Keep what a channel points at (default true).
    pub keep_released: Option<bool>,
    /// `default-and-latest` (default) or `all`.
    pub launch_template_versions: Option<String>,
}

/// The rules, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Records to keep per image name, among records no channel points at.
    pub keep_last: usize,
    /// Never retire a record younger than this many days.
    pub keep_days: u64,
    /// Retire records older than this many days regardless of `keep_last`.
    pub max_days: Option<u64>,
    /// Keep records a channel points at, or pointed at within `keep_days`.
    pub keep_released: bool,
    /// Every launch template version counts as in use (not only `$Default` and `$Latest`).
    pub all_launch_template_versions: bool,
    /// Retire AMIs shared with other accounts too (their use there is invisible here).
    pub include_shared: bool,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            keep_last: 5,
            keep_days: 30,
            max_days: None,
            keep_released: true,
            all_launch_template_versions: false,
            include_shared: false,
        }
    }
}

impl Rules {
    /// The defaults with `s` over them.
    pub fn from_section(s: &GcSection) -> anyhow::Result<Self> {
        let mut r = Self::default();
        if let Some(n) = s.keep_last {
            r.keep_last = n;
        }
        if let Some(d) = s.keep_days {
            r.keep_days = d;
        }
        r.max_days = s.max_days;
        if let Some(k) = s.keep_released {
            r.keep_released = k;
        }
        r.all_launch_template_versions = match s.launch_template_versions.as_deref() {
            None | Some("default-and-latest") => false,
            Some("all") => true,
            Some(other) => bail!("launch_template_versions = {other:?}: use \"default-and-latest\" or \"all\""),
        };
        r.check()?;
        Ok(r)
    }

    /// Rules that contradict each other are refused.
    pub fn check(&self) -> anyhow::Result<()> {
        if let Some(m) = self.max_days
            && m < self.keep_days
        {
            bail!("max_days = {m} is less than keep_days = {}: a record cannot be both too young and too old", self.keep_days);
        }
        Ok(())
    }
}

/// A grace period: a number with `s`, `m`, `h` or `d` (`0` alone is none). Pure.
pub fn parse_grace(t: &str) -> Result<std::time::Duration, String> {
    let t = t.trim();
    if t == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: u64 = t[..split].parse().map_err(|_| format!("`{t}` is not a duration (write 30m, 1h, 2d)"))?;
    let unit = match &t[split..] {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{t}`: the unit is s, m, h or d")),
    };
    Ok(std::time::Duration::from_secs(n * unit))
}

/// The `[gc]` of a TOML file (a recipe or a janitor file); a file without one gives the defaults.
pub fn load(path: &Path) -> anyhow::Result<Rules> {
    #[derive(Deserialize)]
    struct File {
        gc: Option<GcSection>,
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("Failed to read {}", path.display()))?;
    let f: File = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Rules::from_section(&f.gc.unwrap_or_default()).with_context(|| format!("{}: [gc]", path.display()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sections_and_their_errors() {
        let r = Rules::from_section(&GcSection { keep_last: Some(2), keep_days: Some(0), ..GcSection::default() }).unwrap();
        assert_eq!((r.keep_last, r.keep_days, r.max_days, r.keep_released), (2, 0, None, true));
        let e = Rules::from_section(&GcSection { max_days: Some(10), ..GcSection::default() }).unwrap_err();
        assert!(e.to_string().contains("max_days = 10 is less than keep_days = 30"), "{e}");
        let e = Rules::from_section(&GcSection { launch_template_versions: Some("some".into()), ..GcSection::default() }).unwrap_err();
        assert!(e.to_string().contains("\"default-and-latest\" or \"all\""), "{e}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("gc.toml"), "[gc]\nkeep_last = 3\nbogus = 1\n").unwrap();
        let e = load(&dir.path().join("gc.toml")).unwrap_err();
        assert!(format!("{e:#}").contains("bogus"), "{e:#}");
        assert_eq!(parse_grace("0"), Ok(std::time::Duration::ZERO));
        assert_eq!(parse_grace("90m"), Ok(std::time::Duration::from_secs(5400)));
        assert_eq!(parse_grace("2d"), Ok(std::time::Duration::from_secs(172_800)));
        assert!(parse_grace("1 hour").is_err() && parse_grace("h").is_err());
    }
}
