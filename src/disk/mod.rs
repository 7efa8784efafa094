//! Disk images: format detection, conversion to a raw working disk, partition tables, growth,
//! and filesystem probing.
pub mod convert;
pub mod detect;
pub mod fsprobe;
pub mod grow;
pub mod partition;
pub mod qcow2_compressed;
pub mod workdisk;
