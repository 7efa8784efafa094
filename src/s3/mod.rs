//! Artifacts to S3: `imgforge export … --upload s3://bucket/prefix` (and `[output] upload`)
//! sends each output with a multipart upload straight from the file just written (no second
//! local copy), every part with its SHA-256 checksum, parts in parallel, the upload aborted
//! when a part fails. And back: [`download`] fetches a raw (a layered build's parent) into a
//! sparse file, hashing it on the way.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};

use crate::aws::retry::{Policy, retry};

/// Parts in flight per file (each is held in memory once).
pub const PARALLEL_PARTS: usize = 4;
/// Smallest part (S3's minimum is 5 MiB, except the last).
pub const MIN_PART: u64 = 16 << 20;

/// `s3://bucket/prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    /// Bucket.
    pub bucket: String,
    /// Key prefix, without leading or trailing `/` (may be empty).
    pub prefix: String,
}

impl S3Url {
    /// The key of a file uploaded under this prefix.
    pub fn key_for(&self, file_name: &str) -> String {
        if self.prefix.is_empty() { file_name.to_string() } else { format!("{}/{file_name}", self.prefix) }
    }
}

/// Parses `s3://bucket[/prefix]`. Pure.
pub fn parse_url(s: &str) -> Result<S3Url, String> {
    let rest = s.strip_prefix("s3://").ok_or_else(|| format!("upload target `{s}` is not an s3://bucket/prefix URL"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let ok = (3..=63).contains(&bucket.len())
        && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && bucket.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && bucket.as_bytes().last().is_some_and(u8::is_ascii_alphanumeric);
    if !ok {
        return Err(format!("upload target `{s}`: `{bucket}` is not an S3 bucket name (3-63 of a-z 0-9 . -)"));
    }
    Ok(S3Url { bucket: bucket.to_string(), prefix: prefix.trim_matches('/').to_string() })
}

/// Part size for a file: at least [`MIN_PART`], and few enough parts (S3 allows 10 000).
pub fn part_size(len: u64) -> u64 {
    len.div_ceil(10_000).div_ceil(1 << 20).saturating_mul(1 << 20).max(MIN_PART)
}

/// One uploaded file.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct Uploaded {
    /// Local file.
    pub path: String,
    /// `s3://bucket/key`.
    pub url: String,
    /// Bytes.
    pub size: u64,
    /// Parts.
    pub parts: usize,
}

/// An S3 client from the AWS configuration, with `endpoint_url` when given.
async fn client(endpoint_url: Option<&str>) -> anyhow::Result<aws_sdk_s3::Client> {
    let cfg = crate::aws::client::load(None, endpoint_url).await?;
    let mut conf = aws_sdk_s3::config::Builder::from(&cfg);
    if cfg.endpoint_url().is_some() {
        // Custom endpoints (emulators, MinIO) rarely resolve bucket subdomains.
        conf = conf.force_path_style(true);
    }
    Ok(aws_sdk_s3::Client::from_conf(conf.build()))
}

/// `s3://bucket/key` → (bucket, key). Pure.
pub fn split_object_url(url: &str) -> Result<(String, String), String> {
    let rest = url.strip_prefix("s3://").ok_or_else(|| format!("{url} is not an s3:// URL"))?;
    match rest.split_once('/') {
        Some((b, k)) if !b.is_empty() && !k.is_empty() => Ok((b.to_string(), k.to_string())),
        _ => Err(format!("{url} names no object (s3://bucket/key)")),
    }
}

/// Downloads the object at `url` into `dest` (a new file; zero runs of 64 KiB are left as
/// holes) and returns its SHA-256 (hex). The caller compares it with the one it expects.
pub fn download(url: &str, dest: &Path, endpoint_url: Option<&str>) -> anyhow::Result<String> {
    use std::io::{Seek, SeekFrom, Write};
    let (bucket, key) = split_object_url(url).map_err(|e| anyhow::anyhow!(e))?;
    let rt = crate::aws::runtime()?;
    rt.block_on(async {
        let s3 = client(endpoint_url).await?;
        let got =
            retry(&Policy::DEFAULT, Instant::now(), &|| format!("GetObject {url}"), || s3.get_object().bucket(&bucket).key(&key).send())
                .await
                .map_err(|f| anyhow::anyhow!("Failed to download {url}: {f}"))?;
        let mut file = File::create(dest).with_context(|| format!("Failed to create {}", dest.display()))?;
        let mut body = got.body;
        let mut hash = Sha256::new();
        let mut len = 0u64;
        const CHUNK: usize = 64 << 10;
        let mut pending: Vec<u8> = Vec::with_capacity(CHUNK);
        let flush = |buf: &[u8], file: &mut File| -> std::io::Result<()> {
            if buf.iter().all(|b| *b == 0) {
                file.seek(SeekFrom::Current(i64::try_from(buf.len()).unwrap_or(i64::MAX))).map(|_| ())
            } else {
                file.write_all(buf)
            }
        };
        while let Some(bytes) = body.try_next().await.with_context(|| format!("Failed to read {url}"))? {
            hash.update(&bytes);
            len += bytes.len() as u64;
            let mut rest: &[u8] = &bytes;
            while !rest.is_empty() {
                let take = (CHUNK - pending.len()).min(rest.len());
                pending.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if pending.len() == CHUNK {
                    flush(&pending, &mut file).with_context(|| format!("Failed to write {}", dest.display()))?;
                    pending.clear();
                }
            }
        }
        flush(&pending, &mut file).with_context(|| format!("Failed to write {}", dest.display()))?;
        file.set_len(len).with_context(|| format!("Failed to size {}", dest.display()))?;
        file.sync_all().with_context(|| format!("Failed to sync {}", dest.display()))?;
        Ok(hex::encode(hash.finalize()))
    })
}

/// Deletes the objects at `urls` (an object already gone is fine: S3 answers the same).
pub async fn delete(urls: &[String], endpoint_url: Option<&str>) -> anyhow::Result<()> {
    if urls.is_empty() {
        return Ok(());
    }
    let s3 = client(endpoint_url).await?;
    for url in urls {
        let (bucket, key) = split_object_url(url).map_err(|e| anyhow::anyhow!(e))?;
        retry(&Policy::DEFAULT, Instant::now(), &|| format!("DeleteObject {url}"), || s3.delete_object().bucket(&bucket).key(&key).send())
            .await
            .map_err(|f| anyhow::anyhow!("Failed to delete {url}: {f}"))?;
    }
    Ok(())
}

/// A multipart upload started and never completed or aborted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Unfinished {
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// Upload id.
    pub upload_id: String,
    /// When it was started (seconds since the epoch).
    pub initiated: u64,
}

