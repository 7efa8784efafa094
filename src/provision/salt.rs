//! The salt provisioner: masterless `salt-call --local` chrooted in the image.
//!
//! The state and pillar trees are copied (through the in-root resolver) to a run directory on
//! the build's tmpfs `/run` — never the image's disk — with a generated minion config that keeps
//! every file salt writes (pki, cache, sockets, log) there too. The JSON result is read back and
//! any state with `result: false` fails the build, whatever salt-call's exit code said. With
//! `install = "pip"`, salt is pip-installed into a venv at /opt/imgforge-salt for the run and
//! removed afterwards unless `keep = true`; from wheels only: the recipe's wheelhouse, or
//! imgforge's wheel cache (`<cache dir>/salt-wheels/<key>`, the key naming the requirement and
//! the image's Python ABI, platform and libc), which the first build fills with `pip wheel`.

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
pub const SALT_REQUIREMENT: &str = "salt~=3006.0";

/// Where the wheel cache lives under imgforge's cache directory.
const WHEEL_CACHE: &str = "salt-wheels";

/// The run directory of step `n`.
fn run_dir(n: usize) -> String {
    format!("{RUN_DIR}/salt-{n}")
}

/// In-image paths of step `n`.
pub fn image_paths(p: &SaltPlan, n: usize) -> Vec<String> {
    let mut v = vec![run_dir(n)];
    if matches!(p.install, SaltInstall::Pip { keep: false, .. }) {
        v.push(VENV.to_string());
    }
    v
}

/// Runs one salt step; `n` is its 1-based index.
/// `cache_dir` is imgforge's cache directory (the wheel cache is in it).
pub fn run(root: &Root, n: usize, label: &str, p: &SaltPlan, cache_dir: &Path, events: &Events) -> anyhow::Result<Summary> {
    let dir = run_dir(n);
    // Salt's systemd module loads only when /run/systemd/system exists: the build sandbox makes
    // that marker for the whole build (chroot::sandbox), and SYSTEMD_OFFLINE below lets the
    // image's systemctl enable units offline.
    let result = prepare_and_call(root, &dir, label, p, cache_dir, events);
    let mut cleanup = vec![root.remove_tree(Path::new(&dir))];
    if matches!(p.install, SaltInstall::Pip { keep: false, .. }) {
        cleanup.push(root.remove_tree(Path::new(VENV)));
    }
    let summary = result?;
    for c in cleanup {
        c.context("Failed to remove salt's run files from the image")?;
    }
    Ok(summary)
}

