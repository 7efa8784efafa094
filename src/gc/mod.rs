//! The janitor (`imgforge gc`): retires images by rule, never one still in use.
//!
//! Only records in the registry are candidates (imgforge's own images). The plan is a pure
//! function of the records, the channels, what AWS says is in use (`refs.rs`) and the rules
//! (`rules.rs`): every record gets a decision with the rule or guard behind it (`plan.rs`).
//! `--apply` re-checks every guard immediately before each action and retires in stages
//! (`apply.rs`). Crash leftovers (snapshots of publishes that never registered an AMI) are
//! listed and removed after a grace period (`leftovers.rs`); `--cache-max` bounds the local
//! cache (`cache.rs`); the working files of dead builds go after the grace period too
//! (`local.rs`).

pub mod apply;
pub mod cache;
pub mod leftovers;
pub mod local;
pub mod plan;
pub mod refs;
pub mod rules;