/// The multipart uploads under `prefix` of `bucket` started more than `older_than_secs` ago.
pub async fn unfinished_uploads(
    bucket: &str,
    prefix: &str,
    older_than_secs: u64,
    endpoint_url: Option<&str>,
) -> anyhow::Result<Vec<Unfinished>> {
    let s3 = client(endpoint_url).await?;
    let now = crate::stamp::unix_now();
    let mut out = Vec::new();
    let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
    loop {
        let page = retry(&Policy::DEFAULT, Instant::now(), &|| format!("ListMultipartUploads s3://{bucket}/{prefix}"), || {
            s3.list_multipart_uploads()
                .bucket(bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone())
                .send()
        })
        .await
        .map_err(|f| anyhow::anyhow!("Failed to list the unfinished uploads of s3://{bucket}/{prefix}: {f}"))?;
        for u in page.uploads() {
            let (Some(key), Some(id)) = (u.key(), u.upload_id()) else { continue };
            let initiated = u.initiated().map_or(now, |t| u64::try_from(t.secs()).unwrap_or(now));
            if now.saturating_sub(initiated) >= older_than_secs {
                out.push(Unfinished { bucket: bucket.to_string(), key: key.to_string(), upload_id: id.to_string(), initiated });
            }
        }
        if page.is_truncated() != Some(true) {
            return Ok(out);
        }
        key_marker = page.next_key_marker().map(str::to_string);
        id_marker = page.next_upload_id_marker().map(str::to_string);
    }
}

/// Aborts an unfinished upload (its parts are freed).
pub async fn abort_upload(u: &Unfinished, endpoint_url: Option<&str>) -> anyhow::Result<()> {
    let s3 = client(endpoint_url).await?;
    retry(&Policy::DEFAULT, Instant::now(), &|| format!("AbortMultipartUpload s3://{}/{}", u.bucket, u.key), || {
        s3.abort_multipart_upload().bucket(&u.bucket).key(&u.key).upload_id(&u.upload_id).send()
    })
    .await
    .map_err(|f| anyhow::anyhow!("Failed to abort the upload of s3://{}/{}: {f}", u.bucket, u.key))?;
    Ok(())
}

/// Uploads `files` under `dest`.
pub fn upload(dest: &S3Url, files: &[PathBuf], endpoint_url: Option<&str>) -> anyhow::Result<Vec<Uploaded>> {
    let rt = crate::aws::runtime()?;
    rt.block_on(async {
        let s3 = client(endpoint_url).await?;
        let mut out = Vec::new();
        for f in files {
            out.push(upload_file(&s3, dest, f).await?);
        }
        Ok(out)
    })
}

