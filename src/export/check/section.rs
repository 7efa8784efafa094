//! [`Section`], a byte range of a file as `Read + Seek` (an OVA's disk member), and the
//! little-endian readers: each returns a [`CheckError`] instead of panicking on a short buffer.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

use super::CheckError;

/// A byte range of a file as a `Read + Seek` (a tar member).
pub(crate) struct Section<'a> {
    f: &'a mut File,
    start: u64,
    len: u64,
    pos: u64,
}

impl<'a> Section<'a> {
    /// The `len` bytes of `f` from `start`.
    pub(crate) fn new(f: &'a mut File, start: u64, len: u64) -> Self {
        Self { f, start, len, pos: 0 }
    }
}

impl Read for Section<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        let Some(buf) = buf.get_mut(..n).filter(|b| !b.is_empty()) else { return Ok(0) };
        let at = self.start.checked_add(self.pos).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "section offset overflows"))?;
        self.f.seek(SeekFrom::Start(at))?;
        let got = self.f.read(buf)?;
        // got <= n <= len - pos: no overflow.
        self.pos += got as u64;
        Ok(got)
    }
}

impl Seek for Section<'_> {
    fn seek(&mut self, p: SeekFrom) -> io::Result<u64> {
        let new = match p {
            SeekFrom::Start(s) => Some(s),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = new.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek out of range"))?;
        Ok(self.pos)
    }
}

/// The `need` bytes of `b` at `offset`, or [`CheckError::Short`] naming `what`.
pub fn bytes<'b>(b: &'b [u8], offset: usize, need: usize, what: &'static str) -> Result<&'b [u8], CheckError> {
    offset.checked_add(need).and_then(|end| b.get(offset..end)).ok_or(CheckError::Short { what, offset, need, len: b.len() })
}

/// [`bytes`], mutable.
pub fn bytes_mut<'b>(b: &'b mut [u8], offset: usize, need: usize, what: &'static str) -> Result<&'b mut [u8], CheckError> {
    let len = b.len();
    offset.checked_add(need).and_then(|end| b.get_mut(offset..end)).ok_or(CheckError::Short { what, offset, need, len })
}

/// The `N` bytes of `b` at `offset` as an array.
fn array<const N: usize>(b: &[u8], offset: usize, what: &'static str) -> Result<[u8; N], CheckError> {
    bytes(b, offset, N, what)?.try_into().map_err(|_| CheckError::Short { what, offset, need: N, len: b.len() })
}

/// Little-endian u16 at `offset`.
pub fn le16(b: &[u8], offset: usize, what: &'static str) -> Result<u16, CheckError> {
    array(b, offset, what).map(u16::from_le_bytes)
}

/// Little-endian u32 at `offset`.
pub fn le32(b: &[u8], offset: usize, what: &'static str) -> Result<u32, CheckError> {
    array(b, offset, what).map(u32::from_le_bytes)
}

/// Little-endian u64 at `offset`.
pub fn le64(b: &[u8], offset: usize, what: &'static str) -> Result<u64, CheckError> {
    array(b, offset, what).map(u64::from_le_bytes)
}

/// The byte at `offset`.
pub fn byte(b: &[u8], offset: usize, what: &'static str) -> Result<u8, CheckError> {
    b.get(offset).copied().ok_or(CheckError::Short { what, offset, need: 1, len: b.len() })
}

/// `v` as a `usize` (an allocation or buffer length), or [`CheckError::Overflow`].
pub fn to_usize(v: u64, what: &'static str, at: super::Where) -> Result<usize, CheckError> {
    usize::try_from(v).map_err(|_| CheckError::Overflow { what, at, expr: format!("{v} bytes as usize") })
}
