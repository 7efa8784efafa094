//! Copying host files into the image. Sources are the recipe's (trusted); every destination is
//! resolved inside the image root, and an existing symlink at a destination is replaced, never
//! followed. Directories we create get the source's mode; existing image directories keep
//! theirs (an overlay's `etc/` must not loosen the image's `/etc`).

use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::fcntl::OFlag;

use super::owner::Ids;
use crate::chroot::resolve::Root;

/// Attributes applied to what is copied.
#[derive(Debug, Clone, Copy)]
pub struct Attrs {
    /// Mode for files (None: the source's permission bits).
    pub mode: Option<u32>,
    /// Owner.
    pub ids: Ids,
}

/// Where a `file` provisioner writes: into `dest` when it ends in `/` or is a directory in the
/// image and the source is a file; otherwise `dest` itself.
pub fn file_destination(root: &Root, source: &Path, dest: &Path, into_dir: bool) -> anyhow::Result<PathBuf> {
    let is_dir_in_image = root.dir(dest).is_ok();
    if source.is_file() && (into_dir || is_dir_in_image) {
        let name = source.file_name().context("source has no file name")?;
        return Ok(dest.join(name));
    }
    Ok(dest.to_path_buf())
}

/// Copies a host file or tree to `dest` inside the image.
pub fn copy_in(root: &Root, source: &Path, dest: &Path, attrs: &Attrs) -> anyhow::Result<()> {
    let meta = std::fs::metadata(source).with_context(|| format!("Failed to read {}", source.display()))?;
    if meta.is_dir() {
        ensure_dir(root, dest, meta.permissions().mode(), attrs)?;
        copy_tree(root, source, dest, attrs)
    } else {
        if let Some(parent) = dest.parent() {
            root.mkdir_all(parent, 0o755)?;
        }
        copy_file(root, source, dest, meta.permissions().mode(), attrs)
    }
}

fn copy_tree(root: &Root, src_dir: &Path, dest_dir: &Path, attrs: &Attrs) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(src_dir)
        .with_context(|| format!("Failed to list {}", src_dir.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("Failed to list {}", src_dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let src = e.path();
        let dest = dest_dir.join(e.file_name());
        let meta = std::fs::symlink_metadata(&src).with_context(|| format!("Failed to read {}", src.display()))?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = std::fs::read_link(&src).with_context(|| format!("Failed to read link {}", src.display()))?;
            root.remove_file(&dest)?;
            root.symlink(&target, &dest)?;
            lchown(root, &dest, attrs.ids)?;
        } else if ft.is_dir() {
            ensure_dir(root, &dest, meta.mode(), attrs)?;
            copy_tree(root, &src, &dest, attrs)?;
        } else if ft.is_file() {
            copy_file(root, &src, &dest, meta.mode(), attrs)?;
        } else {
            tracing::warn!("skipping {}: not a regular file, directory or symlink", src.display());
        }
    }
    Ok(())
}

fn ensure_dir(root: &Root, dest: &Path, src_mode: u32, attrs: &Attrs) -> anyhow::Result<()> {
    if root.dir(dest).is_ok() {
        return Ok(());
    }
    if root.lstat(dest)?.is_some() {
        // A file or symlink where the tree has a directory: replace it, never follow it.
        root.remove_file(dest)?;
    }
    root.mkdir_all(dest, 0o700)?;
    let fd = root.open_in(dest, OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0)?;
    let f = File::from(fd);
    std::os::unix::fs::fchown(&f, Some(attrs.ids.uid), Some(attrs.ids.gid)).with_context(|| format!("Failed to chown {dest:?}"))?;
    f.set_permissions(std::fs::Permissions::from_mode(src_mode & 0o7777)).with_context(|| format!("Failed to chmod {dest:?}"))
}

fn copy_file(root: &Root, src: &Path, dest: &Path, src_mode: u32, attrs: &Attrs) -> anyhow::Result<()> {
    let mut input = File::open(src).with_context(|| format!("Failed to open {}", src.display()))?;
    let mut out = root.create_replacing(dest, 0o600)?;
    std::io::copy(&mut input, &mut out).with_context(|| format!("Failed to copy {} to {}", src.display(), dest.display()))?;
    std::os::unix::fs::fchown(&out, Some(attrs.ids.uid), Some(attrs.ids.gid))
        .with_context(|| format!("Failed to chown {}", dest.display()))?;
    let mode = attrs.mode.unwrap_or(src_mode & 0o7777);
    out.set_permissions(std::fs::Permissions::from_mode(mode)).with_context(|| format!("Failed to chmod {}", dest.display()))
}

fn lchown(root: &Root, path: &Path, ids: Ids) -> anyhow::Result<()> {
    let fd = root.open_in(path.parent().unwrap_or(Path::new("/")), OFlag::O_PATH | OFlag::O_DIRECTORY, 0)?;
    let name = path.file_name().context("no file name")?;
    nix::unistd::fchownat(
        &fd,
        name,
        Some(nix::unistd::Uid::from_raw(ids.uid)),
        Some(nix::unistd::Gid::from_raw(ids.gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .with_context(|| format!("Failed to chown {}", path.display()))
}
