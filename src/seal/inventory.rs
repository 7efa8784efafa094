//! The `~/.ssh` files of every home as they were before the first provisioner ran, so that
//! `ssh-userdir` can tell what the upstream image carried (a previous instance's keys) from what
//! the recipe's provisioners installed.
//!
//! A file is recorded by its content: size, sha256, and the sha256 of each non-blank line.
//! Not by inode, mtime or ctime: those change on `chown -R`, `chmod`, `touch` or a package's
//! `cp -a` of a home, which would make an upstream key look like the recipe's and keep it —
//! the wrong way to fail. What grants access is the content: a file rewritten with the same
//! bytes still holds the upstream's keys, and a file the recipe appended to still holds the
//! upstream's lines, which the line digests let sealing drop while keeping the recipe's.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use super::homes::homes;
use super::scrub::{Kind, Scrubber, join};
use crate::chroot::resolve::{ResolveError, Root};

/// How one path looked before provisioning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fingerprint {
    /// A regular file.
    File {
        /// Length in bytes.
        size: u64,
        /// sha256 of the content.
        sha256: [u8; 32],
        /// sha256 of each non-blank line, trimmed.
        lines: BTreeSet<[u8; 32]>,
    },
    /// A symlink, directory or special file (never read, never followed).
    Other,
}

impl Fingerprint {
    /// The fingerprint of a regular file's content.
    pub fn of(data: &[u8]) -> Self {
        Fingerprint::File { size: data.len() as u64, sha256: Sha256::digest(data).into(), lines: entries(data).map(|(_, h)| h).collect() }
    }
}

/// Non-blank lines with the digest of their trimmed text.
fn entries(data: &[u8]) -> impl Iterator<Item = (&[u8], [u8; 32])> {
    data.split_inclusive(|b| *b == b'\n').filter(|l| !l.trim_ascii().is_empty()).map(|l| (l, Sha256::digest(l.trim_ascii()).into()))
}

/// Every entry of every home's `~/.ssh` before provisioning, by image path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SshInventory {
    /// Image path → what was there.
    pub files: BTreeMap<String, Fingerprint>,
}

/// Where a `~/.ssh` file found at sealing came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Sealing outside a build: nothing says what provisioning did.
    Unknown,
    /// There before provisioning, and unchanged (or changed to hold only lines it already had).
    Upstream,
    /// Not there before provisioning.
    Created,
    /// There before and changed. `rest` is the content without the lines the upstream file
    /// had; `dropped` counts those lines (0: none of them is left).
    Changed {
        /// The recipe's lines, in order.
        rest: Vec<u8>,
        /// How many of the upstream's lines were in the file.
        dropped: usize,
    },
}

impl SshInventory {
    /// Records every entry of every home's `~/.ssh` (homes as `homes::homes` finds them; never
    /// through a symlink).
    pub fn take(root: &Root) -> Result<Self, ResolveError> {
        let s = Scrubber::new(root, true);
        let mut files = BTreeMap::new();
        for home in homes(&s)? {
            let dir = join(&home, ".ssh");
            for name in s.list(&dir)? {
                let p = join(&dir, &name);
                let fp = match s.kind_of(&p)? {
                    Some(Kind::File) => Fingerprint::of(&s.read(&p)?.unwrap_or_default()),
                    Some(_) => Fingerprint::Other,
                    None => continue,
                };
                files.insert(p, fp);
            }
        }
        Ok(Self { files })
    }

