//! Identifies the filesystem at the start of a partition (type, label, UUID) by reading its
//! superblock. Pure over bytes; no mounting.

/// What a partition holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FsInfo {
    /// "ext4", "xfs", "vfat", "btrfs", "swap", "LVM2_member" (a physical volume) or "" when
    /// unknown.
    pub fstype: String,
    /// Filesystem label ("" if none).
    pub label: String,
    /// UUID as fstab writes it ("" if none): lowercase 8-4-4-4-12, or "ABCD-1234" for vfat.
    pub uuid: String,
}

/// How many bytes from the partition start `probe` needs.
pub const PROBE_LEN: usize = 128 * 1024;

fn cut(b: &[u8], at: usize, len: usize) -> &[u8] {
    b.get(at..at.saturating_add(len)).unwrap_or_default()
}

fn text(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(b.get(..end).unwrap_or_default()).trim_end().to_string()
}

fn uuid(b: &[u8]) -> String {
    if b.len() != 16 || b.iter().all(|c| *c == 0) {
        return String::new();
    }
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// Probes the first bytes of a partition. Pure.
pub fn probe(b: &[u8]) -> FsInfo {
    if cut(b, 1024 + 0x38, 2) == [0x53, 0xEF] {
        let compat_journal = cut(b, 1024 + 0x5C, 4).first().is_some_and(|f| f & 0x4 != 0);
        let incompat = cut(b, 1024 + 0x60, 4).first().copied().unwrap_or(0);
        let fstype = if incompat & 0x40 != 0 || incompat & 0x80 != 0 {
            "ext4"
        } else if compat_journal {
            "ext3"
        } else {
            "ext2"
        };
        return FsInfo { fstype: fstype.into(), label: text(cut(b, 1024 + 0x78, 16)), uuid: uuid(cut(b, 1024 + 0x68, 16)) };
    }
    if cut(b, 0, 4) == b"XFSB" {
        return FsInfo { fstype: "xfs".into(), label: text(cut(b, 108, 12)), uuid: uuid(cut(b, 32, 16)) };
    }
    if cut(b, 65536 + 64, 8) == b"_BHRfS_M" {
        return FsInfo { fstype: "btrfs".into(), label: text(cut(b, 65536 + 0x12B, 256)), uuid: uuid(cut(b, 65536 + 0x20, 16)) };
    }
    if cut(b, 4086, 10) == b"SWAPSPACE2" {
        return FsInfo { fstype: "swap".into(), label: text(cut(b, 1024 + 28, 16)), uuid: uuid(cut(b, 1024 + 12, 16)) };
    }
    if let Some(info) = probe_lvm(b) {
        return info;
    }
    probe_fat(b).unwrap_or_default()
}

/// An LVM2 physical volume: the `LABELONE` sector in one of the first four, its UUID.
fn probe_lvm(b: &[u8]) -> Option<FsInfo> {
    (0..4usize).find_map(|sector| {
        let s = cut(b, sector * 512, 512);
        if cut(s, 0, 8) != b"LABELONE" || cut(s, 24, 8) != b"LVM2 001" {
            return None;
        }
        let at = usize::try_from(u32::from_le_bytes(cut(s, 20, 4).try_into().ok()?)).ok()?;
        let raw = std::str::from_utf8(cut(s, at, 32)).ok().filter(|u| u.len() == 32)?;
        Some(FsInfo { fstype: "LVM2_member".into(), label: String::new(), uuid: crate::disk::lvm::dashed(raw) })
    })
}

/// The filesystem's block size (ext2/3/4, XFS, btrfs), cluster size (vfat) or page size
/// (swap), from the first bytes of a partition (as [`probe`] reads them); `None` if unknown.
pub fn block_size(b: &[u8]) -> Option<u32> {
    let le32 = |at: usize| cut(b, at, 4).try_into().ok().map(u32::from_le_bytes);
    let size = match probe(b).fstype.as_str() {
        "ext2" | "ext3" | "ext4" => 1024u32.checked_shl(le32(1024 + 24)?)?,
        "xfs" => u32::from_be_bytes(cut(b, 4, 4).try_into().ok()?),
        "btrfs" => le32(65536 + 0x90)?,
        "vfat" => u32::from(u16::from_le_bytes(cut(b, 11, 2).try_into().ok()?)) * u32::from(*cut(b, 13, 1).first()?),
        "swap" => 4096,
        _ => return None,
    };
    (size.is_power_of_two() && (512..=1 << 20).contains(&size)).then_some(size)
}

/// The size an ext2/3/4 or XFS filesystem says it has (from the first bytes of its partition);
/// `None` for other types or a nonsense value. Pure.
pub fn fs_size(b: &[u8]) -> Option<u64> {
    let le32 = |at: usize| cut(b, at, 4).try_into().ok().map(u32::from_le_bytes);
    match probe(b).fstype.as_str() {
        "ext2" | "ext3" | "ext4" => {
            let incompat = le32(1024 + 0x60)?;
            let hi = if incompat & 0x80 != 0 { u64::from(le32(1024 + 0x150)?) } else { 0 };
            let blocks = (hi << 32) | u64::from(le32(1024 + 0x04)?);
            blocks.checked_mul(u64::from(block_size(b)?))
        }
        "xfs" => {
            let dblocks = u64::from_be_bytes(cut(b, 8, 8).try_into().ok()?);
            dblocks.checked_mul(u64::from(block_size(b)?))
        }
        _ => None,
    }
}

fn probe_fat(b: &[u8]) -> Option<FsInfo> {
    if cut(b, 510, 2) != [0x55, 0xAA] {
        return None;
    }
    // FAT32 keeps its extended boot record at 64, FAT12/16 at 36.
    let base = if cut(b, 82, 5) == b"FAT32" {
        64
    } else if cut(b, 54, 3) == b"FAT" {
        36
    } else {
        return None;
    };
    let id = cut(b, base + 3, 4);
    let id = u32::from_le_bytes(id.try_into().ok()?);
    let label = text(cut(b, base + 7, 11));
    let label = if label == "NO NAME" { String::new() } else { label };
    Some(FsInfo { fstype: "vfat".into(), label, uuid: format!("{:04X}-{:04X}", id >> 16, id & 0xFFFF) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext4_made_by_mkfs() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("fs");
        std::fs::File::create(&img).unwrap().set_len(8 << 20).unwrap();
        let ok = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "cloudimg-rootfs", "-U", "0a1b2c3d-0000-4000-8000-00000000abcd"])
            .arg(&img)
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let bytes = std::fs::read(&img).unwrap();
        let info = probe(&bytes[..PROBE_LEN]);
        assert_eq!(info.fstype, "ext4");
        assert_eq!(info.label, "cloudimg-rootfs");
        assert_eq!(info.uuid, "0a1b2c3d-0000-4000-8000-00000000abcd");
        // 8 MiB is mke2fs's "small" type: 1 KiB blocks.
        assert_eq!(block_size(&bytes[..PROBE_LEN]), Some(1024));
        assert_eq!(fs_size(&bytes[..PROBE_LEN]), Some(8 << 20));
    }

    #[test]
    fn vfat_made_by_mkfs() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("fs");
        std::fs::File::create(&img).unwrap().set_len(64 << 20).unwrap();
        let st = std::process::Command::new("mkfs.vfat").args(["-F", "32", "-n", "UEFI", "-i", "12345678"]).arg(&img).output();
        let out = st.expect("mkfs.vfat is not installed: run scripts/setup (dosfstools)");
        assert!(out.status.success());
        let bytes = std::fs::read(&img).unwrap();
        let info = probe(&bytes[..PROBE_LEN]);
        assert_eq!(info, FsInfo { fstype: "vfat".into(), label: "UEFI".into(), uuid: "1234-5678".into() });
        // 64 MiB FAT32: 512-byte sectors, one per cluster.
        assert_eq!(block_size(&bytes[..PROBE_LEN]), Some(512));
    }

    #[test]
    fn lvm_physical_volume() {
        let head = include_bytes!("testdata/lvm-pv-head.bin");
        let info = probe(head);
        assert_eq!(info.fstype, "LVM2_member");
        assert_eq!(info.uuid, "w9grNa-ySxV-iWSC-SSNI-XOnz-pZ0Y-tSckUu");
    }

    #[test]
    fn garbage_is_unknown() {
        assert_eq!(probe(&[0u8; 10]), FsInfo::default());
        assert_eq!(probe(&[0xFFu8; PROBE_LEN]).fstype, "");
        assert_eq!(block_size(&[0u8; PROBE_LEN]), None);
    }
}
