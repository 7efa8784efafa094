//! The image, attached and mounted for provisioning: root, then its fstab mounts (/boot,
//! /boot/efi…), then /proc, /sys, /dev, /dev/pts, /dev/shm and /run. Released in one place,
//! unmount before detach, and every failure is reported.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use sys_mount::MountFlags;

use crate::chroot::layout::{DeviceRef, device_ref, parse_fstab, secondary_mounts};
use crate::chroot::resolve::Root;
use crate::disk::fsprobe::{FsInfo, PROBE_LEN, probe};
use crate::disk::partition::{Partition, PartitionTable, types};
use crate::host::command::CommandRunExt;
use crate::host::loopdev::LoopDevice;
use crate::host::mount::{MountSpec, MountTree};
use crate::progress::Events;

/// A partition with what its filesystem says about itself.
#[derive(Debug, Clone)]
pub struct Probed {
    /// The partition.
    pub part: Partition,
    /// Its filesystem.
    pub fs: FsInfo,
}

/// Reads the first bytes of each partition and identifies its filesystem.
pub fn probe_all(disk: &File, table: &PartitionTable) -> anyhow::Result<Vec<Probed>> {
    let mut buf = vec![0u8; PROBE_LEN];
    table
        .partitions
        .iter()
        .map(|p| {
            let want = PROBE_LEN.min(usize::try_from(p.size).unwrap_or(PROBE_LEN));
            buf.fill(0);
            let slice = buf.get_mut(..want).unwrap_or_default();
            disk.read_exact_at(slice, p.start).with_context(|| format!("Failed to read partition {} at offset {}", p.index, p.start))?;
            Ok(Probed { part: p.clone(), fs: probe(&buf) })
        })
        .collect()
}

/// Picks the root partition: the recipe's choice, else the one with the x86-64 root type GUID,
/// else the only Linux filesystem not labelled as /boot, else the one with a root label
/// (cloudimg-rootfs, rootfs, root…), else the largest.
pub fn choose_root(parts: &[Probed], wanted: Option<u32>) -> anyhow::Result<Probed> {
    let linux = |p: &&Probed| matches!(p.fs.fstype.as_str(), "ext2" | "ext3" | "ext4" | "xfs" | "btrfs");
    if let Some(n) = wanted {
        return parts
            .iter()
            .find(|p| p.part.index == n)
            .cloned()
            .with_context(|| format!("disk.root_partition = {n}, but the disk has no partition {n}"));
    }
    let by_type: Vec<&Probed> = parts.iter().filter(|p| p.part.type_guid == Some(types::LINUX_ROOT_X86_64)).collect();
    if let [one] = by_type.as_slice() {
        return Ok((*one).clone());
    }
    let candidates: Vec<&Probed> = parts.iter().filter(linux).filter(|p| !matches!(p.fs.label.as_str(), "BOOT" | "boot")).collect();
    match candidates.as_slice() {
        [] => bail!("no Linux root filesystem found on the disk (partitions: {}); set [disk] root_partition", summary(parts)),
        [one] => Ok((*one).clone()),
        many => {
            const ROOT_LABELS: &[&str] = &["cloudimg-rootfs", "rootfs", "root", "ROOT", "img-rootfs"];
            if let Some(p) = many.iter().find(|p| ROOT_LABELS.contains(&p.fs.label.as_str())) {
                return Ok((*p).clone());
            }
            let best = many.iter().max_by_key(|p| p.part.size).map(|p| (*p).clone()).context("no candidate")?;
            tracing::warn!(
                "several Linux filesystems; using the largest, partition {} (set [disk] root_partition to choose)",
                best.part.index
            );
            Ok(best)
        }
    }
}

fn summary(parts: &[Probed]) -> String {
    parts
        .iter()
        .map(|p| format!("{}:{}", p.part.index, if p.fs.fstype.is_empty() { "?" } else { &p.fs.fstype }))
        .collect::<Vec<_>>()
        .join(", ")
}

