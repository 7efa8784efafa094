//! Configuration-management provisioners with the real tools, on the cloud-like upstream, as
//! root (issue 6). One image per tool carries all of that tool's checks; each tool's failure
//! cases stop early in the provisioning window. Tests skip with a reason only when the tool
//! cannot be had here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::path::Path;
use std::process::Output;

use util::*;

/// `build` with the given cache directory.
fn build_cached(dir: &Path, recipe_text: &str, files: &[(&str, &str)], cache: &Path) -> Output {
    for (p, c) in files {
        let p = dir.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, c).unwrap();
    }
    let r = recipe(dir, recipe_text);
    let o = run(imgforge().arg("build").arg(&r).arg("-o").arg(dir.join("out")).arg("--cache-dir").arg(cache));
    assert_clean(dir);
    o
}

/// Writes `files` (path relative to `dir`, content) and the recipe, then builds.
fn build(dir: &Path, recipe_text: &str, files: &[(&str, &str)]) -> Output {
    for (p, c) in files {
        let p = dir.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, c).unwrap();
    }
    let r = recipe(dir, recipe_text);
    let o = run(imgforge().arg("build").arg(&r).arg("-o").arg(dir.join("out")));
    assert_clean(dir);
    o
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The manifest's report of provisioner `i`; every provisioner's time is printed for the test
/// log (what each tool adds over a shell step).
fn step_report(dir: &Path, name: &str, i: usize) -> serde_json::Value {
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(format!("out/{name}.manifest.json"))).unwrap()).unwrap();
    for p in m["provisioners"].as_array().unwrap() {
        eprintln!("{name}: provisioner {} ({}): {:.1} s, summary {}", p["name"], p["type"], p["seconds"].as_f64().unwrap(), p["summary"]);
    }
    eprintln!("{name}: build steps {}", m["steps"]);
    m["provisioners"][i].clone()
}

fn manifest(dir: &Path, name: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join(format!("out/{name}.manifest.json"))).unwrap()).unwrap()
}

/// The manifest lists `unit` as deferred to first boot with (at least) `actions`, enabled.
fn assert_deferred(m: &serde_json::Value, unit: &str, actions: &[&str]) {
    let services = m["services"].as_array().unwrap_or_else(|| panic!("no services in the manifest: {m}"));
    let s = services.iter().find(|s| s["unit"] == unit).unwrap_or_else(|| panic!("{unit} not deferred: {services:?}"));
    for a in actions {
        assert!(s["actions"].as_array().unwrap().iter().any(|x| x == a), "{unit}: {a} not recorded: {s}");
    }
    assert_eq!(s["enabled"], "enabled", "{s}");
}

/// Nothing of a run is left in the image: the given paths, imgforge's run directory and the
/// guards; and the residue scan found nothing.
fn assert_nothing_left(dir: &Path, name: &str, m: &RoMount, paths: &[&str]) {
    for p in paths.iter().chain(&["/run/imgforge", "/usr/sbin/policy-rc.d", "/root/.ansible", "/etc/salt/pki", "/var/lib/puppet/ssl"]) {
        assert!(m.path(p).symlink_metadata().is_err(), "{p} left in the image");
    }
    let seal: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(format!("out/{name}.seal.json"))).unwrap()).unwrap();
    assert_eq!(seal["residue"]["findings"].as_array().unwrap().len(), 0, "{seal}");
}

/// The public key the CM suites give their `deploy` user.
const DEPLOY_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGPQpQzszlciSQly7iDE7PR0At9SdngcDrZ6xLIrbBEM deploy@ci";

const UNIT: &str = "[Unit]\nDescription=imgforge test\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n";

// ---------------------------------------------------------------------------------------------
// Ansible

const PLAYBOOK: &str = r#"- hosts: all
  roles:
    - web
    - extra
  tasks:
    - name: policy-rc.d is in place and /proc/1 exists
      command: test -x /usr/sbin/policy-rc.d -a -e /proc/1/cmdline
      changed_when: false
"#;

const ROLE_TASKS: &str = r#"- name: install a Debian package
  apt:
    name: hello
    update_cache: yes
- name: template a file
  template:
    src: app.conf.j2
    dest: /etc/app.conf
    mode: "0640"
- name: create a user
  user:
    name: deploy
    shell: /bin/bash
