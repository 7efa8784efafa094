//! Fixture builders and tool-output parsers shared by the disk module's tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::fs::File;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{PartitionError, PartitionTable, read};

/// Finds a tool on PATH or in the sbin directories.
fn tool_path(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("{name} is not installed; the disk tests need gdisk (sgdisk), fdisk (sfdisk) and qemu-utils (qemu-img)");
}

/// Runs `tool args` with optional stdin; panics with its output unless it succeeds.
pub fn run(tool: &str, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(tool_path(tool))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("failed to run {tool}: {e}"));
    let mut pipe = child.stdin.take().unwrap();
    if let Some(input) = stdin {
        pipe.write_all(input.as_bytes()).unwrap();
    }
    drop(pipe);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{tool} {args:?} failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A sparse file of `size` (truncate syntax, e.g. "64M").
pub fn blank(dir: &Path, name: &str, size: &str) -> PathBuf {
    let path = dir.join(name);
    run("truncate", &["-s", size, s(&path)], None);
    path
}

/// (a) Ubuntu cloud layout: 14 BIOS boot 4 MiB at 1 MiB, 15 ESP, 16 /boot
/// (XBOOTLDR), 1 x86-64 root physically last filling the disk.
pub fn ubuntu_gpt(dir: &Path, size: &str) -> PathBuf {
    let path = blank(dir, "ubuntu.raw", size);
    let args = [
        "-n",
        "14:2048:+4M",
        "-t",
        "14:EF02",
        "-c",
        "14:bios",
        "-n",
        "15:0:+16M",
        "-t",
        "15:EF00",
        "-c",
        "15:UEFI",
        "-A",
        "15:set:2",
        "-n",
        "16:0:+16M",
        "-t",
        "16:EA00",
        "-c",
        "16:BOOT",
        "-n",
        "1:0:0",
        "-t",
        "1:8304",
        "-c",
        "1:cloudimg-rootfs",
    ];
    run("sgdisk", &[&args[..], &[s(&path)]].concat(), None);
    path
}

/// (b) ESP = 1, root = 2 filling the disk.
pub fn esp_root_gpt(dir: &Path, size: &str) -> PathBuf {
    let path = blank(dir, "esp-root.raw", size);
    let args = ["-n", "1:2048:+8M", "-t", "1:EF00", "-c", "1:bööt ✓", "-n", "2:0:0", "-t", "2:8304"];
    run("sgdisk", &[&args[..], &[s(&path)]].concat(), None);
    path
}

/// (c) MBR with one bootable Linux partition filling the disk.
pub fn mbr_single(dir: &Path, size: &str) -> PathBuf {
    let path = blank(dir, "mbr.raw", size);
    run("sfdisk", &["-q", s(&path)], Some("label: dos\n,,83,*\n"));
    path
}

/// (d) MBR with a 16 MiB primary, an extended partition and two logicals.
pub fn mbr_logical(dir: &Path, size: &str) -> PathBuf {
    let path = blank(dir, "mbr-ext.raw", size);
    run("sfdisk", &["-q", s(&path)], Some("label: dos\n,16M,83\n,,5\n,8M,83\n,,83\n"));
    path
}

/// One partition as `sgdisk -i N` shows it.
#[derive(Debug, PartialEq, Eq)]
pub struct SgdiskPart {
    pub type_guid: String,
    pub part_guid: String,
    pub first: u64,
    pub last: u64,
    pub attrs: u64,
    pub name: String,
}

fn after<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines().find_map(|l| l.strip_prefix(prefix)).unwrap_or_else(|| panic!("no {prefix:?} in {text}")).trim()
}

fn first_word(text: &str) -> &str {
    text.split_whitespace().next().unwrap()
}

/// Parses `sgdisk -i index path`.
pub fn sgdisk_info(path: &Path, index: u32) -> SgdiskPart {
    let out = run("sgdisk", &["-i", &index.to_string(), s(path)], None);
    let name = after(&out, "Partition name:");
    SgdiskPart {
        type_guid: first_word(after(&out, "Partition GUID code:")).to_owned(),
        part_guid: after(&out, "Partition unique GUID:").to_owned(),
        first: first_word(after(&out, "First sector:")).parse().unwrap(),
        last: first_word(after(&out, "Last sector:")).parse().unwrap(),
        attrs: u64::from_str_radix(after(&out, "Attribute flags:"), 16).unwrap(),
        name: name.trim_matches('\'').to_owned(),
    }
}

