//! The recipe as written in TOML. Keys are snake_case as in the documented examples; unknown
//! keys are errors. `toml::Spanned` keeps the position of values checked after parsing, so
//! those errors can name the line too.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// A whole recipe file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// What is built.
    pub image: Image,
    /// The upstream image (or the parent image) it starts from.
    pub source: Spanned<Source>,
    /// Working-disk changes.
    #[serde(default)]
    pub disk: Disk,
    /// Provisioners, in order. Kept raw here: each is checked against its `type` in `parse`.
    #[serde(default)]
    pub provision: Vec<Spanned<toml::Table>>,
    /// Where and what to write.
    #[serde(default)]
    pub output: Output,
    /// `[aws]`: publishing to AWS (see `aws.rs`).
    pub aws: Option<super::aws::Aws>,
    /// Sealing operations and their options.
    #[serde(default)]
    pub seal: super::seal::Seal,
    /// Image tests (`[[test]]`), in order; checked against their `type` in `test.rs`.
    #[serde(default)]
    pub test: Vec<toml::Spanned<toml::Table>>,
    /// `[gc]`: the janitor's rules for this image (`imgforge gc --config RECIPE`).
    pub gc: Option<Spanned<crate::gc::rules::GcSection>>,
    /// `[system]`: time zone, locale, first-boot host name, root password.
    pub system: Option<super::accounts::System>,
    /// `[[user]]`: users to create.
    #[serde(default)]
    pub user: Vec<super::accounts::User>,
    /// `[[firstboot]]`: scripts run once on the image's first boot.
    #[serde(default)]
    pub firstboot: Vec<Spanned<super::accounts::Firstboot>>,
    /// `[vars]`: variables and their defaults (read by `expand.rs` before this is parsed).
    #[serde(rename = "vars")]
    pub _vars: Option<serde::de::IgnoredAny>,
    /// `[matrix]` or `matrix = "nodes.yaml"`: one image per entry (read by `expand.rs`).
    #[serde(rename = "matrix")]
    pub _matrix: Option<serde::de::IgnoredAny>,
}

/// `[image]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// `[a-z0-9-]`, used in output names.
    pub name: Spanned<String>,
    /// Defaults to `git describe --tags --always --dirty` of the recipe's repository.
    pub version: Option<Spanned<String>>,
    /// Free text, copied into the manifest.
    pub description: Option<String>,
    /// Free-form labels for the registry (`{ env = "prod", app = "mysql" }`).
    pub labels: Option<Spanned<std::collections::BTreeMap<String, String>>>,
    /// Who owns the image (default: the user who runs the build).
    pub owner: Option<String>,
}

/// `[source]`: an upstream image (`url` and its verification) or a parent image found in the
/// registry (`parent`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// `file://`, `http(s)://`, or a path relative to the recipe.
    pub url: Option<Spanned<String>>,
    /// A registry query naming the parent image (its newest match).
    pub parent: Option<Spanned<ParentQuery>>,
    /// A SHA256SUMS or SHA512SUMS file (same forms as `url`).
    pub checksums: Option<Spanned<String>>,
    /// Or the expected SHA-256 directly.
    pub sha256: Option<Spanned<String>>,
    /// Or the expected SHA-512 directly.
    pub sha512: Option<Spanned<String>>,
    /// A detached OpenPGP signature over the checksums file.
    pub signature: Option<Spanned<String>>,
    /// The pinned public key that must have made `signature` (a path relative to the recipe).
    pub signing_key: Option<Spanned<String>>,
}

/// `[source] parent = { name = "base", status = "tested", version = "1.x", labels = { env = "prod" } }`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParentQuery {
    /// The parent image's name.
    pub name: String,
    /// Its status (`tested`, `released`…).
    pub status: Option<String>,
    /// Its version, exact or with wildcards (`1.x`).
    pub version: Option<String>,
    /// Labels it must carry.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// A glob one of its kernels must match.
    pub kernel: Option<String>,
    /// Package constraints (`"openssl>=3.0.15"`).
    #[serde(default)]
    pub packages: Vec<String>,
    /// The record this channel of the image points at (`imgforge promote`).
    pub channel: Option<String>,
}

/// `[disk]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    /// Grow the disk to this size ("4GiB"): backup GPT moved, root partition and filesystem grown.
    pub size: Option<Spanned<String>>,
    /// Root partition number, when the type GUID and filesystem probe are not enough.
    pub root_partition: Option<Spanned<u32>>,
    /// The root filesystem by LVM volume, label or UUID: `{ lvm = "vg/root" }`,
    /// `{ label = "root" }`, `{ uuid = "…" }`, `{ partition = 2 }`.
    pub root: Option<Spanned<RootSpec>>,
}

/// `[disk] root = { … }`: exactly one key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootSpec {
    /// "vg/lv".
    pub lvm: Option<String>,
    /// Filesystem label.
    pub label: Option<String>,
    /// Filesystem UUID.
    pub uuid: Option<String>,
    /// Partition number.
    pub partition: Option<u32>,
}

