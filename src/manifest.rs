//! `<name>.manifest.json`: what was built, from what, how, and where it went.
//!
//! One typed [`Manifest`] for every reader and writer ([`read`], [`update`], [`write`]); its
//! JSON Schema is `schemas/manifest.schema.json`. Fields this binary does not know (written by
//! an older or newer imgforge) are kept through a read-modify-write.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::provision::StepReport;
use crate::seal::SealSummary;

/// Version of the manifest's shape this binary writes (and the newest it reads).
pub const SCHEMA: u32 = 1;

/// One output file.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct SourceInfo {
    /// Where it came from.
    pub url: String,
    /// "sha256:<hex>" or "sha512:<hex>".
    pub digest: String,
    /// The checksums file used.
    pub checksums: Option<String>,
    /// Fingerprint of the key that signed the checksums.
    pub signing_key_fingerprint: Option<String>,
    /// A layered image: the parent's registry record, pinned at build start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentInfo>,
}

/// The parent record a layered image was built from.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ParentInfo {
    /// Its record id.
    pub record: String,
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
}

/// Block counts of one publish.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct BlockStats {
    /// Blocks of the volume (512 KiB).
    pub total: u64,
    /// Blocks holding data (SEEK_DATA).
    pub data: u64,
    /// Blocks considered (read) by this publish.
    pub considered: u64,
    /// Blocks PUT by this run.
    pub sent: u64,
    /// All-zero data blocks skipped.
    pub skipped_zero: u64,
    /// Blocks equal to the parent's, skipped.
    pub unchanged: u64,
    /// Blocks sent by an interrupted earlier run.
    pub resumed: u64,
    /// Blocks in the snapshot (ChangedBlocksCount).
    pub in_snapshot: u64,
}

/// The result of a publish (`publish::Record`): printed, and recorded as the manifest's
/// `aws` section or in `<image>.aws.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct AwsRecord {
    /// AMI name.
    pub name: String,
    /// Home region.
    pub region: String,
    /// AMI ids per region.
    pub images: BTreeMap<String, String>,
    /// The snapshot behind the home-region AMI.
    pub snapshot_id: String,
    /// An AMI of this name and digest already existed and was reused.
    pub reused: bool,
    /// "sha256:<hex>" of the raw.
    pub source_digest: String,
    /// Architecture.
    pub architecture: String,
    /// Boot mode.
    pub boot_mode: String,
    /// Block counts.
    pub blocks: BlockStats,
    /// Bytes PUT by this run.
    pub bytes_sent: u64,
    /// Parent snapshot of a delta upload.
    pub parent_snapshot: Option<String>,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// The manifest. Fields missing from a file read as their defaults (hand-written manifests).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct Manifest {
    /// Schema version of this file.
    #[serde(default = "current_schema")]
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
    /// The image's SELinux mode and how its files were labelled; absent when SELinux is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selinux: Option<crate::image::selinux::SelinuxReport>,
    /// Outputs.
    pub outputs: Vec<OutputFile>,
    /// Provisioners with their durations.
    pub provisioners: Vec<StepReport>,
    /// Services whose start (restart, reload) the build deferred to the image's first boot.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<crate::chroot::services::Deferred>,
    /// Kernel parameters provisioners set: they changed only the build sandbox's copy of
    /// /proc/sys; the image gets what it persists (e.g. in /etc/sysctl.d).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub sandbox_sysctls: BTreeMap<String, String>,
    /// Seconds per build step.
    pub steps: BTreeMap<String, f64>,
    /// Timed parts of the steps, in order (what mount and seal spend their time on).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<crate::progress::Phase>,
    /// What sealing did.
    pub seal: SealSummary,
    /// imgforge version.
    pub imgforge_version: String,
    /// This build's record in the image registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    /// The layer key: a hash of everything that determined this output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_key: Option<String>,
    /// The AMI, once `imgforge publish` (or `build --publish`) made one from this image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsRecord>,
    /// The recipe variables this image was built with (`[vars]`, `[matrix]`, `--var`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, String>,
    /// Fields this imgforge does not know, kept as they were.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

fn current_schema() -> u32 {
    SCHEMA
}

/// Just the version, read before the rest (whose shape depends on it).
#[derive(Deserialize)]
struct SchemaOnly {
    #[serde(default = "current_schema")]
    schema: u32,
}

