//! `imgforge publish` against a real emulator: moto on 127.0.0.1 (one per test), behind a
//! proxy that can inject throttling, 5xx, dropped connections and AccessDenied. Every block is
//! read back with ListSnapshotBlocks/GetSnapshotBlock (boto3) and compared with the raw.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod aws;
mod util;

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use aws::*;
use sha2::Digest;
use util::*;

fn publish(endpoint: &str, region: &str, args: &[&str]) -> Command {
    let mut c = imgforge();
    c.arg("publish").args(args);
    aws_env(&mut c, endpoint, region);
    c
}

/// The `result` event of a `--json` run.
fn result(o: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text.lines().rfind(|l| l.contains("\"event\":\"result\"")).unwrap_or_else(|| panic!("no result event:\n{}", show(o)));
    serde_json::from_str(line).unwrap()
}

#[test]
fn publish_round_trip_cloud_image_and_reuse() {
    if !have_moto("publish_round_trip_cloud_image_and_reuse") {
        return;
    }
    let dir = testdir("publish-rt");
    let raw = dir.path().join("cloud.raw");
    let cp =
        Command::new("cp").arg("--sparse=always").arg(cloud_upstream().join("noble-like-cloudimg-amd64.raw")).arg(&raw).status().unwrap();
    assert!(cp.success());
    let moto = start_moto(&dir.path().join("moto.log"));
    let proxy = start_proxy(moto.port, Fault::None);
    let region = "eu-west-1";
    let args = ["--json", raw.to_str().unwrap(), "--name", "cloud {date} ({arch})", "--tag", "Team=infra", "--workers", "8"];
    let t = Instant::now();
    let o = run(&mut publish(&proxy.url(), region, &args));
    assert!(o.status.success(), "{}", show(&o));
    eprintln!("round trip publish: {:.1} s", t.elapsed().as_secs_f64());
    let r = result(&o);
    let want = nonzero_blocks(&raw);
    assert_eq!(r["blocks"]["sent"].as_u64().unwrap(), want.len() as u64, "{r:#}");
    assert_eq!(r["architecture"], "x86_64");
    assert_eq!(r["boot_mode"], "uefi-preferred", "the image has an ESP");
    let snap = r["snapshot_id"].as_str().unwrap().to_string();
    assert_readback(&moto.url(), region, &snap, &want);

    let st = one_of_each(&moto.url(), region);
    let img = &st["images"][0];
    let name = img["Name"].as_str().unwrap();
    assert!(name.starts_with("cloud ") && name.ends_with(" (x86_64)"), "{name}");
    assert_eq!(img["ImageId"], r["images"][region]);
    let itags = tags(img);
    assert_eq!(itags["BuiltBy"], "imgforge");
    assert_eq!(itags["Team"], "infra");
    assert_eq!(itags["Name"], name);
    assert!(itags["SourceDigest"].starts_with("sha256:"));
    let stags = tags(&st["snapshots"][0]);
    assert_eq!(stags["SourceDigest"], itags["SourceDigest"]);
    assert_eq!(stags["BuiltBy"], "imgforge");
    // moto keeps only name and description from RegisterImage: the attributes are checked on
    // the request itself.
    let reg = proxy.actions("RegisterImage");
    assert_eq!(reg.len(), 1);
    for p in [
        "Architecture=x86_64",
        "VirtualizationType=hvm",
        "BootMode=uefi-preferred",
        "ImdsSupport=v2.0",
        "EnaSupport=true",
        "RootDeviceName=%2Fdev%2Fxvda",
        &format!("BlockDeviceMapping.1.Ebs.SnapshotId={snap}"),
        "BlockDeviceMapping.1.Ebs.VolumeType=gp3",
        "BlockDeviceMapping.1.Ebs.VolumeSize=2",
        "BlockDeviceMapping.1.Ebs.DeleteOnTermination=true",
        "TagSpecification.1.ResourceType=image",
    ] {
        assert!(reg[0].contains(p), "RegisterImage lacks {p}: {}", reg[0]);
    }
    assert!(!reg[0].contains("SriovNetSupport") && !reg[0].contains("TpmSupport"));
    assert!(!String::from_utf8_lossy(&o.stderr).contains("testing-secret-not-real"));
    assert!(!std::fs::read_to_string(raw.with_extension("raw.aws.json")).unwrap().contains("testing-secret"));

    // Same name, same bytes: reused, nothing new.
    let puts = proxy.puts();
    let o = run(&mut publish(&proxy.url(), region, &args));
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(result(&o)["reused"], true);
    assert_eq!(proxy.puts(), puts, "a reuse sends no block");
    one_of_each(&moto.url(), region);
}

#[test]
fn publish_survives_throttling_5xx_and_dropped_connections() {
    if !have_moto("publish_survives_throttling_5xx_and_dropped_connections") {
        return;
    }
    let dir = testdir("publish-faults");
    let raw = image(dir.path(), "flaky.raw", 96, &[(0, 40), (50, 20)]);
    let moto = start_moto(&dir.path().join("moto.log"));
    let proxy = start_proxy(moto.port, Fault::Flaky);
    let region = "us-east-2";
    let o = run(&mut publish(&proxy.url(), region, &["--json", raw.to_str().unwrap(), "--workers", "8"]));
    assert!(o.status.success(), "{}", show(&o));
    let faults = proxy.faults.load(std::sync::atomic::Ordering::Relaxed);
    assert!(faults >= 10, "only {faults} faults injected");
    let r = result(&o);
    let want = nonzero_blocks(&raw);
    assert_eq!(r["blocks"]["sent"].as_u64().unwrap(), want.len() as u64);
    assert_readback(&moto.url(), region, r["snapshot_id"].as_str().unwrap(), &want);
    one_of_each(&moto.url(), region);
}

