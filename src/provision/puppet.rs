//! The puppet provisioner: `puppet apply` chrooted in the image (puppet must be installed there,
//! e.g. `apt-get install -y puppet` in an earlier shell provisioner).
//!
//! The manifest, module directories and hiera config are copied (through the in-root resolver)
//! to a run directory on the build's tmpfs `/run`, and puppet's conf/code/var/log/run/ssl dirs
//! point there too, so no certificate, report or cache reaches the image's disk. Facts are
//! exported as `FACTER_<name>`. `--detailed-exitcodes`: 0 and 2 pass, 4 and 6 (failed
//! resources) and anything else fail the build, listing puppet's errors.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, bail};

use super::Summary;
use super::copy::{Attrs, copy_in};
use super::owner::Ids;
use super::plan::PuppetPlan;
use crate::chroot::cmd::ChrootCmd;
use crate::chroot::resolve::Root;
use crate::chroot::run::{RUN_DIR, stream};
use crate::progress::Events;

/// In-image run directory of step `n`.
pub fn run_dir(n: usize) -> String {
    format!("{RUN_DIR}/puppet-{n}")
}

/// PID 1 of the provisioner's PID namespace: renames itself "systemd" and runs puppet as its
/// child. Puppet's systemd service provider is confined to hosts whose /proc/1/comm says
/// systemd — the booted image's will — and with SYSTEMD_OFFLINE `systemctl enable` then works
/// offline in the chroot. Starting services still does not (the documented contract).
const PID1: &str = "printf systemd > /proc/self/comm; \"$@\"; exit $?";

/// Runs one puppet step; `n` is its 1-based index.
pub fn run(root: &Root, n: usize, label: &str, p: &PuppetPlan, events: &Events) -> anyhow::Result<Summary> {
    let dir = run_dir(n);
    let result = copy_and_apply(root, &dir, label, p, events);
    let cleaned = root.remove_tree(Path::new(&dir));
    let summary = result?;
    cleaned?;
    Ok(summary)
}

fn copy_and_apply(root: &Root, dir: &str, label: &str, p: &PuppetPlan, events: &Events) -> anyhow::Result<Summary> {
    let d = Path::new(dir);
    root.mkdir_all(d, 0o700)?;
    let attrs = Attrs { mode: None, ids: Ids { uid: 0, gid: 0 } };
    let manifest = d.join("manifest").join(p.manifest.file_name().ok_or_else(|| anyhow!("manifest has no file name"))?);
    copy_in(root, &p.manifest, &manifest, &attrs)?;
    let mut module_path = Vec::new();
    for (i, m) in p.module_path.iter().enumerate() {
        let to = d.join(format!("modules-{i}"));
        copy_in(root, m, &to, &attrs)?;
        module_path.push(to.display().to_string());
    }
    let hiera = match &p.hiera_config {
        // hiera.yaml names its data directory relative to itself: its directory comes along.
        Some(h) => {
            let (parent, name) = (h.parent().unwrap_or(Path::new(".")), h.file_name().unwrap_or_default());
            copy_in(root, parent, &d.join("hiera"), &attrs)?;
            Some(d.join("hiera").join(name).display().to_string())
        }
        None => None,
    };
    if !root.exists(Path::new("/usr/bin/puppet"))? {
        bail!("/usr/bin/puppet is not in the image: install it in an earlier provisioner (apt-get install -y puppet)");
    }
    let mut cmd = ChrootCmd::new(root.path(), "/bin/sh").args(["-c", PID1, "sh", "/usr/bin/puppet", "apply", "--detailed-exitcodes"]);
    cmd = cmd.args(["--color=false", "--summarize", "--certname", &p.certname]);
    for (flag, sub) in [("--confdir", "conf"), ("--codedir", "code"), ("--vardir", "var"), ("--logdir", "log"), ("--rundir", "run")] {
        cmd = cmd.arg(flag).arg(format!("{dir}/{sub}"));
    }
    cmd = cmd.arg("--ssldir").arg(format!("{dir}/ssl"));
    if !module_path.is_empty() {
        cmd = cmd.arg("--modulepath").arg(module_path.join(":"));
    }
    if let Some(h) = hiera {
        cmd = cmd.arg("--hiera_config").arg(h);
    }
    cmd = cmd.arg(manifest.display().to_string()).env("SYSTEMD_OFFLINE", "1");
    for (k, v) in &p.facts {
        cmd = cmd.env(&format!("FACTER_{k}"), v);
    }
    let mut out = Output::default();
    let done = stream(|o, e| Ok(cmd.spawn(o, e)?), label, events, |l| out.line(l))?;
    match done.status.code() {
        Some(0 | 2) => Ok(out.summary()),
        Some(code @ (4 | 6)) if !out.errors.is_empty() => {
            bail!("puppet apply failed (exit code {code}: failed resources):\n      {}", out.errors.join("\n      "))
        }
        _ if !out.errors.is_empty() => bail!("puppet apply failed ({}):\n      {}", done.status, out.errors.join("\n      ")),
        _ => Err(done.failure().context("puppet apply failed")),
    }
}

