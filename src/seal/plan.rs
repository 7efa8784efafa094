//! What a seal run is asked to do (from the recipe or the command line) and what the build
//! tells it (host name, provisioning paths). Pure data.

use std::collections::BTreeSet;

use super::catalog::Op;

/// The validated `[seal]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealPlan {
    /// Operations that run.
    pub enabled: BTreeSet<Op>,
    /// `ssh-hostkeys`: install imgforge's `ssh-keygen -A` unit when the image has no regenerator.
    pub install_keygen_unit: bool,
    /// `ssh-userdir`: which `authorized_keys`/`authorized_keys2` go.
    pub authorized_keys: UserKeyFiles,
    /// `ssh-userdir`: which `known_hosts`/`known_hosts.old` go.
    pub known_hosts: UserKeyFiles,
    /// `machine-id`: write "uninitialized" (systemd's first-boot semantics) instead of empty.
    pub machine_id_uninitialized: bool,
    /// `hostname`: the neutral name written to /etc/hostname.
    pub hostname: String,
    /// `cloud-init`: also remove the seed directory.
    pub cloud_init_remove_seed: bool,
    /// `cloud-init`: run the image's own `cloud-init clean` when present.
    pub cloud_init_image_command: bool,
    /// `package-cache`: also remove /var/lib/apt/lists.
    pub apt_lists: bool,
    /// `provisioner-files`: more image paths to remove.
    pub provisioner_paths: Vec<String>,
    /// Image paths overwritten with zeros before `provisioner-files` removes them.
    pub scrub: Vec<String>,
    /// `user-accounts`: accounts to keep.
    pub keep_users: Vec<String>,
    /// Residue findings downgraded to warnings.
    pub warn: Vec<WarnRule>,
}

impl Default for SealPlan {
    fn default() -> Self {
        Self {
            enabled: Op::ALL.into_iter().filter(|o| o.default_on()).collect(),
            install_keygen_unit: true,
            authorized_keys: UserKeyFiles::RemoveUpstream,
            known_hosts: UserKeyFiles::RemoveUpstream,
            machine_id_uninitialized: false,
            hostname: "localhost".into(),
            cloud_init_remove_seed: false,
            cloud_init_image_command: true,
            apt_lists: false,
            provisioner_paths: Vec::new(),
            scrub: Vec::new(),
            keep_users: Vec::new(),
            warn: Vec::new(),
        }
    }
}

impl SealPlan {
    /// Applies enable/disable lists (already validated names).
    pub fn with_changes(mut self, enable: &[Op], disable: &[Op]) -> Self {
        self.enabled.extend(enable.iter().copied());
        for d in disable {
            self.enabled.remove(d);
        }
        self
    }
}

/// What `ssh-userdir` does with a kind of `~/.ssh` file (`authorized_keys`, `known_hosts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserKeyFiles {
    /// Remove what the upstream image carried (a previous instance's), keep what the recipe's
    /// provisioners created or changed (default).
    RemoveUpstream,
    /// Remove every one, wherever it came from.
    RemoveAll,
    /// Remove none.
    Keep,
}

impl UserKeyFiles {
    /// Every value, in the order the documentation lists them.
    pub const ALL: [UserKeyFiles; 3] = [UserKeyFiles::RemoveUpstream, UserKeyFiles::RemoveAll, UserKeyFiles::Keep];

    /// The recipe's name for it.
    pub fn name(self) -> &'static str {
        match self {
            UserKeyFiles::RemoveUpstream => "remove-upstream",
            UserKeyFiles::RemoveAll => "remove-all",
            UserKeyFiles::Keep => "keep",
        }
    }

    /// The value named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.name() == s)
    }
}

/// `kind` or `kind:/path` — a residue finding that only warns. A path ending in `/` matches
/// everything below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarnRule {
    /// Finding kind name ("private-key", "ip", …).
    pub kind: String,
    /// Image path or directory prefix; `None` for every path.
    pub path: Option<String>,
}

impl WarnRule {
    /// Parses `kind[:path]`; the kind must be a residue finding kind.
    pub fn parse(s: &str) -> Result<Self, String> {
        use super::residue::FindingKind;
        let (kind, path) = match s.split_once(':') {
            Some((k, p)) => (k, Some(p.to_string())),
            None => (s, None),
        };
        if FindingKind::parse(kind).is_none() {
            let kinds: Vec<&str> = FindingKind::ALL.iter().map(|k| k.name()).collect();
            return Err(format!("unknown residue finding \"{kind}\"; valid kinds: {}", kinds.join(", ")));
        }
        if path.as_deref().is_some_and(|p| !p.starts_with('/')) {
            return Err(format!("\"{s}\": the path after ':' must be absolute inside the image"));
        }
        Ok(Self { kind: kind.to_string(), path })
    }

    /// Whether a finding of `kind` at `path` only warns.
    pub fn matches(&self, kind: &str, path: &str) -> bool {
        self.kind == kind
            && match &self.path {
                None => true,
                Some(p) if p.ends_with('/') => path.starts_with(p.as_str()),
                Some(p) => p == path,
            }
    }
}

/// What the build knows that sealing needs.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The build host's name (looked for by the residue scan).
    pub build_hostname: Option<String>,
    /// Image paths the build itself used for provisioning (removed by `provisioner-files`).
    pub provisioner_paths: Vec<String>,
    /// Host paths given to provisioners (looked for by the residue scan).
    pub host_paths: Vec<String>,
    /// Only print the plan.
    pub dry_run: bool,
    /// `~/.ssh` files as they were before the first provisioner ran (`ssh-userdir` tells the
    /// upstream's from the recipe's by it); `None` when sealing outside a build.
    pub ssh_inventory: Option<super::inventory::SshInventory>,
    /// The disk's filesystems (for `fs-uuids`).
    pub filesystems: Vec<Filesystem>,
    /// A path tools can open the disk by (mtools, for an ESP this kernel cannot mount).
    pub disk_path: Option<std::path::PathBuf>,
}

/// A filesystem on the disk being sealed.
#[derive(Debug, Clone, Default)]
pub struct Filesystem {
    /// Partition number.
    pub partition: u32,
    /// Byte offset of the partition in the disk.
    pub start: u64,
    /// Partition size.
    pub size: u64,
    /// Filesystem type ("ext4", "vfat", …).
    pub fstype: String,
    /// Its UUID as fstab writes it.
    pub uuid: String,
    /// Where it is mounted in the image; `None` if it is not.
    pub target: Option<String>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn warn_rules() {
        let r = WarnRule::parse("private-key:/etc/ssl/private/").unwrap();
        assert!(r.matches("private-key", "/etc/ssl/private/a.key"));
        assert!(!r.matches("private-key", "/etc/ssl/a.key"));
        assert!(!r.matches("ip", "/etc/ssl/private/a.key"));
        let r = WarnRule::parse("ip").unwrap();
        assert!(r.matches("ip", "/anything"));
        assert!(WarnRule::parse("ips").unwrap_err().contains("valid kinds: private-key, aws-access-key"));
        assert!(WarnRule::parse("ip:etc").is_err());
    }

    #[test]
    fn defaults_follow_the_catalogue() {
        let p = SealPlan::default();
        assert!(p.enabled.contains(&Op::MachineId) && !p.enabled.contains(&Op::FsUuids));
        let p = p.with_changes(&[Op::FsUuids], &[Op::Logfiles]);
        assert!(p.enabled.contains(&Op::FsUuids) && !p.enabled.contains(&Op::Logfiles));
    }
}
