//! What an image holds, read at seal time: its installed packages (dpkg's status database) and
//! its kernels.

use std::path::Path;

use crate::chroot::resolve::{ResolveError, Root};

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Package {
    /// Name.
    pub name: String,
    /// Version (Debian or RPM form).
    pub version: String,
    /// Architecture (`amd64`, `all`…).
    pub arch: String,
    /// Source package, when it differs from the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// Installed packages from dpkg status text, sorted by name. Pure.
pub fn parse_dpkg_status(text: &str) -> Vec<Package> {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let field = |k: &str| para.lines().find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix(':')).map(|v| v.trim().to_string()));
        let installed = field("Status").is_some_and(|s| s.split_whitespace().nth(2) == Some("installed"));
        let (Some(name), Some(version)) = (field("Package"), field("Version")) else { continue };
        if !installed {
            continue;
        }
        // "Source: openssl (3.0.11-1)" names the source and its version.
        let source = field("Source").map(|s| s.split_whitespace().next().unwrap_or_default().to_string()).filter(|s| *s != name);
        out.push(Package { name, version, arch: field("Architecture").unwrap_or_default(), source });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.arch.cmp(&b.arch)));
    out
}

/// The image's installed packages (empty for an image without dpkg).
pub fn installed(root: &Root) -> Result<Vec<Package>, ResolveError> {
    let text = root.read(Path::new("/var/lib/dpkg/status"))?.unwrap_or_default();
    Ok(parse_dpkg_status(&String::from_utf8_lossy(&text)))
}

/// The image's distribution: os-release's `ID` (`debian`, `ubuntu`…), when it has one.
pub fn distribution(root: &Root) -> Result<Option<String>, ResolveError> {
    for p in ["/etc/os-release", "/usr/lib/os-release"] {
        if let Some(bytes) = root.read(Path::new(p))? {
            return Ok(os_release_id(&String::from_utf8_lossy(&bytes)));
        }
    }
    Ok(None)
}

/// `ID` of os-release text. Pure.
pub fn os_release_id(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("ID="))
        .map(|v| v.trim().trim_matches(['"', '\'']).to_string())
        .filter(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
}

/// Kernel versions in the image: module trees under /lib/modules and /boot/vmlinuz-*; sorted,
/// without repeats.
pub fn kernels(root: &Root) -> Result<Vec<String>, ResolveError> {
    let mut v: Vec<String> = Vec::new();
    for dir in ["/usr/lib/modules", "/lib/modules"] {
        v.extend(root.list(Path::new(dir))?.into_iter().map(|n| n.to_string_lossy().into_owned()));
    }
    v.extend(
        root.list(Path::new("/boot"))?.into_iter().filter_map(|n| n.to_str().and_then(|s| s.strip_prefix("vmlinuz-")).map(str::to_string)),
    );
    v.sort();
    v.dedup();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Package: openssl\nStatus: install ok installed\nPriority: optional\nArchitecture: amd64\nVersion: 3.0.11-1~deb12u2\nDescription: x\n more\n\n\
        Package: libssl3\nStatus: install ok installed\nArchitecture: amd64\nSource: openssl (3.0.11-1~deb12u2)\nVersion: 3.0.11-1~deb12u2\n\n\
        Package: gone\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1.0\n\n\
        Package: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.4+deb12u5\n";

    #[test]
    fn distribution_id() {
        assert_eq!(os_release_id("NAME=\"Debian\"\nID=debian\nVERSION_ID=\"12\"\n").as_deref(), Some("debian"));
        assert_eq!(os_release_id("ID=\"ubuntu\"\nID_LIKE=debian\n").as_deref(), Some("ubuntu"));
        assert_eq!(os_release_id("ID=\"a/b\"\n"), None);
    }

    #[test]
    fn installed_packages_with_source() {
        let p = parse_dpkg_status(STATUS);
        let names: Vec<&str> = p.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["base-files", "libssl3", "openssl"]);
        assert_eq!(p[1].source.as_deref(), Some("openssl"));
        assert_eq!(p[2].source, None);
        assert_eq!(p[2].version, "3.0.11-1~deb12u2");
    }
}
