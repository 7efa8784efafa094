//! Network configuration bound to the build machine's NIC, neutralised.
//!
//! Images carry network configuration that names the build machine's NIC by its MAC address;
//! a clone with another MAC then gets no network. The rewrites here keep each file's text,
//! comments and formatting, drop the MAC bindings, and keep the profile applying to an
//! ethernet NIC. Pure functions over text: the caller reads and writes the files.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The flavours of network configuration that can bind a NIC by MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetKind {
    /// `/etc/netplan/*.yaml`.
    Netplan,
    /// `/etc/NetworkManager/system-connections/*`.
    NmKeyfile,
    /// `/etc/sysconfig/network-scripts/ifcfg-*` (RHEL) and `/etc/sysconfig/network/ifcfg-*` (SUSE).
    Ifcfg,
    /// `/etc/systemd/network/*.network`.
    NetworkdNetwork,
    /// `/etc/systemd/network/*.link`.
    NetworkdLink,
    /// `/etc/udev/rules.d/*persistent-net*.rules`.
    UdevRules,
}

/// What to do with one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetFix {
    /// No MAC binding: leave the file as it is.
    Unchanged,
    /// Replace the file's content with `text`; `macs` were removed (lowercase, colon form).
    Rewrite {
        /// The new content.
        text: String,
        /// The MACs removed.
        macs: Vec<String>,
    },
    /// Remove the file; it bound only the `macs`.
    Remove {
        /// The MACs removed.
        macs: Vec<String>,
    },
}

impl NetFix {
    /// The MACs this fix removes (empty for `Unchanged`).
    pub fn macs(&self) -> &[String] {
        match self {
            NetFix::Unchanged => &[],
            NetFix::Rewrite { macs, .. } | NetFix::Remove { macs } => macs,
        }
    }
}

/// The flavour of the file at `path_in_image` (an absolute path inside the image), if it is
/// network configuration that can carry a MAC binding. Only direct children of the
/// configuration directories count, and only under `/etc` (vendor defaults under `/usr/lib`
/// bind no build machine).
pub fn kind_of(path_in_image: &str) -> Option<NetKind> {
    let child = |dir: &str| -> Option<&str> {
        let name = path_in_image.strip_prefix(dir)?;
        (!name.is_empty() && !name.contains('/') && !name.starts_with('.')).then_some(name)
    };
    if let Some(name) = child("/etc/netplan/") {
        return (name.ends_with(".yaml") || name.ends_with(".yml")).then_some(NetKind::Netplan);
    }
    if child("/etc/NetworkManager/system-connections/").is_some() {
        return Some(NetKind::NmKeyfile);
    }
    if let Some(name) = child("/etc/sysconfig/network-scripts/").or_else(|| child("/etc/sysconfig/network/")) {
        return (name.starts_with("ifcfg-") && name.len() > "ifcfg-".len()).then_some(NetKind::Ifcfg);
    }
    if let Some(name) = child("/etc/systemd/network/") {
        if name.ends_with(".network") {
            return Some(NetKind::NetworkdNetwork);
        }
        if name.ends_with(".link") {
            return Some(NetKind::NetworkdLink);
        }
        return None;
    }
    if let Some(name) = child("/etc/udev/rules.d/") {
        return (name.contains("persistent-net") && name.ends_with(".rules")).then_some(NetKind::UdevRules);
    }
    None
}

/// Rewrites one file of flavour `kind` so that it binds no MAC address.
pub fn neutralise(kind: NetKind, text: &str) -> NetFix {
    match kind {
        NetKind::Netplan => netplan(text),
        NetKind::NmKeyfile => nm_keyfile(text),
        NetKind::Ifcfg => ifcfg(text),
        NetKind::NetworkdNetwork => networkd(text, false),
        NetKind::NetworkdLink => networkd(text, true),
        NetKind::UdevRules => udev(text),
    }
}

// ---------------------------------------------------------------------------------------------
// Line editing that keeps everything it does not touch byte for byte.

/// A line without its line ending.
fn body(line: &str) -> &str {
    line.trim_end_matches(['\n', '\r'])
}

/// The file's line ending, for inserted lines.
fn newline(text: &str) -> &'static str {
    if text.contains("\r\n") { "\r\n" } else { "\n" }
}

struct Edit<'a> {
    lines: Vec<&'a str>,
    drop: Vec<bool>,
    replace: Vec<Option<String>>,
    after: Vec<Vec<String>>,
    nl: &'static str,
}

