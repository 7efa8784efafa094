//! `fs-uuids` (off by default): every ext2/3/4 and XFS filesystem of the disk gets a new UUID, and every
//! reference to the old one is updated in the same run — fstab, crypttab, GRUB's config and
//! environment, /etc/default/grub, kernel command lines, boot loader entries, initramfs resume
//! config, and text configs on an ESP that cannot be mounted here (through mtools). Before
//! anything is written, every file of the image (and of the ESP) that names an old UUID is
//! found; if one is a file imgforge does not know how to update (a binary, an unknown config),
//! it refuses and names it. The superblocks are changed after unmounting (`tune2fs -U` cannot
//! change a mounted ext4 with metadata_csum), by `apply`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, bail};

use super::Run;
use super::residue::{Needles, scan};
use super::scrub::ActionKind;
use crate::host::command::CommandRunExt;

/// One filesystem's UUID change.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UuidChange {
    /// Partition number.
    pub partition: u32,
    /// Byte offset of the partition.
    #[serde(skip)]
    pub start: u64,
    /// Its size.
    #[serde(skip)]
    pub size: u64,
    /// Filesystem type.
    pub fstype: String,
    /// UUID before.
    pub old: String,
    /// UUID after.
    pub new: String,
}

/// Image files that may name a filesystem UUID and are updated by replacing it.
fn rewritable(path: &str) -> bool {
    const FILES: &[&str] = &[
        "/etc/fstab",
        "/etc/crypttab",
        "/etc/default/grub",
        "/etc/kernel/cmdline",
        "/etc/initramfs-tools/conf.d/resume",
        "/boot/grub/grub.cfg",
        "/boot/grub/grubenv",
        "/boot/grub2/grub.cfg",
        "/boot/grub2/grubenv",
    ];
    FILES.contains(&path)
        || (path.starts_with("/boot/loader/entries/") && path.ends_with(".conf"))
        || (path.starts_with("/boot/efi/") && is_text_config(path))
        || (path.starts_with("/etc/default/grub.d/") && path.ends_with(".cfg"))
}

fn is_text_config(path: &str) -> bool {
    path.ends_with(".cfg") || path.ends_with(".conf")
}

fn is_ext(fstype: &str) -> bool {
    matches!(fstype, "ext2" | "ext3" | "ext4")
}

/// A random (version 4) UUID, lowercase.
fn random_uuid() -> anyhow::Result<String> {
    let mut b = [0u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut b).context("Failed to read /dev/urandom")?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]))
}

/// `text` with every old UUID replaced by its new one (any case in, lowercase out). Pure.
pub fn replace_uuids(text: &[u8], changes: &[UuidChange]) -> Vec<u8> {
    let mut out = text.to_vec();
    for c in changes {
        for old in [c.old.to_ascii_lowercase(), c.old.to_ascii_uppercase()] {
            let (o, n) = (old.as_bytes(), c.new.as_bytes());
            let mut i = 0;
            while i + o.len() <= out.len() {
                if &out[i..i + o.len()] == o {
                    out[i..i + o.len()].copy_from_slice(n);
                    i += o.len();
                } else {
                    i += 1;
                }
            }
        }
    }
    out
}

fn names_any(data: &[u8], changes: &[UuidChange]) -> bool {
    replace_uuids(data, changes) != data
}

/// Plans and makes the reference updates; the superblocks change in `apply`.
pub fn fs_uuids(r: &mut Run) -> anyhow::Result<()> {
    let mut changes = Vec::new();
    for fs in &r.cx.filesystems {
        if (is_ext(&fs.fstype) || fs.fstype == "xfs") && !fs.uuid.is_empty() {
            changes.push(UuidChange {
                partition: fs.partition,
                start: fs.start,
                size: fs.size,
                fstype: fs.fstype.clone(),
                old: fs.uuid.clone(),
                new: random_uuid()?,
            });
        } else if !matches!(fs.fstype.as_str(), "vfat" | "" | "LVM2_member") {
            r.notes.push(format!("fs-uuids: partition {} ({}) keeps its UUID: only ext2/3/4 and XFS are changed", fs.partition, fs.fstype));
        }
    }
    if changes.is_empty() {
        r.notes.push("fs-uuids: no ext2/3/4 or XFS filesystem with a UUID".into());
        return Ok(());
    }
    // Every file that names an old UUID, found before anything is written.
    let needles = Needles {
        paths: changes.iter().flat_map(|c| [c.old.to_ascii_lowercase(), c.old.to_ascii_uppercase()]).collect(),
        ..Needles::default()
    };
    let found = scan(r.s.root, &needles, super::SCAN_SKIP).context("Failed to look for references to the filesystem UUIDs")?;
    let mut files: Vec<String> = found.findings.into_iter().map(|f| f.path).collect();
    files.sort();
    files.dedup();
    let esp = esp_files(r, &changes)?;
    let unknown: Vec<String> = files
        .iter()
        .filter(|p| !rewritable(p))
        .cloned()
        .chain(esp.iter().filter(|e| !is_text_config(&e.path)).map(|e| format!("ESP {}", e.path)))
        .collect();
    if !unknown.is_empty() {
        bail!(
            "refusing to change filesystem UUIDs: {} name(s) them and imgforge does not know how to update {}: {}; disable fs-uuids or refer to filesystems by LABEL",
            unknown.len(),
            if unknown.len() == 1 { "it" } else { "them" },
            unknown.join(", ")
        );
    }
    for p in &files {
        let Some(data) = r.s.read(p)? else { continue };
        let mode = r.s.stat(p)?.map_or(0o644, |st| st.st_mode & 0o7777);
        r.s.rewrite(p, &replace_uuids(&data, &changes), mode, "filesystem UUIDs updated")?;
    }
    for e in esp {
        if !r.s.dry_run {
            e.write(&replace_uuids(&e.data, &changes))?;
        }
        r.s.record(&format!("ESP partition {}: {}", e.partition, e.path), ActionKind::Rewritten, "filesystem UUIDs updated (mtools)");
    }
    for c in &changes {
        r.s.record(
            &format!("partition {} ({})", c.partition, c.fstype),
            ActionKind::Rewritten,
            &format!("UUID {} → {} after unmount", c.old, c.new),
        );
    }
    r.uuid_changes = changes;
    Ok(())
}

