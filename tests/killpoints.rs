//! SIGKILL at 30 points of a full build (issue 19): verify, convert, grow, mount, each kind of
//! provisioner, the seal's operations, trim, unmount, the raw output's rename, export, upload to
//! EBS (moto), AMI registration, the record write. The points are the `--json` events of a
//! reference run, chosen deterministically; each run is killed the moment its event is read.
//! (The export is qcow2 only: VMDK and OVA go through the same output path, and each
//! iteration's full build must stay cheap.) After each kill: nothing attached or mounted, no working file in the output directory, every
//! file under a final name complete, the registry readable with every record's outputs in
//! place, and the next build (which resumes a killed upload) succeeds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod aws;
mod util;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use aws::*;
use util::*;

/// An event as a kill point: (event, step or phase name, occurrence).
type Point = (String, String, usize);

/// (event, name): a step's name, or `step/phase` for a phase.
fn key(e: &serde_json::Value) -> (String, String) {
    let event = e["event"].as_str().unwrap_or("").to_string();
    let mut name = e["step"].as_str().or_else(|| e["name"].as_str()).unwrap_or("").to_string();
    if let Some(phase) = e["phase"].as_str() {
        name = format!("{name}/{phase}");
    }
    (event, name)
}

fn build_cmd(dir: &Path, endpoint: &str, region: &str) -> Command {
    let mut c = imgforge();
    c.arg("build")
        .arg(dir.join("recipe.toml"))
        .arg("-o")
        .arg(dir.join("out"))
        .arg("--registry")
        .arg(dir.join("registry.db"))
        .args(["--publish", "--rebuild", "--no-test", "--json"])
        // A killed build holds its layer-key lease until three periods pass without a heartbeat.
        .env("IMGFORGE_LEASE_PERIOD", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    aws_env(&mut c, endpoint, region);
    c
}

/// The first start of every step, then evenly spaced phases (the seal's operations, the
/// mount's stages) up to 30 points, in stream order. Pure.
fn choose(events: &[(String, String)]) -> Vec<Point> {
    let mut seen: std::collections::BTreeMap<(String, String), usize> = Default::default();
    let mut all: Vec<Point> = Vec::new();
    for (e, n) in events {
        let c = seen.entry((e.clone(), n.clone())).or_default();
        *c += 1;
        all.push((e.clone(), n.clone(), *c));
    }
    let mut chosen: Vec<Point> = all.iter().filter(|p| p.0 == "step" && p.2 == 1).cloned().collect();
    let phases: Vec<Point> = all.iter().filter(|p| p.0 == "phase").cloned().collect();
    let want = 30usize.saturating_sub(chosen.len()).min(phases.len());
    for i in 0..want {
        chosen.push(phases[i * phases.len() / want].clone());
    }
    chosen.sort_by_key(|p| all.iter().position(|q| q == p));
    chosen.dedup();
    chosen.truncate(30);
    chosen
}

/// Every file under a final name in `out` is complete; nothing else is there.
fn outputs_whole(out: &Path, disk_size: u64) {
    let Ok(entries) = std::fs::read_dir(out) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let p = e.path();
        match name.as_str() {
            "small.raw" => assert_eq!(std::fs::metadata(&p).unwrap().len(), disk_size, "a short raw under its final name"),
            "small.qcow2" | "small.vmdk" => {
                let fmt = name.rsplit('.').next().unwrap();
                let o = run(Command::new("qemu-img").args(["info", "-f", fmt, "--output", "json"]).arg(&p));
                assert!(o.status.success(), "{name}: {}", show(&o));
                let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
                assert_eq!(info["virtual-size"].as_u64(), Some(disk_size), "{name}");
                if fmt == "qcow2" {
                    let c = run(Command::new("qemu-img").args(["check", "-f", "qcow2"]).arg(&p));
                    assert!(c.status.success(), "{name}: {}", show(&c));
                }
            }
            "small.manifest.json" | "small.seal.json" => {
                serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&p).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            "small.raw.publish.jsonl" => {} // the upload ledger a resumed publish reads
            other => panic!("stray file in the output directory: {other}"),
        }
    }
}

/// The registry reads, and every record's raw output is where it says.
fn registry_consistent(dir: &Path) {
    let db = dir.join("registry.db");
    if !db.exists() {
        return;
    }
    let o = run(imgforge().args(["image", "list", "--json", "--registry"]).arg(&db));
    assert!(o.status.success(), "{}", show(&o));
    let records: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(&o)));
    for r in records.as_array().unwrap() {
        let raw = r["outputs"].as_array().and_then(|a| a.iter().find(|o| o["format"] == "raw"));
        if let Some(raw) = raw
            && r["status"] != "deleted"
        {
            let path = raw["path"].as_str().unwrap();
            assert!(Path::new(path).exists(), "record {} names {path}, which is not there", r["id"]);
        }
    }
}