fn find_partition<'a>(parts: &'a [Probed], r: &DeviceRef) -> Option<&'a Probed> {
    parts.iter().find(|p| match r {
        DeviceRef::Label(l) => &p.fs.label == l,
        DeviceRef::Uuid(u) => p.fs.uuid.eq_ignore_ascii_case(u),
        DeviceRef::PartUuid(u) => p.part.part_guid.is_some_and(|g| g.to_string().eq_ignore_ascii_case(u)),
        DeviceRef::PartLabel(l) => &p.part.name == l,
        DeviceRef::Other(_) => false,
    })
}

/// The mounted image. Field order is drop order: the root fd (which keeps the root mount busy)
/// first, then the mounts, then the loop devices.
#[derive(Debug)]
pub struct Mounted {
    /// The image root, open.
    pub root: Root,
    held: Held,
    /// Filesystems mounted from the disk (mount point in the image, host path), for trimming.
    pub filesystems: Vec<(String, PathBuf)>,
    /// Which partition is mounted where (mount point in the image, partition number).
    pub partitions: Vec<(String, u32)>,
}

/// What must be released, in order: mounts, then loop devices, then the mount directory.
#[derive(Debug)]
struct Held {
    tree: Option<MountTree>,
    loops: Vec<LoopDevice>,
    dir: Option<PathBuf>,
}

/// Removes the empty mount directories of builds that died (`kill -9`) — only when their
/// process is gone, and only with `remove_dir`, which refuses anything not empty.
pub fn sweep_stale_mount_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("imgforge-").and_then(|r| r.split('-').next()).and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
        if !alive && std::fs::remove_dir(e.path().join("root")).is_ok() && std::fs::remove_dir(e.path()).is_ok() {
            tracing::debug!("removed stale mount directory {}", e.path().display());
        }
    }
}

/// Creates the mount directory, private to this build: `/tmp/imgforge-<pid>-<random>/root`.
fn mount_dir() -> anyhow::Result<PathBuf> {
    sweep_stale_mount_dirs();
    let base = tempfile::Builder::new().prefix(&format!("imgforge-{}-", std::process::id())).tempdir_in(std::env::temp_dir())?;
    let dir = base.keep();
    let root = dir.join("root");
    std::fs::create_dir(&root)?;
    Ok(root)
}

/// Grows an unmounted ext2/3/4 root to fill its loop device: e2fsck first (resize2fs insists),
/// then resize2fs. XFS can only grow mounted (done after mounting).
fn grow_offline(dev: &Path, fstype: &str, events: &Events) -> anyhow::Result<()> {
    match fstype {
        "ext2" | "ext3" | "ext4" => {
            events.step("grow-fs", "checking and growing the root filesystem");
            let check = Command::new("e2fsck").args(["-f", "-p"]).arg(dev).run_any_status("check the root filesystem before growing it")?;
            // 0: clean, 1: errors corrected. Anything else needs a human.
            if !matches!(check.status.code(), Some(0 | 1)) {
                bail!(
                    "e2fsck found problems in the upstream root filesystem ({}){}; the upstream image is damaged: check it with \
                     `e2fsck -fn` on its root partition and ask its vendor, or build without [disk] size",
                    check.status,
                    crate::host::command::tail(&check.stderr)
                );
            }
            Command::new("resize2fs").arg(dev).run_checked("grow the root filesystem")?;
            Ok(())
        }
        "xfs" => Ok(()),
        other => bail!("cannot grow a {other} root filesystem; leave out [disk] size"),
    }
}

type PseudoMount = (&'static str, &'static str, Option<&'static str>, MountFlags, Option<&'static str>);

fn fs_options(fstype: &str) -> Option<&'static str> {
    // Two builds from one upstream mount the same XFS UUID at once.
    (fstype == "xfs").then_some("nouuid")
}

