//! `--verify`: read an output back with our own structural readers and compare its content with
//! the raw. VMDK and OVA: every marker in canonical order, every grain inflated and compared,
//! every cluster that has no grain checked to be zeros in the raw; the OVA's members, manifest
//! digests and OVF cross-references. VHD: footer, checksum, kind and size.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, bail};

use super::check::{Section, VmdkReport};
use super::format::Format;
use super::input::Input;
use super::spec::{CLUSTER, is_zero};

/// Verifies one output; returns a one-line summary, or `None` when we have no reader for it.
pub fn verify(format: Format, path: &Path, input: &Input) -> anyhow::Result<Option<String>> {
    let fail = |e: String| anyhow::anyhow!("{} failed verification: {e}", path.display());
    match format {
        Format::Vmdk => {
            let mut f = File::open(path)?;
            let len = f.metadata()?.len();
            let (grains, bytes) = compare_vmdk(input, |on_grain| {
                super::check::check_stream_vmdk_with(Section::new(&mut f, 0, len), on_grain).map_err(|e| e.to_string())
            })
            .map_err(fail)?;
            Ok(Some(format!("{}: {grains} grains ({bytes} compressed bytes) equal to the raw", path.display())))
        }
        Format::Ova => {
            let (grains, _) =
                compare_vmdk(input, |on_grain| super::check::check_ova_with(path, on_grain).map(|r| r.vmdk).map_err(|e| e.to_string()))
                    .map_err(fail)?;
            Ok(Some(format!("{}: members, manifest and OVF consistent; {grains} grains equal to the raw", path.display())))
        }
        Format::Vhd | Format::VhdDynamic => {
            let f = File::open(path)?;
            let kind = super::vhd::detect(&f).map_err(|e| fail(e.to_string()))?;
            let want = if format == Format::Vhd { super::vhd::VhdKind::Fixed } else { super::vhd::VhdKind::Dynamic };
            if kind != Some(want) {
                bail!("{}: expected a {want:?} VHD footer, found {kind:?}", path.display());
            }
            let (_, footer) = super::vhd::find_footer(&f)?.context("VHD footer vanished")?;
            let vsize = if format == Format::Vhd { super::vhd::fixed_virtual_size(input.size) } else { input.size };
            if footer.current_size != vsize || footer.original_size != vsize || footer.qemu_size() != vsize {
                bail!(
                    "{}: the footer says {} bytes (qemu would see {}), expected {vsize}",
                    path.display(),
                    footer.current_size,
                    footer.qemu_size()
                );
            }
            if format == Format::Vhd {
                let len = f.metadata()?.len();
                if len != vsize + 512 || (len - 512) % (1 << 20) != 0 {
                    bail!("{}: {len} bytes is not {vsize} + 512 (Azure: whole MiB + footer)", path.display());
                }
            }
            Ok(Some(format!("{}: {want:?} VHD footer valid, {vsize} bytes for every reader", path.display())))
        }
        Format::Raw | Format::Qcow2 => Ok(None),
    }
}

/// Runs `check` (a stream-VMDK reader that reports each grain) and compares the grains with the
/// raw. Returns (grains, compressed bytes).
fn compare_vmdk(input: &Input, check: impl FnOnce(&mut dyn FnMut(u64, &[u8])) -> Result<VmdkReport, String>) -> Result<(u64, u64), String> {
    let mut covered: Vec<(u64, u64)> = Vec::new();
    let mut mismatch: Option<String> = None;
    let mut buf = Vec::new();
    let mut on_grain = |offset: u64, data: &[u8]| {
        if mismatch.is_some() {
            return;
        }
        buf.resize(data.len(), 0);
        match input.file.read_exact_at(&mut buf, offset) {
            Ok(()) if buf == data => covered.push((offset, offset + data.len() as u64)),
            Ok(()) => mismatch = Some(format!("the grain at byte {offset} differs from the raw")),
            Err(e) => mismatch = Some(format!("reading the raw at {offset}: {e}")),
        }
    };
    let report = check(&mut on_grain)?;
    if let Some(m) = mismatch {
        return Err(m);
    }
    if report.capacity * 512 != input.size {
        return Err(format!("capacity {} sectors, but the raw is {} bytes", report.capacity, input.size));
    }
    // Everything without a grain must read as zeros in the raw.
    let mut next = covered.iter().peekable();
    let mut chunk = vec![0u8; CLUSTER as usize];
    for (start, end) in super::feed::cluster_extents(&input.file, input.size).map_err(|e| e.to_string())? {
        let mut p = start;
        while p < end {
            while next.peek().is_some_and(|c| c.1 <= p) {
                next.next();
            }
            let n = CLUSTER.min(end - p);
            if next.peek().is_none_or(|c| c.0 > p) {
                let b = &mut chunk[..n as usize];
                input.file.read_exact_at(b, p).map_err(|e| e.to_string())?;
                if !is_zero(b) {
                    return Err(format!("the raw has data at byte {p} that the VMDK lacks"));
                }
            }
            p += n;
        }
    }
    Ok((report.grains, report.compressed_bytes))
}