/// Reads a build manifest; refuses one written in a newer schema than this binary knows.
pub fn read(path: &Path) -> anyhow::Result<Manifest> {
    let text = std::fs::read_to_string(path).with_context(|| format!("Failed to read {}", path.display()))?;
    let SchemaOnly { schema } =
        serde_json::from_str(&text).with_context(|| format!("{} is not a valid build manifest (JSON)", path.display()))?;
    if schema > SCHEMA {
        bail!(
            "{} has manifest schema {schema}, newer than this imgforge {} reads (schema {SCHEMA}): use a newer imgforge",
            path.display(),
            env!("CARGO_PKG_VERSION")
        );
    }
    serde_json::from_str(&text).with_context(|| format!("{} is not a valid build manifest", path.display()))
}

/// Reads the manifest at `path`, lets `change` modify it and writes it back atomically, in the
/// current schema, unknown fields kept.
pub fn update(path: &Path, change: impl FnOnce(&mut Manifest)) -> anyhow::Result<()> {
    let mut m = read(path)?;
    change(&mut m);
    m.schema = SCHEMA;
    write(&m, path).with_context(|| format!("Failed to update {}", path.display()))
}

/// Writes `m` as pretty JSON to `dest`, atomically (unnamed, then renamed into place).
pub fn write<T: Serialize>(m: &T, dest: &Path) -> anyhow::Result<()> {
    let dir = dest.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    // Written unnamed, then named in one rename: a writer killed even with -9 leaves no
    // temporary file behind, and readers see the old file or the whole new one.
    let work = crate::disk::workdisk::WorkDisk::create(dir).map_err(|e| match e {
        crate::disk::workdisk::WorkDiskError::Create { source, .. } => {
            anyhow::Error::new(source).context(format!("Failed to create a file in {}", dir.display()))
        }
        other => other.into(),
    })?;
    let mut w = std::io::BufWriter::new(work.file());
    serde_json::to_writer_pretty(&mut w, m)?;
    w.write_all(b"\n")?;
    w.flush()?;
    drop(w);
    work.persist(dest)?;
    Ok(())
}

/// The JSON Schema of `T` as imgforge writes it (serialisation contract), pretty, with a final
/// newline: the text of a file in `schemas/`.
#[cfg(test)]
pub fn schema_text<T: JsonSchema>() -> String {
    let schema = schemars::generate::SchemaSettings::draft2020_12().for_serialize().into_generator().into_root_schema_for::<T>();
    serde_json::to_string_pretty(&schema).unwrap_or_default() + "\n"
}

