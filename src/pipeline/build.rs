//! `imgforge build`: the build pipeline, step by step.
//!
//! verify source → raw working disk (unnamed file) → grow → partition table → attach + mount
//! (private mount namespace) → provisioning window (resolv.conf, policy-rc.d) → provisioners →
//! stamp → seal → trim → unmount + detach → outputs + manifest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::chroot::guards::{SwappedFile, host_resolv_conf};
use crate::chroot::sandbox::Sandbox;
use crate::chroot::services::POLICY_RC_D;
use crate::disk::convert;
use crate::disk::workdisk::WorkDisk;
use crate::image::mount::{Mounted, RootChoice, choose_root, probe_all};
use crate::image::{arch, drivers};
use crate::manifest::{Manifest, SourceInfo};
use crate::progress::Events;
use crate::provision::StepReport;
use crate::recipe::BuildPlan;
use crate::recipe::plan::Origin;
use crate::seal::SealReport;
use crate::source::verify::{VerifiedSource, verify_source};
use crate::stamp::version;
use crate::stamp::{self, Stamp};

/// What to do with the working disk when a build fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnError {
    /// Delete it (default).
    Cleanup,
    /// Keep it (unmounted, detached) as `<name>.failed.raw` in the output directory.
    Keep,
}

/// Build options from the command line.
#[derive(Debug, Clone)]
pub struct Options {
    /// Failure handling.
    pub on_error: OnError,
    /// Download cache.
    pub cache_dir: PathBuf,
    /// Stop after printing the seal plan (nothing sealed, no outputs).
    pub seal_dry_run: bool,
    /// The registry the build is recorded in (`None`: $IMGFORGE_REGISTRY or the default).
    pub registry: Option<String>,
    /// Build even when a record with the same layer key and its outputs exists.
    pub rebuild: bool,
    /// Another endpoint for S3 (a parent's raw fetched from its upload).
    pub endpoint_url: Option<String>,
    /// Skip the recipe's `[[test]]` suites.
    pub no_test: bool,
    /// Where the JUnit report goes (default `<output dir>/<name>.tests.xml`).
    pub junit: Option<PathBuf>,
    /// Seconds between the lease's heartbeats (a silent holder loses it after three).
    pub lease_period: Duration,
    /// Another builder holds the layer: exit 3 instead of waiting for its record.
    pub no_wait: bool,
}

/// Step timings, in order.
#[derive(Debug, Default)]
struct Timings(BTreeMap<String, f64>);

impl Timings {
    fn time<T>(&mut self, events: &Events, step: &str, what: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
        crate::host::signals::check()?;
        events.step(step, what);
        let start = Instant::now();
        let out = f()?;
        let secs = start.elapsed().as_secs_f64();
        events.step_done(step, secs);
        self.0.insert(step.to_string(), secs);
        Ok(out)
    }
}

