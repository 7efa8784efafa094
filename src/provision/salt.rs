//! The salt provisioner: masterless `salt-call --local` chrooted in the image.
//!
//! The state and pillar trees are copied (through the in-root resolver) to a run directory on
//! the build's tmpfs `/run` — never the image's disk — with a generated minion config that keeps
//! every file salt writes (pki, cache, sockets, log) there too. The JSON result is read back and
//! any state with `result: false` fails the build, whatever salt-call's exit code said. With
//! `install = "pip"`, salt is pip-installed into a venv at /opt/imgforge-salt for the run and
//! removed afterwards unless `keep = true`.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};

use super::Summary;
use super::copy::{Attrs, copy_in};
use super::owner::Ids;
use super::plan::{SaltInstall, SaltPlan};
use crate::chroot::cmd::ChrootCmd;
use crate::chroot::resolve::Root;
use crate::chroot::run::{RUN_DIR, stream};
use crate::progress::Events;

/// Where `install = "pip"` puts salt.
pub const VENV: &str = "/opt/imgforge-salt";

/// What pip installs: the 3006 LTS line. (3007 depends on timelib, which has no wheels and
/// needs a C compiler in the image.)
const SALT_REQUIREMENT: &str = "salt~=3006.0";

/// Salt's systemd module loads only when this exists; with SYSTEMD_OFFLINE set, `systemctl
/// enable` then works offline in the chroot.
const SYSTEMD_MARKER: &str = "/run/systemd/system";

/// The run directory of step `n`.
fn run_dir(n: usize) -> String {
    format!("{RUN_DIR}/salt-{n}")
}

/// In-image paths of step `n`.
pub fn image_paths(p: &SaltPlan, n: usize) -> Vec<String> {
    let mut v = vec![run_dir(n)];
    if p.install == (SaltInstall::Pip { keep: false }) {
        v.push(VENV.to_string());
    }
    v
}

/// Runs one salt step; `n` is its 1-based index.
pub fn run(root: &Root, n: usize, label: &str, p: &SaltPlan, events: &Events) -> anyhow::Result<Summary> {
    let dir = run_dir(n);
    let marker_made = !root.exists(Path::new(SYSTEMD_MARKER))?;
    let result = prepare_and_call(root, &dir, label, p, events);
    let mut cleanup = vec![root.remove_tree(Path::new(&dir))];
    if marker_made {
        cleanup.push(root.remove_dir(Path::new(SYSTEMD_MARKER)));
    }
    if p.install == (SaltInstall::Pip { keep: false }) {
        cleanup.push(root.remove_tree(Path::new(VENV)));
    }
    let summary = result?;
    for c in cleanup {
        c.context("Failed to remove salt's run files from the image")?;
    }
    Ok(summary)
}

fn prepare_and_call(root: &Root, dir: &str, label: &str, p: &SaltPlan, events: &Events) -> anyhow::Result<Summary> {
    let d = Path::new(dir);
    root.mkdir_all(d, 0o700)?;
    let attrs = Attrs { mode: None, ids: Ids { uid: 0, gid: 0 } };
    copy_in(root, &p.state_tree, &d.join("states"), &attrs)?;
    match &p.pillar_tree {
        Some(t) => copy_in(root, t, &d.join("pillar"), &attrs)?,
        None => root.mkdir_all(&d.join("pillar"), 0o700)?,
    }
    root.write(&d.join("minion"), minion_config(dir, &p.minion_id).as_bytes(), 0o600)?;
    root.mkdir_all(Path::new(SYSTEMD_MARKER), 0o755)?;
    let salt_call = match p.install {
        SaltInstall::Pip { .. } => {
            install(root, dir, label, events)?;
            format!("{VENV}/bin/salt-call")
        }
        SaltInstall::None => "/usr/bin/salt-call".to_string(),
    };
    if !root.exists(Path::new(&salt_call))? {
        bail!("{salt_call} is not in the image: install salt in an earlier provisioner, or set install = \"pip\"");
    }
    let out_file = format!("{dir}/result.json");
    let mut cmd = ChrootCmd::new(root.path(), &salt_call)
        .args(["-c", dir, "--local", "--retcode-passthrough", "--out=json", "--out-file", &out_file, "--log-level=info"])
        .env("SYSTEMD_OFFLINE", "1")
        .env("PYTHONWARNINGS", "ignore::DeprecationWarning");
    cmd = if p.states.is_empty() { cmd.arg("state.highstate") } else { cmd.arg("state.apply").arg(p.states.join(",")) };
    let done = stream(|o, e| Ok(cmd.spawn(o, e)?), label, events, |_| {})?;
    let json = root.read(Path::new(&out_file))?;
    let Some(json) = json.filter(|j| !j.is_empty()) else {
        return Err(done.failure().context("salt-call wrote no result"));
    };
    let results = parse_results(&json).map_err(|e| anyhow!("{e}"))?;
    if !results.failed.is_empty() {
        let list: Vec<String> = results.failed.iter().map(|(id, c)| format!("state \"{id}\": {c}")).collect();
        bail!("{} salt state(s) failed:\n      {}", list.len(), list.join("\n      "));
    }
    if !done.status.success() {
        return Err(done.failure().context("salt-call failed"));
    }
    Ok(results.summary)
}

