//! Byte-stream adapters shared by the domains: digests computed as bytes pass through a reader
//! or a writer, whole-file and sparse-aware file digests, with an optional progress counter.
//!
//! Nothing here knows about images, sources or outputs: the domains import this module, never
//! the other way round.

pub mod extents;
pub mod hash;
