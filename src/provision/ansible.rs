//! The ansible provisioner: `ansible-playbook` runs on the build host, as root, through the
//! chroot connection plugin (`community.general.chroot`) against a generated inventory whose one
//! host is the image's mount path. No SSH, no agent in the image: modules run with the image's
//! own Python, each in the build's sandbox — the connection's "chroot" is `imgforge
//! sandbox-exec` — so a module that starts a daemon, sets the hostname, a sysctl or a firewall
//! rule changes the sandbox, never the build host. Everything ansible needs on the host (inventory, extra vars, local temp,
//! installed requirements) lives in a temporary directory on the host; its remote temp is on the
//! build's tmpfs `/run` in the image and removed after the run.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, anyhow};

use super::Summary;
use super::plan::AnsiblePlan;
use crate::chroot::resolve::Root;
use crate::chroot::run::{Finished, RUN_DIR, stream};
use crate::progress::Events;

/// The connection plugin: in the `ansible` package from PyPI and Debian, or
/// `ansible-galaxy collection install community.general` next to ansible-core.
pub const CONNECTION: &str = "community.general.chroot";

/// What to install when ansible is missing.
const INSTALL_HINT: &str = "install Ansible on the build host: `pip install ansible` (or the Debian package `ansible`), \
     which bring ansible-playbook and the community.general collection with its chroot connection";

/// Ansible's remote temp inside the image (on the build's tmpfs).
pub fn remote_tmp() -> String {
    format!("{RUN_DIR}/ansible-tmp")
}

/// ansible-playbook on the host's PATH, or what to install.
pub fn check_host() -> anyhow::Result<PathBuf> {
    find_on_path("ansible-playbook").ok_or_else(|| anyhow!("ansible-playbook is not on the build host's PATH: {INSTALL_HINT}"))
}

/// Runs one playbook against the mounted image; the summary is the play recap.
pub fn run(root: &Root, label: &str, p: &AnsiblePlan, events: &Events) -> anyhow::Result<Summary> {
    let exe = check_host()?;
    let work = tempfile::Builder::new().prefix("imgforge-ansible-").tempdir().context("Failed to create a temporary directory")?;
    let env = environment(work.path(), p)?;
    let sandbox = crate::chroot::sandbox::lookup(root.path())
        .ok_or_else(|| anyhow!("no build sandbox for {}: refusing to run ansible unconfined", root.path().display()))?;
    let chroot_exe = work.path().join("chroot");
    crate::chroot::sandbox::write_chroot_wrapper(&chroot_exe, "ansible")?;
    let mut env = env;
    env.insert(crate::chroot::sandbox::ENV.to_string(), sandbox.env_value().into());
    let inventory = work.path().join("inventory.json");
    write_private(&inventory, inventory_json(root.path(), &chroot_exe).as_bytes())?;
    let vars = work.path().join("extra-vars.json");
    write_private(&vars, p.extra_vars.as_bytes())?;
    if let Some(req) = &p.requirements {
        install_requirements(&exe, req, work.path(), &env, label, events)?;
    }
    for f in reboot_users(p) {
        events.notice(&format!(
            "{}: uses the reboot module, which cannot work in an image build (the image is not booted); \
             skip it when IMGFORGE_BUILD is set and test the booted image instead",
            f.display()
        ));
    }
    let mut cmd = crate::chroot::run::host_command(&exe);
    cmd.arg("-i").arg(&inventory).arg("--extra-vars").arg(format!("@{}", vars.display()));
    if !p.tags.is_empty() {
        cmd.arg("--tags").arg(p.tags.join(","));
    }
    if !p.skip_tags.is_empty() {
        cmd.arg("--skip-tags").arg(p.skip_tags.join(","));
    }
    cmd.arg(&p.playbook);
    let mut out = Output::default();
    let done = run_host(cmd, &exe, &env, label, events, |l| out.line(l))?;
    let cleaned = root.remove_tree(Path::new(&remote_tmp()));
    let summary = out.finish(&done)?;
    cleaned?;
    Ok(summary)
}