/// Runs a build; returns the manifest written next to the outputs, or the seal plan of a
/// `--seal-dry-run` (then nothing is written).
pub fn run(plan: &BuildPlan, opts: &Options, events: &Events) -> anyhow::Result<Outcome> {
    crate::provision::preflight(&plan.steps)?;
    let mut store = events.phase("prepare", "open the image registry", || {
        crate::registry::open(opts.registry.as_deref()).context("Failed to open the image registry")
    })?;
    let (parent, upstream) = match &plan.source {
        Origin::Upstream(s) => (None, Some(s)),
        Origin::Parent(q) => {
            let p = super::parent::resolve(&*store, q)?;
            events.output("parent", &format!("building on {}", p.describe()));
            (Some(p), None)
        }
    };
    let key = events.phase("prepare", "compute the layer key (recipe, provisioner inputs, source)", || {
        super::layer::compute(plan, parent.as_ref(), upstream)
    })?;
    if !opts.rebuild
        && !opts.seal_dry_run
        && let Some(r) =
            events.phase("prepare", "look the layer key up in the registry", || super::layer::up_to_date(&*store, &plan.name, &key.key))?
    {
        return Ok(Outcome::UpToDate(Box::new(r)));
    }
    // One builder per layer key: the lease is held until the record is written.
    let _lease = if opts.seal_dry_run {
        None
    } else {
        let ask = super::lease::Ask {
            spec: opts.registry.as_deref(),
            name: &plan.name,
            key: &key.key,
            period: opts.lease_period,
            no_wait: opts.no_wait,
            reuse: !opts.rebuild,
        };
        match super::lease::take(&mut *store, &ask, events)? {
            super::lease::Take::Build(held) => Some(held),
            super::lease::Take::Reuse(r) => return Ok(Outcome::UpToDate(r)),
        }
    };
    let source = match (&parent, upstream) {
        (Some(p), _) => p.source_plan(&opts.cache_dir, opts.endpoint_url.as_deref(), events)?,
        (None, Some(u)) => u.clone(),
        (None, None) => bail!("the build has neither a parent nor an upstream image"),
    };
    let version = match &plan.version {
        Some(v) => v.clone(),
        None => version::git_describe(&plan.recipe_dir)?,
    };
    std::fs::create_dir_all(&plan.output_dir)
        .with_context(|| format!("Failed to create the output directory {}", plan.output_dir.display()))?;
    let mut t = Timings::default();
    let src = t.time(events, "verify", &format!("verifying {}", source.image), || verify_source(&source, &opts.cache_dir, events))?;
    let work = WorkDisk::create(&plan.output_dir)?;
    // A failure while the working disk holds its space is checked against a full output
    // directory (space.rs).
    let declared = convert::virtual_size(&src.path).filter(|s| *s <= convert::MAX_VIRTUAL_SIZE);
    let mut sizes = super::space::Sizes {
        disk: plan.disk_size.max(declared),
        other_formats: plan.formats.iter().filter(|f| **f != crate::export::format::Format::Raw).count(),
    };
    let full = |e: anyhow::Error, sizes: super::space::Sizes| super::space::explain(e, &plan.output_dir, sizes);
    let size = t
        .time(events, "convert", "making the raw working disk", || {
            let counter = AtomicU64::new(0);
            let total = std::fs::metadata(&src.path).map_or(0, |m| m.len());
            Ok(events.with_bar("convert", total, &counter, || convert::to_raw(&src.path, work.file(), &counter))?)
        })
        .map_err(|e| full(e, sizes))?;
    sizes.disk = Some(sizes.disk.unwrap_or(size).max(size));
    let stamp = Stamp {
        name: plan.name.clone(),
        version: version.clone(),
        git_commit: version::git_commit(&plan.recipe_dir).unwrap_or_default(),
        build_date: stamp::rfc3339(stamp::build_time()),
        source_digest: format!("{}:{}", src.algo.name().to_ascii_lowercase(), src.digest),
        ancestor: match &parent {
            Some(p) => format!("{} {}", p.record.name, p.record.version),
            None => source.image.ancestor(),
        },
        parent: parent.as_ref().map(|p| (p.record.id.clone(), p.record.name.clone(), p.record.version.clone())),
    };
    let layer = Layer { key, parent: parent.map(|p| p.record), store: &mut *store };
    match customize(plan, opts, &work, size, &stamp, &mut t, events) {
        Ok(c) if opts.seal_dry_run => Ok(Outcome::SealPlan(Box::new(c.seal))),
        Ok(c) => {
            let manifest = finish(plan, work, &src, &stamp, c, layer, t, events).map_err(|e| full(e, sizes))?;
            if !opts.no_test && !plan.tests.is_empty() {
                test_build(plan, opts, &manifest, &mut *store, events)?;
            }
            Ok(Outcome::Built(manifest))
        }
        Err(e) => {
            let e = full(e, sizes);
            if opts.on_error == OnError::Keep {
                let kept = plan.output_dir.join(format!("{}.failed.raw", plan.name));
                match work.persist(&kept) {
                    Ok(_) => {
                        events.notice(&format!("kept the working disk (unmounted, detached) as {}; delete it when done", kept.display()))
                    }
                    Err(k) => events.notice(&format!("could not keep the working disk: {k}")),
                }
            }
            Err(e)
        }
    }
}

