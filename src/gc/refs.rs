//! What AWS says is in use, region by region: every reference the janitor's guards know.
//!
//! - instances in any state but terminated;
//! - launch template versions: `$Default` and `$Latest` (or every version, by rule), with
//!   `resolve:ssm:NAME` image ids resolved through SSM;
//! - SSM parameters whose value is an AMI id;
//! - launch configurations (every one, used by a group or not), and the launch template
//!   versions auto-scaling groups name (their own or through a mixed-instances policy), whatever
//!   the version;
//! - for the candidates: launch permissions (shared with other accounts, or public), the
//!   `imgforge:keep=true` tag, and EC2's `lastLaunchedTime`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use anyhow::anyhow;

use crate::aws::client;
use crate::aws::retry::{Policy, retry};

/// The tag that keeps an AMI whatever the rules say.
pub const KEEP_TAG: (&str, &str) = ("imgforge:keep", "true");

/// An AMI: (region, id).
pub type Ami = (String, String);

/// What is in use, and what the candidates carry.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Refs {
    /// AMI → what uses it ("instance i-… (running)", "launch template web (lt-…) version 3").
    pub uses: BTreeMap<Ami, Vec<String>>,
    /// AMI → the accounts (or `all`) it is shared with.
    pub shared: BTreeMap<Ami, Vec<String>>,
    /// AMIs tagged `imgforge:keep=true`.
    pub keep_tagged: BTreeSet<Ami>,
    /// AMI → when an instance was last launched from it (RFC 3339), where EC2 knows.
    pub last_launched: BTreeMap<Ami, String>,
    /// Our AMIs that exist (DescribeImages, owner self).
    pub exists: BTreeSet<Ami>,
}

/// Reads every reference in `regions`; `candidates` are the AMIs whose attributes are read.
pub async fn gather(cfg: &aws_config::SdkConfig, candidates: &BTreeSet<Ami>, all_lt_versions: bool) -> anyhow::Result<Refs> {
    let regions: BTreeSet<&String> = candidates.iter().map(|(r, _)| r).collect();
    let mut refs = Refs::default();
    for region in regions {
        let ec2 = client::ec2_in(cfg, region);
        let ssm = client::ssm_in(cfg, region);
        images(&ec2, region, &mut refs).await?;
        instances(&ec2, region, &mut refs).await?;
        let params = parameters(&ssm, region).await?;
        for (name, value) in &params {
            if value.starts_with("ami-") {
                refs.uses.entry((region.clone(), value.clone())).or_default().push(format!("SSM parameter {name}"));
            }
        }
        launch_templates(&ec2, region, all_lt_versions, &params, &mut refs).await?;
        let asg = client::autoscaling_in(cfg, region);
        launch_configurations(&asg, region, &params, &mut refs).await?;
        for (why, lt, version) in group_templates(&asg, region).await? {
            template_version(&ec2, region, &lt, &version, &why, &params, &mut refs).await?;
        }
        for (r, ami) in candidates.iter().filter(|(r, _)| r == region) {
            attributes(&ec2, r, ami, &mut refs).await?;
        }
    }
    for v in refs.uses.values_mut() {
        v.sort();
        v.dedup();
    }
    Ok(refs)
}

/// An image id as a template or configuration names it: `resolve:ssm:NAME` through `params`.
fn image_of(image: &str, params: &BTreeMap<String, String>) -> Option<String> {
    match image.strip_prefix("resolve:ssm:") {
        Some(p) => params.get(p.split(':').next().unwrap_or(p)).cloned(),
        None => Some(image.to_string()),
    }
}

async fn launch_configurations(
    asg: &aws_sdk_autoscaling::Client,
    region: &str,
    params: &BTreeMap<String, String>,
    refs: &mut Refs,
) -> anyhow::Result<()> {
    let mut token: Option<String> = None;
    loop {
        let out = retry(&Policy::NO_WARMUP, Instant::now(), &|| "DescribeLaunchConfigurations".to_string(), || {
            asg.describe_launch_configurations().set_next_token(token.clone()).send()
        })
        .await
        .map_err(fail("list launch configurations".into(), region))?;
        for lc in out.launch_configurations() {
            if let Some(ami) = lc.image_id().and_then(|i| image_of(i, params)) {
                let why = format!("launch configuration {}", lc.launch_configuration_name().unwrap_or("?"));
                refs.uses.entry((region.to_string(), ami)).or_default().push(why);
            }
        }
        token = out.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(());
        }
    }
}

