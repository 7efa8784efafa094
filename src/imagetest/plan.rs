//! What a test run is given: the suites a recipe's `[[test]]` tables plan into.

use serde::Deserialize;

use crate::registry::query::PackageReq;

/// One `files` entry: the path and what must hold of it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileCheck {
    /// Absolute path inside the image.
    pub path: String,
    /// `true`: nothing may be at the path (not even a broken symlink).
    #[serde(default)]
    pub absent: bool,
    /// The file must contain this text.
    pub contains: Option<String>,
    /// Octal permission bits, e.g. "0644".
    pub mode: Option<String>,
    /// Numeric uid or a user name from the image's /etc/passwd.
    pub owner: Option<String>,
    /// `file`, `directory` or `symlink`.
    pub kind: Option<String>,
}

/// One `commands` entry: run by `/bin/sh -c` in the image (read-only, in the build sandbox).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CommandCheck {
    /// The command line.
    pub run: String,
    /// Expected exit status (default 0).
    #[serde(default)]
    pub exit: i32,
    /// Text its standard output must contain.
    pub stdout_contains: Option<String>,
}

/// A declarative suite, checked.
#[derive(Debug, Clone)]
pub struct Checks {
    /// Files.
    pub files: Vec<FileCheck>,
    /// Installed packages, each with an optional version constraint.
    pub packages: Vec<PackageReq>,
    /// Units that must be enabled.
    pub services_enabled: Vec<String>,
    /// Users that must exist.
    pub users: Vec<String>,
    /// Commands.
    pub commands: Vec<CommandCheck>,
}

/// When a suite runs: against the sealed image mounted read-only, or against a booted copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stage {
    /// Against the sealed image, read-only, in the build sandbox.
    Offline,
    /// Against a throwaway copy-on-write boot of the image, over SSH.
    Boot,
}

impl Stage {
    /// `offline` or `boot`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Offline => "offline",
            Self::Boot => "boot",
        }
    }
}

/// `type = "boot"`: what a booted image must reach, and how long it may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootSpec {
    /// From qemu's start to the last expectation met.
    pub timeout: std::time::Duration,
    /// `systemctl is-system-running` says running or degraded (failed units are listed).
    pub system_running: bool,
    /// `cloud-init status` must say this (`done`); `None`: not checked.
    pub cloud_init: Option<String>,
    /// sshd answers (with the throwaway key) — needed by every `stage = "boot"` suite.
    pub ssh: bool,
}

impl Default for BootSpec {
    fn default() -> Self {
        Self { timeout: std::time::Duration::from_secs(600), system_running: true, cloud_init: Some("done".into()), ssh: true }
    }
}

/// One `[[test]]`, planned.
#[derive(Debug, Clone)]
pub struct Suite {
    /// The recipe's `name`, or "checks #1".
    pub name: String,
    /// When it runs.
    pub stage: Stage,
    /// What it runs.
    pub kind: SuiteKind,
}

/// The kinds of suite.
#[derive(Debug, Clone)]
pub enum SuiteKind {
    /// `type = "checks"`.
    Checks(Checks),
    /// `type = "testinfra"`: a pytest-testinfra file or directory.
    Testinfra(std::path::PathBuf),
    /// `type = "serverspec"`: a directory of RSpec/ServerSpec `*_spec.rb` files.
    Serverspec(std::path::PathBuf),
    /// `type = "boot"`: boot the image and check its state (stage boot).
    Boot(BootSpec),
}