/// Runs the recipe's tests on the raw output just written and records the verdict: all pass →
/// the record is `tested`; a failure → an error naming the failed cases, the record stays a
/// candidate, the outputs stay for inspection.
fn test_build(
    plan: &BuildPlan,
    opts: &Options,
    m: &Manifest,
    store: &mut dyn crate::registry::Store,
    events: &Events,
) -> anyhow::Result<()> {
    let raw = m.outputs.iter().find(|o| o.format == "raw").context("the build wrote no raw output to test")?;
    let subject = crate::imagetest::Subject {
        name: m.name.clone(),
        version: m.version.clone(),
        record: m.record.clone(),
        sha256: raw.sha256.clone(),
    };
    let junit = opts.junit.clone().unwrap_or_else(|| crate::imagetest::default_junit(&plan.output_dir, &plan.name));
    let stages = [crate::imagetest::plan::Stage::Offline, crate::imagetest::plan::Stage::Boot];
    let run = crate::imagetest::run_and_report(&subject, Path::new(&raw.path), plan.root.as_ref(), &plan.tests, &stages, &junit, events)?;
    let id = m.record.as_deref().context("the build has no registry record")?;
    crate::imagetest::record(store, id, &run)
}

/// What happened inside the mounted image.
struct Customized {
    provisioners: Vec<StepReport>,
    /// Service starts deferred to first boot.
    services: Vec<crate::chroot::services::Deferred>,
    /// Kernel parameters set in the sandbox only.
    sysctls: std::collections::BTreeMap<String, String>,
    /// Installed packages, read after sealing.
    packages: Vec<crate::registry::packages::Package>,
    /// Kernel versions in the image.
    kernels: Vec<String>,
    /// os-release `ID`.
    distribution: Option<String>,
    seal: SealReport,
    /// The image's SELinux mode and relabel.
    selinux: Option<crate::image::selinux::SelinuxReport>,
    /// The image's architecture (`arch.rs`), when an executable says.
    architecture: Option<&'static str>,
    /// Cloud drivers in the image's kernels (`drivers.rs`).
    drivers: Option<drivers::Drivers>,
}

/// Grow, mount, provision, stamp, seal, trim, unmount. Mounts and loop devices are always
/// released before this returns.
fn customize(
    plan: &BuildPlan,
    opts: &Options,
    work: &WorkDisk,
    size: u64,
    stamp: &Stamp,
    t: &mut Timings,
    events: &Events,
) -> anyhow::Result<Customized> {
    let disk = work.file();
    let grown = match plan.disk_size {
        Some(want) if want > size => Some(want),
        Some(want) if want < size => bail!("disk.size {want} is smaller than the upstream disk ({size} bytes); imgforge only grows disks"),
        _ => None,
    };
    let table = crate::disk::partition::read(&mut &*disk, size).context("Failed to read the partition table")?;
    let parts = probe_all(disk, &table)?;
    let root_part = choose_root(&parts, plan.root.as_ref())?;
    if let (Some(_), Some(v)) = (grown, &root_part.volume) {
        bail!(
            "[disk] size: the root is the logical volume {}; growing it means resizing its physical volume and volume group, \
             which imgforge does not do (it never activates LVM): leave out [disk] size and grow at first boot \
             (cloud-init growpart, then lvextend -r)",
            v.name()
        );
    }
    if let Some(want) = grown {
        t.time(events, "grow", &format!("growing the disk to {want} bytes"), || {
            let path = crate::host::fd::self_path(disk);
            crate::disk::grow::grow_disk(&path, want, root_part.part.index)?;
            Ok(())
        })?;
    }
    let (parts, root_part) = match grown {
        Some(new_size) => {
            let table = crate::disk::partition::read(&mut &*disk, new_size)?;
            let parts = probe_all(disk, &table)?;
            let root = choose_root(&parts, Some(&RootChoice::Partition(root_part.part.index)))?;
            (parts, root)
        }
        None => (parts, root_part),
    };
    let what = format!("mounting {} ({}) as /", crate::image::mount::describe(&root_part), root_part.fs.fstype);
    let mounted = t.time(events, "mount", &what, || Mounted::mount(disk, &parts, &root_part, grown.is_some(), false, events))?;
    let mut cx = seal_context(plan, opts.seal_dry_run);
    cx.filesystems = super::seal_filesystems(&parts, &mounted);
    cx.disk_path = Some(crate::host::fd::shared_path(disk));
    let result = inside(plan, opts, &mounted, &cx, stamp, t, events);
    let closed = t.time(events, "unmount", "unmounting and detaching", || mounted.close());
    let mut c = match (result, closed) {
        (Ok(r), Ok(())) if !r.seal.fs_uuids.is_empty() || !r.seal.lvm_uuids.is_empty() => {
            t.time(events, "fs-uuids", "setting new filesystem and LVM UUIDs", || {
                crate::seal::fsuuid::apply(disk, &r.seal.fs_uuids)?;
                crate::seal::lvmuuid::apply(disk, &r.seal.lvm_uuids)
            })?;
            r
        }
        (Ok(r), Ok(())) => r,
        (Err(e), Ok(())) => return Err(e),
        (Ok(_), Err(c)) => return Err(c),
        (Err(e), Err(c)) => return Err(e.context(format!("and cleanup failed too: {c:#}"))),
    };
    if opts.seal_dry_run {
        return Ok(c);
    }
    super::reset_last_mounted(disk, &cx.filesystems)?;
    let punched = t.time(events, "punch-free", "punching free blocks out of the disk", || super::punch_free(disk, &cx.filesystems))?;
    c.seal.free_space.extend(punched);
    // The disk is final here: search all its data, free space and journals included, for what
    // the seal removed.
    let raw = t.time(events, "raw-scan", "searching the raw disk for what the seal removed", || {
        crate::seal::rawscan::scan(disk, &super::raw_parts(&parts), &c.seal.raw_needles)
            .context("Failed to search the unmounted disk for what the seal removed")
    })?;
    let failed = raw.check();
    c.seal.raw_scan = Some(raw);
    if let Err(e) = failed {
        let report_path = plan.output_dir.join(format!("{}.seal.json", plan.name));
        let full_list = match crate::manifest::write(&c.seal, &report_path) {
            Ok(()) => format!("full report in {}", report_path.display()),
            Err(w) => format!("the report could not be written to {}: {w:#}", report_path.display()),
        };
        return Err(e.context(full_list));
    }
    Ok(c)
}

