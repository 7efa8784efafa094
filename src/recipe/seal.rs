//! `[seal]`: which sealing operations run, their options, and residue findings downgraded to
//! warnings. Validated into a `seal::SealPlan`; unknown operation names are errors that list
//! the valid ones.

use serde::Deserialize;
use toml::Spanned;

use super::error::RecipeError;
use super::parse::Src;
use crate::seal::catalog::Op;
use crate::seal::plan::{SealPlan, UserKeyFiles, WarnRule};

/// `[seal]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seal {
    /// Operations to run besides the defaults (e.g. "fs-uuids", "user-accounts").
    #[serde(default)]
    pub enable: Vec<Spanned<String>>,
    /// Default operations not to run.
    #[serde(default)]
    pub disable: Vec<Spanned<String>>,
    /// Image paths overwritten with zeros, then removed (`provisioner-files`), as
    /// virt-sysprep's `--scrub`.
    #[serde(default)]
    pub scrub: Vec<Spanned<String>>,
    /// `[seal.ssh-hostkeys]`
    #[serde(default, rename = "ssh-hostkeys")]
    pub ssh_hostkeys: SshHostkeys,
    /// `[seal.ssh-userdir]`
    #[serde(default, rename = "ssh-userdir")]
    pub ssh_userdir: SshUserdir,
    /// `[seal.machine-id]`
    #[serde(default, rename = "machine-id")]
    pub machine_id: MachineId,
    /// `[seal.hostname]`
    #[serde(default)]
    pub hostname: Hostname,
    /// `[seal.cloud-init]`
    #[serde(default, rename = "cloud-init")]
    pub cloud_init: CloudInit,
    /// `[seal.package-cache]`
    #[serde(default, rename = "package-cache")]
    pub package_cache: PackageCache,
    /// `[seal.provisioner-files]`
    #[serde(default, rename = "provisioner-files")]
    pub provisioner_files: ProvisionerFiles,
    /// `[seal.user-accounts]`
    #[serde(default, rename = "user-accounts")]
    pub user_accounts: UserAccounts,
    /// `[seal.residue]`
    #[serde(default)]
    pub residue: Residue,
}

/// `[seal.ssh-hostkeys]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshHostkeys {
    /// Install imgforge's first-boot `ssh-keygen -A` unit when the image has no regenerator
    /// (default true).
    pub install_unit: Option<bool>,
}

/// `[seal.ssh-userdir]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshUserdir {
    /// Which authorized_keys go: "remove-upstream" (default), "remove-all", "keep".
    pub authorized_keys: Option<Spanned<String>>,
    /// Which known_hosts go: "remove-upstream" (default), "remove-all", "keep".
    pub known_hosts: Option<Spanned<String>>,
    /// The older spelling: true = `authorized_keys = "keep"`, false = `"remove-all"` (what
    /// false always did).
    pub keep_authorized_keys: Option<Spanned<bool>>,
}

fn user_key_files(src: Src<'_>, v: &Option<Spanned<String>>, key: &str, default: UserKeyFiles) -> Result<UserKeyFiles, RecipeError> {
    let Some(v) = v else { return Ok(default) };
    UserKeyFiles::parse(v.get_ref()).ok_or_else(|| {
        let names: Vec<String> = UserKeyFiles::ALL.iter().map(|u| format!("\"{}\"", u.name())).collect();
        src.at(v.span(), format!("seal.ssh-userdir.{key}: unknown value `{}`", v.get_ref()))
            .hint(format!("valid values: {}", names.join(", ")))
    })
}

fn authorized_keys(src: Src<'_>, u: &SshUserdir, default: UserKeyFiles) -> Result<UserKeyFiles, RecipeError> {
    match (&u.keep_authorized_keys, &u.authorized_keys) {
        (Some(old), Some(_)) => Err(src
            .at(old.span(), "seal.ssh-userdir: both keep_authorized_keys and authorized_keys are set")
            .hint("keep only authorized_keys = \"remove-upstream\" | \"remove-all\" | \"keep\"")),
        (Some(old), None) => Ok(if *old.get_ref() { UserKeyFiles::Keep } else { UserKeyFiles::RemoveAll }),
        (None, v) => user_key_files(src, v, "authorized_keys", default),
    }
}

/// `[seal.machine-id]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineId {
    /// Write "uninitialized" (systemd first-boot semantics) instead of an empty file.
    pub uninitialized: Option<bool>,
}