impl Mounted {
    /// Attaches and mounts the root and its fstab mounts, then the pseudo filesystems.
    /// With `grow_fs`, the root filesystem is first grown to fill its (grown) partition. With
    /// `read_only`, the disk's filesystems are attached and mounted read-only (a dry run).
    pub fn mount(
        disk: &File,
        parts: &[Probed],
        root_part: &Probed,
        grow_fs: bool,
        read_only: bool,
        events: &Events,
    ) -> anyhow::Result<Self> {
        let dir = mount_dir().context("Failed to create the mount directory")?;
        // `Held` owns the directory from here on: whatever fails below, its drop unmounts,
        // detaches and removes the directory.
        let mut held = Held { tree: Some(MountTree::new(dir.clone())), loops: Vec::new(), dir: Some(dir.clone()) };
        let root_loop = events.phase("mount", "attach the root partition's loop device (the kernel first writes back the working disk's dirty pages: writeback the output step would wait for)", || {
            LoopDevice::attach(disk, root_part.part.start, root_part.part.size, read_only)
        })?;
        let root_dev = root_loop.path().to_path_buf();
        held.loops.push(root_loop);
        let ro = if read_only { MountFlags::RDONLY } else { MountFlags::empty() };
        let fstype = root_part.fs.fstype.clone();
        if grow_fs {
            events.phase("mount", "check and grow the root filesystem offline", || grow_offline(&root_dev, &fstype, events))?;
        }
        let spec = MountSpec { source: &root_dev, fstype: Some(&fstype), flags: ro, data: fs_options(&fstype) };
        let dir_fd = File::open(&dir).with_context(|| format!("Failed to open {}", dir.display()))?;
        events.phase("mount", "mount the root filesystem (journal replay, private namespace)", || {
            anyhow::Ok(held.tree.as_mut().context("the mount tree is gone")?.mount_at(&spec, &dir_fd, &dir)?)
        })?;
        drop(dir_fd);
        let root = Root::open(&dir)?;
        let mut me = Self { held, root, filesystems: vec![("/".into(), dir)], partitions: vec![("/".into(), root_part.part.index)] };
        if grow_fs && fstype == "xfs" {
            let dir = me.root.path().to_path_buf();
            events.phase("mount", "grow the root XFS filesystem online", || {
                Command::new("xfs_growfs").arg(&dir).run_checked("grow the root XFS filesystem")
            })?;
        }
        events.phase("mount", "attach and mount the image's other fstab filesystems", || {
            me.mount_fstab(disk, parts, root_part, read_only, events)
        })?;
        events.phase("mount", "mount /proc, /sys, a private /dev, /dev/pts, /dev/shm, /run", || me.mount_pseudo())?;
        Ok(me)
    }

    fn tree(&mut self) -> anyhow::Result<&mut MountTree> {
        self.held.tree.as_mut().context("the image is already unmounted")
    }

    fn mount_fstab(&mut self, disk: &File, parts: &[Probed], root_part: &Probed, read_only: bool, events: &Events) -> anyhow::Result<()> {
        let fstab = self.root.read(Path::new("/etc/fstab"))?.unwrap_or_default();
        let supported = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
        for e in secondary_mounts(&parse_fstab(&String::from_utf8_lossy(&fstab))) {
            let Some(p) = find_partition(parts, &device_ref(&e.spec)) else {
                events.notice(&format!("fstab: {} for {} is not on this disk; not mounted", e.spec, e.target));
                continue;
            };
            if p.part.index == root_part.part.index {
                continue;
            }
            let fstype = if p.fs.fstype.is_empty() { e.fstype.clone() } else { p.fs.fstype.clone() };
            if !supported.lines().any(|l| l.split_whitespace().last() == Some(fstype.as_str())) {
                events.notice(&format!(
                    "{} ({fstype}, partition {}) is not mounted: this kernel cannot mount {fstype}; provisioners see an empty {}",
                    e.target, p.part.index, e.target
                ));
                continue;
            }
            let lo = LoopDevice::attach(disk, p.part.start, p.part.size, read_only)?;
            self.root.mkdir_all(Path::new(&e.target), 0o755)?;
            let target = self.root.dir(Path::new(&e.target))?;
            let shown = self.root.shown(Path::new(&e.target));
            let dev = lo.path().to_path_buf();
            self.held.loops.push(lo);
            let flags = if read_only { MountFlags::RDONLY } else { MountFlags::empty() };
            let spec = MountSpec { source: &dev, fstype: Some(&fstype), flags, data: fs_options(&fstype) };
            self.tree()?.mount_at(&spec, &target, &shown)?;
            self.filesystems.push((e.target.clone(), shown));
            self.partitions.push((e.target.clone(), p.part.index));
        }
        Ok(())
    }

