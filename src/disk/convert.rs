//! Upstream image (raw or qcow2) → sparse raw working disk. Holes stay holes: raw sources are
//! shared by reflink (FICLONE) where the filesystem can (XFS, btrfs: a layered child starts from
//! its parent's raw in milliseconds), else copied by data extent (SEEK_DATA/SEEK_HOLE +
//! copy_file_range); qcow2 clusters are read by
//! mapping, unallocated and zero clusters are never written, and all-zero data is skipped.
//! qcow2 decompression is split across threads, each with its own reader.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use imago::qcow2::Qcow2;
use imago::{DenyImplicitOpenGate, FormatAccess, FormatDriverBuilder, Mapping, Storage, StorageOpenOptions};

use super::detect::{ImageFormat, detect};

/// Conversion failed.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// Unsupported input.
    #[error("Failed to convert {path}: it is a {format} image; imgforge reads raw and qcow2 upstream images")]
    Unsupported {
        /// Input.
        path: PathBuf,
        /// Detected format.
        format: &'static str,
    },
    /// I/O on the input or output.
    #[error("Failed to convert {path} at offset {offset}: {source}")]
    Io {
        /// Input.
        path: PathBuf,
        /// Where.
        offset: u64,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A qcow2 header that no conversion can trust.
    #[error("Failed to convert {path}: not a usable qcow2 image: {reason}")]
    Malformed {
        /// Input.
        path: PathBuf,
        /// What is wrong, with the values read.
        reason: String,
    },
    /// Stopped by a signal.
    #[error("conversion interrupted")]
    Interrupted,
}

/// The virtual size an upstream image declares (a raw's length, a qcow2's header), before
/// converting it; `None` when it cannot be read.
pub fn virtual_size(input: &Path) -> Option<u64> {
    let f = File::open(input).ok()?;
    match detect(&f).ok()? {
        ImageFormat::Raw => f.metadata().ok().map(|m| m.len()),
        ImageFormat::Qcow2 => {
            let mut b = [0u8; 8];
            f.read_exact_at(&mut b, 24).ok()?;
            Some(u64::from_be_bytes(b))
        }
        _ => None,
    }
}

/// The largest virtual disk imgforge converts: EBS's largest volume.
pub const MAX_VIRTUAL_SIZE: u64 = 64 << 40;

/// Checks what a qcow2 header promises against the file before any reader relies on it: the
/// header is all there, the cluster size is one qemu writes, the virtual size is at most
/// [`MAX_VIRTUAL_SIZE`], and the L1 table lies inside the file and covers the whole virtual
/// disk (qemu refuses those images too). Pure over the header bytes and the file length.
pub fn check_qcow2_header(h: &[u8], file_len: u64) -> Result<(), String> {
    let be32 = |at: usize| h.get(at..at + 4).and_then(|b| b.try_into().ok()).map(u32::from_be_bytes);
    let be64 = |at: usize| h.get(at..at + 8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes);
    let version = be32(4).ok_or("the header is cut short (under 8 bytes)")?;
    let need = match version {
        2 => 72,
        3 => u64::from(be32(100).ok_or(format!("the version 3 header is cut short ({file_len} bytes)"))?),
        v => return Err(format!("version {v} (qemu writes 2 and 3)")),
    };
    if file_len < need.max(72) {
        return Err(format!("the header needs {} bytes, the file has {file_len}", need.max(72)));
    }
    let (Some(bits), Some(size), Some(l1_size), Some(l1_offset)) = (be32(20), be64(24), be32(36), be64(40)) else {
        return Err(format!("the header is cut short ({file_len} bytes)"));
    };
    if !(9..=21).contains(&bits) {
        return Err(format!("cluster_bits {bits} is outside 9..=21"));
    }
    if size > MAX_VIRTUAL_SIZE {
        return Err(format!("it declares a virtual size of {size} bytes, over the {MAX_VIRTUAL_SIZE}-byte (64 TiB) limit"));
    }
    let cluster = 1u64 << bits;
    let per_l1_entry = cluster * (cluster / 8);
    let needed_l1 = size.div_ceil(per_l1_entry);
    if u64::from(l1_size) < needed_l1 {
        return Err(format!("its L1 table has {l1_size} entries, too few for a virtual size of {size} bytes (needs {needed_l1})"));
    }
    let l1_end = u64::from(l1_size).checked_mul(8).and_then(|n| n.checked_add(l1_offset));
    if l1_size > 0 && l1_end.is_none_or(|end| end > file_len) {
        return Err(format!("its L1 table ({l1_size} entries at offset {l1_offset}) lies beyond the end of the file ({file_len} bytes)"));
    }
    Ok(())
}

