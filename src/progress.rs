//! Build progress: human lines (with indicatif bars on a terminal) or versioned JSON Lines
//! events on stdout with `--json`.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use schemars::JsonSchema;
use serde::Serialize;

/// Version of the JSON event schema (`schemas/events.schema.json`).
pub const EVENT_SCHEMA: u32 = 1;

/// One `--json` event, written inside an [`Envelope`]; `R` is the command's result.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event<R> {
    /// A step starts.
    Step {
        /// Step name.
        step: String,
        /// What it does.
        message: String,
    },
    /// A timed part of a step (the bench's line-by-line account of mount and seal).
    Phase {
        /// Step name.
        step: String,
        /// What the part did.
        phase: String,
        /// Wall time.
        seconds: f64,
    },
    /// A step finished.
    StepDone {
        /// Step name.
        step: String,
        /// Wall time.
        seconds: f64,
    },
    /// Something worth a user's attention that does not stop the command.
    Notice {
        /// The notice.
        message: String,
    },
    /// One line of provisioner output.
    Output {
        /// The provisioner's label.
        provisioner: String,
        /// The line.
        line: String,
    },
    /// The command's result, last.
    Result(R),
}

/// One line of `--json` output: `{"schema":1,"event":"…",…}`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Envelope<R> {
    /// Version of the event schema.
    pub schema: u32,
    /// The event, its fields beside `schema`.
    #[serde(flatten)]
    pub event: Event<R>,
}

/// Where progress goes.
#[derive(Debug)]
pub struct Events {
    json: bool,
    tty: bool,
    out: Mutex<()>,
    phases: Mutex<Vec<Phase>>,
}

/// A timed part of a build step, as the manifest keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, JsonSchema)]
pub struct Phase {
    /// The step it belongs to.
    pub step: String,
    /// What it did.
    pub phase: String,
    /// Wall time.
    pub seconds: f64,
}

impl Events {
    /// `json`: JSON Lines on stdout; otherwise text on stderr (bars only on a terminal).
    pub fn new(json: bool) -> Self {
        Self { json, tty: !json && std::io::stderr().is_terminal(), out: Mutex::new(()), phases: Mutex::new(Vec::new()) }
    }

    fn emit<R: Serialize>(&self, event: Event<R>) -> serde_json::Result<()> {
        if !self.json {
            return Ok(());
        }
        let line = serde_json::to_string(&Envelope { schema: EVENT_SCHEMA, event })?;
        let _lock = self.out.lock();
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
        Ok(())
    }

    /// An event without a result: its fields are strings and numbers, which always serialise.
    fn emit_plain(&self, event: Event<()>) {
        let _ = self.emit(event);
    }

    /// A build step starts.
    pub fn step(&self, step: &str, what: &str) {
        if self.json {
            self.emit_plain(Event::Step { step: step.into(), message: what.into() });
        } else {
            tracing::info!("{what}");
        }
    }

    /// A step finished after `secs`.
    pub fn step_done(&self, step: &str, secs: f64) {
        self.emit_plain(Event::StepDone { step: step.into(), seconds: secs });
    }

    /// Runs `f` as the part `phase` of `step`, and records how long it took.
    pub fn phase<T>(&self, step: &str, phase: &str, f: impl FnOnce() -> T) -> T {
        let start = std::time::Instant::now();
        let out = f();
        self.phase_done(step, phase, start.elapsed().as_secs_f64());
        out
    }

    /// Records that the part `phase` of `step` took `seconds` (for parts that are not one
    /// closure, such as an awaited call).
    pub fn phase_done(&self, step: &str, phase: &str, seconds: f64) {
        self.emit_plain(Event::Phase { step: step.into(), phase: phase.into(), seconds });
        if let Ok(mut v) = self.phases.lock() {
            v.push(Phase { step: step.into(), phase: phase.into(), seconds });
        }
    }

    /// The phases recorded so far, in order; the list is emptied.
    pub fn take_phases(&self) -> Vec<Phase> {
        self.phases.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default()
    }

    /// A notice worth a user's attention that does not stop the build.
    pub fn notice(&self, message: &str) {
        self.emit_plain(Event::Notice { message: message.into() });
        tracing::warn!("{message}");
    }

    /// One line of provisioner output.
    pub fn output(&self, label: &str, line: &str) {
        if self.json {
            self.emit_plain(Event::Output { provisioner: label.into(), line: line.into() });
        } else {
            let _lock = self.out.lock();
            let _ = writeln!(std::io::stderr().lock(), "    [{label}] {line}");
        }
    }

    /// The command's result (one of the command line's `Outcome`s); it must serialise as an object.
    pub fn result<R: Serialize>(&self, result: R) -> anyhow::Result<()> {
        Ok(self.emit(Event::Result(result))?)
    }

    /// A bar counting `unit`s (blocks…) for the caller to advance, on a terminal only: none
    /// without one and none under `--json`, like every bar of the program.
    pub fn count_bar(&self, label: &str, total: u64, unit: &str) -> Option<ProgressBar> {
        if !self.tty {
            return None;
        }
        let b = ProgressBar::new(total);
        let template = format!("  {label} [{{bar:30}}] {{pos}}/{{len}} {unit}, {{msg}}, {{per_sec}}, eta {{eta}}");
        if let Ok(s) = ProgressStyle::with_template(&template) {
            b.set_style(s.progress_chars("=> "));
        }
        Some(b)
    }

    /// Runs `work` while showing `counter` (bytes done of `total`) as a bar on a terminal.
    pub fn with_bar<T>(&self, label: &str, total: u64, counter: &AtomicU64, work: impl FnOnce() -> T) -> T {
        if !self.tty {
            return work();
        }
        let bar = ProgressBar::new(total);
        let style = ProgressStyle::with_template("  {msg:10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .map(|s| s.progress_chars("=> "));
        if let Ok(style) = style {
            bar.set_style(style);
        }
        bar.set_message(label.to_string());
        let done = AtomicU64::new(0);
        std::thread::scope(|s| {
            let ticker = s.spawn(|| {
                while done.load(Ordering::Relaxed) == 0 {
                    bar.set_position(counter.load(Ordering::Relaxed));
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
            let out = work();
            done.store(1, Ordering::Relaxed);
            let _ = ticker.join();
            bar.finish_and_clear();
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--json` owns stdout and never draws a bar, whatever stderr is (publish used to build its
    /// block bar from `stderr().is_terminal()` alone).
    #[test]
    fn no_bar_under_json() {
        let json = Events { json: true, tty: false, out: Mutex::new(()), phases: Mutex::default() };
        assert!(json.count_bar("uploading", 10, "blocks").is_none());
        let tty = Events { json: false, tty: true, out: Mutex::new(()), phases: Mutex::default() };
        assert!(tty.count_bar("uploading", 10, "blocks").is_some());
        assert!(!Events::new(true).tty, "--json must turn bars off");
    }
}