/// Fails when `schemas/<file>` differs from `text`; with `IMGFORGE_BLESS=1`, rewrites it.
#[cfg(test)]
pub fn assert_schema_fresh(file: &str, text: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas").join(file);
    if std::env::var_os("IMGFORGE_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, text).unwrap();
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == text,
        "schemas/{file} is stale: the types changed. Refresh it with `IMGFORGE_BLESS=1 cargo test --bin imgforge schema_is_fresh` and commit it (bump the schema version on an incompatible change)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_schema_is_fresh() {
        assert_schema_fresh("manifest.schema.json", &schema_text::<Manifest>());
    }

    /// A manifest as `imgforge build` writes it, plus a publish and a field from another version.
    const FULL: &str = r#"{
  "schema": 1,
  "name": "web",
  "version": "1.2.0",
  "description": null,
  "git_commit": "0123abc",
  "recipe": "recipes/web.toml",
  "recipe_digest": "sha256:00ff",
  "build_date": "2024-05-01T12:00:00Z",
  "source": {
    "url": "https://example.invalid/up.qcow2",
    "digest": "sha256:aa",
    "checksums": null,
    "signing_key_fingerprint": "ABCD",
    "parent": {
      "record": "01JD2Q3V4W5X6Y7Z8A9B0C1D2D",
      "name": "base",
      "version": "1.4.0"
    }
  },
  "architecture": "x86_64",
  "drivers": {
    "kernels": 1,
    "ena": true,
    "nvme": true
  },
  "selinux": {
    "mode": "enforcing",
    "policy": "targeted",
    "relabel": "setfiles",
    "detail": "/ /boot (31200 labels written)",
    "seconds": 2.5
  },
  "outputs": [
    {
      "format": "raw",
      "path": "out/web.raw",
      "size": 1048576,
      "sha256": "bb"
    }
  ],
  "provisioners": [
    {
      "name": "shell",
      "type": "shell",
      "seconds": 1.5
    },
    {
      "name": "ansible",
      "type": "ansible",
      "seconds": 12.25,
      "summary": {
        "changed": 3,
        "ok": 7,
        "failed": 0
      }
    }
  ],
  "services": [
    {
      "unit": "nginx.service",
      "actions": [
        "start",
        "restart"
      ],
      "via": [
        "systemctl"
      ],
      "enabled": "enabled"
    }
  ],
  "sandbox_sysctls": {
    "vm.swappiness": "10"
  },
  "steps": {
    "provision": 13.75,
    "seal": 0.5
  },
  "phases": [
    {
      "step": "seal",
      "phase": "machine-id: empty /etc/machine-id",
      "seconds": 0.001
    }
  ],
  "seal": {
    "report": "web.seal.json",
    "operations": [
      "machine-id",
      "ssh-hostkeys"
    ],
    "changes": {
      "removed": 12
    },
    "residue_errors": 0,
    "residue_warnings": 1,
    "ssh_regenerators": [
      "cloud-init"
    ],
    "seconds": 0.5
  },
  "imgforge_version": "0.1.0",
  "record": "01JD2Q3V4W5X6Y7Z8A9B0C1D2E",
  "layer_key": "sha256:cc",
  "aws": {
    "name": "web-1.2.0",
    "region": "eu-west-1",
    "images": {
      "eu-west-1": "ami-0123"
    },
    "snapshot_id": "snap-0123",
    "reused": false,
    "source_digest": "sha256:bb",
    "architecture": "x86_64",
    "boot_mode": "uefi",
    "blocks": {
      "total": 2,
      "data": 1,
      "considered": 1,
      "sent": 1,
      "skipped_zero": 0,
      "unchanged": 0,
      "resumed": 0,
      "in_snapshot": 1
    },
    "bytes_sent": 524288,
    "parent_snapshot": null,
    "seconds": 3.5
  },
  "vars": {
    "node": "web-1"
  },
  "zz_from_a_newer_imgforge": {
    "kept": [
      1,
      2
    ]
  }
}"#;

    #[test]
    fn manifest_round_trips_with_unknown_fields() {
        let m: Manifest = serde_json::from_str(FULL).unwrap();
        assert!(m.extra.contains_key("zz_from_a_newer_imgforge"), "{:?}", m.extra);
        let again: Manifest = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        // Same text as written: field names, nesting and order.
        assert_eq!(serde_json::to_string_pretty(&again).unwrap(), FULL);
    }

    /// FULL has every field the schema requires and none it does not know (but the stranger),
    /// so the round trip above covers the whole manifest.
    #[test]
    fn the_full_manifest_covers_the_schema() {
        let schema: serde_json::Value = serde_json::from_str(&schema_text::<Manifest>()).unwrap();
        let full: serde_json::Value = serde_json::from_str(FULL).unwrap();
        let props = schema["properties"].as_object().unwrap();
        for key in full.as_object().unwrap().keys().filter(|k| *k != "zz_from_a_newer_imgforge") {
            assert!(props.contains_key(key), "{key} not in the schema");
        }
        for key in props.keys() {
            assert!(full.get(key).is_some(), "FULL lacks {key}: add it");
        }
    }

    #[test]
    fn update_keeps_unknown_fields_and_writes_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.manifest.json");
        std::fs::write(&path, FULL).unwrap();
        update(&path, |m| m.outputs[0].size = 7).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["outputs"][0]["size"], 7);
        assert_eq!(v["zz_from_a_newer_imgforge"]["kept"], serde_json::json!([1, 2]));
        assert_eq!(v["aws"]["images"]["eu-west-1"], "ami-0123");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["web.manifest.json"], "no temporary file left");
    }

    #[test]
    fn a_partial_manifest_reads_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        std::fs::write(&path, r#"{"name": "arm", "outputs": [{"format": "raw", "path": "a.raw", "size": 512, "sha256": ""}]}"#).unwrap();
        let m = read(&path).unwrap();
        assert_eq!((m.schema, m.name.as_str(), m.outputs.len(), m.aws.is_none()), (SCHEMA, "arm", 1, true));
        let text = serde_json::to_string(&m).unwrap();
        assert!(!text.contains("\"aws\""), "no aws section before a publish: {text}");
    }

    #[test]
    fn a_newer_schema_is_refused_naming_file_and_versions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.manifest.json");
        std::fs::write(&path, r#"{"schema": 99, "name": "x", "outputs": "a different shape"}"#).unwrap();
        let e = format!("{:#}", read(&path).unwrap_err());
        assert!(e.contains(&path.display().to_string()) && e.contains("schema 99") && e.contains("(schema 1)"), "{e}");
        let e = format!("{:#}", update(&path, |_| ()).unwrap_err());
        assert!(e.contains("schema 99"), "{e}");
        assert!(std::fs::read_to_string(&path).unwrap().contains("a different shape"), "left as it was");
    }
}