fn prepare_and_call(root: &Root, dir: &str, label: &str, p: &SaltPlan, cache_dir: &Path, events: &Events) -> anyhow::Result<Summary> {
    let d = Path::new(dir);
    root.mkdir_all(d, 0o700)?;
    let attrs = Attrs { mode: None, ids: Ids { uid: 0, gid: 0 } };
    copy_in(root, &p.state_tree, &d.join("states"), &attrs)?;
    match &p.pillar_tree {
        Some(t) => copy_in(root, t, &d.join("pillar"), &attrs)?,
        None => root.mkdir_all(&d.join("pillar"), 0o700)?,
    }
    root.write(&d.join("minion"), minion_config(dir, &p.minion_id).as_bytes(), 0o600)?;
    let salt_call = match &p.install {
        SaltInstall::Pip { wheelhouse, .. } => {
            install(root, dir, label, wheelhouse.as_deref(), cache_dir, events)?;
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

/// Where `install` gets its wheels.
#[derive(Debug)]
enum Wheels {
    /// The recipe's wheelhouse: installed offline from it, no fallback.
    House(PathBuf),
    /// A complete entry of the wheel cache.
    Cached(PathBuf),
    /// No cache entry yet: pip fetches and builds the wheels, which are then stored here.
    Fetch(PathBuf),
}

/// pip-installs salt into the venv, from wheels only (see `Wheels`). The venv is made without
/// pip (Debian's python3 has no ensurepip): pip runs from its own wheel, taken from the
/// wheelhouse or cache, or downloaded by the host's pip. Online, pip trusts the host's CA
/// bundle (builders behind a TLS-inspecting proxy) and proxy variables.
fn install(root: &Root, dir: &str, label: &str, wheelhouse: Option<&Path>, cache_dir: &Path, events: &Events) -> anyhow::Result<()> {
    if root.exists(Path::new(&format!("{VENV}/bin/salt-call")))? {
        return Ok(());
    }
    if !root.exists(Path::new("/usr/bin/python3"))? {
        bail!("install = \"pip\" needs /usr/bin/python3 in the image");
    }
    let start = std::time::Instant::now();
    let wheels = match wheelhouse {
        Some(h) => Wheels::House(h.to_path_buf()),
        None => {
            let key = python_key(root, label, events)?;
            let entry = cache_dir.join(WHEEL_CACHE).join(key);
            if is_complete(&entry) { Wheels::Cached(entry) } else { Wheels::Fetch(entry) }
        }
    };
    let run_wheels = format!("{dir}/wheels");
    let attrs = Attrs { mode: Some(0o644), ids: Ids { uid: 0, gid: 0 } };
    let host_tmp = tempfile::Builder::new().prefix("imgforge-salt-").tempdir().context("Failed to create a temporary directory")?;
    let pip_wheel = match &wheels {
        Wheels::House(from) | Wheels::Cached(from) => {
            copy_in(root, from, Path::new(&run_wheels), &attrs)?;
            wheel_of(from, "pip").with_context(|| format!("{} holds no pip-*.whl", from.display()))?
        }
        Wheels::Fetch(_) => {
            root.mkdir_all(Path::new(&run_wheels), 0o755)?;
            let wheel = download_pip(host_tmp.path(), label, events)?;
            let name = wheel.file_name().context("pip wheel has no name")?.to_string_lossy().into_owned();
            copy_in(root, &wheel, &Path::new(&run_wheels).join(&name), &attrs)?;
            name
        }
    };
    let venv = ChrootCmd::new(root.path(), "/usr/bin/python3").args(["-m", "venv", "--without-pip", VENV]);
    check(stream(|o, e| Ok(venv.spawn(o, e)?), label, events, |_| {})?, "python3 -m venv")?;
    let pip = |sub: &str| {
        ChrootCmd::new(root.path(), &format!("{VENV}/bin/python3")).arg(format!("{run_wheels}/{pip_wheel}/pip")).arg(sub).args([
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
        ])
    };
    if let Wheels::Fetch(_) = &wheels {
        let mut fetch = pip("wheel").arg("--wheel-dir").arg(&run_wheels);
        if let Some(ca) = host_ca_bundle() {
            copy_in(root, &ca, &Path::new(dir).join("ca.crt"), &attrs)?;
            fetch = fetch.arg("--cert").arg(format!("{dir}/ca.crt"));
        }
        for k in ["http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"] {
            if let Ok(v) = std::env::var(k) {
                fetch = fetch.env(k, &v);
            }
        }
        let fetch = fetch.arg(SALT_REQUIREMENT);
        check(stream(|o, e| Ok(fetch.spawn(o, e)?), label, events, |_| {})?, &format!("pip wheel {SALT_REQUIREMENT}"))?;
    }
    // Bytecode is compiled on import if salt needs it; compiling all of salt here costs seconds.
    let inst = pip("install").args(["--no-index", "--no-compile", "--find-links", &run_wheels, SALT_REQUIREMENT]);
    let installed = check(stream(|o, e| Ok(inst.spawn(o, e)?), label, events, |_| {})?, &format!("pip install {SALT_REQUIREMENT}"));
    let from = match &wheels {
        Wheels::House(h) => format!("the wheelhouse {}", h.display()),
        Wheels::Cached(c) => format!("the wheel cache {}", c.display()),
        Wheels::Fetch(_) => "the package index".to_string(),
    };
    installed.with_context(|| match &wheels {
        Wheels::House(h) => format!(
            "the wheelhouse {} (recipe option wheelhouse) lacks a wheel salt needs for the image's Python: add it with `pip wheel -w {} pip '{SALT_REQUIREMENT}'` run with the image's Python and architecture",
            h.display(),
            h.display()
        ),
        Wheels::Cached(c) => format!("the wheel cache {} is incomplete: delete that directory and build again", c.display()),
        Wheels::Fetch(_) => "installing from the wheels pip just fetched failed".to_string(),
    })?;
    let secs = start.elapsed().as_secs_f64();
    events.output(label, &format!("installed {SALT_REQUIREMENT} into {VENV} in {secs:.1} s from {from}"));
    if let Wheels::Fetch(entry) = &wheels {
        match store_wheels(root, &run_wheels, entry) {
            Ok(n) => events.output(label, &format!("stored {n} wheels in the wheel cache {}", entry.display())),
            Err(e) => events.notice(&format!("could not store salt's wheels in the cache ({e:#}); the next build downloads them again")),
        }
    }
    Ok(())
}

/// The wheel cache key for the image's Python: asked from the image's python3 itself.
fn python_key(root: &Root, label: &str, events: &Events) -> anyhow::Result<String> {
    const ASK: &str = "import sys, sysconfig, platform; print('imgforge-python-abi', sys.implementation.cache_tag, sysconfig.get_platform(), '-'.join(platform.libc_ver()))";
    let cmd = ChrootCmd::new(root.path(), "/usr/bin/python3").args(["-c", ASK]);
    let mut answer = None;
    let done = stream(
        |o, e| Ok(cmd.spawn(o, e)?),
        label,
        events,
        |l| {
            if let Some(rest) = l.strip_prefix("imgforge-python-abi ") {
                answer = Some(rest.to_string());
            }
        },
    )?;
    check(done, "python3 (asking its version and platform)")?;
    let answer = answer.context("the image's python3 did not say its version and platform")?;
    cache_key(SALT_REQUIREMENT, &answer).with_context(|| format!("the image's python3 answered \"{answer}\", not its version and platform"))
}

/// `salt-3006.0-cpython-311-linux-x86_64-glibc-2.36` from the requirement and python's
/// "cache_tag platform libc" answer. Pure.
fn cache_key(requirement: &str, answer: &str) -> Option<String> {
    let f: Vec<&str> = answer.split_whitespace().collect();
    let [tag, platform, rest @ ..] = f.as_slice() else { return None };
    let libc = match rest {
        [] => "nolibc",
        [l] if l.trim_matches('-').is_empty() => "nolibc",
        [l] => l,
        _ => return None,
    };
    let clean = |s: &str| {
        s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_')).filter(|p| !p.is_empty()).collect::<Vec<_>>().join("-")
    };
    let parts = [clean(requirement), clean(tag), clean(platform), clean(libc)];
    parts.iter().all(|p| !p.is_empty()).then(|| parts.join("-"))
}

/// Whether `name` is a wheel of the distribution `dist` (`salt-3006.9-py3-none-any.whl`).
pub fn is_wheel_of(name: &str, dist: &str) -> bool {
    name.ends_with(".whl") && name.strip_prefix(dist).is_some_and(|r| r.starts_with('-'))
}

/// The file name of `dist`'s wheel in `dir`.
fn wheel_of(dir: &Path, dist: &str) -> Option<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).ok()?.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names.into_iter().rev().find(|n| is_wheel_of(n, dist))
}

/// A cache entry is complete when it holds pip and salt (entries appear by rename, whole).
fn is_complete(entry: &Path) -> bool {
    wheel_of(entry, "pip").is_some() && wheel_of(entry, "salt").is_some()
}

/// Copies the `.whl` files of the image directory `from` into the cache entry `to`: into a
/// temporary directory beside it, renamed into place when complete (a concurrent build that
/// got there first wins; its entry is as good). Never follows a link in the image. Returns how
/// many wheels were stored.
fn store_wheels(root: &Root, from: &str, to: &Path) -> anyhow::Result<usize> {
    use nix::fcntl::OFlag;
    let parent = to.parent().context("the wheel cache entry has no parent")?;
    std::fs::create_dir_all(parent).with_context(|| format!("Failed to create {}", parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".incoming-")
        .tempdir_in(parent)
        .with_context(|| format!("Failed to write in {}", parent.display()))?;
    let mut n = 0;
    for name in root.list(Path::new(from))? {
        let p = Path::new(from).join(&name);
        if !name.to_string_lossy().ends_with(".whl") || root.lstat(&p)?.is_none_or(|st| st.st_mode & libc::S_IFMT != libc::S_IFREG) {
            continue;
        }
        let fd = root.open_in(&p, OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK, 0)?;
        let mut src = std::fs::File::from(fd);
        let dest = tmp.path().join(&name);
        let mut dst = std::fs::File::create(&dest).with_context(|| format!("Failed to create {}", dest.display()))?;
        std::io::copy(&mut src, &mut dst).with_context(|| format!("Failed to copy {} to {}", p.display(), dest.display()))?;
        n += 1;
    }
    if !is_complete(tmp.path()) {
        bail!("pip left no pip and salt wheels in {from}");
    }
    let tmp = tmp.keep();
    if let Err(e) = std::fs::rename(&tmp, to) {
        let _ = std::fs::remove_dir_all(&tmp);
        if !is_complete(to) {
            return Err(e).with_context(|| format!("Failed to rename {} to {}", tmp.display(), to.display()));
        }
    }
    Ok(n)
}

fn check(done: crate::chroot::run::Finished, what: &str) -> anyhow::Result<()> {
    if done.status.success() { Ok(()) } else { Err(done.failure().context(format!("{what} failed in the image"))) }
}

/// `python3 -m pip download pip` on the host, into `dest`.
fn download_pip(dest: &Path, label: &str, events: &Events) -> anyhow::Result<PathBuf> {
    let mut cmd = crate::chroot::run::host_command("python3");
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
    fn cache_keys_name_the_python_abi() {
        assert_eq!(
            cache_key(SALT_REQUIREMENT, "cpython-311 linux-x86_64 glibc-2.36").as_deref(),
            Some("salt-3006.0-cpython-311-linux-x86_64-glibc-2.36")
        );
        assert_eq!(
            cache_key("salt~=3006.0", "cpython-312 linux-aarch64 -").as_deref(),
            Some("salt-3006.0-cpython-312-linux-aarch64-nolibc")
        );
        assert_eq!(cache_key("salt", "cpython-312 ../../x").as_deref(), Some("salt-cpython-312-..-..-x-nolibc"));
        assert!(cache_key("salt", "").is_none() && cache_key("salt", "a b c d").is_none());
        assert!(is_wheel_of("salt-3006.9-py3-none-any.whl", "salt") && !is_wheel_of("saltfoo-1-py3-none-any.whl", "salt"));
        assert!(!is_wheel_of("salt-3006.9.tar.gz", "salt"));
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
