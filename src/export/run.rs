//! Runs one export: checks limits and destinations, derives IDs, writes every requested format
//! under an unnamed temporary file (gone if we die), then names them all.
//!
//! Raw and fixed VHD are kernel copies of the data extents; the other formats share one read of
//! the input (`feed`). IDs come from the manifest's SHA-256 or an XXH3 content digest, computed
//! first when a writer needs them up front, else while the copies run.

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use anyhow::{Context, bail};

use super::format::Format;
use super::input::Input;
use super::options::ExportOptions;
use super::spec::{DiskSpec, FormatWriter};
use crate::disk::workdisk::WorkDisk;
use crate::host::signals::stop_requested;
use crate::manifest::OutputFile;
use crate::progress::Events;

/// One output to write.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its format.
    pub format: Format,
    /// Its final path.
    pub dest: PathBuf,
}

/// How to finish outputs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Finish {
    /// Compute each output's SHA-256 (for a manifest).
    pub sha256: bool,
    /// fsync each output before naming it.
    pub sync: bool,
    /// Read each output back with our own readers before naming it (`--verify`).
    pub verify: bool,
}

/// The targets for `formats` in `dir`, named after the input.
pub fn targets_in(dir: &Path, name: &str, formats: &[Format]) -> Vec<Target> {
    let mut f = formats.to_vec();
    f.sort();
    f.dedup();
    f.into_iter().map(|format| Target { format, dest: dir.join(format.file_name(name)) }).collect()
}

/// Writes every target. Returns the outputs in target order.
pub fn export(input: &Input, targets: &[Target], opts: &ExportOptions, fin: Finish, events: &Events) -> anyhow::Result<Vec<OutputFile>> {
    preflight(input, targets)?;
    let epoch = epoch(input)?;
    let firmware = opts.firmware.unwrap_or_else(|| super::options::firmware_of(&input.file, input.size));
    let known = input.sha256;
    let mut spec = DiskSpec { size: input.size, epoch, digest: known.unwrap_or([0; 32]), name: input.name.clone() };
    let needs_ids = targets.iter().any(|t| t.format != Format::Raw && t.format != Format::Qcow2);
    let ids_first = targets.iter().any(|t| t.format.needs_ids_first());
    let stop = || stop_requested();
    if known.is_none() && ids_first {
        events.step("digest", &format!("digesting {} for stable output IDs", input.path.display()));
        spec.digest = super::digest::content_digest(&input.file, input.size, &stop).context("Failed to digest the input")?;
    }
    let mut works = Vec::new();
    for t in targets {
        let dir = t.dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        works.push(WorkDisk::create(dir)?);
    }
    let late_digest = known.is_none() && needs_ids && !ids_first;
    if let Some(d) = write_copies(input, targets, &works, &spec, late_digest, events)? {
        spec.digest = d;
    }
    write_streams(input, targets, &works, &spec, opts, firmware, events)?;
    if stop_requested() {
        bail!("export stopped by a signal; no output was written");
    }
    name_outputs(input, targets, works, fin, events)
}

/// Kernel copies (raw, fixed VHD), with the content digest computed alongside when only they
/// need it (returned then).
fn write_copies(
    input: &Input,
    targets: &[Target],
    works: &[WorkDisk],
    spec: &DiskSpec,
    late_digest: bool,
    events: &Events,
) -> anyhow::Result<Option<[u8; 32]>> {
    let copies: Vec<usize> = (0..targets.len()).filter(|&i| targets[i].format.is_copy()).collect();
    if copies.is_empty() {
        return Ok(None);
    }
    let stop = || stop_requested();
    let done = AtomicU64::new(0);
    {
        let total = input.size.saturating_mul(copies.len() as u64);
        let digest = events.with_bar("copying", total, &done, || {
            std::thread::scope(|s| -> anyhow::Result<Option<[u8; 32]>> {
                let dig = late_digest.then(|| s.spawn(|| super::digest::content_digest(&input.file, input.size, &stop)));
                for &i in &copies {
                    let t = &targets[i];
                    let len = if t.format == Format::Vhd { super::vhd::fixed_virtual_size(input.size) } else { input.size };
                    super::copy::sparse_copy(&input.file, works[i].file(), input.size, len, &stop, &done)
                        .map_err(|e| write_error(e, &t.dest))?;
                }
                match dig {
                    Some(h) => Ok(Some(
                        h.join()
                            .unwrap_or_else(|_| Err(std::io::Error::other("digest thread panicked")))
                            .context("Failed to digest the input")?,
                    )),
                    None => Ok(None),
                }
            })
        })?;
        let spec = DiskSpec { digest: digest.unwrap_or(spec.digest), ..spec.clone() };
        for &i in &copies {
            if targets[i].format == Format::Vhd {
                let vsize = super::vhd::fixed_virtual_size(input.size);
                let footer = super::vhd::fixed_footer(&spec, vsize);
                works[i].file().write_all_at(&footer, vsize).map_err(|e| write_error(e, &targets[i].dest))?;
            }
        }
        Ok(digest)
    }
}

