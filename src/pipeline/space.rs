//! What a full output directory means for a build. Every byte a build writes lands there: the
//! working disk (a sparse file that grows as the image is converted, provisioned and grown, also
//! through the loop devices, whose failed writes come back to the image as EIO) and each output.
//! When a build fails and its output directory is full, the error says so first, with the
//! space free and the space the build needs, instead of leaving the reader to find ENOSPC (or an
//! I/O error in the image) at the end of a chain.

use std::path::Path;

/// What the build knew about its size when it failed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sizes {
    /// The virtual size of the working disk (after any grow), once known.
    pub disk: Option<u64>,
    /// Outputs besides the raw.
    pub other_formats: usize,
}

/// `(free bytes for us, total bytes, free inodes, total inodes)` of the filesystem holding `dir`.
fn space(dir: &Path) -> Option<(u64, u64, u64, u64)> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    let frag = st.fragment_size();
    Some((st.blocks_available().saturating_mul(frag), st.blocks().saturating_mul(frag), st.files_available(), st.files()))
}

/// Whether an error chain holds an ENOSPC from a write of ours (not a provisioner's own output
/// saying so: its image filesystem may be the one that is full).
fn says_full(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.raw_os_error() == Some(libc::ENOSPC) || io.kind() == std::io::ErrorKind::StorageFull)
            || c.downcast_ref::<nix::errno::Errno>().is_some_and(|n| *n == nix::errno::Errno::ENOSPC)
    })
}

/// `e`, led by what the full output directory `dir` explains, when it is full. Called while
/// the working disk still holds its space: a filesystem with (almost) nothing left then is the
/// cause, whatever error reached us first (EIO through a loop device, a failed sync).
pub fn explain(e: anyhow::Error, dir: &Path, sizes: Sizes) -> anyhow::Error {
    let Some((free, total, inodes, all_inodes)) = space(dir) else { return e };
    let nearly_empty = free < (1 << 20).max(total / 200);
    // ENOSPC with bytes to spare: the inodes ran out (the failed build's own files are gone
    // again by now, so "few left" rather than none). Filesystems with inodes made on demand
    // (XFS, btrfs) may say 0 of 0.
    let few_inodes = all_inodes > 0 && inodes < 64u64.max(all_inodes / 200);
    if few_inodes && !nearly_empty && says_full(&e) {
        return e.context(format!(
            "the output directory {} ran out of inodes ({inodes} free once this build removed its own files; {free} bytes free): this build names a file there for the raw disk, each other output format, the seal report and the manifest; delete files there or choose another directory with -o",
            dir.display()
        ));
    }
    if !nearly_empty && !says_full(&e) {
        return e;
    }
    let need = match sizes.disk {
        Some(d) if sizes.other_formats > 0 => format!(
            "up to {d} bytes for the working disk (sparse: as much as the image holds) and about as much again for each other output format ({})",
            sizes.other_formats
        ),
        Some(d) => format!("up to {d} bytes for the working disk (sparse: as much as the image holds)"),
        None => "at least as much as the upstream image holds, for the working disk".to_string(),
    };
    e.context(format!(
        "the output directory {} is full ({free} bytes free of {total}): this build needs {need}; free space there or choose another directory with -o",
        dir.display()
    ))
}