#[test]
fn sigkill_at_thirty_points_of_a_build_and_publish() {
    if !have_root("sigkill_at_thirty_points_of_a_build_and_publish") || !have_moto("sigkill_at_thirty_points_of_a_build_and_publish") {
        return;
    }
    let up = small_upstream();
    let dir = testdir("killpoints");
    let d = dir.path();
    let moto = start_moto(&d.join("moto.log"));
    let region = "eu-west-3";
    std::fs::write(d.join("motd"), "killed at every step\n").unwrap();
    std::fs::create_dir_all(d.join("overlay/etc")).unwrap();
    std::fs::write(d.join("overlay/etc/overlay.conf"), "x=1\n").unwrap();
    let text = small_head(up, "small-mbr.qcow2")
        + "[disk]\nsize = \"128MiB\"\n\n\
           [[provision]]\ntype = \"shell\"\ninline = [\"echo hi > /etc/hi\"]\n\n\
           [[provision]]\ntype = \"file\"\nsource = \"motd\"\ndestination = \"/etc/motd\"\n\n\
           [[provision]]\ntype = \"overlay\"\nsource = \"overlay\"\n\n\
           [output]\nformats = [\"qcow2\"]\n\n\
           [aws]\nname = \"{name}-{timestamp}\"\nworkers = 4\n";
    recipe(d, &text);
    let disk_size = 128u64 << 20;

    // The reference run: its events are the kill points.
    let o = build_cmd(d, &moto.url(), region).output().unwrap();
    assert!(o.status.success(), "reference build: {}", show(&o));
    let events: Vec<(String, String)> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|e| key(&e))
        .collect();
    let points = choose(&events);
    assert_eq!(points.len(), 30, "{points:?}");
    let names: std::collections::BTreeSet<&str> = points.iter().map(|p| p.1.as_str()).collect();
    for step in
        ["verify", "convert", "grow", "mount", "provision", "seal", "trim", "unmount", "output", "export", "record", "upload", "register"]
    {
        assert!(names.iter().any(|n| n.starts_with(step)), "no kill point in {step}: {names:?}");
    }

    let mut killed_at = Vec::new();
    for (i, point) in points.iter().enumerate() {
        assert!(kill_at(build_cmd(d, &moto.url(), region), point), "point {i} {point:?} never came before the build ended");
        killed_at.push(format!("{}:{}#{}", point.0, point.1, point.2));
        assert_clean(d);
        outputs_whole(&d.join("out"), disk_size);
        registry_consistent(d);
        // The next build succeeds (resuming a killed upload from its ledger).
        let o = build_cmd(d, &moto.url(), region).output().unwrap();
        assert!(o.status.success(), "build after the kill at point {i} {point:?}: {}", show(&o));
        assert_clean(d);
        outputs_whole(&d.join("out"), disk_size);
        registry_consistent(d);
    }
    eprintln!("killed at: {}", killed_at.join(", "));
    // Leftovers of killed publishes (pending snapshots, untagged AMIs) are the janitor's: one
    // `gc --apply` (no grace) removes them; afterwards every snapshot of ours is complete.
    // (Through the tests' proxy: it answers lastLaunchedTime, which moto lacks.)
    let proxy = start_proxy(moto.port, Fault::None);
    let mut gc = imgforge();
    gc.args(["gc", "--grace", "0", "--apply", "--region", region, "--registry"]).arg(d.join("registry.db")).arg("--dir").arg(d.join("out"));
    aws_env(&mut gc, &proxy.url(), region);
    let o = run(&mut gc);
    assert!(o.status.success(), "{}", show(&o));
    let st = state(&moto.url(), region);
    for snap in st["snapshots"].as_array().unwrap() {
        if tags(snap).get("BuiltBy").map(String::as_str) == Some("imgforge") {
            assert_eq!(snap["State"], "completed", "{snap:#}");
        }
    }
}

/// Runs `cmd` (with `--json`) and SIGKILLs it at the `n`th event with `key`; returns whether
/// the point came before the command ended.
fn kill_at(mut cmd: Command, point: &Point) -> bool {
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut seen: std::collections::BTreeMap<(String, String), usize> = Default::default();
    let mut hit = false;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        let Ok(e) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        let k = key(&e);
        let c = seen.entry(k.clone()).or_default();
        *c += 1;
        if k.0 == point.0 && k.1 == point.1 && *c == point.2 {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
            hit = true;
            break;
        }
    }
    let status = child.wait().unwrap();
    hit && !status.success()
}