#[test]
fn publish_over_https_trusts_the_system_store_and_aws_ca_bundle() {
    if !have_moto("publish_over_https_trusts_the_system_store_and_aws_ca_bundle") {
        return;
    }
    let dir = testdir("publish-tls");
    let raw = image(dir.path(), "tls.raw", 32, &[(0, 4), (10, 2)]);
    let (moto, _ca) = start_moto_tls(dir.path());
    let region = "eu-west-3";
    // A certificate nobody vouches for is refused at once, not retried for a minute.
    let t = Instant::now();
    let mut c = publish(&moto.url(), region, &[raw.to_str().unwrap()]);
    c.env_remove("AWS_CA_BUNDLE");
    let o = run(&mut c);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("certificate") && err.contains("AWS_CA_BUNDLE"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(20), "a refused certificate took {:?}", t.elapsed());
    // With the CA in AWS_CA_BUNDLE (as the AWS CLI reads it): the whole publish over TLS.
    let o = run(&mut publish(&moto.url(), region, &["--json", raw.to_str().unwrap()]));
    assert!(o.status.success(), "{}", show(&o));
    let r = result(&o);
    assert_readback(&moto.url(), region, r["snapshot_id"].as_str().unwrap(), &nonzero_blocks(&raw));
    one_of_each(&moto.url(), region);
}

#[test]
fn publish_fails_fast_on_access_denied() {
    if !have_moto("publish_fails_fast_on_access_denied") {
        return;
    }
    let dir = testdir("publish-denied");
    let raw = image(dir.path(), "denied.raw", 32, &[(0, 16)]);
    let moto = start_moto(&dir.path().join("moto.log"));
    let proxy = start_proxy(moto.port, Fault::Deny);
    let t = Instant::now();
    let o = run(&mut publish(&proxy.url(), "eu-central-1", &[raw.to_str().unwrap()]));
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(secs < 15.0, "AccessDenied took {secs:.1} s");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("AccessDenied") && err.contains("Failed to put block") && err.contains("not retryable"), "{err}");
    assert!(err.contains("kept for a resume"), "{err}");
    assert!(proxy.puts() <= 16, "{} PUTs after AccessDenied: workers did not stop", proxy.puts());
}

