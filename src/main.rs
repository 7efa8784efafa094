//! imgforge: bake immutable machine images on a build host.
//!
//! The modules, by layer: each imports only from layers below it (a test in
//! `tests/architecture.rs` fails on any import cycle between top-level modules).
//!
//! | Layer | Modules | Job |
//! |---|---|---|
//! | command line | [`cli`] | flags, one file per subcommand, exit codes (and the fuzz targets, `fuzz.rs`, in the `imgforge-fuzz` binary) |
//! | pipelines | [`pipeline`], [`bakery`] | `build` and `seal IMAGE`: the domains in order over one image; many images: the plan of a set of recipes, `bake`, CI artifacts |
//! | configuration | [`recipe`] | TOML recipe → validated plan, made of the domains' own option types |
//! | domains | [`source`], [`provision`], [`seal`], [`stamp`], [`export`], [`publish`], [`s3`], [`manifest`], [`registry`], [`imagetest`], [`gc`] | verify an upstream; run provisioners; scrub identities; stamp the version; write formats; upload to AWS; the build record; every build recorded and queried; image tests, JUnit and verdicts; the janitor |
//! | the image | [`image`], [`disk`], [`chroot`] | attach and mount an image and read facts from it; disk formats and partition tables; the image root seen from the host (in-root paths, chrooted processes) |
//! | the host | [`host`], [`aws`], [`io`], [`error`], [`logging`], [`progress`] | loop devices, mounts, namespaces, commands, signals; the AWS SDK set up once (config, retry, runtime); hashing readers and writers, file digests; shared error classes; logs; progress events |

mod aws;
mod bakery;
mod chroot;
mod cli;
mod disk;
mod error;
mod export;
mod gc;
mod host;
mod image;
mod imagetest;
mod io;
mod logging;
mod manifest;
mod pipeline;
mod progress;
mod provision;
mod publish;
mod recipe;
mod registry;
mod s3;
mod seal;
mod source;
mod stamp;

fn main() -> std::process::ExitCode {
    cli::main()
}
