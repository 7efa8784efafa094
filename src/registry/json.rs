//! The registry's JSON, one rendering for the command line (`image list|find|show --json`) and
//! the HTTP API, so that both answer byte for byte the same.

use super::record::Record;

/// A list of records: pretty JSON and a newline.
pub fn records(rs: &[Record]) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(rs)? + "\n")
}

/// One record: pretty JSON and a newline.
pub fn record(r: &Record) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(r)? + "\n")
}
