//! Error classes the whole program shares. Each domain keeps its own typed errors; this holds
//! only what decides the exit code across layers.

/// A bad command-line or option value found after parsing (exit code 2, like a recipe error).
/// Domains raise it for values a user typed (`publish --name`, `--boot-mode`…), so `cli` can
/// tell "you asked for something impossible" from "it failed".
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
