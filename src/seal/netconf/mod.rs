//! Network configuration bound to the build machine's NIC, neutralised.
//!
//! Images carry network configuration that names the build machine's NIC by its MAC address;
//! a clone with another MAC then gets no network. The rewrites here keep each file's text,
//! comments and formatting, drop the MAC bindings, and keep the profile applying to an
//! ethernet NIC. Pure functions over text: the caller reads and writes the files.
//!
//! One file per job: `netplan`, `nm_keyfile`, `ifcfg`, `networkd` (`.network` and `.link`) and
//! `udev` rewrite one flavour each, on the shared line editing in `edit`; `addresses` finds the
//! MACs and IP addresses a file holds.

mod addresses;
mod edit;
mod ifcfg;
mod netplan;
mod networkd;
mod nm_keyfile;
mod udev;

pub use addresses::addresses;
pub(crate) use addresses::parse_mac;
use ifcfg::ifcfg;
use netplan::netplan;
use networkd::networkd;
use nm_keyfile::nm_keyfile;
use udev::udev;

/// The flavours of network configuration that can bind a NIC by MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetKind {
    /// `/etc/netplan/*.yaml`.
    Netplan,
    /// `/etc/NetworkManager/system-connections/*`.
    NmKeyfile,
    /// `/etc/sysconfig/network-scripts/ifcfg-*` (RHEL) and `/etc/sysconfig/network/ifcfg-*` (SUSE).
    Ifcfg,
    /// `/etc/systemd/network/*.network`.
    NetworkdNetwork,
    /// `/etc/systemd/network/*.link`.
    NetworkdLink,
    /// `/etc/udev/rules.d/*persistent-net*.rules`.
    UdevRules,
}

/// What to do with one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetFix {
    /// No MAC binding: leave the file as it is.
    Unchanged,
    /// Replace the file's content with `text`; `macs` were removed (lowercase, colon form).
    Rewrite {
        /// The new content.
        text: String,
        /// The MACs removed.
        macs: Vec<String>,
    },
    /// Remove the file; it bound only the `macs`.
    Remove {
        /// The MACs removed.
        macs: Vec<String>,
    },
}

impl NetFix {
    /// The MACs this fix removes (empty for `Unchanged`).
    pub fn macs(&self) -> &[String] {
        match self {
            NetFix::Unchanged => &[],
            NetFix::Rewrite { macs, .. } | NetFix::Remove { macs } => macs,
        }
    }
}

/// The flavour of the file at `path_in_image` (an absolute path inside the image), if it is
/// network configuration that can carry a MAC binding. Only direct children of the
/// configuration directories count, and only under `/etc` (vendor defaults under `/usr/lib`
/// bind no build machine).
pub fn kind_of(path_in_image: &str) -> Option<NetKind> {
    let child = |dir: &str| -> Option<&str> {
        let name = path_in_image.strip_prefix(dir)?;
        (!name.is_empty() && !name.contains('/') && !name.starts_with('.')).then_some(name)
    };
    if let Some(name) = child("/etc/netplan/") {
        return (name.ends_with(".yaml") || name.ends_with(".yml")).then_some(NetKind::Netplan);
    }
    if child("/etc/NetworkManager/system-connections/").is_some() {
        return Some(NetKind::NmKeyfile);
    }
    if let Some(name) = child("/etc/sysconfig/network-scripts/").or_else(|| child("/etc/sysconfig/network/")) {
        return (name.starts_with("ifcfg-") && name.len() > "ifcfg-".len()).then_some(NetKind::Ifcfg);
    }
    if let Some(name) = child("/etc/systemd/network/") {
        if name.ends_with(".network") {
            return Some(NetKind::NetworkdNetwork);
        }
        if name.ends_with(".link") {
            return Some(NetKind::NetworkdLink);
        }
        return None;
    }
    if let Some(name) = child("/etc/udev/rules.d/") {
        return (name.contains("persistent-net") && name.ends_with(".rules")).then_some(NetKind::UdevRules);
    }
    None
}

/// Rewrites one file of flavour `kind` so that it binds no MAC address.
pub fn neutralise(kind: NetKind, text: &str) -> NetFix {
    match kind {
        NetKind::Netplan => netplan(text),
        NetKind::NmKeyfile => nm_keyfile(text),
        NetKind::Ifcfg => ifcfg(text),
        NetKind::NetworkdNetwork => networkd(text, false),
        NetKind::NetworkdLink => networkd(text, true),
        NetKind::UdevRules => udev(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` rewritten as `kind`; panics unless `neutralise` rewrites it.
    pub(super) fn rewrite(kind: NetKind, text: &str) -> (String, Vec<String>) {
        match neutralise(kind, text) {
            NetFix::Rewrite { text, macs } => (text, macs),
            other => panic!("expected a rewrite, got {other:?}"),
        }
    }

    #[test]
    fn kinds_by_path() {
        assert_eq!(kind_of("/etc/netplan/50-cloud-init.yaml"), Some(NetKind::Netplan));
        assert_eq!(kind_of("/etc/netplan/01-netcfg.yml"), Some(NetKind::Netplan));
        assert_eq!(kind_of("/etc/netplan/README"), None);
        assert_eq!(kind_of("/etc/NetworkManager/system-connections/Wired connection 1.nmconnection"), Some(NetKind::NmKeyfile));
        assert_eq!(kind_of("/etc/NetworkManager/system-connections/eth0"), Some(NetKind::NmKeyfile));
        assert_eq!(kind_of("/etc/sysconfig/network-scripts/ifcfg-eth0"), Some(NetKind::Ifcfg));
        assert_eq!(kind_of("/etc/sysconfig/network/ifcfg-eth0"), Some(NetKind::Ifcfg));
        assert_eq!(kind_of("/etc/sysconfig/network-scripts/route-eth0"), None);
        assert_eq!(kind_of("/etc/systemd/network/10-eth0.network"), Some(NetKind::NetworkdNetwork));
        assert_eq!(kind_of("/etc/systemd/network/10-eth0.link"), Some(NetKind::NetworkdLink));
        assert_eq!(kind_of("/usr/lib/systemd/network/99-default.link"), None);
        assert_eq!(kind_of("/etc/udev/rules.d/70-persistent-net.rules"), Some(NetKind::UdevRules));
        assert_eq!(kind_of("/etc/udev/rules.d/75-persistent-net-generator.rules"), Some(NetKind::UdevRules));
        assert_eq!(kind_of("/etc/udev/rules.d/99-other.rules"), None);
        assert_eq!(kind_of("/etc/netplan/sub/x.yaml"), None);
    }
}
