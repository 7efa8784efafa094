//! Many images from one repository on the real binary: a base recipe and an app recipe over a
//! 3-entry matrix make a 2-level plan of 4 images; `bake --jobs 2` builds them, a second bake
//! builds nothing, a change to the base rebuilds all 4, and a failed base leaves its children
//! unstarted. GitHub matrices, JUnit and the properties artifact are read back. Two builders
//! of one layer sharing a PostgreSQL registry and an S3 store: one builds, the other reuses its
//! record; the builder killed, the other takes its lease over (small upstream, as root).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod aws;
#[path = "../src/registry/pgserver.rs"]
mod pgserver;
mod util;

use std::path::Path;
use std::process::Output;

use aws::*;
use util::*;

fn repo_with_recipes(dir: &Path) {
    let up = small_upstream();
    std::fs::write(
        dir.join("base.toml"),
        small_head(up, "small-mbr.qcow2").replace("name = \"small\"", "name = \"base\"")
            + "[[provision]]\ntype = \"shell\"\ninline = [\"echo base-1 > /etc/base\"]\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("apps")).unwrap();
    std::fs::write(
        dir.join("apps/app.toml"),
        "[vars]\nnode = \"web\"\n\n[image]\nname = \"app-${node}\"\nversion = \"2.0.0\"\nlabels = { role = \"${node}\" }\n\n[source]\nparent = { name = \"base\" }\n\n[[provision]]\ntype = \"shell\"\ninline = [\"echo ${node} > /etc/node\"]\n\n[matrix]\nnode = [\"web\", \"db\", \"cache\"]\n",
    )
    .unwrap();
    // Not a recipe: no [image] table. The plan passes it by.
    std::fs::write(dir.join("apps/settings.toml"), "[tool]\nx = 1\n").unwrap();
}

fn imgforge_in(dir: &Path, db: &Path, args: &[&str]) -> Output {
    let o = run(imgforge().current_dir(dir).args(args).arg("--registry").arg(db));
    assert_clean(dir);
    o
}

fn plan(dir: &Path, db: &Path) -> serde_json::Value {
    let o = imgforge_in(dir, db, &["plan", ".", "--json"]);
    assert!(o.status.success(), "{}", show(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn statuses(p: &serde_json::Value) -> Vec<(String, String)> {
    p["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap().to_string(), n["status"].as_str().unwrap().to_string()))
        .collect()
}

fn records(db: &Path) -> i64 {
    rusqlite::Connection::open(db).unwrap().query_row("SELECT count(*) FROM records", [], |r| r.get(0)).unwrap()
}

#[test]
fn bake_builds_a_two_level_plan_once_and_again_when_the_base_changes() {
    if !have_root("bake_builds_a_two_level_plan_once_and_again_when_the_base_changes") {
        return;
    }
    let dir = testdir("bakery");
    let (d, db) = (dir.path(), dir.path().join("registry.db"));
    repo_with_recipes(d);

    let p = plan(d, &db);
    assert_eq!(p["levels"], serde_json::json!([["base"], ["app-cache", "app-db", "app-web"]]), "{p:#}");
    assert_eq!(p["nodes"].as_array().unwrap().len(), 4);
    let web = p["nodes"].as_array().unwrap().iter().find(|n| n["id"] == "app-web").unwrap();
    assert_eq!((web["parent"].as_str(), web["vars"]["node"].as_str(), web["level"].as_u64()), (Some("base"), Some("web"), Some(1)));
    assert_eq!(web["args"], serde_json::json!(["--node", "app-web"]));
    assert!(statuses(&p).iter().all(|(_, s)| s == "needs-build"), "{p:#}");

    // GitHub Actions: the $GITHUB_OUTPUT lines and one stage's matrix.
    let o = imgforge_in(d, &db, &["plan", ".", "--format", "github-matrix"]);
    let lines = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(lines.starts_with("stages=2\nstage0={\"include\":[{"), "{lines}");
    assert!(lines.contains("\ncount0=1\n") && lines.contains("\ncount1=3\n"), "{lines}");
    let o = imgforge_in(d, &db, &["plan", ".", "--format", "github-matrix", "--stage", "1"]);
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(m["include"][2]["node"], "app-web");
    assert_eq!(m["include"][2]["args"], "--node app-web");
    assert_eq!(m["include"][2]["recipe"], "./apps/app.toml");

    // One image of a matrix recipe needs --node.
    let o = imgforge_in(d, &db, &["build", "apps/app.toml"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("defines 3 images (app-web, app-db, app-cache): choose one"), "{}", show(&o));

    let o = imgforge_in(d, &db, &["bake", ".", "--jobs", "2", "--junit", "bake.xml", "--properties", "bake.properties"]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(records(&db), 4);
    let table = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(table.lines().filter(|l| l.contains("  built  ")).count(), 4, "{table}");
    let xml = std::fs::read_to_string(d.join("bake.xml")).unwrap();
    assert!(xml.contains(r#"tests="4""#) && xml.contains(r#"failures="0""#), "{xml}");
    let props = std::fs::read_to_string(d.join("bake.properties")).unwrap();
    assert!(props.contains("\nAPP_DB_IMAGE_VERSION=2.0.0\n") && props.contains("\nBASE_IMAGE_NAME=base\n"), "{props}");
    let built: Vec<&str> = props.lines().find_map(|l| l.strip_prefix("BUILT=")).unwrap().split(',').collect();
    assert_eq!(built.len(), 4, "{props}");
    // Each app is built on the base just built, with its own variables.
    let app_db: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("apps/out/app-db.manifest.json")).unwrap()).unwrap();
    let base: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("out/base.manifest.json")).unwrap()).unwrap();
    assert_eq!(app_db["source"]["parent"]["record"], base["record"]);
    assert_eq!(app_db["vars"]["node"], "db");

    // Nothing changed: nothing is built.
    assert!(statuses(&plan(d, &db)).iter().all(|(_, s)| s == "up-to-date"));
    let o = imgforge_in(d, &db, &["bake", ".", "--jobs", "2"]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(records(&db), 4);
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().filter(|l| l.contains("up-to-date")).count(), 4, "{}", show(&o));

    // The base changes: all four are rebuilt, the apps because their parent needs a build.
    let text = std::fs::read_to_string(d.join("base.toml")).unwrap().replace("base-1", "base-2");
    std::fs::write(d.join("base.toml"), text).unwrap();
    let p = plan(d, &db);
    assert!(statuses(&p).iter().all(|(_, s)| s == "needs-build"), "{p:#}");
    assert_eq!(p["nodes"][1]["reason"], "its parent base needs a build", "{p:#}");
    let o = imgforge_in(d, &db, &["bake", ".", "--jobs", "2"]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(records(&db), 8);

    // A base that fails: its children are never started, and the bake says so (exit 1).
    let text = std::fs::read_to_string(d.join("base.toml")).unwrap().replace("echo base-2 > /etc/base", "exit 3");
    std::fs::write(d.join("base.toml"), text).unwrap();
    let o = imgforge_in(d, &db, &["bake", ".", "--jobs", "2", "--junit", "failed.xml"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("1 of 4 build(s) failed: base (3 image(s) on them not started)"), "{}", show(&o));
    let xml = std::fs::read_to_string(d.join("failed.xml")).unwrap();
    assert!(xml.contains(r#"failures="1""#) && xml.contains(r#"skipped="3""#), "{xml}");
    assert_eq!(records(&db), 8);
}

/// Two builds of one recipe into different output directories (two hosts, as far as the
/// registry can tell) sharing a PostgreSQL registry and an S3 store, started at once.
fn race(d: &Path, db: &str, moto: &str, recipe: &Path, kill_builder: bool) -> (Output, Output, bool) {
    let start = |out: &str| {
        let mut c = imgforge();
        c.arg("build").arg(recipe).arg("-o").arg(d.join(out)).args(["--registry", db, "--lease-period", "1"]);
        aws_env(&mut c, moto, "eu-west-1");
        c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        c.spawn().unwrap()
    };
    let mut a = start("host-a");
    let mut b = start("host-b");
    let mut killed = false;
    if kill_builder {
        // The builder is the pid in the lease row; killed while its provisioner sleeps.
        let mut pg = postgres::Client::connect(db, postgres::NoTls).unwrap();
        let t = std::time::Instant::now();
        let pid = loop {
            let rows = pg.query("SELECT data FROM leases", &[]).unwrap();
            if let Some(r) = rows.first() {
                let v: serde_json::Value = serde_json::from_str(r.get::<_, &str>(0)).unwrap();
                break v["pid"].as_u64().unwrap() as u32;
            }
            assert!(t.elapsed().as_secs() < 60, "no build took the lease");
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let victim = if a.id() == pid { &mut a } else { &mut b };
        assert_eq!(victim.id(), pid);
        victim.kill().unwrap(); // SIGKILL
        killed = true;
    }
    let (oa, ob) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert_clean(d);
    (oa, ob, killed)
}

fn pg_count(db: &str, sql: &str) -> i64 {
    postgres::Client::connect(db, postgres::NoTls).unwrap().query_one(sql, &[]).unwrap().get(0)
}

#[test]
fn one_builder_per_layer_across_hosts_and_a_silent_builder_is_taken_over() {
    let test = "one_builder_per_layer_across_hosts_and_a_silent_builder_is_taken_over";
    if !have_root(test) || !have_moto(test) {
        return;
    }
    let Some(server) = pgserver::PgServer::start(test) else { return };
    let db = server.database("leases");
    let dir = testdir("bakery-lease");
    let d = dir.path();
    let moto = start_moto(&d.join("moto.log"));
    make_bucket(&moto.url(), "eu-west-1", "builds");
    let recipe = d.join("shared.toml");
    let write = |marker: &str| {
        std::fs::write(
            &recipe,
            small_head(small_upstream(), "small-mbr.qcow2").replace("name = \"small\"", "name = \"shared\"")
                + &format!("[[provision]]\ntype = \"shell\"\ninline = [\"sleep 4\", \"echo {marker} > /etc/marker\"]\n\n[output]\nupload = \"s3://builds/shared\"\n"),
        )
        .unwrap();
    };

    // Started at once: exactly one builds, the other waits for its record and reuses it.
    write("one");
    let (a, b, _) = race(d, &db, &moto.url(), &recipe, false);
    assert!(a.status.success() && b.status.success(), "{}\n{}", show(&a), show(&b));
    let reused = [&a, &b].iter().filter(|o| String::from_utf8_lossy(&o.stdout).starts_with("up to date: shared 1.0.0")).count();
    assert_eq!(reused, 1, "{}\n{}", show(&a), show(&b));
    let waited = [&a, &b].iter().any(|o| String::from_utf8_lossy(&o.stderr).contains("is building this layer; waiting for its record"));
    assert!(waited, "{}\n{}", show(&a), show(&b));
    assert_eq!(pg_count(&db, "SELECT count(*) FROM records"), 1);
    assert_eq!(pg_count(&db, "SELECT count(*) FROM leases"), 0, "the lease was given back");

    // --no-wait while a builder holds the layer: exit 3, naming it.
    write("two");
    let mut holder = imgforge();
    holder.arg("build").arg(&recipe).arg("-o").arg(d.join("host-a")).args(["--registry", &db, "--lease-period", "1"]);
    aws_env(&mut holder, &moto.url(), "eu-west-1");
    let mut holder = holder.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let t = std::time::Instant::now();
    while pg_count(&db, "SELECT count(*) FROM leases") == 0 {
        assert!(t.elapsed().as_secs() < 60, "the build took no lease");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut c = imgforge();
    c.arg("build").arg(&recipe).arg("-o").arg(d.join("host-b")).args(["--registry", &db, "--no-wait"]);
    aws_env(&mut c, &moto.url(), "eu-west-1");
    let o = run(&mut c);
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&format!(
            "is being built by {} pid {}",
            nix::unistd::gethostname().unwrap().to_string_lossy(),
            holder.id()
        )),
        "{}",
        show(&o)
    );
    assert!(holder.wait().unwrap().success());
    assert_eq!(pg_count(&db, "SELECT count(*) FROM records"), 2);

    // The builder killed mid-build: the other takes its lease over once it is silent for three
    // periods, builds, and records once; the takeover is logged for the janitor.
    write("three");
    let (a, b, killed) = race(d, &db, &moto.url(), &recipe, true);
    assert!(killed);
    let survivor = if a.status.success() { &a } else { &b };
    assert!(survivor.status.success(), "{}\n{}", show(&a), show(&b));
    assert!(String::from_utf8_lossy(&survivor.stderr).contains("took over the lease on shared's layer"), "{}", show(survivor));
    assert_eq!(pg_count(&db, "SELECT count(*) FROM records"), 3, "no duplicate record");
    assert_eq!(pg_count(&db, "SELECT count(*) FROM lease_log"), 1);
    assert_eq!(pg_count(&db, "SELECT count(*) FROM leases"), 0);
    // The janitor's plan shows the takeover.
    let o = run(imgforge().args(["gc", "--registry", &db, "--json"]).env("AWS_EC2_METADATA_DISABLED", "true"));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    assert_eq!(plan["lease_takeovers"].as_array().map(Vec::len), Some(1), "{}", show(&o));
}
