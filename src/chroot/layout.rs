//! The image's /etc/fstab → which partitions to mount where. Pure.

/// One fstab line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FstabEntry {
    /// First field: LABEL=…, UUID=…, PARTUUID=…, PARTLABEL=…, /dev/…
    pub spec: String,
    /// Mount point.
    pub target: String,
    /// Filesystem type.
    pub fstype: String,
    /// Options.
    pub options: String,
}

/// Parses fstab text; comments, blank and short lines are skipped; `\040` is decoded. Pure.
pub fn parse_fstab(text: &str) -> Vec<FstabEntry> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or_default())
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dec = crate::host::mount::unescape_mountinfo;
            match f.as_slice() {
                [spec, target, fstype, rest @ ..] => Some(FstabEntry {
                    spec: dec(spec),
                    target: dec(target),
                    fstype: (*fstype).to_string(),
                    options: rest.first().map_or_else(|| "defaults".to_string(), |o| (*o).to_string()),
                }),
                _ => None,
            }
        })
        .collect()
}

/// How an fstab spec names a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceRef {
    /// LABEL=
    Label(String),
    /// UUID=
    Uuid(String),
    /// PARTUUID=
    PartUuid(String),
    /// PARTLABEL=
    PartLabel(String),
    /// A device path we cannot map to a partition of this disk.
    Other(String),
}

/// Classifies a spec. Pure.
pub fn device_ref(spec: &str) -> DeviceRef {
    let unq = |s: &str| s.trim_matches('"').to_string();
    if let Some(v) = spec.strip_prefix("LABEL=") {
        DeviceRef::Label(unq(v))
    } else if let Some(v) = spec.strip_prefix("UUID=") {
        DeviceRef::Uuid(unq(v).to_ascii_lowercase())
    } else if let Some(v) = spec.strip_prefix("PARTUUID=") {
        DeviceRef::PartUuid(unq(v).to_ascii_uppercase())
    } else if let Some(v) = spec.strip_prefix("PARTLABEL=") {
        DeviceRef::PartLabel(unq(v))
    } else if let Some(v) = spec.strip_prefix("/dev/disk/by-label/") {
        DeviceRef::Label(v.to_string())
    } else if let Some(v) = spec.strip_prefix("/dev/disk/by-uuid/") {
        DeviceRef::Uuid(v.to_ascii_lowercase())
    } else {
        DeviceRef::Other(spec.to_string())
    }
}

/// fstab entries the build mounts below the root: real block filesystems, not `/`, not swap,
/// not network or pseudo filesystems, sorted so parents come before children. Pure.
pub fn secondary_mounts(entries: &[FstabEntry]) -> Vec<FstabEntry> {
    const SKIP: &[&str] = &["swap", "none", "tmpfs", "proc", "sysfs", "devpts", "nfs", "nfs4", "cifs", "bind", "auto"];
    let mut out: Vec<FstabEntry> = entries
        .iter()
        .filter(|e| e.target.starts_with('/') && e.target != "/" && !SKIP.contains(&e.fstype.as_str()))
        .filter(|e| !e.options.split(',').any(|o| o == "bind"))
        .cloned()
        .collect();
    out.sort_by_key(|e| e.target.matches('/').count());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const UBUNTU: &str = "# comment\nLABEL=cloudimg-rootfs\t/\t ext4\tdiscard,errors=remount-ro\t0 1\nLABEL=UEFI\t/boot/efi\tvfat\tumask=0077\t0 1\nLABEL=BOOT /boot ext4 defaults 0 2\n/swap.img none swap sw 0 0\ntmpfs /tmp tmpfs defaults 0 0\n\nshort line\n";

    #[test]
    fn ubuntu_fstab_plans_boot_then_efi() {
        let entries = parse_fstab(UBUNTU);
        assert_eq!(entries.len(), 5);
        let plan = secondary_mounts(&entries);
        let targets: Vec<&str> = plan.iter().map(|e| e.target.as_str()).collect();
        assert_eq!(targets, ["/boot", "/boot/efi"]);
        assert_eq!(device_ref(&plan[0].spec), DeviceRef::Label("BOOT".into()));
    }

    #[test]
    fn device_refs() {
        assert_eq!(device_ref("UUID=ABCD-EF"), DeviceRef::Uuid("abcd-ef".into()));
        assert_eq!(device_ref("PARTUUID=\"a-b\""), DeviceRef::PartUuid("A-B".into()));
        assert_eq!(device_ref("/dev/vda1"), DeviceRef::Other("/dev/vda1".into()));
    }
}