- name: the user's key
  ansible.posix.authorized_key:
    user: deploy
    key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGPQpQzszlciSQly7iDE7PR0At9SdngcDrZ6xLIrbBEM deploy@ci"
- name: unit file
  copy:
    src: imgforge-test.service
    dest: /etc/systemd/system/imgforge-test.service
- name: enable and start the unit, live-server style
  service:
    name: imgforge-test
    state: started
    enabled: yes
  notify: restart imgforge-test
- name: a kernel parameter, applied (reload) and persisted
  sysctl:
    name: vm.swappiness
    value: "10"
"#;

const ROLE_HANDLERS: &str = "- name: restart imgforge-test\n  systemd:\n    name: imgforge-test\n    state: restarted\n";

/// The same work as the playbook done by a shell step (another package, user and unit), as the
/// baseline the tools' times are compared with in the test log.
const SHELL_BASELINE: &str = "[[provision]]\ntype = \"shell\"\nname = \"shell baseline\"\ninline = [\"apt-get update -qq\", \"apt-get install -y -qq tree >/dev/null\", \"useradd -m -s /bin/bash deploy0\", \"echo role=web > /etc/app0.conf\", 'printf \"%s\\n\" \"[Service]\" ExecStart=/bin/true \"[Install]\" WantedBy=multi-user.target > /etc/systemd/system/base0.service', \"systemctl enable base0\"]\n\n";

fn ansible_recipe(playbook: &str) -> String {
    let baseline = if playbook.ends_with("site.yml") { SHELL_BASELINE } else { "" };
    format!(
        "{}{baseline}[[provision]]\ntype = \"ansible\"\nname = \"site\"\nplaybook = \"{playbook}\"\nroles_path = [\"ansible/roles\"]\nrequirements = \"ansible/requirements.yml\"\nextra_vars = {{ role = \"web\", port = 8080 }}\n",
        cloud_head("ans", "1.0.0")
    )
}

fn have_ansible(test: &str) -> bool {
    let ok = std::process::Command::new("ansible-playbook").arg("--version").output().is_ok_and(|o| o.status.success());
    ok || skip(test, "ansible-playbook is not installed (scripts/setup --tests installs it with pip)")
}