    /// Where `path` came from, given its content now (`None`: not a regular file). Pure.
    pub fn origin(inventory: Option<&Self>, path: &str, now: Option<&[u8]>) -> Origin {
        let Some(inv) = inventory else { return Origin::Unknown };
        let Some(before) = inv.files.get(path) else { return Origin::Created };
        let (Fingerprint::File { size, sha256, lines }, Some(now)) = (before, now) else {
            // A link or special file then and now counts as the upstream's; a type change
            // was the recipe's doing.
            return if matches!(before, Fingerprint::Other) == now.is_none() {
                Origin::Upstream
            } else {
                Origin::Changed { rest: Vec::new(), dropped: 0 }
            };
        };
        if *size == now.len() as u64 && *sha256 == <[u8; 32]>::from(Sha256::digest(now)) {
            return Origin::Upstream;
        }
        let mut rest = Vec::new();
        let mut dropped = 0;
        let mut any = false;
        for (line, h) in entries(now) {
            if lines.contains(&h) {
                dropped += 1;
            } else {
                any = true;
                rest.extend_from_slice(line);
                if !line.ends_with(b"\n") {
                    rest.push(b'\n');
                }
            }
        }
        if any { Origin::Changed { rest, dropped } } else { Origin::Upstream }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn inv(path: &str, data: &[u8]) -> SshInventory {
        SshInventory { files: BTreeMap::from([(path.to_string(), Fingerprint::of(data))]) }
    }

    const P: &str = "/root/.ssh/authorized_keys";

    #[test]
    fn same_content_is_upstream_whatever_else_changed() {
        let i = inv(P, b"ssh-ed25519 AAAA old\n");
        assert_eq!(SshInventory::origin(Some(&i), P, Some(b"ssh-ed25519 AAAA old\n")), Origin::Upstream);
        // Reordered or re-spaced upstream lines are still only the upstream's.
        let i = inv(P, b"ssh-ed25519 AAAA a\nssh-rsa BBBB b\n");
        assert_eq!(SshInventory::origin(Some(&i), P, Some(b"ssh-rsa BBBB b\n\n  ssh-ed25519 AAAA a")), Origin::Upstream);
    }

    #[test]
    fn absent_before_is_created_and_no_inventory_is_unknown() {
        let i = inv(P, b"x\n");
        assert_eq!(SshInventory::origin(Some(&i), "/home/demo/.ssh/authorized_keys", Some(b"k\n")), Origin::Created);
        assert_eq!(SshInventory::origin(Some(&i), "/home/demo/.ssh/authorized_keys", None), Origin::Created);
        assert_eq!(SshInventory::origin(None, P, Some(b"x\n")), Origin::Unknown);
    }

    #[test]
    fn changed_keeps_only_the_recipes_lines() {
        let i = inv(P, b"ssh-ed25519 AAAA old\n");
        let o = SshInventory::origin(Some(&i), P, Some(b"ssh-ed25519 AAAA old\nssh-ed25519 CCCC recipe"));
        assert_eq!(o, Origin::Changed { rest: b"ssh-ed25519 CCCC recipe\n".to_vec(), dropped: 1 });
        let o = SshInventory::origin(Some(&i), P, Some(b"ssh-ed25519 CCCC recipe\n"));
        assert_eq!(o, Origin::Changed { rest: b"ssh-ed25519 CCCC recipe\n".to_vec(), dropped: 0 });
    }

    #[test]
    fn type_changes_are_the_recipes() {
        let i = SshInventory { files: BTreeMap::from([(P.to_string(), Fingerprint::Other)]) };
        assert_eq!(SshInventory::origin(Some(&i), P, None), Origin::Upstream);
        assert!(matches!(SshInventory::origin(Some(&i), P, Some(b"k\n")), Origin::Changed { .. }));
        let i = inv(P, b"k\n");
        assert!(matches!(SshInventory::origin(Some(&i), P, None), Origin::Changed { .. }));
    }

    #[test]
    fn take_reads_every_home_never_through_links() {
        let d = tempfile::tempdir().unwrap();
        let put = |p: &str, c: &str| {
            let p = d.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, c).unwrap();
        };
        put("etc/passwd", "root:x:0:0::/root:/bin/sh\nsvc:x:998:998::/var/lib/svc:/bin/sh\n");
        put("root/.ssh/authorized_keys", "a\n");
        put("var/lib/svc/.ssh/known_hosts", "h\n");
        put("home/demo/.ssh/id_ed25519.pub", "p\n");
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("authorized_keys"), "host\n").unwrap();
        std::fs::create_dir_all(d.path().join("home/evil")).unwrap();
        std::os::unix::fs::symlink(host.path(), d.path().join("home/evil/.ssh")).unwrap();
        let i = SshInventory::take(&Root::open(d.path()).unwrap()).unwrap();
        let paths: Vec<&str> = i.files.keys().map(String::as_str).collect();
        assert_eq!(paths, ["/home/demo/.ssh/id_ed25519.pub", "/root/.ssh/authorized_keys", "/var/lib/svc/.ssh/known_hosts"]);
        assert_eq!(i.files["/root/.ssh/authorized_keys"], Fingerprint::of(b"a\n"));
    }
}
