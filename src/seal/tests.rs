//! Per-operation fixtures: a realistic base tree plus exactly what the operation removes; the
//! listing (kind, mode, owner, digest or link target) after the run must equal the listing
//! before with exactly the expected changes. And the hostile tree: every operation on an
//! image whose paths are symlinks to the host, host files untouched.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;

use sha2::Digest;

use super::catalog::Op;
use super::inventory::SshInventory;
use super::plan::{Context, SealPlan, UserKeyFiles};
use crate::chroot::resolve::Root;
use crate::progress::Events;

type Listing = BTreeMap<String, String>;

fn listing(dir: &Path) -> Listing {
    let mut out = Listing::new();
    fn walk(base: &Path, dir: &Path, out: &mut Listing) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let rel = format!("/{}", p.strip_prefix(base).unwrap().display());
            let what = if md.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&p).unwrap().display())
            } else if md.is_dir() {
                walk(base, &p, out);
                "dir".to_string()
            } else {
                format!("file {}", hex::encode(sha2::Sha256::digest(std::fs::read(&p).unwrap())))
            };
            out.insert(rel, format!("{what} {:o} {}:{}", md.mode() & 0o7777, md.uid(), md.gid()));
        }
    }
    walk(dir, dir, &mut out);
    out
}

fn put(root: &Path, path: &str, content: &str) {
    let p = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, content).unwrap();
}