fn inside(
    plan: &BuildPlan,
    opts: &Options,
    m: &Mounted,
    cx: &crate::seal::Context,
    stamp: &Stamp,
    t: &mut Timings,
    events: &Events,
) -> anyhow::Result<Customized> {
    // What ~/.ssh held before the first provisioner: `ssh-userdir` removes the upstream's
    // authorized_keys and known_hosts and keeps the recipe's.
    let inventory =
        crate::seal::inventory::SshInventory::take(&m.root).context("Failed to record the image's ~/.ssh files before provisioning")?;
    let cx = &crate::seal::Context { ssh_inventory: Some(inventory), ..cx.clone() };
    // Every command in the image (provisioners, the image's tools while sealing) runs in it;
    // networking only when there is something to provision.
    let sandbox = t.time(events, "sandbox", "creating the build sandbox", || Sandbox::create(&m.root, !plan.steps.is_empty(), events))?;
    let provisioners = t.time(events, "provision", "provisioning", || provision_window(plan, &opts.cache_dir, m, events))?;
    let services = sandbox.deferred_services()?;
    report_services(&services, events);
    let sysctls: std::collections::BTreeMap<String, String> = sandbox.sysctl_changes().into_iter().collect();
    for (k, v) in &sysctls {
        events.notice(&format!(
            "{k} = {v} was set by a provisioner: it changed only the build sandbox; the image gets it only if persisted (/etc/sysctl.d)"
        ));
    }
    let (architecture, drivers) = t.time(events, "detect", "detecting the architecture and the cloud drivers", || {
        Ok((arch::detect(&m.root), drivers::detect(&m.root)))
    })?;
    t.time(events, "stamp", &format!("stamping {} {}", stamp.name, stamp.version), || Ok(stamp::apply(&m.root, stamp)?))?;
    let what = format!("sealing ({} operations{})", plan.seal.enabled.len(), if opts.seal_dry_run { ", dry run" } else { "" });
    // The scrub is the last write to the image: only trimming (no content change) follows.
    let mut seal = t.time(events, "seal", &what, || crate::seal::run(&m.root, &plan.seal, cx, events))?;
    // Labels for everything the build and the seal wrote: attributes only, no content.
    let selinux = if opts.seal_dry_run {
        None
    } else {
        let fs: Vec<(String, String)> = cx.filesystems.iter().filter_map(|f| f.target.clone().map(|t| (t, f.fstype.clone()))).collect();
        t.time(events, "selinux", "relabelling for the image's SELinux policy", || crate::image::selinux::relabel(&m.root, &fs, events))?
    };
    drop(sandbox);
    let (packages, kernels, distribution) = t.time(events, "inventory", "reading the image's packages and kernels", || {
        Ok((
            crate::registry::packages::installed(&m.root)?,
            crate::registry::packages::kernels(&m.root)?,
            crate::registry::packages::distribution(&m.root)?,
        ))
    })?;
    if opts.seal_dry_run {
        return Ok(Customized { provisioners, services, sysctls, packages, kernels, distribution, seal, selinux, architecture, drivers });
    }
    let report_path = plan.output_dir.join(format!("{}.seal.json", plan.name));
    if seal.errors().next().is_some() {
        // The build fails and writes no image, but the report says what was found, if it can.
        let full_list = match crate::manifest::write(&seal, &report_path) {
            Ok(()) => format!("full list in {}", report_path.display()),
            Err(e) => format!("the full list could not be written to {}: {e:#}", report_path.display()),
        };
        seal.check(&full_list)?;
    }
    seal.free_space = t.time(events, "trim", "syncing and trimming free space", || crate::image::mount::trim_all(m))?;
    for gap in crate::pipeline::free_space_gaps(&cx.filesystems) {
        events.notice(&gap);
        seal.free_space.push(gap);
    }
    Ok(Customized { provisioners, services, sysctls, packages, kernels, distribution, seal, selinux, architecture, drivers })
}