#[test]
fn publish_resumes_after_kill_9() {
    if !have_moto("publish_resumes_after_kill_9") {
        return;
    }
    let dir = testdir("publish-kill");
    let raw = image(dir.path(), "kill.raw", 80, &[(0, 64)]);
    let ledger = dir.path().join("kill.raw.publish.jsonl");
    let moto = start_moto(&dir.path().join("moto.log"));
    let region = "ap-southeast-2";
    {
        let slow = start_proxy(moto.port, Fault::Slow(40));
        let mut child = publish(&slow.url(), region, &[raw.to_str().unwrap(), "--workers", "2"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let t = Instant::now();
        loop {
            let blocks = std::fs::read_to_string(&ledger).map(|s| s.matches("\"kind\":\"block\"").count()).unwrap_or(0);
            if blocks >= 20 {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(60), "the upload did not start");
            assert!(child.try_wait().unwrap().is_none(), "publish ended before it was killed");
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    let before = std::fs::read_to_string(&ledger).unwrap().matches("\"kind\":\"block\"").count() as u64;
    let proxy = start_proxy(moto.port, Fault::None);
    let o = run(&mut publish(&proxy.url(), region, &["--json", raw.to_str().unwrap()]));
    assert!(o.status.success(), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("resuming snapshot"), "{}", show(&o));
    let r = result(&o);
    let want = nonzero_blocks(&raw);
    assert!(r["blocks"]["resumed"].as_u64().unwrap() >= before.min(20), "{r:#}");
    assert_eq!(r["blocks"]["sent"].as_u64().unwrap() + r["blocks"]["resumed"].as_u64().unwrap(), want.len() as u64, "{r:#}");
    assert_eq!(r["blocks"]["in_snapshot"].as_u64().unwrap(), want.len() as u64);
    assert!(!ledger.exists(), "the ledger is removed after success");
    one_of_each(&moto.url(), region);
    assert_readback(&moto.url(), region, r["snapshot_id"].as_str().unwrap(), &want);
}

#[test]
fn publish_delta_sends_only_changed_blocks() {
    if !have_moto("publish_delta_sends_only_changed_blocks") {
        return;
    }
    let dir = testdir("publish-delta");
    let parent = image(dir.path(), "parent.raw", 64, &[(0, 24), (30, 10)]);
    let child = dir.path().join("child.raw");
    assert!(Command::new("cp").arg("--sparse=always").arg(&parent).arg(&child).status().unwrap().success());
    {
        let f = std::fs::OpenOptions::new().write(true).open(&child).unwrap();
        let mut b = vec![0u8; 3 * MIB as usize];
        fill(42, &mut b);
        f.write_all_at(&b, 5 * MIB + 4096).unwrap(); // 3 MiB changed, unaligned: 7 blocks
        f.write_all_at(&vec![0u8; MIB as usize], 32 * MIB).unwrap(); // data became zeros: 2 blocks
        f.write_all_at(b"new", 50 * MIB).unwrap(); // a hole got data: 1 block
    }
    let pb = nonzero_all(&parent);
    let cb = nonzero_all(&child);
    let changed: Vec<u64> = (0..64 * MIB / BLOCK).filter(|i| pb.get(i) != cb.get(i)).collect();
    assert_eq!(changed.len(), 10);
    let moto = start_moto(&dir.path().join("moto.log"));
    let proxy = start_proxy(moto.port, Fault::None);
    let region = "eu-west-3";
    let o = run(&mut publish(&proxy.url(), region, &["--json", parent.to_str().unwrap()]));
    assert!(o.status.success(), "{}", show(&o));
    let parent_snap = result(&o)["snapshot_id"].as_str().unwrap().to_string();
    let o = run(&mut publish(
        &proxy.url(),
        region,
        &["--json", child.to_str().unwrap(), "--parent-snapshot", &parent_snap, "--parent-image", parent.to_str().unwrap()],
    ));
    assert!(o.status.success(), "{}", show(&o));
    let r = result(&o);
    assert_eq!(r["blocks"]["sent"].as_u64().unwrap(), changed.len() as u64, "{r:#}");
    assert_eq!(r["parent_snapshot"], parent_snap.as_str());
    let starts = proxy
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.method == "POST" && s.path == "/snapshots")
        .map(|s| s.body.clone())
        .collect::<Vec<_>>();
    assert!(starts[1].contains(&format!("\"ParentSnapshotId\":\"{parent_snap}\"")), "{}", starts[1]);
    // moto ignores ParentSnapshotId: the child snapshot holds only the sent blocks. Read it the
    // way EBS serves an incremental snapshot (parent's blocks, overlaid by the child's) and
    // compare with the whole child raw.
    let mut merged: BTreeMap<u64, String> = snapshot_blocks(&moto.url(), region, &parent_snap);
    merged.extend(snapshot_blocks(&moto.url(), region, r["snapshot_id"].as_str().unwrap()));
    let zero = hex::encode(sha2::Sha256::digest(vec![0u8; BLOCK as usize]));
    merged.retain(|_, h| *h != zero);
    assert_eq!(merged, nonzero_blocks(&child));
}

/// Hash of every block, zero or not.
fn nonzero_all(raw: &Path) -> BTreeMap<u64, String> {
    let f = File::open(raw).unwrap();
    let size = f.metadata().unwrap().len();
    let mut buf = vec![0u8; BLOCK as usize];
    (0..size.div_ceil(BLOCK))
        .map(|i| {
            buf.fill(0);
            let len = (size - i * BLOCK).min(BLOCK) as usize;
            f.read_exact_at(&mut buf[..len], i * BLOCK).unwrap();
            (i, hex::encode(sha2::Sha256::digest(&buf)))
        })
        .collect()
}

#[test]
fn publish_dry_run_prints_calls_and_makes_none() {
    let dir = testdir("publish-dry");
    let raw = image(dir.path(), "dry.raw", 48, &[(0, 8), (20, 4)]);
    // A proxy with nothing behind it: any call would show up in its log.
    let proxy = start_proxy(1, Fault::None);
    let args =
        [raw.to_str().unwrap(), "--dry-run", "--copy-to-region", "us-east-1", "--launch-permission", "123456789012", "--boot-mode", "uefi"];
    let o = run(&mut publish(&proxy.url(), "eu-west-1", &[&args[..], &["--tpm-support"]].concat()));
    // --tpm-support is not a flag: exit 2 from clap.
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let o = run(&mut publish(&proxy.url(), "eu-west-1", &args));
    assert!(o.status.success(), "{}", show(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let ops: Vec<&str> = lines.iter().map(|l| l["dry_run"].as_str().unwrap()).collect();
    let puts = ops.iter().filter(|o| **o == "ebs.PutSnapshotBlock").count();
    assert_eq!(puts, nonzero_blocks(&raw).len());
    for op in [
        "ebs.StartSnapshot",
        "ebs.CompleteSnapshot",
        "ec2.RegisterImage",
        "ec2.ModifyImageAttribute",
        "ec2.ModifySnapshotAttribute",
        "ec2.CopyImage",
    ] {
        assert!(ops.contains(&op), "{op} missing: {ops:?}");
    }
    let reg = lines.iter().find(|l| l["dry_run"] == "ec2.RegisterImage").unwrap();
    assert_eq!(reg["params"]["BootMode"], "uefi");
    assert_eq!(reg["params"]["Architecture"], "x86_64");
    let complete = lines.iter().find(|l| l["dry_run"] == "ebs.CompleteSnapshot").unwrap();
    assert_eq!(complete["params"]["ChangedBlocksCount"].as_u64().unwrap() as usize, puts);
    assert!(proxy.seen.lock().unwrap().is_empty(), "dry run made calls");
    assert!(!dir.path().join("dry.raw.publish.jsonl").exists());
}

#[test]
fn publish_takes_the_architecture_from_the_build_manifest() {
    let dir = testdir("publish-arch");
    // No partition table at all: only the manifest can say what the image is.
    let raw = image(dir.path(), "arm.raw", 16, &[(0, 2)]);
    let manifest = |arch: &str| {
        let m = dir.path().join(format!("arm-{arch}.manifest.json"));
        let v = serde_json::json!({
            "name": "arm", "version": "1.0", "architecture": arch,
            "drivers": {"kernels": 1, "ena": false, "nvme": true},
            "outputs": [{"format": "raw", "path": raw.to_str().unwrap(), "size": 16 * MIB, "sha256": ""}],
        });
        std::fs::write(&m, serde_json::to_string(&v).unwrap()).unwrap();
        m
    };
    let proxy = start_proxy(1, Fault::None);
    let m = manifest("arm64");
    let o = run(&mut publish(&proxy.url(), "eu-west-1", &[m.to_str().unwrap(), "--dry-run"]));
    assert!(o.status.success(), "{}", show(&o));
    let reg = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| l["dry_run"] == "ec2.RegisterImage")
        .unwrap();
    assert_eq!(reg["params"]["Architecture"], "arm64");
    // arm64 boots only with UEFI on EC2.
    assert_eq!(reg["params"]["BootMode"], "uefi");
    assert!(!String::from_utf8_lossy(&o.stderr).contains("assuming x86_64"), "{}", show(&o));
    // The build found no ENA driver in the image: said before anything is sent.
    assert!(String::from_utf8_lossy(&o.stderr).contains("no ENA driver"), "{}", show(&o));
    assert!(!String::from_utf8_lossy(&o.stderr).contains("no NVMe driver"), "{}", show(&o));
    // An architecture AWS does not take is refused before any call.
    let m = manifest("i386");
    let o = run(&mut publish(&proxy.url(), "eu-west-1", &[m.to_str().unwrap(), "--dry-run"]));
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("i386"), "{}", show(&o));
    assert!(proxy.seen.lock().unwrap().is_empty(), "dry run made calls");
}

#[test]
fn publish_rejects_bad_names_and_options() {
    let dir = testdir("publish-bad");
    let raw = image(dir.path(), "bad.raw", 8, &[(0, 1)]);
    let r = raw.to_str().unwrap();
    let proxy = start_proxy(1, Fault::None);
    for (args, msg) in [
        (vec![r, "--name", "ab"], "3 to 128"),
        (vec![r, "--name", "{name}:{nope}"], "unknown placeholder"),
        (vec![r, "--name", "x*{name}"], "contains `*`"),
        (vec![r, "--name", "{name}-{version}"], "no version"),
        (vec![r, "--region", "Europe"], "not a region"),
        (vec![r, "--launch-permission", "42"], "12-digit"),
        (vec![r, "--boot-mode", "bios"], "legacy-bios"),
        (vec![r, "--architecture", "arm64", "--boot-mode", "legacy-bios"], "UEFI only"),
        (vec![r, "--kms-key-id", "alias/k"], "needs encrypted"),
        (vec![r, "--volume-size", "0"], "smaller than the image"),
        (vec![r, "--workers", "0"], "workers"),
        (vec![r, "--tag", "aws:x=y"], "reserved"),
        (vec![r, "--parent-snapshot", "snap-XYZ", "--parent-image", r], "not a snapshot id"),
    ] {
        let o = run(&mut publish(&proxy.url(), "eu-west-1", &args));
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", show(&o));
        assert!(String::from_utf8_lossy(&o.stderr).contains(msg), "{args:?}: want `{msg}`: {}", show(&o));
    }
    assert!(proxy.seen.lock().unwrap().is_empty());
    // A recipe's [aws] errors name the line.
    let recipe = dir.path().join("r.toml");
    std::fs::write(&recipe, "[image]\nname = \"x\"\n\n[source]\nurl = \"https://example.invalid/up.img\"\nsha256 = \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"\n\n[aws]\nregion = \"eu-west-1\"\nboot_mode = \"efi\"\n").unwrap();
    let o = run(&mut publish(&proxy.url(), "eu-west-1", &[r, "--recipe", recipe.to_str().unwrap()]));
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("r.toml: line 10"), "{}", show(&o));
}

#[test]
fn build_publish_records_the_ami_in_the_manifest() {
    if !have_root("build_publish_records_the_ami_in_the_manifest") || !have_moto("build_publish_records_the_ami_in_the_manifest") {
        return;
    }
    let up = small_upstream();
    let dir = testdir("publish-build");
    let moto = start_moto(&dir.path().join("moto.log"));
    let region = "sa-east-1";
    make_bucket(&moto.url(), region, "builds");
    let text = small_head(up, "small-mbr.qcow2")
        + "[output]\nupload = \"s3://builds/small\"\n\n[aws]\nname = \"{name}-{version}\"\ntags = { Stage = \"test\" }\nworkers = 4\n";
    let r = recipe(dir.path(), &text);
    let mut c = imgforge();
    let db = dir.path().join("registry.db");
    let props = dir.path().join("build.properties");
    c.arg("build").arg(&r).arg("--output-dir").arg(dir.path().join("out")).arg("--publish").arg("--registry").arg(&db);
    c.arg("--properties").arg(&props);
    aws_env(&mut c, &moto.url(), region);
    let o = run(&mut c);
    assert_clean(dir.path());
    assert!(o.status.success(), "{}", show(&o));
    // The registry record has the AMI too: the seeds' "version → image id" lookup.
    let found = run(imgforge()
        .args(["image", "find", "--name", "small", "--latest", "--output", "ami", "--region", region, "--registry"])
        .arg(&db));
    assert!(found.status.success(), "{}", show(&found));
    let found_ami = String::from_utf8_lossy(&found.stdout).trim().to_string();
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("out/small.manifest.json")).unwrap()).unwrap();
    let aws = &m["aws"];
    assert_eq!(aws["name"], "small-1.0.0");
    assert_eq!(aws["boot_mode"], "legacy-bios", "an MBR image without ESP");
    let ami = aws["images"][region].as_str().unwrap();
    assert_eq!(found_ami, ami);
    // The properties artifact CI passes downstream, with the AMI the publish made.
    let props = std::fs::read_to_string(&props).unwrap();
    assert!(props.contains(&format!("\nAMI_ID_SA_EAST_1={ami}\n")), "{props}");
    assert!(props.contains(&format!("\nRECORD_ID={}\n", m["record"].as_str().unwrap())), "{props}");
    assert!(props.contains("\nIMAGE_NAME=small\nIMAGE_STATUS=candidate\nIMAGE_VERSION=1.0.0\n"), "{props}");
    let st = one_of_each(&moto.url(), region);
    assert_eq!(st["images"][0]["ImageId"], ami);
    let t = tags(&st["images"][0]);
    assert_eq!(t["Version"], "1.0.0");
    assert_eq!(t["Stage"], "test");
    assert_eq!(t["SourceDigest"], format!("sha256:{}", m["outputs"][0]["sha256"].as_str().unwrap()));
    assert!(t["Recipe"].ends_with("recipe.toml"), "{t:?}");
    assert_readback(&moto.url(), region, aws["snapshot_id"].as_str().unwrap(), &nonzero_blocks(&dir.path().join("out/small.raw")));
    // [output] upload, after the publish: the image, its seal report and its manifest with the AMI.
    for file in ["small.raw", "small.seal.json", "small.manifest.json"] {
        let local = std::fs::read(dir.path().join("out").join(file)).unwrap();
        let got = object(&moto.url(), region, "builds", &format!("small/{file}"));
        assert_eq!(got["sha256"], hex::encode(sha2::Sha256::digest(&local)), "{file}");
    }

    // A child built on it by a parent query and published in the same region: a delta over the
    // parent's snapshot, found in the registry, sending no more than the changed blocks plus 1%.
    let child = "[image]\nname = \"child\"\nversion = \"1.1.0\"\n[source]\nparent = { name = \"small\" }\n\n[[provision]]\ntype = \"shell\"\ninline = [\"echo child > /etc/child\"]\n\n[aws]\nname = \"{name}-{version}\"\n";
    std::fs::write(dir.path().join("child.toml"), child).unwrap();
    let mut c = imgforge();
    c.arg("build")
        .arg(dir.path().join("child.toml"))
        .arg("--output-dir")
        .arg(dir.path().join("out"))
        .arg("--publish")
        .arg("--registry")
        .arg(&db);
    aws_env(&mut c, &moto.url(), region);
    let o = run(&mut c);
    assert_clean(dir.path());
    assert!(o.status.success(), "{}", show(&o));
    let cm: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("out/child.manifest.json")).unwrap()).unwrap();
    let caws = &cm["aws"];
    assert_eq!(caws["parent_snapshot"], aws["snapshot_id"], "{caws}");
    let changed = changed_blocks(&dir.path().join("out/small.raw"), &dir.path().join("out/child.raw"));
    let (sent, total) = (caws["blocks"]["sent"].as_u64().unwrap(), caws["blocks"]["total"].as_u64().unwrap());
    eprintln!("child publish: {sent} blocks sent, {changed} changed, {total} in the volume");
    assert!(changed > 0 && sent <= changed + total.div_ceil(100), "sent {sent}, changed {changed}, total {total}");
    // The child snapshot read as EBS serves an incremental one (moto ignores the parent): the
    // parent's blocks overlaid by the child's are the whole child raw.
    let mut merged: BTreeMap<u64, String> = snapshot_blocks(&moto.url(), region, aws["snapshot_id"].as_str().unwrap());
    merged.extend(snapshot_blocks(&moto.url(), region, caws["snapshot_id"].as_str().unwrap()));
    let zero = hex::encode(sha2::Sha256::digest(vec![0u8; BLOCK as usize]));
    merged.retain(|_, h| *h != zero);
    assert_eq!(merged, nonzero_blocks(&dir.path().join("out/child.raw")));
    let child_ami = caws["images"][region].as_str().unwrap();
    let st = state(&moto.url(), region);
    let image = st["images"].as_array().unwrap().iter().find(|i| i["ImageId"] == child_ami).unwrap().clone();
    let t = tags(&image);
    assert_eq!(t["RecordId"], cm["record"].as_str().unwrap());
    assert_eq!(t["LayerKey"], cm["layer_key"].as_str().unwrap());
    assert_eq!(t["Ancestor"], format!("small 1.0.0 ({})", m["record"].as_str().unwrap()));
    let description = image["Description"].as_str().unwrap();
    assert_eq!(
        description,
        format!("name=child-1.1.0, arch=x86_64, ancestor_name=small, ancestor_id={ami}, ancestor_version=1.0.0, version=1.1.0")
    );

    // The parent's raw gone from this host: a child built on it fetches the raw from where the
    // parent's build uploaded it (recorded in its record), verified, into the cache.
    std::fs::remove_file(dir.path().join("out/small.raw")).unwrap();
    std::fs::write(
        dir.path().join("fetched.toml"),
        "[image]\nname = \"fetched\"\nversion = \"1\"\n[source]\nparent = { name = \"small\" }\n",
    )
    .unwrap();
    let cache = dir.path().join("cache");
    let mut c = imgforge();
    c.arg("build")
        .arg(dir.path().join("fetched.toml"))
        .arg("--output-dir")
        .arg(dir.path().join("out"))
        .arg("--registry")
        .arg(&db)
        .arg("--cache-dir")
        .arg(&cache);
    aws_env(&mut c, &moto.url(), region);
    let o = run(&mut c);
    assert_clean(dir.path());
    assert!(o.status.success(), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("fetched s3://builds/small/small.raw"), "{}", show(&o));
    let fm: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("out/fetched.manifest.json")).unwrap()).unwrap();
    assert_eq!(fm["source"]["parent"]["record"], m["record"]);
    let raw_sha = m["outputs"][0]["sha256"].as_str().unwrap();
    assert!(cache.join(format!("parents/sha256-{raw_sha}.raw")).is_file());
}

