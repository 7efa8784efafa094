//! Well-known GPT partition type GUIDs.

use uuid::uuid;

use super::Guid;

/// Linux root (/) on x86-64 (sgdisk code 8304).
pub const LINUX_ROOT_X86_64: Guid = Guid::from_uuid(uuid!("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"));
/// Linux root (/) on AArch64 (sgdisk code 8305).
pub const LINUX_ROOT_AARCH64: Guid = Guid::from_uuid(uuid!("B921B045-1DF0-41C3-AF44-4C6F280D3FAE"));
/// Generic Linux filesystem data (sgdisk code 8300).
#[cfg(test)]
pub const LINUX_FS: Guid = Guid::from_uuid(uuid!("0FC63DAF-8483-4772-8E79-3D69D8477DE4"));
/// EFI system partition (sgdisk code EF00).
pub const EFI_SYSTEM: Guid = Guid::from_uuid(uuid!("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"));
/// BIOS boot partition for GRUB on GPT (sgdisk code EF02).
#[cfg(test)]
pub const BIOS_BOOT: Guid = Guid::from_uuid(uuid!("21686148-6449-6E6F-744E-656564454649"));
/// Extended boot loader partition, /boot (sgdisk code EA00).
#[cfg(test)]
pub const XBOOTLDR: Guid = Guid::from_uuid(uuid!("BC13C2FF-59E6-4262-A352-B275FD6F7172"));
