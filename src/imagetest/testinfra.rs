//! `type = "testinfra"`: pytest-testinfra suites from the recipe's repository, run offline
//! through testinfra's chroot backend. Its `chroot` is `imgforge sandbox-exec` (as for Ansible),
//! so every command a test runs in the image runs in the build sandbox. pytest writes JUnit XML,
//! read back into cases.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, anyhow};

use super::Case;
use crate::chroot::resolve::Root;

/// The host's Python with testinfra (Debian's python3-testinfra or pytest-testinfra).
const PYTHON: &str = "/usr/bin/python3";

/// Runs the tests at `tests` (a file or directory) against the mounted image.
pub fn run(suite: &str, root: &Root, tests: &Path) -> anyhow::Result<Vec<Case>> {
    let sandbox = crate::chroot::sandbox::lookup(root.path())
        .ok_or_else(|| anyhow!("no build sandbox for {}: refusing to run testinfra unconfined", root.path().display()))?;
    let work = tempfile::Builder::new().prefix("imgforge-testinfra-").tempdir().context("Failed to create a temporary directory")?;
    let wrapper = work.path().join("chroot");
    crate::chroot::sandbox::write_chroot_wrapper(&wrapper, "testinfra")?;
    let xml = work.path().join("junit.xml");
    let start = Instant::now();
    let out = Command::new(PYTHON)
        .args(["-m", "pytest", "-p", "no:cacheprovider", "-q", "--color=no"])
        .arg("--connection=chroot")
        .arg(format!("--hosts={}", root.path().display()))
        .arg(format!("--junit-xml={}", xml.display()))
        .arg(tests)
        .env_clear()
        .env("PATH", format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", work.path().display()))
        .env("HOME", work.path())
        .env("LANG", "C.UTF-8")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env(crate::chroot::sandbox::ENV, sandbox.env_value())
        .current_dir(work.path())
        .output()
        .with_context(|| format!("Failed to run {PYTHON} -m pytest (install python3-testinfra)"))?;
    drop(sandbox);
    let text = match std::fs::read_to_string(&xml) {
        Ok(t) => t,
        Err(_) => {
            let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
            let hint = if said.contains("No module named pytest") || said.contains("testinfra") && said.contains("not found") {
                " (install python3-testinfra: apt-get install python3-testinfra)"
            } else {
                ""
            };
            return Ok(vec![Case {
                suite: suite.to_string(),
                name: "pytest".into(),
                seconds: start.elapsed().as_secs_f64(),
                failure: Some(format!("pytest exited with {:?} and wrote no report{hint}: {}", out.status.code(), super::tail(&said))),
            }]);
        }
    };
    let host = root.path().display().to_string();
    let mut cases = parse_junit(suite, &text, &host).context("Failed to read pytest's JUnit report")?;
    if cases.is_empty() {
        cases.push(Case {
            suite: suite.into(),
            name: "pytest".into(),
            seconds: 0.0,
            failure: Some(format!("no test was collected from {}", tests.display())),
        });
    }
    Ok(cases)
}

/// The cases of a pytest JUnit report. A case's name is pytest's test name without `host`, the
/// host id testinfra adds to its parameters (`chroot:///tmp/imgforge-mount-…` differs every
/// run). Pure.
pub fn parse_junit(suite: &str, xml: &str, host: &str) -> anyhow::Result<Vec<Case>> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut out: Vec<Case> = Vec::new();
    let mut open: Option<Case> = None;
    loop {
        match reader.read_event()? {
            Event::Start(e) | Event::Empty(e) if e.name().as_ref() == b"testcase" => {
                if let Some(c) = open.take() {
                    out.push(c);
                }
                let mut name = String::new();
                let mut class = String::new();
                let mut seconds = 0.0;
                for a in e.attributes() {
                    let a = a?;
                    let v = a.normalized_value(quick_xml::XmlVersion::Implicit1_0)?.into_owned();
                    match a.key.as_ref() {
                        b"name" => name = v,
                        b"classname" => class = v,
                        b"time" => seconds = v.parse().unwrap_or(0.0),
                        _ => {}
                    }
                }
                let name = name.replace(&format!("chroot://{host}"), "").replace(host, "").replace("[]", "").replace("[-", "[");
                let full = if class.is_empty() { name } else { format!("{class}.{name}") };
                open = Some(Case { suite: suite.into(), name: full, seconds, failure: None });
            }
            Event::Start(e) | Event::Empty(e) if matches!(e.name().as_ref(), b"failure" | b"error") => {
                let mut msg = String::from("failed");
                for a in e.attributes() {
                    let a = a?;
                    if a.key.as_ref() == b"message" {
                        msg = a.normalized_value(quick_xml::XmlVersion::Implicit1_0)?.into_owned();
                    }
                }
                if let Some(c) = open.as_mut() {
                    c.failure = Some(msg);
                }
            }
            Event::End(e) if e.name().as_ref() == b"testcase" => {
                if let Some(c) = open.take() {
                    out.push(c);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if let Some(c) = open.take() {
        out.push(c);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pytest_report_becomes_cases_without_the_host_part() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" failures="1" skipped="0" tests="2" time="0.3">
<testcase classname="test_image" name="test_ssh[chroot:///tmp/imgforge-mount-x]" time="0.100" />
<testcase classname="test_image" name="test_pkg[chroot:///tmp/imgforge-mount-x-nginx]" time="0.100" />
<testcase classname="test_image" name="test_tz[chroot:///tmp/imgforge-mount-x]" time="0.200"><failure message="AssertionError: assert &apos;X&apos; in &apos;Etc/UTC&apos;">long text</failure></testcase>
</testsuite></testsuites>"#;
        let cases = parse_junit("infra", xml, "/tmp/imgforge-mount-x").unwrap();
        assert_eq!(cases.len(), 3);
        assert_eq!((cases[0].name.as_str(), cases[0].failure.as_deref()), ("test_image.test_ssh", None));
        assert_eq!(cases[1].name, "test_image.test_pkg[nginx]");
        assert_eq!(cases[2].name, "test_image.test_tz");
        assert_eq!(cases[2].failure.as_deref(), Some("AssertionError: assert 'X' in 'Etc/UTC'"));
        assert!((cases[2].seconds - 0.2).abs() < 1e-9);
    }
}
