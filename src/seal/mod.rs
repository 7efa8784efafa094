//! Sealing: the identity scrub, as named operations (see `catalog`), run in catalogue order as
//! the last write to the image, then a residue scan that proves it. Every change goes through
//! `scrub::Scrubber` (in-root resolution, never following a final symlink, recorded per
//! operation); a dry run records the same plan without writing.

pub mod accounts;
pub mod catalog;
pub mod cloud;
pub mod fsuuid;
pub mod homes;
pub mod identity;
pub mod instance;
pub mod inventory;
pub mod leftovers;
pub mod lvmuuid;
pub mod netconf;
pub mod network;
pub mod plan;
pub mod rawscan;
pub mod report;
pub mod residue;
pub mod scrub;
pub mod ssh;
pub mod walk;

use std::time::Instant;

use anyhow::Context as _;

use crate::chroot::resolve::Root;
use crate::progress::Events;
use catalog::Op;
pub use plan::{Context, Filesystem, SealPlan};
pub use report::{SealReport, SealSummary};
use scrub::Scrubber;

/// One seal run in progress: what operations read and write.
pub struct Run<'a> {
    /// Records and applies changes.
    pub s: Scrubber<'a>,
    /// What was asked.
    pub plan: &'a SealPlan,
    /// What the build knows.
    pub cx: &'a Context,
    /// For the output of image commands.
    pub events: &'a Events,
    /// Remarks for the report.
    pub notes: Vec<String>,
    /// What regenerates SSH host keys.
    pub ssh_regenerators: Vec<String>,
    /// /etc/hostname before the scrub.
    pub old_hostname: Option<String>,
    /// UUIDs `fs-uuids` changes after unmount.
    pub uuid_changes: Vec<fsuuid::UuidChange>,
    /// PV and VG UUIDs `lvm-uuids` changes after unmount.
    pub lvm_changes: Vec<lvmuuid::LvmUuidChange>,
    /// Files an operation looked at and kept on purpose.
    pub kept: Vec<report::Kept>,
}

fn run_op(op: Op, r: &mut Run) -> anyhow::Result<()> {
    match op {
        Op::CloudInit => cloud::cloud_init(r),
        Op::CaCertificates => accounts::ca_certificates(r),
        Op::CloudAgents => cloud::cloud_agents(r),
        Op::CmAgents => cloud::cm_agents(r),
        Op::ProvisionerFiles => leftovers::provisioner_files(r),
        Op::SshHostkeys => ssh::hostkeys(r),
        Op::SshUserdir => ssh::userdir(r),
        Op::UserAccounts => accounts::user_accounts(r),
        Op::MachineId => identity::machine_id(r),
        Op::RandomSeed => identity::random_seed(r),
        Op::NetHwaddr => network::hwaddr(r),
        Op::DhcpLeases => network::leases(r),
        Op::Hostname => identity::hostname(r),
        Op::ShellHistory => leftovers::shell_history(r),
        Op::Logfiles => leftovers::logfiles(r),
        Op::TmpFiles => leftovers::tmp_files(r),
        Op::PackageCache => leftovers::package_cache(r),
        Op::CrashData => leftovers::crash_data(r),
        Op::Utmp => leftovers::utmp(r),
        Op::BackupFiles => leftovers::backup_files(r),
        Op::CronSpool => instance::cron_spool(r),
        Op::PamData => instance::pam_data(r),
        Op::PacctLog => instance::pacct_log(r),
        Op::SssdDbLog => instance::sssd_db_log(r),
        Op::KerberosHostkeytab => instance::kerberos_hostkeytab(r),
        Op::RpmDb => instance::rpm_db(r),
        Op::YumUuid => instance::yum_uuid(r),
        Op::BlkidTab => instance::blkid_tab(r),
        Op::FirewallRules => instance::firewall_rules(r),
        Op::MailSpool => instance::mail_spool(r),
        Op::DhcpServerState => instance::dhcp_server_state(r),
        Op::DovecotData => instance::dovecot_data(r),
        Op::SambaDbLog => instance::samba_db_log(r),
        Op::RhnSystemid => instance::rhn_systemid(r),
        Op::RhSubscriptionManager => instance::rh_subscription_manager(r),
        Op::IpaClient => instance::ipa_client(r),
        Op::KerberosData => instance::kerberos_data(r),
        Op::LvmSystemDevices => instance::lvm_system_devices(r),
        Op::NetNmconn => instance::net_nmconn(r),
        Op::LvmUuids => lvmuuid::lvm_uuids(r),
        Op::FsUuids => fsuuid::fs_uuids(r),
    }
}

/// Image paths the residue scan never enters (pseudo filesystems during a build).
pub(crate) const SCAN_SKIP: &[&str] = &["/proc", "/sys", "/dev", "/run"];

