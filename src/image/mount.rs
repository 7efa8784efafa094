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

/// A partition with what its filesystem says about itself. A logical volume of an LVM
/// physical volume on the disk is listed too, as the byte range it occupies (numbered from
/// [`VOLUME_BASE`] + 1), with `volume` set.
#[derive(Debug, Clone)]
pub struct Probed {
    /// The partition (for a logical volume: its range of the disk).
    pub part: Partition,
    /// Its filesystem.
    pub fs: FsInfo,
    /// The logical volume this is, if it is one.
    pub volume: Option<Volume>,
}

/// Logical volumes are numbered after this, in the order their VG metadata lists them.
pub const VOLUME_BASE: u32 = 1000;

/// A logical volume found on the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Volume group name.
    pub vg: String,
    /// Logical volume name.
    pub lv: String,
    /// Why it cannot be used (not one range of one PV on this disk); `None` when it can.
    pub unusable: Option<String>,
}

impl Volume {
    /// "vg/lv".
    pub fn name(&self) -> String {
        format!("{}/{}", self.vg, self.lv)
    }
    /// Whether an fstab device path names it: `/dev/mapper/vg-lv` or `/dev/vg/lv`.
    fn named_by(&self, dev: &str) -> bool {
        dev == format!("/dev/mapper/{}", crate::disk::lvm::mapper_name(&self.vg, &self.lv))
            || dev == format!("/dev/{}/{}", self.vg, self.lv)
    }
}

/// How the recipe names the root filesystem (`[disk] root` / `root_partition`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootChoice {
    /// A partition number.
    Partition(u32),
    /// An LVM logical volume, "vg/lv".
    Volume(String),
    /// A filesystem label.
    Label(String),
    /// A filesystem UUID.
    Uuid(String),
}

impl std::fmt::Display for RootChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Partition(n) => write!(f, "partition {n}"),
            Self::Volume(v) => write!(f, "lvm = \"{v}\""),
            Self::Label(l) => write!(f, "label = \"{l}\""),
            Self::Uuid(u) => write!(f, "uuid = \"{u}\""),
        }
    }
}

