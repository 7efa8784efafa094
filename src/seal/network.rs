//! `net-hwaddr` and `dhcp-leases`, and where the image keeps its addresses (read before the
//! scrub so the residue scan can look for them).

use super::Run;
use super::netconf::{NetFix, kind_of, neutralise};
use super::scrub::{Kind, Scrubber, join};
use crate::chroot::resolve::ResolveError;

/// Directories holding network configuration that may bind a MAC address.
pub const CONFIG_DIRS: &[&str] = &[
    "/etc/netplan",
    "/etc/NetworkManager/system-connections",
    "/etc/sysconfig/network-scripts",
    "/etc/sysconfig/network",
    "/etc/systemd/network",
    "/etc/udev/rules.d",
];

/// Directories of DHCP client leases and related per-machine network state.
pub const LEASE_DIRS: &[&str] = &[
    "/var/lib/dhcp",
    "/var/lib/dhclient",
    "/var/lib/dhcpcd",
    "/var/lib/dhcpcd5",
    "/var/db/dhcpcd",
    "/var/lib/NetworkManager",
    "/var/lib/systemd/network",
    "/var/lib/wicked",
];

/// Regular files directly in `dirs` (never through a symlink), with their paths.
fn files_in(s: &Scrubber, dirs: &[&str]) -> Result<Vec<String>, ResolveError> {
    let mut out = Vec::new();
    for d in dirs {
        for name in s.list(d)? {
            let p = join(d, &name);
            if s.kind_of(&p)? == Some(Kind::File) {
                out.push(p);
            }
        }
    }
    Ok(out)
}

/// Whether a file in a lease directory is client state that identifies this machine.
fn is_lease(path: &str) -> bool {
    let name = super::scrub::base(path);
    if path.starts_with("/var/lib/NetworkManager/") {
        return name.ends_with(".lease") || matches!(name, "timestamps" | "seen-bssids" | "secret_key" | "NetworkManager.state");
    }
    if path.starts_with("/var/lib/dhcp/") {
        // dhcpd.leases belongs to a DHCP server the image may be: not client state.
        return name.starts_with("dhclient") && (name.ends_with(".leases") || name.ends_with(".lease"));
    }
    if path.starts_with("/var/lib/wicked/") {
        return name.starts_with("lease-") || name == "duid.xml" || name == "iaid.xml";
    }
    true
}

/// Every file whose addresses the residue scan looks for afterwards.
pub fn address_sources(s: &Scrubber) -> Result<Vec<String>, ResolveError> {
    let mut files = files_in(s, CONFIG_DIRS)?;
    files.retain(|p| kind_of(p).is_some());
    files.extend(files_in(s, LEASE_DIRS)?.into_iter().filter(|p| is_lease(p)));
    Ok(files)
}

/// `net-hwaddr`: MAC bindings neutralised; each file rewritten or removed is reported with the
/// MACs it held.
pub fn hwaddr(r: &mut Run) -> anyhow::Result<()> {
    for p in files_in(&r.s, CONFIG_DIRS)? {
        let Some(kind) = kind_of(&p) else { continue };
        let Some(data) = r.s.read(&p)? else { continue };
        let text = String::from_utf8_lossy(&data);
        let fix = neutralise(kind, &text);
        let macs = fix.macs().join(", ");
        match fix {
            NetFix::Unchanged => {}
            NetFix::Rewrite { text, .. } => {
                let mode = r.s.stat(&p)?.map_or(0o644, |st| st.st_mode & 0o7777);
                r.s.rewrite(&p, text.as_bytes(), mode, &format!("MAC binding removed ({macs})"))?;
            }
            NetFix::Remove { .. } => {
                r.s.remove(&p, &format!("bound to {macs} only"))?;
            }
        }
    }
    Ok(())
}

/// `dhcp-leases`: lease files and NetworkManager's per-machine state.
pub fn leases(r: &mut Run) -> anyhow::Result<()> {
    for p in files_in(&r.s, LEASE_DIRS)? {
        if is_lease(&p) {
            r.s.remove(&p, "DHCP lease or client state")?;
        }
    }
    // systemd-networkd keeps leases under /run (not on disk) and DUIDs here:
    r.s.remove("/var/lib/systemd/network/duid", "DHCP unique id")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_files() {
        assert!(is_lease("/var/lib/dhcp/dhclient.eth0.leases"));
        assert!(!is_lease("/var/lib/dhcp/dhcpd.leases"));
        assert!(is_lease("/var/lib/NetworkManager/internal-abc-eth0.lease"));
        assert!(is_lease("/var/lib/NetworkManager/secret_key"));
        assert!(!is_lease("/var/lib/NetworkManager/NetworkManager-intern.conf"));
        assert!(is_lease("/var/lib/dhcpcd/eth0.lease"));
    }
}
