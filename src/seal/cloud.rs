//! `cloud-init`, `cloud-agents` and `cm-agents`: the state agents keep about the one machine
//! they ran on.

use super::Run;
use super::scrub::{ActionKind, Kind};
use crate::chroot::cmd::ChrootCmd;

const CLOUD_DIR: &str = "/var/lib/cloud";
const CLOUD_LOGS: &[&str] = &["/var/log/cloud-init.log", "/var/log/cloud-init-output.log"];

/// `cloud-init`: the image's own `cloud-init clean --logs` when present (it knows its version's
/// layout), then the same removal done by imgforge for anything left: every entry of
/// /var/lib/cloud except the seed (unless asked), and the logs.
pub fn cloud_init(r: &mut Run) -> anyhow::Result<()> {
    let has_command = r.s.kind_of("/usr/bin/cloud-init")?.is_some();
    let cmdline = if r.plan.cloud_init_remove_seed { "cloud-init clean --logs --seed" } else { "cloud-init clean --logs" };
    if has_command && r.plan.cloud_init_image_command && r.s.dry_run {
        r.s.record(cmdline, ActionKind::Ran, "the image's own command");
    } else if has_command && r.plan.cloud_init_image_command {
        let before = snapshot(r)?;
        // The command deletes behind the scrubber's back: read what it will remove first.
        for p in &before {
            r.s.harvest(p)?;
        }
        let mut cmd = ChrootCmd::new(r.s.root.path(), "/usr/bin/cloud-init").arg("clean").arg("--logs");
        if r.plan.cloud_init_remove_seed {
            cmd = cmd.arg("--seed");
        }
        crate::chroot::run::run_streaming(&cmd, "seal cloud-init", r.events)?;
        r.s.record(cmdline, ActionKind::Ran, "the image's own command");
        for p in before {
            if r.s.kind_of(&p)?.is_none() {
                r.s.record(&p, ActionKind::Removed, "by cloud-init clean");
            }
        }
    }
    let keep_seed = !r.plan.cloud_init_remove_seed;
    r.s.clear_dir(CLOUD_DIR, |n| keep_seed && n == "seed", "cloud-init instance state")?;
    for l in CLOUD_LOGS {
        r.s.remove(l, "cloud-init log")?;
    }
    Ok(())
}

fn snapshot(r: &Run) -> anyhow::Result<Vec<String>> {
    let mut all: Vec<String> = r.s.walk(CLOUD_DIR)?.into_iter().map(|(p, _)| p).collect();
    for l in CLOUD_LOGS {
        if r.s.kind_of(l)?.is_some() {
            all.push((*l).to_string());
        }
    }
    Ok(all)
}

/// `cloud-agents`: what waagent, amazon-ssm-agent and the Google guest agent keep about the
/// instance they registered.
pub fn cloud_agents(r: &mut Run) -> anyhow::Result<()> {
    r.s.clear_dir("/var/lib/waagent", |_| false, "waagent state (as waagent -deprovision)")?;
    r.s.clear_dir("/var/lib/amazon/ssm", |_| false, "amazon-ssm-agent registration and instance data")?;
    for p in ["/etc/google_instance_id", "/etc/default/instance_configs.cfg"] {
        r.s.remove(p, "Google guest agent instance id")?;
    }
    r.s.clear_dir("/var/lib/google-guest-agent", |_| false, "Google guest agent state")?;
    Ok(())
}

/// `cm-agents`: keys and identities of Salt minions, Puppet agents and Chef clients.
pub fn cm_agents(r: &mut Run) -> anyhow::Result<()> {
    r.s.clear_dir("/etc/salt/pki/minion", |_| false, "Salt minion keys")?;
    r.s.remove("/etc/salt/minion_id", "Salt minion id")?;
    r.s.remove("/var/cache/salt/minion", "Salt minion cache (pillar data)")?;
    for ssl in ["/etc/puppetlabs/puppet/ssl", "/var/lib/puppet/ssl", "/etc/puppet/ssl"] {
        r.s.remove(ssl, "Puppet certificates and keys")?;
    }
    for state in [
        "/opt/puppetlabs/puppet/cache/client_data",
        "/opt/puppetlabs/puppet/cache/state",
        "/opt/puppetlabs/puppet/cache/client_yaml",
        "/var/cache/puppet/client_data",
        "/var/cache/puppet/state",
        "/var/cache/puppet/client_yaml",
    ] {
        r.s.remove(state, "Puppet agent state")?;
    }
    for p in ["/etc/chef/client.pem", "/etc/chef/validation.pem"] {
        r.s.remove(p, "Chef client key")?;
    }
    for d in ["/var/chef/cache", "/var/cache/chef"] {
        if r.s.kind_of(d)? == Some(Kind::Dir) {
            r.s.remove(d, "Chef cache")?;
        }
    }
    Ok(())
}
