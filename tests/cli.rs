#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Recipe validation through the real binary: bad recipes exit 2 naming file:line and a hint.
//! Also what needs no root: `--json` output of `export`, and the build manifest it updates.

mod util;

use std::path::Path;
use std::process::Output;

use util::{imgforge, recipe, run, show, testdir};

fn validate(text: &str) -> (i32, String, tempfile::TempDir) {
    let dir = testdir("validate");
    std::fs::write(dir.path().join("up.img"), b"disk").unwrap();
    std::fs::write(dir.path().join("SHA256SUMS"), b"").unwrap();
    let r = recipe(dir.path(), text);
    let o = run(imgforge().arg("validate").arg(&r));
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout), dir)
}

const HEAD: &str = "[image]\nname = \"base\"\nversion = \"1.0.0\"\n\n[source]\nurl = \"up.img\"\nchecksums = \"SHA256SUMS\"\n";

#[test]
fn good_recipe_validates() {
    let (code, out, _d) = validate(&format!("{HEAD}\n[[provision]]\ntype = \"shell\"\ninline = [\"true\"]\n"));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("recipe.toml: ok"), "{out}");
}

fn assert_recipe_error(text: &str, line: usize, needle: &str) {
    let (code, out, _d) = validate(text);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains(&format!("recipe.toml: line {line}: ")), "expected line {line}: {out}");
    assert!(out.contains(needle), "expected {needle:?}: {out}");
    assert!(out.contains("hint: "), "expected a hint: {out}");
}

