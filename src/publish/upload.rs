//! The EBS direct upload engine (coldsnap's shape): a fixed number of workers pull block
//! indices in ascending order, read the block (holes never: see `blocks.rs`), decide, hash,
//! and PutSnapshotBlock with the block's own retry budget. Every accepted block goes into the
//! ledger at once. Per-block failures are gathered into one error; a non-retryable one
//! (AccessDenied, validation) stops every worker.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use aws_sdk_ebs::primitives::ByteStream;
use aws_sdk_ebs::types::ChecksumAlgorithm;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use indicatif::ProgressBar;

use super::blocks::{BLOCK, Mode, sha256, should_send};
use super::ledger::Ledger;
use crate::aws::retry::{Class, Policy, retry};

/// Errors of the upload.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// Reading a block of the image or the parent raw.
    #[error("Failed to read block {block} (offset {offset}) of {path}: {source}")]
    Read {
        /// Block index.
        block: u64,
        /// Byte offset.
        offset: u64,
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A PUT that failed for good.
    #[error("Failed to put block {block} (offset {offset}) into snapshot {snapshot}: {message}")]
    Put {
        /// Block index.
        block: u64,
        /// Byte offset.
        offset: u64,
        /// Snapshot.
        snapshot: String,
        /// Last error, attempts, why it stopped.
        message: String,
        /// Not retryable (AccessDenied, validation).
        fatal: bool,
    },
    /// Several blocks failed.
    #[error("Failed to upload {count} block(s) into snapshot {snapshot}; first: {first}")]
    Blocks {
        /// Snapshot.
        snapshot: String,
        /// How many failed.
        count: usize,
        /// The lowest failed block's error.
        first: Box<UploadError>,
    },
    /// The ledger could not be written.
    #[error(transparent)]
    Ledger(#[from] super::ledger::LedgerError),
    /// A worker task died.
    #[error("Failed to upload to snapshot {snapshot}: a worker stopped: {message}")]
    Worker {
        /// Snapshot.
        snapshot: String,
        /// Join error.
        message: String,
    },
}

/// One upload.
pub struct Job {
    /// The raw disk.
    pub file: Arc<File>,
    /// Its path, for errors.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
    /// The parent raw, for [`Mode::Delta`].
    pub parent: Option<(Arc<File>, PathBuf, u64)>,
    /// How blocks are chosen.
    pub mode: Mode,
    /// Blocks to consider, ascending.
    pub candidates: Vec<u64>,
    /// Data blocks of the image, ascending (others are holes: zeros, never read).
    pub data: Vec<u64>,
    /// Data blocks of the parent raw, ascending.
    pub parent_data: Vec<u64>,
    /// Blocks accepted before (a resumed upload).
    pub done: BTreeMap<u64, [u8; 32]>,
    /// The pending snapshot.
    pub snapshot: String,
    /// Concurrent PUTs.
    pub workers: usize,
    /// When StartSnapshot returned (the "does not exist yet" window starts here).
    pub started: Instant,
}

/// What an upload did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// SHA-256 of every block in the snapshot (sent now or before), by index.
    pub digests: BTreeMap<u64, [u8; 32]>,
    /// Blocks PUT by this run.
    pub sent: u64,
    /// Bytes PUT by this run.
    pub bytes_sent: u64,
    /// Blocks read and found all-zero (skipped).
    pub skipped_zero: u64,
    /// Blocks read and found equal to the parent's (skipped).
    pub unchanged: u64,
    /// Blocks already in the snapshot from an earlier, interrupted run.
    pub resumed: u64,
}

struct Shared {
    job: Job,
    next: AtomicUsize,
    stop: AtomicBool,
    sent: AtomicU64,
    bytes: AtomicU64,
    zero: AtomicU64,
    same: AtomicU64,
    digests: Mutex<BTreeMap<u64, [u8; 32]>>,
    errors: Mutex<BTreeMap<u64, UploadError>>,
    bar: Option<ProgressBar>,
}

