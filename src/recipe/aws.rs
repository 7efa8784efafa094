//! `[aws]`: where and how `imgforge build --publish` (and `imgforge publish --recipe`) puts the
//! image on AWS. The model is here, apart from the rest of the recipe; `plan` turns it into
//! checked [`AwsSettings`] with "file: line N" errors.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::error::RecipeError;
use super::parse::Src;
use crate::publish::options::{self, AwsSettings};

/// `[aws]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Aws {
    /// Region, e.g. "eu-west-1" (default: the AWS config chain's).
    pub region: Option<Spanned<String>>,
    /// AMI name template (default "{name}-{version}-{timestamp}"); placeholders {name},
    /// {version}, {timestamp}, {date}, {commit}, {arch}.
    pub name: Option<Spanned<String>>,
    /// "legacy-bios", "uefi" or "uefi-preferred" (default: uefi-preferred when the image has an
    /// ESP, else legacy-bios; arm64: uefi).
    pub boot_mode: Option<Spanned<String>>,
    /// Base64 UEFI variable store (python-uefivars output) for secure boot keys.
    pub uefi_data: Option<Spanned<String>>,
    /// "v2.0" for NitroTPM (needs boot_mode = "uefi").
    pub tpm_support: Option<Spanned<String>>,
    /// "v2.0" (default: instances require IMDSv2) or "none".
    pub imds_support: Option<Spanned<String>>,
    /// Elastic Network Adapter support (default true).
    pub ena: Option<bool>,
    /// Intel 82599 VF (SR-IOV "simple") support (default false; cannot be undone on the AMI).
    pub sriov: Option<bool>,
    /// "x86_64" or "arm64" (default: from the root partition's type GUID, else x86_64).
    pub architecture: Option<Spanned<String>>,
    /// Root volume type (default "gp3").
    pub volume_type: Option<Spanned<String>>,
    /// Root volume size in GiB (default: the image rounded up).
    pub volume_size: Option<Spanned<u64>>,
    /// Encrypt the snapshot at upload (default false).
    pub encrypted: Option<bool>,
    /// KMS key id, alias or ARN for `encrypted` (default: the account's EBS key).
    pub kms_key_id: Option<Spanned<String>>,
    /// Extra tags on the AMI and its snapshot.
    pub tags: Option<Spanned<BTreeMap<String, String>>>,
    /// Regions to copy the AMI to.
    #[serde(default)]
    pub copy_to_regions: Vec<Spanned<String>>,
    /// Accounts (12 digits) or "all" (public) that may launch the AMI; accounts also get
    /// create-volume permission on the snapshot.
    #[serde(default)]
    pub launch_permissions: Vec<Spanned<String>>,
    /// Concurrent block uploads (default 16).
    pub workers: Option<Spanned<usize>>,
    /// `[aws.promote]`: what `imgforge promote` (and `rollback`) does on AWS.
    pub promote: Option<Promote>,
}

/// `[aws.promote]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Promote {
    /// SSM parameter pointing at the channel's AMI in each region (default
    /// "/imgforge/{name}/{channel}"; "" for none). Placeholders {name} and {channel}.
    pub ssm_parameter: Option<Spanned<String>>,
    /// Accounts (12 digits) or "all" given launch permission on promotion.
    #[serde(default)]
    pub launch_permissions: Vec<Spanned<String>>,
    /// Regions the AMI is copied to on promotion, where the record has none yet.
    #[serde(default)]
    pub copy_to_regions: Vec<Spanned<String>>,
}

fn at<T>(src: Src<'_>, v: &Spanned<T>, r: Result<(), String>) -> Result<(), RecipeError> {
    r.map_err(|e| src.at(v.span(), format!("[aws] {e}")))
}

