//! tracing to stderr: compact text for humans (no timestamps), or JSON with `--log-format json`.
//! SDK and library crates are kept one level quieter than our own.

use tracing_subscriber::EnvFilter;

/// Log output shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber. `verbose`: 0 = info, 1 = debug, 2+ = trace.
pub fn init(verbose: u8, format: LogFormat) {
    let ours = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let others = match verbose {
        0 | 1 => "warn",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_env("IMGFORGE_LOG").unwrap_or_else(|_| EnvFilter::new(format!("{others},imgforge={ours}")));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    let _ = match format {
        LogFormat::Text => builder.without_time().compact().try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
