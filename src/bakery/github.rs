//! A plan's stages as GitHub Actions matrices: `imgforge plan --format github-matrix` prints
//! the lines a plan job appends to `$GITHUB_OUTPUT` (`stages`, then `stageN` and `countN` per
//! stage); with `--stage N`, that stage's matrix alone. Only images that need a build are jobs:
//! a stage whose count is 0 is skipped by the workflow (`if: needs.plan.outputs.countN != '0'`).

use serde_json::{Value, json};

use super::plan::{Plan, Status};

/// The matrix of stage `stage`: `{"include": [{node, recipe, args, layer_key, reason}, …]}`.
/// Pure.
pub fn matrix(plan: &Plan, stage: usize) -> Value {
    let include: Vec<Value> = plan
        .nodes
        .iter()
        .filter(|n| n.stage == stage && n.status == Status::NeedsBuild)
        .map(|n| {
            json!({
                "node": n.id,
                "recipe": n.recipe,
                "args": shell_words(&n.args),
                "layer_key": n.layer_key.clone().unwrap_or_default(),
                "reason": n.reason,
            })
        })
        .collect();
    json!({ "include": include })
}

/// The `$GITHUB_OUTPUT` lines of every stage. Pure.
pub fn output_lines(plan: &Plan) -> String {
    let mut out = format!("stages={}\n", plan.stages.len());
    for i in 0..plan.stages.len() {
        let m = matrix(plan, i);
        let count = m["include"].as_array().map_or(0, Vec::len);
        out.push_str(&format!("stage{i}={m}\ncount{i}={count}\n"));
    }
    out
}

/// Arguments as one shell-quoted string. Pure.
fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+".contains(c)) {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_quoted_for_the_shell() {
        assert_eq!(
            shell_words(&["--node".into(), "app-web".into(), "--var".into(), "msg=it's here".into()]),
            "--node app-web --var 'msg=it'\\''s here'"
        );
    }
}
