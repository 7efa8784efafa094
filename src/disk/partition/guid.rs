//! GPT GUIDs: the mixed-endian on-disk layout and the canonical text form.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// A GUID stored in GPT's mixed-endian layout: the first three fields little-endian, the
/// last eight bytes as written. The byte order is uuid's `to_bytes_le`/`from_bytes_le`.
///
/// `Display` writes the canonical hyphenated text form in uppercase, e.g.
/// `4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709`; `FromStr` accepts that form in either case.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// The GUID with the same text form as `uuid`.
    pub const fn from_uuid(uuid: Uuid) -> Guid {
        Guid(uuid.to_bytes_le())
    }

    /// The uuid with the same text form as this GUID.
    pub const fn to_uuid(self) -> Uuid {
        Uuid::from_bytes_le(self.0)
    }

    /// Whether this is the all-zero GUID, which marks an unused GPT entry.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.to_uuid().hyphenated().encode_upper(&mut Uuid::encode_buffer()))
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

    /// Parses the 36-character hyphenated form only; uuid on its own would also take the
    /// simple, braced and URN forms, which are 32, 38 and 45 characters long.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || GuidParseError { input: s.to_owned() };
        if s.len() != 36 {
            return Err(err());
        }
        Uuid::try_parse(s).map(Guid::from_uuid).map_err(|_| err())
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
        let efi = [0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B];
        assert_eq!(types::EFI_SYSTEM.0, efi);
        assert_eq!(format!("{:?}", Guid(efi)), "Guid(C12A7328-F81F-11D2-BA4B-00A0C93EC93B)");
        for bad in [
            "",
            "C12A7328F81F11D2BA4B00A0C93EC93B",
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93",
            "G12A7328-F81F-11D2-BA4B-00A0C93EC93B",
            "C12A7328-F81F-11D2-BA4B+00A0C93EC93B",
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93ß",
            "{C12A7328-F81F-11D2-BA4B-00A0C93EC93B}",
            "urn:uuid:C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
        ] {
            let err = bad.parse::<Guid>().unwrap_err();
            assert!(err.to_string().starts_with("Failed to parse GUID"), "{err}");
        }
    }
}