/// Logs each deferred start, and warns about units asked to run that will not run at boot.
fn report_services(services: &[crate::chroot::services::Deferred], events: &Events) {
    for d in services {
        events.output("services", &format!("{}: {} deferred to first boot (asked by {})", d.unit, d.actions.join(", "), d.via.join(", ")));
        if !d.runs_at_boot() {
            events.notice(&format!(
                "{} was asked to {} but is {} in the image: it will not run when the image boots (enable it: systemctl enable {})",
                d.unit,
                d.actions.join("/"),
                d.enabled,
                d.unit
            ));
        }
    }
}

/// What sealing needs from the build: the host's name and the host paths given to
/// provisioners (the residue scan looks for both).
fn seal_context(plan: &BuildPlan, dry_run: bool) -> crate::seal::Context {
    let mut host_paths = vec![plan.recipe_dir.display().to_string()];
    let mut provisioner_paths = Vec::new();
    for (i, s) in plan.steps.iter().enumerate() {
        host_paths.extend(crate::provision::host_inputs(&s.step).iter().map(|p| p.display().to_string()));
        provisioner_paths.extend(crate::provision::image_paths(&s.step, i + 1));
    }
    let build_hostname = nix::unistd::gethostname().ok().map(|h| h.to_string_lossy().into_owned());
    crate::seal::Context { build_hostname, provisioner_paths, host_paths, dry_run, ..Default::default() }
}

/// What registering a build needs: its layer key, its parent's record, the registry.
struct Layer<'a> {
    key: super::layer::LayerKey,
    parent: Option<crate::registry::Record>,
    store: &'a mut dyn crate::registry::Store,
}

/// How a build ended.
#[derive(Debug)]
pub enum Outcome {
    /// Outputs written.
    Built(Box<Manifest>),
    /// Nothing built: this record has the same layer key and its outputs are in place.
    UpToDate(Box<crate::registry::Record>),
    /// `--seal-dry-run`: the plan, nothing written.
    SealPlan(Box<SealReport>),
}

