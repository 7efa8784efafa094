//! Validated provisioning steps: what each provisioner runs, every path already checked (the
//! recipe layer builds them; `provision` only reads them).

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Shell script body.
#[derive(Debug, Clone)]
pub enum Script {
    /// Lines from `inline`, joined.
    Inline(String),
    /// A host file.
    File(PathBuf),
}

/// A password for an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Password {
    /// No password login (the default).
    Locked,
    /// A random password, printed once on the terminal (never logged, never in a file).
    Random,
    /// A crypt(3) hash, set as is.
    Hash(String),
    /// Leave it as the image has it (root only).
    Keep,
}

/// One `[[user]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPlan {
    /// Login name.
    pub name: String,
    /// Supplementary groups.
    pub groups: Vec<String>,
    /// Login shell.
    pub shell: Option<String>,
    /// Fixed uid.
    pub uid: Option<u32>,
    /// authorized_keys lines.
    pub keys: Vec<String>,
    /// Its password.
    pub password: Password,
}

/// `[system]` and `[[user]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountsPlan {
    /// Time zone.
    pub timezone: Option<String>,
    /// Locale (LANG).
    pub locale: Option<String>,
    /// root's password.
    pub root_password: Password,
    /// Users to create (or update).
    pub users: Vec<UserPlan>,
}

/// `[[firstboot]]`: the scripts, in order, each with a file-name-safe name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstbootPlan {
    /// (name, script bytes).
    pub scripts: Vec<(String, Vec<u8>)>,
}

/// One provisioning step.
#[derive(Debug, Clone)]
pub enum Step {
    /// Run a script chrooted in the image.
    Shell {
        /// Script.
        script: Script,
        /// Extra environment.
        env: BTreeMap<String, String>,
        /// Interpreter inside the image.
        shell: String,
    },
    /// Copy a file or directory in.
    File {
        /// Host source.
        source: PathBuf,
        /// Image destination (absolute).
        destination: PathBuf,
        /// Destination is a directory to copy into.
        into_dir: bool,
        /// Mode override.
        mode: Option<u32>,
        /// Owner "user:group".
        owner: Option<String>,
    },
    /// `[system]` and `[[user]]`: time zone, locale, root password, users.
    Accounts(AccountsPlan),
    /// `[[firstboot]]`: a oneshot unit running scripts once on first boot.
    Firstboot(FirstbootPlan),
    /// Copy a tree over `/`.
    Overlay {
        /// Host tree.
        source: PathBuf,
        /// Owner "user:group".
        owner: Option<String>,
    },
    /// `ansible-playbook` on the host through the chroot connection.
    Ansible(Box<AnsiblePlan>),
    /// `salt-call --local` chrooted.
    Salt(Box<SaltPlan>),
    /// `puppet apply` chrooted.
    Puppet(Box<PuppetPlan>),
}

/// A validated `type = "ansible"` step; every path exists.
#[derive(Debug, Clone)]
pub struct AnsiblePlan {
    /// Playbook.
    pub playbook: PathBuf,
    /// Role directories.
    pub roles_path: Vec<PathBuf>,
    /// Collection directories.
    pub collections_path: Vec<PathBuf>,
    /// requirements.yml.
    pub requirements: Option<PathBuf>,
    /// `--extra-vars`, as one JSON object.
    pub extra_vars: String,
    /// `--tags`.
    pub tags: Vec<String>,
    /// `--skip-tags`.
    pub skip_tags: Vec<String>,
}

/// How salt gets into the image for a `type = "salt"` step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaltInstall {
    /// `salt-call` is already in the image.
    None,
    /// Installed with pip into a venv for the run.
    Pip {
        /// Leave the venv in the image.
        keep: bool,
        /// The recipe's directory of wheels (pip and salt with every dependency): installed
        /// from it alone, no index, no network. `None`: imgforge's wheel cache, filled from
        /// the index on first use.
        wheelhouse: Option<PathBuf>,
    },
}

/// A validated `type = "salt"` step.
#[derive(Debug, Clone)]
pub struct SaltPlan {
    /// file_roots.
    pub state_tree: PathBuf,
    /// pillar_roots.
    pub pillar_tree: Option<PathBuf>,
    /// Minion id.
    pub minion_id: String,
    /// States; empty = highstate.
    pub states: Vec<String>,
    /// Install mode.
    pub install: SaltInstall,
}

/// A validated `type = "puppet"` step.
#[derive(Debug, Clone)]
pub struct PuppetPlan {
    /// Manifest file or directory.
    pub manifest: PathBuf,
    /// Module directories.
    pub module_path: Vec<PathBuf>,
    /// hiera.yaml.
    pub hiera_config: Option<PathBuf>,
    /// Facts (name → value), exported as FACTER_name.
    pub facts: BTreeMap<String, String>,
    /// `--certname`.
    pub certname: String,
}

/// A step with its label.
#[derive(Debug, Clone)]
pub struct NamedStep {
    /// "shell #1" or the recipe's `name`.
    pub label: String,
    /// Its type, "shell"/"file"/"overlay".
    pub kind: &'static str,
    /// What to do.
    pub step: Step,
}
