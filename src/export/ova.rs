//! OVA writer: one pass, no temporary VMDK.
//!
//! The tar holds, in this order, `NAME.ovf`, `NAME.mf` and `NAME-disk1.vmdk` (NAME =
//! `DiskSpec::name`). The OVF and manifest regions are reserved at the front with lengths fixed
//! in advance: the manifest's length only depends on the names and the digest algorithm, and the
//! OVF is rendered at the end with the real VMDK size and padded with trailing newlines (after
//! `</Envelope>`) to the length of a worst-case render (20-digit size). The VMDK is streamed
//! right after its placeholder tar header through a writer that counts and hashes exactly the
//! bytes written; `finish` then writes the tar end, and goes back to write the VMDK header (real
//! size), the OVF and the manifest.
//!
//! Tar headers are ustar (`tar::Header::new_ustar`): mode 0644, uid/gid 0, user/group "root",
//! mtime = `DiskSpec::epoch`. A member of 8 GiB or more does not fit the ustar 11-digit octal
//! size field; the size is then written in GNU base-256 form (high bit of the first byte set,
//! big-endian binary), which GNU tar, bsdtar and the `tar` crate read. Whether every OVA importer
//! (ESXi, VirtualBox) accepts base-256 sizes is UNCONFIRMED; VMware's own ova-compose writes GNU
//! tar by default.

use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

use sha1::Sha1;
use sha2::{Digest as _, Sha256};

use super::ovf::{self, Firmware, Os, OvfParams};
use super::spec::{DiskSpec, FormatWriter};
use super::vmdk::{Adapter, VmdkOptions, VmdkWriter};

/// Manifest digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Digest {
    /// `SHA256(name)= hex` (ovftool ≥ 4.2 default; vSphere 8 requires it).
    #[default]
    Sha256,
    /// `SHA1(name)= hex` (old vSphere C# client / PowerCLI).
    Sha1,
}

impl Digest {
    /// Manifest algorithm name.
    pub fn name(self) -> &'static str {
        match self {
            Digest::Sha256 => "SHA256",
            Digest::Sha1 => "SHA1",
        }
    }

    /// Length of a digest in hex digits.
    pub fn hex_len(self) -> usize {
        match self {
            Digest::Sha256 => 64,
            Digest::Sha1 => 40,
        }
    }
}

impl std::str::FromStr for Digest {
    type Err = io::Error;
    fn from_str(s: &str) -> io::Result<Self> {
        match s {
            "sha256" => Ok(Digest::Sha256),
            "sha1" => Ok(Digest::Sha1),
            _ => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("unknown OVA digest {s:?} (expected sha256 or sha1)"))),
        }
    }
}

/// OVA options.
#[derive(Debug, Clone)]
pub struct OvaOptions {
    /// OVF `VirtualSystemType`, `vmx-NN` (default `vmx-13`, ESXi 6.5+).
    pub hardware_version: String,
    /// Virtual CPUs (default 2).
    pub cpus: u32,
    /// Memory in MiB (default 2048).
    pub memory_mib: u64,
    /// Manifest digest (default SHA256).
    pub digest: Digest,
    /// Disk controller (default lsilogic).
    pub adapter: Adapter,
    /// Boot firmware (default BIOS).
    pub firmware: Firmware,
    /// Guest OS (default other 64-bit Linux).
    pub os: Os,
}

impl Default for OvaOptions {
    fn default() -> Self {
        OvaOptions {
            hardware_version: ovf::DEFAULT_HARDWARE_VERSION.into(),
            cpus: 2,
            memory_mib: 2048,
            digest: Digest::Sha256,
            adapter: Adapter::LsiLogic,
            firmware: Firmware::Bios,
            os: Os::Other,
        }
    }
}

/// Incremental SHA1/SHA256.
enum Hasher {
    Sha256(Sha256),
    Sha1(Sha1),
}

