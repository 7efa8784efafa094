//! The AWS SDK, set up once for every AWS user (publish, S3): the client configuration (credential
//! and region chain, endpoint override, timeouts, SDK retries off), the one retry layer, and the
//! async runtime the synchronous commands run their calls on.

pub mod client;
pub mod retry;

use anyhow::Context as _;

/// A multi-threaded tokio runtime for one command's AWS calls.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("Failed to start the async runtime")
}
