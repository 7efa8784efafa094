//! The upstream image: fetch (file or http), cache by digest, verify checksums and signature.
pub mod fetch;
pub mod plan;
pub mod signature;
#[allow(dead_code)] // a complete API: some items serve only tests and later features
pub mod sums;
pub mod verify;
