//! Paths that name an open file descriptor through /proc: how imgforge hands an unnamed file (the
//! work disk, an output before it is named) or an in-root-resolved directory to a path-taking API.

use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;

/// `/proc/self/fd/N`: for this process's own calls (open, linkat, mount). Takes a reference:
/// the path is only valid while the caller keeps the descriptor open.
pub fn self_path<F: AsFd>(fd: &F) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
}

/// `/proc/PID/fd/N`: for other programs imgforge runs (mtools, e2fsck), to which `/proc/self`
/// would mean themselves. Valid while this process holds the descriptor.
pub fn shared_path<F: AsFd>(fd: &F) -> PathBuf {
    PathBuf::from(format!("/proc/{}/fd/{}", std::process::id(), fd.as_fd().as_raw_fd()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn both_paths_open_the_same_file() {
        use std::io::{Read, Write};
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"unnamed").unwrap();
        for p in [self_path(&f), shared_path(&f)] {
            let mut s = String::new();
            std::fs::File::open(&p).unwrap().read_to_string(&mut s).unwrap();
            assert_eq!(s, "unnamed", "{}", p.display());
        }
        assert!(shared_path(&f).starts_with(format!("/proc/{}/fd", std::process::id())));
    }
}