#[test]
fn ansible_playbook_end_to_end() {
    if !have_root("ansible_playbook_end_to_end") || !have_ansible("ansible_playbook_end_to_end") {
        return;
    }
    let dir = testdir("ansible");
    let files = [
        ("ansible/site.yml", PLAYBOOK),
        ("ansible/roles/web/tasks/main.yml", ROLE_TASKS),
        ("ansible/roles/web/templates/app.conf.j2", "role={{ role }} port={{ port }} build={{ lookup('env', 'IMGFORGE_BUILD') }}\n"),
        ("ansible/roles/web/files/imgforge-test.service", UNIT),
        ("ansible/roles/web/handlers/main.yml", ROLE_HANDLERS),
        ("ansible/fail.yml", "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: this task fails\n      command: /bin/false\n"),
    ];
    // A role from requirements.yml (a local tarball: no galaxy server here).
    let extra = dir.path().join("extra-role");
    std::fs::create_dir_all(extra.join("extra/tasks")).unwrap();
    std::fs::create_dir_all(extra.join("extra/meta")).unwrap();
    std::fs::write(extra.join("extra/tasks/main.yml"), "- copy: { content: \"from requirements\\n\", dest: /etc/extra-role }\n").unwrap();
    std::fs::write(
        extra.join("extra/meta/main.yml"),
        "galaxy_info: { author: t, description: t, license: MIT, min_ansible_version: '2.9', platforms: [] }\ndependencies: []\n",
    )
    .unwrap();
    let tar = dir.path().join("extra.tar.gz");
    assert!(std::process::Command::new("tar").arg("czf").arg(&tar).arg("-C").arg(&extra).arg("extra").status().unwrap().success());
    std::fs::create_dir_all(dir.path().join("ansible")).unwrap();
    std::fs::write(dir.path().join("ansible/requirements.yml"), format!("- src: file://{}\n  name: extra\n", tar.display())).unwrap();
    let o = build(dir.path(), &ansible_recipe("ansible/site.yml"), &files);
    assert!(o.status.success(), "{}", show(&o));
    let err = stderr(&o);
    assert!(err.contains("[site] TASK [web : template a file]"), "output not streamed with the label: {err}");
    let p = step_report(dir.path(), "ans", 1);
    assert_eq!(p["type"], "ansible");
    assert_eq!(p["summary"]["failed"], 0);
    assert!(p["summary"]["changed"].as_u64().unwrap() >= 5, "{p}");

    let m = RoMount::open(&dir.path().join("out/ans.raw"), 1);
    assert!(m.path("/usr/bin/hello").exists() && m.path("/usr/bin/tree").exists(), "package not installed");
    assert_eq!(m.read("/etc/app.conf"), "role=web port=8080 build=1\n");
    assert_eq!(m.read("/etc/extra-role"), "from requirements\n");
    assert!(m.read("/etc/passwd").lines().any(|l| l.starts_with("deploy:") && l.ends_with(":/bin/bash")));
    let wants = m.path("/etc/systemd/system/multi-user.target.wants/imgforge-test.service");
    assert_eq!(std::fs::read_link(wants).unwrap(), Path::new("/etc/systemd/system/imgforge-test.service"));
    assert!(m.read("/etc/sysctl.conf").contains("vm.swappiness=10"), "sysctl not persisted");
    assert!(m.read("/home/deploy/.ssh/authorized_keys").contains(DEPLOY_KEY), "the recipe's authorized key was not kept");
    assert_nothing_left(dir.path(), "ans", &m, &["/root/.ansible_async"]);
    let manifest = manifest(dir.path(), "ans");
    assert_deferred(&manifest, "imgforge-test.service", &["start", "restart"]);
    assert_eq!(manifest["sandbox_sysctls"]["vm.swappiness"], "10", "{}", manifest["sandbox_sysctls"]);
    assert_ne!(std::fs::read_to_string("/proc/sys/vm/swappiness").unwrap().trim(), "10", "the playbook's sysctl reached the host");
    drop(m);

    // A failing task fails the build, named.
    let dir = testdir("ansible-fail");
    let mut files = files.to_vec();
    files.push(("ansible/requirements.yml", "---\n"));
    let o = build(dir.path(), &ansible_recipe("ansible/fail.yml"), &files);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = stderr(&o);
    assert!(err.contains("task \"this task fails\"") && err.contains("\"site\" (ansible) failed"), "{err}");
}

#[test]
fn ansible_missing_on_the_host_is_named_before_the_build() {
    if !have_root("ansible_missing_on_the_host_is_named_before_the_build") {
        return;
    }
    let dir = testdir("ansible-missing");
    std::fs::write(dir.path().join("site.yml"), PLAYBOOK).unwrap();
    std::fs::write(dir.path().join("up.img"), b"x").unwrap();
    let text = format!(
        "[image]\nname = \"x\"\nversion = \"1\"\n[source]\nurl = \"up.img\"\nsha256 = \"{}\"\n[[provision]]\ntype = \"ansible\"\nplaybook = \"site.yml\"\n",
        "0".repeat(64)
    );
    let r = recipe(dir.path(), &text);
    let o = run(imgforge().arg("build").arg(&r).env("PATH", dir.path()));
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = stderr(&o);
    assert!(err.contains("ansible-playbook is not on the build host's PATH") && err.contains("pip install ansible"), "{err}");
    assert!(!err.contains("verifying"), "the build started: {err}");
}

// ---------------------------------------------------------------------------------------------
// Salt (pip-installed into the image for the run)

/// A live-server Salt tree: a package list, a templated file from salt:// with a Jinja
/// `grains.filter_by` map, a user with a home and an authorized key, and a service that is
/// running, enabled and restarted when its unit changes.
const SALT_STATES: &str = r#"{% set web = salt['grains.filter_by']({'Debian': {'group': 'www-data'}, 'RedHat': {'group': 'apache'}}, grain='os_family') %}
base-packages:
  pkg.installed:
    - pkgs:
      - hello
      - tree
    - refresh: True
/etc/rails-app.conf:
  file.managed:
    - source: salt://rails/app.conf.j2
    - template: jinja
    - context:
        group: {{ web.group }}
deploy:
  user.present:
    - shell: /bin/bash
    - home: /home/deploy
    - createhome: True