fn put_mode(root: &Path, path: &str, content: &str, mode: u32) {
    put(root, path, content);
    std::fs::set_permissions(root.join(path.trim_start_matches('/')), std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mkdir(root: &Path, path: &str) {
    std::fs::create_dir_all(root.join(path.trim_start_matches('/'))).unwrap();
}

/// What every fixture has and no operation may touch.
fn base_tree(root: &Path) {
    put(root, "/etc/passwd", "root:x:0:0:root:/root:/bin/bash\ndebian:x:1000:1000::/home/debian:/bin/bash\n");
    put(root, "/etc/group", "root:x:0:\nsudo:x:27:debian\ndebian:x:1000:\n");
    put(root, "/etc/hosts", "127.0.0.1 localhost\n::1 ip6-localhost ip6-loopback\n");
    put(root, "/etc/hostname", "localhost\n");
    put(root, "/etc/ssh/sshd_config", "PermitRootLogin no\n");
    put(root, "/etc/fstab", "LABEL=root / ext4 defaults 0 1\n");
    put(root, "/usr/sbin/sshd", "");
    put(root, "/usr/lib/systemd/systemd", "");
    put(root, "/home/debian/.bashrc", "alias ll='ls -l'\n");
    put(root, "/home/debian/.ssh/config", "Host *\n");
    put(root, "/root/.profile", "PATH=/usr/bin\n");
    put(root, "/var/lib/cloud/seed/nocloud/meta-data", "instance-id: seed\n");
    put(root, "/etc/systemd/network/10-dhcp.network", "[Match]\nName=en*\n\n[Network]\nDHCP=yes\n");
    put(
        root,
        "/etc/netplan/01-dhcp.yaml",
        "network:\n  version: 2\n  ethernets:\n    all:\n      match: {name: \"en*\"}\n      dhcp4: true\n",
    );
    put(root, "/var/cache/apt/archives/lock", "");
    put(root, "/etc/default/grub", "GRUB_TIMEOUT=1\n");
    for d in ["/tmp", "/var/tmp", "/var/log/apt", "/var/crash", "/etc/systemd/system/multi-user.target.wants"] {
        mkdir(root, d);
    }
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
}

fn seal(root: &Path, plan: &SealPlan, cx: &Context) -> super::SealReport {
    let r = Root::open(root).unwrap();
    super::run(&r, plan, cx, &Events::new(false)).unwrap()
}

fn only(op: Op) -> SealPlan {
    SealPlan { enabled: BTreeSet::from([op]), ..SealPlan::default() }
}

/// Plants, runs `op` alone, and checks that the listing changed exactly as `expect` says
/// (`None` = the path is gone; `Some(f)` = its listing entry is `f(listing of the result)`).
fn check(op: Op, plan: SealPlan, plant: impl Fn(&Path), changed: &[(&str, bool)]) -> super::SealReport {
    let d = tempfile::tempdir().unwrap();
    base_tree(d.path());
    let untouched = listing(d.path());
    plant(d.path());
    let before = listing(d.path());
    let report = seal(d.path(), &SealPlan { enabled: BTreeSet::from([op]), ..plan }, &Context::default());
    let after = listing(d.path());
    // Everything of the base tree is as it was, unless listed as changed.
    for (p, v) in &untouched {
        if !changed.iter().any(|(c, _)| c == p) {
            assert_eq!(after.get(p), Some(v), "{op:?} touched {p}");
        }
    }
    // Planted paths: gone, or changed, as listed; nothing else planted survives unchanged
    // unless it is a parent directory kept on purpose.
    for (p, v) in &before {
        if untouched.contains_key(p) {
            continue;
        }
        match changed.iter().find(|(c, _)| c == p) {
            Some((_, true)) => assert!(after.contains_key(p) && after.get(p) != Some(v), "{op:?}: {p} should have changed"),
            Some((_, false)) => assert_eq!(after.get(p), Some(v), "{op:?}: {p} should be kept"),
            None => assert!(!after.contains_key(p), "{op:?} left {p}"),
        }
    }
    // Nothing new beyond what is listed.
    for p in after.keys() {
        assert!(before.contains_key(p) || changed.iter().any(|(c, _)| c == p), "{op:?} created {p}");
    }
    // The report names every path that went or changed.
    for (p, _) in before.iter().filter(|(p, v)| after.get(*p) != Some(*v)) {
        assert!(report.actions.iter().any(|a| &a.path == p), "{op:?}: {p} changed but is not in the report");
    }
    report
}

#[test]
fn ssh_hostkeys_removed_and_regenerator_installed() {
    let r = check(
        Op::SshHostkeys,
        SealPlan::default(),
        |d| {
            put_mode(d, "/etc/ssh/ssh_host_ed25519_key", "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n", 0o600);
            put(d, "/etc/ssh/ssh_host_ed25519_key.pub", "ssh-ed25519 AAAA root@build\n");
            put_mode(d, "/etc/ssh/ssh_host_rsa_key", "k", 0o600);
        },
        &[(super::ssh::KEYGEN_UNIT_PATH, true), ("/etc/systemd/system/multi-user.target.wants/imgforge-ssh-keygen.service", true)],
    );
    assert_eq!(r.ssh_regenerators, [super::ssh::KEYGEN_UNIT_PATH]);
}

#[test]
fn ssh_hostkeys_fails_when_nothing_regenerates() {
    let d = tempfile::tempdir().unwrap();
    base_tree(d.path());
    let plan = SealPlan { install_keygen_unit: false, ..only(Op::SshHostkeys) };
    let e = super::run(&Root::open(d.path()).unwrap(), &plan, &Context::default(), &Events::new(false)).unwrap_err();
    assert!(format!("{e:#}").contains("nothing in the image would regenerate SSH host keys"), "{e:#}");
    // A RHEL-like image regenerates its own.
    put(d.path(), "/usr/lib/systemd/system/sshd-keygen@.service", "");
    let r = seal(d.path(), &plan, &Context::default());
    assert_eq!(r.ssh_regenerators, ["/usr/lib/systemd/system/sshd-keygen@.service"]);
}

#[test]
fn ssh_userdir() {
    let plant = |d: &Path| {
        put_mode(d, "/root/.ssh/id_ed25519", "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n", 0o600);
        put(d, "/root/.ssh/id_ed25519.pub", "ssh-ed25519 AAAA root@build\n");
        put(d, "/root/.ssh/authorized_keys", "ssh-ed25519 AAAA ci\n");
        put(d, "/home/debian/.ssh/known_hosts", "github.com ssh-ed25519 AAAA\n");
        put(d, "/home/debian/.ssh/deploy.pem", "-----BEGIN RSA PRIVATE KEY-----\nMII\n");
        put(d, "/home/debian/.ssh/authorized_keys", "ssh-ed25519 AAAA ci\n");
    };
    // Outside a build (no inventory) every one counts as the upstream's.
    let r = check(Op::SshUserdir, SealPlan::default(), plant, &[("/root/.ssh", false)]);
    assert!(r.notes.iter().any(|n| n.contains("sealed outside a build")), "{:?}", r.notes);
    let keep = SealPlan { authorized_keys: UserKeyFiles::Keep, ..SealPlan::default() };
    let r = check(
        Op::SshUserdir,
        keep,
        plant,
        &[("/root/.ssh", false), ("/root/.ssh/authorized_keys", false), ("/home/debian/.ssh/authorized_keys", false)],
    );
    assert_eq!(r.kept.len(), 2, "{:?}", r.kept);
}

/// In a build: the upstream's authorized_keys and known_hosts go, the recipe's stay (listed as
/// kept), a file the recipe appended to loses the upstream's lines; private keys go whatever
/// their origin; `remove-all` removes every one.
#[test]
fn ssh_userdir_keeps_what_the_recipe_added() {
    let d = tempfile::tempdir().unwrap();
    base_tree(d.path());
    put(d.path(), "/root/.ssh/authorized_keys", "ssh-ed25519 AAAA old-instance\n");
    put(d.path(), "/home/debian/.ssh/known_hosts", "github.com ssh-ed25519 AAAA\n");
    put(d.path(), "/home/debian/.ssh/authorized_keys", "ssh-ed25519 AAAA old-instance\n");
    let root = Root::open(d.path()).unwrap();
    let cx = Context { ssh_inventory: Some(SshInventory::take(&root).unwrap()), ..Context::default() };
    // What the provisioners do.
    put(d.path(), "/home/demo/.ssh/authorized_keys", "ssh-ed25519 DDDD demo\n");
    put(d.path(), "/home/demo/.ssh/known_hosts", "git.example ssh-ed25519 EEEE\n");
    put_mode(d.path(), "/home/demo/.ssh/id_ed25519", "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n", 0o600);
    put(d.path(), "/home/debian/.ssh/authorized_keys", "ssh-ed25519 AAAA old-instance\nssh-ed25519 FFFF ops\n");
    let r = seal(d.path(), &only(Op::SshUserdir), &cx);
    let exists = |p: &str| d.path().join(p.trim_start_matches('/')).exists();
    assert!(!exists("/root/.ssh/authorized_keys") && !exists("/home/debian/.ssh/known_hosts"));
    assert!(!exists("/home/demo/.ssh/id_ed25519"));
    assert_eq!(std::fs::read_to_string(d.path().join("home/demo/.ssh/authorized_keys")).unwrap(), "ssh-ed25519 DDDD demo\n");
    assert_eq!(std::fs::read_to_string(d.path().join("home/demo/.ssh/known_hosts")).unwrap(), "git.example ssh-ed25519 EEEE\n");
    assert_eq!(std::fs::read_to_string(d.path().join("home/debian/.ssh/authorized_keys")).unwrap(), "ssh-ed25519 FFFF ops\n");
    let reason = |p: &str| r.kept.iter().find(|k| k.path == p).map(|k| k.reason.clone()).unwrap_or_default();
    assert_eq!(reason("/home/demo/.ssh/authorized_keys"), "created by the recipe's provisioners");
    assert!(reason("/home/debian/.ssh/authorized_keys").contains("the 1 line(s) the upstream had were removed"), "{:?}", r.kept);
    let detail = |p: &str| r.actions.iter().find(|a| a.path == p).map(|a| a.detail.clone()).unwrap_or_default();
    assert_eq!(detail("/root/.ssh/authorized_keys"), "authorized keys that came with the upstream image");
    assert_eq!(detail("/home/demo/.ssh/id_ed25519"), "user key made during provisioning");
    assert!(r.text().contains("  kept /home/demo/.ssh/authorized_keys  # created by the recipe's provisioners"), "{}", r.text());

    let all = SealPlan { authorized_keys: UserKeyFiles::RemoveAll, ..only(Op::SshUserdir) };
    let r = seal(d.path(), &all, &cx);
    assert!(!exists("/home/demo/.ssh/authorized_keys") && !exists("/home/debian/.ssh/authorized_keys"));
    assert!(exists("/home/demo/.ssh/known_hosts"));
    assert_eq!(r.kept.len(), 1, "{:?}", r.kept);
}

#[test]
fn machine_id_emptied_never_deleted() {
    let plant = |d: &Path| {
        put_mode(d, "/etc/machine-id", "0123456789abcdef0123456789abcdef\n", 0o444);
        put(d, "/var/lib/dbus/machine-id", "0123456789abcdef0123456789abcdef\n");
    };
    check(
        Op::MachineId,
        SealPlan::default(),
        plant,
        &[("/etc/machine-id", true), ("/var/lib/dbus", false), ("/var/lib/dbus/machine-id", true)],
    );
    let d = tempfile::tempdir().unwrap();
    base_tree(d.path());
    plant(d.path());
    seal(d.path(), &SealPlan { machine_id_uninitialized: true, ..only(Op::MachineId) }, &Context::default());
    assert_eq!(std::fs::read_to_string(d.path().join("etc/machine-id")).unwrap(), "uninitialized\n");
    assert_eq!(std::fs::read_link(d.path().join("var/lib/dbus/machine-id")).unwrap(), Path::new("/etc/machine-id"));
    seal(d.path(), &only(Op::MachineId), &Context::default());
    let md = std::fs::metadata(d.path().join("etc/machine-id")).unwrap();
    assert_eq!((md.len(), md.mode() & 0o777), (0, 0o444));
}

#[test]
fn random_seed() {
    check(
        Op::RandomSeed,
        SealPlan::default(),
        |d| {
            put(d, "/var/lib/systemd/random-seed", "seed");
            put(d, "/var/lib/systemd/credential.secret", "secret");
            put(d, "/var/lib/urandom/random-seed", "seed");
        },
        &[("/var/lib/systemd", false), ("/var/lib/urandom", false)],
    );
}

#[test]
fn dhcp_leases() {
    check(
        Op::DhcpLeases,
        SealPlan::default(),
        |d| {
            put(d, "/var/lib/dhcp/dhclient.eth0.leases", "lease { fixed-address 10.0.2.15; }\n");
            put(d, "/var/lib/dhcp/dhcpd.leases", "server state\n");
            put(d, "/var/lib/NetworkManager/internal-1234-eth0.lease", "ADDRESS=10.0.2.15\n");
            put(d, "/var/lib/NetworkManager/secret_key", "k");
            put(d, "/var/lib/NetworkManager/NetworkManager-intern.conf", "x");
            put(d, "/var/lib/dhcpcd/eth0.lease", "x");
            put(d, "/var/lib/systemd/network/duid", "x");
        },
        &[
            ("/var/lib/dhcp", false),
            ("/var/lib/dhcp/dhcpd.leases", false),
            ("/var/lib/NetworkManager", false),
            ("/var/lib/NetworkManager/NetworkManager-intern.conf", false),
            ("/var/lib/dhcpcd", false),
            ("/var/lib/systemd", false),
            ("/var/lib/systemd/network", false),
        ],
    );
}

#[test]
fn cloud_init_state_without_the_image_command() {
    check(
        Op::CloudInit,
        SealPlan::default(),
        |d| {
            put(d, "/var/lib/cloud/instances/iid-1/sem/config_ssh", "1");
            put(d, "/var/lib/cloud/data/instance-id", "iid-1\n");
            symlink("/var/lib/cloud/instances/iid-1", d.join("var/lib/cloud/instance")).unwrap();
            put(d, "/var/log/cloud-init.log", "log\n");
            put(d, "/var/log/cloud-init-output.log", "log\n");
        },
        &[("/var/lib/cloud", false)],
    );
}

#[test]
fn cloud_agents() {
    check(
        Op::CloudAgents,
        SealPlan::default(),
        |d| {
            put(d, "/var/lib/waagent/ovf-env.xml", "<x/>");
            put(d, "/var/lib/waagent/provisioned", "");
            put(d, "/var/lib/amazon/ssm/registration", "{}");
            put(d, "/var/lib/amazon/ssm/i-0123/document/state", "{}");
            put(d, "/etc/google_instance_id", "123\n");
        },
        &[("/var/lib/waagent", false), ("/var/lib/amazon", false), ("/var/lib/amazon/ssm", false)],
    );
}

#[test]
fn cm_agents() {
    check(
        Op::CmAgents,
        SealPlan::default(),
        |d| {
            put(d, "/etc/salt/pki/minion/minion.pem", "-----BEGIN RSA PRIVATE KEY-----\n");
            put(d, "/etc/salt/pki/minion/minion.pub", "pub");
            put(d, "/etc/salt/minion_id", "web-1\n");
            put(d, "/etc/salt/minion", "file_client: local\n");
            put(d, "/var/cache/salt/minion/pillar/x", "secret");
            put(d, "/etc/puppetlabs/puppet/ssl/private_keys/web.pem", "k");
            put(d, "/etc/puppetlabs/puppet/puppet.conf", "[main]\n");
            put(d, "/etc/chef/client.pem", "k");
            put(d, "/etc/chef/client.rb", "log_level :info\n");
        },
        &[
            ("/etc/salt", false),
            ("/etc/salt/pki", false),
            ("/etc/salt/pki/minion", false),
            ("/etc/salt/minion", false),
            ("/var/cache/salt", false),
            ("/etc/puppetlabs", false),
            ("/etc/puppetlabs/puppet", false),
            ("/etc/puppetlabs/puppet/puppet.conf", false),
            ("/etc/chef", false),
            ("/etc/chef/client.rb", false),
        ],
    );
}

#[test]
fn provisioner_files() {
    let plan = SealPlan { provisioner_paths: vec!["/opt/build".into()], ..SealPlan::default() };
    let d = tempfile::tempdir().unwrap();
    base_tree(d.path());
    put(d.path(), "/opt/build/playbook.yml", "x");
    put(d.path(), "/opt/app/keep", "x");
    put(d.path(), "/root/.ansible/tmp/x", "x");
    put(d.path(), "/srv/ctx/file", "x");
    let cx = Context { provisioner_paths: vec!["/srv/ctx".into()], ..Context::default() };
    seal(d.path(), &SealPlan { enabled: BTreeSet::from([Op::ProvisionerFiles]), ..plan }, &cx);
    assert!(!d.path().join("opt/build").exists() && !d.path().join("root/.ansible").exists() && !d.path().join("srv/ctx").exists());
    assert!(d.path().join("opt/app/keep").exists() && d.path().join("srv").exists());
}

/// A removed secret, and a `[seal] scrub` path, are overwritten before they go: a hard link
/// kept outside the image root still reaches the inode and reads zeros; an ordinary removed
/// file is not overwritten.
#[test]
fn secrets_and_scrub_paths_are_overwritten_before_removal() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("img");
    base_tree(&img);
    let key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n-----END OPENSSH PRIVATE KEY-----\n";
    put_mode(&img, "/root/.ssh/id_ed25519", key, 0o600);
    put(&img, "/opt/app/token", "not a recognisable secret, but listed\n");
    put(&img, "/opt/build/notes.txt", "plain provisioning file\n");
    for (inside, outside) in [("root/.ssh/id_ed25519", "key"), ("opt/app/token", "token"), ("opt/build/notes.txt", "notes")] {
        std::fs::hard_link(img.join(inside), d.path().join(outside)).unwrap();
    }
    let plan = SealPlan {
        enabled: BTreeSet::from([Op::SshUserdir, Op::ProvisionerFiles]),
        provisioner_paths: vec!["/opt/build".into()],
        scrub: vec!["/opt/app/token".into(), "/opt/missing".into()],
        ..SealPlan::default()
    };
    let r = seal(&img, &plan, &Context::default());
    assert!(!img.join("root/.ssh/id_ed25519").exists() && !img.join("opt/app/token").exists() && !img.join("opt/build").exists());
    assert_eq!(std::fs::read(d.path().join("key")).unwrap(), vec![0u8; key.len()]);
    assert_eq!(std::fs::read(d.path().join("token")).unwrap(), vec![0u8; 38]);
    assert_eq!(std::fs::read_to_string(d.path().join("notes")).unwrap(), "plain provisioning file\n");
    let overwritten: Vec<&str> =
        r.actions.iter().filter(|a| a.detail.contains("overwritten with zeros first")).map(|a| a.path.as_str()).collect();
    assert_eq!(overwritten, ["/opt/app/token", "/root/.ssh/id_ed25519"], "provisioner-files runs before ssh-userdir");
    assert!(r.notes.iter().any(|n| n.contains("/opt/missing is not in the image")), "{:?}", r.notes);
}

#[test]
fn shell_history() {
    check(
        Op::ShellHistory,
        SealPlan::default(),
        |d| {
            put(d, "/root/.bash_history", "ls\n");
            put(d, "/root/.python_history", "1+1\n");
            put(d, "/home/debian/.zsh_history", "ls\n");
            put(d, "/home/debian/.lesshst", "x");
            put(d, "/home/debian/.psql_history", "select 1;\n");
            put(d, "/home/debian/.mysql_history", "x");
            put(d, "/home/debian/.local/share/fish/fish_history", "x");
        },
        &[("/home/debian/.local", false), ("/home/debian/.local/share", false), ("/home/debian/.local/share/fish", false)],
    );
}

#[test]
fn logfiles_truncated_rotated_removed() {
    let r = check(
        Op::Logfiles,
        SealPlan::default(),
        |d| {
            put_mode(d, "/var/log/syslog", "Jan 3 build-host kernel: x\n", 0o640);
            put(d, "/var/log/syslog.1", "old\n");
            put(d, "/var/log/syslog.2.gz", "gz");
            put(d, "/var/log/apt/history.log", "Start-Date: x\n");
            put(d, "/var/log/journal/0123456789abcdef0123456789abcdef/system.journal", "j");
            put(d, "/var/log/wtmp", "utmp records belong to the utmp operation");
        },
        &[("/var/log/syslog", true), ("/var/log/apt/history.log", true), ("/var/log/journal", false), ("/var/log/wtmp", false)],
    );
    assert!(r.actions.iter().any(|a| a.path == "/var/log/syslog" && a.action == super::scrub::ActionKind::Truncated));
}

#[test]
fn tmp_files_keep_the_directories() {
    check(
        Op::TmpFiles,
        SealPlan::default(),
        |d| {
            put(d, "/tmp/build.sh", "x");
            put(d, "/tmp/dir/x", "x");
            put(d, "/var/tmp/y", "y");
        },
        &[],
    );
}

#[test]
fn package_cache() {
    let plant = |d: &Path| {
        put(d, "/var/cache/apt/archives/curl_8.0_amd64.deb", "deb");
        put(d, "/var/cache/apt/archives/partial/x.deb", "deb");
        put(d, "/var/cache/apt/pkgcache.bin", "bin");
        put(d, "/var/cache/dnf/repo/x", "x");
        put(d, "/var/lib/apt/lists/deb.debian.org_dists_bookworm_InRelease", "x");
    };
    check(
        Op::PackageCache,
        SealPlan::default(),
        plant,
        &[
            ("/var/cache/apt/archives/partial", false),
            ("/var/cache/dnf", false),
            ("/var/lib/apt", false),
            ("/var/lib/apt/lists", false),
            ("/var/lib/apt/lists/deb.debian.org_dists_bookworm_InRelease", false),
        ],
    );
    let lists = SealPlan { apt_lists: true, ..SealPlan::default() };
    check(
        Op::PackageCache,
        lists,
        plant,
        &[("/var/cache/apt/archives/partial", false), ("/var/cache/dnf", false), ("/var/lib/apt", false), ("/var/lib/apt/lists", false)],
    );
}

#[test]
fn crash_data() {
    check(
        Op::CrashData,
        SealPlan::default(),
        |d| {
            put(d, "/var/crash/_usr_bin_x.0.crash", "x");
            put(d, "/var/lib/systemd/coredump/core.x.zst", "x");
        },
        &[("/var/lib/systemd", false), ("/var/lib/systemd/coredump", false)],
    );
}

#[test]
fn instance_state_of_the_rest_of_the_catalogue() {
    check(
        Op::CronSpool,
        SealPlan::default(),
        |d| {
            put(d, "/var/spool/cron/crontabs/debian", "* * * * * x");
            put(d, "/var/spool/cron/atjobs/a0001", "job");
            put(d, "/var/spool/cron/atjobs/.SEQ", "1");
            put(d, "/var/spool/cron/root", "* * * * * rhel-style");
            put(d, "/etc/cron.d/shipped", "* * * * * root x");
        },
        &[
            ("/var/spool", false),
            ("/var/spool/cron", false),
            ("/var/spool/cron/crontabs", false),
            ("/var/spool/cron/atjobs", false),
            ("/var/spool/cron/atjobs/.SEQ", false),
            ("/etc/cron.d", false),
            ("/etc/cron.d/shipped", false),
        ],
    );
    check(
        Op::PamData,
        SealPlan::default(),
        |d| {
            put(d, "/var/run/faillock/debian", "x");
            put(d, "/var/log/tallylog", "tally");
        },
        &[("/var/run", false), ("/var/run/faillock", false), ("/var/log/tallylog", true)],
    );
    check(
        Op::PacctLog,
        SealPlan::default(),
        |d| {
            put(d, "/var/log/account/pacct", "acct");
            put(d, "/var/log/account/pacct.1.gz", "old");
        },
        &[("/var/log/account", false), ("/var/log/account/pacct", true)],
    );
    check(
        Op::SssdDbLog,
        SealPlan::default(),
        |d| {
            put(d, "/var/lib/sss/db/cache_example.com.ldb", "cache");
            put(d, "/var/lib/sss/mc/passwd", "mc");
        },
        &[("/var/lib/sss", false), ("/var/lib/sss/db", false), ("/var/lib/sss/mc", false)],
    );
    check(Op::KerberosHostkeytab, SealPlan::default(), |d| put(d, "/etc/krb5.keytab", "keytab"), &[]);
    check(
        Op::RpmDb,
        SealPlan::default(),
        |d| {
            put(d, "/var/lib/rpm/__db.001", "env");
            put(d, "/var/lib/rpm/Packages", "db");
        },
        &[("/var/lib/rpm", false), ("/var/lib/rpm/Packages", false)],
    );
    check(
        Op::YumUuid,
        SealPlan::default(),
        |d| {
            put(d, "/var/lib/yum/uuid", "1b4e28ba-2fa1-11d2-883f-0016d3cca427");
            put(d, "/var/lib/dnf/uuid", "6ba7b810-9dad-11d1-80b4-00c04fd430c8");
        },
        &[("/var/lib/yum", false), ("/var/lib/dnf", false)],
    );
    check(Op::BlkidTab, SealPlan::default(), |d| put(d, "/etc/blkid/blkid.tab", "<device>"), &[("/etc/blkid", false)]);
    check(
        Op::FirewallRules,
        SealPlan::default(),
        |d| {
            put(d, "/etc/iptables/rules.v4", "*filter");
            put(d, "/etc/firewalld/zones/public.xml", "<zone/>");
            put(d, "/etc/firewalld/firewalld.conf", "DefaultZone=public");
        },
        &[("/etc/iptables", false), ("/etc/firewalld", false), ("/etc/firewalld/zones", false), ("/etc/firewalld/firewalld.conf", false)],
    );
    assert!(!Op::FirewallRules.default_on(), "saved rules are usually the image's configuration");
}

#[test]
fn service_identities_of_the_rest_of_the_catalogue() {
    check(Op::MailSpool, SealPlan::default(), |d| put(d, "/var/mail/debian", "From x"), &[("/var/mail", false)]);
    check(
        Op::DhcpServerState,
        SealPlan::default(),
        |d| {
            put(d, "/var/lib/dhcp/dhcpd.leases", "lease 10.0.0.5 {}");
            put(d, "/var/lib/dhcp/dhcpd.leases~", "lease 10.0.0.4 {}");
            put(d, "/var/lib/dhcp/dhclient.eth0.leases", "client");
        },
        &[("/var/lib/dhcp", false), ("/var/lib/dhcp/dhcpd.leases", true), ("/var/lib/dhcp/dhclient.eth0.leases", false)],
    );
    check(Op::DovecotData, SealPlan::default(), |d| put(d, "/var/lib/dovecot/instances", "x"), &[("/var/lib/dovecot", false)]);
    check(
        Op::SambaDbLog,
        SealPlan::default(),
        |d| {
            put(d, "/var/lib/samba/private/secrets.tdb", "machine account");
            put(d, "/var/cache/samba/gencache.tdb", "cache");
        },
        &[("/var/lib/samba", false), ("/var/lib/samba/private", false), ("/var/cache", false), ("/var/cache/samba", false)],
    );
    check(
        Op::RhSubscriptionManager,
        SealPlan::default(),
        |d| {
            put(d, "/etc/pki/consumer/cert.pem", "consumer");
            put(d, "/etc/pki/entitlement/1.pem", "entitlement");
        },
        &[("/etc/pki", false), ("/etc/pki/consumer", false), ("/etc/pki/entitlement", false)],
    );
    check(
        Op::RhnSystemid,
        SealPlan::default(),
        |d| put(d, "/etc/sysconfig/rhn/systemid", "<id/>"),
        &[("/etc/sysconfig", false), ("/etc/sysconfig/rhn", false)],
    );
    check(
        Op::IpaClient,
        SealPlan::default(),
        |d| {
            put(d, "/etc/ipa/default.conf", "[global]");
            put(d, "/var/lib/ipa-client/sysrestore/sysrestore.state", "x");
        },
        &[("/etc/ipa", false), ("/var/lib/ipa-client", false), ("/var/lib/ipa-client/sysrestore", false)],
    );
    check(
        Op::KerberosData,
        SealPlan::default(),
        |d| {
            put(d, "/var/kerberos/krb5kdc/principal", "db");
            put(d, "/var/kerberos/krb5kdc/kdc.conf", "conf");
        },
        &[("/var/kerberos", false), ("/var/kerberos/krb5kdc", false), ("/var/kerberos/krb5kdc/kdc.conf", false)],
    );
    check(
        Op::LvmSystemDevices,
        SealPlan::default(),
        |d| put(d, "/etc/lvm/devices/system.devices", "IDTYPE=wwid"),
        &[("/etc/lvm", false), ("/etc/lvm/devices", false)],
    );
    check(
        Op::NetNmconn,
        SealPlan::default(),
        |d| put(d, "/etc/NetworkManager/system-connections/Wired.nmconnection", "[connection]"),
        &[("/etc/NetworkManager", false), ("/etc/NetworkManager/system-connections", false)],
    );
    assert!(!Op::KerberosData.default_on() && !Op::NetNmconn.default_on());
}

#[test]
fn utmp_emptied() {
    check(
        Op::Utmp,
        SealPlan::default(),
        |d| {
            put_mode(d, "/var/log/wtmp", "records", 0o664);
            put_mode(d, "/var/log/btmp", "records", 0o660);
            put(d, "/var/log/lastlog", "records");
        },
        &[("/var/log/wtmp", true), ("/var/log/btmp", true), ("/var/log/lastlog", true)],
    );
}

#[test]
fn hostname_and_hosts() {
    let d = tempfile::tempdir().unwrap();
    base_tree(d.path());
    put(d.path(), "/etc/hostname", "upstream-builder\n");
    put(d.path(), "/etc/hosts", "127.0.0.1 localhost\n127.0.1.1 upstream-builder\n10.9.9.9 ci-runner-3.example ci-runner-3\n");
    let before = listing(d.path());
    let cx = Context { build_hostname: Some("ci-runner-3".into()), ..Context::default() };
    let r = seal(d.path(), &only(Op::Hostname), &cx);
    assert_eq!(std::fs::read_to_string(d.path().join("etc/hostname")).unwrap(), "localhost\n");
    assert_eq!(std::fs::read_to_string(d.path().join("etc/hosts")).unwrap(), "127.0.0.1 localhost\n");
    let after = listing(d.path());
    let diff: Vec<&String> = before.keys().filter(|k| before.get(*k) != after.get(*k)).collect();
    assert_eq!(diff, ["/etc/hostname", "/etc/hosts"]);
    assert_eq!(r.actions.len(), 2);
}

#[test]
fn backup_files() {
    check(
        Op::BackupFiles,
        SealPlan::default(),
        |d| {
            put(d, "/etc/passwd-", "old");
            put(d, "/etc/shadow-", "old");
            put(d, "/etc/ssh/sshd_config.ucf-old", "old");
            put(d, "/etc/apt/sources.list.dpkg-old", "old");
            put(d, "/etc/fstab~", "old");
        },
        &[("/etc/apt", false)],
    );
}

#[test]
fn user_accounts() {
    let d = tempfile::tempdir().unwrap();
    base_tree(d.path());
    put(d.path(), "/etc/shadow", "root:*:19000::::::\ndebian:*:19000::::::\n");
    put(d.path(), "/var/mail/debian", "mail");
    seal(d.path(), &only(Op::UserAccounts), &Context::default());
    assert_eq!(std::fs::read_to_string(d.path().join("etc/passwd")).unwrap(), "root:x:0:0:root:/root:/bin/bash\n");
    assert_eq!(std::fs::read_to_string(d.path().join("etc/group")).unwrap(), "root:x:0:\nsudo:x:27:\n");
    assert_eq!(std::fs::read_to_string(d.path().join("etc/shadow")).unwrap(), "root:*:19000::::::\n");
    assert!(!d.path().join("home/debian").exists() && !d.path().join("var/mail/debian").exists());
}

#[test]
fn dry_run_changes_nothing_and_lists_the_plan() {
    let d = tempfile::tempdir().unwrap();
    base_tree(d.path());
    put(d.path(), "/etc/ssh/ssh_host_rsa_key", "k");
    put(d.path(), "/root/.bash_history", "ls\n");
    put(d.path(), "/var/log/syslog", "x\n");
    let before = listing(d.path());
    let r = seal(d.path(), &SealPlan::default(), &Context { dry_run: true, ..Context::default() });
    assert_eq!(listing(d.path()), before);
    let text = r.text();
    for want in ["would remove /etc/ssh/ssh_host_rsa_key", "would remove /root/.bash_history", "would truncate /var/log/syslog"] {
        assert!(text.contains(want), "{text}");
    }
}

#[test]
fn fs_uuids_updates_every_reference_or_refuses() {
    let old = "0a1b2c3d-0000-4000-8000-000000000001";
    let d = tempfile::tempdir().unwrap();
    base_tree(d.path());
    put(d.path(), "/etc/fstab", &format!("UUID={old} / ext4 defaults 0 1\n"));
    put(d.path(), "/boot/grub/grub.cfg", &format!("search --fs-uuid --set=root {}\nlinux /vmlinuz root=UUID={old}\n", old.to_uppercase()));
    put(d.path(), "/etc/app.conf", &format!("disk={old}\n"));
    let fs = super::Filesystem {
        partition: 1,
        start: 1 << 20,
        size: 1 << 30,
        fstype: "ext4".into(),
        uuid: old.into(),
        target: Some("/".into()),
    };
    let cx = Context { filesystems: vec![fs], ..Context::default() };
    let before = listing(d.path());
    let e = super::run(&Root::open(d.path()).unwrap(), &only(Op::FsUuids), &cx, &Events::new(false)).unwrap_err();
    assert!(format!("{e:#}").contains("refusing") && format!("{e:#}").contains("/etc/app.conf"), "{e:#}");
    assert_eq!(listing(d.path()), before, "a refusal wrote something");
    std::fs::remove_file(d.path().join("etc/app.conf")).unwrap();
    let r = seal(d.path(), &only(Op::FsUuids), &cx);
    let new = &r.fs_uuids[0].new;
    assert_ne!(new, old);
    assert_eq!(std::fs::read_to_string(d.path().join("etc/fstab")).unwrap(), format!("UUID={new} / ext4 defaults 0 1\n"));
    let grub = std::fs::read_to_string(d.path().join("boot/grub/grub.cfg")).unwrap();
    assert!(!grub.to_lowercase().contains(old) && grub.matches(new.as_str()).count() == 2, "{grub}");
}

/// Every path an operation touches is a symlink to the host (absolute, so it would escape a
/// naive implementation); after all operations the host tree is byte-identical.
#[test]
fn hostile_symlinks_never_reach_the_host() {
    let host = tempfile::tempdir().unwrap();
    let h = host.path();
    for f in ["secret", "log/syslog", "tmp/keep", "ssh/ssh_host_rsa_key", "cloud/instance-id", "home/.bash_history", "dhcp/dhclient.leases"]
    {
        put_mode(h, f, "host data\n", 0o644);
    }
    put(h, "net/50.yaml", "network:\n  ethernets:\n    eth0:\n      match:\n        macaddress: '52:54:00:aa:bb:cc'\n");
    let host_before = listing(h);
    let d = tempfile::tempdir().unwrap();
    base_tree(d.path());
    let img = d.path();
    let link = |target: &str, at: &str| {
        let at = img.join(at.trim_start_matches('/'));
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        let _ = std::fs::remove_dir_all(&at);
        let _ = std::fs::remove_file(&at);
        symlink(h.join(target), at).unwrap();
    };
    link("secret", "/etc/machine-id");
    link("secret", "/var/lib/dbus/machine-id");
    link("secret", "/etc/hostname");
    link("secret", "/etc/hosts");
    link("secret", "/root/.bash_history");
    link("secret", "/var/lib/systemd/random-seed");
    link("secret", "/etc/passwd-");
    link("secret", "/var/log/wtmp");
    link("secret", "/var/log/syslog");
    link("secret", "/etc/netplan/50-cloud-init.yaml");
    link("secret", "/etc/salt/minion_id");
    link("secret", "/etc/systemd/system/imgforge-ssh-keygen.service");
    link("net/50.yaml", "/etc/netplan/60.yaml");
    link("log", "/var/log/apt");
    link("tmp", "/var/tmp");
    link("ssh", "/etc/ssh");
    link("cloud", "/var/lib/cloud");
    link("home", "/home/debian");
    link("home", "/root/.ssh");
    link("dhcp", "/var/lib/dhcp");
    link("tmp", "/var/cache/apt/archives/partial");
    link("tmp", "/var/lib/waagent");
    link("tmp", "/etc/puppetlabs/puppet/ssl");
    link("tmp", "/var/crash");
    link("tmp", "/usr/local/share/ca-certificates");
    link("tmp", "/opt/build");
    // every operation but fs-uuids (which refuses before touching anything)
    let mut plan = SealPlan::default().with_changes(&[Op::UserAccounts, Op::CaCertificates], &[]);
    plan.provisioner_paths = vec!["/opt/build/x".into()];
    let cx = Context { build_hostname: Some("ci-runner-3".into()), ..Context::default() };
    seal(img, &plan, &cx);
    assert_eq!(listing(h), host_before, "the host tree changed");
    // machine-id became a real empty file inside the image
    let md = std::fs::symlink_metadata(img.join("etc/machine-id")).unwrap();
    assert!(md.is_file() && md.len() == 0);
}

/// One fixture per MAC flavour, through the operation: each bound file is rewritten or
/// removed, MAC-free configuration is left byte-identical, and the report names each MAC.
#[test]
fn net_hwaddr_every_flavour() {
    let mac = "52:54:00:12:34:56";
    let flavours: [(&str, String, bool); 6] = [
        (
            "/etc/netplan/50-cloud-init.yaml",
            format!(
                "network:\n    ethernets:\n        eth0:\n            dhcp4: true\n            match:\n                macaddress: '{mac}'\n            set-name: eth0\n    version: 2\n"
            ),
            true,
        ),
        (
            "/etc/NetworkManager/system-connections/Wired.nmconnection",
            format!("[connection]\nid=Wired\ntype=ethernet\n\n[ethernet]\nmac-address={}\n\n[ipv4]\nmethod=auto\n", mac.to_uppercase()),
            true,
        ),
        ("/etc/sysconfig/network-scripts/ifcfg-eth0", format!("DEVICE=eth0\nBOOTPROTO=dhcp\nHWADDR={mac}\nONBOOT=yes\n"), true),
        ("/etc/systemd/network/20-wired.network", format!("[Match]\nMACAddress={mac}\n\n[Network]\nDHCP=yes\n"), true),
        ("/etc/systemd/network/10-persistent.link", format!("[Match]\nMACAddress={mac}\n\n[Link]\nName=eth0\n"), false),
        (
            "/etc/udev/rules.d/70-persistent-net.rules",
            format!("SUBSYSTEM==\"net\", ACTION==\"add\", DRIVERS==\"?*\", ATTR{{address}}==\"{mac}\", NAME=\"eth0\"\n"),
            false,
        ),
    ];
    let mut changed: Vec<(&str, bool)> = vec![
        ("/etc/NetworkManager", false),
        ("/etc/NetworkManager/system-connections", false),
        ("/etc/sysconfig", false),
        ("/etc/sysconfig/network-scripts", false),
        ("/etc/udev", false),
        ("/etc/udev/rules.d", false),
    ];
    changed.extend(flavours.iter().filter(|f| f.2).map(|f| (f.0, true)));
    let r = check(
        Op::NetHwaddr,
        SealPlan::default(),
        |d| {
            for (p, text, _) in &flavours {
                put(d, p, text);
            }
        },
        &changed,
    );
    for (p, _, _) in &flavours {
        let a = r.actions.iter().find(|a| a.path == *p).unwrap_or_else(|| panic!("{p} not in the report"));
        assert!(a.detail.contains(mac), "{a:?}");
    }
    assert_eq!(r.actions.len(), flavours.len(), "{:?}", r.actions);
}
