//! The plan's graph, pure: each node has at most one parent (its `[source] parent`), so the
//! graph is a forest; levels and CI stages follow from the parent links.

use std::collections::BTreeMap;

/// The level of every node: 0 without a parent in the set, else its parent's + 1. A cycle is
/// an error naming it. Pure.
pub fn levels(parents: &BTreeMap<String, Option<String>>) -> Result<BTreeMap<String, usize>, String> {
    let mut level = BTreeMap::new();
    for start in parents.keys() {
        let mut chain: Vec<&String> = Vec::new();
        let mut at = start;
        let base = loop {
            if let Some(l) = level.get(at) {
                break *l + 1;
            }
            if chain.contains(&at) {
                let from = chain.iter().position(|n| *n == at).unwrap_or(0);
                let mut cycle: Vec<&str> = chain[from..].iter().map(|s| s.as_str()).collect();
                cycle.push(at);
                return Err(format!("the parents form a cycle: {}", cycle.join(" → ")));
            }
            chain.push(at);
            match parents.get(at).cloned().flatten() {
                Some(p) if parents.contains_key(&p) => at = parents.get_key_value(&p).map_or(at, |(k, _)| k),
                _ => break 0,
            }
        };
        // `chain` runs child → … → the first node without a known level.
        for (i, n) in chain.iter().rev().enumerate() {
            level.insert((*n).clone(), base + i);
        }
    }
    Ok(level)
}

/// The levels as lists of node ids, each list cut into stages of at most `max` nodes (a CI
/// matrix holds at most 256 jobs): stage K depends only on the stages before it. Pure.
pub fn stages(level: &BTreeMap<String, usize>, max: usize) -> Vec<Vec<String>> {
    let depth = level.values().max().map_or(0, |m| m + 1);
    let mut out = Vec::new();
    for l in 0..depth {
        let ids: Vec<String> = level.iter().filter(|(_, v)| **v == l).map(|(k, _)| k.clone()).collect();
        for chunk in ids.chunks(max.max(1)) {
            out.push(chunk.to_vec());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(edges: &[(&str, Option<&str>)]) -> BTreeMap<String, Option<String>> {
        edges.iter().map(|(a, b)| (a.to_string(), b.map(str::to_string))).collect()
    }

    #[test]
    fn levels_follow_parents_and_outside_parents_are_roots() {
        let l = levels(&g(&[
            ("app-a", Some("base")),
            ("base", Some("foundation")),
            ("app-b", Some("base")),
            ("foundation", None),
            ("other", Some("not-in-set")),
        ]))
        .unwrap();
        assert_eq!(l["foundation"], 0);
        assert_eq!(l["other"], 0);
        assert_eq!(l["base"], 1);
        assert_eq!((l["app-a"], l["app-b"]), (2, 2));
        assert_eq!(
            stages(&l, 256),
            vec![vec!["foundation".to_string(), "other".into()], vec!["base".into()], vec!["app-a".into(), "app-b".into()]]
        );
    }

    #[test]
    fn a_cycle_is_named_and_big_levels_are_cut() {
        let e = levels(&g(&[("a", Some("b")), ("b", Some("c")), ("c", Some("a"))])).unwrap_err();
        assert!(e.contains("a → b → c → a"), "{e}");
        let big: BTreeMap<String, usize> = (0..600).map(|i| (format!("n{i:03}"), 0)).collect();
        let s = stages(&big, 256);
        assert_eq!(s.iter().map(Vec::len).collect::<Vec<_>>(), [256, 256, 88]);
    }
}