/// How many 512 KiB blocks differ between two raws of one size.
fn changed_blocks(a: &Path, b: &Path) -> u64 {
    use std::io::Read;
    let (mut fa, mut fb) = (std::fs::File::open(a).unwrap(), std::fs::File::open(b).unwrap());
    assert_eq!(fa.metadata().unwrap().len(), fb.metadata().unwrap().len());
    let (mut ba, mut bb) = (vec![0u8; 512 << 10], vec![0u8; 512 << 10]);
    let mut n = 0;
    loop {
        let ra = fa.read(&mut ba).unwrap();
        if ra == 0 {
            return n;
        }
        fb.read_exact(&mut bb[..ra]).unwrap();
        n += u64::from(ba[..ra] != bb[..ra]);
    }
}

#[test]
fn publish_same_name_other_bytes_needs_force() {
    if !have_moto("publish_same_name_other_bytes_needs_force") {
        return;
    }
    let dir = testdir("publish-force");
    let raw = image(dir.path(), "force.raw", 16, &[(0, 4)]);
    let moto = start_moto(&dir.path().join("moto.log"));
    let region = "ca-central-1";
    let args = ["--json", raw.to_str().unwrap(), "--name", "fixed name"];
    let o = run(&mut publish(&moto.url(), region, &args));
    assert!(o.status.success(), "{}", show(&o));
    let first = result(&o);
    File::options().write(true).open(&raw).unwrap().write_all_at(b"changed", 4096).unwrap();
    let o = run(&mut publish(&moto.url(), region, &args));
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"), "{}", show(&o));
    let mut forced = args.to_vec();
    forced.push("--force");
    let o = run(&mut publish(&moto.url(), region, &forced));
    assert!(o.status.success(), "{}", show(&o));
    let second = result(&o);
    assert_ne!(first["images"][region], second["images"][region]);
    assert_ne!(first["source_digest"], second["source_digest"]);
    let st = one_of_each(&moto.url(), region);
    assert_eq!(st["images"][0]["ImageId"], second["images"][region]);
    assert_eq!(st["snapshots"][0]["SnapshotId"], second["snapshot_id"]);
}