/// Runs the upload. The progress bar (blocks) is the caller's; this never touches the terminal.
pub async fn upload(ebs: &aws_sdk_ebs::Client, job: Job, ledger: Arc<Ledger>, bar: Option<ProgressBar>) -> Result<Outcome, UploadError> {
    let resumed = job.candidates.iter().filter(|b| job.done.contains_key(b)).count() as u64;
    let workers = job.workers.max(1);
    let snapshot = job.snapshot.clone();
    let shared = Arc::new(Shared {
        digests: Mutex::new(job.done.clone()),
        job,
        next: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        sent: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        zero: AtomicU64::new(0),
        same: AtomicU64::new(0),
        errors: Mutex::new(BTreeMap::new()),
        bar,
    });
    // Without a bar (not a terminal: CI, logs), a line every 10 s says the upload is alive.
    let ticker = shared.bar.is_none().then(|| {
        let s = shared.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(10)).await;
                let done = s.next.load(Ordering::Relaxed).min(s.job.candidates.len());
                let bytes = s.bytes.load(Ordering::Relaxed);
                tracing::info!(
                    "snapshot {}: {done}/{} blocks read, {} sent, {:.1} MiB/s",
                    s.job.snapshot,
                    s.job.candidates.len(),
                    indicatif::HumanBytes(bytes),
                    bytes as f64 / 1048576.0 / start.elapsed().as_secs_f64()
                );
            }
        })
    });
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (s, ebs, ledger) = (shared.clone(), ebs.clone(), ledger.clone());
        tasks.spawn(async move { worker(&s, &ebs, &ledger).await });
    }
    let mut joined = Ok(());
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r {
            joined = Err(UploadError::Worker { snapshot: snapshot.clone(), message: e.to_string() });
        }
    }
    if let Some(t) = ticker {
        t.abort();
    }
    joined?;
    let mut errors = std::mem::take(&mut *lock(&shared.errors));
    if let Some((_, first)) = errors.pop_first() {
        let count = errors.len() + 1;
        return Err(if count == 1 { first } else { UploadError::Blocks { snapshot, count, first: Box::new(first) } });
    }
    if let Some(b) = &shared.bar {
        b.finish_and_clear();
    }
    let digests = std::mem::take(&mut *lock(&shared.digests));
    Ok(Outcome {
        digests,
        sent: shared.sent.load(Ordering::Relaxed),
        bytes_sent: shared.bytes.load(Ordering::Relaxed),
        skipped_zero: shared.zero.load(Ordering::Relaxed),
        unchanged: shared.same.load(Ordering::Relaxed),
        resumed,
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn worker(s: &Arc<Shared>, ebs: &aws_sdk_ebs::Client, ledger: &Ledger) {
    loop {
        if s.stop.load(Ordering::Relaxed) || crate::host::signals::stop_requested() {
            return;
        }
        let i = s.next.fetch_add(1, Ordering::Relaxed);
        let Some(&block) = s.job.candidates.get(i) else { return };
        if let Err(e) = one_block(s, ebs, ledger, block).await {
            if matches!(e, UploadError::Put { fatal: true, .. } | UploadError::Ledger(_) | UploadError::Read { .. }) {
                s.stop.store(true, Ordering::Relaxed);
            }
            tracing::warn!("{e}");
            lock(&s.errors).insert(block, e);
        }
        if let Some(b) = &s.bar {
            b.inc(1);
            b.set_message(format!("{} sent", indicatif::HumanBytes(s.bytes.load(Ordering::Relaxed))));
        }
    }
}

async fn one_block(s: &Arc<Shared>, ebs: &aws_sdk_ebs::Client, ledger: &Ledger, block: u64) -> Result<(), UploadError> {
    if s.job.done.contains_key(&block) {
        return Ok(());
    }
    let s2 = s.clone();
    let read = tokio::task::spawn_blocking(move || read_and_decide(&s2.job, block)).await;
    let (buf, digest) = match read {
        Ok(Ok(Some(v))) => v,
        Ok(Ok(None)) => {
            let counter = if s.job.mode == Mode::Delta { &s.same } else { &s.zero };
            counter.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        Ok(Err(e)) => return Err(e),
        Err(e) => return Err(UploadError::Worker { snapshot: s.job.snapshot.clone(), message: e.to_string() }),
    };
    let index = i32::try_from(block).map_err(|_| put_error(s, block, "block index beyond EBS's range".into(), true))?;
    let checksum = B64.encode(digest);
    let bytes = bytes::Bytes::from(buf);
    let what = || format!("PutSnapshotBlock {} block {block}", s.job.snapshot);
    let r = retry(&Policy::DEFAULT, s.job.started, &what, || {
        ebs.put_snapshot_block()
            .snapshot_id(&s.job.snapshot)
            .block_index(index)
            .block_data(ByteStream::from(bytes.clone()))
            .data_length(BLOCK as i32)
            .checksum(&checksum)
            .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
            .send()
    })
    .await;
    match r {
        Ok(_) => {
            ledger.block(block, &digest)?;
            lock(&s.digests).insert(block, digest);
            s.sent.fetch_add(1, Ordering::Relaxed);
            s.bytes.fetch_add(BLOCK, Ordering::Relaxed);
            Ok(())
        }
        Err(f) => Err(put_error(s, block, f.to_string(), f.class == Class::Fatal)),
    }
}

fn put_error(s: &Shared, block: u64, message: String, fatal: bool) -> UploadError {
    UploadError::Put { block, offset: block * BLOCK, snapshot: s.job.snapshot.clone(), message, fatal }
}

/// Reads block `block` of `file` when it holds data (zeros otherwise), zero-padded to BLOCK.
fn read_block(file: &File, path: &std::path::Path, size: u64, data: &[u64], block: u64) -> Result<Vec<u8>, UploadError> {
    let mut buf = vec![0u8; BLOCK as usize];
    let offset = block * BLOCK;
    if data.binary_search(&block).is_ok() && offset < size {
        let len = (size - offset).min(BLOCK) as usize;
        let dst = buf.get_mut(..len).unwrap_or_default();
        file.read_exact_at(dst, offset).map_err(|source| UploadError::Read { block, offset, path: path.to_path_buf(), source })?;
    }
    Ok(buf)
}

/// A block to send: its bytes and SHA-256.
pub(super) type ToSend = (Vec<u8>, [u8; 32]);

/// The block's bytes and digest when it is to be sent, `None` when skipped (the dry run lists
/// the blocks with this too).
pub(super) fn read_and_decide(job: &Job, block: u64) -> Result<Option<ToSend>, UploadError> {
    let buf = read_block(&job.file, &job.path, job.size, &job.data, block)?;
    let parent = match &job.parent {
        Some((f, p, size)) => Some(read_block(f, p, *size, &job.parent_data, block)?),
        None => None,
    };
    if !should_send(job.mode, &buf, parent.as_deref()) {
        return Ok(None);
    }
    let d = sha256(&buf);
    Ok(Some((buf, d)))
}