deploy-key:
  ssh_auth.present:
    - user: deploy
    - name: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGPQpQzszlciSQly7iDE7PR0At9SdngcDrZ6xLIrbBEM deploy@ci"
    - require:
      - user: deploy
/etc/systemd/system/imgforge-test.service:
  file.managed:
    - source: salt://rails/imgforge-test.service
imgforge-test:
  service.running:
    - enable: True
    - watch:
      - file: /etc/systemd/system/imgforge-test.service
"#;

fn salt_recipe(extra: &str) -> String {
    format!(
        "{}[[provision]]\ntype = \"salt\"\nname = \"salt\"\nstate_tree = \"salt/states\"\npillar_tree = \"salt/pillar\"\nminion_id = \"rails-base-01\"\ninstall = \"pip\"\n{extra}",
        cloud_head("slt", "1.0.0")
    )
}

#[test]
fn salt_masterless_end_to_end() {
    if !have_root("salt_masterless_end_to_end") {
        return;
    }
    if !std::process::Command::new("python3").args(["-m", "pip", "--version"]).output().is_ok_and(|o| o.status.success()) {
        skip("salt_masterless_end_to_end", "install = \"pip\" needs the host's python3 -m pip");
        return;
    }
    let files = [
        ("salt/states/top.sls", "base:\n  'rails-base-*':\n    - rails\n  'db-*':\n    - broken\n"),
        ("salt/states/rails/init.sls", SALT_STATES),
        ("salt/states/rails/imgforge-test.service", UNIT),
        (
            "salt/states/rails/app.conf.j2",
            "port={{ pillar['app']['port'] }} id={{ grains['id'] }} build={{ salt['environ.get']('IMGFORGE_BUILD') }} group={{ group }}\n",
        ),
        ("salt/states/broken.sls", "broken:\n  cmd.run:\n    - name: /bin/false\n"),
        ("salt/pillar/top.sls", "base:\n  'rails-base-*':\n    - app\n"),
        ("salt/pillar/app.sls", "app:\n  port: 3000\n"),
    ];
    let cache = &salt_cache().cache;
    let dir = testdir("salt");
    let o = build_cached(dir.path(), &salt_recipe(""), &files, cache);
    assert!(o.status.success(), "{}", show(&o));
    let err = stderr(&o);
    assert!(err.contains("[salt] ") && err.contains("summary: "), "output not streamed with the label: {err}");
    let p = step_report(dir.path(), "slt", 0);
    assert_eq!((p["type"].as_str(), p["summary"]["failed"].as_u64()), (Some("salt"), Some(0)), "{p}");
    assert!(p["summary"]["changed"].as_u64().unwrap() >= 5, "{p}");

    let m = RoMount::open(&dir.path().join("out/slt.raw"), 1);
    assert!(m.path("/usr/bin/hello").exists(), "package not installed");
    assert_eq!(m.read("/etc/rails-app.conf").trim_end(), "port=3000 id=rails-base-01 build=1 group=www-data");
    assert!(m.path("/usr/bin/tree").exists(), "package list not installed");
    assert!(m.read("/home/deploy/.ssh/authorized_keys").contains(DEPLOY_KEY), "the recipe's authorized key was not kept");
    assert!(m.read("/etc/passwd").lines().any(|l| l.starts_with("deploy:") && l.ends_with(":/bin/bash")));
    let wants = m.path("/etc/systemd/system/multi-user.target.wants/imgforge-test.service");
    assert_eq!(std::fs::read_link(wants).unwrap(), Path::new("/etc/systemd/system/imgforge-test.service"));
    assert_nothing_left(
        dir.path(),
        "slt",
        &m,
        &["/opt/imgforge-salt", "/etc/salt", "/var/cache/salt", "/var/log/salt", "/run/systemd/system"],
    );
    drop(m);
    assert_deferred(&manifest(dir.path(), "slt"), "imgforge-test.service", &["start"]);

    // A failing state fails the build, listing the state and its comment.
    let dir = testdir("salt-fail");
    let o = build_cached(dir.path(), &salt_recipe("states = [\"rails\", \"broken\"]\n"), &files, cache);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = stderr(&o);
    assert!(err.contains("1 salt state(s) failed") && err.contains("state \"broken\": Command \"/bin/false\" run"), "{err}");

    // A highstate without a top file is refused before anything runs.
    let dir = testdir("salt-notop");
    let nontop: Vec<_> = files.iter().filter(|f| f.0 != "salt/states/top.sls").copied().collect();
    let o = build(dir.path(), &salt_recipe(""), &nontop);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = stderr(&o);
    assert!(err.contains("recipe.toml: line 11: [[provision]] #1") && err.contains("no top.sls"), "{err}");
}