/// SIGKILL at every call of a standalone `imgforge publish` (each `phase` event is one AWS call
/// done, plus the upload, registration and record steps): each point gets its own AMI name,
/// and running the same publish again finishes it, resuming the snapshot from the upload ledger.
/// At the end each name has exactly one AMI on one complete snapshot, and its record holds it.
#[test]
fn sigkill_at_every_call_of_a_standalone_publish() {
    const TEST: &str = "sigkill_at_every_call_of_a_standalone_publish";
    if !have_root(TEST) || !have_moto(TEST) {
        return;
    }
    let dir = testdir("killpoints-publish");
    let d = dir.path();
    let moto = start_moto(&d.join("moto.log"));
    let region = "eu-west-3";
    recipe(d, &(small_head(small_upstream(), "small-mbr.qcow2") + "[disk]\nsize = \"128MiB\"\n"));
    let db = d.join("registry.db");
    let o =
        run(imgforge().arg("build").arg(d.join("recipe.toml")).arg("-o").arg(d.join("out")).arg("--registry").arg(&db).arg("--no-test"));
    assert!(o.status.success(), "{}", show(&o));
    let manifest = d.join("out/small.manifest.json");
    let publish = |name: &str| {
        let mut c = imgforge();
        c.arg("--json").arg("publish").arg(&manifest).arg("--registry").arg(&db).args(["--name", name, "--workers", "4"]);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        aws_env(&mut c, &moto.url(), region);
        c
    };
    let o = publish("kp-reference").output().unwrap();
    assert!(o.status.success(), "reference publish: {}", show(&o));
    let mut points: Vec<Point> = Vec::new();
    for l in String::from_utf8_lossy(&o.stdout).lines() {
        let Ok(e) = serde_json::from_str::<serde_json::Value>(l) else { continue };
        let (ev, name) = key(&e);
        if (ev == "phase" || ev == "step") && !points.iter().any(|p| p.0 == ev && p.1 == name) {
            points.push((ev, name, 1));
        }
    }
    let names: Vec<&str> = points.iter().map(|p| p.1.as_str()).collect();
    for want in [
        "upload",
        "register",
        "record-publish",
        "publish/ebs.StartSnapshot",
        "publish/ebs.CompleteSnapshot",
        "publish/ec2.RegisterImage",
        "publish/ec2.CreateTags",
    ] {
        assert!(names.contains(&want), "no kill point at {want}: {names:?}");
    }
    let mut names_used = vec!["kp-reference".to_string()];
    for (i, point) in points.iter().enumerate() {
        let name = format!("kp-{i}");
        assert!(kill_at(publish(&name), point), "point {i} {point:?} never came before the publish ended");
        assert_clean(d);
        outputs_whole(&d.join("out"), 128 << 20);
        let o = publish(&name).output().unwrap();
        assert!(o.status.success(), "publish after the kill at {point:?}: {}", show(&o));
        assert!(!d.join("out/small.raw.publish.jsonl").exists(), "a finished publish keeps its ledger ({point:?})");
        names_used.push(name);
    }
    eprintln!("killed at: {names:?}");
    // One AMI per name, on a complete snapshot; the record holds the last one published.
    let st = state(&moto.url(), region);
    for name in &names_used {
        let amis: Vec<&serde_json::Value> = st["images"].as_array().unwrap().iter().filter(|i| i["Name"] == name.as_str()).collect();
        assert_eq!(amis.len(), 1, "{name}: {amis:#?}");
        let snap = amis[0]["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"].as_str().unwrap();
        let s = st["snapshots"].as_array().unwrap().iter().find(|s| s["SnapshotId"] == snap).unwrap();
        assert_eq!(s["State"], "completed", "{name}: {s:#}");
    }
    let list = run(imgforge().args(["image", "list", "--json", "--registry"]).arg(&db));
    let records: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let last = st["images"].as_array().unwrap().iter().find(|i| i["Name"] == names_used.last().unwrap().as_str()).unwrap();
    assert_eq!(records[0]["amis"][region], last["ImageId"], "{records:#}");
    // Snapshots of killed runs that no AMI uses are the janitor's.
    let proxy = start_proxy(moto.port, Fault::None);
    let mut gc = imgforge();
    gc.args(["gc", "--grace", "0", "--apply", "--region", region, "--registry"]).arg(&db).arg("--dir").arg(d.join("out"));
    aws_env(&mut gc, &proxy.url(), region);
    let o = run(&mut gc);
    assert!(o.status.success(), "{}", show(&o));
    for snap in state(&moto.url(), region)["snapshots"].as_array().unwrap() {
        if tags(snap).get("BuiltBy").map(String::as_str) == Some("imgforge") {
            assert_eq!(snap["State"], "completed", "{snap:#}");
        }
    }
}

