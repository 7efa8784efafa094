//! Finishing one output (the build's raw, each exported format): hash it, let the caller check
//! it while it is still unnamed, make it world-readable, then give it its final name.

use std::fs::File;
use std::path::Path;

use anyhow::Context;

use super::run::{Finish, Target};
use crate::disk::workdisk::WorkDisk;
use crate::io::hash::{Algo, digest_sparse};
use crate::manifest::OutputFile;

/// Finishes the unnamed output `work` as `target`: its SHA-256 when `fin.sha256` (fsynced
/// alongside when `fin.sync` too), then `check` on the still-unnamed file by its /proc path (the
/// caller's `export --verify`: `fin.verify` is not read here), then mode 0644 and the name
/// `target.dest` (fsynced first when `fin.sync`). Returns the named file and its record, whose
/// `sha256` is empty when not computed.
pub fn finish_output(
    work: WorkDisk,
    target: &Target,
    fin: Finish,
    check: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<(File, OutputFile)> {
    use std::os::unix::fs::PermissionsExt;
    let dest = &target.dest;
    // The unnamed output, readable by path until it is named.
    let fd = crate::host::fd::self_path(work.file());
    let sha256 = hash_and_sync(work.file(), fin, dest)?;
    check(&fd)?;
    work.file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("Failed to set the mode of {}", dest.display()))?;
    let file = work.persist_with(dest, fin.sync)?;
    let size = file.metadata().with_context(|| format!("Failed to stat {}", dest.display()))?.len();
    Ok((file, OutputFile { format: target.format.name().into(), path: dest.display().to_string(), size, sha256 }))
}

/// SHA-256 (hex) of `file` when `fin.sha256`, else empty. With `fin.sync` too, `file` is fsynced
/// on another thread meanwhile: the hash reads from the page cache while the kernel writes the
/// file back. Holes (SEEK_HOLE) are hashed as zeros without being read: reading a hole of a
/// fresh file makes the kernel allocate and zero a page-cache page for every 4 KiB of it, which
/// took 5 s of system time for the 1.5 GiB of holes of a 2 GiB raw here. `dest` names the
/// output in errors.
fn hash_and_sync(file: &File, fin: Finish, dest: &Path) -> anyhow::Result<String> {
    let hash = || {
        if !fin.sha256 {
            return Ok(String::new());
        }
        let size = file.metadata().with_context(|| format!("Failed to stat {}", dest.display()))?.len();
        let extents =
            crate::io::extents::data_extents(file, size).with_context(|| format!("Failed to find the data of {}", dest.display()))?;
        digest_sparse(file, size, &extents, Algo::Sha256, None).with_context(|| format!("Failed to hash {}", dest.display()))
    };
    if !(fin.sha256 && fin.sync) {
        return hash();
    }
    std::thread::scope(|s| {
        let sync = s.spawn(|| file.sync_all());
        let sha = hash();
        let synced = sync.join().unwrap_or_else(|_| Err(std::io::Error::other("sync thread panicked")));
        synced.with_context(|| format!("Failed to sync {}", dest.display())).and(sha)
    })
}
