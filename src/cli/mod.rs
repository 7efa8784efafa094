//! Command line: global flags, one module per subcommand, fixed exit codes.
//!
//! Exit codes: 0 ok, 1 the build (or command) failed, 2 bad usage or a bad recipe.

mod bake;
mod build;
mod channel;
mod docs;
mod events;
mod export;
mod gc;
mod image;
mod inspect;
mod layers;
mod plan;
mod publish;
mod registry;
mod sandbox_exec;
mod seal;
mod test;
mod validate;

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};

use crate::logging::LogFormat;
use crate::recipe::RecipeError;

/// Global flags.
#[derive(Debug, clap::Args)]
pub struct Global {
    /// More logging (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Progress as JSON Lines events on stdout (schema 1).
    #[arg(long, global = true)]
    pub json: bool,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// Recipe variables and the matrix image, for every command that loads a recipe.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RecipeVars {
    /// Set a recipe variable (repeatable); overrides `[vars]`, the `[matrix]` entry and
    /// IMGFORGE_VAR_NAME.
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = crate::recipe::vars::parse_assignment)]
    pub var: Vec<(String, String)>,
    /// The image of a `[matrix]` recipe to take (its name, as `imgforge plan` lists it).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
}

impl RecipeVars {
    /// The recipe overrides these make, with `output_dir`.
    pub fn overrides(&self, output_dir: Option<std::path::PathBuf>) -> crate::recipe::plan::Overrides {
        crate::recipe::plan::Overrides {
            output_dir,
            vars: crate::recipe::expand::Inputs { cli: self.var.clone(), lenient: false },
            node: self.node.clone(),
        }
    }
}

#[derive(Debug, Parser)]
#[command(name = "imgforge", version, about = "Bake immutable machine images on a build host")]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build an image from a recipe.
    Build(build::Args),
    /// Check a recipe and the files it names, without building.
    Validate(validate::Args),
    /// Write a raw disk (or a build's raw) as raw, qcow2, vhd, vhd-dynamic, vmdk or ova.
    Export(export::Args),
    /// Show partitions, filesystems, labels and os-release of a raw or qcow2 image.
    Inspect(inspect::Args),
    /// Upload a raw disk (or a build's raw) into an EBS snapshot and register an AMI.
    Publish(publish::Args),
    /// Scrub identities from a raw or qcow2 image (`--list` shows the operations).
    Seal(seal::Args),
    /// Query the image registry: every build is recorded there.
    Image(image::Args),
    /// Serve the registry over HTTP: a read-only JSON API and a page with the lineage tree.
    Registry(registry::Args),
    /// Run a recipe's [[test]] suites on a registered image and record the verdict.
    Test(test::Args),
    /// Point a channel (prod, staging…) of an image at a record that passed its tests.
    Promote(channel::PromoteArgs),
    /// Point a channel back at the record it pointed at before.
    Rollback(channel::RollbackArgs),
    /// Mark a record (and with --cascade its descendants) revoked: no build or promotion uses it.
    Revoke(channel::RevokeArgs),
    /// Where an image's channels point (--history: every promotion and rollback).
    Channels(channel::ChannelsArgs),
    /// The janitor: plan (the default) or --apply the retirement of old images, never one in use.
    Gc(gc::Args),
    /// The images a set of recipes defines, as a DAG in levels: layer keys, what needs a build,
    /// GitHub Actions matrices.
    Plan(plan::Args),
    /// Build every image of a plan on this host, --jobs at once, parents first.
    Bake(bake::Args),
    /// Say, input by input, why a build of the recipe would rebuild (or that it is up to date).
    Explain(layers::ExplainArgs),
    /// List the images and recipes whose parent query now finds a newer parent.
    Outdated(layers::OutdatedArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    Completions(docs::CompletionsArgs),
    /// Write the man pages (imgforge.1 and one per subcommand) into a directory.
    #[command(hide = true)]
    Manpages(docs::ManpagesArgs),
    /// Run a command in a build's sandbox (Ansible's chroot connection calls this as its chroot).
    #[command(hide = true)]
    SandboxExec(sandbox_exec::Args),
}

pub use crate::error::UsageError;

/// Exit code for usage and recipe errors.
pub const EXIT_USAGE: u8 = 2;
/// Exit code for failures.
pub const EXIT_FAILED: u8 = 1;
/// Exit code of `build --no-wait` when another builder holds the layer.
pub const EXIT_BUSY: u8 = 3;

/// Parses arguments, runs, prints an error once, returns the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::logging::init(cli.global.verbose, cli.global.log_format);
    let result = match &cli.command {
        Command::Build(a) => build::run(&cli.global, a),
        Command::Validate(a) => validate::run(&cli.global, a),
        Command::Inspect(a) => inspect::run(&cli.global, a),
        Command::Export(a) => export::run(&cli.global, a),
        Command::Publish(a) => publish::run(&cli.global, a),
        Command::Seal(a) => seal::run(&cli.global, a),
        Command::Image(a) => image::run(&cli.global, a),
        Command::Registry(a) => registry::run(a),
        Command::Test(a) => test::run(&cli.global, a),
        Command::Gc(a) => gc::run(&cli.global, a),
        Command::Plan(a) => plan::run(&cli.global, a),
        Command::Bake(a) => bake::run(&cli.global, a),
        Command::Promote(a) => channel::promote(&cli.global, a),
        Command::Rollback(a) => channel::rollback(&cli.global, a),
        Command::Revoke(a) => channel::revoke(&cli.global, a),
        Command::Channels(a) => channel::channels(&cli.global, a),
        Command::Explain(a) => layers::explain(&cli.global, a),
        Command::Outdated(a) => layers::outdated(&cli.global, a),
        Command::Completions(a) => docs::completions(Cli::command(), a),
        Command::Manpages(a) => docs::manpages(Cli::command(), a),
        Command::SandboxExec(a) => return sandbox_exec::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imgforge: error: {}", render(&e));
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The error and its causes, joined with ": ", skipping a cause whose text the message before
/// it already contains (our messages often embed their source).
pub fn render(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

fn exit_code(e: &anyhow::Error) -> u8 {
    if e.chain().any(|c| c.is::<crate::pipeline::lease::Busy>()) {
        EXIT_BUSY
    } else if e.chain().any(|c| c.is::<RecipeError>() || c.is::<UsageError>()) {
        EXIT_USAGE
    } else {
        EXIT_FAILED
    }
}
