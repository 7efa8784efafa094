//! The image's CPU architecture, from the ELF header of one of its own executables (read
//! inside the image root, never through a symlink out of it). Recorded in the manifest, where
//! `publish` takes it from when a recipe names none.

use std::path::Path;

use crate::chroot::resolve::Root;

/// Executables every Linux image has; the first one found decides.
const PROBES: &[&str] = &["/usr/bin/env", "/bin/sh", "/sbin/init", "/usr/lib/systemd/systemd"];

/// The architecture name (AWS spelling where AWS has one) of an ELF header. Pure.
pub fn from_elf_header(h: &[u8]) -> Option<&'static str> {
    if h.len() < 20 || &h[..4] != b"\x7fELF" {
        return None;
    }
    let machine = match h[5] {
        1 => u16::from_le_bytes([h[18], h[19]]),
        2 => u16::from_be_bytes([h[18], h[19]]),
        _ => return None,
    };
    let class64 = h[4] == 2;
    Some(match (machine, class64) {
        (0x3e, true) => "x86_64",
        (0xb7, true) => "arm64",
        (0x03, false) => "i386",
        (0x28, false) => "arm",
        (0xf3, true) => "riscv64",
        (0x15, true) if h[5] == 1 => "ppc64le",
        (0x15, true) => "ppc64",
        (0x16, true) => "s390x",
        _ => return None,
    })
}

/// Reads the architecture of the image mounted at `root`: None when no probe is an ELF file
/// of a known machine.
pub fn detect(root: &Root) -> Option<&'static str> {
    PROBES.iter().find_map(|p| from_elf_header(&root.read_at_most(Path::new(p), 20).ok()??))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(class: u8, data: u8, machine: u16) -> Vec<u8> {
        let mut h = vec![0x7f, b'E', b'L', b'F', class, data, 1, 0];
        h.resize(18, 0);
        h.extend(if data == 1 { machine.to_le_bytes() } else { machine.to_be_bytes() });
        h
    }

    #[test]
    fn reads_machines() {
        assert_eq!(from_elf_header(&header(2, 1, 0x3e)), Some("x86_64"));
        assert_eq!(from_elf_header(&header(2, 1, 0xb7)), Some("arm64"));
        assert_eq!(from_elf_header(&header(1, 1, 0x03)), Some("i386"));
        assert_eq!(from_elf_header(&header(2, 2, 0x16)), Some("s390x"));
        assert_eq!(from_elf_header(&header(2, 1, 0x15)), Some("ppc64le"));
        assert_eq!(from_elf_header(&header(2, 1, 0x9999)), None);
        assert_eq!(from_elf_header(b"#!/bin/sh\nexec true\n"), None);
        assert_eq!(from_elf_header(&header(2, 1, 0x3e)[..19]), None);
    }

    #[test]
    fn reads_this_hosts_env() {
        // The host's own /usr/bin/env, through the same in-root resolution as an image.
        let root = Root::open(Path::new("/")).unwrap();
        let want = if cfg!(target_arch = "x86_64") { "x86_64" } else { "arm64" };
        assert_eq!(detect(&root), Some(want));
    }
}
