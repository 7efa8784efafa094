//! `imgforge seal IMAGE`: sealing an existing image file. A raw disk is sealed in place; a
//! qcow2 is turned into a raw working copy beside it, sealed, and written back as qcow2 under
//! the same name (a temporary file renamed over it only when complete). A dry run mounts the
//! disk read-only and writes nothing.

use std::path::Path;

use anyhow::{Context as _, bail};

use super::seal_filesystems;
use crate::disk::detect::{ImageFormat, detect};
use crate::disk::workdisk::WorkDisk;
use crate::host::fd::shared_path;
use crate::image::mount::{Mounted, choose_root, probe_all};
use crate::progress::Events;
use crate::seal::{Context, SealPlan, SealReport};

/// Seals the image at `path`.
pub fn seal_image(path: &Path, plan: &SealPlan, cx: &Context, events: &Events) -> anyhow::Result<SealReport> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(!cx.dry_run)
        .open(path)
        .with_context(|| format!("Failed to open {}", path.display()))?;
    let format = detect(&file).with_context(|| format!("Failed to read {}", path.display()))?;
    match format {
        ImageFormat::Raw => seal_raw(&file, plan, cx, events),
        ImageFormat::Qcow2 => {
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            let work = WorkDisk::create(dir)?;
            let progress = std::sync::atomic::AtomicU64::new(0);
            crate::disk::convert::to_raw(path, work.file(), &progress)
                .with_context(|| format!("Failed to read the qcow2 image {}", path.display()))?;
            let report = seal_raw(work.file(), plan, cx, events)?;
            if !cx.dry_run {
                write_back_qcow2(path, &work, events)?;
            }
            Ok(report)
        }
        other => bail!("{}: a {} image; imgforge seal takes raw or qcow2 images", path.display(), other.name()),
    }
}

fn seal_raw(file: &std::fs::File, plan: &SealPlan, cx: &Context, events: &Events) -> anyhow::Result<SealReport> {
    let size = file.metadata().context("Failed to stat the image")?.len();
    let table = crate::disk::partition::read(&mut &*file, size).context("Failed to read the partition table")?;
    let parts = probe_all(file, &table)?;
    let root = choose_root(&parts, None)?;
    events.step(
        "mount",
        &format!(
            "mounting {} ({}) as /{}",
            crate::image::mount::describe(&root),
            root.fs.fstype,
            if cx.dry_run { " read-only" } else { "" }
        ),
    );
    let m = Mounted::mount(file, &parts, &root, false, cx.dry_run, events)?;
    let cx = Context { filesystems: seal_filesystems(&parts, &m), disk_path: Some(shared_path(file)), ..cx.clone() };
    // The image's own tools (cloud-init clean, update-ca-certificates) run in a sandbox.
    let sandbox = crate::chroot::sandbox::Sandbox::create(&m.root, false, events)?;
    let result = crate::seal::run(&m.root, plan, &cx, events).and_then(|mut r| {
        // Labels for what the seal created, when the image's SELinux is on.
        if !cx.dry_run {
            let fs: Vec<(String, String)> = cx.filesystems.iter().filter_map(|f| f.target.clone().map(|t| (t, f.fstype.clone()))).collect();
            if let Some(sel) = crate::image::selinux::relabel(&m.root, &fs, events)? {
                r.notes.push(format!("SELinux ({}, policy {}): labelled by {}: {}", sel.mode, sel.policy, sel.relabel, sel.detail));
            }
        }
        Ok(r)
    });
    drop(sandbox);
    let result = result.and_then(|mut r| {
        if !cx.dry_run {
            r.free_space = crate::image::mount::trim_all(&m)?;
            r.free_space.extend(super::free_space_gaps(&cx.filesystems));
        }
        Ok(r)
    });
    let closed = m.close();
    let mut report = result?;
    closed?;
    if !cx.dry_run {
        crate::seal::fsuuid::apply(file, &report.fs_uuids)?;
        crate::seal::lvmuuid::apply(file, &report.lvm_uuids)?;
        super::reset_last_mounted(file, &cx.filesystems)?;
        let punched = super::punch_free(file, &cx.filesystems)?;
        report.free_space.extend(punched);
        events.step("raw-scan", "searching the raw disk for what the seal removed");
        let raw = crate::seal::rawscan::scan(file, &super::raw_parts(&parts), &report.raw_needles)
            .context("Failed to search the unmounted disk for what the seal removed")?;
        events.step_done("raw-scan", raw.seconds);
        report.raw_scan = Some(raw);
    }
    Ok(report)
}

fn write_back_qcow2(path: &Path, work: &WorkDisk, events: &Events) -> anyhow::Result<()> {
    use crate::export::format::Format;
    let size = work.file().metadata()?.len();
    let name = path.file_stem().map_or_else(|| "image".into(), |s| s.to_string_lossy().into_owned());
    let input = crate::export::input::Input {
        path: shared_path(work.file()),
        file: work.file().try_clone().context("Failed to reopen the working disk")?,
        size,
        name,
        sha256: None,
        // export reads SOURCE_DATE_EPOCH itself; this is the fallback.
        epoch: crate::stamp::build_time(),
        manifest: None,
    };
    let targets = [crate::export::run::Target { format: Format::Qcow2, dest: path.to_path_buf() }];
    let fin = crate::export::run::Finish { sha256: false, sync: true, verify: false };
    crate::export::run::export(&input, &targets, &crate::export::options::ExportOptions::default(), fin, events)?;
    Ok(())
}