impl<'a> Edit<'a> {
    fn new(text: &'a str) -> Self {
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

// ---------------------------------------------------------------------------------------------
// MAC values.

/// `s` as a lowercase colon-form MAC if it is a 6-octet MAC in colon or dash form.
pub(crate) fn parse_mac(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if b.len() != 17 {
        return None;
    }
    let sep = b[2];
    if sep != b':' && sep != b'-' {
        return None;
    }
    for (i, &c) in b.iter().enumerate() {
        let ok = if i % 3 == 2 { c == sep } else { c.is_ascii_hexdigit() };
        if !ok {
            return None;
        }
    }
    Some(s.to_ascii_lowercase().replace('-', ":"))
}

fn unquote(v: &str) -> &str {
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
fn macs_in_value(v: &str) -> Vec<String> {
    let v = unquote(v);
    let words: Vec<&str> = v.split(|c: char| c.is_whitespace() || c == ',').filter(|w| !w.is_empty()).collect();
    let macs: Vec<String> = words.iter().filter_map(|w| parse_mac(unquote(w))).collect();
    if macs.is_empty() && !v.is_empty() { vec![v.to_ascii_lowercase()] } else { macs }
}

fn push_unique(into: &mut Vec<String>, macs: impl IntoIterator<Item = String>) {
    for m in macs {
        if !into.contains(&m) {
            into.push(m);
        }
    }
}

fn fix(edit: &Edit<'_>, macs: Vec<String>) -> NetFix {
    if macs.is_empty() && edit.drop.iter().all(|d| !d) && edit.replace.iter().all(Option::is_none) {
        NetFix::Unchanged
    } else {
        NetFix::Rewrite { text: edit.render(), macs }
    }
}

// ---------------------------------------------------------------------------------------------
// INI flavours.

fn ini_section(line: &str) -> Option<&str> {
    let t = body(line).trim();
    t.strip_prefix('[')?.strip_suffix(']').map(str::trim)
}

fn ini_kv(line: &str) -> Option<(&str, &str)> {
    let t = body(line).trim_start();
    if t.starts_with('#') || t.starts_with(';') || t.starts_with('[') {
        return None;
    }
    let (k, v) = t.split_once('=')?;
    Some((k.trim(), v.trim()))
}

fn nm_keyfile(text: &str) -> NetFix {
    let mut edit = Edit::new(text);
    let mut macs = Vec::new();
    let mut section = String::new();
    for i in 0..edit.lines.len() {
        let line = edit.lines[i];
        if let Some(s) = ini_section(line) {
            section = s.to_string();
            continue;
        }
        if !matches!(section.as_str(), "ethernet" | "wifi" | "802-3-ethernet" | "802-11-wireless") {
            continue;
        }
        let Some((k, v)) = ini_kv(line) else { continue };
        let literal = match k {
            "mac-address" => !v.is_empty(),
            "cloned-mac-address" => {
                !v.is_empty() && !["preserve", "permanent", "random", "stable"].contains(&v.to_ascii_lowercase().as_str())
            }
            _ => false,
        };
        if literal {
            edit.drop[i] = true;
            push_unique(&mut macs, nm_macs(v));
        }
    }
    fix(&edit, macs)
}

/// NetworkManager writes MACs in colon form; very old keyfiles hold a `;`-separated list of
/// decimal bytes.
fn nm_macs(v: &str) -> Vec<String> {
    let bytes: Vec<&str> = v.split(';').filter(|b| !b.is_empty()).collect();
    if bytes.len() == 6 && bytes.iter().all(|b| b.parse::<u8>().is_ok()) {
        let hex: Vec<String> = bytes.iter().filter_map(|b| b.parse::<u8>().ok()).map(|b| format!("{b:02x}")).collect();
        return vec![hex.join(":")];
    }
    macs_in_value(v)
}

fn ifcfg(text: &str) -> NetFix {
    let mut edit = Edit::new(text);
    let mut macs = Vec::new();
    for i in 0..edit.lines.len() {
        let Some((k, v)) = ini_kv(edit.lines[i]) else { continue };
        // HWADDR binds the profile to a NIC; MACADDR (RHEL) and LLADDR (SUSE) set the NIC's MAC.
        if matches!(k, "HWADDR" | "MACADDR" | "LLADDR") && !unquote(v).is_empty() {
            edit.drop[i] = true;
            push_unique(&mut macs, macs_in_value(v));
        }
    }
    fix(&edit, macs)
}

fn networkd(text: &str, link: bool) -> NetFix {
    let mut edit = Edit::new(text);
    let mut macs = Vec::new();
    let mut section = String::new();
    let mut first_emptied_match: Option<usize> = None; // header line of a [Match] we emptied
    let mut match_header: Option<usize> = None;
    let mut match_keys_left = 0usize;
    let mut match_macs_removed = false;
    let mut section_keys_left = 0usize;
    let mut section_macs_removed = false;
    // Closes the current [Match] section: remembers it if we emptied it.
    let close = |header: Option<usize>, left: usize, removed: bool, first: &mut Option<usize>| {
        if let Some(h) = header
            && removed
            && left == 0
            && first.is_none()
        {
            *first = Some(h);
        }
    };
    for i in 0..edit.lines.len() {
        let line = edit.lines[i];
        if let Some(s) = ini_section(line) {
            if section == "Match" {
                close(match_header, section_keys_left, section_macs_removed, &mut first_emptied_match);
            }
            section = s.to_string();
            section_keys_left = 0;
            section_macs_removed = false;
            if section == "Match" {
                match_header = Some(i);
            }
            continue;
        }
        let Some((k, v)) = ini_kv(line) else { continue };
        let mac_key = match section.as_str() {
            "Match" => matches!(k, "MACAddress" | "PermanentMACAddress"),
            "Link" => k == "MACAddress",
            _ => false,
        };
        if mac_key && !v.is_empty() {
            edit.drop[i] = true;
            push_unique(&mut macs, macs_in_value(v));
            if section == "Match" {
                section_macs_removed = true;
                match_macs_removed = true;
            }
        } else if section == "Match" {
            section_keys_left += 1;
            match_keys_left += 1;
        }
    }
    if section == "Match" {
        close(match_header, section_keys_left, section_macs_removed, &mut first_emptied_match);
    }
    if match_macs_removed && match_keys_left == 0 {
        if link {
            // A .link file with an empty [Match] would apply to every NIC.
            return NetFix::Remove { macs };
        }
        // An empty [Match] matches every link, loopback included.
        if let Some(h) = first_emptied_match {
            edit.after[h].push("Type=ether".to_string());
        }
    }
    fix(&edit, macs)
}

fn udev(text: &str) -> NetFix {
    let mut edit = Edit::new(text);
    let mut macs = Vec::new();
    let mut rules_left = 0usize;
    for i in 0..edit.lines.len() {
        let t = body(edit.lines[i]).trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        match t.find("ATTR{address}==") {
            Some(at) => {
                edit.drop[i] = true;
                let rest = &t[at + "ATTR{address}==".len()..];
                let value = rest.strip_prefix('"').and_then(|r| r.split_once('"')).map(|(v, _)| v).unwrap_or(rest);
                push_unique(&mut macs, macs_in_value(value));
            }
            None => rules_left += 1,
        }
    }
    if edit.drop.iter().any(|d| *d) && rules_left == 0 {
        return NetFix::Remove { macs };
    }
    fix(&edit, macs)
}

// ---------------------------------------------------------------------------------------------
// Netplan: YAML, edited line by line.

#[derive(Debug)]
struct YLine {
    indent: usize,
    /// The mapping key on this line, unquoted (`None` for blank, comment and list lines).
    key: Option<String>,
    /// The value after `key:` (comment removed), trimmed.
    value: String,
    /// Keys of the enclosing mappings.
    path: Vec<String>,
    /// Blank or comment-only.
    empty: bool,
}

fn yaml_lines(lines: &[&str]) -> Vec<YLine> {
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut out = Vec::with_capacity(lines.len());
    for line in lines {
        let b = body(line);
        let t = b.trim_start_matches(' ');
        let indent = b.len() - t.len();
        let empty = t.trim().is_empty() || t.starts_with('#');
        let kv = if empty || t.starts_with("- ") || t == "-" { None } else { yaml_key(t) };
        let mut path = Vec::new();
        let (key, value) = match kv {
            Some((k, v)) => {
                while stack.last().is_some_and(|(ind, _)| *ind >= indent) {
                    stack.pop();
                }
                path = stack.iter().map(|(_, k)| k.clone()).collect();
                stack.push((indent, k.clone()));
                (Some(k), v)
            }
            None => (None, String::new()),
        };
        out.push(YLine { indent, key, value, path, empty });
    }
    out
}

/// `key: value` at the start of `t` (no indentation), with the value's comment removed.
fn yaml_key(t: &str) -> Option<(String, String)> {
    let (key, rest) = if let Some(q @ ('"' | '\'')) = t.chars().next() {
        let close = t[1..].find(q)? + 1;
        (t[1..close].to_string(), t[close + 1..].strip_prefix(':')?)
    } else {
        let b = t.as_bytes();
        let at = (0..b.len()).find(|&i| b[i] == b':' && (i + 1 == b.len() || b[i + 1] == b' '))?;
        (t[..at].trim_end().to_string(), &t[at + 1..])
    };
    if !rest.is_empty() && !rest.starts_with(' ') {
        return None;
    }
    Some((key, yaml_strip_comment(rest).trim().to_string()))
}

fn yaml_strip_comment(v: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut prev = ' ';
    for (i, c) in v.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && prev.is_whitespace() => return &v[..i],
            None => {}
        }
        prev = c;
    }
    v
}

/// Items of a one-line flow mapping `{a: 1, b: 2}` as (key, value) pairs.
fn flow_items(v: &str) -> Option<Vec<(String, String)>> {
    let inner = v.strip_prefix('{')?.strip_suffix('}')?.trim();
    if inner.is_empty() {
        return Some(Vec::new());
    }
    inner
        .split(',')
        .map(|item| {
            let item = item.trim();
            let (k, v) = item.split_once(':')?;
            Some((unquote(k).to_string(), v.trim().to_string()))
        })
        .collect()
}

struct Device {
    line: usize,
    end: usize,
    kind: String,
    match_line: Option<usize>,
    match_flow: Option<Vec<(String, String)>>,
    match_mac_lines: Vec<usize>,
    match_other: usize,
    set_name: Vec<usize>,
    set_mac: Vec<usize>,
    macs: Vec<String>,
    set_macs: Vec<String>,
}

const DEVICE_TYPES: [&str; 10] =
    ["ethernets", "wifis", "bonds", "bridges", "vlans", "tunnels", "modems", "vrfs", "dummy-devices", "virtual-ethernets"];

fn netplan(text: &str) -> NetFix {
    let mut edit = Edit::new(text);
    let ys = yaml_lines(&edit.lines);
    let mut devices: Vec<Device> = Vec::new();
    for (i, y) in ys.iter().enumerate() {
        if y.key.is_none() || y.path.len() != 2 || y.path[0] != "network" || !DEVICE_TYPES.contains(&y.path[1].as_str()) {
            continue;
        }
        let mut end = i + 1;
        for (j, z) in ys.iter().enumerate().skip(i + 1) {
            if z.empty {
                continue;
            }
            if z.indent <= y.indent {
                break;
            }
            end = j + 1;
        }
        let mut d = Device {
            line: i,
            end,
            kind: y.path[1].clone(),
            match_line: None,
            match_flow: None,
            match_mac_lines: Vec::new(),
            match_other: 0,
            set_name: Vec::new(),
            set_mac: Vec::new(),
            macs: Vec::new(),
            set_macs: Vec::new(),
        };
        for (j, z) in ys.iter().enumerate().take(end).skip(i + 1) {
            let Some(key) = &z.key else {
                // A list item directly under `match:` still counts as content.
                continue;
            };
            match z.path.len() {
                3 => match key.as_str() {
                    "match" => {
                        d.match_line = Some(j);
                        if z.value.starts_with('{')
                            && let Some(items) = flow_items(&z.value)
                        {
                            for (k, v) in &items {
                                if k == "macaddress" {
                                    push_unique(&mut d.macs, macs_in_value(v));
                                }
                            }
                            d.match_flow = Some(items);
                        }
                    }
                    "set-name" => d.set_name.push(j),
                    "macaddress" => {
                        d.set_mac.push(j);
                        push_unique(&mut d.set_macs, macs_in_value(&z.value));
                    }
                    _ => {}
                },
                4 if z.path[3] == "match" => {
                    if key == "macaddress" {
                        d.match_mac_lines.push(j);
                        push_unique(&mut d.macs, macs_in_value(&z.value));
                    } else {
                        d.match_other += 1;
                    }
                }
                _ => {}
            }
        }
        devices.push(d);
    }

    let mut macs = Vec::new();
    let mut kept_kinds: HashSet<String> = HashSet::new();
    for d in &devices {
        for &j in &d.set_mac {
            edit.drop[j] = true;
        }
        push_unique(&mut macs, d.set_macs.iter().cloned());
        let glob = match d.kind.as_str() {
            "ethernets" => "e*",
            "wifis" => "w*",
            _ => continue,
        };
        if d.macs.is_empty() {
            continue;
        }
        push_unique(&mut macs, d.macs.iter().cloned());
        if !kept_kinds.insert(d.kind.clone()) {
            // A second MAC-bound stanza would match the same NICs as the first: drop it.
            for j in d.line..d.end {
                edit.drop[j] = true;
            }
            continue;
        }
        for &j in d.set_name.iter().chain(&d.match_mac_lines) {
            edit.drop[j] = true;
        }
        let Some(m) = d.match_line else { continue };
        let m_indent = ys[m].indent;
        if let Some(items) = &d.match_flow {
            let rest: Vec<String> = items.iter().filter(|(k, _)| k != "macaddress").map(|(k, v)| format!("{k}: {v}")).collect();
            let inner = if rest.is_empty() { format!("name: \"{glob}\"") } else { rest.join(", ") };
            edit.replace[m] = Some(format!("{}match: {{{inner}}}", " ".repeat(m_indent)));
        } else if d.match_other == 0 {
            let child = d.match_mac_lines.first().map_or(m_indent + 2, |&j| ys[j].indent);
            edit.after[m].push(format!("{}name: \"{glob}\"", " ".repeat(child)));
        }
    }
    fix(&edit, macs)
}

// ---------------------------------------------------------------------------------------------
// Addresses held by configuration and lease files.

/// The MACs (lowercase, colon form) and IP host addresses in a configuration or lease file,
/// each once, in order of appearance: for a later residue scan.
///
/// Left out: the all-zero and broadcast MACs; IPv4 `0.*`, `127.*`, `255.*`, multicast and
/// addresses ending in `.0` or `.255` (networks, broadcasts, netmasks); IPv6 `::`, `::1` and
/// multicast; and addresses of other machines, recognised by what introduces them on their
/// line (router, gateway, DNS, name server, DHCP server, NTP, routes, the gateway after the
/// comma in NetworkManager's `addressN=`, and netplan `nameservers:`/`routes:` blocks).
pub fn addresses(text: &str) -> (Vec<String>, Vec<String>) {
    let mut macs = Vec::new();
    for (_, mac) in find_macs(text) {
        if mac != "00:00:00:00:00:00" && mac != "ff:ff:ff:ff:ff:ff" {
            push_unique(&mut macs, [mac]);
        }
    }
    const OTHERS: [&str; 12] =
        ["router", "gateway", "dns", "nameserver", "server", "mask", "broadcast", "ntp", "via", "route", "domain", "search"];
    let mut ips = Vec::new();
    let mut skip_block: Option<usize> = None;
    for line in text.lines() {
        let t = line.trim_start();
        let indent = line.len() - t.len();
        if let Some(ind) = skip_block {
            if t.is_empty() || indent > ind {
                continue;
            }
            skip_block = None;
        }
        if let Some((k, v)) = yaml_key(t)
            && matches!(k.as_str(), "nameservers" | "routes" | "routing-policy")
        {
            if v.is_empty() {
                skip_block = Some(indent);
            }
            continue;
        }
        let lower = line.to_ascii_lowercase();
        let nm_address = lower.trim_start().strip_prefix("address").is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()));
        for (pos, ip) in find_ips(line) {
            let before = &lower[..pos];
            if OTHERS.iter().any(|w| before.contains(w)) || (nm_address && before.contains(',')) {
                continue;
            }
            push_unique(&mut ips, [ip]);
        }
    }
    (macs, ips)
}