/// Bytes of virtual disk done so far, for progress.
pub type Progress = AtomicU64;

const CHUNK: u64 = 4 << 20;

/// Writes the disk content of `input` into the empty file `out`, sparse. Returns the virtual size.
pub fn to_raw(input: &Path, out: &File, progress: &Progress) -> Result<u64, ConvertError> {
    let io = |offset| move |source| ConvertError::Io { path: input.to_path_buf(), offset, source };
    let f = File::open(input).map_err(io(0))?;
    match detect(&f).map_err(io(0))? {
        ImageFormat::Raw => copy_raw(&f, input, out, progress),
        ImageFormat::Qcow2 => qcow2_to_raw(input, out, progress),
        other => Err(ConvertError::Unsupported { path: input.to_path_buf(), format: other.name() }),
    }
}

fn copy_raw(f: &File, input: &Path, out: &File, progress: &Progress) -> Result<u64, ConvertError> {
    let io = |offset| move |source| ConvertError::Io { path: input.to_path_buf(), offset, source };
    let size = f.metadata().map_err(io(0))?.len();
    if reflink(f, out) {
        progress.fetch_add(size, Ordering::Relaxed);
        tracing::debug!("{}: shared by reflink", input.display());
        return Ok(size);
    }
    out.set_len(size).map_err(io(0))?;
    for (start, end) in crate::io::extents::data_extents(f, size).map_err(io(0))? {
        let mut off = start;
        while off < end {
            if crate::host::signals::stop_requested() {
                return Err(ConvertError::Interrupted);
            }
            let len = usize::try_from((end - off).min(64 << 20)).unwrap_or(64 << 20);
            let (mut a, mut b) = (i64::try_from(off).unwrap_or(i64::MAX), i64::try_from(off).unwrap_or(i64::MAX));
            let n = nix::fcntl::copy_file_range(f.as_fd(), Some(&mut a), out.as_fd(), Some(&mut b), len).map_err(|e| io(off)(e.into()))?;
            if n == 0 {
                return Err(io(off)(std::io::ErrorKind::UnexpectedEof.into()));
            }
            off += n as u64;
            progress.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
    Ok(size)
}

/// Makes `out` share all of `f`'s blocks (copy on write). False where the filesystem cannot
/// (ext4, another filesystem, a kernel without reflinks): the caller copies instead.
fn reflink(f: &File, out: &File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: FICLONE takes the source descriptor as its integer argument; both descriptors are
    // open for the duration of the call and the kernel writes no user memory.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::ioctl(out.as_raw_fd(), libc::FICLONE, f.as_raw_fd()) };
    rc == 0
}

/// Granularity of hole detection in converted data: runs of all-zero 64 KiB blocks stay holes.
const ZERO_BLOCK: usize = 64 << 10;

/// Writes `buf` at `off`, skipping all-zero `ZERO_BLOCK`s (the output starts as one big hole)
/// and merging consecutive data blocks into one write.
fn write_nonzero(out: &File, buf: &[u8], off: u64) -> std::io::Result<()> {
    let mut run: Option<usize> = None;
    for (i, block) in buf.chunks(ZERO_BLOCK).enumerate() {
        let at = i * ZERO_BLOCK;
        let zero = block.iter().all(|b| *b == 0);
        match (zero, run) {
            (false, None) => run = Some(at),
            (true, Some(start)) => {
                out.write_all_at(buf.get(start..at).unwrap_or_default(), off + start as u64)?;
                run = None;
            }
            _ => {}
        }
    }
    if let Some(start) = run {
        out.write_all_at(buf.get(start..).unwrap_or_default(), off + start as u64)?;
    }
    Ok(())
}

fn open_qcow2(input: &Path) -> std::io::Result<FormatAccess<imago::file::File>> {
    let storage = imago::file::File::open(StorageOpenOptions::new().filename(input))?;
    // Deny: a hostile image must not make us open a backing file of its choosing.
    let q = Qcow2::<imago::file::File>::builder(storage).write(false).open(DenyImplicitOpenGate::default())?;
    Ok(FormatAccess::new(q))
}

fn qcow2_to_raw(input: &Path, out: &File, progress: &Progress) -> Result<u64, ConvertError> {
    let io = |offset| move |source| ConvertError::Io { path: input.to_path_buf(), offset, source };
    {
        let f = File::open(input).map_err(io(0))?;
        let len = f.metadata().map_err(io(0))?.len();
        let mut h = vec![0u8; usize::try_from(len.min(4096)).unwrap_or(4096)];
        f.read_exact_at(&mut h, 0).map_err(io(0))?;
        check_qcow2_header(&h, len).map_err(|reason| ConvertError::Malformed { path: input.to_path_buf(), reason })?;
    }
    let size = open_qcow2(input).map_err(io(0))?.size();
    out.set_len(size).map_err(io(0))?;
    // One reader per core: zlib decompression of compressed clusters is the bottleneck, and
    // each imago instance keeps its own L2 cache, so readers never contend.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 8) as u64;
    let raw = File::open(input).map_err(io(0))?;
    let index = super::qcow2_compressed::Index::read(&raw).filter(|i| !i.is_empty());
    let fast = index.as_ref().map(|i| (i, &raw));
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers).map(|w| s.spawn(move || qcow2_worker(input, out, size, w, workers, progress, fast))).collect();
        handles.into_iter().try_for_each(|h| h.join().unwrap_or(Err(ConvertError::Interrupted)))
    })?;
    Ok(size)
}

