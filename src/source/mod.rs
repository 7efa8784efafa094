//! The upstream image: fetch (file or http), cache by digest, verify checksums and signature.
pub mod fetch;
pub mod plan;
pub mod signature;
pub mod sums;
pub mod verify;