/// The environment ansible runs with (cleared, then set): quiet, no colour, no retry files, temp
/// dirs in `work` and on the image's tmpfs, the caller's search paths. The chroot plugin hands
/// it on to the modules in the image, hence IMGFORGE_BUILD and SYSTEMD_OFFLINE.
fn environment(work: &Path, p: &AnsiblePlan) -> anyhow::Result<BTreeMap<String, OsString>> {
    let mut env = BTreeMap::new();
    for keep in ["HOME", "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "PYENV_ROOT", "VIRTUAL_ENV"] {
        if let Some(v) = std::env::var_os(keep) {
            env.insert(keep.to_string(), v);
        }
    }
    env.insert("PATH".into(), host_path().into());
    let local_tmp = work.join("tmp");
    std::fs::create_dir(&local_tmp).with_context(|| format!("Failed to create {}", local_tmp.display()))?;
    // The recipe's directories first, then what requirements installs, then ansible's defaults
    // (collections installed with ansible-galaxy next to ansible-core live there).
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
    let roles: Vec<PathBuf> = p
        .roles_path
        .iter()
        .cloned()
        .chain([work.join("roles"), home.join(".ansible/roles")])
        .chain(["/usr/share/ansible/roles", "/etc/ansible/roles"].map(PathBuf::from))
        .collect();
    let collections: Vec<PathBuf> = p
        .collections_path
        .iter()
        .cloned()
        .chain([work.join("collections"), home.join(".ansible/collections")])
        .chain(["/usr/share/ansible/collections"].map(PathBuf::from))
        .collect();
    let set: [(&str, OsString); 13] = [
        ("ANSIBLE_LOCAL_TEMP", local_tmp.into()),
        ("ANSIBLE_REMOTE_TMP", remote_tmp().into()),
        ("ANSIBLE_ROLES_PATH", std::env::join_paths(&roles)?),
        ("ANSIBLE_COLLECTIONS_PATH", std::env::join_paths(&collections)?),
        ("ANSIBLE_NOCOLOR", "1".into()),
        ("ANSIBLE_RETRY_FILES_ENABLED", "0".into()),
        ("ANSIBLE_PYTHON_INTERPRETER", "auto_silent".into()),
        ("ANSIBLE_STDOUT_CALLBACK", "default".into()),
        ("PYTHONUNBUFFERED", "1".into()),
        ("LANG", "C.UTF-8".into()),
        ("DEBIAN_FRONTEND", "noninteractive".into()),
        ("IMGFORGE_BUILD", "1".into()),
        ("SYSTEMD_OFFLINE", "1".into()),
    ];
    env.extend(set.into_iter().map(|(k, v)| (k.to_string(), v)));
    Ok(env)
}

/// The host's PATH with the sbin directories (`chroot` lives in /usr/sbin) appended.
fn host_path() -> String {
    let mut parts: Vec<String> = std::env::var("PATH").unwrap_or_default().split(':').filter(|s| !s.is_empty()).map(String::from).collect();
    for d in crate::chroot::cmd::CHROOT_PATH.split(':') {
        if !parts.iter().any(|p| p == d) {
            parts.push(d.to_string());
        }
    }
    parts.join(":")
}

/// The first executable `name` on the host's PATH.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// The inventory: one host, `image`, reached by "chrooting" into `mount` with `chroot_exe`.
/// JSON is YAML.
fn inventory_json(mount: &Path, chroot_exe: &Path) -> String {
    serde_json::json!({
        "all": { "hosts": { "image": {
            "ansible_host": mount.display().to_string(),
            "ansible_connection": CONNECTION,
            "ansible_chroot_exe": chroot_exe.display().to_string(),
        } } }
    })
    .to_string()
}

fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("Failed to create {}", path.display()))?;
    f.write_all(data).with_context(|| format!("Failed to write {}", path.display()))
}

/// `ansible-galaxy role|collection install -r` into `work` (found through the search paths set
/// in `environment`), each only when the file has that kind: `collection install` refuses a
/// roles-only list.
fn install_requirements(
    playbook_exe: &Path,
    req: &Path,
    work: &Path,
    env: &BTreeMap<String, OsString>,
    label: &str,
    events: &Events,
) -> anyhow::Result<()> {
    let galaxy = playbook_exe.with_file_name("ansible-galaxy");
    let text = std::fs::read_to_string(req).with_context(|| format!("Failed to read {}", req.display()))?;
    let (roles, collections) = requirement_kinds(&text);
    for (what, dir, wanted) in [("role", "roles", roles), ("collection", "collections", collections)] {
        if !wanted {
            continue;
        }
        let mut cmd = crate::chroot::run::host_command(&galaxy);
        cmd.args([what, "install", "-r"]).arg(req).arg("-p").arg(work.join(dir));
        let done = run_host(cmd, &galaxy, env, label, events, |_| {})?;
        if !done.status.success() {
            return Err(done.failure().context(format!("ansible-galaxy {what} install -r {} failed", req.display())));
        }
    }
    Ok(())
}

