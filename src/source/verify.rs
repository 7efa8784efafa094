//! Source verification, fail closed: the checksums file's signature (detached, or the file
//! clearsigned) against the pinned key when one is given, then the image digest against its
//! checksums entry (or the pinned digest).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use anyhow::{Context, bail};

use crate::progress::Events;
use crate::source::plan::Location;
use crate::source::plan::SourcePlan;

use super::fetch::{cached, download, fetch_small};
use super::signature;
use super::sums::{self, Algo, Mismatch};

/// A verified upstream image.
#[derive(Debug, Clone)]
pub struct VerifiedSource {
    /// Local file to read (the original path, or the cache entry).
    pub path: PathBuf,
    /// Where it came from.
    pub url: String,
    /// Digest algorithm.
    pub algo: Algo,
    /// Verified digest (hex).
    pub digest: String,
    /// The checksums file's location, if one was used.
    pub sums_url: Option<String>,
    /// Fingerprint of the key that signed the checksums.
    pub key_fingerprint: Option<String>,
}

fn basename(loc: &Location) -> String {
    let s = loc.to_string();
    let s = s.split(['?', '#']).next().unwrap_or_default().trim_end_matches('/').to_string();
    s.rsplit('/').next().unwrap_or_default().to_string()
}

/// The expected digest: from the (signature-checked) checksums file or the recipe. Reads only
/// the small files (checksums, signature), never the image.
pub fn expected(plan: &SourcePlan) -> anyhow::Result<(Algo, String, Option<String>, Option<String>)> {
    if let Some(p) = &plan.pinned {
        let algo = if p.algo == "sha512" { Algo::Sha512 } else { Algo::Sha256 };
        return Ok((algo, p.hex.clone(), None, None));
    }
    let Some(sums_loc) = &plan.checksums else {
        bail!("no checksums and no pinned digest: refusing an unverified image");
    };
    let sums_bytes = fetch_small(sums_loc)?;
    let (text, fingerprint) = match (&plan.signature, &plan.signing_key) {
        (Some(sig_loc), Some(key_path)) => {
            let sig = fetch_small(sig_loc)?;
            let key = read_key(key_path)?;
            let v = signature::verify_detached(&sums_bytes, &sig, &key)
                .with_context(|| format!("signature check of {sums_loc} with {} failed (signature {sig_loc})", key_path.display()))?;
            tracing::info!("checksums signed by pinned key {}", v.fingerprint);
            (utf8(sums_bytes, sums_loc)?, Some(v.fingerprint))
        }
        (None, Some(key_path)) => {
            // Only the signed part is used: text around a clearsigned block proves nothing.
            let key = read_key(key_path)?;
            let signed = utf8(sums_bytes, sums_loc)?;
            if !signed.trim_start().starts_with("-----BEGIN PGP SIGNED MESSAGE-----") {
                bail!(
                    "{sums_loc} is not clearsigned, and the recipe gives no detached signature for it: add signature = \"<checksums>.gpg\" (or .asc, .sig)"
                );
            }
            let (text, v) = signature::verify_cleartext(&signed, &key)
                .with_context(|| format!("signature check of the clearsigned {sums_loc} with {} failed", key_path.display()))?;
            tracing::info!("checksums clearsigned by pinned key {}", v.fingerprint);
            (text, Some(v.fingerprint))
        }
        _ => (utf8(sums_bytes, sums_loc)?, None),
    };
    let entry = sums::find(&text, &basename(&plan.image), &basename(sums_loc)).with_context(|| format!("in checksums file {sums_loc}"))?;
    Ok((entry.algo, entry.digest, Some(sums_loc.to_string()), fingerprint))
}

/// The pinned signing key's bytes (armored or binary), for verification and `validate`.
pub fn read_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("Failed to read the signing key {}", path.display()))
}

fn utf8(bytes: Vec<u8>, loc: &Location) -> anyhow::Result<String> {
    String::from_utf8(bytes).with_context(|| format!("{loc} is not UTF-8 text"))
}

/// Digests the local image `p` under the "verify" bar, whose position `counter` advances as the
/// bytes are hashed.
fn digest_local(p: &Path, algo: Algo, events: &Events, counter: &AtomicU64) -> anyhow::Result<String> {
    let size = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    events
        .with_bar("verify", size, counter, || crate::io::hash::digest_file(p, algo, Some(counter)))
        .with_context(|| format!("Failed to read {}", p.display()))
}

/// Verifies (and for URLs, fetches into `cache`) the source image.
pub fn verify_source(plan: &SourcePlan, cache: &Path, events: &Events) -> anyhow::Result<VerifiedSource> {
    let (algo, want, sums_url, key_fingerprint) = expected(plan)?;
    let shown_sums = sums_url.clone().unwrap_or_else(|| "the recipe".to_string());
    let mismatch =
        |actual: String| Mismatch { expected: want.clone(), actual, algo, file: plan.image.to_string(), sums_url: shown_sums.clone() };
    let path = match &plan.image {
        Location::Path(p) => {
            let got = digest_local(p, algo, events, &AtomicU64::new(0))?;
            if got != want {
                return Err(mismatch(got).into());
            }
            p.clone()
        }
        Location::Url(u) => {
            let dest = cached(cache, algo, &want);
            if dest.is_file() {
                tracing::info!("using cached download {}", dest.display());
                crate::source::fetch::mark_used(&dest);
                dest
            } else {
                let counter = AtomicU64::new(0);
                let (tmp, got) = events.with_bar("fetch", 0, &counter, || download(u, cache, algo, &counter))?;
                if got != want {
                    // `tmp` is dropped here: nothing of a bad download stays in the cache.
                    return Err(mismatch(got).into());
                }
                tmp.persist(&dest).with_context(|| format!("Failed to store {} in the cache", dest.display()))?;
                dest
            }
        }
    };
    Ok(VerifiedSource { path, url: plan.image.to_string(), algo, digest: want, sums_url, key_fingerprint })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    /// The verify bar moves: its counter ends at the image's size (it stayed at 0 while
    /// `sums::digest_file` hashed, which counted nothing).
    #[test]
    fn verify_bar_counter_reaches_the_image_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upstream.raw");
        let data: Vec<u8> = (0..(3 << 20) + 4321).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let counter = AtomicU64::new(0);
        let got = digest_local(&path, Algo::Sha256, &Events::new(false), &counter).unwrap();
        assert_eq!(got, crate::io::hash::digest_file(&path, Algo::Sha256, None).unwrap());
        assert_eq!(counter.load(Ordering::Relaxed), data.len() as u64);
    }
}