impl Hasher {
    fn new(d: Digest) -> Self {
        match d {
            Digest::Sha256 => Hasher::Sha256(Sha256::new()),
            Digest::Sha1 => Hasher::Sha1(Sha1::new()),
        }
    }
    fn update(&mut self, b: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(b),
            Hasher::Sha1(h) => h.update(b),
        }
    }
    fn hex(self) -> String {
        let d: Vec<u8> = match self {
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha1(h) => h.finalize().to_vec(),
        };
        d.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Hex digest of `b`.
fn digest_hex(d: Digest, b: &[u8]) -> String {
    let mut h = Hasher::new(d);
    h.update(b);
    h.hex()
}

/// A writer that counts and hashes exactly the bytes its inner writer accepted.
struct HashCount<W: Write> {
    inner: W,
    count: u64,
    hasher: Hasher,
}

impl<W: Write> Write for HashCount<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A ustar header for a regular file.
pub fn tar_header(name: &str, size: u64, mtime: u64) -> io::Result<[u8; 512]> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name).map_err(|e| io::Error::new(e.kind(), format!("tar member name {name:?}: {e}")))?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_username("root").map_err(|e| io::Error::other(format!("tar uname: {e}")))?;
    h.set_groupname("root").map_err(|e| io::Error::other(format!("tar gname: {e}")))?;
    h.set_cksum();
    let mut out = [0u8; 512];
    out.copy_from_slice(h.as_bytes());
    Ok(out)
}

fn pad512(n: u64) -> u64 {
    n.next_multiple_of(512)
}

/// Everything about the OVA except the VMDK stream.
struct Meta {
    opts: OvaOptions,
    name: String,
    size: u64,
    epoch: u64,
    ovf_name: String,
    mf_name: String,
    vmdk_name: String,
    /// Reserved OVF length (bytes, before tar padding).
    ovf_len: u64,
    /// Exact manifest length.
    mf_len: u64,
    /// Offset of the VMDK member's tar header.
    vmdk_header_at: u64,
}

/// Streams an OVA (OVF + manifest + streamOptimized VMDK) into a file in one pass.
pub struct OvaWriter {
    vmdk: VmdkWriter<HashCount<BufWriter<File>>>,
    meta: Meta,
}

impl OvaWriter {
    /// Validates the options, reserves the OVF/manifest regions and starts the VMDK member.
    /// `file` is truncated and written from offset 0.
    pub fn new(mut file: File, spec: &DiskSpec, opts: &OvaOptions) -> io::Result<Self> {
        ovf::check_hardware_version(&opts.hardware_version)?;
        let name = spec.name.clone();
        if name.is_empty() || name.starts_with('.') || name.chars().any(|c| c.is_control() || matches!(c, '/' | '\\' | '(' | ')')) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("OVA name {name:?} is not a plain file name")));
        }
        let vmdk_name = format!("{name}-disk1.vmdk");
        if vmdk_name.len() > 100 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("OVA name {name:?} is too long for ustar member names")));
        }
        if opts.cpus == 0 || opts.memory_mib == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "OVA needs at least 1 CPU and 1 MiB of memory"));
        }
        let mut m = Meta {
            opts: opts.clone(),
            ovf_name: format!("{name}.ovf"),
            mf_name: format!("{name}.mf"),
            vmdk_name,
            name,
            size: spec.size,
            epoch: spec.epoch,
            ovf_len: 0,
            mf_len: 0,
            vmdk_header_at: 0,
        };
        m.ovf_len = ovf::render(&m.ovf_params(u64::MAX)).len() as u64;
        let hex = "0".repeat(opts.digest.hex_len());
        m.mf_len = m.manifest(&hex, &hex).len() as u64;
        m.vmdk_header_at = 512 + pad512(m.ovf_len) + 512 + pad512(m.mf_len);

        file.set_len(0).map_err(|e| io::Error::new(e.kind(), format!("truncating OVA: {e}")))?;
        file.seek(SeekFrom::Start(0))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&vec![0u8; (m.vmdk_header_at + 512) as usize]).map_err(|e| io::Error::new(e.kind(), format!("writing OVA: {e}")))?;
        let hc = HashCount { inner: out, count: 0, hasher: Hasher::new(opts.digest) };
        let vmdk = VmdkWriter::new(hc, spec, &VmdkOptions { adapter: opts.adapter, ..Default::default() }, &m.vmdk_name)?;
        Ok(OvaWriter { vmdk, meta: m })
    }

    /// Completes the OVA and returns the file (not fsynced) and its total size.
    pub fn finish_inner(self) -> io::Result<(File, u64)> {
        let (hc, vmdk_size) = self.vmdk.finish_inner()?;
        self.meta.finish(hc, vmdk_size)
    }
}

