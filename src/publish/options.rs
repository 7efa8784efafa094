//! Validated publish settings, from a recipe's `[aws]` section or the command line. Every
//! check here runs before any AWS call. Pure.

use std::collections::BTreeMap;

use base64::Engine;

/// EC2 boot mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootMode {
    /// BIOS only.
    LegacyBios,
    /// UEFI only.
    Uefi,
    /// UEFI where the instance type supports it, else BIOS (hybrid images).
    UefiPreferred,
}

impl BootMode {
    /// The API value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LegacyBios => "legacy-bios",
            Self::Uefi => "uefi",
            Self::UefiPreferred => "uefi-preferred",
        }
    }
}

/// Parses a boot mode.
pub fn parse_boot_mode(s: &str) -> Result<BootMode, String> {
    match s {
        "legacy-bios" => Ok(BootMode::LegacyBios),
        "uefi" => Ok(BootMode::Uefi),
        "uefi-preferred" => Ok(BootMode::UefiPreferred),
        _ => Err(format!("boot mode `{s}` is not one of legacy-bios, uefi, uefi-preferred")),
    }
}

/// EC2 architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// x86_64.
    X86_64,
    /// arm64 (aarch64).
    Arm64,
}

impl Arch {
    /// The API value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64",
            Self::Arm64 => "arm64",
        }
    }
}

/// Parses an architecture (`aarch64` and `amd64` accepted as aliases).
pub fn parse_arch(s: &str) -> Result<Arch, String> {
    match s {
        "x86_64" | "amd64" => Ok(Arch::X86_64),
        "arm64" | "aarch64" => Ok(Arch::Arm64),
        _ => Err(format!("architecture `{s}` is not x86_64 or arm64")),
    }
}

/// Settings as given (recipe or flags); `None` means "default, or read from the image".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AwsSettings {
    /// Region; `None`: the AWS config chain's.
    pub region: Option<String>,
    /// AMI name template.
    pub name_template: Option<String>,
    /// Boot mode; `None`: uefi-preferred when the image has an ESP, else legacy-bios (arm64: uefi).
    pub boot_mode: Option<BootMode>,
    /// Base64 UEFI variable store.
    pub uefi_data: Option<String>,
    /// NitroTPM 2.0.
    pub tpm_support: bool,
    /// `v2.0` (IMDSv2 required) unless turned off.
    pub imds_v2: bool,
    /// Elastic Network Adapter.
    pub ena: bool,
    /// Intel 82599 VF networking (`simple`).
    pub sriov: bool,
    /// `None`: read from the image.
    pub architecture: Option<Arch>,
    /// Root volume type.
    pub volume_type: String,
    /// Root volume size in GiB; `None`: the image's size rounded up.
    pub volume_size: Option<u64>,
    /// Encrypt the snapshot at upload.
    pub encrypted: bool,
    /// KMS key ARN for the encryption (default: the account's EBS default key).
    pub kms_key_id: Option<String>,
    /// Extra tags on the AMI and the snapshot.
    pub tags: BTreeMap<String, String>,
    /// Regions to copy the AMI to.
    pub copy_to_regions: Vec<String>,
    /// Accounts (12 digits) or `all` that may launch the AMI.
    pub launch_permissions: Vec<String>,
    /// Concurrent PutSnapshotBlock requests.
    pub workers: usize,
    /// What a promotion to a channel does (`[aws.promote]`).
    pub promote: PromoteSettings,
}

/// `[aws.promote]`: what `imgforge promote` and `rollback` do on AWS.
#[derive(Debug, Clone, PartialEq)]
pub struct PromoteSettings {
    /// SSM parameter name template ({name}, {channel}); empty: no parameter.
    pub ssm_parameter: String,
    /// Accounts (or `all`) given launch permission.
    pub launch_permissions: Vec<String>,
    /// Regions the AMI is copied to where the record has none.
    pub copy_to_regions: Vec<String>,
}