/// 6-octet MACs (colon or dash form, any case) with their byte offsets.
fn find_macs(text: &str) -> Vec<(usize, String)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let is_part = |c: u8| c.is_ascii_hexdigit() || c == b':' || c == b'-';
    let mut i = 0;
    while i + 17 <= b.len() {
        if (i == 0 || !is_part(b[i - 1]))
            && (i + 17 == b.len() || !is_part(b[i + 17]))
            && let Some(mac) = text.get(i..i + 17).and_then(parse_mac)
        {
            out.push((i, mac));
            i += 17;
            continue;
        }
        i += 1;
    }
    out
}

/// IPv4 and IPv6 host addresses with their byte offsets (see [`addresses`] for what is left out).
fn find_ips(line: &str) -> Vec<(usize, String)> {
    let b = line.as_bytes();
    let mut out = Vec::new();
    // IPv4: maximal runs of digits and dots.
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() || (i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'.')) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
            i += 1;
        }
        let run = line[start..i].trim_end_matches('.');
        let next_alpha = b.get(start + run.len()).is_some_and(|c| c.is_ascii_alphabetic());
        if !next_alpha && let Ok(ip) = run.parse::<Ipv4Addr>() {
            let o = ip.octets();
            let host = !matches!(o[0], 0 | 127 | 255) && !ip.is_multicast() && o[3] != 0 && o[3] != 255;
            if host {
                out.push((start, ip.to_string()));
            }
        }
    }
    // IPv6: maximal runs of hex digits and colons holding `::` or seven colons.
    let mut i = 0;
    while i < b.len() {
        let part = |c: u8| c.is_ascii_hexdigit() || c == b':';
        if !part(b[i]) || (i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b':')) {
            i += 1;
            continue;
        }
        let mut start = i;
        while i < b.len() && part(b[i]) {
            i += 1;
        }
        if b.get(i).is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'.') {
            continue;
        }
        let mut run = &line[start..i];
        if run.starts_with(':') && !run.starts_with("::") {
            run = &run[1..];
            start += 1;
        }
        if !run.contains("::") && run.matches(':').count() != 7 {
            continue;
        }
        if let Ok(ip) = run.parse::<Ipv6Addr>()
            && !ip.is_unspecified()
            && !ip.is_loopback()
            && !ip.is_multicast()
            && run.chars().any(|c| c.is_ascii_hexdigit())
        {
            out.push((start, ip.to_string()));
        }
    }
    out.sort_by_key(|(p, _)| *p);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn rewrite(kind: NetKind, text: &str) -> (String, Vec<String>) {
        match neutralise(kind, text) {
            NetFix::Rewrite { text, macs } => (text, macs),
            other => panic!("expected a rewrite, got {other:?}"),
        }
    }

    #[test]
    fn kinds_by_path() {
        assert_eq!(kind_of("/etc/netplan/50-cloud-init.yaml"), Some(NetKind::Netplan));
        assert_eq!(kind_of("/etc/netplan/01-netcfg.yml"), Some(NetKind::Netplan));
        assert_eq!(kind_of("/etc/netplan/README"), None);
        assert_eq!(kind_of("/etc/NetworkManager/system-connections/Wired connection 1.nmconnection"), Some(NetKind::NmKeyfile));
        assert_eq!(kind_of("/etc/NetworkManager/system-connections/eth0"), Some(NetKind::NmKeyfile));
        assert_eq!(kind_of("/etc/sysconfig/network-scripts/ifcfg-eth0"), Some(NetKind::Ifcfg));
        assert_eq!(kind_of("/etc/sysconfig/network/ifcfg-eth0"), Some(NetKind::Ifcfg));
        assert_eq!(kind_of("/etc/sysconfig/network-scripts/route-eth0"), None);
        assert_eq!(kind_of("/etc/systemd/network/10-eth0.network"), Some(NetKind::NetworkdNetwork));
        assert_eq!(kind_of("/etc/systemd/network/10-eth0.link"), Some(NetKind::NetworkdLink));
        assert_eq!(kind_of("/usr/lib/systemd/network/99-default.link"), None);
        assert_eq!(kind_of("/etc/udev/rules.d/70-persistent-net.rules"), Some(NetKind::UdevRules));
        assert_eq!(kind_of("/etc/udev/rules.d/75-persistent-net-generator.rules"), Some(NetKind::UdevRules));
        assert_eq!(kind_of("/etc/udev/rules.d/99-other.rules"), None);
        assert_eq!(kind_of("/etc/netplan/sub/x.yaml"), None);
    }

    const CLOUD_INIT: &str = "\
# This file is generated from information provided by the datasource.  Changes
# to it will not persist across an instance reboot.  To disable cloud-init's
# network configuration capabilities, write a file
# /etc/cloud/cloud.cfg.d/99-disable-network-config.cfg with the following:
# network: {config: disabled}
network:
    ethernets:
        eth0:
            dhcp4: true
            match:
                macaddress: '52:54:00:12:34:56'
            set-name: eth0
    version: 2
