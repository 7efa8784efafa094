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
    /// The image this one was built from: the upstream's public URL or file name, or the
    /// parent's `NAME VERSION`.
    pub ancestor: String,
    /// A layered image: the parent's registry record id, and the name and version the parent
    /// stamped into os-release (replaced by this image's).
    pub parent: Option<(String, String, String)>,
}

/// Adds IMAGE_ID/IMAGE_VERSION to os-release text unless it has them; replaces them when they
/// are the parent's stamp (`parent`: its name and version). Pure.
pub fn os_release_with_stamp(text: &str, name: &str, version: &str, parent: Option<(&str, &str)>) -> Option<String> {
    let value =
        |k: &str| text.lines().find_map(|l| l.trim_start().strip_prefix(&format!("{k}=")).map(|v| v.trim().trim_matches('"').to_string()));
    let (id, ver) = (value("IMAGE_ID"), value("IMAGE_VERSION"));
    let text = match parent {
        Some((pn, pv)) if id.as_deref() == Some(pn) && ver.as_deref() == Some(pv) => text
            .lines()
            .filter(|l| !l.trim_start().starts_with("IMAGE_ID=") && !l.trim_start().starts_with("IMAGE_VERSION="))
            .map(|l| format!("{l}\n"))
            .collect::<String>(),
        _ if id.is_some() || ver.is_some() => return None,
        _ => text.to_string(),
    };
    let mut out = text;
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
        "IMGFORGE_IMAGE={}\nIMGFORGE_VERSION={}\nIMGFORGE_GIT_COMMIT={}\nIMGFORGE_BUILD_DATE={}\nIMGFORGE_SOURCE_DIGEST={}\nIMGFORGE_ANCESTOR={}\n{}IMGFORGE_TOOL_VERSION={}\n",
        q(&s.name),
        q(&s.version),
        q(&s.git_commit),
        q(&s.build_date),
        q(&s.source_digest),
        q(&s.ancestor),
        s.parent.as_ref().map_or(String::new(), |(id, _, _)| format!("IMGFORGE_ANCESTOR_RECORD={}\n", q(id))),
        q(env!("CARGO_PKG_VERSION"))
    )
}

/// Writes the stamp into the image.
pub fn apply(root: &Root, s: &Stamp) -> Result<(), ResolveError> {
    // os-release is usually a symlink to ../usr/lib/os-release: resolved inside the root.
    for p in ["/etc/os-release", "/usr/lib/os-release"] {
        if let Some(bytes) = root.read(Path::new(p))? {
            let text = String::from_utf8_lossy(&bytes);
            let parent = s.parent.as_ref().map(|(_, n, v)| (n.as_str(), v.as_str()));
            if let Some(new) = os_release_with_stamp(&text, &s.name, &s.version, parent) {
                root.write(Path::new(p), new.as_bytes(), 0o644)?;
            }
            break;
        }
    }
    // imgforge's own file: whatever stands there (a symlink, also one aimed out of the image) is
    // replaced, never followed.
    root.write_replacing(Path::new("/etc/imgforge-release"), release_file(s).as_bytes(), 0o644)
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
    std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.parse().ok()).unwrap_or_else(unix_now)
}

/// Now, in seconds since the epoch (0 on a clock before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
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
        let s = os_release_with_stamp("ID=debian", "base", "1.0", None).unwrap();
        assert_eq!(s, "ID=debian\nIMAGE_ID=base\nIMAGE_VERSION=1.0\n");
        assert!(os_release_with_stamp(&s, "x", "y", None).is_none());
        // A child replaces its parent's stamp, and only its parent's.
        assert_eq!(os_release_with_stamp(&s, "app", "2", Some(("base", "1.0"))).unwrap(), "ID=debian\nIMAGE_ID=app\nIMAGE_VERSION=2\n");
        assert!(os_release_with_stamp(&s, "app", "2", Some(("other", "1.0"))).is_none());
    }
}