    fn mount_pseudo(&mut self) -> anyhow::Result<()> {
        let nse = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
        // (target, source, fstype, flags, options)
        let list: [PseudoMount; 6] = [
            ("/proc", "proc", Some("proc"), nse, None),
            ("/sys", "sysfs", Some("sysfs"), nse | MountFlags::RDONLY, None),
            // Not the host's /dev: a tmpfs with the few devices a build needs (`populate_dev`).
            ("/dev", "tmpfs", Some("tmpfs"), MountFlags::NOSUID | MountFlags::NOEXEC, Some("mode=0755,size=1m")),
            (
                "/dev/pts",
                "devpts",
                Some("devpts"),
                MountFlags::NOSUID | MountFlags::NOEXEC,
                Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
            ),
            ("/dev/shm", "tmpfs", Some("tmpfs"), MountFlags::NOSUID | MountFlags::NODEV, Some("mode=1777")),
            ("/run", "tmpfs", Some("tmpfs"), MountFlags::NOSUID | MountFlags::NODEV, Some("mode=0755")),
        ];
        for (target, source, fstype, flags, data) in list {
            let t = Path::new(target);
            if !target.starts_with("/dev/") {
                self.root.mkdir_all(t, 0o755)?;
            }
            let fd = self.root.dir(t)?;
            let shown = self.root.shown(t);
            let spec = MountSpec { source: Path::new(source), fstype, flags, data };
            self.tree()?.mount_at(&spec, &fd, &shown)?;
            if target == "/dev" {
                populate_dev(&self.root)?;
            }
        }
        self.root.mkdir_all(Path::new(crate::chroot::run::RUN_DIR), 0o700)?;
        self.root.write(Path::new("/run/imgforge-build"), b"1\n", 0o644)?;
        Ok(())
    }

    /// Unmounts everything (deepest first), then detaches every loop device, then removes the
    /// mount directory (never recursively). Every failure is returned.
    pub fn close(self) -> anyhow::Result<()> {
        let Self { root, mut held, .. } = self;
        drop(root);
        held.impl_close()
    }
}

/// The devices of the build's /dev: the harmless character devices, the usual symlinks, and
/// mount points for pts and shm. No disk, no memory, no host terminal: nothing a provisioner
/// could write to reach the build host.
fn populate_dev(root: &Root) -> anyhow::Result<()> {
    const NODES: [(&str, u32, u64, u64); 6] = [
        ("null", 0o666, 1, 3),
        ("zero", 0o666, 1, 5),
        ("full", 0o666, 1, 7),
        ("random", 0o666, 1, 8),
        ("urandom", 0o666, 1, 9),
        ("tty", 0o666, 5, 0),
    ];
    let dev = Path::new("/dev");
    for (name, mode, major, minor) in NODES {
        root.mknod_char(&dev.join(name), mode, major, minor)?;
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        root.symlink(Path::new(target), &dev.join(name))?;
    }
    for d in ["pts", "shm"] {
        root.mkdir_all(&dev.join(d), 0o755)?;
    }
    Ok(())
}

