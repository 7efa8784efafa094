//! `imgforge bake`: runs a plan on this host. Each image is one `imgforge build` child (its own
//! namespaces, its own log), at most `jobs` at once; an image starts once its parent in the
//! plan is built or up to date, levels first. An image up to date in the plan is not built; an
//! image whose parent failed is not started.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use super::plan::{Node, Plan, Status};
use crate::progress::Events;
use crate::recipe::BuildPlan;

/// How an image of the bake ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Result_ {
    /// Built and recorded.
    Built,
    /// A record with its layer key was already there.
    UpToDate,
    /// Its build failed.
    Failed,
    /// Not started: its parent failed or was not built.
    Skipped,
}

/// One image's outcome.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Done {
    /// The node (image name).
    pub node: String,
    /// Its level.
    pub level: usize,
    /// How it ended.
    pub result: Result_,
    /// Seconds its build took (0 when not built).
    pub seconds: f64,
    /// The record built or found up to date.
    pub record: Option<String>,
    /// Why it failed or was skipped.
    pub why: Option<String>,
    /// Its build's log (stderr) and events (stdout, JSON Lines).
    pub log: Option<String>,
}

/// What every build of the bake is given.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Builds at once.
    pub jobs: usize,
    /// Arguments added to every `imgforge build` (registry, cache, endpoint, --no-test…).
    pub build_args: Vec<String>,
}

/// A build running.
struct Running {
    node: String,
    level: usize,
    child: Child,
    started: Instant,
    events: PathBuf,
    log: PathBuf,
}

impl Drop for Running {
    /// A build still running when the bake stops is asked to stop (it cleans up after itself),
    /// then killed if it does not within 60 s.
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX));
        let _gone = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGTERM);
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _gone = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
        let _reaped = self.child.wait();
    }
}

/// Runs `plan` (`builds` holds each node's build plan); every image's outcome, in plan order.
pub fn run(plan: &Plan, builds: &BTreeMap<String, BuildPlan>, opts: &Options, events: &Events) -> anyhow::Result<Vec<Done>> {
    let exe = std::env::current_exe().context("Failed to find the imgforge binary to run the builds")?;
    let mut pending: VecDeque<&Node> = plan.nodes.iter().collect();
    let mut done: BTreeMap<String, Done> = BTreeMap::new();
    let mut running: Vec<Running> = Vec::new();
    loop {
        // Start what can start, in plan order (levels first).
        let mut i = 0;
        while i < pending.len() {
            let n = pending[i];
            let parent = n.parent.as_ref().map(|p| done.get(p).map(|d| d.result));
            let blocked = match parent {
                None => None,
                Some(None) => {
                    i += 1;
                    continue;
                }
                Some(Some(Result_::Failed | Result_::Skipped)) => {
                    Some(format!("its parent {} was not built", n.parent.as_deref().unwrap_or("?")))
                }
                Some(Some(_)) => None,
            };
            let outcome = |result, why: Option<String>| Done {
                node: n.id.clone(),
                level: n.level,
                result,
                seconds: 0.0,
                record: n.record.clone(),
                why,
                log: None,
            };
            if let Some(why) = blocked {
                events.notice(&format!("{}: not started, {why}", n.id));
                done.insert(n.id.clone(), outcome(Result_::Skipped, Some(why)));
                pending.remove(i);
                continue;
            }
            if n.status == Status::UpToDate {
                events.step("bake", &format!("{}: up to date ({})", n.id, n.reason));
                done.insert(n.id.clone(), outcome(Result_::UpToDate, None));
                pending.remove(i);
                continue;
            }
            if running.len() >= opts.jobs.max(1) {
                break;
            }
            let Some(bp) = builds.get(&n.id) else {
                done.insert(n.id.clone(), outcome(Result_::Failed, Some("not in the plan's builds".into())));
                pending.remove(i);
                continue;
            };
            match start(&exe, n, bp, opts) {
                Ok(r) => {
                    events.step("bake", &format!("{}: building (level {}, {}; log {})", n.id, n.level, n.reason, r.log.display()));
                    running.push(r);
                }
                Err(e) => {
                    done.insert(n.id.clone(), outcome(Result_::Failed, Some(format!("{e:#}"))));
                }
            }
            pending.remove(i);
        }
        if running.is_empty() && pending.is_empty() {
            break;
        }
        if running.is_empty() {
            // Nothing runs and nothing can start: parents outside the order (cannot happen in a
            // plan from `make`, whose levels order parents first).
            for n in pending.drain(..) {
                done.insert(
                    n.id.clone(),
                    Done {
                        node: n.id.clone(),
                        level: n.level,
                        result: Result_::Skipped,
                        seconds: 0.0,
                        record: None,
                        why: Some("its parent never ran".into()),
                        log: None,
                    },
                );
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(150));
        let mut j = 0;
        while j < running.len() {
            let status = running[j].child.try_wait().with_context(|| format!("Failed to wait for the build of {}", running[j].node))?;
            let Some(status) = status else {
                j += 1;
                continue;
            };
            let r = running.swap_remove(j);
            let d = finished(&r, status);
            match d.result {
                Result_::Failed => {
                    events.notice(&format!("{}: build failed after {:.0} s: {}", d.node, d.seconds, d.why.as_deref().unwrap_or("")))
                }
                _ => events.step(
                    "bake",
                    &format!("{}: {} in {:.0} s", d.node, if d.result == Result_::Built { "built" } else { "up to date" }, d.seconds),
                ),
            }
            done.insert(d.node.clone(), d);
        }
    }
    Ok(plan.nodes.iter().filter_map(|n| done.remove(&n.id)).collect())
}

/// Starts the build of `n`: `imgforge --json build RECIPE ARGS…`, its events and log beside its
/// outputs.
fn start(exe: &std::path::Path, n: &Node, bp: &BuildPlan, opts: &Options) -> anyhow::Result<Running> {
    std::fs::create_dir_all(&bp.output_dir).with_context(|| format!("Failed to create {}", bp.output_dir.display()))?;
    let events = bp.output_dir.join(format!("{}.bake.jsonl", n.id));
    let log = bp.output_dir.join(format!("{}.build.log", n.id));
    let out = std::fs::File::create(&events).with_context(|| format!("Failed to create {}", events.display()))?;
    let err = std::fs::File::create(&log).with_context(|| format!("Failed to create {}", log.display()))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--json").arg("build").arg(&n.recipe).args(&n.args).args(&opts.build_args).stdin(Stdio::null());
    let child = crate::host::command::spawn_tied(cmd, Stdio::from(out), Stdio::from(err), libc::SIGTERM)
        .with_context(|| format!("Failed to start the build of {}", n.id))?;
    Ok(Running { node: n.id.clone(), level: n.level, child, started: Instant::now(), events, log })
}

/// What a finished build says: its `result` event (the manifest's record, or the record up to
/// date), or its log's last lines.
fn finished(r: &Running, status: std::process::ExitStatus) -> Done {
    let seconds = r.started.elapsed().as_secs_f64();
    let result = std::fs::read_to_string(&r.events)
        .unwrap_or_default()
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "result");
    let log = Some(r.log.display().to_string());
    if status.success() {
        let (kind, record) = match &result {
            Some(v) if v["record"].is_string() => (Result_::Built, v["record"].as_str().map(str::to_string)),
            Some(v) if v["id"].is_string() => (Result_::UpToDate, v["id"].as_str().map(str::to_string)),
            _ => (Result_::Built, None),
        };
        return Done { node: r.node.clone(), level: r.level, result: kind, seconds, record, why: None, log };
    }
    let text = std::fs::read_to_string(&r.log).unwrap_or_default();
    let last: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = last[last.len().saturating_sub(3)..].join(" / ");
    let code = status.code().map_or_else(|| "a signal".to_string(), |c| format!("exit {c}"));
    Done { node: r.node.clone(), level: r.level, result: Result_::Failed, seconds, record: None, why: Some(format!("{code}: {tail}")), log }
}

