//! Streaming digests: a reader and a writer that hash the bytes passing through them (and count
//! them on an optional progress counter), a whole-file digest built on the reader, and a
//! sparse-aware file digest that feeds holes as zeros without reading them.
//!
//! SHA-256 and SHA-512 come from `sha2`: on x86_64 it detects SHA-NI at run time and uses it for
//! SHA-256; its `asm` feature supplies the assembly fallback.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256, Sha512};

/// Size of the read buffer of [`digest_file`].
const READ_BUF_SIZE: usize = 1024 * 1024;

/// How much [`digest_sparse`] reads, or feeds as zeros, at a time.
const SPARSE_CHUNK: usize = 4 << 20;

/// A digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algo {
    /// SHA-256 (64 hex digits).
    Sha256,
    /// SHA-512 (128 hex digits).
    Sha512,
}

impl Algo {
    /// Number of hex digits in a digest of this algorithm.
    pub const fn hex_len(self) -> usize {
        match self {
            Algo::Sha256 => 64,
            Algo::Sha512 => 128,
        }
    }

    /// Conventional upper-case name, as used in BSD-style tags: `"SHA256"` or `"SHA512"`.
    pub const fn name(self) -> &'static str {
        match self {
            Algo::Sha256 => "SHA256",
            Algo::Sha512 => "SHA512",
        }
    }

    /// The algorithm whose digests have `len` hex digits, if any.
    pub const fn from_hex_len(len: usize) -> Option<Algo> {
        match len {
            64 => Some(Algo::Sha256),
            128 => Some(Algo::Sha512),
            _ => None,
        }
    }

    /// The algorithm named by a BSD-style tag (`SHA256`, `SHA512`; case-insensitive).
    pub fn from_tag(tag: &str) -> Option<Algo> {
        if tag.eq_ignore_ascii_case("SHA256") {
            Some(Algo::Sha256)
        } else if tag.eq_ignore_ascii_case("SHA512") {
            Some(Algo::Sha512)
        } else {
            None
        }
    }
}

impl fmt::Display for Algo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Streaming hasher for one [`Algo`].
#[derive(Clone, Debug)]
pub enum Digester {
    /// SHA-256 state.
    Sha256(Sha256),
    /// SHA-512 state.
    Sha512(Sha512),
}

impl Digester {
    /// A fresh hasher for `algo`.
    pub fn new(algo: Algo) -> Self {
        match algo {
            Algo::Sha256 => Digester::Sha256(Sha256::new()),
            Algo::Sha512 => Digester::Sha512(Sha512::new()),
        }
    }

    /// Feed more data.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Digester::Sha256(h) => h.update(data),
            Digester::Sha512(h) => h.update(data),
        }
    }

    /// Finish and return the digest as lower-case hex.
    pub fn finalize_hex(self) -> String {
        match self {
            Digester::Sha256(h) => hex::encode(h.finalize()),
            Digester::Sha512(h) => hex::encode(h.finalize()),
        }
    }
}

/// Adds `n` bytes to `progress`, if there is one.
fn count(progress: Option<&AtomicU64>, n: usize) {
    if let Some(p) = progress {
        p.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// The first `n` bytes of a buffer an inner reader or writer says it used.
fn used(buf: &[u8], n: usize) -> io::Result<&[u8]> {
    buf.get(..n).ok_or_else(|| io::Error::other(format!("an inner stream reported {n} bytes for a buffer of {}", buf.len())))
}

/// A [`Read`] that digests every byte read through it and adds their number to an optional
/// progress counter.
#[derive(Debug)]
pub struct HashingReader<'p, R> {
    inner: R,
    digester: Digester,
    progress: Option<&'p AtomicU64>,
}

impl<'p, R> HashingReader<'p, R> {
    /// Wraps `inner`, digesting with `algo` and counting on `progress`.
    pub fn new(inner: R, algo: Algo, progress: Option<&'p AtomicU64>) -> Self {
        Self { inner, digester: Digester::new(algo), progress }
    }

    /// The inner reader and the digest (lower-case hex) of everything read so far.
    pub fn finish(self) -> (R, String) {
        (self.inner, self.digester.finalize_hex())
    }
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digester.update(used(buf, n)?);
        count(self.progress, n);
        Ok(n)
    }
}

