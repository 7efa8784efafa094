//! Every external command goes through `CommandRunExt`: logged, stderr captured, its tail in
//! the error.

use std::process::{Command, Output};

/// How much of stderr goes into an error.
const STDERR_TAIL: usize = 1024;

/// A failed external command.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// It could not be started.
    #[error("Failed to {what}: could not run {program}: {source}")]
    Spawn {
        /// The step, in words.
        what: String,
        /// Program name.
        program: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// It exited unsuccessfully.
    #[error("Failed to {what}: {program} exited with {status}{tail}")]
    Status {
        /// The step, in words.
        what: String,
        /// Program name.
        program: String,
        /// Exit status.
        status: std::process::ExitStatus,
        /// Last part of stderr, preformatted.
        tail: String,
    },
}

/// Runs a command to completion, capturing its output.
pub trait CommandRunExt {
    /// Runs; success only on exit status 0. `what` says what the step does ("grow the root
    /// filesystem").
    fn run_checked(&mut self, what: &str) -> Result<Output, CommandError>;
}

impl CommandRunExt for Command {
    fn run_checked(&mut self, what: &str) -> Result<Output, CommandError> {
        let program = self.get_program().to_string_lossy().into_owned();
        tracing::debug!(command = ?self, "running");
        let out = self.output().map_err(|source| CommandError::Spawn { what: what.to_string(), program: program.clone(), source })?;
        if out.status.success() {
            return Ok(out);
        }
        Err(CommandError::Status { what: what.to_string(), program, status: out.status, tail: tail(&out.stderr) })
    }
}

/// The last KiB of `stderr` as ": …text" or "" when empty.
pub fn tail(stderr: &[u8]) -> String {
    let start = stderr.len().saturating_sub(STDERR_TAIL);
    let text = String::from_utf8_lossy(stderr.get(start..).unwrap_or_default());
    let text = text.trim();
    if text.is_empty() { String::new() } else { format!(": {text}") }
}
