//! A writable copy of the host's `/proc/sys`, bind-mounted over the sandbox's `/proc/sys`.
//!
//! Live-server code applies kernel parameters (`sysctl -w`, `sysctl -p`, Ansible's `sysctl`
//! with `reload: yes`, Salt's `sysctl.present`, `echo 61 > /proc/sys/vm/swappiness`). Against
//! the real `/proc/sys` those writes change the build host's kernel: most parameters are
//! global, and a user namespace does not protect them (root in an identity-mapped namespace
//! is still global root to sysctl's permission check). Against this copy they succeed and
//! change nothing; what they wrote is reported afterwards (`changes`), since only what the
//! image persists in /etc/sysctl.d applies when it boots.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Where the kernel's parameters are.
const PROC_SYS: &str = "/proc/sys";

/// The copy, and what each parameter held when it was taken.
#[derive(Debug)]
pub struct Snapshot {
    dir: PathBuf,
    taken: BTreeMap<String, Vec<u8>>,
}

impl Snapshot {
    /// Copies every readable parameter file of `/proc/sys` into `dir` (which must exist and be
    /// empty); unreadable and write-only ones become empty files.
    pub fn take(dir: &Path) -> anyhow::Result<Self> {
        let mut taken = BTreeMap::new();
        copy_tree(Path::new(PROC_SYS), dir, "", &mut taken)?;
        Ok(Self { dir: dir.to_path_buf(), taken })
    }

    /// Parameters written in the sandbox since the copy was taken: (name as in `sysctl`,
    /// new value), sorted by name. Pure given the files.
    pub fn changes(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (rel, before) in &self.taken {
            let Ok(now) = std::fs::read(self.dir.join(rel)) else { continue };
            if &now != before {
                out.push((rel.replace('/', "."), String::from_utf8_lossy(&now).trim().to_string()));
            }
        }
        out
    }
}

fn copy_tree(from: &Path, to: &Path, rel: &str, taken: &mut BTreeMap<String, Vec<u8>>) -> anyhow::Result<()> {
    let entries = match std::fs::read_dir(from) {
        Ok(e) => e,
        // A directory this process may not list (some net.* under a foreign namespace).
        Err(_) => return Ok(()),
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let (src, dst) = (from.join(name), to.join(name));
        let rel = if rel.is_empty() { name.to_string() } else { format!("{rel}/{name}") };
        let Ok(kind) = e.file_type() else { continue };
        if kind.is_dir() {
            std::fs::create_dir(&dst).with_context(|| format!("Failed to create {}", dst.display()))?;
            copy_tree(&src, &dst, &rel, taken)?;
        } else if kind.is_file() {
            // Write-only (vm/drop_caches) or root-only-readable entries: an empty file.
            let value = std::fs::read(&src).unwrap_or_default();
            std::fs::write(&dst, &value).with_context(|| format!("Failed to write {}", dst.display()))?;
            let mode = e.metadata().map(|m| m.permissions().mode() & 0o777).unwrap_or(0o644) | 0o200;
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("Failed to set the mode of {}", dst.display()))?;
            taken.insert(rel, value);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_holds_the_kernel_values_and_reports_writes() {
        let dir = tempfile::tempdir().unwrap();
        let snap = Snapshot::take(dir.path()).unwrap();
        let real = std::fs::read(Path::new(PROC_SYS).join("kernel/ostype")).unwrap();
        assert_eq!(std::fs::read(dir.path().join("kernel/ostype")).unwrap(), real);
        assert!(snap.changes().is_empty());
        std::fs::write(dir.path().join("vm/swappiness"), b"61\n").unwrap();
        assert_eq!(snap.changes(), [("vm.swappiness".to_string(), "61".to_string())]);
    }
}