async fn upload_file(s3: &aws_sdk_s3::Client, dest: &S3Url, path: &Path) -> anyhow::Result<Uploaded> {
    let name =
        path.file_name().map(|n| n.to_string_lossy().into_owned()).with_context(|| format!("{} has no file name", path.display()))?;
    let key = dest.key_for(&name);
    let url = format!("s3://{}/{key}", dest.bucket);
    let file = Arc::new(File::open(path).with_context(|| format!("Failed to open {}", path.display()))?);
    let len = file.metadata().with_context(|| format!("Failed to stat {}", path.display()))?.len();
    let started = Instant::now();
    let create = retry(&Policy::NO_WARMUP, Instant::now(), &|| format!("CreateMultipartUpload {url}"), || {
        s3.create_multipart_upload().bucket(&dest.bucket).key(&key).checksum_algorithm(ChecksumAlgorithm::Sha256).send()
    })
    .await
    .map_err(|f| anyhow::anyhow!("Failed to start the upload of {} to {url}: {f}", path.display()))?;
    let id = create.upload_id().context("CreateMultipartUpload returned no upload id")?.to_string();
    let parts = match send_parts(s3, dest, &key, &id, &file, len).await {
        Ok(p) => p,
        Err(e) => {
            let _ = s3.abort_multipart_upload().bucket(&dest.bucket).key(&key).upload_id(&id).send().await;
            return Err(e.context(format!("Failed to upload {} to {url} (multipart upload aborted)", path.display())));
        }
    };
    let count = parts.len();
    let done = CompletedMultipartUpload::builder().set_parts(Some(parts)).build();
    let completed = retry(&Policy::NO_WARMUP, Instant::now(), &|| format!("CompleteMultipartUpload {url}"), || {
        s3.complete_multipart_upload().bucket(&dest.bucket).key(&key).upload_id(&id).multipart_upload(done.clone()).send()
    })
    .await;
    // Whatever CompleteMultipartUpload answered, the object must now exist with our length
    // (an answer that cannot be parsed, as some emulators give, is then not a failure).
    let head = s3.head_object().bucket(&dest.bucket).key(&key).send().await;
    match (completed, head) {
        (_, Ok(h)) if h.content_length() == i64::try_from(len).ok() => {}
        (Err(f), _) => anyhow::bail!("Failed to complete the upload of {} to {url}: {f}", path.display()),
        (Ok(_), h) => anyhow::bail!("{url} is not {len} bytes after the upload: {:?}", h.map(|h| h.content_length())),
    }
    tracing::info!("uploaded {} to {url} ({len} bytes, {count} parts, {:.1} s)", path.display(), started.elapsed().as_secs_f64());
    Ok(Uploaded { path: path.display().to_string(), url, size: len, parts: count })
}

async fn send_parts(
    s3: &aws_sdk_s3::Client,
    dest: &S3Url,
    key: &str,
    id: &str,
    file: &Arc<File>,
    len: u64,
) -> anyhow::Result<Vec<CompletedPart>> {
    let part = part_size(len);
    let count = len.div_ceil(part).max(1);
    let sem = Arc::new(tokio::sync::Semaphore::new(PARALLEL_PARTS));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..count {
        let permit = sem.clone().acquire_owned().await.context("semaphore closed")?;
        let (s3, bucket, key, id, file) = (s3.clone(), dest.bucket.clone(), key.to_string(), id.to_string(), file.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let off = n * part;
            let size = (len - off.min(len)).min(part) as usize;
            let buf = tokio::task::spawn_blocking(move || {
                let mut b = vec![0u8; size];
                file.read_exact_at(&mut b, off).map(|()| b)
            })
            .await
            .context("reader task failed")?
            .with_context(|| format!("Failed to read part {} at offset {off}", n + 1))?;
            let sum = B64.encode(Sha256::digest(&buf));
            let bytes = bytes::Bytes::from(buf);
            let number = i32::try_from(n + 1).context("too many parts")?;
            let r = retry(&Policy::DEFAULT, Instant::now(), &|| format!("UploadPart {number}"), || {
                s3.upload_part()
                    .bucket(&bucket)
                    .key(&key)
                    .upload_id(&id)
                    .part_number(number)
                    .checksum_sha256(&sum)
                    .body(ByteStream::from(bytes.clone()))
                    .send()
            })
            .await
            .map_err(|f| anyhow::anyhow!("Failed to upload part {number} (offset {off}): {f}"))?;
            Ok::<_, anyhow::Error>(
                CompletedPart::builder().part_number(number).set_e_tag(r.e_tag().map(str::to_string)).checksum_sha256(sum).build(),
            )
        });
    }
    let mut parts = Vec::new();
    while let Some(r) = tasks.join_next().await {
        parts.push(r.context("upload task failed")??);
    }
    parts.sort_by_key(|p| p.part_number());
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_urls() {
        assert_eq!(split_object_url("s3://builds/small/small.raw").unwrap(), ("builds".to_string(), "small/small.raw".to_string()));
        assert!(split_object_url("s3://builds").is_err() && split_object_url("https://x/y").is_err());
    }

    #[test]
    fn urls() {
        assert_eq!(parse_url("s3://images/nightly/").unwrap(), S3Url { bucket: "images".into(), prefix: "nightly".into() });
        assert_eq!(parse_url("s3://images").unwrap().key_for("a.raw"), "a.raw");
        assert_eq!(parse_url("s3://images/x/y").unwrap().key_for("a.raw"), "x/y/a.raw");
        assert!(parse_url("https://x").is_err());
        assert!(parse_url("s3://Images/x").is_err());
        assert!(parse_url("s3://ab").is_err());
    }

    #[test]
    fn parts() {
        assert_eq!(part_size(1), MIN_PART);
        assert_eq!(part_size(1 << 40), 105 << 20);
        assert!((1u64 << 40).div_ceil(part_size(1 << 40)) <= 10_000);
    }
}
