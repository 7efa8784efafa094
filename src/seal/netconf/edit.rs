//! Line editing that keeps everything it does not touch byte for byte, and the pieces of
//! value and INI parsing the rewriters share.

use super::NetFix;
use super::addresses::parse_mac;

/// A line without its line ending.
pub(super) fn body(line: &str) -> &str {
    line.trim_end_matches(['\n', '\r'])
}

/// The file's line ending, for inserted lines.
fn newline(text: &str) -> &'static str {
    if text.contains("\r\n") { "\r\n" } else { "\n" }
}

/// A file's lines with the edits to make: lines dropped, lines replaced (line ending kept),
/// lines inserted after a line.
pub(super) struct Edit<'a> {
    pub(super) lines: Vec<&'a str>,
    pub(super) drop: Vec<bool>,
    pub(super) replace: Vec<Option<String>>,
    pub(super) after: Vec<Vec<String>>,
    nl: &'static str,
}

impl<'a> Edit<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        let n = lines.len();
        Self { lines, drop: vec![false; n], replace: vec![None; n], after: vec![Vec::new(); n], nl: newline(text) }
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for (i, line) in self.lines.iter().enumerate() {
            if !self.drop[i] {
                match &self.replace[i] {
                    Some(new) => {
                        out.push_str(new);
                        out.push_str(&line[body(line).len()..]);
                    }
                    None => out.push_str(line),
                }
            }
            for extra in &self.after[i] {
                if !out.is_empty() && !out.ends_with('\n') {
                    out.push_str(self.nl);
                }
                out.push_str(extra);
                out.push_str(self.nl);
            }
        }
        out
    }
}

pub(super) fn unquote(v: &str) -> &str {
    let v = v.trim();
    for q in ['"', '\''] {
        if let Some(inner) = v.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return inner.trim();
        }
    }
    v
}

/// The MACs a configuration value names (a value can hold several); a value that is no
/// 6-octet MAC (e.g. a 20-octet InfiniBand address) is reported lowercased as written.
pub(super) fn macs_in_value(v: &str) -> Vec<String> {
    let v = unquote(v);
    let words: Vec<&str> = v.split(|c: char| c.is_whitespace() || c == ',').filter(|w| !w.is_empty()).collect();
    let macs: Vec<String> = words.iter().filter_map(|w| parse_mac(unquote(w))).collect();
    if macs.is_empty() && !v.is_empty() { vec![v.to_ascii_lowercase()] } else { macs }
}

pub(super) fn push_unique(into: &mut Vec<String>, macs: impl IntoIterator<Item = String>) {
    for m in macs {
        if !into.contains(&m) {
            into.push(m);
        }
    }
}

pub(super) fn fix(edit: &Edit<'_>, macs: Vec<String>) -> NetFix {
    if macs.is_empty() && edit.drop.iter().all(|d| !d) && edit.replace.iter().all(Option::is_none) {
        NetFix::Unchanged
    } else {
        NetFix::Rewrite { text: edit.render(), macs }
    }
}

// ---------------------------------------------------------------------------------------------
// INI flavours.

pub(super) fn ini_section(line: &str) -> Option<&str> {
    let t = body(line).trim();
    t.strip_prefix('[')?.strip_suffix(']').map(str::trim)
}

pub(super) fn ini_kv(line: &str) -> Option<(&str, &str)> {
    let t = body(line).trim_start();
    if t.starts_with('#') || t.starts_with(';') || t.starts_with('[') {
        return None;
    }
    let (k, v) = t.split_once('=')?;
    Some((k.trim(), v.trim()))
}
