//! State a running instance leaves that the rest of the catalogue does not cover, as
//! virt-sysprep's operations of the same names: cron and at spools, PAM runtime data, process
//! accounting, SSSD caches, the Kerberos host keytab, the RPM database environment, yum/dnf
//! instance uuids, blkid caches, and (off by default) firewall rules a previous instance saved.

use super::Run;

/// `cron-spool`: users' crontabs and at jobs (the spool directories kept). Jobs a recipe
/// means to ship go in /etc/cron.d, which stays; a recipe that installs user crontabs disables
/// this operation.
pub fn cron_spool(r: &mut Run) -> anyhow::Result<()> {
    for d in ["/var/spool/cron/crontabs", "/var/spool/cron/atjobs", "/var/spool/cron/atspool", "/var/spool/at", "/var/spool/at/spool"] {
        // at's sequence file stays: atd needs it.
        r.s.clear_dir(d, |n| n == ".SEQ" || n == "spool", "cron/at job")?;
    }
    // RHEL keeps crontabs directly in /var/spool/cron.
    r.s.clear_dir("/var/spool/cron", |n| ["crontabs", "atjobs", "atspool", "lastrun"].contains(&n), "crontab")?;
    Ok(())
}

/// `pam-data`: pam_mount, pam_timestamp and faillock runtime state; tallylog emptied.
pub fn pam_data(r: &mut Run) -> anyhow::Result<()> {
    for d in ["/var/run/pam_mount", "/var/run/pam_timestamp", "/var/run/faillock", "/var/lib/faillock"] {
        r.s.clear_dir(d, |_| false, "PAM runtime data")?;
    }
    r.s.truncate("/var/log/tallylog", "PAM tally")?;
    Ok(())
}

/// `pacct-log`: process accounting logs emptied, rotated ones removed.
pub fn pacct_log(r: &mut Run) -> anyhow::Result<()> {
    for d in ["/var/account", "/var/log/account"] {
        for name in r.s.list(d)? {
            let p = format!("{d}/{name}");
            if name == "pacct" {
                r.s.truncate(&p, "process accounting")?;
            } else if name.starts_with("pacct") {
                r.s.remove(&p, "rotated process accounting")?;
            }
        }
    }
    Ok(())
}

/// `sssd-db-log`: SSSD's cache databases and memory caches (its logs go with `logfiles`).
pub fn sssd_db_log(r: &mut Run) -> anyhow::Result<()> {
    for d in ["/var/lib/sss/db", "/var/lib/sss/mc", "/var/lib/sss/pipes/private"] {
        r.s.clear_dir(d, |_| false, "SSSD cache")?;
    }
    r.s.clear_dir("/var/log/sssd", |_| false, "SSSD log")?;
    Ok(())
}

/// `kerberos-hostkeytab`: /etc/krb5.keytab, the host's Kerberos identity.
pub fn kerberos_hostkeytab(r: &mut Run) -> anyhow::Result<()> {
    r.s.remove("/etc/krb5.keytab", "Kerberos host keytab")?;
    Ok(())
}

/// `rpm-db`: the Berkeley DB environment files of the RPM database (`__db.*`), rebuilt on use.
pub fn rpm_db(r: &mut Run) -> anyhow::Result<()> {
    for name in r.s.list("/var/lib/rpm")? {
        if name.starts_with("__db.") {
            r.s.remove(&format!("/var/lib/rpm/{name}"), "RPM database environment")?;
        }
    }
    Ok(())
}

/// `yum-uuid`: the instance uuid yum and dnf send to mirrors.
pub fn yum_uuid(r: &mut Run) -> anyhow::Result<()> {
    for p in ["/var/lib/yum/uuid", "/var/lib/dnf/uuid"] {
        r.s.remove(p, "package manager instance uuid")?;
    }
    Ok(())
}

/// `blkid-tab`: blkid's device cache, naming the build's devices.
pub fn blkid_tab(r: &mut Run) -> anyhow::Result<()> {
    for p in [
        "/var/run/blkid.tab",
        "/var/run/blkid.tab.old",
        "/run/blkid/blkid.tab",
        "/run/blkid/blkid.tab.old",
        "/etc/blkid/blkid.tab",
        "/etc/blkid/blkid.tab.old",
        "/etc/blkid.tab",
        "/etc/blkid.tab.old",
        "/dev/.blkid.tab",
        "/dev/.blkid.tab.old",
    ] {
        r.s.remove(p, "blkid cache")?;
    }
    Ok(())
}

/// `firewall-rules` (off by default: rules are usually the image's configuration): rules a
/// previous instance saved — iptables-save files, iptables-persistent's, firewalld's local
/// services and zones.
pub fn firewall_rules(r: &mut Run) -> anyhow::Result<()> {
    for p in ["/etc/sysconfig/iptables", "/etc/sysconfig/ip6tables", "/etc/iptables/rules.v4", "/etc/iptables/rules.v6"] {
        r.s.remove(p, "saved firewall rules")?;
    }
    for d in ["/etc/firewalld/services", "/etc/firewalld/zones"] {
        r.s.clear_dir(d, |_| false, "firewalld local rules")?;
    }
    Ok(())
}
