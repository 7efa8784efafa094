//! Export options (command line and `[output.*]` recipe tables) and the writer factory.

use std::fs::File;
use std::io;

use super::format::Format;
use super::ova::{Digest, OvaOptions, OvaWriter};
use super::ovf::Firmware;
use super::qcow2::{Qcow2Options, Qcow2Writer};
use super::spec::{DiskSpec, FormatWriter};
use super::vhd::DynamicVhdWriter;
use super::vmdk::{Adapter, VmdkOptions, VmdkWriter};

/// Default OVF hardware family (vmx-13: ESXi 6.5 and later; the table is in `ovf`).
pub const DEFAULT_HW_VERSION: &str = super::ovf::DEFAULT_HARDWARE_VERSION;

/// Everything a format writer can be told.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// VMDK/OVA disk controller.
    pub adapter: Adapter,
    /// OVF hardware family `vmx-NN`.
    pub hardware_version: String,
    /// OVA virtual CPUs.
    pub cpus: u32,
    /// OVA memory in MiB.
    pub memory_mib: u64,
    /// OVA manifest digest.
    pub digest: Digest,
    /// OVA firmware; `None`: read from the disk (an ESP and no BIOS boot partition → EFI).
    pub firmware: Option<Firmware>,
    /// Compress qcow2 clusters.
    pub qcow2_compress: bool,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            adapter: Adapter::LsiLogic,
            hardware_version: DEFAULT_HW_VERSION.into(),
            cpus: 2,
            memory_mib: 2048,
            digest: Digest::Sha256,
            firmware: None,
            qcow2_compress: false,
        }
    }
}

/// Parses a disk controller name.
pub fn parse_adapter(s: &str) -> Result<Adapter, String> {
    match s {
        "lsilogic" => Ok(Adapter::LsiLogic),
        "pvscsi" => Ok(Adapter::PvScsi),
        "ide" => Ok(Adapter::Ide),
        other => Err(format!("unknown VMDK adapter {other:?}: use lsilogic, pvscsi or ide")),
    }
}

/// Checks a `vmx-NN` hardware family.
pub fn parse_hw_version(s: &str) -> Result<String, String> {
    super::ovf::check_hardware_version(s).map(|_| s.to_string()).map_err(|e| format!("{e} (e.g. vmx-13 for ESXi 6.5+)"))
}

/// Parses a manifest digest name.
pub fn parse_digest(s: &str) -> Result<Digest, String> {
    match s {
        "sha256" => Ok(Digest::Sha256),
        "sha1" => Ok(Digest::Sha1),
        other => Err(format!("unknown OVA digest {other:?}: use sha256 or sha1")),
    }
}

/// Parses a firmware choice; `auto` is `None`.
pub fn parse_firmware(s: &str) -> Result<Option<Firmware>, String> {
    match s {
        "auto" => Ok(None),
        "bios" => Ok(Some(Firmware::Bios)),
        "efi" => Ok(Some(Firmware::Efi)),
        other => Err(format!("unknown firmware {other:?}: use auto, bios or efi")),
    }
}

/// Checks the virtual machine's size.
pub fn check_machine(cpus: u32, memory_mib: u64) -> Result<(), String> {
    if cpus == 0 || cpus > 768 || memory_mib < 4 {
        return Err(format!("an OVA needs 1-768 CPUs and at least 4 MiB of memory (got {cpus} CPUs, {memory_mib} MiB)"));
    }
    Ok(())
}

/// EFI when the disk has an EFI system partition and no BIOS boot partition; else BIOS.
pub fn firmware_of(file: &File, size: u64) -> Firmware {
    use crate::disk::partition::read;
    const ESP: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
    const BIOS_BOOT: &str = "21686148-6449-6e6f-744e-656564454649";
    let Ok(table) = read(&mut &*file, size) else { return Firmware::Bios };
    let types: Vec<String> = table.partitions.iter().filter_map(|p| p.type_guid.map(|g| g.to_string().to_ascii_lowercase())).collect();
    let esp = types.iter().any(|t| t == ESP) || table.partitions.iter().any(|p| p.mbr_type == Some(0xef));
    let bios = types.iter().any(|t| t == BIOS_BOOT);
    if esp && !bios { Firmware::Efi } else { Firmware::Bios }
}

/// A writer for a streaming format into `file`.
pub fn writer(format: Format, file: File, spec: &DiskSpec, o: &ExportOptions, firmware: Firmware) -> io::Result<Box<dyn FormatWriter>> {
    Ok(match format {
        Format::Qcow2 => Box::new(Qcow2Writer::new(file, spec, &Qcow2Options { compress: o.qcow2_compress, ..Qcow2Options::default() })?),
        Format::VhdDynamic => Box::new(DynamicVhdWriter::new(file, spec)?),
        Format::Vmdk => {
            let name = format!("{}.vmdk", spec.name);
            let opts = VmdkOptions { adapter: o.adapter, ..VmdkOptions::default() };
            Box::new(VmdkWriter::new(std::io::BufWriter::with_capacity(1 << 20, file), spec, &opts, &name)?)
        }
        Format::Ova => Box::new(OvaWriter::new(
            file,
            spec,
            &OvaOptions {
                hardware_version: o.hardware_version.clone(),
                cpus: o.cpus,
                memory_mib: o.memory_mib,
                digest: o.digest,
                adapter: o.adapter,
                firmware,
                ..OvaOptions::default()
            },
        )?),
        Format::Raw | Format::Vhd => return Err(io::Error::other(format!("{} is written by copy, not by a stream writer", format.name()))),
    })
}
