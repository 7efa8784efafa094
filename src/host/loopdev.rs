//! A loop device attached to a byte range of a disk file, owned as a value.
//!
//! The kernel here does not scan partitions on loop devices, so each partition gets its own
//! device with an offset and a size limit taken from our own partition-table reader. Devices
//! are attached with `LO_FLAGS_AUTOCLEAR`: when the last user (our fd, a mount) goes away, the
//! kernel detaches them, which covers `kill -9`. `close()` is the checked path and verifies that
//! the device really is free afterwards; `Drop` makes a best-effort release.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Errors from attaching or detaching a loop device.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    /// `/dev/loop-control` could not be used.
    #[error("Failed to open /dev/loop-control (is the loop module loaded?): {0}")]
    Control(#[source] std::io::Error),
    /// No free device after retries.
    #[error("Failed to find a free loop device after {tries} tries (all in use?): {source}")]
    NoFree {
        /// How many times we asked.
        tries: u32,
        /// Last error.
        #[source]
        source: std::io::Error,
    },
    /// Attaching failed.
    #[error("Failed to attach {device} to the disk at offset {offset} (size {size}): {source}")]
    Attach {
        /// Device path.
        device: PathBuf,
        /// Byte offset.
        offset: u64,
        /// Byte size limit.
        size: u64,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Detaching failed.
    #[error("Failed to detach {device}: {source}")]
    Detach {
        /// Device path.
        device: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The device stayed attached after detach.
    #[error("Failed to detach {device}: still attached after {waited_ms} ms (something still holds it open)")]
    StillAttached {
        /// Device path.
        device: PathBuf,
        /// How long we waited.
        waited_ms: u128,
    },
}

/// One attached loop device. Detached by `close()` (checked) or `Drop` (best effort).
#[derive(Debug)]
pub struct LoopDevice {
    inner: Option<loopdev::LoopDevice>,
    path: PathBuf,
}

const ATTACH_TRIES: u32 = 20;

impl LoopDevice {
    /// Attaches `[offset, offset+size)` of `backing` on a free loop device, with autoclear.
    pub fn attach(backing: &File, offset: u64, size: u64, read_only: bool) -> Result<Self, LoopError> {
        let control = loopdev::LoopControl::open().map_err(LoopError::Control)?;
        let mut last = std::io::Error::from_raw_os_error(libc::EBUSY);
        for _ in 0..ATTACH_TRIES {
            let dev = match control.next_free() {
                Ok(d) => d,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            let path = dev.path().unwrap_or_else(|| PathBuf::from("/dev/loop?"));
            let res = dev.with().offset(offset).size_limit(size).read_only(read_only).autoclear(true).attach_fd(backing.as_raw_fd());
            match res {
                Ok(()) => {
                    tracing::debug!(device = %path.display(), offset, size, "attached loop device");
                    return Ok(Self { inner: Some(dev), path });
                }
                // Another build took this device between next_free and attach: try the next one.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = e,
                Err(source) => return Err(LoopError::Attach { device: path, offset, size, source }),
            }
        }
        Err(LoopError::NoFree { tries: ATTACH_TRIES, source: last })
    }

    /// The device node, e.g. `/dev/loop3`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Detaches and verifies the device is free. Call after everything on it is unmounted.
    pub fn close(mut self) -> Result<(), LoopError> {
        self.impl_close()
    }

    fn impl_close(&mut self) -> Result<(), LoopError> {
        let Some(dev) = self.inner.take() else {
            return Ok(());
        };
        let detach = dev.detach();
        // Closing our fd is what lets autoclear finish if the kernel deferred the detach.
        drop(dev);
        if let Err(source) = detach {
            // ENXIO: already detached (autoclear ran first). Anything else is real.
            if source.raw_os_error() != Some(libc::ENXIO) {
                return Err(LoopError::Detach { device: self.path.clone(), source });
            }
        }
        wait_detached(&self.path)
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        if let Err(e) = self.impl_close() {
            tracing::warn!("{e}");
        }
    }
}

/// Whether a loop device node currently has a backing file.
pub fn is_attached(device: &Path) -> bool {
    let Some(name) = device.file_name() else {
        return false;
    };
    Path::new("/sys/block").join(name).join("loop/backing_file").exists()
}

fn wait_detached(device: &Path) -> Result<(), LoopError> {
    let start = Instant::now();
    let limit = Duration::from_secs(5);
    while is_attached(device) {
        if start.elapsed() > limit {
            return Err(LoopError::StillAttached { device: device.to_path_buf(), waited_ms: start.elapsed().as_millis() });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
