//! Everything about the image root as seen from the host: in-root path resolution, the mount
//! layout from the image's fstab, the chroot command builder, and the provisioning guards.
pub mod cmd;
pub mod guards;
pub mod layout;
pub mod resolve;
