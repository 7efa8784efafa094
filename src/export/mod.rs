//! Output formats: one raw disk → sparse raw, qcow2, fixed and dynamic VHD, streamOptimized
//! VMDK and OVA, written by our own writers (no qemu-img at run time).

pub mod check;
pub mod copy;
pub mod digest;
pub mod feed;
pub mod format;
pub mod input;
pub mod options;
pub mod output;
pub mod ova;
pub mod ovf;
pub mod qcow2;
pub mod run;
pub mod spec;
pub mod verify;
pub mod vhd;
pub mod vmdk;
