//! The build sandbox (issue 14): nothing a provisioner runs reaches the build host, and
//! live-server service requests are deferred to first boot. On the real binary, the cloud-like
//! upstream, as root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::process::Command;

use util::*;

/// What the test compares before and after: the host's hostname, a global kernel parameter,
/// its links, routes, swap and modules.
#[derive(Debug, PartialEq)]
struct HostState {
    hostname: String,
    swappiness: String,
    links: String,
    routes: String,
    swaps: String,
    modules: String,
    rules: String,
}

fn host_state() -> HostState {
    let out = |c: &[&str]| {
        let o = Command::new(c[0]).args(&c[1..]).output().unwrap_or_else(|e| panic!("{}: {e} (scripts/setup --tests installs it)", c[0]));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let mods = std::fs::read_to_string("/proc/modules").unwrap_or_default();
    HostState {
        hostname: nix::unistd::gethostname().unwrap().to_string_lossy().into_owned(),
        swappiness: std::fs::read_to_string("/proc/sys/vm/swappiness").unwrap(),
        links: out(&["ip", "-br", "link"]),
        routes: out(&["ip", "route"]) + &out(&["ip", "-6", "route"]),
        swaps: std::fs::read_to_string("/proc/swaps").unwrap(),
        rules: out(&["nft", "list", "ruleset"]) + &std::fs::read_to_string("/proc/net/ip_tables_names").unwrap_or_default(),
        modules: mods.lines().map(|l| l.split(' ').next().unwrap_or("")).collect::<Vec<_>>().join(","),
    }
}

fn uptime() -> f64 {
    std::fs::read_to_string("/proc/uptime").unwrap().split(' ').next().unwrap().parse().unwrap()
}

/// Runs a raw syscall with python3 in the image and prints its errno name: the refusals come
/// from the kernel, not from a missing tool.
const SYSCALL: &str = "python3 -c 'import ctypes,os,sys; l=ctypes.CDLL(None, use_errno=True); a=[int(x) if x.isdigit() else x.encode() for x in sys.argv[2:]]; r=l.syscall(int(sys.argv[1]), *a); print(sys.argv[1], r, os.strerror(ctypes.get_errno()) if r < 0 else \"ok\")'";

fn recipe_text() -> String {
    // x86_64 syscall numbers: init_module 175, swapoff 168, reboot 169.
    let probes = [
        "set +e",
        "echo -n rails-base-01 > /etc/hostname; hostname -F /etc/hostname; rc=$?; [ \"$(hostname)\" = rails-base-01 ] && echo \"hostname $rc set\" >> /root/probe",
        "echo 61 > /proc/sys/vm/swappiness; echo \"swappiness $? $(cat /proc/sys/vm/swappiness)\" >> /root/probe",
        "ip link add imgf0 type bridge; echo \"link $?\" >> /root/probe",
        "ip route add 198.51.100.0/24 dev lo; echo \"route $?\" >> /root/probe",
        "apt-get update -qq; echo \"apt-update $?\" >> /root/probe",
        "apt-get install -y -qq --no-install-recommends nftables >/dev/null; echo \"apt-install $?\" >> /root/probe",
        "nft add table inet imgforge_test && nft add chain inet imgforge_test input '{ type filter hook input priority 0; policy drop; }'; echo \"nft $? $(nft list tables)\" >> /root/probe",
        "swapoff -a; echo \"swapoff-a $?\" >> /root/probe",
        &format!("{SYSCALL} 175 0 0 0 >> /root/probe"),
        &format!("{SYSCALL} 168 /swapfile >> /root/probe"),
        &format!("{SYSCALL} 169 4276215469 672274793 19088743 0 >> /root/probe"),
        "reboot -f; echo \"reboot $?\" >> /root/probe",
        "grep -E '^Cap(Bnd|Eff)' /proc/self/status >> /root/probe",
        "sleep 300 & kill -9 -1; wait $!; echo \"kill $?\" >> /root/probe",
        "test -e /dev/sda || test -e /dev/vda || test -e /dev/loop0; echo \"devices $?\" >> /root/probe",
        "printf '[Service]\\nExecStart=/bin/true\\n[Install]\\nWantedBy=multi-user.target\\n' > /etc/systemd/system/lonely.service",
        "systemctl restart ssh; service ssh reload; invoke-rc.d ssh restart; systemctl start lonely; echo \"services $?\" >> /root/probe",
        "systemctl is-active ssh >> /root/probe",
    ];
    let inline: Vec<String> = probes.iter().map(|p| format!("{p:?}")).collect();
    cloud_head("box", "1.0.0")
        + &format!("[[provision]]\ntype = \"shell\"\nname = \"live-server habits\"\ninline = [{}]\n", inline.join(", "))
}

fn line<'a>(probe: &'a str, key: &str) -> &'a str {
    probe.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no `{key}` line in the probe:\n{probe}"))
}