/// `[seal.hostname]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hostname {
    /// The neutral name (default "localhost").
    pub name: Option<Spanned<String>>,
}

/// `[seal.cloud-init]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudInit {
    /// Also remove /var/lib/cloud/seed (default false).
    pub remove_seed: Option<bool>,
    /// Run the image's own `cloud-init clean` when present (default true).
    pub image_command: Option<bool>,
}

/// `[seal.package-cache]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageCache {
    /// Also remove /var/lib/apt/lists (default false).
    pub apt_lists: Option<bool>,
}

/// `[seal.provisioner-files]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionerFiles {
    /// More absolute image paths the build used for provisioning only.
    #[serde(default)]
    pub paths: Vec<Spanned<String>>,
}

/// `[seal.user-accounts]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserAccounts {
    /// Accounts to keep.
    #[serde(default)]
    pub keep: Vec<String>,
}

/// `[seal.residue]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Residue {
    /// Findings that only warn: "KIND" or "KIND:/path" ("KIND:/dir/" for a tree).
    #[serde(default)]
    pub warn: Vec<Spanned<String>>,
}

fn ops(src: Src<'_>, list: &[Spanned<String>], key: &str) -> Result<Vec<Op>, RecipeError> {
    list.iter()
        .map(|s| {
            Op::parse(s.get_ref()).ok_or_else(|| {
                src.at(s.span(), format!("seal.{key}: unknown operation `{}`", s.get_ref()))
                    .hint(format!("valid operations: {} (see `imgforge seal --list`)", Op::names()))
            })
        })
        .collect()
}

/// Validates `[seal]`.
pub fn seal_plan(src: Src<'_>, s: &Seal) -> Result<SealPlan, RecipeError> {
    let enable = ops(src, &s.enable, "enable")?;
    let disable = ops(src, &s.disable, "disable")?;
    if let Some(both) = s.disable.iter().find(|d| s.enable.iter().any(|e| e.get_ref() == d.get_ref())) {
        return Err(src.at(both.span(), format!("seal: `{}` is both enabled and disabled", both.get_ref())));
    }
    let d = SealPlan::default();
    let hostname = match &s.hostname.name {
        Some(n) => {
            let ok = !n.get_ref().is_empty()
                && n.get_ref().len() <= 63
                && n.get_ref().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !ok {
                return Err(src.at(n.span(), format!("seal.hostname.name `{}` is not a valid host name", n.get_ref())));
            }
            n.get_ref().clone()
        }
        None => d.hostname.clone(),
    };
    let image_paths = |list: &[Spanned<String>], key: &str| {
        list.iter()
            .map(|p| {
                let v = p.get_ref();
                if !v.starts_with('/') || v == "/" || v.split('/').any(|c| c == "..") {
                    return Err(src.at(p.span(), format!("{key}: `{v}` must be an absolute image path below /")));
                }
                Ok(v.trim_end_matches('/').to_string())
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let paths = image_paths(&s.provisioner_files.paths, "seal.provisioner-files.paths")?;
    let scrub = image_paths(&s.scrub, "seal.scrub")?;
    let warn = s
        .residue
        .warn
        .iter()
        .map(|w| WarnRule::parse(w.get_ref()).map_err(|m| src.at(w.span(), format!("seal.residue.warn: {m}"))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SealPlan {
        install_keygen_unit: s.ssh_hostkeys.install_unit.unwrap_or(d.install_keygen_unit),
        authorized_keys: authorized_keys(src, &s.ssh_userdir, d.authorized_keys)?,
        known_hosts: user_key_files(src, &s.ssh_userdir.known_hosts, "known_hosts", d.known_hosts)?,
        machine_id_uninitialized: s.machine_id.uninitialized.unwrap_or(d.machine_id_uninitialized),
        hostname,
        cloud_init_remove_seed: s.cloud_init.remove_seed.unwrap_or(d.cloud_init_remove_seed),
        cloud_init_image_command: s.cloud_init.image_command.unwrap_or(d.cloud_init_image_command),
        apt_lists: s.package_cache.apt_lists.unwrap_or(d.apt_lists),
        provisioner_paths: paths,
        scrub,
        keep_users: s.user_accounts.keep.clone(),
        warn,
        ..d
    }
    .with_changes(&enable, &disable))
}