/// The seconds of the "installed salt… in N s from …" line, and where from.
/// A Salt tree that only writes a marker file.
const MARKER_TREE: [(&str, &str); 2] = [
    ("salt/states/top.sls", "base:\n  '*':\n    - marker\n"),
    ("salt/states/marker.sls", "/etc/salted:\n  file.managed:\n    - contents: wheels\n"),
];

fn marker_recipe(extra: &str) -> String {
    format!(
        "{}[[provision]]\ntype = \"salt\"\nname = \"salt\"\nstate_tree = \"salt/states\"\nminion_id = \"wheels\"\ninstall = \"pip\"\n{extra}",
        cloud_head("whl", "1.0.0")
    )
}

/// The salt wheel cache this test process shares: filled once, from the package index, by a
/// build of the marker tree into an empty cache (checked here), then used by every salt build.
struct SaltCache {
    cache: std::path::PathBuf,
    entry: std::path::PathBuf,
    first_install: f64,
}

fn salt_cache() -> &'static SaltCache {
    static CACHE: std::sync::OnceLock<SaltCache> = std::sync::OnceLock::new();
    CACHE.get_or_init(|| {
        let dir = testdir("salt-cache").keep();
        let cache = dir.join("cache");
        for (p, c) in MARKER_TREE {
            std::fs::create_dir_all(dir.join(p).parent().unwrap()).unwrap();
            std::fs::write(dir.join(p), c).unwrap();
        }
        let r = recipe(&dir, &marker_recipe(""));
        let o = run(imgforge().arg("build").arg(&r).arg("-o").arg(dir.join("out")).arg("--cache-dir").arg(&cache));
        assert_clean(&dir);
        assert!(o.status.success(), "{}", show(&o));
        let (first_install, from) = salt_install_line(&stderr(&o));
        assert_eq!(from, "the package index");
        let stored = stderr(&o).lines().find(|l| l.contains("wheels in the wheel cache")).unwrap_or_default().to_string();
        let entries: Vec<_> = std::fs::read_dir(cache.join("salt-wheels")).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
        let entry = entries[0].clone();
        let key = entry.file_name().unwrap().to_string_lossy().into_owned();
        assert!(key.starts_with("salt-3006.0-cpython-3") && key.contains("-linux-x86_64-glibc-"), "{key}");
        assert!(stored.contains(&entry.display().to_string()), "{stored}");
        let wheels: Vec<String> =
            std::fs::read_dir(&entry).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        for want in ["pip-", "salt-3006.", "PyYAML-", "Jinja2-"] {
            assert!(
                wheels.iter().any(|w| w.to_lowercase().starts_with(&want.to_lowercase()) && w.ends_with(".whl")),
                "no {want}*.whl in {wheels:?}"
            );
        }
        std::fs::remove_dir_all(dir.join("out")).unwrap();
        SaltCache { cache, entry, first_install }
    })
}

fn salt_install_line(err: &str) -> (f64, String) {
    let l = err
        .lines()
        .find(|l| l.contains("installed salt~=3006.0 into /opt/imgforge-salt in "))
        .unwrap_or_else(|| panic!("no install line: {err}"));
    let rest = l.split(" in ").nth(1).unwrap();
    let secs: f64 = rest.split(" s from ").next().unwrap().parse().unwrap();
    eprintln!("salt install: {l}");
    (secs, rest.split(" s from ").nth(1).unwrap().to_string())
}

