//! The janitor against moto (through the test proxy, which answers the EC2 calls moto lacks):
//! a plan that changes nothing and says why for every record, guards that hold at apply, and
//! `--apply` that deregisters the AMIs, deletes their snapshots and local outputs, and marks the
//! records deleted — nothing else.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod aws;
mod util;

use std::collections::BTreeMap;
use std::path::Path;

use aws::*;
use sha2::Digest;
use util::*;

/// Every file under `dir` with its SHA-256 (but moto's own log).
fn files(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n != "moto.log") {
                out.insert(p.display().to_string(), hex::encode(sha2::Sha256::digest(std::fs::read(&p).unwrap())));
            }
        }
    }
    out
}

/// 8 versions; a launch template on 3, a child built on 2, 7 on `prod`: `keep_last = 2` plans
/// to retire exactly 1, 4 and 5, each with its reason, and keeps 2 (child), 3 (launch
/// template), 6, 7, 8. The plan changes nothing; an instance of 5 started between plan and apply
/// keeps 5; `--apply` deregisters 1 and 4, deletes their snapshots and raws, marks them deleted.
#[test]
fn gc_retires_by_rule_and_never_an_image_in_use() {
    const TEST: &str = "gc_retires_by_rule_and_never_an_image_in_use";
    if !have_root(TEST) || !have_moto(TEST) {
        return;
    }
    let up = small_upstream();
    let dir = testdir("gc");
    let d = dir.path();
    let moto = start_moto(&d.join("moto.log"));
    let proxy = start_proxy(moto.port, Fault::None);
    let endpoint = proxy.url();
    let region = "eu-west-3";
    let db = d.join("registry.db");
    let cli = |args: &[&str]| {
        let mut c = imgforge();
        c.args(args).arg("--registry").arg(&db);
        aws_env(&mut c, &endpoint, region);
        run(&mut c)
    };
    make_bucket(&moto.url(), region, "builds");
    let text = small_head(up, "small-mbr.qcow2")
        + "[[test]]\ntype = \"checks\"\nfiles = [ { path = \"/usr/sbin/policy-rc.d\", absent = true } ]\n\n[output]\nupload = \"s3://builds/VERSION\"\n\n[aws]\nname = \"{name}-{version}\"\n";
    let (mut amis, mut snaps) = (vec![String::new()], vec![String::new()]);
    for i in 1..=8 {
        let r = d.join(format!("small-{i}.toml"));
        std::fs::write(&r, text.replace("version = \"1.0.0\"", &format!("version = \"1.0.{i}\"")).replace("VERSION", &format!("1.0.{i}")))
            .unwrap();
        let out = d.join(format!("out/{i}"));
        let o = cli(&["build", r.to_str().unwrap(), "-o", out.to_str().unwrap(), "--publish"]);
        assert!(o.status.success(), "1.0.{i}: {}", show(&o));
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("small.manifest.json")).unwrap()).unwrap();
        amis.push(m["aws"]["images"][region].as_str().unwrap().to_string());
        snaps.push(m["aws"]["snapshot_id"].as_str().unwrap().to_string());
    }
    std::fs::write(
        d.join("child.toml"),
        "[image]\nname = \"child\"\nversion = \"1\"\n[source]\nparent = { name = \"small\", version = \"1.0.2\" }\n",
    )
    .unwrap();
    let o = cli(&["build", d.join("child.toml").to_str().unwrap(), "-o", d.join("out/child").to_str().unwrap()]);
    assert!(o.status.success(), "{}", show(&o));
    let lt = make_launch_template(&endpoint, region, "web", &amis[3]);
    // An upload that a killed build started and never finished, under a record's prefix.
    start_upload(&endpoint, region, "builds", "1.0.3/small.raw");
    let o = cli(&["promote", "small@1.0.7", "--channel", "prod"]);
    assert!(o.status.success(), "{}", show(&o));
    assert_clean(d);

    // The plan: a decision and its reasons for every record; nothing changes.
    let before = (format!("{}{:?}", state(&endpoint, region), bucket_state(&endpoint, region, "builds")), files(d));
    let gc = ["gc", "--name", "small", "--keep-last", "2", "--keep-days", "0", "--grace", "0"];
    let o = cli(&[&gc[..], &["--json"]].concat());
    assert!(o.status.success(), "{}", show(&o));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let plan_json = o.stdout.clone();
    let decisions = plan["decisions"].as_array().unwrap();
    let verdict = |v: &str| {
        let x = decisions.iter().find(|x| x["version"] == v).unwrap();
        (
            x["action"].as_str().unwrap().to_string(),
            x["reasons"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect::<Vec<_>>().join("; "),
        )
    };
    let retired: Vec<&str> = decisions.iter().filter(|x| x["action"] == "retire").map(|x| x["version"].as_str().unwrap()).collect();
    assert_eq!(retired, ["1.0.5", "1.0.4", "1.0.1"], "{plan:#}");
    assert_eq!(verdict("1.0.8").1, "one of the 2 newest (keep_last = 2)");
    assert_eq!(verdict("1.0.6").1, "one of the 2 newest (keep_last = 2)");
    assert_eq!(verdict("1.0.7").1, format!("{} in {region} is used by SSM parameter /imgforge/small/prod", amis[7]));
    assert_eq!(verdict("1.0.3").1, format!("{} in {region} is used by launch template web ({lt}) version 1 ($Default)", amis[3]));
    assert!(verdict("1.0.2").1.starts_with("parent of child 1 ("), "{}", verdict("1.0.2").1);
    assert_eq!(verdict("1.0.1").1, "older than the 2 newest kept (keep_last = 2)");
    assert_eq!(plan["frees"]["amis"], 3);
    assert_eq!(plan["frees"]["snapshots"], 3);
    let text = cli(&gc);
    let shown = String::from_utf8_lossy(&text.stdout);
    assert!(shown.contains("RETIRE small 1.0.5 (") && shown.contains(&format!("[{} ({region})]", amis[5])), "{shown}");
    assert!(shown.contains("retire 3 of 8: frees 3 AMIs, 3 snapshots"), "{shown}");
    assert!(shown.contains("LEFTOVER upload s3://builds/1.0.3/small.raw"), "{shown}");
    assert!(shown.contains("; 1 leftovers"), "{shown}");
    let after = (format!("{}{:?}", state(&endpoint, region), bucket_state(&endpoint, region, "builds")), files(d));
    assert!(after.0 == before.0, "the plan changed something on AWS");
    let changed: Vec<&String> = after.1.iter().filter(|(k, v)| before.1.get(*k) != Some(v)).map(|(k, _)| k).collect();
    assert!(changed.is_empty() && after.1.len() == before.1.len(), "the plan changed local files: {changed:?}");
    assert!(proxy.actions("DescribeImageAttribute").iter().any(|b| b.contains("Attribute=lastLaunchedTime")));

    // The plan saved for review; a guard appears before it is applied: an instance of 1.0.5.
    let saved = d.join("plan.json");
    std::fs::write(&saved, &plan_json).unwrap();
    let instance = run_instance(&endpoint, region, &amis[5]);
    let o = cli(&[&gc[..], &["--apply", "--json", "--plan-file", saved.to_str().unwrap()]].concat());
    assert!(o.status.success(), "{}", show(&o));
    let done: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let outcome = |v: &str| {
        done["outcomes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["image"] == format!("small {v}"))
            .unwrap_or_else(|| panic!("{v}: {done:#}"))
            .clone()
    };
    assert_eq!(outcome("1.0.5")["result"], "kept", "{done:#}");
    assert!(outcome("1.0.5")["details"][0].as_str().unwrap().contains(&format!("used by instance {instance} (running)")), "{done:#}");
    for v in ["1.0.4", "1.0.1"] {
        assert_eq!(outcome(v)["result"], "retired", "{done:#}");
    }
    let after = state(&endpoint, region);
    let ids = |key: &str, id: &str| -> Vec<String> {
        after[key].as_array().unwrap().iter().map(|x| x[id].as_str().unwrap().to_string()).collect()
    };
    let mut want_amis: Vec<String> = [2, 3, 5, 6, 7, 8].iter().map(|&i| amis[i].clone()).collect();
    let mut got_amis = ids("images", "ImageId");
    want_amis.sort();
    got_amis.sort();
    assert_eq!(got_amis, want_amis);
    let got_snaps = ids("snapshots", "SnapshotId");
    for (i, snap) in snaps.iter().enumerate().skip(1) {
        assert_eq!(got_snaps.contains(snap), ![1, 4].contains(&i), "snapshot of 1.0.{i}: {got_snaps:?}");
        assert_eq!(d.join(format!("out/{i}/small.raw")).exists(), ![1, 4].contains(&i), "raw of 1.0.{i}");
    }
    // Their uploaded copies went with them; the unfinished upload was aborted.
    let (keys, uploads) = bucket_state(&endpoint, region, "builds");
    for i in 1..=8 {
        assert_eq!(keys.contains(&format!("1.0.{i}/small.raw")), ![1, 4].contains(&i), "upload of 1.0.{i}: {keys:?}");
    }
    assert!(uploads.is_empty(), "{uploads:?}");
    let c = rusqlite::Connection::open(&db).unwrap();
    let deleted: Vec<String> = c
        .prepare("SELECT version FROM records WHERE status = 'deleted' ORDER BY version")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(deleted, ["1.0.1", "1.0.4"]);

    // Once the instance is gone, a later run retires 1.0.5, here only as far as DisableImage.
    terminate_instance(&endpoint, region, &instance);
    let o = cli(&[&gc[..], &["--apply", "--stage", "disable"]].concat());
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(*proxy.disabled.lock().unwrap(), [amis[5].clone()], "{}", show(&o));
    assert!(d.join("out/5/small.raw").exists());

    // Auto-scaling: a group on a launch template version that is neither $Default nor $Latest
    // keeps its AMI, and so does a launch configuration.
    make_fleet(&endpoint, region, &amis[6], &amis[7], &amis[8]);
    let o = cli(&["gc", "--name", "small", "--keep-last", "0", "--keep-days", "0", "--json"]);
    assert!(o.status.success(), "{}", show(&o));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let reasons = |v: &str| plan["decisions"].as_array().unwrap().iter().find(|x| x["version"] == v).unwrap()["reasons"].to_string();
    assert!(reasons("1.0.6").contains("used by auto-scaling group web-asg (launch template "), "{plan:#}");
    assert!(reasons("1.0.6").contains(" version 1)"), "{plan:#}");
    assert!(reasons("1.0.8").contains("used by launch configuration old-lc"), "{plan:#}");
    assert!(reasons("1.0.7").contains("launch template fleet"), "{plan:#}");
    assert_clean(d);
}

/// A publish killed with SIGKILL mid-upload leaves a pending snapshot that no AMI names: the
/// plan lists it once the grace period is over (not before), `--apply` deletes it, and a second
/// run finds nothing. An AMI imgforge registered that no record holds is listed, and retired
/// only with `--include-unrecorded`.
#[test]
fn gc_removes_the_snapshot_of_a_killed_publish() {
    if !have_moto("gc_removes_the_snapshot_of_a_killed_publish") {
        return;
    }
    use std::os::unix::fs::FileExt;
    let dir = testdir("gc-killed");
    let d = dir.path();
    let raw = d.join("killed.raw");
    let f = std::fs::File::create(&raw).unwrap();
    f.set_len(64 << 20).unwrap();
    let mut data = vec![0u8; 48 << 20];
    for (i, b) in data.iter_mut().enumerate() {
        *b = (i.wrapping_mul(2_654_435_761) >> 13) as u8;
    }
    f.write_all_at(&data, 0).unwrap();
    let moto = start_moto(&d.join("moto.log"));
    let region = "ca-central-1";
    let ledger = d.join("killed.raw.publish.jsonl");
    {
        let slow = start_proxy(moto.port, Fault::Slow(40));
        let mut c = imgforge();
        c.args(["publish", raw.to_str().unwrap(), "--workers", "2"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        aws_env(&mut c, &slow.url(), region);
        let mut child = c.spawn().unwrap();
        let t = std::time::Instant::now();
        while std::fs::read_to_string(&ledger).map(|s| s.matches("\"kind\":\"block\"").count()).unwrap_or(0) < 10 {
            assert!(t.elapsed() < std::time::Duration::from_secs(60), "the upload did not start");
            assert!(child.try_wait().unwrap().is_none(), "publish ended before it was killed");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    let db = d.join("registry.db");
    let proxy = start_proxy(moto.port, Fault::None);
    let gc = |args: &[&str]| {
        let mut c = imgforge();
        c.arg("gc").args(args).arg("--registry").arg(&db);
        aws_env(&mut c, &proxy.url(), region);
        let o = run(&mut c);
        assert!(o.status.success(), "{}", show(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let snapshots = || {
        state(&moto.url(), region)["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["SnapshotId"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let left = snapshots();
    assert_eq!(left.len(), 1, "the killed publish left no snapshot");
    // Within the grace period (a publish may be running): not touched.
    assert_eq!(gc(&["--json"])["leftovers"], serde_json::json!([]));
    let plan = gc(&["--json", "--grace", "0"]);
    assert_eq!(plan["leftovers"][0]["id"], left[0].as_str(), "{plan:#}");
    assert_eq!(plan["leftovers"][0]["region"], region);
    assert_eq!(snapshots(), left, "the plan deleted it");
    let done = gc(&["--json", "--grace", "0", "--apply"]);
    assert!(done["leftovers"][0].as_str().unwrap().starts_with(&format!("deleted leftover snapshot {}", left[0])), "{done:#}");
    assert!(snapshots().is_empty());
    assert_eq!(gc(&["--json", "--grace", "0"])["leftovers"], serde_json::json!([]));

    // An AMI imgforge registered that no record holds (a publish that died before recording, or
    // another registry's): listed, left alone unless --include-unrecorded.
    let ami = register_tagged_image(&moto.url(), region, "orphan-1.0.0");
    let plan = gc(&["--json", "--grace", "0"]);
    assert_eq!((plan["leftovers"][0]["kind"].as_str(), plan["leftovers"][0]["id"].as_str()), (Some("ami"), Some(ami.as_str())), "{plan:#}");
    let done = gc(&["--json", "--grace", "0", "--apply"]);
    assert!(done["leftovers"][0].as_str().unwrap().starts_with(&format!("left unrecorded {ami}")), "{done:#}");
    let images = || state(&moto.url(), region)["images"].as_array().unwrap().len();
    assert_eq!(images(), 1);
    let done = gc(&["--json", "--grace", "0", "--apply", "--include-unrecorded"]);
    assert!(done["leftovers"][0].as_str().unwrap().starts_with(&format!("deregistered {ami}")), "{done:#}");
    assert_eq!(images(), 0);
    // The snapshot the AMI names went with it (moto registers on a snapshot of its own making,
    // so the one made here for it is not that one).
    let named = done["leftovers"][1].as_str().unwrap().strip_prefix("deleted snapshot ").unwrap().to_string();
    assert!(!snapshots().contains(&named), "{done:#}");
}

/// A publish killed after RegisterImage answered but before its AMI was tagged (an endpoint
/// that dropped the TagSpecifications): the AMI carries no imgforge tag and no record holds it,
/// but the upload ledger names it. `gc --dir` lists it as ours, `--apply` leaves it,
/// `--include-unrecorded` deregisters it and removes the ledger.
#[test]
fn gc_finds_an_ami_registered_but_never_tagged() {
    if !have_moto("gc_finds_an_ami_registered_but_never_tagged") {
        return;
    }
    let dir = testdir("gc-untagged");
    let d = dir.path();
    let raw = d.join("untagged.raw");
    std::fs::write(&raw, vec![7u8; 4 << 20]).unwrap();
    let moto = start_moto(&d.join("moto.log"));
    let region = "eu-north-1";
    let ledger = d.join("untagged.raw.publish.jsonl");
    {
        let untagged = start_proxy(moto.port, Fault::Untagged);
        let mut c = imgforge();
        c.args(["publish", raw.to_str().unwrap()]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        aws_env(&mut c, &untagged.url(), region);
        let mut child = c.spawn().unwrap();
        let t = std::time::Instant::now();
        while !std::fs::read_to_string(&ledger).is_ok_and(|s| s.contains("\"kind\":\"image\"")) {
            assert!(t.elapsed() < std::time::Duration::from_secs(60), "the publish registered no AMI");
            assert!(child.try_wait().unwrap().is_none(), "publish ended before it was killed");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Killed while CreateTags hangs.
        while !untagged.actions("CreateTags").iter().any(|b| b.contains("ResourceId.1=ami-")) {
            assert!(t.elapsed() < std::time::Duration::from_secs(60), "the publish never tried to tag its AMI");
            assert!(child.try_wait().unwrap().is_none(), "publish ended before it was killed");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let images = state(&moto.url(), region)["images"].as_array().unwrap().clone();
    assert_eq!(images.len(), 1);
    let ami = images[0]["ImageId"].as_str().unwrap().to_string();
    assert!(tags(&images[0]).is_empty(), "the AMI was tagged: {:?}", images[0]);

    let db = d.join("registry.db");
    let proxy = start_proxy(moto.port, Fault::None);
    let gc = |args: &[&str]| {
        let mut c = imgforge();
        c.arg("gc").args(args).arg("--registry").arg(&db).args(["--grace", "0", "--json"]);
        aws_env(&mut c, &proxy.url(), region);
        let o = run(&mut c);
        assert!(o.status.success(), "{}", show(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let amis =
        |plan: &serde_json::Value| plan["leftovers"].as_array().unwrap().iter().filter(|l| l["kind"] == "ami").cloned().collect::<Vec<_>>();
    // Without the ledger's directory nothing says the untagged AMI is ours: not a candidate.
    assert_eq!(amis(&gc(&[])), Vec::<serde_json::Value>::new());
    let dir_arg = d.to_str().unwrap();
    let plan = gc(&["--dir", dir_arg]);
    let found = amis(&plan);
    assert_eq!(found.len(), 1, "{plan:#}");
    assert_eq!(found[0]["id"], ami.as_str());
    assert!(found[0]["why"].as_str().unwrap().contains("never tagged"), "{plan:#}");
    assert_eq!(found[0]["ledger"], ledger.to_str().unwrap());
    let done = gc(&["--dir", dir_arg, "--apply"]);
    let said: Vec<&str> = done["leftovers"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(said.iter().any(|s| s.starts_with(&format!("left unrecorded {ami}"))), "{done:#}");
    assert_eq!(state(&moto.url(), region)["images"].as_array().unwrap().len(), 1);
    let done = gc(&["--dir", dir_arg, "--apply", "--include-unrecorded"]);
    let said: Vec<&str> = done["leftovers"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(said.iter().any(|s| s.starts_with(&format!("deregistered {ami}"))), "{done:#}");
    assert!(state(&moto.url(), region)["images"].as_array().unwrap().is_empty());
    assert!(!ledger.exists(), "the ledger of the retired AMI stayed: {done:#}");
    assert_eq!(gc(&["--dir", dir_arg])["leftovers"], serde_json::json!([]));
}

/// `--cache-max`: the least recently used upstream goes first; a parent raw a live child was
/// built on stays however old; the working files of dead builds go after the grace period,
/// unless a process has them open; nothing changes without `--apply`. No AWS here.
#[test]
fn gc_bounds_the_cache_and_keeps_a_delta_parent() {
    if !have_root("gc_bounds_the_cache_and_keeps_a_delta_parent") {
        return;
    }
    let up = small_upstream();
    let dir = testdir("gc-cache");
    let d = dir.path();
    let db = d.join("registry.db");
    let cli = |args: &[&str]| {
        let mut c = imgforge();
        c.args(args)
            .arg("--registry")
            .arg(&db)
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_EC2_METADATA_DISABLED", "true");
        run(&mut c)
    };
    let r = recipe(d, &small_head(up, "small-mbr.qcow2"));
    let o = cli(&["build", r.to_str().unwrap(), "-o", d.join("out").to_str().unwrap()]);
    assert!(o.status.success(), "{}", show(&o));
    std::fs::write(d.join("child.toml"), "[image]\nname = \"child\"\nversion = \"1\"\n[source]\nparent = { name = \"small\" }\n").unwrap();
    let o = cli(&["build", d.join("child.toml").to_str().unwrap(), "-o", d.join("out").to_str().unwrap()]);
    assert!(o.status.success(), "{}", show(&o));
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("out/small.manifest.json")).unwrap()).unwrap();
    let parent_sha = m["outputs"][0]["sha256"].as_str().unwrap();

    // A cache of 12 MiB: the delta parent used longest ago, then two upstreams.
    let cache = d.join("cache");
    std::fs::create_dir_all(cache.join("parents")).unwrap();
    let entries = [
        (cache.join(format!("parents/sha256-{parent_sha}.raw")), "2026-01-01"),
        (cache.join(format!("sha256-{}", "a".repeat(64))), "2026-02-01"),
        (cache.join(format!("sha256-{}", "b".repeat(64))), "2026-03-01"),
    ];
    for (p, used) in &entries {
        std::fs::write(p, vec![7u8; 4 << 20]).unwrap();
        let t = run(std::process::Command::new("touch").args(["-a", "-d", used]).arg(p));
        assert!(t.status.success(), "{}", show(&t));
    }
    // Working files of dead builds: an old working disk beside the outputs (a leftover), an old
    // partial download another process still has open (kept), a fresh manifest (kept: within
    // the grace period).
    let work = d.join("out/.imgforge-work-Ab12Cd");
    let held = cache.join(".download-Xy34Zw");
    let fresh = d.join("out/.manifest-Ef56Gh");
    for (p, when) in [(&work, Some("2026-01-01")), (&held, Some("2026-01-01")), (&fresh, None)] {
        std::fs::write(p, b"partial").unwrap();
        if let Some(w) = when {
            assert!(run(std::process::Command::new("touch").args(["-m", "-d", w]).arg(p)).status.success());
        }
    }
    let mut holder = std::process::Command::new("sh").arg("-c").arg("exec 3<\"$0\"; sleep 60").arg(&held).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let gc = ["gc", "--cache-max", "0.0087890625", "--cache-dir", cache.to_str().unwrap()]; // 9 MiB
    let o = cli(&[&gc[..], &["--json"]].concat());
    assert!(o.status.success(), "{}", show(&o));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let evicted: Vec<&str> = plan["cache_evictions"].as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(evicted, [entries[1].0.to_str().unwrap()], "{plan:#}");
    let locals: Vec<&str> = plan["local_leftovers"].as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(locals, [work.to_str().unwrap()], "{plan:#}");
    assert!(entries.iter().all(|(p, _)| p.exists()), "the plan evicted something");
    let o = cli(&[&gc[..], &["--apply"]].concat());
    assert!(o.status.success(), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("evicted upstream"), "{}", show(&o));
    assert_eq!(entries.iter().map(|(p, _)| p.exists()).collect::<Vec<_>>(), [true, false, true]);
    assert_eq!([work.exists(), held.exists(), fresh.exists()], [false, true, true]);
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_clean(d);
}
