//! One disk image as the commands see it: its partitions attached and mounted in our private
//! namespace ([`mount`]), and the facts read from its root for the manifest and publish
//! ([`arch`]: the CPU architecture from an ELF header; [`drivers`]: whether every kernel carries
//! the ena and nvme drivers); [`selinux`]: labels for what the build wrote).

pub mod arch;
pub mod drivers;
pub mod freespace;
pub mod mount;
pub mod selinux;