/// Converts chunks `w, w+n, w+2n…` of the virtual disk.
/// `fast`: the image's compressed clusters and the file, inflated with libdeflate where imago
/// maps compressed data.
fn qcow2_worker(
    input: &Path,
    out: &File,
    size: u64,
    w: u64,
    n: u64,
    progress: &Progress,
    fast: Option<(&super::qcow2_compressed::Index, &File)>,
) -> Result<(), ConvertError> {
    let io = |offset| move |source| ConvertError::Io { path: input.to_path_buf(), offset, source };
    let img = open_qcow2(input).map_err(io(0))?;
    let mut inflater = super::qcow2_compressed::Inflater::default();
    let mut buf = vec![0u8; CHUNK as usize];
    let mut chunk = w;
    while chunk * CHUNK < size {
        if crate::host::signals::stop_requested() {
            return Err(ConvertError::Interrupted);
        }
        let start = chunk * CHUNK;
        let end = (start + CHUNK).min(size);
        let mut off = start;
        while off < end {
            let (mapping, len) = img.get_mapping(off, end - off).map_err(io(off))?;
            let len = len.min(end - off);
            if len == 0 || matches!(mapping, Mapping::Eof { .. }) {
                break;
            }
            if !matches!(mapping, Mapping::Zero { .. }) {
                let piece = buf.get_mut(..len as usize).ok_or_else(|| io(off)(std::io::ErrorKind::InvalidData.into()))?;
                let inflated = matches!(mapping, Mapping::Special { .. })
                    && fast.is_some_and(|(index, file)| index.fill(file, off, piece, &mut inflater));
                if !inflated {
                    img.read(&mut *piece, off).map_err(io(off))?;
                }
                write_nonzero(out, piece, off).map_err(io(off))?;
            }
            off += len;
        }
        progress.fetch_add(end - start, Ordering::Relaxed);
        chunk += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn header(version: u32, bits: u32, size: u64, l1_size: u32, l1_offset: u64) -> Vec<u8> {
        let mut h = vec![0u8; 104];
        h[..4].copy_from_slice(b"QFI\xfb");
        h[4..8].copy_from_slice(&version.to_be_bytes());
        h[20..24].copy_from_slice(&bits.to_be_bytes());
        h[24..32].copy_from_slice(&size.to_be_bytes());
        h[36..40].copy_from_slice(&l1_size.to_be_bytes());
        h[40..48].copy_from_slice(&l1_offset.to_be_bytes());
        h[100..104].copy_from_slice(&104u32.to_be_bytes());
        h
    }

    #[test]
    fn qcow2_headers_that_promise_too_much() {
        // 1 GiB, 64 KiB clusters: one L1 entry covers 512 MiB.
        assert_eq!(check_qcow2_header(&header(3, 16, 1 << 30, 2, 0x30000), 1 << 20), Ok(()));
        let bad = |h: Vec<u8>, len: u64| check_qcow2_header(&h, len).unwrap_err();
        // Found by the fuzzer: a 29-byte file whose size field ran past its end (the reader
        // saw zeros there, and a 245 TB disk to walk).
        assert!(bad(header(2, 9, 0xdf00_0000_0000, 0, 0)[..29].to_vec(), 29).contains("the header needs 72 bytes"));
        assert!(bad(header(3, 16, 1 << 30, 1, 0x30000), 1 << 20).contains("too few"));
        assert!(bad(header(3, 16, 1 << 30, 2, 1 << 40), 1 << 20).contains("beyond the end of the file"));
        assert!(bad(header(3, 16, 1 << 50, u32::MAX, 0x30000), 1 << 20).contains("64 TiB"));
        assert!(bad(header(3, 30, 1 << 30, 2, 0x30000), 1 << 20).contains("cluster_bits 30"));
        assert!(bad(header(4, 16, 1 << 30, 2, 0x30000), 1 << 20).contains("version 4"));
        assert!(bad(header(3, 16, 1 << 30, 0x7fff_ffff, 0x30000), 1 << 20).contains("beyond the end"));
    }

    #[test]
    fn zero_blocks_stay_holes() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(4 * ZERO_BLOCK as u64).unwrap();
        let mut buf = vec![0u8; 4 * ZERO_BLOCK];
        buf[ZERO_BLOCK + 7] = 1;
        buf[3 * ZERO_BLOCK] = 2;
        write_nonzero(&f, &buf, 0).unwrap();
        let mut back = vec![0u8; buf.len()];
        f.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(back, buf);
        assert_eq!(
            crate::io::extents::data_extents(&f, buf.len() as u64).unwrap(),
            vec![(ZERO_BLOCK as u64, 2 * ZERO_BLOCK as u64), (3 * ZERO_BLOCK as u64, 4 * ZERO_BLOCK as u64)]
        );
        assert!(f.metadata().unwrap().blocks() * 512 <= 2 * ZERO_BLOCK as u64 + 8192);
    }

    #[test]
    fn qcow2_matches_qemu_img() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("in.raw");
        let mut data = vec![0u8; 8 << 20];
        for (i, b) in data.iter_mut().enumerate().skip(1 << 20).take(3 << 20) {
            *b = (i % 251) as u8;
        }
        std::fs::write(&raw, &data).unwrap();
        let q = dir.path().join("in.qcow2");
        let ok = std::process::Command::new("qemu-img").args(["convert", "-c", "-O", "qcow2"]).arg(&raw).arg(&q).status();
        let ok = ok.expect("qemu-img is not installed: run scripts/setup (qemu-utils)");
        assert!(ok.success());
        // Its compressed clusters are inflated by libdeflate (the fast path), not by imago.
        let index = crate::disk::qcow2_compressed::Index::read(&File::open(&q).unwrap()).unwrap();
        assert_eq!((index.is_empty(), index.cluster_size), (false, 65536));
        let out = tempfile::tempfile().unwrap();
        let size = to_raw(&q, &out, &AtomicU64::new(0)).unwrap();
        assert_eq!(size, data.len() as u64);
        let mut back = vec![0u8; data.len()];
        out.read_exact_at(&mut back, 0).unwrap();
        assert!(back == data, "converted content differs");
        assert!(out.metadata().unwrap().blocks() * 512 < (4 << 20) + (1 << 20), "not sparse");
    }

    #[test]
    fn refuses_other_formats() {
        let dir = tempfile::tempdir().unwrap();
        let v = dir.path().join("x.vmdk");
        std::fs::write(&v, b"KDMV\x01\0\0\0").unwrap();
        let err = to_raw(&v, &tempfile::tempfile().unwrap(), &AtomicU64::new(0)).unwrap_err();
        assert!(err.to_string().contains("vmdk image"), "{err}");
    }
}
