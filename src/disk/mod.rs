//! Disk images: format detection, conversion to a raw working disk, partition tables, growth,
//! filesystem probing, and LVM volumes read from the disk (`lvm`).
pub mod convert;
pub mod detect;
pub mod fsprobe;
pub mod grow;
pub mod lvm;
pub mod partition;
pub mod qcow2_compressed;
pub mod workdisk;