/// The launch template versions auto-scaling groups name: (why, template id or name, version).
async fn group_templates(asg: &aws_sdk_autoscaling::Client, region: &str) -> anyhow::Result<Vec<(String, String, String)>> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = retry(&Policy::NO_WARMUP, Instant::now(), &|| "DescribeAutoScalingGroups".to_string(), || {
            asg.describe_auto_scaling_groups().set_next_token(token.clone()).send()
        })
        .await
        .map_err(fail("list auto-scaling groups".into(), region))?;
        for g in page.auto_scaling_groups() {
            let name = g.auto_scaling_group_name().unwrap_or("?");
            let specs = g
                .launch_template()
                .into_iter()
                .chain(g.mixed_instances_policy().and_then(|m| m.launch_template()).and_then(|t| t.launch_template_specification()));
            for spec in specs {
                let Some(lt) = spec.launch_template_id().or(spec.launch_template_name()) else { continue };
                let shown = spec.launch_template_name().unwrap_or(lt);
                let version = spec.version().unwrap_or("$Default").to_string();
                out.push((format!("auto-scaling group {name} (launch template {shown} version {version})"), lt.to_string(), version));
            }
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(out);
        }
    }
}

/// One launch template version's image, as a reference.
async fn template_version(
    ec2: &aws_sdk_ec2::Client,
    region: &str,
    lt: &str,
    version: &str,
    why: &str,
    params: &BTreeMap<String, String>,
    refs: &mut Refs,
) -> anyhow::Result<()> {
    let by_id = lt.starts_with("lt-");
    let out = retry(&Policy::NO_WARMUP, Instant::now(), &|| format!("DescribeLaunchTemplateVersions {lt} {version}"), || {
        let req = ec2.describe_launch_template_versions().versions(version);
        if by_id { req.launch_template_id(lt) } else { req.launch_template_name(lt) }.send()
    })
    .await
    .map_err(fail(format!("read version {version} of launch template {lt}"), region))?;
    for v in out.launch_template_versions() {
        if let Some(ami) = v.launch_template_data().and_then(|d| d.image_id()).and_then(|i| image_of(i, params)) {
            refs.uses.entry((region.to_string(), ami)).or_default().push(why.to_string());
        }
    }
    Ok(())
}

fn fail(what: String, region: &str) -> impl FnOnce(crate::aws::retry::Failed) -> anyhow::Error {
    let region = region.to_string();
    move |f| anyhow!("Failed to {what} in {region}: {f} (the janitor retires nothing it cannot check)")
}

async fn images(ec2: &aws_sdk_ec2::Client, region: &str, refs: &mut Refs) -> anyhow::Result<()> {
    let out = retry(&Policy::NO_WARMUP, Instant::now(), &|| "DescribeImages owner self".to_string(), || {
        ec2.describe_images().owners("self").send()
    })
    .await
    .map_err(fail("list our AMIs".into(), region))?;
    for i in out.images() {
        let Some(id) = i.image_id() else { continue };
        let key = (region.to_string(), id.to_string());
        if i.tags().iter().any(|t| t.key() == Some(KEEP_TAG.0) && t.value() == Some(KEEP_TAG.1)) {
            refs.keep_tagged.insert(key.clone());
        }
        refs.exists.insert(key);
    }
    Ok(())
}

async fn instances(ec2: &aws_sdk_ec2::Client, region: &str, refs: &mut Refs) -> anyhow::Result<()> {
    use aws_sdk_ec2::types::Filter;
    let states = Filter::builder()
        .name("instance-state-name")
        .set_values(Some(["pending", "running", "shutting-down", "stopping", "stopped"].iter().map(|s| s.to_string()).collect()));
    let mut token: Option<String> = None;
    loop {
        let out = retry(&Policy::NO_WARMUP, Instant::now(), &|| "DescribeInstances".to_string(), || {
            ec2.describe_instances().filters(states.clone().build()).set_next_token(token.clone()).send()
        })
        .await
        .map_err(fail("list instances".into(), region))?;
        for i in out.reservations().iter().flat_map(|r| r.instances()) {
            if let (Some(ami), Some(id)) = (i.image_id(), i.instance_id()) {
                let state = i.state().and_then(|s| s.name()).map_or("", |n| n.as_str());
                refs.uses.entry((region.to_string(), ami.to_string())).or_default().push(format!("instance {id} ({state})"));
            }
        }
        token = out.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(());
        }
    }
}

