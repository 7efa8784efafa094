//! The image registry on the real binary: builds record themselves; `imgforge image
//! list|show|find` query them (small upstream, as root).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::path::Path;
use std::process::Output;

use util::*;

fn image_cmd(registry: &Path, args: &[&str]) -> Output {
    run(imgforge().arg("image").args(args).arg("--registry").arg(registry))
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", show(o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn builds_are_recorded_and_found() {
    if !have_root("builds_are_recorded_and_found") {
        return;
    }
    let up = small_upstream();
    let dir = testdir("registry");
    let db = dir.path().join("reg/registry.db");
    let mut ids = Vec::new();
    for (version, env) in [("1.0.0", "dev"), ("1.1.0", "prod"), ("2.0.0", "prod")] {
        let text = small_head(up, "small-mbr.qcow2").replace(
            "version = \"1.0.0\"",
            &format!("version = \"{version}\"\nlabels = {{ env = \"{env}\", app = \"web\" }}\nowner = \"team-images\""),
        );
        let r = recipe(dir.path(), &text);
        let o = run(imgforge().arg("build").arg(&r).arg("-o").arg(dir.path().join(format!("out-{version}"))).arg("--registry").arg(&db));
        assert_clean(dir.path());
        assert!(o.status.success(), "{}", show(&o));
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(format!("out-{version}/small.manifest.json"))).unwrap()).unwrap();
        let id = m["record"].as_str().unwrap().to_string();
        assert_eq!(id.len(), 26, "a ULID: {id}");
        assert!(String::from_utf8_lossy(&o.stderr).contains(&format!("recorded small {version} as {id}")), "{}", show(&o));
        ids.push(id);
    }
    // The database rows themselves.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let mut stmt = conn.prepare("SELECT id, name, version, status FROM records ORDER BY id").unwrap();
    let rows: Vec<(String, String, String, String)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).unwrap().map(Result::unwrap).collect();
    let want: Vec<(String, String, String, String)> =
        ids.iter().zip(["1.0.0", "1.1.0", "2.0.0"]).map(|(id, v)| (id.clone(), "small".into(), v.into(), "candidate".into())).collect();
    assert_eq!(rows, want);

    let all = json(&run(imgforge().args(["--json", "image", "list", "--registry"]).arg(&db)));
    let versions: Vec<&str> = all.as_array().unwrap().iter().map(|r| r["version"].as_str().unwrap()).collect();
    assert_eq!(versions, ["2.0.0", "1.1.0", "1.0.0"], "newest first");
    let r0 = &all[2];
    assert_eq!(r0["labels"]["env"], "dev");
    assert_eq!(r0["owner"], "team-images");
    assert_eq!(r0["status"], "candidate");
    assert!(r0["parent"]["url"].as_str().unwrap().ends_with("small-mbr.qcow2"), "{r0}");
    assert!(r0["parent"]["digest"].as_str().unwrap().starts_with("sha256:"));
    assert!(r0["outputs"][0]["path"].as_str().unwrap().ends_with("out-1.0.0/small.raw"), "{r0}");

    // find: one answer, or why not.
    let o = image_cmd(&db, &["find", "--name", "small", "--label", "env=prod", "--latest", "--output", "id"]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), ids[2]);
    let o = image_cmd(&db, &["find", "--name", "small", "--version", "1.x", "--label", "env=prod", "--output", "id"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), ids[1], "{}", show(&o));
    let o = image_cmd(&db, &["find", "--name", "small", "--label", "env=prod"]);
    assert_eq!(o.status.code(), Some(2), "several without --latest: {}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("2 images match"), "{}", show(&o));
    let o = image_cmd(&db, &["find", "--name", "small", "--status", "released"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let o = image_cmd(&db, &["find", "--status", "gold"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let o = image_cmd(&db, &["find", "--name", "small", "--latest", "--output", "ami", "--region", "eu-west-1"]);
    assert_eq!(o.status.code(), Some(1), "no AMI yet: {}", show(&o));

    // show by NAME@VERSION and by id.
    let o = image_cmd(&db, &["show", "small@1.1.0"]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains(&ids[1]), "{}", show(&o));
    let shown = json(&run(imgforge().args(["--json", "image", "show"]).arg(&ids[0]).arg("--registry").arg(&db)));
    assert_eq!(shown["version"], "1.0.0");

    // A bad label in the recipe is refused with its line.
    let bad = small_head(up, "small-mbr.qcow2").replace("version = \"1.0.0\"", "version = \"1\"\nlabels = { Env = \"x\" }");
    let r = recipe(dir.path(), &bad);
    let o = run(imgforge().arg("validate").arg(&r));
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("line 4") && String::from_utf8_lossy(&o.stderr).contains("labels"), "{}", show(&o));
}
