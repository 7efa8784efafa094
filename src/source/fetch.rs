//! Fetching: local files are read in place; http(s) downloads go to a content-addressed cache
//! (`<cache>/<algo>-<hex>`), written under a temporary name, hashed as they stream, and renamed
//! into place only when the digest matches. A mismatch caches nothing.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::io::hash::HashingWriter;
use crate::source::plan::Location;

use super::sums::Algo;

/// Small files (sums, signatures, keys) larger than this are refused.
const SMALL_LIMIT: u64 = 16 << 20;

/// Fetching failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Reading a local file failed.
    #[error("Failed to read {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// An HTTP request failed.
    #[error("Failed to download {url}: {message}")]
    Http {
        /// URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// Writing into the cache failed.
    #[error("Failed to write into the download cache {dir}: {source}")]
    Cache {
        /// Cache dir.
        dir: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A small file was too big.
    #[error("Failed to fetch {what}: larger than {limit} bytes")]
    TooLarge {
        /// What.
        what: String,
        /// Limit.
        limit: u64,
    },
}

/// The default cache directory: `$IMGFORGE_CACHE_DIR`, else `/var/cache/imgforge` for root,
/// else `$XDG_CACHE_HOME/imgforge` or `~/.cache/imgforge`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("IMGFORGE_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/cache/imgforge");
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("imgforge")
}

/// Reads a small file (checksums, signature) from a location.
pub fn fetch_small(loc: &Location) -> Result<Vec<u8>, FetchError> {
    match loc {
        Location::Path(p) => {
            let f = File::open(p).map_err(|source| FetchError::Read { path: p.clone(), source })?;
            let mut buf = Vec::new();
            f.take(SMALL_LIMIT + 1).read_to_end(&mut buf).map_err(|source| FetchError::Read { path: p.clone(), source })?;
            if buf.len() as u64 > SMALL_LIMIT {
                return Err(FetchError::TooLarge { what: p.display().to_string(), limit: SMALL_LIMIT });
            }
            Ok(buf)
        }
        Location::Url(u) => {
            let mut buf = Vec::new();
            let mut r = http_get(u)?;
            (&mut r).take(SMALL_LIMIT + 1).read_to_end(&mut buf).map_err(|e| http_err(u, &e))?;
            if buf.len() as u64 > SMALL_LIMIT {
                return Err(FetchError::TooLarge { what: u.clone(), limit: SMALL_LIMIT });
            }
            Ok(buf)
        }
    }
}

fn http_err(url: &str, e: &dyn std::fmt::Display) -> FetchError {
    FetchError::Http { url: url.to_string(), message: e.to_string() }
}

fn http_get(url: &str) -> Result<impl Read + use<>, FetchError> {
    let resp = ureq::get(url).call().map_err(|e| http_err(url, &e))?;
    Ok(resp.into_body().into_reader())
}

/// Marks a cache entry used now (its access time), so that `imgforge gc --cache-max` evicts the
/// least recently used entries first whatever the filesystem's atime policy. Best effort.
pub fn mark_used(path: &Path) {
    let now = std::time::SystemTime::now();
    let r = std::fs::File::options().write(true).open(path).and_then(|f| f.set_times(std::fs::FileTimes::new().set_accessed(now)));
    if let Err(e) = r {
        tracing::debug!("could not mark {} used: {e}", path.display());
    }
}

/// Path of a cached, verified download.
pub fn cached(cache: &Path, algo: Algo, hex: &str) -> PathBuf {
    cache.join(format!("{}-{}", algo.to_string().to_ascii_lowercase(), hex))
}

/// Downloads `url` into the cache while hashing with `algo`. Returns the temporary file and the
/// digest; the caller compares and then `commit`s or drops it (which deletes it).
pub fn download(
    url: &str,
    cache: &Path,
    algo: Algo,
    progress: &std::sync::atomic::AtomicU64,
) -> Result<(tempfile::NamedTempFile, String), FetchError> {
    let cache_err = |source| FetchError::Cache { dir: cache.to_path_buf(), source };
    std::fs::create_dir_all(cache).map_err(cache_err)?;
    let tmp = tempfile::Builder::new().prefix(".download-").tempfile_in(cache).map_err(cache_err)?;
    let mut reader = http_get(url)?;
    // Hashes and counts what reaches the cache file.
    let mut out = HashingWriter::new(tmp, algo, Some(progress));
    let mut buf = vec![0u8; 1 << 20];
    loop {
        if crate::host::signals::stop_requested() {
            return Err(http_err(url, &"interrupted"));
        }
        let n = reader.read(&mut buf).map_err(|e| http_err(url, &e))?;
        if n == 0 {
            break;
        }
        out.write_all(buf.get(..n).unwrap_or_default()).map_err(cache_err)?;
    }
    Ok(out.finish())
}