/// `[output]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    /// Output directory, relative to the recipe (default "out"); `--output-dir` overrides.
    pub dir: Option<Spanned<String>>,
    /// Output formats (default ["raw"]; the raw is always written).
    #[serde(default)]
    pub formats: Vec<Spanned<String>>,
    /// `[output.vmdk]`
    #[serde(default)]
    pub vmdk: VmdkOut,
    /// `[output.ova]`
    #[serde(default)]
    pub ova: OvaOut,
    /// `[output.qcow2]`
    #[serde(default)]
    pub qcow2: Qcow2Out,
    /// Upload the outputs and the manifest to `s3://bucket/prefix` after the build.
    pub upload: Option<Spanned<String>>,
}

/// `[output.vmdk]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmdkOut {
    /// lsilogic (default), pvscsi or ide.
    pub adapter: Option<Spanned<String>>,
}

/// `[output.ova]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OvaOut {
    /// OVF hardware family, `vmx-NN` (default vmx-13: ESXi 6.5+).
    pub hardware_version: Option<Spanned<String>>,
    /// Virtual CPUs (default 2).
    pub cpus: Option<Spanned<u32>>,
    /// Memory in MiB (default 2048).
    pub memory_mib: Option<Spanned<u64>>,
    /// Manifest digest: sha256 (default) or sha1.
    pub digest: Option<Spanned<String>>,
    /// auto (default), bios or efi.
    pub firmware: Option<Spanned<String>>,
}

/// `[output.qcow2]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Qcow2Out {
    /// Compress clusters (default false).
    pub compress: Option<bool>,
}

/// `type = "shell"`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShellStep {
    /// A label for logs.
    pub name: Option<String>,
    /// Commands, run by `/bin/sh -e` as one script.
    pub inline: Option<Vec<String>>,
    /// Or a script file relative to the recipe, copied in for the run only.
    pub script: Option<String>,
    /// Extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Interpreter inside the image (default "/bin/sh").
    pub shell: Option<String>,
}

/// `type = "file"`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileStep {
    /// A label for logs.
    pub name: Option<String>,
    /// File or directory, relative to the recipe.
    pub source: String,
    /// Absolute path inside the image. A trailing `/` copies into that directory.
    pub destination: String,
    /// Octal mode for the copied file(s), e.g. "0644" (default: the source's).
    pub mode: Option<String>,
    /// "user:group" resolved in the image's passwd/group (default "root:root").
    pub owner: Option<String>,
}

/// `type = "overlay"`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverlayStep {
    /// A label for logs.
    pub name: Option<String>,
    /// A tree relative to the recipe (usually under `rootfs-overlays/`), copied over `/`.
    pub source: String,
    /// "user:group" for everything copied (default "root:root").
    pub owner: Option<String>,
}

/// `type = "ansible"`: `ansible-playbook` on the host, chroot connection into the image.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnsibleStep {
    /// A label for logs.
    pub name: Option<String>,
    /// The playbook, relative to the recipe.
    pub playbook: String,
    /// Role directories, relative to the recipe (ANSIBLE_ROLES_PATH).
    #[serde(default)]
    pub roles_path: Vec<String>,
    /// Collection directories, relative to the recipe (ANSIBLE_COLLECTIONS_PATH).
    #[serde(default)]
    pub collections_path: Vec<String>,
    /// A requirements.yml installed with `ansible-galaxy install -r` into a temporary directory
    /// on the host before the run.
    pub requirements: Option<String>,
    /// Extra variables (`--extra-vars`, as JSON).
    #[serde(default)]
    pub extra_vars: BTreeMap<String, toml::Value>,
    /// Only tasks with these tags (`--tags`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Skip tasks with these tags (`--skip-tags`).
    #[serde(default)]
    pub skip_tags: Vec<String>,
}

/// `type = "salt"`: masterless `salt-call --local` chrooted in the image.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaltStep {
    /// A label for logs.
    pub name: Option<String>,
    /// The state tree (file_roots), relative to the recipe; needs a top.sls for a highstate.
    pub state_tree: String,
    /// The pillar tree (pillar_roots), relative to the recipe.
    pub pillar_tree: Option<String>,
    /// The minion id the top file is matched against.
    pub minion_id: String,
    /// States to apply (`state.apply a,b`); empty means a highstate.
    #[serde(default)]
    pub states: Vec<String>,
    /// "none" (default: salt-call must be in the image) or "pip" (install salt into a venv at
    /// /opt/imgforge-salt for the run).
    pub install: Option<String>,
    /// With install = "pip": keep the venv in the image (default false: removed after the run).
    #[serde(default)]
    pub keep: bool,
    /// With install = "pip": a directory of wheels (relative to the recipe) holding pip, salt
    /// and every dependency for the image's Python; installed offline from it alone.
    pub wheelhouse: Option<String>,
}

/// `type = "puppet"`: `puppet apply` chrooted in the image.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PuppetStep {
    /// A label for logs.
    pub name: Option<String>,
    /// The manifest (a file or a directory of manifests), relative to the recipe.
    pub manifest: String,
    /// Module directories, relative to the recipe (`--modulepath`).
    #[serde(default)]
    pub module_path: Vec<String>,
    /// A hiera.yaml, relative to the recipe (its data directory must sit beside it).
    pub hiera_config: Option<String>,
    /// Facts, exported as `FACTER_<name>`.
    #[serde(default)]
    pub facts: BTreeMap<String, String>,
    /// The node name (`--certname`; default the image name).
    pub certname: Option<String>,
}
