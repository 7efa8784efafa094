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

/// One `[[test]]`, planned.
#[derive(Debug, Clone)]
pub struct Suite {
    /// The recipe's `name`, or "checks #1".
    pub name: String,
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
}
