//! `imgforge inspect IMAGE`

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use anyhow::Context;

use super::Global;
use crate::chroot::resolve::Root;
use crate::disk::detect::{ImageFormat, detect};
use crate::host::loopdev::LoopDevice;
use crate::host::mount::{MountSpec, MountTree};
use crate::image::mount::{Probed, choose_root, probe_all};

/// Arguments of `imgforge inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A raw, qcow2 or fixed VHD disk image.
    pub image: PathBuf,
}

/// Prints partitions, filesystems and the root's os-release.
pub fn run(g: &Global, a: &Args) -> anyhow::Result<()> {
    let f = std::fs::File::open(&a.image).with_context(|| format!("Failed to open {}", a.image.display()))?;
    // A fixed VHD is read in place (its data part is a raw disk); qcow2 is converted into an
    // unnamed temporary file first.
    let mut vhd_note = None;
    let (disk, size) = match detect(&f)? {
        ImageFormat::Raw => {
            let len = f.metadata()?.len();
            (f, len)
        }
        ImageFormat::Vhd => {
            use crate::export::vhd::{VhdKind, find_footer};
            let (at, footer) = find_footer(&f)?.context("VHD footer not found")?;
            let checksum = if footer.checksum_ok { "valid" } else { "BAD" };
            let note = format!(
                "{} VHD: footer at byte {at}, checksum {checksum}, current size {} bytes ({} a whole MiB), qemu sees {} bytes, creator {:?}",
                footer.kind().map_or("unknown".to_string(), |k| format!("{k:?}")),
                footer.current_size,
                if footer.current_size % (1 << 20) == 0 { "is" } else { "NOT" },
                footer.qemu_size(),
                String::from_utf8_lossy(&footer.creator_app)
            );
            if footer.kind() != Some(VhdKind::Fixed) {
                anyhow::bail!("{}: {note}; inspect reads raw, qcow2 and fixed VHD disks", a.image.display());
            }
            vhd_note = Some(note);
            (f, footer.current_size.min(at))
        }
        _ => {
            let tmp = tempfile::tempfile_in(std::env::temp_dir())?;
            crate::disk::convert::to_raw(&a.image, &tmp, &AtomicU64::new(0))?;
            let len = tmp.metadata()?.len();
            (tmp, len)
        }
    };
    let table = crate::disk::partition::read(&mut &disk, size)?;
    let parts = probe_all(&disk, &table)?;
    let os_release = match choose_root(&parts, None) {
        Ok(root) if nix::unistd::geteuid().is_root() => {
            read_os_release(&disk, &root).unwrap_or_else(|e| format!("(could not read: {e:#})"))
        }
        Ok(_) => "(run as root to read os-release)".to_string(),
        Err(e) => format!("({e:#})"),
    };
    if g.json {
        let list: Vec<_> = parts
            .iter()
            .map(|p| {
                serde_json::json!({
            "index": p.part.index, "start": p.part.start, "size": p.part.size,
            "type_guid": p.part.type_guid.map(|t| t.to_string()), "mbr_type": p.part.mbr_type, "name": p.part.name,
            "fstype": p.fs.fstype, "label": p.fs.label, "uuid": p.fs.uuid })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({ "schema": 1, "image": a.image, "size": size, "vhd": vhd_note, "table": format!("{:?}", table.kind), "partitions": list, "os_release": os_release })
        );
        return Ok(());
    }
    println!("{}: {} bytes, {:?} partition table", a.image.display(), size, table.kind);
    if let Some(note) = &vhd_note {
        println!("  {note}");
    }
    for p in &parts {
        println!(
            "  {:>3}  start {:>12}  size {:>12}  {:6} label={:<18} uuid={}  {}",
            p.part.index, p.part.start, p.part.size, p.fs.fstype, p.fs.label, p.fs.uuid, p.part.name
        );
    }
    println!("os-release:\n{}", os_release.trim_end().lines().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n"));
    Ok(())
}

fn read_os_release(disk: &std::fs::File, root: &Probed) -> anyhow::Result<String> {
    crate::host::namespace::enter_private_mount_namespace()?;
    let lo = LoopDevice::attach(disk, root.part.start, root.part.size, true)?;
    // Kept, not a TempDir: its drop is remove_dir_all, which would walk into the image if the
    // unmount failed. Removed with remove_dir (empty directories only) once unmounted.
    let dir = tempfile::Builder::new().prefix("imgforge-inspect-").tempdir()?.keep();
    let mut tree = MountTree::new(dir.clone());
    let data = (root.fs.fstype.starts_with("ext")).then_some("noload");
    let flags = sys_mount::MountFlags::RDONLY;
    let spec = MountSpec { source: lo.path(), fstype: Some(&root.fs.fstype), flags, data };
    let mounted = std::fs::File::open(&dir).map_err(anyhow::Error::from).and_then(|fd| Ok(tree.mount_at(&spec, fd, &dir)?));
    let text = mounted.and_then(|()| {
        let r = Root::open(&dir)?;
        Ok(r.read(Path::new("/etc/os-release"))?.unwrap_or_default())
    });
    tree.close()?;
    std::fs::remove_dir(&dir).with_context(|| format!("Failed to remove {}", dir.display()))?;
    lo.close()?;
    Ok(String::from_utf8_lossy(&text?).into_owned())
}
