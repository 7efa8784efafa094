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

/// `struct loop_info64` of <linux/loop.h>.
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

/// `struct loop_config` of <linux/loop.h>.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// Attaches `backing`'s range to `dev` with autoclear in one LOOP_CONFIGURE call (Linux 5.8+):
/// the file, offset, size limit and flags at once, where LOOP_SET_FD then LOOP_SET_STATUS64
/// froze and flushed the device twice (0.37 s a partition here).
fn configure(dev: &loopdev::LoopDevice, backing: &File, offset: u64, size: u64, read_only: bool) -> std::io::Result<()> {
    let fd = u32::try_from(backing.as_raw_fd()).map_err(|_| std::io::Error::from_raw_os_error(libc::EBADF))?;
    let flags = LO_FLAGS_AUTOCLEAR | if read_only { LO_FLAGS_READ_ONLY } else { 0 };
    let config = LoopConfig {
        fd,
        block_size: 0,
        info: LoopInfo64 {
            device: 0,
            inode: 0,
            rdevice: 0,
            offset,
            sizelimit: size,
            number: 0,
            encrypt_type: 0,
            encrypt_key_size: 0,
            flags,
            file_name: [0; 64],
            crypt_name: [0; 64],
            encrypt_key: [0; 32],
            init: [0; 2],
        },
        reserved: [0; 8],
    };
    // SAFETY: LOOP_CONFIGURE reads one `struct loop_config`, which `config` is (repr(C), the
    // kernel's layout), alive for the call; the kernel keeps no pointer to it.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE as _, &raw const config) };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
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
            let res = match configure(&dev, backing, offset, size, read_only) {
                // A kernel before 5.8: set the file, then the range (slower: the second call
                // freezes the device's queue again).
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTTY | libc::EINVAL)) => {
                    dev.with().offset(offset).size_limit(size).read_only(read_only).autoclear(true).attach_fd(backing.as_raw_fd())
                }
                other => other,
            };
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's sizes (<linux/loop.h>): a wrong layout would pass garbage as the offset.
    #[test]
    fn loop_config_has_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
        assert_eq!(std::mem::offset_of!(LoopConfig, info) + std::mem::offset_of!(LoopInfo64, offset), 8 + 24);
    }
}
