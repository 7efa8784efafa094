//! The narrow layer over the host kernel: loop devices, mounts, namespaces, commands, processes.
pub mod command;
pub mod fd;
pub mod loopdev;
pub mod mount;
pub mod namespace;
pub mod procscan;
pub mod signals;
pub mod trim;
