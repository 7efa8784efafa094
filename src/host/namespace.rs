//! The build's private mount namespace: every mount we make dies with the process.

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};

/// Errors from entering the namespace.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    /// unshare(2) failed.
    #[error("Failed to create a private mount namespace (imgforge build must run as root): {0}")]
    Unshare(#[source] nix::Error),
    /// Making / private failed.
    #[error("Failed to mark / recursively private in the new mount namespace: {0}")]
    Private(#[source] nix::Error),
}

/// Moves this process into a new mount namespace and makes `/` recursively private, so no mount
/// made afterwards propagates to the host, and the kernel drops them all when the last process
/// in the namespace exits — even after `kill -9`.
///
/// Must be called before any thread is spawned: `unshare(CLONE_NEWNS)` affects only the calling
/// thread.
pub fn enter_private_mount_namespace() -> Result<(), NamespaceError> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(NamespaceError::Unshare)?;
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>).map_err(NamespaceError::Private)
}
