//! `<name>.manifest.json`: what was built, from what, how, and where it went.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::provision::StepReport;
use crate::seal::SealSummary;

/// One output file.
#[derive(Debug, Clone, Serialize)]
pub struct OutputFile {
    /// Format name.
    pub format: String,
    /// Path.
    pub path: String,
    /// Size in bytes (apparent).
    pub size: u64,
    /// SHA-256 of the content.
    pub sha256: String,
}

/// The upstream image.
#[derive(Debug, Clone, Serialize)]
pub struct SourceInfo {
    /// Where it came from.
    pub url: String,
    /// "sha256:<hex>" or "sha512:<hex>".
    pub digest: String,
    /// The checksums file used.
    pub checksums: Option<String>,
    /// Fingerprint of the key that signed the checksums.
    pub signing_key_fingerprint: Option<String>,
}

/// The manifest.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    /// Schema version of this file.
    pub schema: u32,
    /// Image name.
    pub name: String,
    /// Version.
    pub version: String,
    /// The recipe's description.
    pub description: Option<String>,
    /// Git commit of the recipe's repository.
    pub git_commit: Option<String>,
    /// Recipe path and digest.
    pub recipe: String,
    /// "sha256:<hex>" of the recipe text.
    pub recipe_digest: String,
    /// Build time (RFC 3339).
    pub build_date: String,
    /// Upstream.
    pub source: SourceInfo,
    /// CPU architecture read from the image's own executables (x86_64, arm64, i386, …).
    pub architecture: Option<String>,
    /// Cloud drivers in every kernel of the image (absent when it has no kernel modules).
    pub drivers: Option<crate::image::drivers::Drivers>,
    /// Outputs.
    pub outputs: Vec<OutputFile>,
    /// Provisioners with their durations.
    pub provisioners: Vec<StepReport>,
    /// Seconds per build step.
    pub steps: BTreeMap<String, f64>,
    /// What sealing did.
    pub seal: SealSummary,
    /// imgforge version.
    pub imgforge_version: String,
}

/// Writes the manifest under a temporary name and renames it into place.
pub fn write<T: Serialize>(m: &T, dest: &Path) -> anyhow::Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(".manifest-").tempfile_in(dir)?;
    serde_json::to_writer_pretty(&mut tmp, m)?;
    tmp.write_all(b"\n")?;
    tmp.as_file().sync_all()?;
    tmp.persist(dest)?;
    Ok(())
}