impl Meta {
    fn ovf_params(&self, vmdk_size: u64) -> OvfParams {
        OvfParams {
            name: self.name.clone(),
            vmdk_file_name: self.vmdk_name.clone(),
            vmdk_file_size: vmdk_size,
            capacity: self.size,
            adapter: self.opts.adapter,
            hardware_version: self.opts.hardware_version.clone(),
            cpus: self.opts.cpus,
            memory_mib: self.opts.memory_mib,
            firmware: self.opts.firmware,
            os: self.opts.os,
        }
    }

    fn manifest(&self, ovf_hex: &str, vmdk_hex: &str) -> String {
        let a = self.opts.digest.name();
        format!("{a}({})= {ovf_hex}\n{a}({})= {vmdk_hex}\n", self.ovf_name, self.vmdk_name)
    }

    fn finish(self, hc: HashCount<BufWriter<File>>, vmdk_size: u64) -> io::Result<(File, u64)> {
        if hc.count != vmdk_size {
            return Err(io::Error::other(format!("VMDK size mismatch: counted {} bytes, writer reports {vmdk_size}", hc.count)));
        }
        let vmdk_hex = hc.hasher.hex();
        let mut out = hc.inner;
        let tail = pad512(vmdk_size) - vmdk_size + 1024;
        out.write_all(&vec![0u8; tail as usize]).map_err(|e| io::Error::new(e.kind(), format!("writing OVA end: {e}")))?;
        let file = out.into_inner().map_err(|e| io::Error::new(e.error().kind(), format!("flushing OVA: {}", e.error())))?;
        let total = self.vmdk_header_at + 512 + vmdk_size + tail;

        let mut ovf = ovf::render(&self.ovf_params(vmdk_size)).into_bytes();
        if ovf.len() as u64 > self.ovf_len {
            return Err(io::Error::other(format!("OVF grew beyond its reserved {} bytes", self.ovf_len)));
        }
        ovf.resize(self.ovf_len as usize, b'\n');
        let mf = self.manifest(&digest_hex(self.opts.digest, &ovf), &vmdk_hex).into_bytes();
        if mf.len() as u64 != self.mf_len {
            return Err(io::Error::other("manifest length differs from its reservation"));
        }

        let mut front = Vec::with_capacity(self.vmdk_header_at as usize + 512);
        front.extend_from_slice(&tar_header(&self.ovf_name, self.ovf_len, self.epoch)?);
        front.extend_from_slice(&ovf);
        front.resize((512 + pad512(self.ovf_len)) as usize, 0);
        front.extend_from_slice(&tar_header(&self.mf_name, self.mf_len, self.epoch)?);
        front.extend_from_slice(&mf);
        front.resize(self.vmdk_header_at as usize, 0);
        front.extend_from_slice(&tar_header(&self.vmdk_name, vmdk_size, self.epoch)?);
        file.write_all_at(&front, 0).map_err(|e| io::Error::new(e.kind(), format!("writing OVA headers: {e}")))?;
        let len = file.metadata()?.len();
        if len != total {
            return Err(io::Error::other(format!("OVA is {len} bytes, expected {total}")));
        }
        Ok((file, total))
    }
}

