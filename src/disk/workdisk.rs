//! The working disk: an unnamed file (O_TMPFILE) in the output directory. If imgforge dies, the
//! kernel frees it with the last reference — nothing is left on disk. On success it gets a name
//! through linkat + rename, atomically; `--on-error keep` names it too.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::fcntl::{AT_FDCWD, AtFlags, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::linkat;

/// Creating or naming the working disk failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkDiskError {
    /// Creating the file failed.
    #[error("Failed to create the working disk in {dir}: {source}")]
    Create {
        /// Directory.
        dir: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Giving it a name failed.
    #[error("Failed to write {dest}: {source}")]
    Persist {
        /// Final name.
        dest: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// An unnamed (or, where O_TMPFILE is not supported, temporarily named) disk file.
#[derive(Debug)]
pub struct WorkDisk {
    file: File,
    dir: PathBuf,
    /// Set only in the fallback path: the temporary name to delete on drop.
    temp_name: Option<tempfile::TempPath>,
}

impl WorkDisk {
    /// Creates an empty working disk in `dir` (which must exist).
    pub fn create(dir: &Path) -> Result<Self, WorkDiskError> {
        let err = |source| WorkDiskError::Create { dir: dir.to_path_buf(), source };
        match nix::fcntl::open(dir, OFlag::O_TMPFILE | OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::from_bits_truncate(0o600)) {
            Ok(fd) => Ok(Self { file: File::from(fd), dir: dir.to_path_buf(), temp_name: None }),
            Err(nix::errno::Errno::EOPNOTSUPP | nix::errno::Errno::EISDIR) => {
                let named = tempfile::Builder::new().prefix(".imgforge-work-").tempfile_in(dir).map_err(err)?;
                let (file, path) = named.into_parts();
                Ok(Self { file, dir: dir.to_path_buf(), temp_name: Some(path) })
            }
            Err(e) => Err(err(std::io::Error::from(e))),
        }
    }

    /// The open file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Gives the disk its final name `dest` (same filesystem), atomically replacing any old file.
    pub fn persist(self, dest: &Path) -> Result<File, WorkDiskError> {
        self.persist_with(dest, true)
    }

    /// [`WorkDisk::persist`], with the fsync before the rename optional (`sync`).
    pub fn persist_with(self, dest: &Path, sync: bool) -> Result<File, WorkDiskError> {
        let err = |source| WorkDiskError::Persist { dest: dest.to_path_buf(), source };
        if sync {
            self.file.sync_all().map_err(err)?;
        }
        if let Some(temp) = self.temp_name {
            temp.persist(dest).map_err(|e| err(e.error))?;
            return Ok(self.file);
        }
        let tmp = self.dir.join(format!(".{}.tmp-{}", file_name(dest), std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let proc_path = crate::host::fd::self_path(&self.file);
        linkat(AT_FDCWD, &proc_path, AT_FDCWD, &tmp, AtFlags::AT_SYMLINK_FOLLOW).map_err(|e| err(e.into()))?;
        if let Err(e) = std::fs::rename(&tmp, dest) {
            let _ = std::fs::remove_file(&tmp);
            return Err(err(e));
        }
        Ok(self.file)
    }
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}