/// The minion config: local files only, and every path salt writes under the run directory.
fn minion_config(dir: &str, id: &str) -> String {
    let cfg = serde_json::json!({
        "id": id,
        "file_client": "local",
        "master_type": "disable",
        "file_roots": { "base": [format!("{dir}/states")] },
        "pillar_roots": { "base": [format!("{dir}/pillar")] },
        "pki_dir": format!("{dir}/pki"),
        "cachedir": format!("{dir}/cache"),
        "sock_dir": format!("{dir}/sock"),
        "log_file": format!("{dir}/minion.log"),
        "pidfile": format!("{dir}/minion.pid"),
        // Not derived from cachedir: the default would create /var/cache/salt/minion/extmods.
        "extension_modules": format!("{dir}/cache/extmods"),
        "systemd.scope": false,
        "state_verbose": true,
    });
    // JSON is YAML.
    cfg.to_string()
}

/// pip-installs salt into the venv: the venv is made without pip (Debian's python3 has no
/// ensurepip), pip itself runs from a wheel the host's pip downloads, and it trusts the host's
/// CA bundle (builders behind a TLS-inspecting proxy).
fn install(root: &Root, dir: &str, label: &str, events: &Events) -> anyhow::Result<()> {
    if root.exists(Path::new(&format!("{VENV}/bin/salt-call")))? {
        return Ok(());
    }
    if !root.exists(Path::new("/usr/bin/python3"))? {
        bail!("install = \"pip\" needs /usr/bin/python3 in the image");
    }
    let host_tmp = tempfile::Builder::new().prefix("imgforge-salt-").tempdir().context("Failed to create a temporary directory")?;
    let wheel = download_pip(host_tmp.path(), label, events)?;
    let name = wheel.file_name().context("pip wheel has no name")?.to_string_lossy().into_owned();
    let attrs = Attrs { mode: Some(0o644), ids: Ids { uid: 0, gid: 0 } };
    copy_in(root, &wheel, &Path::new(dir).join(&name), &attrs)?;
    let venv = ChrootCmd::new(root.path(), "/usr/bin/python3").args(["-m", "venv", "--without-pip", VENV]);
    check(stream(|o, e| Ok(venv.spawn(o, e)?), label, events, |_| {})?, "python3 -m venv")?;
    let mut pip = ChrootCmd::new(root.path(), &format!("{VENV}/bin/python3")).arg(format!("{dir}/{name}/pip")).args([
        "install",
        "--no-cache-dir",
        "--disable-pip-version-check",
        "--progress-bar",
        "off",
    ]);
    if let Some(ca) = host_ca_bundle() {
        copy_in(root, &ca, &Path::new(dir).join("ca.crt"), &attrs)?;
        pip = pip.arg("--cert").arg(format!("{dir}/ca.crt"));
    }
    for k in ["http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"] {
        if let Ok(v) = std::env::var(k) {
            pip = pip.env(k, &v);
        }
    }
    let pip = pip.arg(SALT_REQUIREMENT);
    let start = std::time::Instant::now();
    check(stream(|o, e| Ok(pip.spawn(o, e)?), label, events, |_| {})?, &format!("pip install {SALT_REQUIREMENT}"))?;
    events.output(label, &format!("installed {SALT_REQUIREMENT} into {VENV} in {:.1} s", start.elapsed().as_secs_f64()));
    Ok(())
}

fn check(done: crate::chroot::run::Finished, what: &str) -> anyhow::Result<()> {
    if done.status.success() { Ok(()) } else { Err(done.failure().context(format!("{what} failed in the image"))) }
}