/// Streaming formats (qcow2, VMDK, dynamic VHD, OVA): one read of the input feeds them all.
fn write_streams(
    input: &Input,
    targets: &[Target],
    works: &[WorkDisk],
    spec: &DiskSpec,
    opts: &ExportOptions,
    firmware: super::ovf::Firmware,
    events: &Events,
) -> anyhow::Result<()> {
    let streams: Vec<usize> = (0..targets.len()).filter(|&i| !targets[i].format.is_copy()).collect();
    if streams.is_empty() {
        return Ok(());
    }
    let stop = || stop_requested();
    {
        let mut writers: Vec<Box<dyn FormatWriter>> = Vec::new();
        for &i in &streams {
            let file = works[i].file().try_clone().context("Failed to duplicate an output descriptor")?;
            let inner =
                super::options::writer(targets[i].format, file, spec, opts, firmware).map_err(|e| write_error(e, &targets[i].dest))?;
            writers.push(Box::new(Named { inner, dest: targets[i].dest.clone() }));
        }
        let done = AtomicU64::new(0);
        let names: Vec<&str> = streams.iter().map(|&i| targets[i].format.name()).collect();
        events
            .with_bar(&format!("writing {}", names.join(", ")), input.size, &done, || {
                let mut refs: Vec<&mut dyn FormatWriter> = writers.iter_mut().map(|w| &mut **w as &mut dyn FormatWriter).collect();
                super::feed::feed_counted(&input.file, input.size, &mut refs, &stop, &done)
            })
            .map_err(|e| {
                let what = if e.kind() == std::io::ErrorKind::Interrupted { "Export stopped" } else { "Export failed" };
                anyhow::Error::new(e).context(what)
            })?;
        for w in writers {
            w.finish().map_err(|e| anyhow::Error::new(e).context("Export failed"))?;
        }
    }
    Ok(())
}

/// Verifies (when asked), hashes and names each output, in target order.
fn name_outputs(input: &Input, targets: &[Target], works: Vec<WorkDisk>, fin: Finish, events: &Events) -> anyhow::Result<Vec<OutputFile>> {
    let mut outputs = Vec::new();
    for (work, t) in works.into_iter().zip(targets) {
        let verify = |fd: &Path| -> anyhow::Result<()> {
            if fin.verify {
                match super::verify::verify(t.format, fd, input)? {
                    Some(summary) => events.step("verify", &summary.replace(&fd.display().to_string(), &t.dest.display().to_string())),
                    None => {
                        events.step("verify", &format!("{}: no independent reader for {}; not verified", t.dest.display(), t.format.name()))
                    }
                }
            }
            Ok(())
        };
        let (_, out) = super::output::finish_output(work, t, fin, verify)?;
        events.step("output", &format!("wrote {} ({} bytes)", t.dest.display(), out.size));
        outputs.push(out);
    }
    Ok(outputs)
}

/// Limits, destinations that would overwrite the input, missing directories.
fn preflight(input: &Input, targets: &[Target]) -> anyhow::Result<()> {
    if targets.is_empty() {
        bail!("no output format given: use --format {}", super::format::names());
    }
    let meta = input.file.metadata()?;
    for t in targets {
        let (max, why) = t.format.limit();
        if input.size > max {
            bail!("{} is {} bytes, over the {} limit of {max} bytes ({why})", input.path.display(), input.size, t.format.name());
        }
        let dir = t.dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !dir.is_dir() {
            bail!("output directory {} does not exist: create it (mkdir -p) or choose another with -o", dir.display());
        }
        if let Ok(m) = std::fs::metadata(&t.dest)
            && m.dev() == meta.dev()
            && m.ino() == meta.ino()
        {
            bail!("{} is the input itself: choose another output path with -o", t.dest.display());
        }
    }
    let mut dests: Vec<&PathBuf> = targets.iter().map(|t| &t.dest).collect();
    dests.sort();
    if dests.windows(2).any(|w| w[0] == w[1]) {
        bail!("two formats would write the same file: give -o a directory");
    }
    Ok(())
}

/// SOURCE_DATE_EPOCH, else the input's own date.
fn epoch(input: &Input) -> anyhow::Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v.trim().parse().with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")),
        Err(_) => Ok(input.epoch),
    }
}

/// A stream writer whose errors name its output.
struct Named {
    inner: Box<dyn FormatWriter>,
    dest: PathBuf,
}

impl FormatWriter for Named {
    fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.inner.write(offset, data).map_err(|e| std::io::Error::new(e.kind(), format!("{:#}", write_error(e, &self.dest))))
    }
    fn finish(self: Box<Self>) -> std::io::Result<()> {
        let dest = self.dest;
        self.inner.finish().map_err(|e| std::io::Error::new(e.kind(), format!("{:#}", write_error(e, &dest))))
    }
    fn compresses(&self) -> bool {
        self.inner.compresses()
    }
}

fn write_error(e: std::io::Error, dest: &Path) -> anyhow::Error {
    let hint = match e.kind() {
        std::io::ErrorKind::StorageFull => ": the output filesystem is full",
        std::io::ErrorKind::QuotaExceeded => ": disk quota exceeded",
        _ => "",
    };
    anyhow::Error::new(e).context(format!("Failed to write {}{hint}", dest.display()))
}
