//! The block ledger beside the image, `<image>.publish.jsonl`: what a publish has created and
//! sent so far, so a re-run after a crash (even `kill -9`) finishes the same pending snapshot.
//!
//! JSON Lines, appended and never rewritten: a `start` line (what is being published and the
//! ClientToken, written before StartSnapshot is called), a `snapshot` line the moment the
//! snapshot exists, one `block` line per block EBS accepted, `completed`, then `image` lines.
//! A torn last line (killed mid-write) is ignored.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

/// Ledger schema version.
pub const SCHEMA: u32 = 1;

/// What one publish is about; a ledger is resumed only when all of it matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Start {
    /// Schema.
    pub schema: u32,
    /// The raw disk's size.
    pub size: u64,
    /// Its mtime in nanoseconds.
    pub mtime_ns: i64,
    /// "sha256:<hex>" of the raw.
    pub source_digest: String,
    /// Region.
    pub region: String,
    /// Parent snapshot, for a delta.
    pub parent_snapshot: Option<String>,
    /// Encrypted upload.
    pub encrypted: bool,
    /// StartSnapshot ClientToken (also tagged on the snapshot, for lookup).
    pub client_token: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Line {
    Start(Start),
    Snapshot { id: String },
    Block { index: u64, sha256: String },
    Completed,
    Image { region: String, id: String },
}

/// What a ledger file says.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// The publish it belongs to.
    pub start: Option<Start>,
    /// The snapshot, once it existed.
    pub snapshot: Option<String>,
    /// Blocks EBS accepted, with their SHA-256.
    pub blocks: BTreeMap<u64, [u8; 32]>,
    /// CompleteSnapshot succeeded.
    pub completed: bool,
    /// AMIs registered, per region.
    pub images: BTreeMap<String, String>,
}

/// Errors of the ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Reading.
    #[error("Failed to read the publish ledger {path}: {source}")]
    Read {
        /// The ledger.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Writing.
    #[error("Failed to write the publish ledger {path}: {source}")]
    Write {
        /// The ledger.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// The ledger path for an image.
pub fn path_for(image: &Path) -> PathBuf {
    let mut s = image.as_os_str().to_owned();
    s.push(".publish.jsonl");
    PathBuf::from(s)
}

/// Parses a ledger's text; unreadable lines (a torn last write) are skipped. Pure.
pub fn parse(text: &str) -> State {
    let mut st = State::default();
    for line in text.lines() {
        match serde_json::from_str::<Line>(line) {
            Ok(Line::Start(s)) => {
                st = State { start: Some(s), ..State::default() };
            }
            Ok(Line::Snapshot { id }) => st.snapshot = Some(id),
            Ok(Line::Block { index, sha256 }) => {
                if let Some(d) = B64.decode(sha256).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()) {
                    st.blocks.insert(index, d);
                }
            }
            Ok(Line::Completed) => st.completed = true,
            Ok(Line::Image { region, id }) => {
                st.images.insert(region, id);
            }
            Err(_) => {}
        }
    }
    st
}

/// Reads the ledger at `path`, if there is one.
pub fn load(path: &Path) -> Result<Option<State>, LedgerError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(parse(&t))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(LedgerError::Read { path: path.to_path_buf(), source }),
    }
}

/// An open ledger, appended to by the upload workers.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    file: Mutex<File>,
}

impl Ledger {
    /// Starts a new ledger (replacing any old one) with its `start` line.
    pub fn create(path: &Path, start: &Start) -> Result<Self, LedgerError> {
        let file = File::create(path).map_err(|source| LedgerError::Write { path: path.to_path_buf(), source })?;
        let l = Self { path: path.to_path_buf(), file: Mutex::new(file) };
        l.append(&Line::Start(start.clone()))?;
        l.sync()?;
        Ok(l)
    }

    /// Opens an existing ledger for appending; a torn last line is ended first.
    pub fn reopen(path: &Path) -> Result<Self, LedgerError> {
        let werr = |source| LedgerError::Write { path: path.to_path_buf(), source };
        let text = std::fs::read(path).map_err(|source| LedgerError::Read { path: path.to_path_buf(), source })?;
        let mut file = OpenOptions::new().append(true).open(path).map_err(werr)?;
        if text.last().is_some_and(|&b| b != b'\n') {
            file.write_all(b"\n").map_err(werr)?;
        }
        Ok(Self { path: path.to_path_buf(), file: Mutex::new(file) })
    }

    fn append(&self, line: &Line) -> Result<(), LedgerError> {
        let mut text = serde_json::to_string(line).map_err(|e| LedgerError::Write { path: self.path.clone(), source: e.into() })?;
        text.push('\n');
        let mut f = self.file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // One write per line: a kill leaves at most one torn line, which `parse` skips.
        f.write_all(text.as_bytes()).map_err(|source| LedgerError::Write { path: self.path.clone(), source })
    }

    fn sync(&self) -> Result<(), LedgerError> {
        let f = self.file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f.sync_data().map_err(|source| LedgerError::Write { path: self.path.clone(), source })
    }

    /// The snapshot exists (synced: losing this line would orphan it).
    pub fn snapshot(&self, id: &str) -> Result<(), LedgerError> {
        self.append(&Line::Snapshot { id: id.to_string() })?;
        self.sync()
    }

    /// EBS accepted a block.
    pub fn block(&self, index: u64, sha256: &[u8; 32]) -> Result<(), LedgerError> {
        self.append(&Line::Block { index, sha256: B64.encode(sha256) })
    }

    /// CompleteSnapshot succeeded.
    pub fn completed(&self) -> Result<(), LedgerError> {
        self.append(&Line::Completed)?;
        self.sync()
    }

    /// An AMI exists.
    pub fn image(&self, region: &str, id: &str) -> Result<(), LedgerError> {
        self.append(&Line::Image { region: region.to_string(), id: id.to_string() })?;
        self.sync()
    }

    /// The publish finished: the ledger goes (the manifest or record now holds the result).
    pub fn remove(self) -> Result<(), LedgerError> {
        std::fs::remove_file(&self.path).map_err(|source| LedgerError::Write { path: self.path.clone(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start() -> Start {
        Start {
            schema: SCHEMA,
            size: 10,
            mtime_ns: 5,
            source_digest: "sha256:00".into(),
            region: "eu-west-1".into(),
            parent_snapshot: None,
            encrypted: false,
            client_token: "tok".into(),
        }
    }

    #[test]
    fn round_trip_and_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.publish.jsonl");
        let l = Ledger::create(&p, &start()).unwrap();
        l.snapshot("snap-1").unwrap();
        l.block(3, &[7; 32]).unwrap();
        l.block(1, &[9; 32]).unwrap();
        drop(l);
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"kind\":\"block\",\"ind").unwrap();
        let st = load(&p).unwrap().unwrap();
        assert_eq!(st.start, Some(start()));
        assert_eq!(st.snapshot.as_deref(), Some("snap-1"));
        assert_eq!(st.blocks.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
        assert!(!st.completed);
        let l = Ledger::reopen(&p).unwrap();
        l.completed().unwrap();
        l.image("eu-west-1", "ami-1").unwrap();
        let st = load(&p).unwrap().unwrap();
        assert_eq!(st.blocks.len(), 2);
        assert!(st.completed);
        assert_eq!(st.images["eu-west-1"], "ami-1");
        assert!(load(&dir.path().join("none")).unwrap().is_none());
    }
}
