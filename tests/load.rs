//! Load on this 2-core host (issue 19): four builds at once sharing one download cache and one
//! registry, and a 16-way publish through a proxy that fails a fifth of the block uploads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod aws;
mod util;

use aws::*;
use util::*;

#[test]
fn four_builds_at_once_share_one_cache_and_one_registry() {
    if !have_root("four_builds_at_once_share_one_cache_and_one_registry") {
        return;
    }
    let up = small_upstream();
    let dir = testdir("load-four");
    let served = dir.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    for f in ["small-mbr.qcow2", "SHA256SUMS", "SHA256SUMS.gpg"] {
        std::fs::copy(up.join(f), served.join(f)).unwrap();
    }
    let server = HttpServer::serve(&served);
    let base = format!("http://127.0.0.1:{}", server.port);
    let cache = dir.path().join("cache");
    let registry = dir.path().join("registry.db");
    let started = std::time::Instant::now();
    let children: Vec<_> = (1..=4)
        .map(|n| {
            let d = dir.path().join(format!("b{n}"));
            std::fs::create_dir_all(&d).unwrap();
            let text = format!(
                "[image]\nname = \"load-{n}\"\nversion = \"1.0.{n}\"\n\n[source]\nurl = \"{base}/small-mbr.qcow2\"\nchecksums = \"{base}/SHA256SUMS\"\nsignature = \"{base}/SHA256SUMS.gpg\"\nsigning_key = \"{}/keys/vendor.asc\"\n\n[[provision]]\ntype = \"shell\"\ninline = [\"echo {n} > /etc/which\", \"sleep 1\"]\n",
                up.display()
            );
            let r = recipe(&d, &text);
            imgforge()
                .arg("build")
                .arg(&r)
                .arg("-o")
                .arg(d.join("out"))
                .arg("--cache-dir")
                .arg(&cache)
                .arg("--registry")
                .arg(&registry)
                .arg("--no-test")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, c) in children.into_iter().enumerate() {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "build {}: {}", i + 1, show(&o));
        let m = RoMount::open(&dir.path().join(format!("b{}/out/load-{}.raw", i + 1, i + 1)), 1);
        assert_eq!(m.read("/etc/which"), format!("{}\n", i + 1));
    }
    eprintln!("4 builds at once: {:?}", started.elapsed());
    assert_clean(dir.path());
    // One cached copy of the upstream, nothing half-written beside it.
    let cached: Vec<String> = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    // Four records, one per image, in the one registry.
    let o = run(imgforge().args(["image", "list", "--json", "--registry"]).arg(&registry));
    assert!(o.status.success(), "{}", show(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    let mut names: Vec<String> = (1..=4).filter(|n| text.contains(&format!("\"load-{n}\""))).map(|n| format!("load-{n}")).collect();
    names.dedup();
    assert_eq!(names.len(), 4, "{text}");
}

#[test]
fn sixteen_way_publish_through_twenty_percent_faults() {
    if !have_moto("sixteen_way_publish_through_twenty_percent_faults") {
        return;
    }
    let dir = testdir("load-publish");
    let raw = image(dir.path(), "load.raw", 160, &[(0, 48), (60, 40), (120, 20)]);
    let moto = start_moto(&dir.path().join("moto.log"));
    let proxy = start_proxy(moto.port, Fault::Flaky);
    let region = "eu-north-1";
    let mut cmd = imgforge();
    cmd.args(["publish", "--json", raw.to_str().unwrap(), "--workers", "16"]);
    aws_env(&mut cmd, &proxy.url(), region);
    let o = run(&mut cmd);
    assert!(o.status.success(), "{}", show(&o));
    let faults = proxy.faults.load(std::sync::atomic::Ordering::Relaxed);
    let puts = proxy.puts();
    eprintln!("16-way publish: {faults} faults injected in {puts} block uploads");
    assert!(faults * 100 >= (puts as u64) * 10, "only {faults} faults in {puts} block uploads");
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out.lines().rfind(|l| l.contains("\"event\":\"result\"")).unwrap();
    let r: serde_json::Value = serde_json::from_str(line).unwrap();
    let want = nonzero_blocks(&raw);
    assert_eq!(r["blocks"]["sent"].as_u64().unwrap(), want.len() as u64);
    // CompleteSnapshot carried the linear SHA-256 checksum of every block and EBS (moto)
    // accepted it; the blocks read back are the raw's.
    let paths: Vec<String> =
        proxy.seen.lock().unwrap().iter().filter(|s| s.method != "PUT").map(|s| format!("{} {}", s.method, s.path)).collect();
    let completes = paths.iter().filter(|p| p.starts_with("POST /snapshots/completion/")).count();
    assert_eq!(completes, 1, "CompleteSnapshot calls in {paths:?}");
    assert_readback(&moto.url(), region, r["snapshot_id"].as_str().unwrap(), &want);
    // Retries never made a second snapshot or image.
    one_of_each(&moto.url(), region);
}
