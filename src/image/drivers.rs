//! Which cloud-critical kernel drivers the image's kernels carry, from their `modules.dep` and
//! `modules.builtin` (read inside the image root). Recorded in the manifest; `publish` warns
//! when an AMI would claim ENA without the driver, or when Nitro's NVMe disks could not be seen.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::chroot::resolve::Root;

/// Largest module index read (a real modules.dep is well under 1 MiB).
const MAX_INDEX: u64 = 16 << 20;

/// Drivers present in every installed kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Drivers {
    /// Kernels looked at.
    pub kernels: usize,
    /// `ena` (AWS Elastic Network Adapter).
    pub ena: bool,
    /// `nvme` (EBS volumes on Nitro instances are NVMe devices).
    pub nvme: bool,
}

/// Whether a module index (modules.dep or modules.builtin text) lists `name`.ko. Pure.
pub fn lists(index: &str, name: &str) -> bool {
    index.lines().any(|l| {
        let path = l.split(':').next().unwrap_or("").trim();
        let file = path.rsplit('/').next().unwrap_or("");
        file.strip_prefix(name).is_some_and(|rest| rest == ".ko" || rest.starts_with(".ko."))
    })
}

/// A module index inside the root (regular files only, never blocking); None if absent or odd.
fn read_index(root: &Root, path: &Path) -> Option<String> {
    root.read_at_most(path, MAX_INDEX).ok()?.map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// The drivers of every kernel under /usr/lib/modules (or /lib/modules); None without kernels.
pub fn detect(root: &Root) -> Option<Drivers> {
    let base = ["/usr/lib/modules", "/lib/modules"].into_iter().map(PathBuf::from).find(|p| root.list(p).is_ok_and(|l| !l.is_empty()))?;
    let mut d = Drivers { kernels: 0, ena: true, nvme: true };
    for k in root.list(&base).ok()? {
        let dir = base.join(&k);
        let Some(dep) = read_index(root, &dir.join("modules.dep")) else { continue };
        let builtin = read_index(root, &dir.join("modules.builtin")).unwrap_or_default();
        d.kernels += 1;
        d.ena &= lists(&dep, "ena") || lists(&builtin, "ena");
        d.nvme &= lists(&dep, "nvme") || lists(&builtin, "nvme");
    }
    (d.kernels > 0).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_modules_by_file_name() {
        let dep = "kernel/drivers/net/ethernet/amazon/ena/ena.ko.xz: \nkernel/drivers/nvme/host/nvme-core.ko:\n";
        assert!(lists(dep, "ena"));
        assert!(!lists(dep, "nvme"), "nvme-core is not nvme");
        assert!(lists("kernel/drivers/nvme/host/nvme.ko\n", "nvme"));
        assert!(!lists("kernel/drivers/net/ethernet/foo/enable.ko:\n", "ena"));
    }

    #[test]
    fn every_kernel_must_have_them() {
        let tmp = tempfile::tempdir().unwrap();
        let k1 = tmp.path().join("usr/lib/modules/6.1.0-1-amd64");
        let k2 = tmp.path().join("usr/lib/modules/6.1.0-2-amd64");
        std::fs::create_dir_all(&k1).unwrap();
        std::fs::create_dir_all(&k2).unwrap();
        std::fs::write(k1.join("modules.dep"), "kernel/drivers/net/ethernet/amazon/ena/ena.ko:\n").unwrap();
        std::fs::write(k1.join("modules.builtin"), "kernel/drivers/nvme/host/nvme.ko\n").unwrap();
        std::fs::write(k2.join("modules.dep"), "kernel/drivers/nvme/host/nvme.ko: kernel/drivers/nvme/host/nvme-core.ko\n").unwrap();
        let root = Root::open(tmp.path()).unwrap();
        assert_eq!(detect(&root), Some(Drivers { kernels: 2, ena: false, nvme: true }));
        // A FIFO where an index should be is skipped, not waited on.
        std::fs::remove_file(k2.join("modules.dep")).unwrap();
        nix::unistd::mkfifo(&k2.join("modules.dep"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        assert_eq!(detect(&root), Some(Drivers { kernels: 1, ena: true, nvme: true }));
        // No kernels at all.
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(detect(&Root::open(empty.path()).unwrap()), None);
    }
}
