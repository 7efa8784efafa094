//! The registry's HTML page: every image in its lineage tree (upstream-based images at the
//! roots, each layered image under its parent), newest first, with status, labels and id. Plain
//! HTML and CSS, no script.

use std::collections::{BTreeMap, BTreeSet};

use super::record::Record;

/// `s` with HTML's special characters escaped. Pure.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

const STYLE: &str = "body{font-family:'DejaVu Sans',sans-serif;font-size:20px;margin:24px;color:#111;background:#fff}\
h1{font-size:28px}ul{list-style:none;padding-left:36px;border-left:2px solid #bbb}ul.roots{border:none;padding-left:0}\
li{margin:10px 0}.name{font-weight:bold}.status{padding:0 8px;border:2px solid #777;border-radius:4px}\
.released{border-color:#2a8a2a}.tested{border-color:#3a5fcd}.candidate{border-color:#c9a000}.revoked{border-color:#c03030;text-decoration:line-through}\
.label{padding:0 6px;margin-left:8px;border:1px dashed #999}.meta{font-size:15px;color:#444}";

/// The page for `records` (newest first, as `find` returns them). Pure.
pub fn render(records: &[Record]) -> String {
    let ids: BTreeSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
    let mut children: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    let mut roots = Vec::new();
    for r in records {
        match r.parent.record.as_deref().filter(|p| ids.contains(p)) {
            Some(p) => children.entry(p).or_default().push(r),
            None => roots.push(r),
        }
    }
    let mut html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>imgforge registry</title><style>{STYLE}</style></head>\n<body>\n<h1>imgforge registry: {} images</h1>\n<ul class=\"roots\">\n",
        records.len()
    );
    for r in roots {
        node(r, &children, &mut html, 0);
    }
    html.push_str("</ul>\n</body></html>\n");
    html
}

fn node(r: &Record, children: &BTreeMap<&str, Vec<&Record>>, html: &mut String, depth: usize) {
    html.push_str(&format!(
        "<li id=\"{id}\"><span class=\"name\">{name}</span> <span class=\"version\">{version}</span> <span class=\"status {status}\">{status}</span>",
        id = esc(&r.id),
        name = esc(&r.name),
        version = esc(&r.version),
        status = esc(&r.status)
    ));
    for (k, v) in &r.labels {
        html.push_str(&format!("<span class=\"label\">{}={}</span>", esc(k), esc(v)));
    }
    let from = match (&r.parent.record, &r.parent.url) {
        (Some(_), _) => String::new(),
        (None, Some(u)) => format!(" · from {}", esc(u)),
        (None, None) => String::new(),
    };
    html.push_str(&format!("<div class=\"meta\">{} · built {}{from}</div>", esc(&r.id), esc(&r.build_date)));
    // A chain deeper than this is a cycle, not a lineage.
    if depth < 64
        && let Some(kids) = children.get(r.id.as_str())
    {
        html.push_str("\n<ul>\n");
        for k in kids {
            node(k, children, html, depth + 1);
        }
        html.push_str("</ul>\n");
    }
    html.push_str("</li>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, name: &str, parent: Option<&str>) -> Record {
        let mut r = Record { id: id.into(), name: name.into(), version: "1".into(), status: "tested".into(), ..Record::default() };
        r.parent.record = parent.map(str::to_string);
        r
    }

    #[test]
    fn children_nest_under_their_parent_and_text_is_escaped() {
        let mut app = rec("C", "app", Some("B"));
        app.labels.insert("env".into(), "<prod>".into());
        let html = render(&[app, rec("B", "base", Some("A")), rec("A", "foundation", None), rec("D", "orphan", Some("gone"))]);
        let (f, b, a) = (html.find(">foundation<").unwrap(), html.find(">base<").unwrap(), html.find(">app<").unwrap());
        assert!(f < b && b < a, "{html}");
        // base's list is inside foundation's item, app's inside base's.
        assert_eq!(html.matches("<ul>").count(), 2, "{html}");
        assert!(html.contains("env=&lt;prod&gt;"), "{html}");
        assert!(html.contains(">orphan<"), "a parent outside the registry makes a root: {html}");
    }
}