/// The default SSM parameter a channel's AMI id is written to.
pub const DEFAULT_SSM_PARAMETER: &str = "/imgforge/{name}/{channel}";

impl Default for PromoteSettings {
    fn default() -> Self {
        Self { ssm_parameter: DEFAULT_SSM_PARAMETER.into(), launch_permissions: Vec::new(), copy_to_regions: Vec::new() }
    }
}

/// Renders an SSM parameter name template. Pure.
pub fn render_ssm(template: &str, name: &str, channel: &str) -> String {
    template.replace("{name}", name).replace("{channel}", channel)
}

/// An SSM parameter name template: a path from `/`, placeholders {name} and {channel} only,
/// SSM's characters (letters, digits, `.-_/`), at most 1011 characters, not under `/aws` or
/// `/ssm`.
pub fn check_ssm_template(t: &str) -> Result<(), String> {
    if t.is_empty() {
        return Ok(());
    }
    if !t.starts_with('/') {
        return Err(format!("ssm_parameter `{t}` must start with / (a hierarchy: \"/imgforge/{{name}}/{{channel}}\")"));
    }
    let mut rest = t;
    while let Some(i) = rest.find('{') {
        let end = rest[i..].find('}').map(|e| i + e).ok_or_else(|| format!("ssm_parameter `{t}`: unclosed `{{`"))?;
        let var = &rest[i..=end];
        if var != "{name}" && var != "{channel}" {
            return Err(format!("ssm_parameter `{t}`: unknown placeholder {var} (use {{name}} and {{channel}})"));
        }
        rest = &rest[end + 1..];
    }
    let fixed = t.replace("{name}", "").replace("{channel}", "");
    if let Some(c) = fixed.chars().find(|c| !(c.is_ascii_alphanumeric() || "./-_".contains(*c))) {
        return Err(format!("ssm_parameter `{t}` contains `{c}` (SSM names use letters, digits, . - _ and /)"));
    }
    let lower = t.to_ascii_lowercase();
    if lower.starts_with("/aws") || lower.starts_with("/ssm") {
        return Err(format!("ssm_parameter `{t}`: names under /aws and /ssm are reserved by AWS"));
    }
    if t.len() > 1011 {
        return Err(format!("ssm_parameter `{t}` is longer than SSM allows"));
    }
    Ok(())
}

/// Default concurrent uploads. AWS's guide puts one PUT near 100 ms, so 16 keeps ~80 MB/s in
/// flight without tripping per-snapshot throttling; coldsnap uses 64 on fast links.
pub const DEFAULT_WORKERS: usize = 16;

impl AwsSettings {
    /// Defaults: IMDSv2, ENA on, gp3, 16 workers.
    pub fn defaults() -> Self {
        Self { imds_v2: true, ena: true, volume_type: "gp3".into(), workers: DEFAULT_WORKERS, ..Self::default() }
    }
}

/// A region name such as `eu-west-1`.
pub fn check_region(r: &str) -> Result<(), String> {
    let ok = (4..=32).contains(&r.len())
        && r.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && r.contains('-')
        && !r.starts_with('-')
        && !r.ends_with('-');
    if ok { Ok(()) } else { Err(format!("region `{r}` is not a region name such as eu-west-1")) }
}

/// An account id (12 digits) or `all`.
pub fn check_account(a: &str) -> Result<(), String> {
    if a == "all" || (a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit())) {
        Ok(())
    } else {
        Err(format!("launch permission `{a}` is not a 12-digit account id or `all`"))
    }
}

/// A volume type EC2 accepts for a root volume.
pub fn check_volume_type(t: &str) -> Result<(), String> {
    match t {
        "gp3" | "gp2" | "io1" | "io2" | "standard" => Ok(()),
        _ => Err(format!("volume type `{t}` is not one of gp3, gp2, io1, io2, standard")),
    }
}