/// A [`Write`] that digests every byte the inner writer accepts and adds their number to an
/// optional progress counter.
#[derive(Debug)]
pub struct HashingWriter<'p, W> {
    inner: W,
    digester: Digester,
    progress: Option<&'p AtomicU64>,
}

impl<'p, W> HashingWriter<'p, W> {
    /// Wraps `inner`, digesting with `algo` and counting on `progress`.
    pub fn new(inner: W, algo: Algo, progress: Option<&'p AtomicU64>) -> Self {
        Self { inner, digester: Digester::new(algo), progress }
    }

    /// The inner writer and the digest (lower-case hex) of everything written so far.
    pub fn finish(self) -> (W, String) {
        (self.inner, self.digester.finalize_hex())
    }
}

impl<W: Write> Write for HashingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.digester.update(used(buf, n)?);
        count(self.progress, n);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Reads `reader` to its end through a [`READ_BUF_SIZE`] buffer, dropping the bytes.
fn drain(reader: &mut impl Read) -> io::Result<()> {
    let mut buf = vec![0u8; READ_BUF_SIZE];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Digest of the file at `path` with `algo`, as lower-case hex; `progress`, if given, advances
/// by the bytes hashed as they are read (1 MiB at a time). The error is the bare I/O error: the
/// caller names the file.
/// A file with holes (a parent's raw disk) is hashed by [`digest_sparse`]: reading a hole of a
/// freshly written file costs the kernel a zeroed page per 4 KiB (seconds for a 2 GiB disk).
pub fn digest_file(path: &Path, algo: Algo, progress: Option<&AtomicU64>) -> io::Result<String> {
    let mut file = File::open(path)?;
    let meta = file.metadata()?;
    if meta.is_file() {
        let size = meta.len();
        let extents = super::extents::data_extents(&file, size)?;
        if extents.iter().map(|(s, e)| e - s).sum::<u64>() < size {
            return digest_sparse(&file, size, &extents, algo, progress);
        }
        // SEEK_DATA/SEEK_HOLE moved the position.
        std::io::Seek::rewind(&mut file)?;
    }
    let mut reader = HashingReader::new(file, algo, progress);
    drain(&mut reader)?;
    Ok(reader.finish().1)
}

/// Feeds `n` zero bytes to `d`, [`SPARSE_CHUNK`] at a time from `zeros`.
fn feed_zeros(d: &mut Digester, zeros: &[u8], mut n: u64, progress: Option<&AtomicU64>) {
    while n > 0 {
        let k = n.min(zeros.len() as u64) as usize;
        d.update(&zeros[..k]);
        count(progress, k);
        n -= k as u64;
    }
}

/// Digest (lower-case hex) of the first `size` bytes of `file`, of which only `extents` hold
/// data: sorted `(start, end)` byte ranges as SEEK_DATA/SEEK_HOLE report them (see
/// `io::extents::data_extents`). Holes are fed as zeros without being read; data is read at
/// its offsets, so the file's position does not move. `progress` advances by hole and data
/// bytes alike. The error is the bare I/O error: the caller names the file.
pub fn digest_sparse(file: &File, size: u64, extents: &[(u64, u64)], algo: Algo, progress: Option<&AtomicU64>) -> io::Result<String> {
    let zeros = vec![0u8; SPARSE_CHUNK];
    let mut buf = vec![0u8; SPARSE_CHUNK];
    let mut d = Digester::new(algo);
    let mut pos = 0u64;
    for &(s, e) in extents {
        let (s, e) = (s.min(size), e.min(size));
        if s > pos {
            feed_zeros(&mut d, &zeros, s - pos, progress);
        }
        let mut p = s.max(pos);
        while p < e {
            let k = (e - p).min(SPARSE_CHUNK as u64) as usize;
            let b = &mut buf[..k];
            file.read_exact_at(b, p)?;
            d.update(b);
            count(progress, k);
            p += k as u64;
        }
        pos = pos.max(e);
    }
    if size > pos {
        feed_zeros(&mut d, &zeros, size - pos, progress);
    }
    Ok(d.finalize_hex())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const D256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const D256_HELLO: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
    const D512: &str =
        "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e";

    /// Bytes that differ from one 4 KiB block, and one 1 MiB buffer, to the next.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    fn sha2_hex(algo: Algo, data: &[u8]) -> String {
        match algo {
            Algo::Sha256 => hex::encode(Sha256::digest(data)),
            Algo::Sha512 => hex::encode(Sha512::digest(data)),
        }
    }

    /// A reader or writer that moves at most `max` bytes per call (short reads and writes).
    struct Trickle<T> {
        inner: T,
        max: usize,
    }

    impl<T: Read> Read for Trickle<T> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let k = buf.len().min(self.max);
            self.inner.read(&mut buf[..k])
        }
    }

    impl<T: Write> Write for Trickle<T> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.inner.write(&buf[..buf.len().min(self.max)])
        }
        fn flush(&mut self) -> io::Result<()> {
            self.inner.flush()
        }
    }

    #[test]
    fn digester_known_vectors() {
        assert_eq!(Digester::new(Algo::Sha256).finalize_hex(), D256);
        assert_eq!(Digester::new(Algo::Sha512).finalize_hex(), D512);
        let mut d = Digester::new(Algo::Sha256);
        d.update(b"hel");
        d.update(b"lo");
        assert_eq!(d.finalize_hex(), D256_HELLO);
    }

    #[test]
    fn hashing_reader_equals_sha2_across_buffer_boundaries() {
        let data = pattern(READ_BUF_SIZE + 12345);
        for algo in [Algo::Sha256, Algo::Sha512] {
            for (buf_size, max) in [(7, usize::MAX), (4096, 1000), (65537, usize::MAX), (READ_BUF_SIZE, 300_001)] {
                let counter = AtomicU64::new(0);
                let mut r = HashingReader::new(Trickle { inner: &data[..], max }, algo, Some(&counter));
                let mut out = Vec::new();
                let mut buf = vec![0u8; buf_size];
                loop {
                    let n = r.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    out.extend_from_slice(&buf[..n]);
                }
                let (_, hex) = r.finish();
                assert_eq!(out, data, "{algo} buffer {buf_size}");
                assert_eq!(hex, sha2_hex(algo, &data), "{algo} buffer {buf_size}");
                assert_eq!(counter.load(Ordering::Relaxed), data.len() as u64);
            }
        }
        let (_, empty) = HashingReader::new(io::empty(), Algo::Sha256, None).finish();
        assert_eq!(empty, D256);
    }

    #[test]
    fn hashing_writer_equals_sha2_across_buffer_boundaries() {
        let data = pattern(READ_BUF_SIZE + 12345);
        for algo in [Algo::Sha256, Algo::Sha512] {
            for (piece, max) in [(1, usize::MAX), (4095, 1000), (READ_BUF_SIZE + 1, 333_333), (data.len(), usize::MAX)] {
                let counter = AtomicU64::new(0);
                let mut w = HashingWriter::new(Trickle { inner: Vec::new(), max }, algo, Some(&counter));
                for chunk in data.chunks(piece) {
                    w.write_all(chunk).unwrap();
                }
                w.flush().unwrap();
                let (inner, hex) = w.finish();
                assert_eq!(inner.inner, data, "{algo} pieces of {piece}");
                assert_eq!(hex, sha2_hex(algo, &data), "{algo} pieces of {piece}");
                assert_eq!(counter.load(Ordering::Relaxed), data.len() as u64);
            }
        }
    }

    #[test]
    fn digest_file_equals_sha2_across_buffer_boundary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let data = pattern(READ_BUF_SIZE + 12345);
        std::fs::write(&path, &data).unwrap();
        for algo in [Algo::Sha256, Algo::Sha512] {
            assert_eq!(digest_file(&path, algo, None).unwrap(), sha2_hex(algo, &data));
        }
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(digest_file(&empty, Algo::Sha256, None).unwrap(), D256);
        assert!(digest_file(&dir.path().join("absent"), Algo::Sha256, None).is_err());
    }

    /// The verify bar (`source/verify.rs`) shows this counter: it must end at the file size.
    #[test]
    fn digest_file_counts_every_byte_on_the_progress_counter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("image");
        let data = pattern((5 << 20) + 777);
        std::fs::write(&path, &data).unwrap();
        let counter = AtomicU64::new(0);
        assert_eq!(digest_file(&path, Algo::Sha256, Some(&counter)).unwrap(), sha2_hex(Algo::Sha256, &data));
        assert_eq!(counter.load(Ordering::Relaxed), data.len() as u64);
    }

    /// The counter moves while hashing, not only at the end: through a FIFO, the writer sends
    /// the last bytes only once it has seen the counter move, so the hash cannot have ended.
    #[test]
    fn digest_file_progress_moves_before_the_end() {
        use std::time::{Duration, Instant};
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR).unwrap();
        let data = pattern(3 << 20);
        let counter = AtomicU64::new(0);
        let (seen, got) = std::thread::scope(|s| {
            let writer = s.spawn(|| {
                let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
                w.write_all(&data[..1 << 20]).unwrap();
                let deadline = Instant::now() + Duration::from_secs(30);
                while counter.load(Ordering::Relaxed) == 0 {
                    assert!(Instant::now() < deadline, "the counter did not move within 30 s");
                    std::thread::sleep(Duration::from_millis(1));
                }
                let seen = counter.load(Ordering::Relaxed);
                w.write_all(&data[1 << 20..]).unwrap();
                seen
            });
            let got = digest_file(&fifo, Algo::Sha256, Some(&counter));
            (writer.join().unwrap(), got)
        });
        assert!(seen > 0 && seen <= 1 << 20, "seen {seen}");
        assert_eq!(got.unwrap(), sha2_hex(Algo::Sha256, &data));
        assert_eq!(counter.load(Ordering::Relaxed), data.len() as u64);
    }

    #[test]
    fn sparse_digest_of_a_file_with_holes_equals_the_dense_digest() {
        let dir = tempfile::tempdir().unwrap();
        let size: u64 = 20 << 20;
        let sparse = dir.path().join("sparse.raw");
        let f = File::create(&sparse).unwrap();
        f.set_len(size).unwrap();
        f.write_all_at(b"hello", 5 << 20).unwrap();
        f.write_all_at(&[7u8; 9000], size - 9000).unwrap();
        drop(f);
        let mut dense_bytes = vec![0u8; size as usize];
        dense_bytes[5 << 20..(5 << 20) + 5].copy_from_slice(b"hello");
        dense_bytes[size as usize - 9000..].fill(7);
        let dense = dir.path().join("dense.raw");
        std::fs::write(&dense, &dense_bytes).unwrap();

        let f = File::open(&sparse).unwrap();
        let extents = crate::io::extents::data_extents(&f, size).unwrap();
        for algo in [Algo::Sha256, Algo::Sha512] {
            let counter = AtomicU64::new(0);
            let got = digest_sparse(&f, size, &extents, algo, Some(&counter)).unwrap();
            assert_eq!(got, digest_file(&dense, algo, None).unwrap(), "{algo}");
            assert_eq!(got, sha2_hex(algo, &dense_bytes), "{algo}");
            assert_eq!(counter.load(Ordering::Relaxed), size);
            // digest_file takes the sparse path for a file with holes, same digest and count.
            let counter = AtomicU64::new(0);
            assert_eq!(digest_file(&sparse, algo, Some(&counter)).unwrap(), got, "{algo}");
            assert_eq!(counter.load(Ordering::Relaxed), size);
        }
    }

    /// Holes are not read: bytes outside the extents count as zeros even where the file has data.
    #[test]
    fn sparse_digest_does_not_read_outside_the_extents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dense.raw");
        let data = pattern((9 << 20) + 3);
        std::fs::write(&path, &data).unwrap();
        let f = File::open(&path).unwrap();
        let extents = [(100u64, 5000u64), (6 << 20, (6 << 20) + 4096), ((9 << 20) + 1, 1 << 40)];
        let mut seen = vec![0u8; data.len()];
        for &(s, e) in &extents {
            let e = (e as usize).min(data.len());
            seen[s as usize..e].copy_from_slice(&data[s as usize..e]);
        }
        let got = digest_sparse(&f, data.len() as u64, &extents, Algo::Sha256, None).unwrap();
        assert_eq!(got, sha2_hex(Algo::Sha256, &seen));
        assert_ne!(got, sha2_hex(Algo::Sha256, &data));
        assert_eq!(digest_sparse(&f, data.len() as u64, &[(0, 1 << 40)], Algo::Sha256, None).unwrap(), sha2_hex(Algo::Sha256, &data));
    }
}
