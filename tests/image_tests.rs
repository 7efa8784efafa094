//! Image tests on the real binary (cloud-like upstream, as root): a recipe's `[[test]]` checks
//! run after the build against the read-only image; passing makes the record `tested`, a
//! failure exits 1 naming the case and leaves a candidate; the JUnit report reads back with an
//! independent parser; `imgforge test` reruns them on a registered image.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::path::Path;

use util::*;

/// Pinterest's ServerSpec checks, as declarative checks, plus packages, services, users and a
/// command. `PLANT` is what the provisioner adds.
fn recipe_text(name: &str, plant: &str) -> String {
    cloud_head(name, "1.0.0")
        + &format!(
            r#"[[provision]]
type = "shell"
inline = ["echo Etc/UTC > /etc/timezone", "useradd -m demo", "{plant}"]

[[test]]
name = "pinterest"
files = [ {{ path = "/usr/sbin/policy-rc.d", absent = true }}, {{ path = "/etc/timezone", contains = "Etc/UTC" }},
          {{ path = "/root/.ssh/id_rsa", absent = true }}, {{ path = "/etc/shadow", kind = "file", mode = "0640", owner = "root" }} ]
commands = [ {{ run = "getent passwd demo", exit = 0, stdout_contains = "/home/demo" }}, {{ run = "test -e /nonexistent", exit = 1 }} ]
type = "checks"

[[test]]
type = "testinfra"
name = "infra"
tests = "tests/image"

[[test]]
type = "serverspec"
name = "spec"
specs = "spec/base"

[[test]]
type = "checks"
name = "system"
packages = ["openssh-server>=1:9", "cloud-init"]
services_enabled = ["ssh"]
users = ["demo", "root"]
"#
        )
}

/// A pytest-testinfra suite, run offline through testinfra's chroot backend.
const TESTINFRA: &str = r#"
def test_timezone(host):
    assert host.file("/etc/timezone").contains("Etc/UTC")

def test_ssh_installed(host):
    assert host.package("openssh-server").is_installed

def test_demo_user(host):
    assert host.user("demo").home == "/home/demo"

def test_no_policy_rc_d(host):
    assert not host.file("/usr/sbin/policy-rc.d").exists

def test_commands_run_in_the_sandbox(host):
    # The build sandbox's network namespace: loopback only, none of the host's interfaces.
    devs = [l.split(":")[0].strip() for l in host.check_output("cat /proc/net/dev").splitlines()[2:]]
    assert devs == ["lo"]
"#;

/// Pinterest's ServerSpec spec, verbatim in spirit, run offline with specinfra's exec backend
/// in the build sandbox.
const SERVERSPEC: &str = r#"require 'spec_helper'

describe file('/usr/sbin/policy-rc.d') do
  it { should_not be_file }
end

describe file('/root/.ssh/id_rsa') do
  it { should_not be_file }
end

describe file('/etc/timezone') do
  its(:content) { should match /Etc\/UTC/ }
end

describe command('getent passwd demo') do
  its(:exit_status) { should eq 0 }
end

describe package('openssh-server') do
  it { should be_installed }
end

describe service('ssh') do
  it { should be_enabled }
end

describe user('demo') do
  it { should have_home_directory '/home/demo' }
end

# The build sandbox's network namespace: loopback only.
describe command("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '") do
  its(:stdout) { should eq "lo\n" }
end
"#;