/// A tag: key 1–127 characters not starting with `aws:`, value ≤ 255.
pub fn check_tag(k: &str, v: &str) -> Result<(), String> {
    if k.is_empty() || k.chars().count() > 127 {
        return Err(format!("tag key `{k}` must have 1 to 127 characters"));
    }
    if k.to_ascii_lowercase().starts_with("aws:") {
        return Err(format!("tag key `{k}`: the aws: prefix is reserved"));
    }
    if v.chars().count() > 255 {
        return Err(format!("tag `{k}`: the value has more than 255 characters"));
    }
    Ok(())
}

/// A KMS key id, alias or ARN.
pub fn check_kms_key(k: &str) -> Result<(), String> {
    let ok = (1..=2048).contains(&k.len()) && !k.contains(char::is_whitespace);
    if ok { Ok(()) } else { Err(format!("kms key id `{k}` is not a KMS key id, alias or ARN")) }
}

/// UEFI data: base64 of a variable store (at most 64 KiB encoded, as EC2 allows).
pub fn check_uefi_data(d: &str) -> Result<(), String> {
    if d.len() > 64 * 1024 {
        return Err("uefi_data is longer than 64 KiB".into());
    }
    base64::engine::general_purpose::STANDARD.decode(d.trim()).map(|_| ()).map_err(|e| format!("uefi_data is not base64: {e}"))
}

/// Checks combinations; called once the image-derived defaults are known.
pub fn check_combination(s: &AwsSettings, boot: BootMode, arch: Arch, min_gib: u64) -> Result<(), String> {
    if s.tpm_support && boot != BootMode::Uefi {
        return Err(format!("tpm_support needs boot_mode = \"uefi\" (the boot mode is {})", boot.as_str()));
    }
    if arch == Arch::Arm64 && boot != BootMode::Uefi {
        return Err(format!("arm64 images boot with UEFI only: boot_mode {} is not allowed", boot.as_str()));
    }
    if s.uefi_data.is_some() && boot == BootMode::LegacyBios {
        return Err("uefi_data needs a UEFI boot mode".into());
    }
    if s.kms_key_id.is_some() && !s.encrypted {
        return Err("kms_key_id needs encrypted = true".into());
    }
    if let Some(v) = s.volume_size
        && v < min_gib
    {
        return Err(format!("volume_size {v} GiB is smaller than the image ({min_gib} GiB)"));
    }
    if !(1..=256).contains(&s.workers) {
        return Err(format!("workers {} is not between 1 and 256", s.workers));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        assert_eq!(parse_boot_mode("uefi-preferred").unwrap(), BootMode::UefiPreferred);
        assert!(parse_boot_mode("efi").is_err());
        assert_eq!(parse_arch("aarch64").unwrap(), Arch::Arm64);
        assert!(check_region("eu-west-1").is_ok());
        assert!(check_region("EU").is_err());
        assert!(check_account("123456789012").is_ok());
        assert!(check_account("12345").is_err());
        assert!(check_tag("aws:x", "y").is_err());
        assert!(check_uefi_data("not base64!").is_err());
        assert!(check_uefi_data("QUJD").is_ok());
    }

    #[test]
    fn combinations() {
        let mut s = AwsSettings::defaults();
        assert!(check_combination(&s, BootMode::UefiPreferred, Arch::X86_64, 2).is_ok());
        s.tpm_support = true;
        assert!(check_combination(&s, BootMode::UefiPreferred, Arch::X86_64, 2).unwrap_err().contains("tpm_support"));
        assert!(check_combination(&s, BootMode::Uefi, Arch::X86_64, 2).is_ok());
        assert!(check_combination(&AwsSettings::defaults(), BootMode::LegacyBios, Arch::Arm64, 2).is_err());
        let s = AwsSettings { volume_size: Some(1), ..AwsSettings::defaults() };
        assert!(check_combination(&s, BootMode::Uefi, Arch::X86_64, 2).unwrap_err().contains("smaller"));
    }
}