/// The bake's JUnit report: one suite, one case per image (`classname` the image, name
/// `build`), failed and skipped as such. Pure.
pub fn junit(done: &[Done]) -> anyhow::Result<String> {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut report = Report::new("imgforge bake");
    let mut suite = TestSuite::new("bake");
    let mut total = 0.0;
    for d in done {
        let status = match d.result {
            Result_::Built | Result_::UpToDate => TestCaseStatus::success(),
            Result_::Failed => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(d.why.clone().unwrap_or_default());
                s
            }
            Result_::Skipped => {
                let mut s = TestCaseStatus::skipped();
                s.set_message(d.why.clone().unwrap_or_default());
                s
            }
        };
        let mut tc = TestCase::new("build", status);
        tc.set_classname(d.node.as_str());
        tc.set_time(Duration::from_secs_f64(d.seconds));
        if d.result == Result_::UpToDate {
            tc.set_system_out(format!("up to date: {}", d.record.as_deref().unwrap_or("")));
        }
        total += d.seconds;
        suite.add_test_case(tc);
    }
    suite.set_time(Duration::from_secs_f64(total));
    report.add_test_suite(suite);
    report.set_time(Duration::from_secs_f64(total));
    report.to_string().context("Failed to write the JUnit report")
}

/// The summary table. Pure.
pub fn table(done: &[Done]) -> String {
    let w = done.iter().map(|d| d.node.len()).max().unwrap_or(4).max(4);
    let mut out = format!("{:<w$}  LEVEL  RESULT      SECONDS  RECORD / WHY\n", "NODE");
    for d in done {
        let result = match d.result {
            Result_::Built => "built",
            Result_::UpToDate => "up-to-date",
            Result_::Failed => "FAILED",
            Result_::Skipped => "skipped",
        };
        let what = d.why.clone().or_else(|| d.record.clone()).unwrap_or_default();
        out.push_str(&format!("{:<w$}  {:>5}  {result:<10}  {:>7.1}  {what}\n", d.node, d.level, d.seconds));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(node: &str, result: Result_, why: Option<&str>) -> Done {
        Done { node: node.into(), level: 0, result, seconds: 1.0, record: Some("01J".into()), why: why.map(str::to_string), log: None }
    }

    #[test]
    fn junit_has_one_case_per_image_with_its_outcome() {
        let xml = junit(&[
            d("base", Result_::Built, None),
            d("app", Result_::Failed, Some("exit 1")),
            d("leaf", Result_::Skipped, Some("parent")),
        ])
        .unwrap();
        assert!(xml.contains(r#"tests="3""#) && xml.contains(r#"failures="1""#) && xml.contains(r#"skipped="1""#), "{xml}");
        assert!(xml.contains(r#"<testcase name="build" classname="app""#), "{xml}");
        let t = table(&[d("base", Result_::Built, None)]);
        assert!(t.lines().nth(1).unwrap().starts_with("base      0  built"), "{t}");
    }
}