/// Whether a requirements.yml lists roles (a top-level list, or `roles:`) and collections
/// (`collections:`), from its top-level lines. Pure.
fn requirement_kinds(text: &str) -> (bool, bool) {
    let top: Vec<&str> =
        text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with([' ', '\t', '#']) && !l.starts_with("---")).collect();
    let roles = top.iter().any(|l| l.starts_with("roles:") || l.starts_with('-'));
    let collections = top.iter().any(|l| l.starts_with("collections:"));
    (roles, collections)
}

/// Runs `cmd` (a [`crate::chroot::run::host_command`] of `program`) on the host with exactly
/// `env`, streaming its output.
fn run_host(
    mut cmd: Command,
    program: &Path,
    env: &BTreeMap<String, OsString>,
    label: &str,
    events: &Events,
    on_line: impl FnMut(&str) + Send,
) -> anyhow::Result<Finished> {
    cmd.env_clear().envs(env).stdin(Stdio::null()).current_dir("/");
    tracing::debug!("running {cmd:?}");
    let shown = program.display().to_string();
    stream(
        move |out, err| crate::chroot::run::spawn_host(cmd, out, err).with_context(|| format!("Failed to start {shown}")),
        label,
        events,
        on_line,
    )
}

/// The playbook and role YAML files that call the reboot module.
fn reboot_users(p: &AnsiblePlan) -> Vec<PathBuf> {
    let mut files = vec![p.playbook.clone()];
    let mut dirs: Vec<PathBuf> = p.roles_path.clone();
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => dirs.push(path),
                Ok(t) if t.is_file() && path.extension().is_some_and(|x| x == "yml" || x == "yaml") => files.push(path),
                _ => {}
            }
        }
    }
    files.sort();
    files.into_iter().filter(|f| std::fs::read_to_string(f).is_ok_and(|t| calls_reboot(&t))).collect()
}

/// Whether YAML text has a task calling `reboot` / `ansible.builtin.reboot`. Pure.
fn calls_reboot(text: &str) -> bool {
    text.lines().any(|l| {
        let t = l.trim_start().trim_start_matches("- ");
        t.starts_with("reboot:") || t.starts_with("ansible.builtin.reboot:") || t == "reboot" || t == "ansible.builtin.reboot"
    })
}

/// What the default callback's output says: the failed tasks and the recap.
#[derive(Debug, Default)]
pub struct Output {
    task: String,
    /// (task, message) of each failure, in order.
    pub failed: Vec<(String, String)>,
    /// Counts from the PLAY RECAP line.
    pub recap: Option<BTreeMap<String, u64>>,
    missing_plugin: bool,
}

impl Output {
    /// Takes one output line. Pure.
    pub fn line(&mut self, l: &str) {
        if let Some(rest) = l.strip_prefix("TASK [").or_else(|| l.strip_prefix("RUNNING HANDLER [")) {
            self.task = rest.rsplit_once(']').map_or(rest, |(t, _)| t).to_string();
        } else if l.starts_with("fatal: [") || l.starts_with("failed: [") {
            let msg = l.split_once("=> ").map_or(l, |(_, m)| m);
            self.failed.push((self.task.clone(), short(msg)));
        } else if l.trim() == "...ignoring" {
            self.failed.pop();
        } else if let Some(counts) = recap_line(l) {
            self.recap = Some(counts);
        }
        if l.contains(CONNECTION) && (l.contains("not found") || l.contains("was not found")) {
            self.missing_plugin = true;
        }
    }

    /// The summary on success, or an error naming the failed tasks.
    pub fn finish(self, done: &Finished) -> anyhow::Result<Summary> {
        let counts = self.recap.unwrap_or_default();
        let get = |k: &str| counts.get(k).copied().unwrap_or(0);
        if done.status.success() {
            let changed = get("changed");
            return Ok(Summary { changed, ok: get("ok").saturating_sub(changed), failed: get("failed") + get("unreachable") });
        }
        if self.missing_plugin {
            return Err(done.failure().context(format!("the {CONNECTION} connection plugin is missing: {INSTALL_HINT}")));
        }
        if self.failed.is_empty() {
            return Err(done.failure().context("ansible-playbook failed"));
        }
        let list: Vec<String> = self.failed.iter().map(|(t, m)| format!("task \"{t}\": {m}")).collect();
        Err(anyhow!("ansible-playbook failed ({}):\n      {}", exit(done), list.join("\n      ")))
    }
}