/// `python3 -m pip download pip` on the host, into `dest`.
fn download_pip(dest: &Path, label: &str, events: &Events) -> anyhow::Result<PathBuf> {
    let mut cmd = std::process::Command::new("python3");
    cmd.args(["-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "--dest"]).arg(dest).arg("pip");
    cmd.stdin(std::process::Stdio::null());
    let done = stream(
        move |o, e| crate::chroot::run::spawn_host(cmd, o, e).context("Failed to start python3 on the build host"),
        label,
        events,
        |_| {},
    )?;
    if !done.status.success() {
        return Err(done.failure().context("install = \"pip\" needs the build host's python3 -m pip to fetch pip itself"));
    }
    std::fs::read_dir(dest)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .context("pip download left no wheel")
}

/// The CA bundle the host's own tools trust.
fn host_ca_bundle() -> Option<PathBuf> {
    ["PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"]
        .iter()
        .filter_map(std::env::var_os)
        .map(PathBuf::from)
        .chain([PathBuf::from("/etc/ssl/certs/ca-certificates.crt")])
        .find(|p| p.is_file())
}

/// salt-call's JSON, judged.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Results {
    /// Counts.
    pub summary: Summary,
    /// (state id, comment) of each state with `result: false`, in run order.
    pub failed: Vec<(String, String)>,
}

/// Parses `{"local": {...states...}}`; a list in place of the states (render errors, "no top
/// file") is an error. Pure.
pub fn parse_results(json: &[u8]) -> Result<Results, String> {
    let v: serde_json::Value = serde_json::from_slice(json).map_err(|e| format!("salt-call's JSON result is unreadable: {e}"))?;
    let local = v.get("local").ok_or_else(|| format!("salt-call's result has no \"local\": {}", short(&v.to_string())))?;
    let states = match local {
        serde_json::Value::Object(m) => m,
        serde_json::Value::Array(errors) => {
            let lines: Vec<String> = errors.iter().map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_string)).collect();
            return Err(format!("salt-call could not run the states:\n      {}", lines.join("\n      ")));
        }
        other => return Err(format!("salt-call returned {}", short(&other.to_string()))),
    };
    let mut ordered: Vec<(&String, &serde_json::Value)> = states.iter().collect();
    ordered.sort_by_key(|(_, s)| s.get("__run_num__").and_then(serde_json::Value::as_u64).unwrap_or(u64::MAX));
    let mut r = Results::default();
    for (key, s) in ordered {
        let changed = s.get("changes").is_some_and(|c| c.as_object().is_some_and(|o| !o.is_empty()));
        match s.get("result") {
            Some(serde_json::Value::Bool(false)) => {
                r.summary.failed += 1;
                let id = s.get("__id__").and_then(|i| i.as_str()).map_or_else(|| state_id(key), str::to_string);
                r.failed.push((id, comment(s)));
            }
            _ if changed => r.summary.changed += 1,
            _ => r.summary.ok += 1,
        }
    }
    Ok(r)
}

/// "pkg_|-hello_|-hello_|-installed" → "hello".
fn state_id(key: &str) -> String {
    key.split("_|-").nth(1).unwrap_or(key).to_string()
}

fn comment(s: &serde_json::Value) -> String {
    let c = match s.get("comment") {
        Some(serde_json::Value::String(c)) => c.clone(),
        Some(serde_json::Value::Array(a)) => {
            a.iter().map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string)).collect::<Vec<_>>().join("; ")
        }
        Some(other) => other.to_string(),
        None => String::new(),
    };
    short(c.trim())
}

fn short(s: &str) -> String {
    match s.char_indices().nth(400) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_states_are_listed_in_order() {
        let json = br#"{"local": {
            "cmd_|-broken_|-/bin/false_|-run": {"result": false, "comment": "Command \"/bin/false\" run", "changes": {"retcode": 1}, "__id__": "broken", "__run_num__": 2},
            "pkg_|-hello_|-hello_|-installed": {"result": true, "comment": "installed", "changes": {"hello": {"new": "2.10"}}, "__run_num__": 0},
            "user_|-deploy_|-deploy_|-present": {"result": true, "comment": "present", "changes": {}, "__run_num__": 1},
            "file_|-x_|-/x_|-managed": {"result": false, "comment": ["One or more requisite failed", "x"], "changes": {}, "__run_num__": 3}
        }}"#;
        let r = parse_results(json).unwrap();
        assert_eq!(r.summary, Summary { changed: 1, ok: 1, failed: 2 });
        assert_eq!(
            r.failed,
            [("broken".into(), "Command \"/bin/false\" run".into()), ("x".into(), "One or more requisite failed; x".into())]
        );
    }

    #[test]
    fn no_top_file_is_a_failure() {
        let json = br#"{"local": {"no_|-states_|-states_|-None": {"result": false, "comment": "No Top file or master_tops data matches found. Please see master log for details.", "name": "No States", "changes": {}, "__run_num__": 0}}}"#;
        let r = parse_results(json).unwrap();
        assert_eq!(r.failed.len(), 1);
        assert!(r.failed[0].1.contains("No Top file"));
        let e = parse_results(br#"{"local": ["Rendering SLS 'base:web' failed: mapping values are not allowed here"]}"#).unwrap_err();
        assert!(e.contains("Rendering SLS 'base:web' failed"), "{e}");
        assert!(parse_results(b"{}").is_err() && parse_results(b"not json").is_err());
    }

    #[test]
    fn config_keeps_everything_in_the_run_dir() {
        let c: serde_json::Value = serde_json::from_str(&minion_config("/run/imgforge/salt-2", "rails-base-01")).unwrap();
        assert_eq!(c["id"], "rails-base-01");
        assert_eq!(c["file_client"], "local");
        for k in ["pki_dir", "cachedir", "sock_dir", "log_file", "pidfile", "extension_modules"] {
            assert!(c[k].as_str().unwrap().starts_with("/run/imgforge/salt-2/"), "{k}");
        }
    }
}