fn registry_row(db: &Path, id: &str) -> (String, serde_json::Value) {
    let c = rusqlite::Connection::open(db).unwrap();
    let (status, data): (String, String) =
        c.query_row("SELECT status, data FROM records WHERE id = ?1", [id], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    (status, serde_json::from_str(&data).unwrap())
}

/// The JUnit file, read by junitparser: (tests, failures, case names "classname.name").
fn junit(path: &Path) -> (u64, u64, Vec<String>) {
    let script = "import sys, junitparser\nx = junitparser.JUnitXml.fromfile(sys.argv[1])\nprint(x.tests, x.failures)\nfor s in x:\n    for c in s:\n        print(c.classname + '.' + c.name)\n";
    let o = run(std::process::Command::new("/usr/bin/python3").args(["-c", script]).arg(path));
    assert!(o.status.success(), "junitparser: {}", show(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    let mut lines = text.lines();
    let counts: Vec<u64> = lines.next().unwrap().split(' ').map(|n| n.parse().unwrap()).collect();
    (counts[0], counts[1], lines.map(str::to_string).collect())
}

#[test]
fn checks_pass_on_a_good_image_and_fail_on_a_planted_policy_rc_d() {
    if !have_root("checks_pass_on_a_good_image_and_fail_on_a_planted_policy_rc_d") {
        return;
    }
    let dir = testdir("image-tests");
    let (d, db) = (dir.path(), dir.path().join("registry.db"));
    let out = d.join("out");

    // A good image: every case passes, the record becomes `tested` with the verdict.
    std::fs::write(d.join("good.toml"), recipe_text("good", "true")).unwrap();
    std::fs::create_dir_all(d.join("tests/image")).unwrap();
    std::fs::write(d.join("tests/image/test_image.py"), TESTINFRA).unwrap();
    std::fs::create_dir_all(d.join("spec/base")).unwrap();
    std::fs::write(d.join("spec/base/image_spec.rb"), SERVERSPEC).unwrap();
    let o = run(imgforge().arg("build").arg(d.join("good.toml")).arg("-o").arg(&out).arg("--registry").arg(&db));
    assert!(o.status.success(), "{}", show(&o));
    assert_clean(d);
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("good.manifest.json")).unwrap()).unwrap();
    let id = m["record"].as_str().unwrap().to_string();
    let (status, rec) = registry_row(&db, &id);
    assert_eq!(status, "tested", "{rec}");
    assert_eq!(rec["tests"][0]["sha256"], m["outputs"][0]["sha256"], "{rec}");
    assert_eq!(rec["tests"][0]["failed"], serde_json::json!([]), "{rec}");
    assert_eq!(rec["tests"][0]["passed"], 24, "{rec}");
    assert_eq!(rec["tests"][0]["stage"], "offline", "{rec}");
    let (tests, failures, names) = junit(&out.join("good.tests.xml"));
    assert_eq!((tests, failures), (24, 0));
    let unique: std::collections::BTreeSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "case names repeat: {names:?}");
    assert!(names.contains(&"good.pinterest.file /usr/sbin/policy-rc.d".to_string()), "{names:?}");
    assert!(names.contains(&"good.system.package openssh-server>=1:9".to_string()), "{names:?}");
    assert!(names.contains(&"good.infra.test_image.test_commands_run_in_the_sandbox".to_string()), "{names:?}");
    assert!(names.contains(&r#"good.spec.image_spec.File "/usr/sbin/policy-rc.d" is expected not to be file"#.to_string()), "{names:?}");
    assert!(names.contains(&r#"good.spec.image_spec.Service "ssh" is expected to be enabled"#.to_string()), "{names:?}");
    let xml = std::fs::read_to_string(out.join("good.tests.xml")).unwrap();
    assert!(xml.contains(&format!(r#"<property name="image.record" value="{id}"/>"#)), "{xml}");
    // The tests never wrote to the image.
    let sha = run(std::process::Command::new("sha256sum").arg(out.join("good.raw")));
    assert!(String::from_utf8_lossy(&sha.stdout).starts_with(m["outputs"][0]["sha256"].as_str().unwrap()));

    // `imgforge test` reruns them on the registered image: a second verdict.
    let o = run(imgforge().args(["test", "good", "--registry"]).arg(&db).arg("--junit").arg(d.join("again.xml")));
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), format!("tested: good 1.0.0 {id}"));
    assert_eq!(registry_row(&db, &id).1["tests"].as_array().unwrap().len(), 2);
    assert_eq!(junit(&d.join("again.xml")).0, 24);
    assert_clean(d);

    // An image that keeps policy-rc.d (its upstream has one: the build's guard puts the
    // image's own back): exit 1 naming the case; a candidate with the failed verdict; the
    // outputs stay for inspection.
    let up = d.join("planted.raw");
    std::fs::copy(small_upstream().join("small-mbr.raw"), &up).unwrap();
    plant(&up, "usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n");
    let sha = run(std::process::Command::new("sha256sum").arg(&up));
    let sha = String::from_utf8_lossy(&sha.stdout).split(' ').next().unwrap().to_string();
    let bad = format!(
        "[image]\nname = \"bad\"\nversion = \"1.0.0\"\n[source]\nurl = \"{}\"\nsha256 = \"{sha}\"\n\n[[test]]\ntype = \"checks\"\nname = \"pinterest\"\nfiles = [ {{ path = \"/usr/sbin/policy-rc.d\", absent = true }}, {{ path = \"/root/.ssh/id_rsa\", absent = true }} ]\nusers = [\"ghost\"]\ncommands = [ {{ run = \"echo out; exit 3\" }} ]\n",
        up.display()
    );
    std::fs::write(d.join("bad.toml"), bad).unwrap();
    let o = run(imgforge().arg("build").arg(d.join("bad.toml")).arg("-o").arg(&out).arg("--registry").arg(&db));
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(
            "3 of 4 test cases failed: pinterest.file /usr/sbin/policy-rc.d; pinterest.user ghost; pinterest.command echo out; exit 3;"
        ),
        "{err}"
    );
    assert!(out.join("bad.raw").exists());
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("bad.manifest.json")).unwrap()).unwrap();
    let (status, rec) = registry_row(&db, m["record"].as_str().unwrap());
    assert_eq!(status, "candidate");
    let failed = serde_json::json!(["pinterest.file /usr/sbin/policy-rc.d", "pinterest.user ghost", "pinterest.command echo out; exit 3"]);
    assert_eq!(rec["tests"][0]["failed"], failed, "{rec}");
    let (tests, failures, _) = junit(&out.join("bad.tests.xml"));
    assert_eq!((tests, failures), (4, 3));
    let xml = std::fs::read_to_string(out.join("bad.tests.xml")).unwrap();
    for why in [
        "/usr/sbin/policy-rc.d exists (file)",
        "ghost is not in /etc/passwd",
        "exited with 3, expected 0; stdout: &quot;out&quot;; stderr: &quot;&quot;",
    ] {
        assert!(xml.contains(&format!(r#"<failure message="{why}""#)), "{why}: {xml}");
    }
    assert_clean(d);

    promotion(d, &db, &id, m["record"].as_str().unwrap());
}

/// Channels on the real binary: a tested record is promoted, a failed one only with --force and
/// a reason; a child finds its parent through a channel; a revoked parent stops its children.
fn promotion(d: &Path, db: &Path, good: &str, bad: &str) {
    let cli = |args: &[&str]| run(imgforge().args(args).arg("--registry").arg(db));
    let o = cli(&["promote", "good", "--channel", "prod"]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with(&format!("promoted: good prod → good 1.0.0 ({good}) by ")), "{}", show(&o));
    assert_eq!(registry_row(db, good).0, "released");
    let o = cli(&["promote", bad, "--channel", "prod"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("failed: pinterest.file /usr/sbin/policy-rc.d"), "{}", show(&o));
    assert_eq!(registry_row(db, bad).0, "candidate");
    let o = cli(&["promote", bad, "--channel", "prod", "--force", "--reason", "INC-42 needs it now"]);
    assert!(o.status.success(), "{}", show(&o));
    let o = cli(&["--json", "channels", "bad", "--history"]);
    let log: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(&o)));
    assert_eq!(
        (log[0]["record"].as_str(), log[0]["forced"].as_bool(), log[0]["reason"].as_str()),
        (Some(bad), Some(true), Some("INC-42 needs it now"))
    );
    // Without a name, the channel must belong to one image.
    let o = cli(&["rollback", "--channel", "prod"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("several images have a channel \"prod\" (bad, good)"), "{}", show(&o));
    let o = cli(&["rollback", "--channel", "staging"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no image has a channel \"staging\""), "{}", show(&o));
    let o = cli(&["rollback", "bad", "--channel", "prod"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no earlier (unrevoked) record"), "{}", show(&o));

    // A child on the channel's record, then the parent revoked with its descendants: the
    // child's next build is refused, naming the revocation.
    let child = "[image]\nname = \"child\"\nversion = \"1.0.0\"\n[source]\nparent = { name = \"good\", channel = \"prod\" }\n[[provision]]\ntype = \"shell\"\ninline = [\"echo child > /etc/child\"]\n";
    std::fs::write(d.join("child.toml"), child).unwrap();
    let o = run(imgforge().arg("build").arg(d.join("child.toml")).arg("-o").arg(d.join("out")).arg("--registry").arg(db));
    assert!(o.status.success(), "{}", show(&o));
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("out/child.manifest.json")).unwrap()).unwrap();
    assert_eq!(m["source"]["parent"]["record"], good);
    let o = cli(&["revoke", "good", "--cascade", "--reason", "CVE-2026-0001 in openssl"]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 2, "{}", show(&o));
    assert_eq!(registry_row(db, m["record"].as_str().unwrap()).0, "revoked");
    let o = run(imgforge().arg("build").arg(d.join("child.toml")).arg("-o").arg(d.join("out")).arg("--registry").arg(db).arg("--rebuild"));
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("good 1.0.0 ({good}): revoked (CVE-2026-0001 in openssl, by ")), "{err}");
    assert_clean(d);
}

/// Writes `content` at `rel` in partition 1 of the raw disk `raw` (mounted read-write briefly).
fn plant(raw: &Path, rel: &str, content: &str) {
    let (_, start, size) = sfdisk_parts(raw).into_iter().find(|p| p.0 == 1).unwrap();
    let o = run(std::process::Command::new("losetup")
        .args(["--find", "--show", "--offset", &start.to_string(), "--sizelimit", &size.to_string()])
        .arg(raw));
    assert!(o.status.success(), "{}", show(&o));
    let dev = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let mnt = tempfile::tempdir().unwrap();
    let m = run(std::process::Command::new("mount").arg(&dev).arg(mnt.path()));
    if m.status.success() {
        let p = mnt.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        let _ = run(std::process::Command::new("umount").arg(mnt.path()));
    }
    let _ = run(std::process::Command::new("losetup").args(["-d", &dev]));
    assert!(m.status.success(), "{}", show(&m));
}
