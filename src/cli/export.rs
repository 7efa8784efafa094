//! `imgforge export IMAGE --format F [--format F …] [-o PATH]`

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::Global;
use crate::export::format::Format;
use crate::export::options::{ExportOptions, check_machine, parse_adapter, parse_digest, parse_firmware, parse_hw_version};
use crate::export::run::{Finish, Target, export, targets_in};
use crate::progress::Events;

/// Arguments of `imgforge export`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A raw disk, or a build manifest (`NAME.manifest.json`) naming one.
    pub image: PathBuf,
    /// Output formats (repeat or separate with commas); the input is read once for all.
    #[arg(long = "format", short = 'f', value_enum, value_delimiter = ',', required = true)]
    pub formats: Vec<Format>,
    /// Output file (one format) or directory (default: beside the input, named after it).
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// VMDK/OVA disk controller: lsilogic, pvscsi or ide.
    #[arg(long, default_value = "lsilogic")]
    pub vmdk_adapter: String,
    /// OVF hardware family (vmx-13 = ESXi 6.5+; see README).
    #[arg(long, default_value = crate::export::options::DEFAULT_HW_VERSION)]
    pub ova_hardware_version: String,
    /// OVA virtual CPUs.
    #[arg(long, default_value_t = 2)]
    pub ova_cpus: u32,
    /// OVA memory in MiB.
    #[arg(long, default_value_t = 2048)]
    pub ova_memory_mib: u64,
    /// OVA manifest digest: sha256 or sha1 (old vSphere clients).
    #[arg(long, default_value = "sha256")]
    pub ova_digest: String,
    /// OVA firmware: auto (from the partition table), bios or efi.
    #[arg(long, default_value = "auto")]
    pub ova_firmware: String,
    /// Compress qcow2 clusters (deflate, on every core).
    #[arg(long)]
    pub qcow2_compress: bool,
    /// Print each output's SHA-256 (always computed when the input is a manifest).
    #[arg(long)]
    pub sha256: bool,
    /// fsync each output before giving it its name.
    #[arg(long)]
    pub sync: bool,
    /// Read VMDK/OVA/VHD outputs back with imgforge's own readers (every grain inflated and
    /// compared with the raw; OVA members, manifest and OVF cross-checked) before naming them.
    #[arg(long)]
    pub verify: bool,
    /// Upload the outputs to s3://bucket/prefix (multipart, SHA-256 per part) once written.
    #[arg(long, value_name = "S3_URL")]
    pub upload: Option<String>,
    /// With --upload: another S3 endpoint (also AWS_ENDPOINT_URL).
    #[arg(long, requires = "upload")]
    pub endpoint_url: Option<String>,
}

/// Parses the option values given on the command line.
fn options(a: &Args) -> Result<ExportOptions, String> {
    check_machine(a.ova_cpus, a.ova_memory_mib)?;
    Ok(ExportOptions {
        adapter: parse_adapter(&a.vmdk_adapter)?,
        hardware_version: parse_hw_version(&a.ova_hardware_version)?,
        cpus: a.ova_cpus,
        memory_mib: a.ova_memory_mib,
        digest: parse_digest(&a.ova_digest)?,
        firmware: parse_firmware(&a.ova_firmware)?,
        qcow2_compress: a.qcow2_compress,
    })
}

/// Runs an export.
pub fn run(g: &Global, a: &Args) -> anyhow::Result<()> {
    let opts = options(a).map_err(|e| anyhow::Error::new(super::UsageError(e)))?;
    let upload = a.upload.as_deref().map(crate::s3::parse_url).transpose().map_err(|e| anyhow::Error::new(super::UsageError(e)))?;
    crate::host::signals::install().context("Failed to install signal handlers")?;
    let input = crate::export::input::open(&a.image)?;
    let targets = resolve_targets(&input.path, &input.name, &a.formats, a.output.as_deref());
    let events = Events::new(g.json);
    let from_manifest = input.manifest.clone();
    let outputs =
        export(&input, &targets, &opts, Finish { sha256: a.sha256 || from_manifest.is_some(), sync: a.sync, verify: a.verify }, &events)?;
    if let Some(m) = &from_manifest {
        record_in_manifest(m, &outputs)?;
    }
    // Under --json stdout is JSON Lines only: the result event lists the outputs.
    for o in outputs.iter().filter(|_| !g.json) {
        if o.sha256.is_empty() {
            println!("{} {} {}", o.format, o.size, o.path);
        } else {
            println!("{} {} {} sha256:{}", o.format, o.size, o.path, o.sha256);
        }
    }
    let uploaded = match &upload {
        Some(dest) => {
            let files: Vec<PathBuf> = outputs.iter().map(|o| PathBuf::from(&o.path)).collect();
            crate::s3::upload(dest, &files, a.endpoint_url.as_deref())?
        }
        None => Vec::new(),
    };
    for u in &uploaded {
        if !g.json {
            println!("uploaded {} {}", u.path, u.url);
        }
    }
    events.result(super::events::Outcome::Export(&super::events::Exported { outputs, uploaded }))?;
    Ok(())
}

fn resolve_targets(input: &Path, name: &str, formats: &[Format], output: Option<&Path>) -> Vec<Target> {
    let beside = input.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut uniq = formats.to_vec();
    uniq.sort();
    uniq.dedup();
    match output {
        Some(o) if uniq.len() == 1 && !o.is_dir() => vec![Target { format: uniq[0], dest: o.to_path_buf() }],
        Some(dir) => targets_in(dir, name, &uniq),
        None => targets_in(beside, name, &uniq),
    }
}

/// Adds (or replaces, by path) the outputs in the build manifest.
fn record_in_manifest(path: &Path, outputs: &[crate::manifest::OutputFile]) -> anyhow::Result<()> {
    crate::manifest::update(path, |m| {
        for o in outputs {
            m.outputs.retain(|e| e.path != o.path);
            m.outputs.push(o.clone());
        }
    })
}
