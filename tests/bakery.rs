//! Many images from one repository on the real binary: a base recipe and an app recipe over a
//! 3-entry matrix make a 2-level plan of 4 images; `bake --jobs 2` builds them, a second bake
//! builds nothing, a change to the base rebuilds all 4, and a failed base leaves its children
//! unstarted. GitHub matrices, JUnit and the properties artifact are read back (small upstream,
//! as root).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::path::Path;
use std::process::Output;

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