/// What puppet's output says: its errors and the `--summarize` counts.
#[derive(Debug, Default)]
pub struct Output {
    /// "Error: …" lines (failed resources name themselves: /Stage[main]/…/Exec[x]).
    pub errors: Vec<String>,
    section: String,
    /// "Section/Key" → count, from the summary.
    pub counts: BTreeMap<String, u64>,
}

impl Output {
    /// Takes one output line. Pure.
    pub fn line(&mut self, l: &str) {
        if let Some(e) = l.strip_prefix("Error: ") {
            self.errors.push(e.chars().take(400).collect());
        } else if !l.starts_with(' ') && l.ends_with(':') && !l.contains(' ') {
            self.section = l.trim_end_matches(':').to_string();
        } else if let Some((k, v)) = l.trim().split_once(": ")
            && l.starts_with(' ')
            && let Ok(n) = v.trim().parse::<f64>()
        {
            // Counts are whole; times are not and are not kept.
            if n.fract() == 0.0 && n >= 0.0 {
                self.counts.insert(format!("{}/{k}", self.section), n as u64);
            }
        }
    }

    /// The resource counts.
    pub fn summary(&self) -> Summary {
        let get = |k: &str| self.counts.get(&format!("Resources/{k}")).copied().unwrap_or(0);
        let (changed, failed) = (get("Changed"), get("Failed") + get("Failed to restart"));
        let ok = get("Total").saturating_sub(changed + failed + get("Skipped"));
        Summary { changed, ok, failed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "Notice: Compiled catalog for web-base in environment production in 5.30 seconds\n\
Error: /Stage[main]/Main/Exec[boom]/returns: change from 'notrun' to ['0'] failed: '/bin/false' returned 1 instead of one of [0]\n\
Notice: /Stage[main]/Main/Package[hello]/ensure: created\n\
Notice: Applied catalog in 4.89 seconds\n\
Application:\n   Initial environment: production\n   Converged environment: production\n         Run mode: user\n\
Changes:\n            Total: 4\n\
Events:\n          Failure: 1\n          Success: 4\n            Total: 5\n\
Resources:\n          Changed: 4\n           Failed: 1\n      Out of sync: 5\n          Skipped: 8\n            Total: 20\n\
Time:\n             File: 0.01\n          Package: 3.00\n            Total: 4.89\n\
Version:\n           Config: 1763765432\n           Puppet: 7.23.0\n";

    #[test]
    fn summary_and_errors() {
        let mut o = Output::default();
        OUT.lines().for_each(|l| o.line(l));
        assert_eq!(o.summary(), Summary { changed: 4, ok: 7, failed: 1 });
        assert_eq!(o.errors.len(), 1);
        assert!(o.errors[0].starts_with("/Stage[main]/Main/Exec[boom]/returns"));
    }
}
