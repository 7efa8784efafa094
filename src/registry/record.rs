//! A registry record: one built image version, with everything a query or a descendant needs.

use std::collections::BTreeMap;

use super::packages::Package;

/// The statuses a record moves through (`candidate` on build; tests promote).
pub const STATUSES: [&str; 5] = ["candidate", "tested", "released", "revoked", "deleted"];

/// What a record was built from.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Parent {
    /// The parent record's id, for a layered image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    /// The parent's name and version, for a layered image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The parent's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The upstream image's URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The parent's (or upstream's) digest, `sha256:<hex>`.
    pub digest: String,
}

/// One output file of the image.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Output {
    /// Format (`raw`, `qcow2`…).
    pub format: String,
    /// Path (or S3 URL).
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// Hex SHA-256.
    pub sha256: String,
    /// The file's inode and modification time (`INODE:MTIME_NS`) when recorded: a file
    /// written over since (a rebuild into the same directory) is not this output any more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_id: Option<String>,
    /// Where it was uploaded (`s3://bucket/key`), when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl Output {
    /// `INODE:MTIME_NS` of a file.
    pub fn file_id_of(path: &std::path::Path) -> Option<String> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(format!("{}:{}", m.ino(), m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128))
    }

    /// Whether the output is still in place: a local file of the recorded size and identity
    /// (an S3 URL counts as in place).
    pub fn in_place(&self) -> bool {
        self.path.starts_with("s3://") || self.here()
    }

    /// In place here, or uploaded to the S3 store (`[output] upload`): what a build on another
    /// host can reuse.
    pub fn reachable(&self) -> bool {
        self.url.is_some() || self.in_place()
    }

    fn here(&self) -> bool {
        let path = std::path::Path::new(&self.path);
        let size_ok = std::fs::metadata(path).is_ok_and(|m| m.len() == self.size);
        size_ok && (self.file_id.is_none() || Self::file_id_of(path) == self.file_id)
    }
}

/// A revocation.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Revocation {
    /// When (RFC 3339).
    pub at: String,
    /// Who.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// The record whose revocation carried to this one (itself unless cascaded).
    pub by: String,
}

/// One run of an image's tests: the verdict, and the image it was given on.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct TestRun {
    /// When (RFC 3339).
    pub date: String,
    /// SHA-256 of the raw disk the tests ran against.
    pub sha256: String,
    /// The stages that ran: `offline`, `boot` or `offline+boot`.
    pub stage: String,
    /// Cases that passed.
    pub passed: usize,
    /// Cases that failed, by `suite.case` name (empty: the run passed).
    pub failed: Vec<String>,
    /// The JUnit report written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub junit: Option<String>,
}

impl TestRun {
    /// No case failed.
    pub fn passed(&self) -> bool {
        self.failed.is_empty()
    }
}

/// A registered image version.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Record {
    /// ULID: sortable by registration time.
    pub id: String,
    /// Image name.
    pub name: String,
    /// Version.
    pub version: String,
    /// `candidate`, `tested`, `released` or `revoked`.
    pub status: String,
    /// Build time (RFC 3339).
    pub build_date: String,
    /// Git commit of the recipe's repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_commit: Option<String>,
    /// Git tag at that commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_tag: Option<String>,
    /// The recipe's `[image] labels`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Hash of everything that determines the output (layered builds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_key: Option<String>,
    /// What the layer key hashes, input by input (`imgforge explain` compares them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub layer_inputs: BTreeMap<String, String>,
    /// What it was built from.
    pub parent: Parent,
    /// CPU architecture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// The distribution (os-release `ID`: `debian`, `ubuntu`…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution: Option<String>,
    /// Kernel versions in the image.
    #[serde(default)]
    pub kernels: Vec<String>,
    /// Installed packages, read at seal time.
    #[serde(default)]
    pub packages: Vec<Package>,
    /// Output files.
    #[serde(default)]
    pub outputs: Vec<Output>,
    /// The build manifest's path.
    pub manifest: String,
    /// The seal report's path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal_report: Option<String>,
    /// AMI ids by region (added by publish).
    #[serde(default)]
    pub amis: BTreeMap<String, String>,
    /// EBS snapshot ids by region (added by publish): a child's delta upload starts from them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub snapshots: BTreeMap<String, String>,
    /// Why and by whom it was revoked (`imgforge revoke`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Revocation>,
    /// Image test runs against this record's raw output, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tests: Vec<TestRun>,
    /// Who built it (the recipe's owner, else the invoking user).
    pub owner: String,
    /// The recipe file.
    pub recipe: String,
}

/// A new ULID (time-ordered, random tail), monotonic within this process: two ids made in
/// the same millisecond still sort in the order they were made (channel history and takeover
/// logs are read back in id order).
pub fn new_id() -> String {
    static GEN: std::sync::Mutex<Option<ulid::Generator>> = std::sync::Mutex::new(None);
    let mut g = GEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // Overflow (2^80 ids in one millisecond) cannot happen; fall back to a plain ULID anyway.
    g.get_or_insert_with(ulid::Generator::new).generate().unwrap_or_else(|_| ulid::Ulid::new()).to_string()
}

#[cfg(test)]
mod id_tests {
    #[test]
    fn ids_sort_in_the_order_they_were_made() {
        let ids: Vec<String> = (0..1000).map(|_| super::new_id()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }
}
