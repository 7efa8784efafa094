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

/// `mail-spool`: mailboxes in /var/mail and /var/spool/mail (the spools kept).
pub fn mail_spool(r: &mut Run) -> anyhow::Result<()> {
    for d in ["/var/mail", "/var/spool/mail"] {
        r.s.clear_dir(d, |_| false, "mailbox")?;
    }
    Ok(())
}

/// `dhcp-server-state`: a DHCP server's leases: ISC dhcpd's lease files emptied (dhcpd will
/// not start without them), their backups and Red Hat's /var/lib/dhcpd contents removed.
pub fn dhcp_server_state(r: &mut Run) -> anyhow::Result<()> {
    for name in r.s.list("/var/lib/dhcp")? {
        let p = format!("/var/lib/dhcp/{name}");
        if name == "dhcpd.leases" || name == "dhcpd6.leases" {
            r.s.truncate(&p, "DHCP server leases")?;
        } else if name.starts_with("dhcpd.leases") || name.starts_with("dhcpd6.leases") {
            r.s.remove(&p, "DHCP server leases backup")?;
        }
    }
    for name in r.s.list("/var/lib/dhcpd")? {
        let p = format!("/var/lib/dhcpd/{name}");
        if name.ends_with(".leases") {
            r.s.truncate(&p, "DHCP server leases")?;
        } else {
            r.s.remove(&p, "DHCP server state")?;
        }
    }
    Ok(())
}

/// `dovecot-data`: Dovecot's instance data.
pub fn dovecot_data(r: &mut Run) -> anyhow::Result<()> {
    r.s.clear_dir("/var/lib/dovecot", |_| false, "Dovecot data")?;
    Ok(())
}

/// `samba-db-log`: Samba's databases (the machine account in secrets.tdb among them) and
/// caches; its logs go with `logfiles`.
pub fn samba_db_log(r: &mut Run) -> anyhow::Result<()> {
    for d in ["/var/lib/samba", "/var/cache/samba"] {
        for name in r.s.list(d)? {
            let p = format!("{d}/{name}");
            match r.s.kind_of(&p)? {
                Some(super::scrub::Kind::Dir) => r.s.clear_dir(&p, |_| false, "Samba database")?,
                Some(_) => {
                    r.s.remove(&p, "Samba database")?;
                }
                None => {}
            }
        }
    }
    r.s.clear_dir("/var/log/samba", |_| false, "Samba log")?;
    Ok(())
}

/// `rhn-systemid`: the RHN Classic system id.
pub fn rhn_systemid(r: &mut Run) -> anyhow::Result<()> {
    for p in ["/etc/sysconfig/rhn/systemid", "/etc/sysconfig/rhn/osad-auth.conf"] {
        r.s.remove(p, "RHN system id")?;
    }
    Ok(())
}

/// `rh-subscription-manager`: the consumer identity and entitlements of subscription-manager.
pub fn rh_subscription_manager(r: &mut Run) -> anyhow::Result<()> {
    for d in ["/etc/pki/consumer", "/etc/pki/entitlement", "/var/lib/rhsm/cache", "/var/lib/rhsm/facts", "/var/lib/rhsm/packages"] {
        r.s.clear_dir(d, |_| false, "subscription-manager identity")?;
    }
    Ok(())
}

/// `ipa-client`: the FreeIPA client enrolment (its CA, configuration, NSS database, saved
/// state); `kerberos-hostkeytab` takes the keytab.
pub fn ipa_client(r: &mut Run) -> anyhow::Result<()> {
    for p in ["/etc/ipa/ca.crt", "/etc/ipa/default.conf"] {
        r.s.remove(p, "IPA client enrolment")?;
    }
    for d in ["/etc/ipa/nssdb", "/var/lib/ipa-client/sysrestore", "/var/lib/ipa-client/pki"] {
        r.s.clear_dir(d, |_| false, "IPA client enrolment")?;
    }
    Ok(())
}

/// `kerberos-data` (off by default, as in virt-sysprep): a KDC's database and stash, its
/// configuration (`kdc.conf`, `kadm5.acl`) kept.
pub fn kerberos_data(r: &mut Run) -> anyhow::Result<()> {
    for d in ["/var/kerberos/krb5kdc", "/var/lib/krb5kdc"] {
        r.s.clear_dir(d, |n| n == "kdc.conf" || n == "kadm5.acl", "Kerberos KDC data")?;
    }
    Ok(())
}

/// `lvm-system-devices`: LVM's devices file, which names the disks of the machine it was
/// made on.
pub fn lvm_system_devices(r: &mut Run) -> anyhow::Result<()> {
    r.s.remove("/etc/lvm/devices/system.devices", "LVM devices file")?;
    Ok(())
}

/// `net-nmconn` (off by default, as in virt-sysprep: it removes the image's own network
/// configuration too): every NetworkManager connection profile.
pub fn net_nmconn(r: &mut Run) -> anyhow::Result<()> {
    r.s.clear_dir("/etc/NetworkManager/system-connections", |_| false, "NetworkManager connection")?;
    Ok(())
}
