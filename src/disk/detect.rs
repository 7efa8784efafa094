//! What kind of disk image a file is, from its magic bytes.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// Image formats we recognise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// Plain disk bytes.
    Raw,
    /// QEMU copy-on-write v2/v3.
    Qcow2,
    /// VMware sparse extent.
    Vmdk,
    /// Hyper-V VHDX.
    Vhdx,
    /// Virtual PC / Azure VHD (footer "conectix").
    Vhd,
}

impl ImageFormat {
    /// Lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
            Self::Vmdk => "vmdk",
            Self::Vhdx => "vhdx",
            Self::Vhd => "vhd",
        }
    }
}

/// Classifies by the first and last sector. Pure.
pub fn classify(first: &[u8], last: &[u8]) -> ImageFormat {
    match first.get(..8) {
        Some([b'Q', b'F', b'I', 0xfb, ..]) => ImageFormat::Qcow2,
        Some([b'K', b'D', b'M', b'V', ..]) => ImageFormat::Vmdk,
        Some(b"vhdxfile") => ImageFormat::Vhdx,
        Some(b"conectix") => ImageFormat::Vhd,
        _ if last.get(..8) == Some(b"conectix") => ImageFormat::Vhd,
        _ => ImageFormat::Raw,
    }
}

/// Classifies an open file.
pub fn detect(file: &File) -> std::io::Result<ImageFormat> {
    let len = file.metadata()?.len();
    let mut first = [0u8; 512];
    let n = file.read_at(&mut first, 0)?;
    let mut last = [0u8; 512];
    if len >= 1024 {
        file.read_exact_at(&mut last, len - 512)?;
    }
    Ok(classify(first.get(..n).unwrap_or_default(), &last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magics() {
        assert_eq!(classify(b"QFI\xfb\0\0\0\x03", &[]), ImageFormat::Qcow2);
        assert_eq!(classify(b"KDMV\x03\0\0\0", &[]), ImageFormat::Vmdk);
        assert_eq!(classify(&[0u8; 512], b"conectix"), ImageFormat::Vhd);
        assert_eq!(classify(&[0u8; 512], &[0u8; 512]), ImageFormat::Raw);
    }
}