#[test]
fn publish_copies_to_regions_and_shares() {
    if !have_moto("publish_copies_to_regions_and_shares") {
        return;
    }
    let dir = testdir("publish-copy");
    let raw = image(dir.path(), "copy.raw", 16, &[(0, 4)]);
    let moto = start_moto(&dir.path().join("moto.log"));
    let proxy = start_proxy(moto.port, Fault::None);
    let region = "eu-north-1";
    let args = ["--json", raw.to_str().unwrap(), "--copy-to-region", "us-west-2,ap-south-1", "--launch-permission", "111122223333"];
    let o = run(&mut publish(&proxy.url(), region, &args));
    assert!(o.status.success(), "{}", show(&o));
    let r = result(&o);
    let images = r["images"].as_object().unwrap();
    assert_eq!(images.keys().collect::<Vec<_>>(), ["ap-south-1", "eu-north-1", "us-west-2"]);
    for dest in ["us-west-2", "ap-south-1"] {
        let st = state(&moto.url(), dest);
        let imgs = st["images"].as_array().unwrap();
        assert_eq!(imgs.len(), 1, "{dest}: {imgs:?}");
        assert_eq!(imgs[0]["ImageId"], images[dest]);
        assert_eq!(imgs[0]["Name"], r["name"]);
    }
    let copies = proxy.actions("CopyImage");
    assert_eq!(copies.len(), 2);
    assert!(
        copies
            .iter()
            .all(|c| c.contains(&format!("SourceImageId={}", images[region].as_str().unwrap())) && c.contains("SourceRegion=eu-north-1"))
    );
    // Launch permission on the AMI in every region; create-volume permission on the snapshot.
    let shares = proxy.actions("ModifyImageAttribute");
    assert_eq!(shares.len(), 3, "{shares:?}");
    assert!(shares.iter().all(|s| s.contains("111122223333")));
    let snaps = proxy.actions("ModifySnapshotAttribute");
    assert_eq!(snaps.len(), 1);
    assert!(snaps[0].contains("111122223333") && snaps[0].contains(r["snapshot_id"].as_str().unwrap()));
}