/// Whether a process runs with `needle` in its command line.
fn running(needle: &str) -> bool {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .any(|p| std::fs::read(p.path().join("cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(needle)))
}

/// SIGKILL to `imgforge bake` while its builds run: at points inside the base's build and the
/// child's (read from their event files), and at bake's own events. Its builds are stopped
/// (SIGTERM when bake dies) and clean up; nothing is attached or mounted, every output and
/// record is whole, and the next bake finishes the plan.
#[test]
fn sigkill_inside_bake() {
    if !have_root("sigkill_inside_bake") {
        return;
    }
    let dir = testdir("killpoints-bake");
    let d = dir.path();
    let up = small_upstream();
    std::fs::write(
        d.join("base.toml"),
        small_head(up, "small-mbr.qcow2").replace("name = \"small\"", "name = \"base\"")
            + "[[provision]]\ntype = \"shell\"\ninline = [\"echo base > /etc/base\"]\n",
    )
    .unwrap();
    std::fs::write(
        d.join("app.toml"),
        "[image]\nname = \"app\"\nversion = \"1.0.0\"\n\n[source]\nparent = { name = \"base\" }\n\n[[provision]]\ntype = \"shell\"\ninline = [\"echo app > /etc/app\"]\n",
    )
    .unwrap();
    let db = d.join("registry.db");
    let bake = || {
        let mut c = imgforge();
        c.current_dir(d).args(["--json", "bake", ".", "--jobs", "2", "--registry"]).arg(&db);
        c.env("IMGFORGE_LEASE_PERIOD", "1").stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    };
    // (image, step): kill bake when that build's event file shows the step starting.
    let inside = [("base", "mount"), ("base", "seal"), ("base", "output"), ("base", "manifest"), ("app", "provision"), ("app", "record")];
    let event_file =
        |image: &str| walk(d).into_iter().find(|p| p.file_name().is_some_and(|n| n.to_string_lossy() == format!("{image}.bake.jsonl")));
    let reset = || {
        // Each point starts from nothing built: both images need their builds.
        for p in walk(d) {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            if n.ends_with(".raw") || n.ends_with(".json") || n.ends_with(".jsonl") || n.ends_with(".log") {
                std::fs::remove_file(&p).unwrap();
            }
        }
        let _ = std::fs::remove_file(&db);
    };
    let after_kill = |what: &str| {
        for _ in 0..600 {
            if !running(&d.display().to_string()) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(!running(&d.display().to_string()), "{what}: a build of the killed bake still runs");
        assert_clean(d);
        for p in walk(d) {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            assert!(!n.starts_with('.'), "{what}: stray file {}", p.display());
            if n.ends_with(".json") {
                serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&p).unwrap())
                    .unwrap_or_else(|e| panic!("{what}: {n}: {e}"));
            }
            if n.ends_with(".raw") {
                assert_eq!(std::fs::metadata(&p).unwrap().len() % 512, 0, "{what}: {n}");
                assert!(p.with_file_name(n.replace(".raw", ".manifest.json")).exists(), "{what}: {n} without its manifest");
            }
        }
        registry_consistent(d);
        let o = bake().output().unwrap();
        assert!(o.status.success(), "{what}: the bake after the kill: {}", show(&o));
        assert_clean(d);
        let plan = run(imgforge().current_dir(d).args(["plan", ".", "--json", "--registry"]).arg(&db));
        let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
        for n in plan["nodes"].as_array().unwrap() {
            assert_eq!(n["status"], "up-to-date", "{what}: {n:#}");
        }
    };
    for (image, step) in inside {
        reset();
        let mut child = bake().spawn().unwrap();
        let mut hit = false;
        for _ in 0..3000 {
            let seen = event_file(image).and_then(|f| std::fs::read_to_string(f).ok()).is_some_and(|t| {
                t.lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .any(|e| e["event"] == "step" && e["step"] == step)
            });
            if seen {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
                hit = true;
                break;
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let status = child.wait().unwrap();
        assert!(hit && !status.success(), "{image}/{step}: the point never came");
        eprintln!(
            "killed bake at {image}/{step}; left: {:?}",
            walk(d).iter().map(|p| p.strip_prefix(d).unwrap().display().to_string()).collect::<Vec<_>>()
        );
        after_kill(&format!("{image}/{step}"));
    }
    // Bake's own events: the first (the plan read), each build's start and the base's end.
    for n in 1..=3 {
        reset();
        assert!(kill_at(bake(), &("step".into(), "bake".into(), n)), "bake event {n} never came");
        after_kill(&format!("bake event {n}"));
    }
}

/// Every file below `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