fn exit(done: &Finished) -> String {
    done.status.code().map_or_else(|| done.status.to_string(), |c| format!("exit code {c}"))
}

fn short(s: &str) -> String {
    const MAX: usize = 400;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// "image : ok=5 changed=3 unreachable=0 failed=0 …" → counts. Pure.
fn recap_line(l: &str) -> Option<BTreeMap<String, u64>> {
    let (_, rest) = l.split_once(" : ")?;
    let counts: BTreeMap<String, u64> =
        rest.split_whitespace().filter_map(|kv| kv.split_once('=')).filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?))).collect();
    (counts.contains_key("ok") && counts.contains_key("failed")).then_some(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn done(code: i32) -> Finished {
        Finished { status: std::process::ExitStatus::from_raw(code << 8), tail: Default::default() }
    }

    const RUN: &str = "PLAY [all] ****\n\nTASK [Gathering Facts] ****\nok: [image]\n\nTASK [install cowsay] ****\nchanged: [image]\n\n\
        TASK [may fail] ****\nfatal: [image]: FAILED! => {\"changed\": false, \"msg\": \"nope\"}\n...ignoring\n\n\
        TASK [boom] ****\nfatal: [image]: FAILED! => {\"changed\": false, \"msg\": \"it broke\"}\n\n\
        PLAY RECAP ****\nimage                      : ok=4    changed=1    unreachable=0    failed=1    skipped=0    rescued=0    ignored=1   \n";

    #[test]
    fn failed_tasks_are_named() {
        let mut o = Output::default();
        RUN.lines().for_each(|l| o.line(l));
        assert_eq!(o.failed, [("boom".to_string(), "{\"changed\": false, \"msg\": \"it broke\"}".to_string())]);
        let e = format!("{:#}", o.finish(&done(2)).unwrap_err());
        assert!(e.contains("task \"boom\"") && e.contains("it broke") && e.contains("exit code 2") && !e.contains("may fail"), "{e}");
    }

    #[test]
    fn recap_is_the_summary() {
        let mut o = Output::default();
        "TASK [a] ***\nchanged: [image]\nPLAY RECAP ***\nimage : ok=5 changed=3 unreachable=0 failed=0 skipped=1\n"
            .lines()
            .for_each(|l| o.line(l));
        assert_eq!(o.finish(&done(0)).unwrap(), Summary { changed: 3, ok: 2, failed: 0 });
    }

    #[test]
    fn missing_plugin_says_what_to_install() {
        let mut o = Output::default();
        o.line("[ERROR]: the connection plugin 'community.general.chroot' was not found");
        let e = format!("{:#}", o.finish(&done(1)).unwrap_err());
        assert!(e.contains("pip install ansible"), "{e}");
    }

    #[test]
    fn reboot_is_spotted() {
        assert!(calls_reboot("- name: r\n  ansible.builtin.reboot:\n    msg: x\n"));
        assert!(calls_reboot("  - reboot:\n"));
        assert!(!calls_reboot("- name: reboot required?\n  stat: { path: /var/run/reboot-required }\n"));
    }

    #[test]
    fn requirements_kinds() {
        assert_eq!(requirement_kinds("---\n- src: file:///r.tar.gz\n  name: r\n"), (true, false));
        assert_eq!(requirement_kinds("# c\ncollections:\n  - name: community.general\n"), (false, true));
        assert_eq!(requirement_kinds("roles:\n  - name: a\ncollections:\n  - b\n"), (true, true));
    }

    #[test]
    fn inventory_points_at_the_mount() {
        let v: serde_json::Value =
            serde_json::from_str(&inventory_json(Path::new("/tmp/imgforge-mnt/root"), Path::new("/w/chroot"))).unwrap();
        assert_eq!(v["all"]["hosts"]["image"]["ansible_chroot_exe"], "/w/chroot");
        assert_eq!(v["all"]["hosts"]["image"]["ansible_host"], "/tmp/imgforge-mnt/root");
        assert_eq!(v["all"]["hosts"]["image"]["ansible_connection"], CONNECTION);
    }
}
