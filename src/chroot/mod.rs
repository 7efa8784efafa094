//! Everything about the image root as seen from the host: in-root path resolution, the mount
//! layout from the image's fstab, the build sandbox every command in the image runs in, the
//! command builder, running and streaming a process for the build, the services contract, and
//! the provisioning guards.
pub mod cmd;
pub mod guards;
pub mod layout;
pub mod resolve;
pub mod run;
pub mod sandbox;
pub mod services;
