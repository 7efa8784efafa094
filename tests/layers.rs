//! Layered images on the real binary: a foundation → base → app chain found by parent queries,
//! nothing rebuilt that has not changed, `explain` and `outdated` (small upstream, as root).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::path::Path;
use std::process::Output;

use util::*;

/// The foundation marks itself and records one package in a dpkg database (the small image has
/// none), so package queries and SBOMs have something to find.
const FOUNDATION_SH: &str = "echo foundation > /etc/foundation\nmkdir -p /var/lib/dpkg\nprintf 'Package: busybox\\nStatus: install ok installed\\nArchitecture: amd64\\nVersion: 1:1.35.0-4+b3\\n' > /var/lib/dpkg/status\n";
const BASE_SH: &str = "echo base > /etc/base\n";

fn recipes(dir: &Path) {
    let up = small_upstream();
    std::fs::write(
        dir.join("foundation.toml"),
        small_head(up, "small-mbr.qcow2").replace("name = \"small\"", "name = \"foundation\"")
            + "[[provision]]\ntype = \"shell\"\nscript = \"scripts/foundation.sh\"\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("scripts")).unwrap();
    std::fs::write(dir.join("scripts/foundation.sh"), FOUNDATION_SH).unwrap();
    std::fs::write(dir.join("scripts/base.sh"), BASE_SH).unwrap();
    std::fs::write(
        dir.join("base.toml"),
        "# Built on the newest foundation.\n[image]\nname = \"base\"\nversion = \"1.0.0\"\nlabels = { env = \"prod\" }\n\n[source]\nparent = { name = \"foundation\", version = \"1.x\" }\n\n[[provision]]\ntype = \"shell\"\nscript = \"scripts/base.sh\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("app.toml"),
        "[image]\nname = \"app\"\nversion = \"2.0.0\"\n\n[source]\nparent = { name = \"base\", status = \"candidate\", labels = { env = \"prod\" } }\n\n[[provision]]\ntype = \"shell\"\ninline = [\"echo app > /etc/app\"]\n",
    )
    .unwrap();
}

fn build(dir: &Path, db: &Path, name: &str) -> Output {
    let o = run(imgforge().arg("build").arg(dir.join(format!("{name}.toml"))).arg("-o").arg(dir.join("out")).arg("--registry").arg(db));
    assert_clean(dir);
    o
}

fn record_of(dir: &Path, name: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join(format!("out/{name}.manifest.json"))).unwrap()).unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn count(db: &Path) -> i64 {
    rusqlite::Connection::open(db).unwrap().query_row("SELECT count(*) FROM records", [], |r| r.get(0)).unwrap()
}

