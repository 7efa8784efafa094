//! Image tests: the recipe's `[[test]]` suites run against a finished image, a JUnit report, and
//! the verdict recorded in the registry with the SHA-256 of the disk it was given.
//!
//! Offline suites mount the raw disk read-only (in the process's private mount namespace) and
//! run the image's own programs in the build sandbox without network: they can read the image,
//! never change it or the host. Boot-stage suites run over SSH on a throwaway copy-on-write boot
//! of the same disk (`boot.rs`).

pub mod boot;
pub mod checks;
pub mod junit;
pub mod plan;
pub mod serverspec;
pub mod target;
pub mod testinfra;

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::chroot::sandbox::Sandbox;
use crate::image::mount::{Mounted, RootChoice, choose_root, probe_all};
use crate::progress::Events;
use crate::registry::record::TestRun;
use plan::{Stage, Suite, SuiteKind};

/// One test case's result.
#[derive(Debug, Clone)]
pub struct Case {
    /// The suite (the recipe's `[[test]]` name).
    pub suite: String,
    /// What it checked.
    pub name: String,
    /// Wall time.
    pub seconds: f64,
    /// Why it failed; `None`: it passed.
    pub failure: Option<String>,
}

/// The image under test.
#[derive(Debug, Clone)]
pub struct Subject {
    /// Image name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Its registry record.
    pub record: Option<String>,
    /// SHA-256 of the raw disk tested.
    pub sha256: String,
}

/// Runs every offline suite against the raw disk at `raw`.
pub fn run_offline(raw: &Path, root: Option<&RootChoice>, suites: &[&Suite], events: &Events) -> anyhow::Result<Vec<Case>> {
    let file = File::open(raw).with_context(|| format!("Failed to open {}", raw.display()))?;
    let size = file.metadata().with_context(|| format!("Failed to stat {}", raw.display()))?.len();
    let table = crate::disk::partition::read(&mut &file, size)
        .with_context(|| format!("Failed to read the partition table of {}", raw.display()))?;
    let parts = probe_all(&file, &table)?;
    let root = choose_root(&parts, root)?;
    let m = Mounted::mount(&file, &parts, &root, false, true, events)?;
    let result = Sandbox::create(&m.root, false, events).map(|sandbox| {
        let mut cases = Vec::new();
        for s in suites {
            events.step("test", &format!("running the {} suite", s.name));
            let target = target::Target::Chroot(&m.root);
            let r = match &s.kind {
                SuiteKind::Checks(c) => Ok(checks::run(&s.name, &m.root, c)),
                SuiteKind::Testinfra(t) => testinfra::run(&s.name, target, t),
                SuiteKind::Serverspec(t) => serverspec::run(&s.name, target, t),
                SuiteKind::Boot(_) => continue,
            };
            match r {
                Ok(c) => cases.extend(c),
                Err(e) => cases.push(Case { suite: s.name.clone(), name: "run".into(), seconds: 0.0, failure: Some(format!("{e:#}")) }),
            }
        }
        drop(sandbox);
        cases
    });
    let closed = m.close();
    let cases = result?;
    closed?;
    Ok(cases)
}

/// Where the serial console of a boot test is kept: next to the JUnit report, `NAME.boot.log`.
pub fn console_path(junit: &Path, name: &str) -> PathBuf {
    junit.parent().unwrap_or(Path::new(".")).join(format!("{name}.boot.log"))
}

/// The last 2000 characters of a command's output, trimmed, for a failure message.
fn tail(text: &str) -> String {
    let t = text.trim();
    let mut from = t.len().saturating_sub(2000);
    while !t.is_char_boundary(from) {
        from += 1;
    }
    if from > 0 { format!("…{}", &t[from..]) } else { t.to_string() }
}

/// Where the JUnit report goes by default: `out/NAME.tests.xml`.
pub fn default_junit(output_dir: &Path, name: &str) -> PathBuf {
    output_dir.join(format!("{name}.tests.xml"))
}

/// Runs the suites of the `stages` asked for (offline first, then one boot for every boot-stage
/// suite), writes the JUnit report, and returns the verdict to record. Prints one line per
/// failed case and a summary.
pub fn run_and_report(
    subject: &Subject,
    raw: &Path,
    root: Option<&RootChoice>,
    suites: &[Suite],
    stages: &[Stage],
    junit: &Path,
    events: &Events,
) -> anyhow::Result<TestRun> {
    let of = |stage: Stage| -> Vec<&Suite> { suites.iter().filter(|s| s.stage == stage && stages.contains(&stage)).collect() };
    let (offline, booted) = (of(Stage::Offline), of(Stage::Boot));
    let mut cases = Vec::new();
    if !offline.is_empty() {
        cases.extend(run_offline(raw, root, &offline, events)?);
    }
    if let Some(b) = booted.iter().find(|s| matches!(s.kind, SuiteKind::Boot(_)))
        && let SuiteKind::Boot(spec) = &b.kind
    {
        let console = console_path(junit, &subject.name);
        cases.extend(boot::run(raw, &b.name, spec, &booted, &console, events)?);
    }
    let stage_of = |suite: &str| suites.iter().find(|s| s.name == suite).map_or("offline", |s| s.stage.as_str());
    junit::write(junit, subject, &cases, &stage_of)?;
    let failed: Vec<String> = cases.iter().filter(|c| c.failure.is_some()).map(|c| format!("{}.{}", c.suite, c.name)).collect();
    for c in &cases {
        if let Some(why) = &c.failure {
            events.output("test", &format!("FAILED {} / {}: {why}", c.suite, c.name));
        }
    }
    let ran: Vec<&str> = [Stage::Offline, Stage::Boot].into_iter().filter(|st| !of(*st).is_empty()).map(Stage::as_str).collect();
    events.output(
        "test",
        &format!(
            "{} {}: {} of {} cases passed ({} suites, {}; JUnit: {})",
            subject.name,
            subject.version,
            cases.len() - failed.len(),
            cases.len(),
            offline.len() + booted.len(),
            if ran.is_empty() { "no stage".to_string() } else { ran.join(" and ") },
            junit.display()
        ),
    );
    Ok(TestRun {
        date: crate::stamp::rfc3339(crate::stamp::unix_now()),
        sha256: subject.sha256.clone(),
        stage: ran.join("+"),
        passed: cases.len() - failed.len(),
        failed,
        junit: Some(std::path::absolute(junit).unwrap_or_else(|_| junit.to_path_buf()).display().to_string()),
    })
}

/// Records `run` on the record `id`: a passing run makes a candidate `tested`. Returns the error
/// a failed run ends the command with.
pub fn record(store: &mut dyn crate::registry::Store, id: &str, run: &TestRun) -> anyhow::Result<()> {
    let found = store
        .update(id, &mut |r| {
            r.tests.push(run.clone());
            if run.passed() && r.status == "candidate" {
                r.status = "tested".into();
            }
        })
        .context("Failed to record the test verdict in the image registry")?;
    if !found {
        anyhow::bail!("the registry has no record {id} to record the test verdict on");
    }
    if !run.passed() {
        let shown: Vec<&str> = run.failed.iter().take(10).map(String::as_str).collect();
        anyhow::bail!(
            "{} of {} test cases failed: {}{}; the record stays a candidate (report: {})",
            run.failed.len(),
            run.failed.len() + run.passed,
            shown.join("; "),
            if run.failed.len() > 10 { "; …" } else { "" },
            run.junit.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}