#[test]
fn publish_waits_for_a_new_snapshot_to_exist() {
    if !have_moto("publish_waits_for_a_new_snapshot_to_exist") {
        return;
    }
    let dir = testdir("publish-notyet");
    let raw = image(dir.path(), "notyet.raw", 16, &[(0, 4)]);
    let moto = start_moto(&dir.path().join("moto.log"));
    let proxy = start_proxy(moto.port, Fault::NotYet(6));
    let region = "us-west-1";
    let o = run(&mut publish(&proxy.url(), region, &["--json", raw.to_str().unwrap(), "--workers", "2"]));
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(proxy.faults.load(std::sync::atomic::Ordering::Relaxed), 6);
    let r = result(&o);
    assert_readback(&moto.url(), region, r["snapshot_id"].as_str().unwrap(), &nonzero_blocks(&raw));
}

#[test]
fn publish_encrypted_sends_every_block_and_never_uses_a_parent() {
    if !have_moto("publish_encrypted_sends_every_block_and_never_uses_a_parent") {
        return;
    }
    let dir = testdir("publish-enc");
    let raw = image(dir.path(), "enc.raw", 8, &[(0, 1)]);
    let moto = start_moto(&dir.path().join("moto.log"));
    let proxy = start_proxy(moto.port, Fault::None);
    let region = "eu-south-1";
    let o = run(&mut publish(&proxy.url(), region, &["--json", raw.to_str().unwrap(), "--encrypted", "--kms-key-id", "alias/images"]));
    assert!(o.status.success(), "{}", show(&o));
    let r = result(&o);
    // Holes and zero blocks too: an encrypted snapshot's unwritten blocks do not read as zeros.
    assert_eq!(r["blocks"]["sent"].as_u64().unwrap(), 16, "{r:#}");
    let start = proxy.seen.lock().unwrap().iter().find(|s| s.path == "/snapshots").unwrap().body.clone();
    assert!(start.contains("\"Encrypted\":true") && start.contains("\"KmsKeyArn\":\"alias/images\""), "{start}");
    // A parent with encryption: EBS forbids it, so a full upload without ParentSnapshotId.
    let snap = r["snapshot_id"].as_str().unwrap().to_string();
    let child = image(dir.path(), "enc-child.raw", 8, &[(0, 2)]);
    let o = run(&mut publish(
        &proxy.url(),
        region,
        &["--json", child.to_str().unwrap(), "--encrypted", "--parent-snapshot", &snap, "--parent-image", raw.to_str().unwrap()],
    ));
    assert!(o.status.success(), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("full upload"), "{}", show(&o));
    assert_eq!(result(&o)["blocks"]["sent"].as_u64().unwrap(), 16);
    let starts: Vec<String> = proxy.seen.lock().unwrap().iter().filter(|s| s.path == "/snapshots").map(|s| s.body.clone()).collect();
    assert!(!starts[1].contains("ParentSnapshotId"), "{}", starts[1]);
}

