//! Structural readers for the export formats: a strict streamOptimized VMDK walker and an OVA
//! (tar + OVF + manifest) cross-checker. Used by the tests and by `imgforge export --verify`.
//!
//! Both are strict about what imgforge writes (canonical stream order, one disk per OVA) rather
//! than lenient readers of every variant in the wild. Both treat their input as hostile: every
//! size or offset taken from a header goes through checked arithmetic and is bounded by the bytes
//! actually left in the file (and by a cap) before anything is allocated, and every field is read
//! with a bounds-checked reader, so a truncated or corrupted file gives a [`CheckError`], never a
//! panic or a giant allocation.
//!
//! - [`section`]: [`Section`] (a byte range of a file as `Read + Seek`) and the byte readers;
//! - [`vmdk`]: the stream VMDK walker;
//! - [`ova`]: the tar walk, manifest digests and OVF cross-checks, with the tag finders of [`xml`].

use std::fmt;
use std::io;

pub mod ova;
pub mod section;
pub mod vmdk;
pub mod xml;

#[cfg(test)]
mod tests;

#[cfg(test)]
pub use ova::check_ova;
pub use ova::check_ova_with;
pub(crate) use section::Section;
#[cfg(test)]
pub use vmdk::check_stream_vmdk;
pub use vmdk::{VmdkReport, check_stream_vmdk_with};

/// A place in the checked file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Where {
    /// A 512-byte sector of the VMDK.
    Sector(u64),
    /// A byte offset (in the tar, or in a header).
    Byte(u64),
}

impl fmt::Display for Where {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Where::Sector(s) => write!(f, "sector {s}"),
            Where::Byte(b) => write!(f, "byte {b}"),
        }
    }
}

/// Why a VMDK or OVA failed the structural check.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Opening, measuring or seeking the file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: io::Error,
    },
    /// A read at a known place failed.
    #[error("reading {what} at {at}: {source}")]
    Read {
        /// What was being read.
        what: String,
        /// Where.
        at: Where,
        /// The I/O error.
        source: io::Error,
    },
    /// The file size is not a whole number of 512-byte blocks.
    #[error("{what} size {size} is not a multiple of 512")]
    Unaligned {
        /// "VMDK" or "tar".
        what: &'static str,
        /// The size in bytes.
        size: u64,
    },
    /// A structure runs past the end of the file.
    #[error("{what} at {at} needs {need} bytes, but the file has only {have} left (truncated or corrupt)")]
    Truncated {
        /// The structure.
        what: String,
        /// Where it starts.
        at: Where,
        /// Bytes it claims.
        need: u64,
        /// Bytes left in the file from there.
        have: u64,
    },
    /// A structure is larger than the checker accepts.
    #[error("{what} at {at} is {size} bytes, more than the {cap}-byte limit")]
    TooBig {
        /// The structure.
        what: String,
        /// Where it starts.
        at: Where,
        /// Bytes it claims.
        size: u64,
        /// The limit.
        cap: u64,
    },
    /// A size or offset computed from header fields does not fit in 64 bits.
    #[error("{what} at {at}: {expr} overflows")]
    Overflow {
        /// The structure or field.
        what: &'static str,
        /// Where.
        at: Where,
        /// The computation, with its operands ("N sectors × 512").
        expr: String,
    },
    /// A header field has the wrong value.
    #[error("{field} at {at} is {found}, expected {expected}")]
    Field {
        /// The field's name.
        field: &'static str,
        /// The header's place.
        at: Where,
        /// The value found.
        found: String,
        /// What was expected.
        expected: String,
    },
    /// A table (GT or GD) entry has the wrong value.
    #[error("{table} at {at}: entry {entry} is {found}, expected {expected}")]
    Entry {
        /// "GT 3" or "GD".
        table: String,
        /// Where the table's data starts.
        at: Where,
        /// Entry index.
        entry: u64,
        /// The value found.
        found: u64,
        /// The value expected.
        expected: u64,
    },
    /// A structure is misplaced or malformed.
    #[error("{what} at {at}: {problem}")]
    Bad {
        /// The structure.
        what: String,
        /// Where.
        at: Where,
        /// What is wrong with it.
        problem: String,
    },
    /// A bounds-checked read from an in-memory buffer ran past its end.
    #[error("{what}: {need} bytes at offset {offset} run past the end of the {len}-byte buffer")]
    Short {
        /// The field being read.
        what: &'static str,
        /// Its offset in the buffer.
        offset: usize,
        /// Its width.
        need: usize,
        /// The buffer's length.
        len: usize,
    },
    /// The OVA manifest is malformed or lists the wrong members.
    #[error("manifest: {0}")]
    Manifest(String),
    /// A member's digest differs from the manifest.
    #[error("{alg} of {name} is {actual}, manifest says {listed}")]
    Digest {
        /// SHA1 or SHA256.
        alg: String,
        /// The member.
        name: String,
        /// The recomputed digest.
        actual: String,
        /// The manifest's digest.
        listed: String,
    },
    /// The OVA's tar members are not the expected three.
    #[error("OVA: {0}")]
    Ova(String),
    /// An OVF cross-reference is wrong.
    #[error("OVF: {0}")]
    Ovf(String),
    /// The disk member of an OVA failed the VMDK check.
    #[error("{member}: {source}")]
    Member {
        /// The member's name.
        member: String,
        /// The VMDK error.
        source: Box<CheckError>,
    },
}

impl CheckError {
    /// A [`CheckError::Field`].
    pub(crate) fn field(field: &'static str, at: Where, found: impl fmt::Display, expected: impl fmt::Display) -> Self {
        Self::Field { field, at, found: found.to_string(), expected: expected.to_string() }
    }

    /// A [`CheckError::Bad`].
    pub(crate) fn bad(what: impl Into<String>, at: Where, problem: impl Into<String>) -> Self {
        Self::Bad { what: what.into(), at, problem: problem.into() }
    }
}