";

    #[test]
    fn netplan_cloud_init() {
        let (text, macs) = rewrite(NetKind::Netplan, CLOUD_INIT);
        let want = CLOUD_INIT
            .replace("                macaddress: '52:54:00:12:34:56'\n            set-name: eth0\n", "                name: \"e*\"\n");
        assert_eq!(text, want);
        assert_eq!(macs, ["52:54:00:12:34:56"]);
    }

    #[test]
    fn netplan_two_stanzas_flow_and_set_mac() {
        let src = "\
network:
  version: 2
  renderer: networkd
  ethernets:
    # primary
    ens3:
      match: {macaddress: \"52:54:00:AA:BB:CC\"}   # bound
      set-name: ens3
      dhcp4: true
      macaddress: 52:54:00:aa:bb:cc
    ens4:
      match:
        macaddress: 52:54:00:dd:ee:ff
        driver: virtio_net
      addresses: [192.168.1.5/24]
    bond-port:
      match:
        name: en*
      mtu: 9000
";
        let (text, macs) = rewrite(NetKind::Netplan, src);
        let want = "\
network:
  version: 2
  renderer: networkd
  ethernets:
    # primary
    ens3:
      match: {name: \"e*\"}
      dhcp4: true
    bond-port:
      match:
        name: en*
      mtu: 9000
";
        assert_eq!(text, want);
        assert_eq!(macs, ["52:54:00:aa:bb:cc", "52:54:00:dd:ee:ff"]);
    }

    #[test]
    fn netplan_match_keeps_other_keys() {
        let src = "network:\n  ethernets:\n    id0:\n      match:\n        driver: ixgbe\n        macaddress: \"00:1B:21:0A:0B:0C\" # nic\n      dhcp6: true\n";
        let (text, macs) = rewrite(NetKind::Netplan, src);
        assert_eq!(text, "network:\n  ethernets:\n    id0:\n      match:\n        driver: ixgbe\n      dhcp6: true\n");
        assert_eq!(macs, ["00:1b:21:0a:0b:0c"]);
    }

    #[test]
    fn netplan_without_mac_is_unchanged() {
        let src = "# Let NetworkManager manage all devices on this system\nnetwork:\n  version: 2\n  renderer: NetworkManager\n";
        assert_eq!(neutralise(NetKind::Netplan, src), NetFix::Unchanged);
        let src = "network:\n  ethernets:\n    eth0:\n      dhcp4: true\n      match:\n        name: eth*\n";
        assert_eq!(neutralise(NetKind::Netplan, src), NetFix::Unchanged);
    }

    const NM: &str = "\
[connection]
id=Wired connection 1
uuid=4a0e0b0c-5a1e-3b1c-9d3e-0f2a3b4c5d6e
type=ethernet
autoconnect-priority=-999
timestamp=1700000000

[ethernet]
mac-address=52:54:00:12:34:56
cloned-mac-address=52:54:00:65:43:21

[ipv4]
method=auto

[ipv6]
addr-gen-mode=stable-privacy
method=auto

[proxy]
";

    #[test]
    fn nm_keyfile() {
        let (text, macs) = rewrite(NetKind::NmKeyfile, NM);
        assert_eq!(text, NM.replace("mac-address=52:54:00:12:34:56\ncloned-mac-address=52:54:00:65:43:21\n", ""));
        assert_eq!(macs, ["52:54:00:12:34:56", "52:54:00:65:43:21"]);
    }

    #[test]
    fn nm_keyfile_policies_and_other_sections_unchanged() {
        let src =
            "[connection]\nid=lan\ntype=ethernet\n\n[ethernet]\ncloned-mac-address=stable\nmac-address-blacklist=\n\n[ipv4]\nmethod=auto\n";
        assert_eq!(neutralise(NetKind::NmKeyfile, src), NetFix::Unchanged);
    }

    const IFCFG: &str = "\
# Generated by dracut initrd
NAME=\"eth0\"
HWADDR=\"52:54:00:12:34:56\"
ONBOOT=yes
NETBOOT=yes
UUID=\"b2d8a5d0-9b8c-4e3a-8f2c-1d2e3f4a5b6c\"
IPV6INIT=yes
BOOTPROTO=dhcp
TYPE=Ethernet
MACADDR=52-54-00-AB-CD-EF
";

    #[test]
    fn ifcfg_rhel() {
        let (text, macs) = rewrite(NetKind::Ifcfg, IFCFG);
        assert_eq!(
            text,
            "# Generated by dracut initrd\nNAME=\"eth0\"\nONBOOT=yes\nNETBOOT=yes\nUUID=\"b2d8a5d0-9b8c-4e3a-8f2c-1d2e3f4a5b6c\"\nIPV6INIT=yes\nBOOTPROTO=dhcp\nTYPE=Ethernet\n"
        );
        assert_eq!(macs, ["52:54:00:12:34:56", "52:54:00:ab:cd:ef"]);
        assert_eq!(neutralise(NetKind::Ifcfg, "DEVICE=lo\nIPADDR=127.0.0.1\nONBOOT=yes\n"), NetFix::Unchanged);
    }

    #[test]
    fn networkd_network() {
        let src =
            "[Match]\nMACAddress=52:54:00:12:34:56\n\n[Link]\nMACAddress=52:54:00:00:00:01\nRequiredForOnline=yes\n\n[Network]\nDHCP=yes\n";
        let (text, macs) = rewrite(NetKind::NetworkdNetwork, src);
        assert_eq!(text, "[Match]\nType=ether\n\n[Link]\nRequiredForOnline=yes\n\n[Network]\nDHCP=yes\n");
        assert_eq!(macs, ["52:54:00:12:34:56", "52:54:00:00:00:01"]);

        let src = "[Match]\nName=en*\nPermanentMACAddress=52:54:00:12:34:56 52:54:00:12:34:57\n\n[Network]\nDHCP=ipv4\n";
        let (text, macs) = rewrite(NetKind::NetworkdNetwork, src);
        assert_eq!(text, "[Match]\nName=en*\n\n[Network]\nDHCP=ipv4\n");
        assert_eq!(macs, ["52:54:00:12:34:56", "52:54:00:12:34:57"]);

        let src = "[Match]\nName=en*\n\n[Network]\nDHCP=yes\n";
        assert_eq!(neutralise(NetKind::NetworkdNetwork, src), NetFix::Unchanged);
    }

    #[test]
    fn networkd_link() {
        let src = "[Match]\nMACAddress=52:54:00:12:34:56\n\n[Link]\nName=lan0\n";
        assert_eq!(neutralise(NetKind::NetworkdLink, src), NetFix::Remove { macs: vec!["52:54:00:12:34:56".into()] });

        let src =
            "[Match]\nOriginalName=*\nMACAddress=52:54:00:12:34:56\n\n[Link]\nMACAddressPolicy=persistent\nMACAddress=02:00:00:00:00:01\n";
        let (text, macs) = rewrite(NetKind::NetworkdLink, src);
        assert_eq!(text, "[Match]\nOriginalName=*\n\n[Link]\nMACAddressPolicy=persistent\n");
        assert_eq!(macs, ["52:54:00:12:34:56", "02:00:00:00:00:01"]);

        let stock = "[Match]\nOriginalName=*\n\n[Link]\nNamePolicy=keep kernel database onboard slot path\nMACAddressPolicy=persistent\n";
        assert_eq!(neutralise(NetKind::NetworkdLink, stock), NetFix::Unchanged);
    }

    const UDEV: &str = "\
# This file was automatically generated by the /lib/udev/write_net_rules
# program, run by the persistent-net-generator.rules rules file.
#
# You can modify it, as long as you keep each rule on a single
# line, and change only the value of the NAME= key.

# PCI device 0x1af4:0x1000 (virtio-pci)
SUBSYSTEM==\"net\", ACTION==\"add\", DRIVERS==\"?*\", ATTR{address}==\"52:54:00:12:34:56\", ATTR{dev_id}==\"0x0\", ATTR{type}==\"1\", KERNEL==\"eth*\", NAME=\"eth0\"
";

    #[test]
    fn udev_persistent_net() {
        assert_eq!(neutralise(NetKind::UdevRules, UDEV), NetFix::Remove { macs: vec!["52:54:00:12:34:56".into()] });
        let mixed = format!("{UDEV}SUBSYSTEM==\"net\", KERNEL==\"wl*\", NAME=\"wlan0\"\n");
        let (text, macs) = rewrite(NetKind::UdevRules, &mixed);
        assert_eq!(text, format!("{}SUBSYSTEM==\"net\", KERNEL==\"wl*\", NAME=\"wlan0\"\n", UDEV.split("SUBSYSTEM").next().unwrap()));
        assert_eq!(macs, ["52:54:00:12:34:56"]);
        assert_eq!(neutralise(NetKind::UdevRules, "# empty\n"), NetFix::Unchanged);
    }

    #[test]
    fn crlf_and_missing_final_newline_kept() {
        let src = "[Match]\r\nMACAddress=52:54:00:12:34:56\r\n[Network]\r\nDHCP=yes";
        let (text, _) = rewrite(NetKind::NetworkdNetwork, src);
        assert_eq!(text, "[Match]\r\nType=ether\r\n[Network]\r\nDHCP=yes");
    }

    #[test]
    fn addresses_dhclient_lease() {
        let lease = "\
lease {
  interface \"eth0\";
  fixed-address 10.0.2.15;
  option subnet-mask 255.255.255.0;
  option routers 10.0.2.2;
  option dhcp-lease-time 86400;
  option dhcp-message-type 5;
  option domain-name-servers 10.0.2.3;
  option dhcp-server-identifier 10.0.2.2;
  option broadcast-address 10.0.2.255;
  option host-name \"upstream-builder\";
  renew 6 2026/11/21 22:27:52;
  rebind 0 2026/11/22 19:09:15;
  expire 0 2026/11/22 22:09:15;
}
";
        assert_eq!(addresses(lease), (vec![], vec!["10.0.2.15".to_string()]));
    }

    #[test]
    fn addresses_networkd_lease() {
        let lease = "# This is private data. Do not parse.\nADDRESS=10.0.2.15\nNETMASK=255.255.255.0\nROUTER=10.0.2.2\nSERVER_ADDRESS=10.0.2.2\nNEXT_SERVER=10.0.2.2\nBROADCAST=10.0.2.255\nT1=43200\nT2=75600\nLIFETIME=86400\nDNS=10.0.2.3\nNTP=10.0.2.3\nHOSTNAME=upstream-builder\nCLIENTID=ff5254001234560001\n";
        assert_eq!(addresses(lease), (vec![], vec!["10.0.2.15".to_string()]));
    }

    #[test]
    fn addresses_nm_ifcfg_netplan() {
        let nm = "[ethernet]\nmac-address=52:54:00:12:34:56\n\n[ipv4]\naddress1=192.168.122.10/24,192.168.122.1\ndns=192.168.122.1;\nmethod=manual\n\n[ipv6]\naddress1=fd00:1::10/64\nmethod=manual\n";
        assert_eq!(addresses(nm), (vec!["52:54:00:12:34:56".to_string()], vec!["192.168.122.10".to_string(), "fd00:1::10".to_string()]));
        let ifcfg = "DEVICE=eth0\nHWADDR=52-54-00-AB-CD-EF\nBOOTPROTO=none\nIPADDR=172.16.5.20\nPREFIX=24\nNETMASK=255.255.255.0\nGATEWAY=172.16.5.1\nDNS1=1.1.1.1\n";
        assert_eq!(addresses(ifcfg), (vec!["52:54:00:ab:cd:ef".to_string()], vec!["172.16.5.20".to_string()]));
        let netplan = "network:\n  ethernets:\n    eth0:\n      addresses: [10.10.0.7/16, \"2001:db8::7/64\"]\n      gateway4: 10.10.0.1\n      nameservers:\n        addresses: [8.8.8.8, 8.8.4.4]\n      routes:\n        - to: 0.0.0.0/0\n          via: 10.10.0.1\n      match:\n        macaddress: 52:54:00:12:34:56\n";
        assert_eq!(addresses(netplan), (vec!["52:54:00:12:34:56".to_string()], vec!["10.10.0.7".to_string(), "2001:db8::7".to_string()]));
    }

    #[test]
    fn addresses_ignore_loopback_and_bare_numbers() {
        let text = "127.0.0.1 localhost\n::1 ip6-localhost\nversion 1.2.3\nff02::1 ip6-allnodes\n12:34:56\n";
        assert_eq!(addresses(text), (vec![], vec![]));
    }
}
