//! The CI examples in examples/ci, run rather than read: the GitHub Actions workflow's plan job
//! runs its `run:` script, and every stage job runs its build step once per entry of the matrix
//! the plan gave it (`${{ matrix.* }}` and `${{ needs.plan.outputs.* }}` resolved as Actions
//! does), over a 3-level plan; every matrix key the workflow uses must be one the plan gives.
//! The Jenkinsfile's and the Nomad dispatcher's reads of the plan JSON are checked against a
//! real plan (small upstream, as root).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::collections::BTreeMap;
use std::path::Path;

use util::*;

fn repo_with_three_levels(dir: &Path) {
    let up = small_upstream();
    let r = dir.join("recipes");
    std::fs::create_dir_all(r.join("apps")).unwrap();
    std::fs::write(
        r.join("base.toml"),
        small_head(up, "small-mbr.qcow2").replace("name = \"small\"", "name = \"base\"")
            + "[[provision]]\ntype = \"shell\"\ninline = [\"echo base > /etc/base\"]\n",
    )
    .unwrap();
    std::fs::write(
        r.join("apps/app.toml"),
        "[image]\nname = \"app-${node}\"\nversion = \"2.0.0\"\n\n[source]\nparent = { name = \"base\" }\n\n[[provision]]\ntype = \"shell\"\ninline = [\"echo ${node} > /etc/node\"]\n\n[matrix]\nnode = [\"web\", \"db\", \"cache\"]\n",
    )
    .unwrap();
    std::fs::write(
        r.join("edge.toml"),
        "[image]\nname = \"edge\"\nversion = \"3.0.0\"\n\n[source]\nparent = { name = \"app-web\" }\n\n[[provision]]\ntype = \"shell\"\ninline = [\"echo edge > /etc/edge\"]\n",
    )
    .unwrap();
}