impl FormatWriter for OvaWriter {
    fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.vmdk.write(offset, data)
    }
    fn compresses(&self) -> bool {
        true
    }

    fn finish(self: Box<Self>) -> io::Result<()> {
        let (mut f, _) = self.finish_inner()?;
        f.flush()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::export::check::check_ova;
    use crate::export::feed::feed;
    use crate::export::vmdk::tests::{MAIN_SIZE, export, main_regions, make_raw, run, spec, tmpdir};
    use std::path::Path;
    use std::process::Command;

    fn write_ova(raw: &Path, out: &Path, spec: &DiskSpec, opts: &OvaOptions) {
        let input = File::open(raw).unwrap();
        let mut w = OvaWriter::new(File::create(out).unwrap(), spec, opts).unwrap();
        feed(&input, spec.size, &mut [&mut w], &|| false).unwrap();
        FormatWriter::finish(Box::new(w)).unwrap();
    }

    #[test]
    fn ova_roundtrip_both_digests() {
        let d = tmpdir();
        let raw = d.path().join("in.raw");
        make_raw(&raw, MAIN_SIZE, &main_regions());
        let s = spec(MAIN_SIZE, "web");
        // The disk member must be byte-identical to a standalone VMDK of the same spec.
        let standalone = d.path().join("web-disk1.vmdk");
        export(&raw, &standalone, &s, &VmdkOptions::default());
        let standalone = std::fs::read(&standalone).unwrap();
        for (digest, adapter, firmware) in
            [(Digest::Sha256, Adapter::LsiLogic, Firmware::Bios), (Digest::Sha1, Adapter::PvScsi, Firmware::Efi)]
        {
            let ova = d.path().join(format!("web-{}.ova", digest.name()));
            let opts = OvaOptions { digest, adapter, firmware, ..Default::default() };
            write_ova(&raw, &ova, &s, &opts);
            let rep = check_ova(&ova).unwrap();
            let names: Vec<&str> = rep.members.iter().map(|m| m.name.as_str()).collect();
            assert_eq!(names, ["web.ovf", "web.mf", "web-disk1.vmdk"]);

            // System tar agrees on order, sizes, mode, owner and mtime.
            let listing = run(Command::new("tar").args(["--utc", "-tvf"]).arg(&ova));
            let lines: Vec<&str> = listing.lines().collect();
            assert_eq!(lines.len(), 3, "{listing}");
            for (line, m) in lines.iter().zip(&rep.members) {
                assert!(line.starts_with("-rw-r--r-- root/root"), "{line}");
                assert!(line.ends_with(&format!(" {}", m.name)), "{line}");
                assert!(line.contains(&format!(" {} 2023-11-14 22:13 ", m.size)), "{line}");
            }

            // Extract and check the members independently.
            let x = d.path().join(format!("x-{}", digest.name()));
            std::fs::create_dir(&x).unwrap();
            run(Command::new("tar").arg("-xf").arg(&ova).arg("-C").arg(&x));
            let ovf_bytes = std::fs::read(x.join("web.ovf")).unwrap();
            let vmdk_bytes = std::fs::read(x.join("web-disk1.vmdk")).unwrap();
            let mf = std::fs::read_to_string(x.join("web.mf")).unwrap();
            let a = digest.name();
            let expect =
                format!("{a}(web.ovf)= {}\n{a}(web-disk1.vmdk)= {}\n", digest_hex(digest, &ovf_bytes), digest_hex(digest, &vmdk_bytes));
            assert_eq!(mf, expect);
            assert_eq!(rep.manifest, expect);
            // Cross-check with coreutils.
            let tool = if digest == Digest::Sha1 { "sha1sum" } else { "sha256sum" };
            let sums = run(Command::new(tool).arg("web-disk1.vmdk").current_dir(&x));
            assert!(mf.contains(sums.split_whitespace().next().unwrap()));
            if adapter == Adapter::LsiLogic {
                assert!(vmdk_bytes == standalone, "OVA disk member differs from the standalone VMDK");
            }
            let ovf_text = String::from_utf8(ovf_bytes).unwrap();
            assert!(ovf_text.contains(&format!("ovf:size=\"{}\"", vmdk_bytes.len())));
            assert!(ovf_text.contains(&format!("ovf:capacity=\"{MAIN_SIZE}\"")));
            assert_eq!(firmware == Firmware::Efi, ovf_text.contains("vmw:value=\"efi\""));
            assert_eq!(adapter == Adapter::PvScsi, ovf_text.contains("VirtualSCSI"));
            run(Command::new("python3")
                .args(["-c", "import xml.dom.minidom,sys; xml.dom.minidom.parse(sys.argv[1])"])
                .arg(x.join("web.ovf")));
            run(Command::new("qemu-img").args(["compare", "-f", "raw", "-F", "vmdk"]).arg(&raw).arg(x.join("web-disk1.vmdk")));
            run(Command::new("qemu-img").args(["check", "-f", "vmdk"]).arg(x.join("web-disk1.vmdk")));

            // Deterministic.
            let again = d.path().join("again.ova");
            write_ova(&raw, &again, &s, &opts);
            assert!(std::fs::read(&ova).unwrap() == std::fs::read(&again).unwrap(), "two OVA exports differ");
        }
    }

    #[test]
    fn ova_checker_detects_damage() {
        let d = tmpdir();
        let raw = d.path().join("in.raw");
        let size = 4 * 1024 * 1024;
        make_raw(&raw, size, &[(0, 1 << 20, crate::export::vmdk::tests::Fill::Random)]);
        let ova = d.path().join("v.ova");
        write_ova(&raw, &ova, &spec(size, "v"), &OvaOptions::default());
        let good = std::fs::read(&ova).unwrap();
        let rep = check_ova(&ova).unwrap();
        let bad = d.path().join("bad.ova");
        // A flipped byte inside the VMDK member: digest mismatch.
        let mut b = good.clone();
        b[(rep.members[2].offset + 70_000) as usize] ^= 1;
        std::fs::write(&bad, &b).unwrap();
        assert!(check_ova(&bad).unwrap_err().to_string().contains("manifest says"));
        // A changed OVF File size (keeping the tar checksum intact): digest first, so fix the manifest too.
        let ovf_at = rep.members[0].offset as usize;
        let text = String::from_utf8(good[ovf_at..ovf_at + rep.members[0].size as usize].to_vec()).unwrap();
        let sz = format!("ovf:size=\"{}\"", rep.members[2].size);
        let wrong = format!("ovf:size=\"{}\"", rep.members[2].size + 1);
        let mut t2 = text.replacen(&sz, &wrong, 1);
        t2.truncate(text.len());
        let mut b = good.clone();
        b[ovf_at..ovf_at + text.len()].copy_from_slice(t2.as_bytes());
        let mf_at = rep.members[1].offset as usize;
        let new_mf = rep.manifest.replace(&digest_hex(Digest::Sha256, text.as_bytes()), &digest_hex(Digest::Sha256, t2.as_bytes()));
        b[mf_at..mf_at + new_mf.len()].copy_from_slice(new_mf.as_bytes());
        std::fs::write(&bad, &b).unwrap();
        assert!(check_ova(&bad).unwrap_err().to_string().contains("does not match tar member"));
        // Missing end blocks.
        std::fs::write(&bad, &good[..good.len() - 1024]).unwrap();
        assert!(check_ova(&bad).is_err());
    }

    #[test]
    fn big_member_uses_base256_size() {
        let big = 9u64 << 30;
        let h = tar_header("big-disk1.vmdk", big, 0).unwrap();
        assert_eq!(h[124] & 0x80, 0x80);
        let small = tar_header("x", (8u64 << 30) - 1, 0).unwrap();
        assert_eq!(&small[124..136], b"77777777777\0");
        // GNU tar reads it: a sparse tar with one 9 GiB member.
        let d = tmpdir();
        let p = d.path().join("big.tar");
        let f = File::create(&p).unwrap();
        f.write_all_at(&h, 0).unwrap();
        f.set_len(512 + big + 1024).unwrap();
        let listing = run(Command::new("tar").arg("-tvf").arg(&p));
        assert!(listing.contains(&format!(" {big} ")), "{listing}");
    }

    #[test]
    fn rejects_bad_options() {
        let d = tmpdir();
        let f = || File::create(d.path().join("x.ova")).unwrap();
        let s = spec(1 << 20, "ok");
        assert!(OvaWriter::new(f(), &s, &OvaOptions { hardware_version: "virtualbox-2.2".into(), ..Default::default() }).is_err());
        assert!(OvaWriter::new(f(), &spec(1 << 20, "a/b"), &OvaOptions::default()).is_err());
        assert!(OvaWriter::new(f(), &spec(1 << 20, &"n".repeat(95)), &OvaOptions::default()).is_err());
        assert!(OvaWriter::new(f(), &s, &OvaOptions { cpus: 0, ..Default::default() }).is_err());
        assert!(OvaWriter::new(f(), &s, &OvaOptions::default()).is_ok());
        assert_eq!("sha1".parse::<Digest>().unwrap(), Digest::Sha1);
    }
}