#[test]
fn three_layer_chain_rebuilds_only_what_changed() {
    if !have_root("three_layer_chain_rebuilds_only_what_changed") {
        return;
    }
    let dir = testdir("layers");
    let (d, db) = (dir.path(), dir.path().join("registry.db"));
    recipes(d);

    // A parent query that matches nothing: exit 2, the candidates and why each was rejected.
    let o = build(d, &db, "base");
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("the registry has no image named foundation"), "{}", show(&o));

    let mut ids = std::collections::BTreeMap::new();
    for name in ["foundation", "base", "app"] {
        let o = build(d, &db, name);
        assert!(o.status.success(), "{name}: {}", show(&o));
        ids.insert(name, record_of(d, name)["record"].as_str().unwrap().to_string());
    }
    // Each layer pins its parent, in the manifest and in the record.
    let app = record_of(d, "app");
    assert_eq!(app["source"]["parent"]["record"], ids["base"].as_str());
    assert_eq!(record_of(d, "base")["source"]["parent"]["record"], ids["foundation"].as_str());
    let shown: serde_json::Value =
        serde_json::from_slice(&run(imgforge().args(["--json", "image", "show", &ids["app"], "--registry"]).arg(&db)).stdout).unwrap();
    assert_eq!(shown["parent"]["record"], ids["base"].as_str(), "{shown}");
    assert_eq!(shown["layer_key"], app["layer_key"], "{shown}");
    // The app image holds all three layers, and names its ancestor record.
    let m = RoMount::open(&d.join("out/app.raw"), 1);
    assert_eq!(
        (m.read("/etc/foundation"), m.read("/etc/base"), m.read("/etc/app")),
        ("foundation\n".into(), "base\n".into(), "app\n".into())
    );
    let release = m.read("/etc/imgforge-release");
    assert!(release.contains("IMGFORGE_ANCESTOR=\"base 1.0.0\""), "{release}");
    assert!(release.contains(&format!("IMGFORGE_ANCESTOR_RECORD=\"{}\"", ids["base"])), "{release}");
    assert!(release.contains("IMGFORGE_IMAGE=\"app\""), "{release}");
    drop(m);
    let o = run(imgforge().args(["image", "list", "--descendant-of", &ids["foundation"], "--json", "--registry"]).arg(&db));
    let names: Vec<String> = serde_json::from_slice::<serde_json::Value>(&o.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["app", "base"]);

    // Everything again: nothing is rebuilt.
    for name in ["foundation", "base", "app"] {
        let start = std::time::Instant::now();
        let o = build(d, &db, name);
        let took = start.elapsed().as_secs_f64();
        assert!(o.status.success(), "{}", show(&o));
        assert!(stdout(&o).starts_with(&format!("up to date: {name} ")) && stdout(&o).contains(&ids[name]), "{}", show(&o));
        eprintln!("{name}: up to date in {took:.2} s");
    }
    assert_eq!(count(&db), 3);
    let o = run(imgforge().arg("explain").arg(d.join("app.toml")).arg("--registry").arg(&db));
    assert!(stdout(&o).starts_with(&format!("up to date: app 2.0.0 {}", ids["app"])), "{}", show(&o));

    // One file of the base changes: explain names it; base and app are rebuilt, foundation not.
    std::fs::write(d.join("scripts/base.sh"), "echo base-v2 > /etc/base\n").unwrap();
    let o = run(imgforge().arg("explain").arg(d.join("base.toml")).arg("--registry").arg(&db));
    assert!(o.status.success(), "{}", show(&o));
    assert!(stdout(&o).contains("file scripts/base.sh changed"), "{}", show(&o));
    assert!(!stdout(&o).contains("recipe changed"), "{}", show(&o));
    let o = build(d, &db, "foundation");
    assert!(stdout(&o).starts_with("up to date: foundation"), "{}", show(&o));
    let o = build(d, &db, "base");
    assert!(o.status.success() && !stdout(&o).starts_with("up to date"), "{}", show(&o));
    let new_base = record_of(d, "base")["record"].as_str().unwrap().to_string();
    assert_ne!(new_base, ids["base"]);
    // The app is now built on an older base than its query finds.
    let o = run(imgforge().arg("outdated").arg(d).arg("--registry").arg(&db));
    assert!(o.status.success(), "{}", show(&o));
    assert!(stdout(&o).contains(&format!("app 2.0.0 ({}): parent base 1.0.0 → 1.0.0", ids["app"])), "{}", show(&o));
    assert!(!stdout(&o).contains("foundation"), "{}", show(&o));
    let o = run(imgforge().arg("explain").arg(d.join("app.toml")).arg("--registry").arg(&db));
    assert!(stdout(&o).contains(&format!("parent base 1.0.0 ({}) → 1.0.0 ({new_base})", ids["base"])), "{}", show(&o));
    let o = build(d, &db, "app");
    assert!(o.status.success() && !stdout(&o).starts_with("up to date"), "{}", show(&o));
    assert_eq!(record_of(d, "app")["source"]["parent"]["record"], new_base.as_str());
    assert_eq!(RoMount::open(&d.join("out/app.raw"), 1).read("/etc/base"), "base-v2\n");
    let o = run(imgforge().arg("outdated").arg(d).arg("--registry").arg(&db));
    assert_eq!(stdout(&o), "", "{}", show(&o));
    assert_eq!(count(&db), 5);

    // --rebuild: a new record even though nothing changed; history stays.
    let o = run(imgforge().arg("build").arg(d.join("app.toml")).arg("-o").arg(d.join("out")).arg("--registry").arg(&db).arg("--rebuild"));
    assert!(o.status.success() && !stdout(&o).starts_with("up to date"), "{}", show(&o));
    assert_eq!(count(&db), 6);

    serve_answers_like_the_cli(d, &db, &ids["foundation"], &new_base);

    // The SBOMs list the recorded packages.
    let o = run(imgforge().args(["image", "sbom", "app", "--format", "cyclonedx", "--registry"]).arg(&db));
    let bom: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(&o)));
    assert_eq!(bom["bomFormat"], "CycloneDX");
    assert_eq!(bom["components"][0]["purl"], "pkg:deb/small/busybox@1%3A1.35.0-4%2Bb3?arch=amd64", "{bom}");
    let o = run(imgforge().args(["image", "sbom", "app", "--format", "spdx", "--registry"]).arg(&db));
    let spdx: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(&o)));
    assert_eq!(spdx["packages"][1]["versionInfo"], "1:1.35.0-4+b3", "{spdx}");

    // A query nothing satisfies: the nearest candidates and why each was rejected.
    std::fs::write(
        d.join("strict.toml"),
        "[image]\nname = \"strict\"\nversion = \"1\"\n[source]\nparent = { name = \"base\", status = \"released\" }\n",
    )
    .unwrap();
    let o = build(d, &db, "strict");
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("base 1.0.0 ({new_base}): status is candidate, not released")), "{err}");
}