/// `text` with every `${{ expr }}` replaced by `value(expr)`; an expression `value` does not
/// know fails the test, naming it.
fn resolve(text: &str, value: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("${{") {
        out.push_str(&rest[..i]);
        let end = rest[i..].find("}}").unwrap() + i;
        let expr = rest[i + 3..end].trim();
        out.push_str(&value(expr).unwrap_or_else(|| panic!("the workflow uses `{expr}`, which the plan does not give")));
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Runs a `run:` script as Actions does (bash -e), as root: `sudo -E` is dropped.
fn run_step(dir: &Path, db: &Path, script: &str, github_output: &Path) {
    let bin = Path::new(env!("CARGO_BIN_EXE_imgforge")).parent().unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let o = run(std::process::Command::new("bash")
        .args(["-e", "-c", &script.replace("sudo -E ", "")])
        .current_dir(dir)
        .env("PATH", path)
        .env("IMGFORGE_REGISTRY", db)
        .env("GITHUB_OUTPUT", github_output));
    assert!(o.status.success(), "{script}\n{}", show(&o));
    assert_clean(dir);
}

#[test]
fn the_github_workflow_builds_a_three_level_plan_from_the_plan_it_makes() {
    if !have_root("the_github_workflow_builds_a_three_level_plan_from_the_plan_it_makes") {
        return;
    }
    let dir = testdir("examples-gh");
    let (d, db) = (dir.path(), dir.path().join("registry.db"));
    repo_with_three_levels(d);
    let wf: serde_json::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(repo().join("examples/ci/github-actions.yml")).unwrap()).unwrap();
    let jobs = wf["jobs"].as_object().unwrap();

    // The plan job: its steps' outputs, then the job's outputs.
    let out_file = d.join("github_output");
    std::fs::write(&out_file, "").unwrap();
    for step in jobs["plan"]["steps"].as_array().unwrap() {
        if let Some(script) = step["run"].as_str() {
            run_step(d, &db, script, &out_file);
        }
    }
    let steps: BTreeMap<String, String> = std::fs::read_to_string(&out_file)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(
        (steps["stages"].as_str(), steps["count0"].as_str(), steps["count1"].as_str(), steps["count2"].as_str()),
        ("3", "1", "3", "1"),
        "{steps:?}"
    );
    let outputs: BTreeMap<String, String> = jobs["plan"]["outputs"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (k.clone(), resolve(v.as_str().unwrap(), &|e| e.strip_prefix("steps.plan.outputs.").and_then(|x| steps.get(x).cloned())))
        })
        .collect();

    // The stage jobs, in order, each entry of its matrix running the job's steps.
    let mut built = Vec::new();
    let mut stage_jobs: Vec<&String> = jobs.keys().filter(|k| k.starts_with("stage")).collect();
    stage_jobs.sort();
    assert_eq!(stage_jobs.len(), 3, "the workflow has a job per stage of a 3-level plan");
    for name in stage_jobs {
        let job = &jobs[name.as_str()];
        let cond = job["if"].as_str().unwrap();
        let count = cond.split("needs.plan.outputs.").nth(1).unwrap().split_whitespace().next().unwrap();
        if outputs[count] == "0" {
            continue;
        }
        let matrix_expr = job["strategy"]["matrix"].as_str().unwrap();
        let matrix: serde_json::Value = serde_json::from_str(&resolve(matrix_expr, &|e| {
            e.strip_prefix("fromJSON(needs.plan.outputs.").and_then(|x| x.strip_suffix(')')).and_then(|x| outputs.get(x).cloned())
        }))
        .unwrap();
        for entry in matrix["include"].as_array().unwrap() {
            let value = |e: &str| e.strip_prefix("matrix.").and_then(|k| entry.get(k)).and_then(|v| v.as_str()).map(str::to_string);
            for step in job["steps"].as_array().unwrap() {
                if let Some(n) = step["name"].as_str() {
                    resolve(n, &value);
                }
                if let Some(script) = step["run"].as_str() {
                    run_step(d, &db, &resolve(script, &value), &out_file);
                }
            }
            built.push(entry["node"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(built, ["base", "app-cache", "app-db", "app-web", "edge"]);
    for node in &built {
        let props = std::fs::read_to_string(d.join(format!("{node}.properties"))).unwrap();
        assert!(props.contains(&format!("\nIMAGE_NAME={node}\n")), "{props}");
    }
    let edge: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("recipes/out/edge.manifest.json")).unwrap()).unwrap();
    let web: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("recipes/apps/out/app-web.manifest.json")).unwrap()).unwrap();
    assert_eq!(edge["source"]["parent"]["record"], web["record"]);

    // Planned again: nothing to build, so every stage job is skipped.
    std::fs::write(&out_file, "").unwrap();
    run_step(d, &db, jobs["plan"]["steps"][1]["run"].as_str().unwrap(), &out_file);
    let again = std::fs::read_to_string(&out_file).unwrap();
    assert!(again.contains("count0=0\n") && again.contains("count1=0\n") && again.contains("count2=0\n"), "{again}");

    // The Jenkinsfile and the Nomad dispatcher read these fields of `plan --format json`.
    let o = run(imgforge().current_dir(d).args(["plan", "recipes", "--format", "json", "--registry"]).arg(&db));
    assert!(o.status.success(), "{}", show(&o));
    let plan = String::from_utf8_lossy(&o.stdout).to_string();
    let jenkins = std::fs::read_to_string(repo().join("examples/ci/Jenkinsfile")).unwrap();
    for used in ["plan.levels", "plan.nodes", "it.id", "node.status", "node.recipe", "node.args", "props.IMAGE_VERSION", "props.RECORD_ID"]
    {
        assert!(jenkins.contains(used), "{used}");
    }
    let p: serde_json::Value = serde_json::from_str(&plan).unwrap();
    for field in ["id", "status", "recipe", "args", "level", "layer_key"] {
        assert!(p["nodes"][0].get(field).is_some(), "plan nodes lack {field}");
    }
    // The dispatcher's jq filters, on the real plan (jq is in scripts/setup --tests).
    let jq = |args: &[&str]| {
        let mut c = std::process::Command::new("jq");
        c.args(args).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
        let mut child = c.spawn().expect("jq (scripts/setup --tests installs it)");
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), plan.as_bytes()).unwrap();
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success());
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let script = std::fs::read_to_string(repo().join("examples/ci/nomad-dispatch.sh")).unwrap();
    for filter in [".levels | length", ".nodes[] | select(.id == $id) | .layer_key // empty"] {
        assert!(script.contains(filter), "{filter}");
    }
    assert_eq!(jq(&[".levels | length"]), "3");
    assert_eq!(
        jq(&["-r", "--arg", "id", "edge", ".nodes[] | select(.id == $id) | .layer_key // empty"]),
        p["nodes"][4]["layer_key"].as_str().unwrap()
    );
}
