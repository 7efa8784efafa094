//! imgforge: bake immutable machine images on a build host.

mod build;
mod chroot;
mod cli;
mod disk;
mod export;
mod host;
mod logging;
mod manifest;
mod progress;
mod provision;
mod publish;
mod recipe;
mod s3;
mod seal;
mod source;
mod stamp;

fn main() -> std::process::ExitCode {
    cli::main()
}