/// `install = "pip"` fetches wheels once: the first build (empty cache) downloads and builds
/// them with pip and stores them in the cache under a key naming the image's Python; the
/// second installs from the cache in under 15 s. Then the same wheels as a recipe wheelhouse
/// install with no network at all (the build runs in an empty network namespace), and a
/// wheelhouse missing a dependency fails, naming it, instead of falling back to the index.
#[test]
fn salt_pip_wheels_are_fetched_once_then_cached_or_offline() {
    let test = "salt_pip_wheels_are_fetched_once_then_cached_or_offline";
    if !have_root(test) {
        return;
    }
    if !std::process::Command::new("python3").args(["-m", "pip", "--version"]).output().is_ok_and(|o| o.status.success()) {
        skip(test, "install = \"pip\" needs the host's python3 -m pip");
        return;
    }
    let filled = salt_cache();
    let (cache, entry, first) = (&filled.cache, &filled.entry, filled.first_install);
    let dir = testdir("salt-wheels");
    for (p, c) in MARKER_TREE {
        std::fs::create_dir_all(dir.path().join(p).parent().unwrap()).unwrap();
        std::fs::write(dir.path().join(p), c).unwrap();
    }
    let build_with = |mut cmd: std::process::Command, extra: &str, cache: &Path| {
        let r = recipe(dir.path(), &marker_recipe(extra));
        let o = run(cmd.arg("build").arg(&r).arg("-o").arg(dir.path().join("out")).arg("--cache-dir").arg(cache));
        assert_clean(dir.path());
        o
    };

    let o = build_with(imgforge(), "", cache);
    assert!(o.status.success(), "{}", show(&o));
    let (second, from) = salt_install_line(&stderr(&o));
    assert_eq!(from, format!("the wheel cache {}", entry.display()));
    eprintln!("salt install: first build {first:.1} s, second build {second:.1} s");
    assert!(second < 15.0, "the cached install took {second} s");
    step_report(dir.path(), "whl", 0);
    let m = RoMount::open(&dir.path().join("out/whl.raw"), 1);
    assert_eq!(m.read("/etc/salted").trim_end(), "wheels");
    assert_nothing_left(dir.path(), "whl", &m, &["/opt/imgforge-salt"]);
    drop(m);

    // A wheelhouse, with no network: an empty network namespace.
    let house = dir.path().join("wheels");
    let cp = run(std::process::Command::new("cp").arg("-r").arg(entry).arg(&house));
    assert!(cp.status.success(), "{}", show(&cp));
    let cache = dir.path().join("empty-cache");
    let offline = || {
        let mut c = std::process::Command::new("unshare");
        c.args(["--net", "--"]).arg(env!("CARGO_BIN_EXE_imgforge"));
        c
    };
    let o = build_with(offline(), "wheelhouse = \"wheels/\"\n", &cache);
    assert!(o.status.success(), "{}", show(&o));
    let (_, from) = salt_install_line(&stderr(&o));
    assert!(from.starts_with(&format!("the wheelhouse {}", house.display())), "{from}");
    assert!(!cache.join("salt-wheels").exists(), "a wheelhouse build wrote the cache");
    let m = RoMount::open(&dir.path().join("out/whl.raw"), 1);
    assert_eq!(m.read("/etc/salted").trim_end(), "wheels");
    drop(m);

    // Missing a dependency: no fallback to the index, the error names the wheelhouse.
    for w in std::fs::read_dir(&house).unwrap() {
        let w = w.unwrap().path();
        if w.file_name().unwrap().to_string_lossy().to_lowercase().starts_with("pyyaml-") {
            std::fs::remove_file(w).unwrap();
        }
    }
    let o = build_with(offline(), "wheelhouse = \"wheels/\"\n", &cache);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = stderr(&o);
    assert!(err.contains(&format!("the wheelhouse {}/ (recipe option wheelhouse) lacks a wheel", house.display())), "{err}");
    assert!(err.to_lowercase().contains("pyyaml"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Puppet (installed into the image from Debian's packages by a shell provisioner)

const MANIFEST: &str = r#"package { 'hello': ensure => installed }
user { 'deploy': ensure => present, shell => '/bin/bash', managehome => true, home => '/home/deploy' }
-> file { '/home/deploy/.ssh': ensure => directory, owner => 'deploy', mode => '0700' }
-> file { '/home/deploy/.ssh/authorized_keys': content => "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGPQpQzszlciSQly7iDE7PR0At9SdngcDrZ6xLIrbBEM deploy@ci\n", owner => 'deploy', mode => '0600' }
file { '/etc/systemd/system/imgforge-test.service': source => 'puppet:///modules/app/imgforge-test.service' }
-> service { 'imgforge-test': ensure => running, enable => true }
include app
"#;

fn puppet_recipe(manifest: &str) -> String {
    format!(
        "{}[[provision]]\ntype = \"shell\"\nname = \"install puppet\"\ninline = [\"apt-get update -qq\", \"apt-get install -y -qq --no-install-recommends puppet >/dev/null\"]\n\n\
         [[provision]]\ntype = \"puppet\"\nname = \"puppet\"\nmanifest = \"{manifest}\"\nmodule_path = [\"puppet/modules\"]\nfacts = {{ role = \"web\" }}\ncertname = \"web-base\"\n",
        cloud_head("pup", "1.0.0")
    )
}

#[test]
fn puppet_apply_end_to_end() {
    if !have_root("puppet_apply_end_to_end") {
        return;
    }
    let files = [
        ("puppet/site.pp", MANIFEST),
        ("puppet/modules/app/manifests/init.pp", "class app {\n  file { '/etc/app.conf': content => template('app/app.conf.erb') }\n}\n"),
        (
            "puppet/modules/app/templates/app.conf.erb",
            "role=<%= @facts['role'] %> certname=<%= @trusted['certname'] %> build=<%= ENV['IMGFORGE_BUILD'] %>\n",
        ),
        ("puppet/modules/app/files/imgforge-test.service", UNIT),
        (
            "puppet/fail.pp",
            "exec { 'this resource fails': command => '/bin/false' }\nfile { '/etc/after-fail': content => 'x', require => Exec['this resource fails'] }\n",
        ),
    ];
    let dir = testdir("puppet");
    let o = build(dir.path(), &puppet_recipe("puppet/site.pp"), &files);
    assert!(o.status.success(), "{}", show(&o));
    let err = stderr(&o);
    assert!(err.contains("[puppet] Notice: /Stage[main]/App/File[/etc/app.conf]/ensure"), "output not streamed with the label: {err}");
    let p = step_report(dir.path(), "pup", 1);
    assert_eq!((p["type"].as_str(), p["summary"]["failed"].as_u64()), (Some("puppet"), Some(0)), "{p}");
    assert!(p["summary"]["changed"].as_u64().unwrap() >= 5, "{p}");

    let m = RoMount::open(&dir.path().join("out/pup.raw"), 1);
    assert!(m.path("/usr/bin/hello").exists(), "package not installed");
    assert_eq!(m.read("/etc/app.conf"), "role=web certname=web-base build=1\n");
    assert!(m.read("/home/deploy/.ssh/authorized_keys").contains(DEPLOY_KEY), "the recipe's authorized key was not kept");
    assert!(m.read("/etc/passwd").lines().any(|l| l.starts_with("deploy:") && l.ends_with(":/bin/bash")));
    let wants = m.path("/etc/systemd/system/multi-user.target.wants/imgforge-test.service");
    assert_eq!(std::fs::read_link(wants).unwrap(), Path::new("/etc/systemd/system/imgforge-test.service"));
    assert_nothing_left(
        dir.path(),
        "pup",
        &m,
        &["/etc/puppet/ssl", "/var/cache/puppet/state/last_run_report.yaml", "/var/cache/puppet/reports", "/var/lib/puppet/reports"],
    );
    drop(m);
    assert_deferred(&manifest(dir.path(), "pup"), "imgforge-test.service", &["start"]);

    // A failing resource fails the build, named.
    let dir = testdir("puppet-fail");
    let o = build(dir.path(), &puppet_recipe("puppet/fail.pp"), &files);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = stderr(&o);
    assert!(err.contains("failed resources") && err.contains("Exec[this resource fails]"), "{err}");
}

/// (pid, command line) of the processes whose command line holds `word`.
fn processes_with(word: &str) -> Vec<(u32, String)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|p| Some((p.file_name().to_str()?.parse::<u32>().ok()?, std::fs::read(p.path().join("cmdline")).ok()?)))
        .map(|(pid, c)| (pid, String::from_utf8_lossy(&c).replace('\0', " ").trim().to_string()))
        .filter(|(_, c)| c.contains(word))
        .collect()
}

/// `pid` and its ancestors up to (not including) `top`, with their command lines.
fn ancestry(pid: u32, top: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let mut p = pid;
    while p > 1 && p != top {
        let cmd = std::fs::read(format!("/proc/{p}/cmdline")).map(|c| String::from_utf8_lossy(&c).replace('\0', " ")).unwrap_or_default();
        out.push((p, cmd.trim().to_string()));
        let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
        p = status.lines().find_map(|l| l.strip_prefix("PPid:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    }
    out
}

/// A CM provisioner's recipe, its files, and the tool that runs its task.
type CmKind = (&'static str, String, Vec<(&'static str, &'static str)>, &'static str);

/// `kill -9` of a build while each configuration-management provisioner runs a task (a `sleep`
/// in the image, seen from the host's /proc): the task, the tool between it and imgforge
/// (ansible-playbook on the host; salt-call and puppet in the sandbox) and everything else of
/// the build are gone, nothing is attached or mounted, nothing is in the output directory.
#[test]
fn kill_9_inside_each_cm_provisioner_leaves_nothing() {
    if !have_root("kill_9_inside_each_cm_provisioner_leaves_nothing") || !have_ansible("kill_9_inside_each_cm_provisioner_leaves_nothing") {
        return;
    }
    let salt_cache = &salt_cache().cache;
    let kinds: [CmKind; 3] = [
        (
            "ansible",
            format!("{}[[provision]]\ntype = \"ansible\"\nname = \"site\"\nplaybook = \"site.yml\"\n", cloud_head("k9a", "1.0.0")),
            vec![("site.yml", "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: a long task\n      command: sleep 31331\n")],
            "ansible-playbook",
        ),
        (
            "salt",
            format!(
                "{}[[provision]]\ntype = \"salt\"\nname = \"salt\"\nstate_tree = \"salt\"\nminion_id = \"k9\"\ninstall = \"pip\"\n",
                cloud_head("k9s", "1.0.0")
            ),
            vec![("salt/top.sls", "base:\n  '*':\n    - long\n"), ("salt/long.sls", "long:\n  cmd.run:\n    - name: sleep 31332\n")],
            "salt-call",
        ),
        (
            "puppet",
            puppet_recipe("long.pp").replace("module_path = [\"puppet/modules\"]\n", "").replace("\"pup\"", "\"k9p\""),
            vec![("long.pp", "exec { 'a long task': command => '/bin/sleep 31333' }\n")],
            "puppet",
        ),
    ];
    for (i, (kind, text, files, tool)) in kinds.into_iter().enumerate() {
        let task = format!("sleep 3133{}", i + 1);
        let dir = testdir(&format!("kill9-{kind}"));
        let d = dir.path();
        for (p, c) in &files {
            std::fs::create_dir_all(d.join(p).parent().unwrap()).unwrap();
            std::fs::write(d.join(p), c).unwrap();
        }
        let r = recipe(d, &text);
        let mut child = imgforge()
            .arg("build")
            .arg(&r)
            .arg("-o")
            .arg(d.join("out"))
            .arg("--cache-dir")
            .arg(salt_cache)
            .arg("--no-test")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        let sleeper = loop {
            if let Some((pid, _)) = processes_with(&task).into_iter().find(|(_, c)| c.starts_with("sleep") || c.starts_with("/bin/sleep")) {
                break pid;
            }
            assert!(child.try_wait().unwrap().is_none(), "{kind}: the build ended before its task ran");
            assert!(started.elapsed().as_secs() < 600, "{kind}: the task never started");
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let chain = ancestry(sleeper, child.id());
        assert!(chain.iter().any(|(_, c)| c.contains(tool)), "{kind}: {tool} is not between the task and imgforge: {chain:?}");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
        child.wait().unwrap();
        let alive = || -> Vec<(u32, String)> {
            chain
                .iter()
                .filter(|(pid, cmd)| {
                    std::fs::read(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|c| String::from_utf8_lossy(&c).replace('\0', " ").trim() == cmd)
                })
                .cloned()
                .collect()
        };
        for _ in 0..100 {
            if alive().is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(alive().is_empty(), "{kind}: still running 5 s after the kill: {:?}", alive());
        assert_clean(d);
        let out: Vec<_> = std::fs::read_dir(d.join("out")).map(|r| r.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
        assert!(out.is_empty(), "{kind}: left in the output directory: {out:?}");
        eprintln!(
            "{kind}: killed mid-task after {:.1} s, {} processes between the task and imgforge gone",
            started.elapsed().as_secs_f64(),
            chain.len()
        );
    }
}