impl Held {
    fn impl_close(&mut self) -> anyhow::Result<()> {
        if let Some(tree) = self.tree.take() {
            tree.close()?;
        }
        let mut first_err = None;
        while let Some(lo) = self.loops.pop() {
            if let Err(e) = lo.close() {
                first_err.get_or_insert(anyhow::Error::from(e));
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        if let Some(dir) = self.dir.take() {
            std::fs::remove_dir(&dir).with_context(|| format!("Failed to remove {}", dir.display()))?;
            if let Some(parent) = dir.parent() {
                std::fs::remove_dir(parent).with_context(|| format!("Failed to remove {}", parent.display()))?;
            }
        }
        Ok(())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Err(e) = self.impl_close() {
            tracing::error!("{e:#}");
        }
    }
}

/// Clears the free space of every mounted filesystem of the image, after the seal: syncfs
/// (the journal commits, so blocks freed by the seal are free), FITRIM (freed blocks become
/// holes in the disk file: loop devices pass discard through as hole punching), then syncfs
/// and FITRIM again for what the first trim's own commit freed. A filesystem that cannot
/// discard (EOPNOTSUPP) gets its free space overwritten with zeros instead. FITRIM skips free
/// runs shorter than the discard granule: ext2/3/4 free blocks are also punched out of the
/// disk after unmount ([`crate::image::freespace`]). One line per filesystem says what was
/// done.
pub fn trim_all(m: &Mounted) -> anyhow::Result<Vec<String>> {
    let mut done = Vec::new();
    for (target, host) in &m.filesystems {
        let dir = std::fs::File::open(host).with_context(|| format!("Failed to open {}", host.display()))?;
        let mut trimmed = [0u64; 2];
        let mut unsupported = false;
        for pass in &mut trimmed {
            crate::host::trim::sync(&dir, host)?;
            match crate::host::trim::trim(&dir, host) {
                Ok(n) => *pass = n,
                Err(e) if e.source == nix::Error::EOPNOTSUPP => {
                    unsupported = true;
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let line = if unsupported {
            let n = crate::host::trim::zero_free(host)?;
            format!("{target}: cannot discard (EOPNOTSUPP); free space overwritten with zeros ({n} bytes)")
        } else {
            format!("{target}: synced and trimmed ({} bytes discarded, then {})", trimmed[0], trimmed[1])
        };
        tracing::debug!("{line}");
        done.push(line);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::partition::Guid;

    fn p(index: u32, size: u64, type_guid: Option<Guid>, fstype: &str, label: &str) -> Probed {
        Probed {
            part: Partition { index, start: 0, size, type_guid, mbr_type: None, part_guid: None, name: String::new(), bootable: false },
            fs: FsInfo { fstype: fstype.into(), label: label.into(), uuid: String::new() },
        }
    }

    #[test]
    fn root_by_type_guid_in_the_ubuntu_layout() {
        let parts = [
            p(1, 100, Some(types::LINUX_ROOT_X86_64), "ext4", "cloudimg-rootfs"),
            p(14, 4, Some(types::BIOS_BOOT), "", ""),
            p(15, 10, Some(types::EFI_SYSTEM), "vfat", "UEFI"),
            p(16, 50, Some(types::XBOOTLDR), "ext4", "BOOT"),
        ];
        assert_eq!(choose_root(&parts, None).unwrap().part.index, 1);
    }

    #[test]
    fn root_without_type_guid() {
        // ESP first, root second, generic Linux type.
        let parts = [p(1, 10, Some(types::EFI_SYSTEM), "vfat", ""), p(2, 100, Some(types::LINUX_FS), "ext4", "")];
        assert_eq!(choose_root(&parts, None).unwrap().part.index, 2);
        // A single MBR partition.
        assert_eq!(choose_root(&[p(1, 100, None, "ext4", "rootfs")], None).unwrap().part.index, 1);
        // Several: the root label wins over size; then the largest.
        let parts = [p(1, 500, None, "ext4", "data"), p(2, 100, None, "ext4", "rootfs")];
        assert_eq!(choose_root(&parts, None).unwrap().part.index, 2);
        let parts = [p(1, 500, None, "ext4", "data"), p(2, 100, None, "xfs", "other")];
        assert_eq!(choose_root(&parts, None).unwrap().part.index, 1);
        // The recipe decides.
        assert_eq!(choose_root(&parts, Some(2)).unwrap().part.index, 2);
        assert!(choose_root(&parts, Some(9)).is_err());
        assert!(choose_root(&[p(1, 10, None, "vfat", "")], None).is_err());
    }
}