/// Checks `[aws]` into settings.
pub fn plan(src: Src<'_>, a: &Aws) -> Result<AwsSettings, RecipeError> {
    let mut s = AwsSettings::defaults();
    if let Some(r) = &a.region {
        at(src, r, options::check_region(r.get_ref()))?;
        s.region = Some(r.get_ref().clone());
    }
    if let Some(n) = &a.name {
        let check = check_template(n.get_ref());
        at(src, n, check)?;
        s.name_template = Some(n.get_ref().clone());
    }
    if let Some(b) = &a.boot_mode {
        s.boot_mode = Some(options::parse_boot_mode(b.get_ref()).map_err(|e| src.at(b.span(), format!("[aws] {e}")))?);
    }
    if let Some(u) = &a.uefi_data {
        at(src, u, options::check_uefi_data(u.get_ref()))?;
        s.uefi_data = Some(u.get_ref().trim().to_string());
    }
    if let Some(t) = &a.tpm_support {
        let r = if t.get_ref() == "v2.0" { Ok(()) } else { Err(format!("tpm_support `{}` is not \"v2.0\"", t.get_ref())) };
        at(src, t, r)?;
        s.tpm_support = true;
    }
    if let Some(i) = &a.imds_support {
        s.imds_v2 = match i.get_ref().as_str() {
            "v2.0" => true,
            "none" => false,
            other => return Err(src.at(i.span(), format!("[aws] imds_support `{other}` is not \"v2.0\" or \"none\""))),
        };
    }
    s.ena = a.ena.unwrap_or(true);
    s.sriov = a.sriov.unwrap_or(false);
    if let Some(x) = &a.architecture {
        s.architecture = Some(options::parse_arch(x.get_ref()).map_err(|e| src.at(x.span(), format!("[aws] {e}")))?);
    }
    if let Some(t) = &a.volume_type {
        at(src, t, options::check_volume_type(t.get_ref()))?;
        s.volume_type = t.get_ref().clone();
    }
    if let Some(v) = &a.volume_size {
        let r = if (1..=65_536).contains(v.get_ref()) { Ok(()) } else { Err(format!("volume_size {} is not 1 to 65536 GiB", v.get_ref())) };
        at(src, v, r)?;
        s.volume_size = Some(*v.get_ref());
    }
    s.encrypted = a.encrypted.unwrap_or(false);
    if let Some(k) = &a.kms_key_id {
        at(src, k, options::check_kms_key(k.get_ref()))?;
        let r = if s.encrypted { Ok(()) } else { Err("kms_key_id needs encrypted = true".to_string()) };
        at(src, k, r)?;
        s.kms_key_id = Some(k.get_ref().clone());
    }
    if let Some(tags) = &a.tags {
        for (k, v) in tags.get_ref() {
            at(src, tags, options::check_tag(k, v))?;
            s.tags.insert(k.clone(), v.clone());
        }
    }
    for r in &a.copy_to_regions {
        at(src, r, options::check_region(r.get_ref()))?;
        s.copy_to_regions.push(r.get_ref().clone());
    }
    for acct in &a.launch_permissions {
        at(src, acct, options::check_account(acct.get_ref()))?;
        s.launch_permissions.push(acct.get_ref().clone());
    }
    if let Some(w) = &a.workers {
        let r = if (1..=256).contains(w.get_ref()) { Ok(()) } else { Err(format!("workers {} is not 1 to 256", w.get_ref())) };
        at(src, w, r)?;
        s.workers = *w.get_ref();
    }
    if let Some(p) = &a.promote {
        if let Some(t) = &p.ssm_parameter {
            at(src, t, options::check_ssm_template(t.get_ref()))?;
            s.promote.ssm_parameter = t.get_ref().clone();
        }
        for acct in &p.launch_permissions {
            at(src, acct, options::check_account(acct.get_ref()))?;
            s.promote.launch_permissions.push(acct.get_ref().clone());
        }
        for r in &p.copy_to_regions {
            at(src, r, options::check_region(r.get_ref()))?;
            s.promote.copy_to_regions.push(r.get_ref().clone());
        }
    }
    Ok(s)
}

/// A template's placeholders are known and its fixed text uses allowed characters.
fn check_template(t: &str) -> Result<(), String> {
    let vars = crate::publish::name::NameVars {
        name: "name".into(),
        version: Some("1.0".into()),
        epoch: 0,
        commit: Some("0123456789ab".into()),
        arch: "x86_64".into(),
    };
    crate::publish::name::render(t, &vars).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(text: &str) -> Result<AwsSettings, RecipeError> {
        #[derive(Deserialize)]
        struct W {
            aws: Aws,
        }
        let src = Src { path: Path::new("r.toml"), text };
        let w: W = toml::from_str(text).map_err(|e| RecipeError::new("r.toml", None, e.to_string()))?;
        plan(src, &w.aws)
    }

    #[test]
    fn full_section() {
        let s = parse(
            "[aws]\nregion = \"eu-west-1\"\nname = \"{name}-{version}\"\nboot_mode = \"uefi\"\ntpm_support = \"v2.0\"\nimds_support = \"none\"\nena = false\nsriov = true\narchitecture = \"arm64\"\nvolume_type = \"gp2\"\nvolume_size = 8\nencrypted = true\nkms_key_id = \"alias/x\"\ntags = { Team = \"infra\" }\ncopy_to_regions = [\"us-east-1\"]\nlaunch_permissions = [\"123456789012\"]\nworkers = 4\n",
        )
        .unwrap();
        assert_eq!(s.region.as_deref(), Some("eu-west-1"));
        assert!(s.tpm_support && !s.imds_v2 && !s.ena && s.sriov && s.encrypted);
        assert_eq!(s.workers, 4);
        assert_eq!(s.tags["Team"], "infra");
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("[aws]\nregion = \"eu-west-1\"\nname = \"x:{name}\"\n").unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("contains `:`"), "{e}");
        let e = parse("[aws]\n\nboot_mode = \"bios\"\n").unwrap_err().to_string();
        assert!(e.contains("line 3"), "{e}");
        let e = parse("[aws]\nlaunch_permissions = [\"42\"]\n").unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        let e = parse("[aws]\nkms_key_id = \"k\"\n").unwrap_err().to_string();
        assert!(e.contains("needs encrypted"), "{e}");
        assert!(parse("[aws]\nbogus = 1\n").is_err());
        let e = parse("[aws]\n[aws.promote]\nssm_parameter = \"imgforge/{name}\"\n").unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("must start with /"), "{e}");
        let e = parse("[aws.promote]\n\nssm_parameter = \"/x/{nme}\"\n").unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("{nme}"), "{e}");
    }

    #[test]
    fn promote_section() {
        let s = parse("[aws]\n[aws.promote]\nlaunch_permissions = [\"123456789012\"]\ncopy_to_regions = [\"us-east-1\"]\n").unwrap();
        assert_eq!(s.promote.ssm_parameter, "/imgforge/{name}/{channel}");
        assert_eq!(s.promote.launch_permissions, ["123456789012"]);
        assert_eq!(s.promote.copy_to_regions, ["us-east-1"]);
        assert_eq!(parse("[aws.promote]\nssm_parameter = \"\"\n").unwrap().promote.ssm_parameter, "");
    }
}