/// `${node}` from `[vars]`, then IMGFORGE_VAR_NODE, then `--var`; an unknown variable and an
/// undeclared `--var` exit 2 naming the file (and the line).
#[test]
fn variables_take_defaults_environment_and_command_line() {
    let dir = testdir("vars");
    std::fs::write(dir.path().join("up.img"), b"disk").unwrap();
    std::fs::write(dir.path().join("SHA256SUMS"), b"").unwrap();
    let text = "[vars]\nnode = \"web\"\n\n[image]\nname = \"app-${node}\"\nversion = \"1.0.0\"\n\n[source]\nurl = \"up.img\"\nchecksums = \"SHA256SUMS\"\n";
    let r = recipe(dir.path(), text);
    let name = |extra: &[&str], env: Option<&str>| {
        let mut c = imgforge();
        c.args(["--json", "validate"]).arg(&r).args(extra);
        if let Some(v) = env {
            c.env("IMGFORGE_VAR_NODE", v);
        }
        let o = run(&mut c);
        assert!(o.status.success(), "{}", show(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (v["name"].as_str().unwrap().to_string(), v["vars"]["node"].as_str().unwrap().to_string())
    };
    assert_eq!(name(&[], None), ("app-web".to_string(), "web".to_string()));
    assert_eq!(name(&[], Some("db")).0, "app-db");
    assert_eq!(name(&["--var", "node=cache"], Some("db")).0, "app-cache");
    let o = run(imgforge().arg("validate").arg(&r).args(["--var", "zone=a"]));
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("recipe.toml: --var zone: the recipe declares no variable `zone`"), "{}", show(&o));
    assert_recipe_error(&HEAD.replace("\"base\"", "\"base-${nod}\""), 2, "unknown variable `nod`");
    assert_recipe_error(&format!("[vars]\nunused = \"x\"\n{HEAD}"), 2, "variable `unused` is declared but used nowhere");
}

/// `${git.commit}` and `${git.tag}` come from the recipe's repository; a YAML matrix file makes
/// one image per node, each validated.
#[test]
fn git_variables_and_a_yaml_matrix() {
    let dir = testdir("vars-git");
    let d = dir.path();
    std::fs::write(d.join("up.img"), b"disk").unwrap();
    std::fs::write(d.join("SHA256SUMS"), b"").unwrap();
    std::fs::write(d.join("nodes.yaml"), "nodes:\n  - { node: web-1, role: web, groups: [sg-1, sg-2] }\n  - { node: db-1, role: db }\n")
        .unwrap();
    let text = "matrix = \"nodes.yaml\"\n\n[vars]\ngroups = \"none\"\n\n[image]\nname = \"${node}\"\nversion = \"1.0.0\"\ndescription = \"${role} at ${git.commit} ${git.tag}\"\nlabels = { groups = \"${groups}\" }\n\n[source]\nurl = \"up.img\"\nchecksums = \"SHA256SUMS\"\n";
    let r = recipe(d, text);
    let git = |args: &[&str]| {
        let o = run(std::process::Command::new("git")
            .args(args)
            .current_dir(d)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid"));
        assert!(o.status.success(), "{}", show(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "recipes"]);
    git(&["tag", "v1.0.0"]);
    let head = git(&["rev-parse", "HEAD"]);
    let o = run(imgforge().args(["--json", "validate"]).arg(&r));
    assert!(o.status.success(), "{}", show(&o));
    let docs: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(docs.iter().map(|v| v["name"].as_str().unwrap()).collect::<Vec<_>>(), ["web-1", "db-1"]);
    assert_eq!(docs[0]["vars"]["git.commit"], head.as_str());
    assert_eq!(docs[0]["vars"]["git.tag"], "v1.0.0");
    assert_eq!(docs[0]["vars"]["groups"], "sg-1,sg-2");
    assert_eq!(docs[1]["vars"]["groups"], "none", "the [vars] default where an entry says nothing");
    // One image of the matrix: --node.
    let o = run(imgforge().args(["--json", "validate"]).arg(&r).args(["--node", "db-1"]));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 1, "{}", show(&o));
}

#[test]
fn clear_text_passwords_and_bad_accounts_are_refused_with_lines() {
    assert_recipe_error(&format!("{HEAD}\n[[user]]\nname = \"deploy\"\npassword = \"hunter2\"\n"), 11, "never a clear-text password");
    assert_recipe_error(&format!("{HEAD}\n[system]\nroot_password = \"secret\"\n"), 10, "[system] root_password");
    assert_recipe_error(&format!("{HEAD}\n[system]\ntimezone = \"../../etc/passwd\"\n"), 10, "is not a zone name");
    assert_recipe_error(&format!("{HEAD}\n[[user]]\nname = \"Bad Name\"\n"), 10, "is not a user name");
    assert_recipe_error(
        &format!("{HEAD}\n[[user]]\nname = \"ops\"\nauthorized_keys = [\"nokey.pub\"]\n"),
        11,
        "neither a public key line nor a readable file",
    );
}

#[test]
fn unknown_key_exits_2_with_line() {
    assert_recipe_error(&format!("{HEAD}colour = \"blue\"\n"), 8, "unknown field `colour`");
}

#[test]
fn wrong_type_exits_2_with_line() {
    assert_recipe_error(&HEAD.replace("version = \"1.0.0\"", "version = 1"), 3, "invalid type");
}

#[test]
fn missing_file_exits_2_with_line() {
    assert_recipe_error(&HEAD.replace("up.img", "nope.img"), 6, "file not found: nope.img");
}

#[test]
fn bad_size_exits_2_with_line() {
    assert_recipe_error(&format!("{HEAD}\n[disk]\nsize = \"4 gigs\"\n"), 10, "disk.size");
}

#[test]
fn bad_disk_root_exits_2_with_line() {
    assert_recipe_error(&format!("{HEAD}\n[disk]\nroot = {{ lvm = \"root\" }}\n"), 10, "is not \"VG/LV\"");
    assert_recipe_error(
        &format!("{HEAD}\n[disk]\nroot = {{ label = \"a\", uuid = \"b\" }}\n"),
        10,
        "exactly one of lvm, label, uuid, partition",
    );
    assert_recipe_error(&format!("{HEAD}\n[disk]\nroot = {{ label = \"a\" }}\nroot_partition = 2\n"), 10, "not both");
}

#[test]
fn missing_script_in_provisioner_exits_2() {
    assert_recipe_error(&format!("{HEAD}\n[[provision]]\ntype = \"shell\"\nscript = \"setup.sh\"\n"), 9, "script not found: setup.sh");
}

#[test]
fn missing_recipe_exits_2() {
    let o = run(imgforge().args(["validate", "/nonexistent/recipe.toml"]));
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot read the recipe"), "{}", show(&o));
}

#[test]
fn bad_usage_exits_2() {
    let o = run(imgforge().args(["build"]));
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
}

#[test]
fn unknown_seal_operation_exits_2_with_the_valid_names() {
    assert_recipe_error(&format!("{HEAD}\n[seal]\ndisable = [\"logs\"]\n"), 10, "unknown operation `logs`");
    let (_, out, _d) = validate(&format!("{HEAD}\n[seal]\nenable = [\"fs-uuid\"]\n"));
    assert!(out.contains("valid operations: cloud-init, ca-certificates,") && out.contains("fs-uuids"), "{out}");
    // The same on the command line.
    let o = run(imgforge().args(["seal", "--disable", "nope", "/nonexistent.raw"]));
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown seal operation `nope`; valid operations: cloud-init"), "{}", show(&o));
}

#[test]
fn seal_list_names_every_operation_with_its_default() {
    let o = run(imgforge().args(["seal", "--list"]));
    assert!(o.status.success(), "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for (name, default) in [
        ("ssh-hostkeys", "on"),
        ("machine-id", "on"),
        ("net-hwaddr", "on"),
        ("fs-uuids", "off"),
        ("user-accounts", "off"),
        ("cron-spool", "on"),
        ("firewall-rules", "off"),
        ("lvm-uuids", "on"),
    ] {
        let line = out.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} missing: {out}"));
        assert_eq!(line.split_whitespace().nth(1), Some(default), "{line}");
    }
    assert_eq!(out.lines().count(), 41, "{out}");
}

/// `validate` reads the pinned signing key: a file that is no OpenPGP key fails validation
/// (exit 2, with a hint) instead of at build time; a key without checksums is a recipe error.
#[test]
fn validate_checks_the_signing_key() {
    let bad = format!("{HEAD}signing_key = \"vendor.asc\"\n");
    let dir = testdir("validate-key");
    std::fs::write(dir.path().join("up.img"), b"disk").unwrap();
    std::fs::write(dir.path().join("SHA256SUMS"), b"").unwrap();
    std::fs::write(
        dir.path().join("vendor.asc"),
        b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnot a key\n-----END PGP PUBLIC KEY BLOCK-----\n",
    )
    .unwrap();
    let o = run(imgforge().arg("validate").arg(recipe(dir.path(), &bad)));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(err.contains("vendor.asc is not an OpenPGP public key") && err.contains("hint: "), "{err}");

    let no_sums = "[image]\nname = \"base\"\nversion = \"1.0.0\"\n\n[source]\nurl = \"up.img\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\nsigning_key = \"vendor.asc\"\n";
    assert_recipe_error(no_sums, 8, "source.signing_key without source.checksums");
}

/// A raw disk of `mib` MiB holding a byte pattern (export takes a raw without a partition table).
fn pattern_raw(path: &Path, mib: usize) {
    let bytes: Vec<u8> = (0..mib << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(path, bytes).unwrap();
}

/// Every stdout line, parsed: under `--json` each one must be a JSON event.
fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    let out = String::from_utf8_lossy(&o.stdout);
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}\n{}", show(o))))
        .collect();
    for e in &events {
        assert!(e["schema"] == 1 && e["event"].is_string(), "not an event: {e}");
    }
    events
}

