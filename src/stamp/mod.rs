//! The version stamp: IMAGE_ID/IMAGE_VERSION in the image's os-release (when absent) and
//! /etc/imgforge-release with version, commit, build time and source digest.

pub mod version;

use std::path::Path;

use crate::chroot::resolve::{ResolveError, Root};

/// What is stamped.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stamp {
    /// Image name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Git commit of the recipe's repository ("" if none).
    pub git_commit: String,
    /// Build time, RFC 3339 UTC.
    pub build_date: String,
    /// The upstream image's digest, "sha256:<hex>".
    pub source_digest: String,
    /// The image this one was built from (its URL, for now).
    pub ancestor: String,
}

/// Adds IMAGE_ID/IMAGE_VERSION to os-release text unless it has them. Pure.
pub fn os_release_with_stamp(text: &str, name: &str, version: &str) -> Option<String> {
    let has = |k: &str| text.lines().any(|l| l.trim_start().starts_with(&format!("{k}=")));
    if has("IMAGE_ID") || has("IMAGE_VERSION") {
        return None;
    }
    let mut out = text.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&format!("IMAGE_ID={name}\nIMAGE_VERSION={version}\n"));
    Some(out)
}

/// The /etc/imgforge-release text (os-release syntax). Pure.
pub fn release_file(s: &Stamp) -> String {
    let q = |v: &str| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""));
    format!(
        "IMGFORGE_IMAGE={}\nIMGFORGE_VERSION={}\nIMGFORGE_GIT_COMMIT={}\nIMGFORGE_BUILD_DATE={}\nIMGFORGE_SOURCE_DIGEST={}\nIMGFORGE_ANCESTOR={}\nIMGFORGE_TOOL_VERSION={}\n",
        q(&s.name),
        q(&s.version),
        q(&s.git_commit),
        q(&s.build_date),
        q(&s.source_digest),
        q(&s.ancestor),
        q(env!("CARGO_PKG_VERSION"))
    )
}

/// Writes the stamp into the image.
pub fn apply(root: &Root, s: &Stamp) -> Result<(), ResolveError> {
    // os-release is usually a symlink to ../usr/lib/os-release: resolved inside the root.
    for p in ["/etc/os-release", "/usr/lib/os-release"] {
        if let Some(bytes) = root.read(Path::new(p))? {
            let text = String::from_utf8_lossy(&bytes);
            if let Some(new) = os_release_with_stamp(&text, &s.name, &s.version) {
                root.write(Path::new(p), new.as_bytes(), 0o644)?;
            }
            break;
        }
    }
    root.write(Path::new("/etc/imgforge-release"), release_file(s).as_bytes(), 0o644)
}

/// Seconds since the epoch as RFC 3339 UTC ("2026-11-21T19:00:00Z"). Pure.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Parses what [`rfc3339`] writes (`YYYY-MM-DDTHH:MM:SSZ`) back into Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' || b[19] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|t| t.parse::<i64>().ok());
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

/// Build time: `SOURCE_DATE_EPOCH` when set (reproducible builds), else now.
pub fn build_time() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        for t in [0, 951_782_400, 1_700_000_123, 4_102_444_799] {
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        }
        assert_eq!(parse_rfc3339("2024-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("2024-01-01 00:00:00"), None);
        assert_eq!(rfc3339(1_795_287_723), "2026-11-21T19:02:03Z");
    }

    #[test]
    fn os_release_stamped_once() {
        let s = os_release_with_stamp("ID=debian", "base", "1.0").unwrap();
        assert_eq!(s, "ID=debian\nIMAGE_ID=base\nIMAGE_VERSION=1.0\n");
        assert!(os_release_with_stamp(&s, "x", "y").is_none());
    }
}