#[test]
fn provisioners_cannot_touch_the_build_host() {
    if !have_root("provisioners_cannot_touch_the_build_host") {
        return;
    }
    let dir = testdir("sandbox");
    let r = recipe(dir.path(), &recipe_text());
    let mut bystander = Command::new("sleep").arg("600").spawn().unwrap();
    let (before, up_before) = (host_state(), uptime());
    let o = run(imgforge().arg("build").arg(&r).arg("-o").arg(dir.path().join("out")));
    let after = host_state();
    let bystander_alive = bystander.try_wait().unwrap().is_none();
    let _ = bystander.kill();
    let _ = bystander.wait();
    assert_clean(dir.path());
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(before, after, "the build host changed");
    assert!(uptime() > up_before && bystander_alive, "the host rebooted or lost a process");

    // The build's mount point (a host path) is not left in the superblock.
    let raw = dir.path().join("out/box.raw");
    let start = sfdisk_parts(&raw).into_iter().find(|p| p.0 == 1).unwrap().1;
    let sb = Command::new("dumpe2fs").arg("-h").arg(format!("{}?offset={start}", raw.display())).output().unwrap();
    let sb = String::from_utf8_lossy(&sb.stdout);
    let last = sb.lines().find(|l| l.starts_with("Last mounted on:")).unwrap();
    assert_eq!(last.split_whitespace().last(), Some("/"), "{last}");

    let m = RoMount::open(&raw, 1);
    let probe = m.read("/root/probe");
    eprintln!("{probe}");
    // What only affects the sandbox succeeds there.
    assert_eq!(line(&probe, "hostname"), "hostname 0 set");
    assert_eq!(line(&probe, "swappiness"), "swappiness 0 61");
    assert_eq!(line(&probe, "link"), "link 0");
    assert_eq!(line(&probe, "route"), "route 0");
    assert_eq!(line(&probe, "apt-update"), "apt-update 0");
    assert_eq!(line(&probe, "apt-install"), "apt-install 0");
    assert!(line(&probe, "nft").starts_with("nft 0 table inet imgforge_test"), "{probe}");
    // What needs the host's root is refused by the kernel.
    // (A kernel built without module support answers ENOSYS before any permission check.)
    assert!(["175 -1 Operation not permitted", "175 -1 Function not implemented"].contains(&line(&probe, "175 ")), "init_module: {probe}");
    assert_eq!(line(&probe, "168 "), "168 -1 Operation not permitted", "swapoff");
    assert_eq!(line(&probe, "169 "), "169 -1 Operation not permitted", "reboot");
    assert_eq!(line(&probe, "reboot"), "reboot 1");
    let bnd = u64::from_str_radix(line(&probe, "CapBnd:").split_whitespace().nth(1).unwrap(), 16).unwrap();
    for (bit, name) in [(16, "CAP_SYS_MODULE"), (17, "CAP_SYS_RAWIO"), (22, "CAP_SYS_BOOT"), (25, "CAP_SYS_TIME"), (27, "CAP_MKNOD")] {
        assert_eq!(bnd & (1 << bit), 0, "{name} is in the bounding set: {probe}");
    }
    assert_ne!(bnd & (1 << 21), 0, "CAP_SYS_ADMIN (namespaced: hostname, mounts) should stay");
    assert_eq!(line(&probe, "kill"), "kill 137", "kill -9 -1 did not reach the sandbox's own process");
    assert_eq!(line(&probe, "devices"), "devices 1", "the host's block devices are visible");
    // Services: nothing started, everything recorded; a unit that will not boot is named.
    assert_eq!(line(&probe, "services"), "services 0");
    assert_eq!(line(&probe, "active"), "active");
    drop(m);
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("out/box.manifest.json")).unwrap()).unwrap();
    let services = manifest["services"].as_array().unwrap();
    let ssh = services.iter().find(|s| s["unit"] == "ssh.service").unwrap_or_else(|| panic!("{services:?}"));
    assert_eq!(ssh["actions"], serde_json::json!(["restart", "reload"]), "{ssh}");
    assert_eq!(ssh["via"], serde_json::json!(["systemctl", "invoke-rc.d"]), "{ssh}");
    assert_eq!(ssh["enabled"], "enabled");
    let lonely = services.iter().find(|s| s["unit"] == "lonely.service").unwrap();
    assert_eq!(lonely["enabled"], "disabled", "{lonely}");
    assert_eq!(manifest["sandbox_sysctls"]["vm.swappiness"], "61");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("ssh.service: restart, reload deferred to first boot"), "{err}");
    assert!(err.contains("vm.swappiness = 61 was set by a provisioner"), "{err}");
    assert!(err.contains("lonely.service was asked to start but is disabled in the image: it will not run when the image boots"), "{err}");
}
