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

fn key(e: &serde_json::Value) -> (String, String) {
    let event = e["event"].as_str().unwrap_or("").to_string();
    let name = e["step"].as_str().or_else(|| e["name"].as_str()).unwrap_or("").to_string();
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
        let mut child = build_cmd(d, &moto.url(), region).spawn().unwrap();
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
        assert!(hit, "point {i} {point:?} never came");
        killed_at.push(format!("{}:{}#{}", point.0, point.1, point.2));
        assert!(!status.success(), "point {i} {point:?}: the build finished before the kill");
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