/// Installs the provisioning guards, runs the provisioners, and restores the guards whatever
/// happened. Afterwards no process may still use the image.
fn provision_window(plan: &BuildPlan, cache_dir: &Path, m: &Mounted, events: &Events) -> anyhow::Result<Vec<StepReport>> {
    let root = &m.root;
    let resolv = SwappedFile::install(root, Path::new("/etc/resolv.conf"), host_resolv_conf().as_bytes(), 0o644)?;
    let policy = if root.dir(Path::new("/usr/sbin")).is_ok() {
        match SwappedFile::install(root, Path::new("/usr/sbin/policy-rc.d"), POLICY_RC_D, 0o755) {
            Ok(g) => Some(g),
            // Dropping `resolv` restores the image's own file.
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };
    let ran = crate::provision::run_all(&plan.steps, root, cache_dir, events);
    let left = crate::host::procscan::others_using(root.path());
    let restored = resolv.restore().and(policy.map_or(Ok(()), SwappedFile::restore));
    let reports = ran?;
    restored.context("Failed to restore the image's resolv.conf/policy-rc.d")?;
    if !left.is_empty() {
        bail!(
            "processes still use the image after provisioning{}; a provisioner left them running: stop them in the step that started them",
            crate::host::procscan::describe(&left)
        );
    }
    Ok(reports)
}

#[allow(clippy::too_many_arguments)]
fn finish(
    plan: &BuildPlan,
    work: WorkDisk,
    src: &VerifiedSource,
    stamp: &Stamp,
    c: Customized,
    layer: Layer<'_>,
    mut t: Timings,
    events: &Events,
) -> anyhow::Result<Box<Manifest>> {
    let dest = plan.output_dir.join(format!("{}.raw", plan.name));
    let out = t.time(events, "output", &format!("writing {}", dest.display()), || {
        // Hashed (from the page cache) while the kernel writes the disk back; both before the rename.
        let target = crate::export::run::Target { format: crate::export::format::Format::Raw, dest: dest.clone() };
        let fin = crate::export::run::Finish { sha256: true, sync: true, verify: false };
        crate::export::output::finish_output(work, &target, fin, |_| Ok(()))
    })?;
    let (raw_file, out) = out;
    let mut outputs = vec![out.clone()];
    let others: Vec<_> = plan.formats.iter().copied().filter(|f| *f != crate::export::format::Format::Raw).collect();
    if !others.is_empty() {
        let names: Vec<&str> = others.iter().map(|f| f.name()).collect();
        let input = crate::export::input::Input {
            path: dest.clone(),
            file: raw_file,
            size: out.size,
            name: plan.name.clone(),
            sha256: hex::decode(&out.sha256).ok().and_then(|b| b.try_into().ok()),
            epoch: crate::stamp::parse_rfc3339(&stamp.build_date).unwrap_or(0),
            manifest: None,
        };
        let targets = crate::export::run::targets_in(&plan.output_dir, &plan.name, &others);
        let fin = crate::export::run::Finish { sha256: true, sync: true, verify: true };
        let more = t.time(events, "export", &format!("writing {}", names.join(", ")), || {
            crate::export::run::export(&input, &targets, &plan.export, fin, events)
        });
        let more = match more {
            Ok(m) => m,
            Err(e) => {
                // A failed build names no output: take the raw's name back.
                let _ = std::fs::remove_file(&dest);
                return Err(e);
            }
        };
        outputs.extend(more);
    }
    let seal_name = format!("{}.seal.json", plan.name);
    // Until the manifest is in place, a failure (a full disk, the registry) takes back every
    // name this build gave: a failed build leaves no output and no record.
    let mut names: Vec<std::path::PathBuf> = outputs.iter().map(|o| std::path::PathBuf::from(&o.path)).collect();
    names.push(plan.output_dir.join(&seal_name));
    let take_back = |e: anyhow::Error| {
        for n in &names {
            let _ = std::fs::remove_file(n);
        }
        e
    };
    crate::manifest::write(&c.seal, &plan.output_dir.join(&seal_name))
        .with_context(|| format!("Failed to write the seal report {seal_name}"))
        .map_err(take_back)?;
    let (packages, kernels, distribution) = (c.packages, c.kernels, c.distribution);
    let mut manifest = Manifest {
        schema: crate::manifest::SCHEMA,
        name: plan.name.clone(),
        version: stamp.version.clone(),
        description: plan.description.clone(),
        git_commit: (!stamp.git_commit.is_empty()).then(|| stamp.git_commit.clone()),
        recipe: plan.recipe_path.display().to_string(),
        recipe_digest: format!("sha256:{}", plan.recipe_digest),
        build_date: stamp.build_date.clone(),
        source: SourceInfo {
            url: src.url.clone(),
            digest: stamp.source_digest.clone(),
            checksums: src.sums_url.clone(),
            signing_key_fingerprint: src.key_fingerprint.clone(),
            parent: layer.parent.as_ref().map(|p| crate::manifest::ParentInfo {
                record: p.id.clone(),
                name: p.name.clone(),
                version: p.version.clone(),
            }),
        },
        architecture: c.architecture.map(str::to_string),
        drivers: c.drivers,
        selinux: c.selinux,
        outputs,
        provisioners: c.provisioners,
        services: c.services,
        sandbox_sysctls: c.sysctls,
        steps: t.0,
        phases: Vec::new(),
        seal: c.seal.summary(&seal_name),
        imgforge_version: env!("CARGO_PKG_VERSION").to_string(),
        record: None,
        layer_key: Some(layer.key.key.clone()),
        aws: None,
        vars: plan.vars.clone(),
        extra: Default::default(),
    };
    let path = plan.output_dir.join(format!("{}.manifest.json", plan.name));
    let mut record = record_of(plan, &manifest, &path, &plan.output_dir.join(&seal_name), packages, kernels);
    record.distribution = distribution;
    record.layer_key = Some(layer.key.key);
    record.layer_inputs = layer.key.inputs;
    if let Some(p) = &layer.parent {
        record.parent.record = Some(p.id.clone());
        record.parent.name = Some(p.name.clone());
        record.parent.version = Some(p.version.clone());
        record.parent.url = None;
    }
    // The manifest is whole on disk before the record names it; rewritten afterwards (atomically)
    // with the registration's time.
    manifest.record = Some(record.id.clone());
    manifest.phases = events.take_phases();
    events.step("manifest", &format!("writing {}", path.display()));
    crate::manifest::write(&manifest, &path)
        .with_context(|| format!("Failed to write the manifest {}", path.display()))
        .map_err(take_back)?;
    let started = Instant::now();
    events.step("record", &format!("recording {} {} in the image registry", record.name, record.version));
    layer.store.register(&record).context("Failed to record the build in the image registry").map_err(|e| {
        let _ = std::fs::remove_file(&path);
        take_back(e)
    })?;
    let took = started.elapsed().as_secs_f64();
    events.step_done("record", took);
    manifest.steps.insert("register".into(), took);
    events.output(
        "registry",
        &format!("recorded {} {} as {} ({} packages, in {took:.3} s)", record.name, record.version, record.id, record.packages.len()),
    );
    if let Err(e) = crate::manifest::write(&manifest, &path) {
        // The first manifest stays: whole, only without the registration's time.
        events.notice(&format!("the manifest {} keeps no registration time: {e:#}", path.display()));
    }
    Ok(Box::new(manifest))
}

/// The registry record of a finished build. Pure given its inputs.
fn record_of(
    plan: &BuildPlan,
    m: &Manifest,
    manifest_path: &Path,
    seal_path: &Path,
    packages: Vec<crate::registry::packages::Package>,
    kernels: Vec<String>,
) -> crate::registry::Record {
    use crate::registry::record::{Output, Parent, Record, new_id};
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()).display().to_string();
    let owner = plan
        .owner
        .clone()
        .or_else(|| std::env::var("SUDO_USER").ok())
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "root".into());
    Record {
        id: new_id(),
        name: m.name.clone(),
        version: m.version.clone(),
        status: "candidate".into(),
        build_date: m.build_date.clone(),
        git_commit: m.git_commit.clone(),
        git_tag: version::git_tag(&plan.recipe_dir),
        labels: plan.labels.clone(),
        layer_key: None,
        layer_inputs: Default::default(),
        parent: Parent { url: Some(m.source.url.clone()), digest: m.source.digest.clone(), ..Parent::default() },
        architecture: m.architecture.clone(),
        distribution: None,
        kernels,
        packages,
        outputs: m
            .outputs
            .iter()
            .map(|o| Output {
                format: o.format.clone(),
                path: abs(Path::new(&o.path)),
                size: o.size,
                sha256: o.sha256.clone(),
                file_id: Output::file_id_of(Path::new(&o.path)),
                url: None,
            })
            .collect(),
        manifest: abs(manifest_path),
        seal_report: Some(abs(seal_path)),
        amis: Default::default(),
        snapshots: Default::default(),
        tests: Vec::new(),
        revoked: None,
        owner,
        recipe: abs(&plan.recipe_path),
    }
}