/// On XFS a child starts from its parent's raw by reflink: the child's output shares the parent's
/// blocks (filefrag says "shared") and holds both layers.
#[test]
fn child_on_xfs_shares_its_parents_blocks() {
    if !have_root("child_on_xfs_shares_its_parents_blocks") {
        return;
    }
    let dir = testdir("layers-xfs");
    let (d, db) = (dir.path(), dir.path().join("registry.db"));
    recipes(d);
    let xfs = ScratchFs::new("xfs", &["-q", "-m", "reflink=1"], 1 << 30);
    let out = xfs.path().join("out");
    for name in ["foundation", "base"] {
        let o = run(imgforge().arg("build").arg(d.join(format!("{name}.toml"))).arg("-o").arg(&out).arg("--registry").arg(&db));
        assert!(o.status.success(), "{name}: {}", show(&o));
        assert_clean(&out);
    }
    let frag = run(std::process::Command::new("filefrag").arg("-v").arg(out.join("base.raw")));
    let text = String::from_utf8_lossy(&frag.stdout);
    // Blocks per extent (the length column), shared or not: the layer's own writes are few.
    let blocks = |shared: bool| -> u64 {
        text.lines()
            .filter(|l| l.contains("..") && l.contains("shared") == shared)
            .filter_map(|l| l.split(':').nth(3)?.trim().parse::<u64>().ok())
            .sum()
    };
    let (shared, own) = (blocks(true), blocks(false));
    assert!(shared > 4 * own, "{shared} blocks shared, {own} not:\n{text}");
    let m = RoMount::open(&out.join("base.raw"), 1);
    assert_eq!((m.read("/etc/foundation"), m.read("/etc/base")), ("foundation\n".into(), "base\n".into()));
}

/// A running `imgforge registry serve`, killed on drop.
struct Server {
    child: std::process::Child,
    base: String,
}

impl Server {
    fn start(db: &Path) -> Self {
        use std::io::BufRead;
        let mut child = imgforge()
            .args(["registry", "serve", "--listen", "127.0.0.1:0", "--registry"])
            .arg(db)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stderr.take().unwrap()).read_line(&mut line).unwrap();
        let base = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("{line}"))
            .trim_end_matches('/')
            .to_string();
        Self { child, base }
    }

    /// GET `path`: status and body.
    fn get(&self, path: &str) -> (u16, String) {
        let agent = ureq::Agent::new_with_config(ureq::config::Config::builder().http_status_as_error(false).build());
        let mut r = agent.get(&format!("{}{path}", self.base)).call().unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The HTTP API answers the CLI's queries with the same bytes; the page, rendered by headless
/// Chromium, shows the lineage (DOM nesting) and the names (the screenshot, read back by OCR).
fn serve_answers_like_the_cli(d: &Path, db: &Path, foundation: &str, base: &str) {
    let server = Server::start(db);
    let cli = |args: &[&str]| {
        let o = run(imgforge().arg("--json").args(args).arg("--registry").arg(db));
        assert!(o.status.success(), "{}", show(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    let pairs: Vec<(String, Vec<&str>)> = vec![
        ("/api/v1/images".into(), vec!["image", "list"]),
        ("/api/v1/images?name=base".into(), vec!["image", "list", "--name", "base"]),
        (
            "/api/v1/images?label.env=prod&status=candidate&latest=1".into(),
            vec!["image", "find", "--label", "env=prod", "--status", "candidate", "--latest"],
        ),
        (
            format!("/api/v1/images?descendant_of={foundation}&package=busybox"),
            vec!["image", "list", "--descendant-of", foundation, "--package", "busybox"],
        ),
        (format!("/api/v1/images/{base}"), vec!["image", "show", base]),
    ];
    for (path, args) in &pairs {
        let (status, body) = server.get(path);
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body, cli(args), "{path} and imgforge {args:?} differ");
    }
    let (status, body) = server.get("/api/v1/images/app@9.9");
    assert_eq!(status, 404, "{body}");
    let (status, body) = server.get("/api/v1/images?colour=red");
    assert_eq!(status, 400, "{body}");

    // The page, as a browser renders it.
    let chromium = |args: &[&str]| {
        let o = run(std::process::Command::new("chromium")
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1400,1000"])
            .arg(format!("--user-data-dir={}", d.join("chromium").display()))
            .args(args)
            .arg(format!("{}/", server.base)));
        assert!(o.status.success(), "{}", show(&o));
        o
    };
    let dom = String::from_utf8(chromium(&["--dump-dom"]).stdout).unwrap();
    let at = |name: &str| dom.find(&format!(">{name}<")).unwrap_or_else(|| panic!("{name} is not on the page: {dom}"));
    assert!(at("foundation") < at("base") && at("base") < at("app"), "{dom}");
    // base's list sits inside foundation's item, app's inside base's: three levels.
    let foundation_item = &dom[dom.find(&format!("<li id=\"{foundation}\"")).unwrap()..];
    assert!(foundation_item.find("<ul>").unwrap() < foundation_item.find(">app<").unwrap(), "{dom}");
    let png = d.join("page.png");
    chromium(&[&format!("--screenshot={}", png.display())]);
    let ocr = run(std::process::Command::new("tesseract").arg(&png).arg("stdout"));
    assert!(ocr.status.success(), "{}", show(&ocr));
    let text = String::from_utf8_lossy(&ocr.stdout).to_lowercase();
    // The label badge's small text is where OCR misread one run in three (the ids and dates
    // around it change every run): the rendered DOM carries it, the screenshot the names.
    assert!(dom.contains("env=prod"), "{dom}");
    for name in ["foundation", "base", "app", "candidate"] {
        assert!(text.contains(name), "the screenshot does not show {name}: {text}");
    }
}
