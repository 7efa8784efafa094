//! What to fetch and how to verify it: the source half of a validated build plan (the recipe
//! layer builds it; `source` only reads it).

use std::path::PathBuf;

/// Where something comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local file (from a plain path or `file://`).
    Path(PathBuf),
    /// An http(s) URL.
    Url(String),
}

/// For people, logs and the manifest: a URL without its user info, query and fragment (a
/// presigned URL's signature or a password must not reach a log, a manifest or an image).
impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Path(p) => write!(f, "{}", p.display()),
            Self::Url(u) => f.write_str(&public_url(u)),
        }
    }
}

impl Location {
    /// What the image itself records as its ancestor: the public URL, or only the file name of a
    /// local file (a build host's paths must not ship in the image).
    pub fn ancestor(&self) -> String {
        match self {
            Self::Path(p) => p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned()),
            Self::Url(_) => self.to_string(),
        }
    }
}

/// `scheme://user:pass@host/path?query#frag` → `scheme://host/path`. Pure.
pub fn public_url(u: &str) -> String {
    let u = u.split(['?', '#']).next().unwrap_or_default();
    match u.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => u.to_string(),
    }
}

/// A digest given directly in the recipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedDigest {
    /// "sha256" or "sha512".
    pub algo: &'static str,
    /// Lowercase hex.
    pub hex: String,
}

/// The upstream image and how to verify it.
#[derive(Debug, Clone)]
pub struct SourcePlan {
    /// The image.
    pub image: Location,
    /// SHA256SUMS/SHA512SUMS file.
    pub checksums: Option<Location>,
    /// Or a digest from the recipe.
    pub pinned: Option<PinnedDigest>,
    /// Detached signature over the checksums file.
    pub signature: Option<Location>,
    /// Pinned public key.
    pub signing_key: Option<PathBuf>,
}