/// A file on an unmounted ESP that names an old UUID.
struct EspFile {
    partition: u32,
    image: String,
    path: String,
    data: Vec<u8>,
}

impl EspFile {
    fn write(&self, data: &[u8]) -> anyhow::Result<()> {
        let mut tmp = tempfile::NamedTempFile::new().context("Failed to create a temporary file")?;
        tmp.write_all(data)?;
        Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-o", "-i", &self.image])
            .arg(tmp.path())
            .arg(format!("::{}", self.path))
            .run_checked(&format!("update {} on the ESP", self.path))?;
        Ok(())
    }
}

/// Files on vfat partitions that are not mounted (this kernel cannot mount vfat) naming an old
/// UUID, read with mtools. No mtools, and an ESP to check: refuse.
fn esp_files(r: &Run, changes: &[UuidChange]) -> anyhow::Result<Vec<EspFile>> {
    let mut out = Vec::new();
    for fs in r.cx.filesystems.iter().filter(|f| f.fstype == "vfat" && f.target.is_none()) {
        let Some(disk) = &r.cx.disk_path else {
            bail!("refusing to change filesystem UUIDs: the ESP (partition {}) cannot be checked", fs.partition)
        };
        let image = format!("{}@@{}", disk.display(), fs.start);
        let list = Command::new("mdir")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-/", "-b", "-i", &image, "::/"])
            .run_checked("list the ESP with mtools")
            .with_context(|| format!("refusing to change filesystem UUIDs: cannot read the ESP (partition {})", fs.partition))?;
        for line in String::from_utf8_lossy(&list.stdout).lines() {
            let Some(path) = line.trim().strip_prefix("::") else { continue };
            if path.ends_with('/') {
                continue;
            }
            let data = Command::new("mtype")
                .env("MTOOLS_SKIP_CHECK", "1")
                .args(["-i", &image])
                .arg(format!("::{path}"))
                .run_checked("read an ESP file")?
                .stdout;
            if names_any(&data, changes) {
                out.push(EspFile { partition: fs.partition, image: image.clone(), path: path.to_string(), data });
            }
        }
    }
    Ok(out)
}

/// Changes the superblocks, after the filesystems are unmounted, on a loop device of each
/// partition of `disk`: `e2fsck -fy` then `tune2fs -U` (ext2/3/4); `xfs_admin -U` (XFS).
pub fn apply(disk: &std::fs::File, changes: &[UuidChange]) -> anyhow::Result<()> {
    for c in changes {
        let lo = crate::host::loopdev::LoopDevice::attach(disk, c.start, c.size, false)?;
        let dev: PathBuf = lo.path().to_path_buf();
        if c.fstype == "xfs" {
            Command::new("xfs_admin").args(["-U", &c.new]).arg(&dev).run_checked(&format!("set the UUID of partition {}", c.partition))?;
            lo.close()?;
            continue;
        }
        let fsck = Command::new("e2fsck").arg("-fy").arg(&dev).run_any_status("check a filesystem before changing its UUID")?;
        // 0: clean, 1: errors corrected; anything else is a damaged filesystem.
        if !matches!(fsck.status.code(), Some(0 | 1)) {
            bail!("e2fsck of partition {} failed before changing its UUID{}", c.partition, crate::host::command::tail(&fsck.stderr));
        }
        Command::new("tune2fs").args(["-U", &c.new]).arg(&dev).run_checked(&format!("set the UUID of partition {}", c.partition))?;
        lo.close()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacement_keeps_everything_else() {
        let c = UuidChange {
            partition: 1,
            start: 0,
            size: 0,
            fstype: "ext4".into(),
            old: "0a1b2c3d-0000-4000-8000-000000000001".into(),
            new: "ffffffff-1111-4111-8111-111111111111".into(),
        };
        let t = b"UUID=0a1b2c3d-0000-4000-8000-000000000001 / ext4 0 1\nsearch --fs-uuid 0A1B2C3D-0000-4000-8000-000000000001\n";
        let out = replace_uuids(t, std::slice::from_ref(&c));
        assert_eq!(out, b"UUID=ffffffff-1111-4111-8111-111111111111 / ext4 0 1\nsearch --fs-uuid ffffffff-1111-4111-8111-111111111111\n");
        assert!(rewritable("/etc/fstab") && rewritable("/boot/loader/entries/x.conf") && !rewritable("/etc/app.conf"));
        let u = random_uuid().unwrap_or_default();
        assert_eq!((u.len(), &u[14..15]), (36, "4"));
    }
}
