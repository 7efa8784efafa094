//! The catalogue of sealing operations: name, one-line description, default. The order here
//! is the order they run in: operations that run the image's own commands first, then the
//! file scrubs, `fs-uuids` last.

/// One named sealing operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Op {
    /// cloud-init instance state and logs.
    CloudInit,
    /// Locally added CA certificates.
    CaCertificates,
    /// Cloud agents' registrations.
    CloudAgents,
    /// Configuration-management agents' keys.
    CmAgents,
    /// Files copied in for provisioning only.
    ProvisionerFiles,
    /// SSH host keys (with a first-boot regenerator).
    SshHostkeys,
    /// Users' SSH private keys and authorized_keys.
    SshUserdir,
    /// Non-system user accounts.
    UserAccounts,
    /// /etc/machine-id.
    MachineId,
    /// Random seeds.
    RandomSeed,
    /// MAC bindings in network configuration.
    NetHwaddr,
    /// DHCP leases.
    DhcpLeases,
    /// Hostname and build entries in /etc/hosts.
    Hostname,
    /// Shell and tool histories.
    ShellHistory,
    /// Log files.
    Logfiles,
    /// /tmp and /var/tmp.
    TmpFiles,
    /// Package manager caches.
    PackageCache,
    /// Crash dumps.
    CrashData,
    /// Login records.
    Utmp,
    /// Backup copies of account and package files.
    BackupFiles,
    /// Users' crontabs and at jobs.
    CronSpool,
    /// PAM runtime data.
    PamData,
    /// Process accounting logs.
    PacctLog,
    /// SSSD caches.
    SssdDbLog,
    /// The Kerberos host keytab.
    KerberosHostkeytab,
    /// RPM database environment files.
    RpmDb,
    /// yum/dnf instance uuids.
    YumUuid,
    /// blkid device caches.
    BlkidTab,
    /// Firewall rules a previous instance saved.
    FirewallRules,
    /// Mailboxes.
    MailSpool,
    /// A DHCP server's leases.
    DhcpServerState,
    /// Dovecot's data.
    DovecotData,
    /// Samba's databases.
    SambaDbLog,
    /// The RHN system id.
    RhnSystemid,
    /// subscription-manager's identity.
    RhSubscriptionManager,
    /// The FreeIPA client enrolment.
    IpaClient,
    /// A Kerberos KDC's data.
    KerberosData,
    /// LVM's devices file.
    LvmSystemDevices,
    /// NetworkManager connection profiles.
    NetNmconn,
    /// LVM physical volume and volume group UUIDs.
    LvmUuids,
    /// Filesystem UUIDs.
    FsUuids,
}

impl Op {
    /// Every operation, in run order.
    pub const ALL: [Op; 41] = [
        Op::CloudInit,
        Op::CaCertificates,
        Op::CloudAgents,
        Op::CmAgents,
        Op::ProvisionerFiles,
        Op::SshHostkeys,
        Op::SshUserdir,
        Op::UserAccounts,
        Op::MachineId,
        Op::RandomSeed,
        Op::NetHwaddr,
        Op::DhcpLeases,
        Op::Hostname,
        Op::ShellHistory,
        Op::Logfiles,
        Op::TmpFiles,
        Op::PackageCache,
        Op::CrashData,
        Op::Utmp,
        Op::BackupFiles,
        Op::CronSpool,
        Op::PamData,
        Op::PacctLog,
        Op::SssdDbLog,
        Op::KerberosHostkeytab,
        Op::RpmDb,
        Op::YumUuid,
        Op::BlkidTab,
        Op::FirewallRules,
        Op::MailSpool,
        Op::DhcpServerState,
        Op::DovecotData,
        Op::SambaDbLog,
        Op::RhnSystemid,
        Op::RhSubscriptionManager,
        Op::IpaClient,
        Op::KerberosData,
        Op::LvmSystemDevices,
        Op::NetNmconn,
        Op::LvmUuids,
        Op::FsUuids,
    ];

