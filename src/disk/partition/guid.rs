//! GPT GUIDs: the mixed-endian on-disk layout and the canonical text form.

use std::fmt;
use std::str::FromStr;

/// A GUID stored in GPT's mixed-endian layout.
///
/// `Display` and `FromStr` use the canonical uppercase text form, e.g.
/// `4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// Builds a GUID from its text-form fields (`d1-d2-d3-d4[0..2]-d4[2..8]`).
    pub const fn from_fields(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Guid {
        let [a0, a1, a2, a3] = d1.to_le_bytes();
        let [b0, b1] = d2.to_le_bytes();
        let [c0, c1] = d3.to_le_bytes();
        let [e0, e1, e2, e3, e4, e5, e6, e7] = d4;
        Guid([a0, a1, a2, a3, b0, b1, c0, c1, e0, e1, e2, e3, e4, e5, e6, e7])
    }

    /// Whether this is the all-zero GUID.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a0, a1, a2, a3, b0, b1, c0, c1, e0, e1, e2, e3, e4, e5, e6, e7] = self.0;
        write!(
            f,
            "{:08X}-{:04X}-{:04X}-{e0:02X}{e1:02X}-{e2:02X}{e3:02X}{e4:02X}{e5:02X}{e6:02X}{e7:02X}",
            u32::from_le_bytes([a0, a1, a2, a3]),
            u16::from_le_bytes([b0, b1]),
            u16::from_le_bytes([c0, c1]),
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

/// Error from parsing a GUID's text form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Failed to parse GUID {input:?}: expected 32 hex digits in 8-4-4-4-12 groups")]
pub struct GuidParseError {
    /// The rejected text.
    pub input: String,
}

impl FromStr for Guid {
    type Err = GuidParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || GuidParseError { input: s.to_owned() };
        if s.len() != 36 {
            return Err(err());
        }
        let mut text = [0u8; 16];
        let mut nibbles = 0usize;
        for (pos, c) in s.chars().enumerate() {
            if matches!(pos, 8 | 13 | 18 | 23) {
                if c != '-' {
                    return Err(err());
                }
                continue;
            }
            let digit = c.to_digit(16).and_then(|d| u8::try_from(d).ok());
            let byte = text.get_mut(nibbles / 2);
            match (digit, byte) {
                (Some(d), Some(b)) => *b = (*b << 4) | d,
                _ => return Err(err()),
            }
            nibbles += 1;
        }
        if nibbles != 32 {
            return Err(err());
        }
        let [t0, t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, t11, t12, t13, t14, t15] = text;
        Ok(Guid([t3, t2, t1, t0, t5, t4, t7, t6, t8, t9, t10, t11, t12, t13, t14, t15]))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::super::types;
    use super::*;

    #[test]
    fn guid_text_round_trips() {
        let cases = [
            (types::LINUX_ROOT_X86_64, "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"),
            (types::LINUX_FS, "0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
            (types::EFI_SYSTEM, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
            (types::BIOS_BOOT, "21686148-6449-6E6F-744E-656564454649"),
            (types::XBOOTLDR, "BC13C2FF-59E6-4262-A352-B275FD6F7172"),
            (types::LINUX_ROOT_AARCH64, "B921B045-1DF0-41C3-AF44-4C6F280D3FAE"),
        ];
        for (guid, text) in cases {
            assert_eq!(guid.to_string(), text);
            assert_eq!(text.parse::<Guid>().unwrap(), guid);
            assert_eq!(text.to_lowercase().parse::<Guid>().unwrap(), guid);
        }
        assert_eq!(types::EFI_SYSTEM.0[..4], [0x28, 0x73, 0x2A, 0xC1]);
        for bad in [
            "",
            "C12A7328F81F11D2BA4B00A0C93EC93B",
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93",
            "G12A7328-F81F-11D2-BA4B-00A0C93EC93B",
            "C12A7328-F81F-11D2-BA4B+00A0C93EC93B",
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93ß",
        ] {
            let err = bad.parse::<Guid>().unwrap_err();
            assert!(err.to_string().starts_with("Failed to parse GUID"), "{err}");
        }
    }
}