/// Reads the first bytes of each partition and identifies its filesystem; then the logical
/// volumes of each LVM physical volume, read from the disk's bytes (nothing is activated).
pub fn probe_all(disk: &File, table: &PartitionTable) -> anyhow::Result<Vec<Probed>> {
    let mut buf = vec![0u8; PROBE_LEN];
    let mut parts = table
        .partitions
        .iter()
        .map(|p| {
            let want = PROBE_LEN.min(usize::try_from(p.size).unwrap_or(PROBE_LEN));
            buf.fill(0);
            let slice = buf.get_mut(..want).unwrap_or_default();
            disk.read_exact_at(slice, p.start).with_context(|| format!("Failed to read partition {} at offset {}", p.index, p.start))?;
            Ok(Probed { part: p.clone(), fs: probe(&buf), volume: None })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let volumes = logical_volumes(disk, &parts)?;
    parts.extend(volumes);
    Ok(parts)
}

/// The logical volumes of the disk's LVM physical volumes, each as the disk range it occupies.
fn logical_volumes(disk: &File, parts: &[Probed]) -> anyhow::Result<Vec<Probed>> {
    use crate::disk::lvm;
    // PV UUID → (partition, volume group).
    let mut pvs: Vec<(&Probed, lvm::VolumeGroup)> = Vec::new();
    for p in parts.iter().filter(|p| p.fs.fstype == "LVM2_member") {
        let read = lvm::partition_reader(disk, p.part.start, p.part.size);
        match lvm::read_pv(&read, p.part.size) {
            Ok(Some((_, vg))) => pvs.push((p, vg)),
            Ok(None) => {}
            Err(e) => tracing::warn!("partition {}: {e}; its logical volumes are not used", p.part.index),
        }
    }
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut buf = vec![0u8; PROBE_LEN];
    for (_, vg) in &pvs {
        if !seen.insert(vg.id.clone()) {
            continue;
        }
        for lv in vg.lvs.iter().filter(|l| l.visible) {
            let index = VOLUME_BASE + u32::try_from(out.len() + 1).unwrap_or(u32::MAX - VOLUME_BASE);
            let mut volume = Volume { vg: vg.name.clone(), lv: lv.name.clone(), unusable: None };
            let mut part = Partition {
                index,
                start: 0,
                size: 0,
                type_guid: None,
                mbr_type: None,
                part_guid: None,
                name: volume.name(),
                bootable: false,
            };
            let mut fs = FsInfo::default();
            let found = vg.extent(lv).and_then(|e| {
                let (pv_part, _) = pvs
                    .iter()
                    .find(|(p, _)| p.fs.uuid == e.pv)
                    .ok_or_else(|| format!("its physical volume {} is not on this disk", e.pv))?;
                if e.offset.checked_add(e.size).is_none_or(|end| end > pv_part.part.size) {
                    return Err(format!("its extents lie beyond partition {}", pv_part.part.index));
                }
                Ok((pv_part.part.start + e.offset, e.size))
            });
            match found {
                Ok((start, size)) => {
                    part.start = start;
                    part.size = size;
                    let want = PROBE_LEN.min(usize::try_from(size).unwrap_or(PROBE_LEN));
                    buf.fill(0);
                    let slice = buf.get_mut(..want).unwrap_or_default();
                    disk.read_exact_at(slice, start).with_context(|| format!("Failed to read logical volume {}", volume.name()))?;
                    fs = probe(&buf);
                }
                Err(why) => volume.unusable = Some(why),
            }
            out.push(Probed { part, fs, volume: Some(volume) });
        }
    }
    Ok(out)
}

fn is_linux_fs(p: &Probed) -> bool {
    matches!(p.fs.fstype.as_str(), "ext2" | "ext3" | "ext4" | "xfs" | "btrfs")
}

/// Picks the root filesystem: the recipe's choice, else the partition with the x86-64 root
/// type GUID, else the only Linux filesystem not labelled as /boot, else the one with a root
/// label (cloudimg-rootfs, rootfs, root…) or a root logical volume name (root, lv_root…),
/// else the largest.
pub fn choose_root(parts: &[Probed], wanted: Option<&RootChoice>) -> anyhow::Result<Probed> {
    if let Some(choice) = wanted {
        let found = parts.iter().find(|p| match choice {
            RootChoice::Partition(n) => p.part.index == *n,
            RootChoice::Volume(v) => p.volume.as_ref().is_some_and(|vol| vol.name() == *v),
            RootChoice::Label(l) => p.fs.label == *l && is_linux_fs(p),
            RootChoice::Uuid(u) => p.fs.uuid.eq_ignore_ascii_case(u) && is_linux_fs(p),
        });
        let Some(p) = found else {
            bail!("[disk] root {choice}: nothing on the disk matches it (found: {})", summary(parts));
        };
        if let Some(why) = p.volume.as_ref().and_then(|v| v.unusable.as_ref()) {
            bail!(
                "[disk] root {choice}: the logical volume cannot be used: {why}; imgforge reads LVM without device-mapper and \
                 maps only linear volumes that are one range of one physical volume on this disk"
            );
        }
        if !is_linux_fs(p) {
            let fs = if p.fs.fstype.is_empty() { "no filesystem imgforge knows" } else { &p.fs.fstype };
            bail!("[disk] root {choice}: {} holds {fs}, not a Linux root filesystem (found: {})", describe(p), summary(parts));
        }
        return Ok(p.clone());
    }
    let by_type: Vec<&Probed> = parts.iter().filter(|p| p.part.type_guid == Some(types::LINUX_ROOT_X86_64)).collect();
    if let [one] = by_type.as_slice() {
        return Ok((*one).clone());
    }
    let candidates: Vec<&Probed> =
        parts.iter().filter(|p| is_linux_fs(p)).filter(|p| !matches!(p.fs.label.as_str(), "BOOT" | "boot")).collect();
    match candidates.as_slice() {
        [] => bail!("no Linux root filesystem found on the disk (found: {}); set [disk] root", summary(parts)),
        [one] => Ok((*one).clone()),
        many => {
            const ROOT_LABELS: &[&str] = &["cloudimg-rootfs", "rootfs", "root", "ROOT", "img-rootfs", "/"];
            const ROOT_VOLUMES: &[&str] = &["root", "lv_root", "rootlv", "root_lv", "lvroot"];
            if let Some(p) = many.iter().find(|p| ROOT_LABELS.contains(&p.fs.label.as_str())) {
                return Ok((*p).clone());
            }
            if let Some(p) = many.iter().find(|p| p.volume.as_ref().is_some_and(|v| ROOT_VOLUMES.contains(&v.lv.as_str()))) {
                return Ok((*p).clone());
            }
            let best = many.iter().max_by_key(|p| p.part.size).map(|p| (*p).clone()).context("no candidate")?;
            tracing::warn!("several Linux filesystems; using the largest, {} (set [disk] root to choose)", describe(&best));
            Ok(best)
        }
    }
}

/// "partition 2" or "logical volume rhel/root".
pub fn describe(p: &Probed) -> String {
    match &p.volume {
        Some(v) => format!("logical volume {}", v.name()),
        None => format!("partition {}", p.part.index),
    }
}

fn summary(parts: &[Probed]) -> String {
    parts
        .iter()
        .map(|p| {
            let fs = if p.fs.fstype.is_empty() { "?" } else { &p.fs.fstype };
            match &p.volume {
                Some(v) => match &v.unusable {
                    Some(why) => format!("lvm {}: unusable ({why})", v.name()),
                    None => format!("lvm {}:{fs}", v.name()),
                },
                None if p.fs.label.is_empty() => format!("{}:{fs}", p.part.index),
                None => format!("{}:{fs} \"{}\"", p.part.index, p.fs.label),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn find_partition<'a>(parts: &'a [Probed], r: &DeviceRef) -> Option<&'a Probed> {
    parts.iter().find(|p| match r {
        DeviceRef::Label(l) => &p.fs.label == l,
        DeviceRef::Uuid(u) => p.fs.uuid.eq_ignore_ascii_case(u),
        DeviceRef::PartUuid(u) => p.part.part_guid.is_some_and(|g| g.to_string().eq_ignore_ascii_case(u)),
        DeviceRef::PartLabel(l) => p.volume.is_none() && &p.part.name == l,
        DeviceRef::Other(dev) => p.volume.as_ref().is_some_and(|v| v.unusable.is_none() && v.named_by(dev)),
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

/// Refuses a filesystem that says it is larger than its partition (or logical volume): the
/// kernel would refuse it with a bare EINVAL, and a hostile table could aim it at bytes beyond.
fn check_fits(disk: &File, p: &Probed) -> anyhow::Result<()> {
    let mut buf = vec![0u8; PROBE_LEN.min(usize::try_from(p.part.size).unwrap_or(PROBE_LEN))];
    disk.read_exact_at(&mut buf, p.part.start).with_context(|| format!("Failed to read {}", describe(p)))?;
    match crate::disk::fsprobe::fs_size(&buf) {
        Some(fs) if fs > p.part.size => bail!(
            "the {} filesystem on {} says it is {fs} bytes, larger than the {} bytes it has: the partition table and the filesystem disagree (a damaged or hostile image)",
            p.fs.fstype,
            describe(p),
            p.part.size
        ),
        _ => Ok(()),
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
        check_fits(disk, root_part)?;
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
            check_fits(disk, p)?;
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
            volume: None,
        }
    }

    fn lv(index: u32, size: u64, fstype: &str, vg: &str, name: &str, unusable: Option<&str>) -> Probed {
        let mut v = p(index, size, None, fstype, "");
        v.part.name = format!("{vg}/{name}");
        v.volume = Some(Volume { vg: vg.into(), lv: name.into(), unusable: unusable.map(str::to_string) });
        v
    }

    #[test]
    fn root_on_a_logical_volume() {
        // The RHEL layout: /boot on partition 1, a PV on partition 2 with root, home and swap.
        let parts = [
            p(1, 100, Some(types::LINUX_FS), "xfs", ""),
            p(2, 900, None, "LVM2_member", ""),
            lv(1001, 500, "xfs", "rhel", "root", None),
            lv(1002, 600, "xfs", "rhel", "home", None),
            lv(1003, 50, "swap", "rhel", "swap", None),
            lv(1004, 0, "", "rhel", "striped", Some("segment at extent 0 is striped over 2 stripes")),
        ];
        // Several XFS without labels: the root volume's name decides, not the size.
        assert_eq!(choose_root(&parts, None).unwrap().part.index, 1001);
        let home = RootChoice::Volume("rhel/home".into());
        assert_eq!(choose_root(&parts, Some(&home)).unwrap().part.index, 1002);
        let bad = choose_root(&parts, Some(&RootChoice::Volume("rhel/striped".into()))).unwrap_err().to_string();
        assert!(bad.contains("striped over 2 stripes"), "{bad}");
        let missing = choose_root(&parts, Some(&RootChoice::Volume("vg/nope".into()))).unwrap_err().to_string();
        assert!(missing.contains("lvm rhel/root:xfs") && missing.contains("lvm rhel/striped: unusable"), "{missing}");
        // fstab names volumes by their mapper and /dev/VG/LV paths.
        assert_eq!(find_partition(&parts, &DeviceRef::Other("/dev/mapper/rhel-home".into())).unwrap().part.index, 1002);
        assert_eq!(find_partition(&parts, &DeviceRef::Other("/dev/rhel/home".into())).unwrap().part.index, 1002);
        assert!(find_partition(&parts, &DeviceRef::Other("/dev/mapper/rhel-striped".into())).is_none());
    }

    #[test]
    fn root_by_label_or_uuid() {
        let mut a = p(1, 10, None, "ext4", "data");
        a.fs.uuid = "0a1b2c3d-0000-4000-8000-00000000abcd".into();
        let parts = [a, p(2, 10, None, "xfs", "sys")];
        assert_eq!(choose_root(&parts, Some(&RootChoice::Label("sys".into()))).unwrap().part.index, 2);
        let u = RootChoice::Uuid("0A1B2C3D-0000-4000-8000-00000000ABCD".into());
        assert_eq!(choose_root(&parts, Some(&u)).unwrap().part.index, 1);
        assert!(choose_root(&parts, Some(&RootChoice::Label("nope".into()))).is_err());
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
        assert_eq!(choose_root(&parts, Some(&RootChoice::Partition(2))).unwrap().part.index, 2);
        assert!(choose_root(&parts, Some(&RootChoice::Partition(9))).is_err());
        assert!(choose_root(&[p(1, 10, None, "vfat", "")], None).is_err());
    }
}