    /// The name used in recipes, on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Op::CloudInit => "cloud-init",
            Op::CaCertificates => "ca-certificates",
            Op::CloudAgents => "cloud-agents",
            Op::CmAgents => "cm-agents",
            Op::ProvisionerFiles => "provisioner-files",
            Op::SshHostkeys => "ssh-hostkeys",
            Op::SshUserdir => "ssh-userdir",
            Op::UserAccounts => "user-accounts",
            Op::MachineId => "machine-id",
            Op::RandomSeed => "random-seed",
            Op::NetHwaddr => "net-hwaddr",
            Op::DhcpLeases => "dhcp-leases",
            Op::Hostname => "hostname",
            Op::ShellHistory => "shell-history",
            Op::Logfiles => "logfiles",
            Op::TmpFiles => "tmp-files",
            Op::PackageCache => "package-cache",
            Op::CrashData => "crash-data",
            Op::Utmp => "utmp",
            Op::BackupFiles => "backup-files",
            Op::CronSpool => "cron-spool",
            Op::PamData => "pam-data",
            Op::PacctLog => "pacct-log",
            Op::SssdDbLog => "sssd-db-log",
            Op::KerberosHostkeytab => "kerberos-hostkeytab",
            Op::RpmDb => "rpm-db",
            Op::YumUuid => "yum-uuid",
            Op::BlkidTab => "blkid-tab",
            Op::FirewallRules => "firewall-rules",
            Op::MailSpool => "mail-spool",
            Op::DhcpServerState => "dhcp-server-state",
            Op::DovecotData => "dovecot-data",
            Op::SambaDbLog => "samba-db-log",
            Op::RhnSystemid => "rhn-systemid",
            Op::RhSubscriptionManager => "rh-subscription-manager",
            Op::IpaClient => "ipa-client",
            Op::KerberosData => "kerberos-data",
            Op::LvmSystemDevices => "lvm-system-devices",
            Op::NetNmconn => "net-nmconn",
            Op::LvmUuids => "lvm-uuids",
            Op::FsUuids => "fs-uuids",
        }
    }

    /// One line for `imgforge seal --list`.
    pub fn description(self) -> &'static str {
        match self {
            Op::CloudInit => {
                "cloud-init instance state and logs, as `cloud-init clean --logs` (the image's own command when present); seed kept"
            }
            Op::CaCertificates => {
                "locally added CA certificates (/usr/local/share/ca-certificates, /etc/pki/ca-trust/source/anchors), bundle rebuilt"
            }
            Op::CloudAgents => "waagent state, amazon-ssm-agent registration, Google guest agent instance ids",
            Op::CmAgents => "Salt minion keys and minion_id, Puppet ssl dirs, Chef client.pem",
            Op::ProvisionerFiles => {
                "everything the build copied in for provisioning only (and [seal.provisioner-files] paths, [seal] scrub paths overwritten first)"
            }
            Op::SshHostkeys => "/etc/ssh/ssh_host_*; a first-boot regenerator is checked or installed (fails if none can be)",
            Op::SshUserdir => {
                "SSH private keys of root and users; the upstream's authorized_keys and known_hosts, the recipe's kept (options authorized_keys, known_hosts)"
            }
            Op::UserAccounts => "non-system accounts (uid 1000-59999) and their homes, except [seal.user-accounts] keep",
            Op::MachineId => "/etc/machine-id emptied, never deleted (option uninitialized); /var/lib/dbus/machine-id linked to it",
            Op::RandomSeed => "systemd and urandom random seeds, systemd credential secret",
            Op::NetHwaddr => {
                "MAC bindings in netplan, NetworkManager, ifcfg, systemd-networkd and udev rules, neutralised to match any NIC"
            }
            Op::DhcpLeases => "dhclient, dhcpcd, NetworkManager and systemd-networkd lease files",
            Op::Hostname => "/etc/hostname set to a neutral name (option name, default localhost); build entries in /etc/hosts",
            Op::ShellHistory => "bash, zsh, sh, fish, python, less, mysql, psql, sqlite, vim and wget histories of root and users",
            Op::Logfiles => "files under /var/log truncated (directories, owners, modes kept); rotated logs and journals removed",
            Op::TmpFiles => "contents of /tmp and /var/tmp",
            Op::PackageCache => "apt and dnf/yum caches (option apt_lists also removes /var/lib/apt/lists)",
            Op::CrashData => "/var/crash, systemd-coredump, apport and abrt dumps",
            Op::Utmp => "utmp, wtmp, btmp, lastlog and faillog emptied",
            Op::BackupFiles => {
                "/etc/passwd-, shadow-, group-, gshadow-, subuid-, subgid- and *.dpkg-old/-dist, *.rpmsave/-new, *.ucf-old/-dist, *~ under /etc"
            }
            Op::CronSpool => "users' crontabs and at jobs in /var/spool (spool directories and at's .SEQ kept; /etc/cron.d untouched)",
            Op::PamData => "pam_mount, pam_timestamp and faillock runtime data; /var/log/tallylog emptied",
            Op::PacctLog => "process accounting: /var/account/pacct and /var/log/account/pacct emptied, rotated ones removed",
            Op::SssdDbLog => "SSSD cache databases and memory caches (/var/lib/sss/db, mc) and its logs",
            Op::KerberosHostkeytab => "/etc/krb5.keytab, the host's Kerberos identity",
            Op::RpmDb => "the RPM database's Berkeley DB environment files (/var/lib/rpm/__db.*), rebuilt on use",
            Op::YumUuid => "the instance uuid yum and dnf send to mirrors (/var/lib/yum/uuid, /var/lib/dnf/uuid)",
            Op::BlkidTab => "blkid device caches (blkid.tab in /run, /var/run, /etc/blkid, /etc, /dev)",
            Op::FirewallRules => {
                "rules a previous instance saved: /etc/sysconfig/iptables, ip6tables, /etc/iptables/rules.v4/v6, firewalld local services and zones"
            }
            Op::MailSpool => "mailboxes in /var/mail and /var/spool/mail",
            Op::DhcpServerState => "ISC dhcpd leases emptied (dhcpd.leases, dhcpd6.leases), their backups and /var/lib/dhcpd state removed",
            Op::DovecotData => "Dovecot's instance data (/var/lib/dovecot)",
            Op::SambaDbLog => "Samba's databases and caches (/var/lib/samba, /var/cache/samba; secrets.tdb among them) and logs",
            Op::RhnSystemid => "the RHN Classic system id (/etc/sysconfig/rhn/systemid, osad-auth.conf)",
            Op::RhSubscriptionManager => {
                "subscription-manager's consumer identity and entitlements (/etc/pki/consumer, entitlement, /var/lib/rhsm)"
            }
            Op::IpaClient => "the FreeIPA client enrolment: /etc/ipa/ca.crt, default.conf, nssdb, /var/lib/ipa-client state",
            Op::KerberosData => "a Kerberos KDC's database and stash (/var/kerberos/krb5kdc, /var/lib/krb5kdc; kdc.conf, kadm5.acl kept)",
            Op::LvmSystemDevices => "LVM's devices file (/etc/lvm/devices/system.devices), naming the disks of the machine it was made on",
            Op::NetNmconn => "every NetworkManager connection profile (/etc/NetworkManager/system-connections)",
            Op::LvmUuids => "new LVM PV and VG UUIDs, written into the PV labels and metadata after unmount; names kept",
            Op::FsUuids => {
                "new ext2/3/4 and XFS UUIDs with fstab, GRUB, kernel command lines and ESP configs updated; refuses if another file names them"
            }
        }
    }

    /// Whether it runs unless disabled.
    pub fn default_on(self) -> bool {
        !matches!(self, Op::FsUuids | Op::UserAccounts | Op::CaCertificates | Op::FirewallRules | Op::KerberosData | Op::NetNmconn)
    }

    /// The operation called `name`.
    pub fn parse(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|o| o.name() == name)
    }

    /// Every name, comma-separated, for error messages.
    pub fn names() -> String {
        Op::ALL.map(Op::name).join(", ")
    }
}

/// The `imgforge seal --list` table.
pub fn listing() -> String {
    let mut out = String::new();
    for op in Op::ALL {
        let def = if op.default_on() { "on " } else { "off" };
        out.push_str(&format!("{:<18} {def}  {}\n", op.name(), op.description()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for op in Op::ALL {
            assert_eq!(Op::parse(op.name()), Some(op));
            assert!(seen.insert(op.name()));
        }
        assert_eq!(Op::parse("machine_id"), None);
        assert_eq!(serde_json::to_string(&Op::SshHostkeys).ok().as_deref(), Some("\"ssh-hostkeys\""));
    }

    #[test]
    fn listing_has_a_line_per_operation() {
        let l = listing();
        assert_eq!(l.lines().count(), Op::ALL.len());
        assert!(l.lines().any(|x| x.starts_with("fs-uuids") && x.contains(" off ")));
        assert!(l.lines().any(|x| x.starts_with("machine-id") && x.contains(" on ")));
    }
}