/// (disk GUID, first usable LBA, last usable LBA) from `sgdisk -p`.
pub fn sgdisk_disk(path: &Path) -> (String, u64, u64) {
    let out = run("sgdisk", &["-p", s(path)], None);
    let guid = after(&out, "Disk identifier (GUID):").to_owned();
    let usable = after(&out, "First usable sector is ");
    let (first, last) = usable.split_once(", last usable sector is ").unwrap();
    (guid, first.parse().unwrap(), last.parse().unwrap())
}

/// One partition as `sfdisk --json` shows it.
#[derive(Debug, PartialEq, Eq)]
pub struct SfdiskPart {
    pub index: u32,
    pub start: u64,
    pub size: u64,
    pub kind: u8,
    pub bootable: bool,
}

#[derive(serde::Deserialize)]
struct SfdiskJson {
    partitiontable: SfdiskTable,
}

#[derive(serde::Deserialize)]
struct SfdiskTable {
    id: String,
    device: String,
    partitions: Vec<SfdiskEntry>,
}

#[derive(serde::Deserialize)]
struct SfdiskEntry {
    node: String,
    start: u64,
    size: u64,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    bootable: bool,
}

/// Parses `sfdisk --json path`: (disk id, partitions).
pub fn sfdisk_json(path: &Path) -> (u32, Vec<SfdiskPart>) {
    let out = run("sfdisk", &["--json", s(path)], None);
    let table = serde_json::from_str::<SfdiskJson>(&out).unwrap_or_else(|e| panic!("sfdisk --json output {out}: {e}")).partitiontable;
    let parts = table
        .partitions
        .iter()
        .map(|p| {
            // The node is the device name plus the index ("disk.raw5"; "p5" after a trailing digit).
            let index = p.node.strip_prefix(&table.device).unwrap().trim_start_matches('p');
            SfdiskPart {
                index: index.parse().unwrap(),
                start: p.start,
                size: p.size,
                kind: u8::from_str_radix(&p.kind, 16).unwrap(),
                bootable: p.bootable,
            }
        })
        .collect();
    (u32::from_str_radix(table.id.trim_start_matches("0x"), 16).unwrap(), parts)
}

fn le32(buf: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(buf[off..off + 4].try_into().unwrap())
}

fn le64(buf: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(buf[off..off + 8].try_into().unwrap())
}

/// Recomputes the entry-array and header CRC32s of the GPT header at `lba`
/// of an in-memory disk, when its fields are sane enough to locate them.
pub fn fix_gpt_crcs(disk: &mut [u8], lba: u64) {
    let h = lba as usize * 512;
    if disk.len() < h + 512 {
        return;
    }
    let entries_at = le64(disk, h + 72).saturating_mul(512);
    let len = u64::from(le32(disk, h + 80)) * u64::from(le32(disk, h + 84));
    if len <= 4 << 20 && entries_at.saturating_add(len) <= disk.len() as u64 {
        let crc = crc32fast::hash(&disk[entries_at as usize..(entries_at + len) as usize]);
        disk[h + 88..h + 92].copy_from_slice(&crc.to_le_bytes());
    }
    let size = le32(disk, h + 12) as usize;
    if (92..=512).contains(&size) {
        disk[h + 16..h + 20].fill(0);
        let crc = crc32fast::hash(&disk[h..h + size]);
        disk[h + 16..h + 20].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Tiny xorshift64 generator for the no-panic fuzz loops.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Reads the partition table of the disk image at `path`.
pub fn read_path(path: &Path) -> Result<PartitionTable, PartitionError> {
    let mut f = File::open(path).unwrap();
    let size = f.metadata().unwrap().len();
    read(&mut f, size)
}

/// Reads the partition table of an in-memory disk.
pub fn read_bytes(disk: &[u8]) -> Result<PartitionTable, PartitionError> {
    read(&mut Cursor::new(disk), disk.len() as u64)
}