#[test]
fn export_uploads_outputs_to_s3_multipart() {
    if !have_moto("export_uploads_outputs_to_s3_multipart") {
        return;
    }
    let dir = testdir("publish-s3");
    let raw = image(dir.path(), "art.raw", 48, &[(0, 20), (30, 10)]);
    let moto = start_moto(&dir.path().join("moto.log"));
    let region = "eu-west-2";
    make_bucket(&moto.url(), region, "artifacts");
    let mut c = imgforge();
    c.arg("export")
        .arg(&raw)
        .args(["--format", "raw,qcow2", "-o"])
        .arg(dir.path().join("out"))
        .args(["--upload", "s3://artifacts/nightly/"]);
    aws_env(&mut c, &moto.url(), region);
    std::fs::create_dir_all(dir.path().join("out")).unwrap();
    let o = run(&mut c);
    assert!(o.status.success(), "{}", show(&o));
    for (file, parts) in [("art.raw", 3), ("art.qcow2", 2)] {
        let local = std::fs::read(dir.path().join("out").join(file)).unwrap();
        let got = object(&moto.url(), region, "artifacts", &format!("nightly/{file}"));
        assert_eq!(got["size"].as_u64().unwrap(), local.len() as u64, "{file}");
        assert_eq!(got["sha256"], hex::encode(sha2::Sha256::digest(&local)), "{file}");
        // A multipart object's SHA-256 is the composite "<checksum of part checksums>-<parts>".
        assert!(got["checksum"].as_str().unwrap().ends_with(&format!("-{parts}")), "{file}: {got}");
    }
    let o = run(imgforge().arg("export").arg(&raw).args(["--format", "raw", "--upload", "gs://x"]));
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
}