/// Every SSM parameter's name and value.
async fn parameters(ssm: &aws_sdk_ssm::Client, region: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let out = retry(&Policy::NO_WARMUP, Instant::now(), &|| "DescribeParameters".to_string(), || {
            ssm.describe_parameters().max_results(50).set_next_token(token.clone()).send()
        })
        .await
        .map_err(fail("list SSM parameters".into(), region))?;
        names.extend(out.parameters().iter().filter_map(|p| p.name().map(str::to_string)));
        token = out.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    let mut values = BTreeMap::new();
    for chunk in names.chunks(10) {
        let out = retry(&Policy::NO_WARMUP, Instant::now(), &|| "GetParameters".to_string(), || {
            ssm.get_parameters().set_names(Some(chunk.to_vec())).send()
        })
        .await
        .map_err(fail("read SSM parameters".into(), region))?;
        for p in out.parameters() {
            if let (Some(n), Some(v)) = (p.name(), p.value()) {
                values.insert(n.to_string(), v.to_string());
            }
        }
    }
    Ok(values)
}

async fn launch_templates(
    ec2: &aws_sdk_ec2::Client,
    region: &str,
    all: bool,
    params: &BTreeMap<String, String>,
    refs: &mut Refs,
) -> anyhow::Result<()> {
    let mut templates = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let out = retry(&Policy::NO_WARMUP, Instant::now(), &|| "DescribeLaunchTemplates".to_string(), || {
            ec2.describe_launch_templates().set_next_token(token.clone()).send()
        })
        .await
        .map_err(fail("list launch templates".into(), region))?;
        templates.extend(
            out.launch_templates()
                .iter()
                .filter_map(|t| Some((t.launch_template_id()?.to_string(), t.launch_template_name().unwrap_or("").to_string()))),
        );
        token = out.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    for (id, name) in templates {
        let versions: Option<Vec<String>> = if all { None } else { Some(vec!["$Default".into(), "$Latest".into()]) };
        let mut token: Option<String> = None;
        loop {
            let out = retry(&Policy::NO_WARMUP, Instant::now(), &|| format!("DescribeLaunchTemplateVersions {id}"), || {
                ec2.describe_launch_template_versions()
                    .launch_template_id(&id)
                    .set_versions(versions.clone())
                    .set_next_token(token.clone())
                    .send()
            })
            .await
            .map_err(fail(format!("read the versions of launch template {id}"), region))?;
            for v in out.launch_template_versions() {
                let Some(image) = v.launch_template_data().and_then(|d| d.image_id()) else { continue };
                let n = v.version_number().unwrap_or_default();
                let which = match (v.default_version(), all) {
                    (Some(true), _) => " ($Default)",
                    (_, false) => " ($Latest)",
                    _ => "",
                };
                let why = format!("launch template {name} ({id}) version {n}{which}");
                let Some(ami) = image_of(image, params) else { continue };
                refs.uses.entry((region.to_string(), ami)).or_default().push(why);
            }
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
    }
    Ok(())
}

async fn attributes(ec2: &aws_sdk_ec2::Client, region: &str, ami: &str, refs: &mut Refs) -> anyhow::Result<()> {
    use aws_sdk_ec2::types::ImageAttributeName;
    let key = (region.to_string(), ami.to_string());
    if !refs.exists.contains(&key) {
        return Ok(());
    }
    let perms = retry(&Policy::NO_WARMUP, Instant::now(), &|| format!("DescribeImageAttribute {ami} launchPermission"), || {
        ec2.describe_image_attribute().image_id(ami).attribute(ImageAttributeName::LaunchPermission).send()
    })
    .await
    .map_err(fail(format!("read the launch permissions of {ami}"), region))?;
    let accounts: Vec<String> = perms
        .launch_permissions()
        .iter()
        .filter_map(|p| p.user_id().map(str::to_string).or_else(|| p.group().map(|g| g.as_str().to_string())))
        .collect();
    if !accounts.is_empty() {
        refs.shared.insert(key.clone(), accounts);
    }
    let last = retry(&Policy::NO_WARMUP, Instant::now(), &|| format!("DescribeImageAttribute {ami} lastLaunchedTime"), || {
        ec2.describe_image_attribute().image_id(ami).attribute(ImageAttributeName::LastLaunchedTime).send()
    })
    .await
    .map_err(fail(format!("read when {ami} was last launched"), region))?;
    if let Some(t) = last.last_launched_time().and_then(|v| v.value()).filter(|t| !t.is_empty()) {
        refs.last_launched.insert(key, t.to_string());
    }
    Ok(())
}
