//! What `imgforge export` reads: a raw disk, or a build manifest naming one. Anything that is
//! not a raw disk is refused before a byte is written.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::disk::detect::{ImageFormat, classify};

/// The disk to export.
#[derive(Debug)]
pub struct Input {
    /// The raw disk file.
    pub path: PathBuf,
    /// Open for reading.
    pub file: File,
    /// Its size in bytes (a multiple of 512).
    pub size: u64,
    /// Base name for outputs: the manifest's image name, else the file stem.
    pub name: String,
    /// SHA-256 of the raw recorded by the build, when the input is a manifest.
    pub sha256: Option<[u8; 32]>,
    /// Default timestamp for outputs: the build date from the manifest, else the raw's mtime.
    pub epoch: u64,
    /// The manifest, when the input was one.
    pub manifest: Option<PathBuf>,
}

/// Opens `arg`: a raw disk or a `*.manifest.json` written by `imgforge build`.
pub fn open(arg: &Path) -> anyhow::Result<Input> {
    let mut head = [0u8; 1];
    let f = File::open(arg).with_context(|| format!("Failed to open {}", arg.display()))?;
    if !f.metadata().with_context(|| format!("Failed to stat {}", arg.display()))?.is_file() {
        bail!("{} is not a regular file: give a raw disk image or a build manifest", arg.display());
    }
    let n = f.read_at(&mut head, 0).with_context(|| format!("Failed to read {}", arg.display()))?;
    if n == 1 && head[0] == b'{' {
        return from_manifest(arg);
    }
    let input = open_raw(arg, f)?;
    let mtime = input.file.metadata().map(|m| u64::try_from(m.mtime()).unwrap_or(0))?;
    Ok(Input { epoch: mtime, ..input })
}

fn open_raw(path: &Path, file: File) -> anyhow::Result<Input> {
    let meta = file.metadata().with_context(|| format!("Failed to stat {}", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file: give a raw disk image or a build manifest", path.display());
    }
    let size = meta.len();
    if size == 0 {
        bail!(
            "{} is empty: not a disk image (an interrupted download or copy?); give the raw, qcow2 or VHD file, or a build manifest",
            path.display()
        );
    }
    match super::vhd::detect(&file) {
        Ok(Some(kind)) => bail!(
            "{} is a {} vhd, not a raw disk (a fixed VHD is a raw disk plus a 512-byte footer)",
            path.display(),
            format!("{kind:?}").to_lowercase()
        ),
        Ok(None) => {}
        Err(e) => bail!("{} ends with a VHD footer ({e}): not a raw disk", path.display()),
    }
    let mut first = [0u8; 512];
    let n = file.read_at(&mut first, 0)?;
    let mut last = [0u8; 512];
    if size >= 1024 {
        file.read_exact_at(&mut last, size - 512)?;
    }
    match classify(first.get(..n).unwrap_or_default(), &last) {
        ImageFormat::Raw => {}
        f => bail!(
            "{} is a {} image, not a raw disk: export reads raw disks (build outputs); convert it with `qemu-img convert -O raw` first",
            path.display(),
            f.name()
        ),
    }
    if first.starts_with(b"# Disk DescriptorFile") {
        bail!("{} is a VMDK descriptor, not a raw disk", path.display());
    }
    if size % 512 != 0 {
        bail!("{}: size {size} is not a multiple of 512 bytes, so it is not a whole disk (truncated or not a raw image)", path.display());
    }
    let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "disk".into());
    Ok(Input { path: path.to_path_buf(), file, size, name, sha256: None, epoch: 0, manifest: None })
}

fn from_manifest(path: &Path) -> anyhow::Result<Input> {
    let m = crate::manifest::read(path)?;
    let raw =
        m.outputs.iter().find(|o| o.format == "raw").with_context(|| format!("{}: the manifest lists no raw output", path.display()))?;
    let raw_path = raw.path.as_str();
    let dir = path.parent().unwrap_or(Path::new("."));
    // The manifest records the path as written at build time; prefer the file beside it.
    let beside = Path::new(raw_path).file_name().map(|n| dir.join(n));
    let candidate = match beside {
        Some(b) if b.exists() => b,
        _ => PathBuf::from(raw_path),
    };
    let file =
        File::open(&candidate).with_context(|| format!("Failed to open {} (the raw named by {})", candidate.display(), path.display()))?;
    let mut input = open_raw(&candidate, file)?;
    if raw.size != input.size {
        bail!("{} is {} bytes but {} says {}: the raw changed after the build", candidate.display(), input.size, path.display(), raw.size);
    }
    input.sha256 = hex::decode(&raw.sha256).ok().and_then(|b| b.try_into().ok());
    if !m.name.is_empty() {
        input.name = m.name.clone();
    }
    input.epoch = crate::stamp::parse_rfc3339(&m.build_date).unwrap_or(0);
    input.manifest = Some(path.to_path_buf());
    Ok(input)
}
