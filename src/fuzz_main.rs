//! The root of `imgforge-fuzz` (feature `fuzz`, built only by `scripts/fuzz`): the same modules
//! as `main.rs` (`tests/architecture.rs` checks the two lists match), libFuzzer's main, and the
//! targets in [`fuzz`]. Most of the tool is unused here.
#![no_main]
#![allow(dead_code, unused_imports)]

mod aws;
mod bakery;
mod chroot;
mod cli;
mod disk;
mod error;
mod export;
mod gc;
mod host;
mod image;
mod imagetest;
mod io;
mod logging;
mod manifest;
mod pipeline;
mod progress;
mod provision;
mod publish;
mod recipe;
mod registry;
mod s3;
mod seal;
mod source;
mod stamp;

mod fuzz;
