//! Build progress: human lines (with indicatif bars on a terminal) or versioned JSON Lines
//! events on stdout with `--json`.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

/// Version of the JSON event schema.
pub const EVENT_SCHEMA: u32 = 1;

/// Where progress goes.
#[derive(Debug)]
pub struct Events {
    json: bool,
    tty: bool,
    out: Mutex<()>,
}

impl Events {
    /// `json`: JSON Lines on stdout; otherwise text on stderr (bars only on a terminal).
    pub fn new(json: bool) -> Self {
        Self { json, tty: !json && std::io::stderr().is_terminal(), out: Mutex::new(()) }
    }

    fn emit(&self, event: &str, fields: Value) {
        if !self.json {
            return;
        }
        let mut obj = json!({ "schema": EVENT_SCHEMA, "event": event });
        if let (Some(o), Value::Object(f)) = (obj.as_object_mut(), fields) {
            o.extend(f);
        }
        let _lock = self.out.lock();
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{obj}");
        let _ = stdout.flush();
    }

    /// A build step starts.
    pub fn step(&self, step: &str, what: &str) {
        if self.json {
            self.emit("step", json!({ "step": step, "message": what }));
        } else {
            tracing::info!("{what}");
        }
    }

    /// A step finished after `secs`.
    pub fn step_done(&self, step: &str, secs: f64) {
        self.emit("step_done", json!({ "step": step, "seconds": secs }));
    }

    /// A notice worth a user's attention that does not stop the build.
    pub fn notice(&self, message: &str) {
        if self.json {
            self.emit("notice", json!({ "message": message }));
        }
        tracing::warn!("{message}");
    }

    /// One line of provisioner output.
    pub fn output(&self, label: &str, line: &str) {
        if self.json {
            self.emit("output", json!({ "provisioner": label, "line": line }));
        } else {
            let _lock = self.out.lock();
            let _ = writeln!(std::io::stderr().lock(), "    [{label}] {line}");
        }
    }

    /// The build result.
    pub fn result(&self, fields: Value) {
        self.emit("result", fields);
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