#[test]
fn export_json_without_sha256_prints_only_json_lines() {
    let dir = testdir("export-json");
    let raw = dir.path().join("disk.raw");
    pattern_raw(&raw, 4);
    let out = dir.path().join("disk.qcow2");
    let o = run(imgforge().arg("export").arg(&raw).args(["--format", "qcow2", "-o"]).arg(&out).arg("--json"));
    assert!(o.status.success(), "{}", show(&o));
    let events = json_lines(&o);
    let result = events.last().unwrap();
    assert_eq!(result["event"], "result", "{}", show(&o));
    assert_eq!(result["outputs"][0]["path"], out.display().to_string());
    assert_eq!(result["outputs"][0]["sha256"], "", "not asked for");
    assert_eq!(result["uploaded"], serde_json::json!([]));
    assert!(out.exists());
}

#[test]
fn export_of_a_manifest_records_its_output_and_keeps_unknown_fields() {
    let dir = testdir("export-manifest-json");
    let raw = dir.path().join("web.raw");
    pattern_raw(&raw, 4);
    let m = dir.path().join("web.manifest.json");
    let manifest = serde_json::json!({
        "schema": 1, "name": "web", "version": "1", "build_date": "2024-05-01T12:00:00Z",
        "outputs": [{ "format": "raw", "path": raw.display().to_string(), "size": 4 << 20, "sha256": "" }],
        "from_a_newer_imgforge": { "kept": [1, 2] },
    });
    std::fs::write(&m, serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
    let o = run(imgforge().arg("export").arg(&m).args(["-f", "qcow2", "--json"]));
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(json_lines(&o).last().unwrap()["event"], "result");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
    assert_eq!(v["from_a_newer_imgforge"], manifest["from_a_newer_imgforge"], "{v}");
    assert_eq!((&v["name"], &v["version"], &v["build_date"]), (&manifest["name"], &manifest["version"], &manifest["build_date"]));
    let outs = v["outputs"].as_array().unwrap();
    assert_eq!(outs.len(), 2, "{v}");
    assert_eq!(outs[1]["format"], "qcow2");
    assert_eq!(outs[1]["sha256"].as_str().map(str::len), Some(64), "{v}");
    assert!(dir.path().join("web.qcow2").exists());
}

#[test]
fn export_refuses_a_manifest_of_a_newer_schema() {
    let dir = testdir("export-manifest-newer");
    let raw = dir.path().join("web.raw");
    pattern_raw(&raw, 1);
    let m = dir.path().join("web.manifest.json");
    let text = format!(r#"{{"schema": 999, "name": "web", "outputs": [{{"format": "raw", "path": "{}"}}]}}"#, raw.display());
    std::fs::write(&m, &text).unwrap();
    let o = run(imgforge().arg("export").arg(&m).args(["-f", "qcow2"]));
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&m.display().to_string()) && err.contains("schema 999") && err.contains("(schema 1)"), "{}", show(&o));
    assert_eq!(std::fs::read_to_string(&m).unwrap(), text, "left as it was");
    assert!(!dir.path().join("web.qcow2").exists());
}