/// Seals the mounted image at `root`. Residue findings are in the report; `report.check()`
/// turns the ones not downgraded into an error.
pub fn run(root: &Root, plan: &SealPlan, cx: &Context, events: &Events) -> anyhow::Result<SealReport> {
    let start = Instant::now();
    let mut r = Run {
        s: Scrubber::new(root, cx.dry_run),
        plan,
        cx,
        events,
        notes: Vec::new(),
        ssh_regenerators: Vec::new(),
        old_hostname: None,
        uuid_changes: Vec::new(),
        lvm_changes: Vec::new(),
        kept: Vec::new(),
    };
    r.s.set_scrub(&plan.scrub);
    let mut needles = events
        .phase("seal", "read the MACs, IPs, host names and machine id the residue scan looks for", || prescan(&mut r))
        .context("Failed to read the image's addresses and names before sealing")?;
    for op in Op::ALL {
        if plan.enabled.contains(&op) {
            r.s.set_op(op);
            events
                .phase("seal", &format!("{}: {}", op.name(), op.description()), || run_op(op, &mut r))
                .with_context(|| format!("seal operation {} failed", op.name()))?;
        }
    }
    let (secrets, unread) = r.s.take_removed();
    for s in secrets {
        if !needles.removed.iter().any(|o| o.bytes == s.bytes) {
            needles.removed.push(s);
        }
    }
    if !unread.is_empty() {
        let shown: Vec<&str> = unread.iter().take(5).map(String::as_str).collect();
        r.notes.push(format!(
            "{} files over 64 MiB were removed without being read for secrets (the raw scan cannot look for theirs): {}{}",
            unread.len(),
            shown.join(", "),
            if unread.len() > 5 { ", …" } else { "" }
        ));
    }
    let scan = if cx.dry_run {
        r.notes.push("dry run: no residue scan".into());
        residue::Scan::default()
    } else {
        events
            .phase("seal", "residue scan: every file of the sealed image searched for what was removed", || {
                residue::scan(root, &needles, SCAN_SKIP)
            })
            .context("Failed to scan the sealed image for residue")?
    };
    // What the seal removed and no live file holds: the raw pass looks for exactly that.
    let raw_needles = needles.without(&scan.live);
    let kept = needles.removed.len() - raw_needles.removed.len();
    if kept > 0 && !cx.dry_run {
        r.notes.push(format!(
            "{kept} removed values (secrets, the old machine id) are still in live files; the raw scan does not look for them"
        ));
    }
    let mut report =
        report::assemble(plan, r.s.into_actions(), scan, r.ssh_regenerators, r.notes, cx.dry_run, start.elapsed().as_secs_f64());
    report.fs_uuids = r.uuid_changes;
    report.lvm_uuids = r.lvm_changes;
    report.kept = r.kept;
    report.raw_needles = raw_needles;
    Ok(report)
}

/// What the residue scan looks for, read before anything is removed: MACs and IPs in network
/// configuration and leases, the image's previous host name and the build host's, and the
/// paths the build gave provisioners.
fn prescan(r: &mut Run) -> anyhow::Result<residue::Needles> {
    let mut n = residue::Needles::default();
    for p in network::address_sources(&r.s)? {
        if let Some(data) = r.s.read(&p)? {
            let (macs, ips) = netconf::addresses(&String::from_utf8_lossy(&data));
            n.macs.extend(macs);
            n.ips.extend(ips);
        }
    }
    if let Some(h) = r.s.read("/etc/hostname")? {
        let h = String::from_utf8_lossy(&h).trim().to_string();
        if !identity::is_neutral_hostname(&h) && h != r.plan.hostname {
            n.hostnames.push(h.clone());
            r.old_hostname = Some(h);
        }
    }
    for p in ["/etc/machine-id", "/var/lib/dbus/machine-id"] {
        if let Some(id) = r.s.read(p)? {
            let id = String::from_utf8_lossy(&id).trim().to_ascii_lowercase();
            if id.len() == 32 && id.bytes().all(|c| c.is_ascii_hexdigit()) && !n.removed.iter().any(|o| o.bytes == id.as_bytes()) {
                n.removed.push(residue::Removed { kind: residue::RemovedKind::MachineId, bytes: id.into_bytes(), from: p.to_string() });
            }
        }
    }
    n.hostnames.extend(r.cx.build_hostname.iter().filter(|h| !identity::is_neutral_hostname(h)).cloned());
    n.paths.extend(r.cx.host_paths.iter().cloned());
    n.paths.extend(r.cx.provisioner_paths.iter().cloned());
    n.paths.push(crate::chroot::run::RUN_DIR.to_string());
    for v in [&mut n.macs, &mut n.ips, &mut n.hostnames, &mut n.paths] {
        v.sort();
        v.dedup();
    }
    Ok(n)
}

#[cfg(test)]
mod tests;
