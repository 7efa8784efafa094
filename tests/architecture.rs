//! The layering of `src/`, checked: every top-level module belongs to one layer (the table in
//! `src/main.rs`), imports only from its own layer or the ones below, and no import cycle runs
//! between top-level modules. Imports are read from `crate::NAME` paths in production code
//! (`#[cfg(test)]` items and `tests.rs` files are left out: tests may reach anywhere).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Layers from the top; a module may import from its own layer and the ones after it.
const LAYERS: &[(&str, &[&str])] = &[
    ("command line", &["cli", "fuzz"]),
    ("pipelines", &["pipeline", "bakery"]),
    ("configuration", &["recipe"]),
    ("domains", &["source", "provision", "seal", "stamp", "export", "publish", "s3", "manifest", "registry", "imagetest", "gc"]),
    ("the image", &["image", "disk", "chroot"]),
    ("the host", &["host", "aws", "io", "error", "logging", "progress"]),
];

type Graph = BTreeMap<String, BTreeSet<String>>;

/// `text` without its `#[cfg(test)]` items (a `mod tests { … }` block, a test-only function).
fn production_code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() != "#[cfg(test)]" {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        // Skip further attributes, then the item: one line ending in `;`, or a braced block.
        let mut depth = 0i64;
        let mut opened = false;
        for item in lines.by_ref() {
            let t = item.trim();
            if !opened && t.starts_with("#[") {
                continue;
            }
            depth += item.matches('{').count() as i64 - item.matches('}').count() as i64;
            opened |= item.contains('{');
            if (opened && depth <= 0) || (!opened && t.ends_with(';')) {
                break;
            }
        }
    }
    out
}

/// Top-level module → the top-level modules its production code names with `crate::`.
fn import_graph(src: &Path) -> Graph {
    let mut graph = Graph::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !name.ends_with(".rs") || name == "tests.rs" || name == "main.rs" || name == "fuzz_main.rs" {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap();
            let first = rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
            let module = first.trim_end_matches(".rs").to_string();
            let code = production_code(&std::fs::read_to_string(&path).unwrap());
            let deps = graph.entry(module.clone()).or_default();
            for (i, _) in code.match_indices("crate::") {
                let rest = &code[i + "crate::".len()..];
                let dep: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if !dep.is_empty() && dep != module {
                    deps.insert(dep);
                }
            }
        }
    }
    graph
}

/// Edges that run from a lower layer up to a higher one, and modules in no layer.
fn layer_violations(graph: &Graph) -> Vec<String> {
    let rank = |m: &str| LAYERS.iter().position(|(_, ms)| ms.contains(&m));
    let mut bad = Vec::new();
    for (from, deps) in graph {
        let Some(rf) = rank(from) else {
            bad.push(format!("module `{from}` is in no layer: add it to LAYERS in tests/architecture.rs and to the table in src/main.rs"));
            continue;
        };
        for to in deps {
            match rank(to) {
                Some(rt) if rt < rf => bad
                    .push(format!("{from} -> {to}: `{from}` ({}) imports from `{to}` ({}), a layer above it", LAYERS[rf].0, LAYERS[rt].0)),
                Some(_) => {}
                None => bad.push(format!("{from} -> {to}: `{to}` is in no layer")),
            }
        }
    }
    bad
}

/// Strongly connected components with more than one module (Tarjan), each with its edges.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct State<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on: BTreeSet<&'g str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = State { graph, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), on: BTreeSet::new(), out: Vec::new() };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

/// The edges inside one cycle, for the failure message.
fn cycle_edges(graph: &Graph, comp: &[String]) -> Vec<String> {
    let mut edges = Vec::new();
    for from in comp {
        for to in graph.get(from).into_iter().flatten() {
            if comp.contains(to) {
                edges.push(format!("{from} -> {to}"));
            }
        }
    }
    edges
}

fn check(graph: &Graph) -> Vec<String> {
    let mut problems = layer_violations(graph);
    for comp in cycles(graph) {
        problems.push(format!("import cycle between {}: {}", comp.join(", "), cycle_edges(graph, &comp).join(", ")));
    }
    problems
}

#[test]
fn src_has_no_import_cycle_and_no_upward_import() {
    let graph = import_graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(graph.len() >= 15, "read too few modules: {graph:?}");
    assert!(graph["pipeline"].contains("seal") && graph["cli"].contains("pipeline"), "the reader misses imports: {graph:?}");
    let problems = check(&graph);
    assert!(problems.is_empty(), "layering broken:\n  {}", problems.join("\n  "));
}

fn graph_of(edges: &[(&str, &str)]) -> Graph {
    let mut g = Graph::new();
    for (a, b) in edges {
        g.entry(a.to_string()).or_default().insert(b.to_string());
        g.entry(b.to_string()).or_default();
    }
    g
}

/// The check itself fails on a planted back-edge: a domain importing the CLI (the cycle the
/// old `publish -> cli` edge made), and a cycle between two domains of one layer.
#[test]
fn a_planted_back_edge_is_reported_with_its_edge() {
    let good = graph_of(&[("cli", "pipeline"), ("pipeline", "seal"), ("seal", "chroot"), ("chroot", "host"), ("publish", "export")]);
    assert!(check(&good).is_empty(), "{:?}", check(&good));

    let up = graph_of(&[("cli", "publish"), ("publish", "cli")]);
    let p = check(&up);
    assert!(p.iter().any(|l| l.starts_with("publish -> cli: `publish` (domains) imports from `cli` (command line)")), "{p:?}");
    assert!(p.iter().any(|l| l.starts_with("import cycle between cli, publish: ")), "{p:?}");

    let same_layer = graph_of(&[("export", "publish"), ("publish", "s3"), ("s3", "export")]);
    let p = check(&same_layer);
    assert_eq!(p, vec!["import cycle between export, publish, s3: export -> publish, publish -> s3, s3 -> export".to_string()]);

    let unknown = graph_of(&[("cli", "scheduler")]);
    assert!(check(&unknown).iter().any(|l| l.contains("`scheduler` is in no layer")));
}

/// Test-only code may import anything: a `#[cfg(test)]` module is not an edge.
#[test]
fn test_modules_are_not_edges() {
    let code = "use crate::host::x;\nfn f() {}\n#[cfg(test)]\nmod tests {\n    use crate::cli::y;\n    fn g() { if true { } }\n}\nuse crate::disk::z;\n";
    let kept = production_code(code);
    assert!(kept.contains("crate::host") && kept.contains("crate::disk"), "{kept}");
    assert!(!kept.contains("crate::cli"), "{kept}");
}

/// The fuzz binary's root (src/fuzz_main.rs) declares the same modules as main.rs, plus `fuzz`.
#[test]
fn fuzz_root_declares_the_same_modules() {
    let mods = |file: &str| -> Vec<String> {
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(file)).unwrap();
        text.lines().filter_map(|l| l.strip_prefix("mod ").and_then(|r| r.strip_suffix(';'))).map(str::to_string).collect()
    };
    let mut main = mods("main.rs");
    main.push("fuzz".into());
    assert_eq!(mods("fuzz_main.rs"), main, "src/fuzz_main.rs must list main.rs's modules, then `mod fuzz;`");
}