/// `promote` on AWS (moto): refused for an untested record; a dry run prints the calls and
/// changes nothing; a promotion copies the AMI where `[aws.promote]` asks, shares it, tags it
/// `Channel=prod` and points `/imgforge/small/prod` at it in every region (read back); the next
/// promotion moves tag and parameter; `rollback` restores the previous AMI id in SSM.
#[test]
fn promote_tags_shares_and_points_ssm_and_rollback_restores_it() {
    const TEST: &str = "promote_tags_shares_and_points_ssm_and_rollback_restores_it";
    if !have_root(TEST) || !have_moto(TEST) {
        return;
    }
    let up = small_upstream();
    let dir = testdir("promote-aws");
    let moto = start_moto(&dir.path().join("moto.log"));
    let (home, away) = ("eu-central-1", "us-west-2");
    let db = dir.path().join("registry.db");
    let text = small_head(up, "small-mbr.qcow2")
        + "[[test]]\ntype = \"checks\"\nfiles = [ { path = \"/usr/sbin/policy-rc.d\", absent = true } ]\n\n[aws]\nname = \"{name}-{version}\"\n\n[aws.promote]\nlaunch_permissions = [\"111122223333\"]\ncopy_to_regions = [\"us-west-2\"]\n";
    let imgforge_aws = |args: &[&str]| {
        let mut c = imgforge();
        c.args(args).arg("--registry").arg(&db);
        aws_env(&mut c, &moto.url(), home);
        run(&mut c)
    };
    let mut amis = Vec::new();
    for (version, extra) in [("1.0.0", None), ("1.0.1", None), ("1.0.2", Some("--no-test"))] {
        let r = dir.path().join(format!("small-{version}.toml"));
        std::fs::write(&r, text.replace("version = \"1.0.0\"", &format!("version = \"{version}\""))).unwrap();
        let mut args = vec!["build", r.to_str().unwrap(), "--output-dir", dir.path().join(version).leak().to_str().unwrap(), "--publish"];
        args.extend(extra);
        let o = imgforge_aws(&args);
        assert!(o.status.success(), "{version}: {}", show(&o));
        let m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(version).join("small.manifest.json")).unwrap()).unwrap();
        amis.push(m["aws"]["images"][home].as_str().unwrap().to_string());
    }
    assert_clean(dir.path());
    let param = "/imgforge/small/prod";
    let at = |region: &str| channel_state(&moto.url(), region, param);

    // Untested: refused before any AWS call.
    let o = imgforge_aws(&["promote", "small@1.0.2", "--channel", "prod"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("never tested"), "{}", show(&o));
    // A dry run: the calls, and nothing changed.
    let o = imgforge_aws(&["promote", "small@1.0.0", "--channel", "prod", "--dry-run"]);
    assert!(o.status.success(), "{}", show(&o));
    let calls: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let kinds: Vec<&str> = calls.iter().map(|c| c["call"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "CopyImage",
            "ModifyImageAttribute",
            "ModifySnapshotAttribute",
            "CreateTags",
            "PutParameter",
            "GetParameter",
            "ModifyImageAttribute",
            "ModifySnapshotAttribute",
            "CreateTags",
            "PutParameter",
            "GetParameter"
        ],
        "{}",
        show(&o)
    );
    assert_eq!(calls[4]["value"], amis[0].as_str());
    assert_eq!(at(home)["parameter"], serde_json::Value::Null);
    assert!(at(away)["images"].as_object().unwrap().is_empty(), "a dry run copied");
    let ch = imgforge_aws(&["channels", "small"]);
    assert!(String::from_utf8_lossy(&ch.stdout).trim().is_empty(), "{}", show(&ch));

    // Promote 1.0.0: copied to us-west-2, shared, tagged, the parameter set in both regions.
    let o = imgforge_aws(&["promote", "small@1.0.0", "--channel", "prod"]);
    assert!(o.status.success(), "{}", show(&o));
    let (h, w) = (at(home), at(away));
    assert_eq!(h["parameter"], amis[0].as_str(), "{h}");
    let copy1 = w["parameter"].as_str().unwrap().to_string();
    assert_eq!(w["images"][&copy1]["name"], "small-1.0.0", "{w}");
    for (s, ami) in [(&h, amis[0].as_str()), (&w, copy1.as_str())] {
        assert_eq!(s["images"][ami]["tags"]["Channel"], "prod", "{s}");
        assert_eq!(s["images"][ami]["launch"], serde_json::json!(["111122223333"]), "{s}");
    }
    // The copy is in the record: `image find` answers for us-west-2 too.
    let f = imgforge_aws(&["image", "find", "--name", "small", "--version", "1.0.0", "--output", "ami", "--region", away]);
    assert_eq!(String::from_utf8_lossy(&f.stdout).trim(), copy1, "{}", show(&f));

    // Promote 1.0.1: tag and parameter move.
    let o = imgforge_aws(&["promote", "small@1.0.1", "--channel", "prod"]);
    assert!(o.status.success(), "{}", show(&o));
    let (h, w) = (at(home), at(away));
    assert_eq!(h["parameter"], amis[1].as_str(), "{h}");
    let copy2 = w["parameter"].as_str().unwrap().to_string();
    assert_ne!(copy2, copy1);
    assert_eq!(h["images"][&amis[1]]["tags"]["Channel"], "prod", "{h}");
    assert_eq!(h["images"][&amis[0]]["tags"].get("Channel"), None, "the tag stays on the AMI that left: {h}");
    assert_eq!(w["images"][&copy1]["tags"].get("Channel"), None, "{w}");
    assert_eq!(h["history"], serde_json::json!([amis[0], amis[1]]));

    // Roll back: 1.0.0's AMI ids are back in SSM, with the tag.
    // The image's name may be left out: only `small` has a `prod` channel here.
    let o = imgforge_aws(&["rollback", "--channel", "prod", "--reason", "1.0.1 breaks the fleet"]);
    assert!(o.status.success(), "{}", show(&o));
    let (h, w) = (at(home), at(away));
    assert_eq!(h["parameter"], amis[0].as_str(), "{h}");
    assert_eq!(w["parameter"], copy1.as_str(), "{w}");
    assert_eq!(h["images"][&amis[0]]["tags"]["Channel"], "prod", "{h}");
    assert_eq!(h["images"][&amis[1]]["tags"].get("Channel"), None, "{h}");
    assert_eq!(w["images"].as_object().unwrap().len(), 2, "no third copy: {w}");
    let ch = imgforge_aws(&["channels", "small", "--history"]);
    let text = String::from_utf8_lossy(&ch.stdout);
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.lines().last().unwrap().contains("[rollback]: 1.0.1 breaks the fleet"), "{text}");
}
