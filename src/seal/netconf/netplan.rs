//! Netplan: YAML, edited line by line. The parser is hand-written on purpose: a YAML library
//! would lose the comments and formatting the rewrite must keep.

use std::collections::HashSet;

use super::NetFix;
use super::edit::{Edit, body, fix, macs_in_value, push_unique, unquote};

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
pub(super) fn yaml_key(t: &str) -> Option<(String, String)> {
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

/// One device stanza under `network.<device type>:` and what in it names a MAC.
#[derive(Default)]
struct Device {
    /// The stanza's first line, and one past its last.
    line: usize,
    end: usize,
    /// The device type (`ethernets`, `wifis`, ...).
    kind: String,
    /// The `match:` line, and its items if it is a one-line flow mapping.
    match_line: Option<usize>,
    match_flow: Option<Vec<(String, String)>>,
    /// The `macaddress:` lines of a block `match:`, and how many other keys it holds.
    match_mac_lines: Vec<usize>,
    match_other: usize,
    /// The `set-name:` lines.
    set_name: Vec<usize>,
    /// The `macaddress:` lines that set the device's MAC.
    set_mac: Vec<usize>,
    /// The MACs `match:` binds.
    macs: Vec<String>,
    /// The MACs the `set_mac` lines set.
    set_macs: Vec<String>,
}

const DEVICE_TYPES: [&str; 10] =
    ["ethernets", "wifis", "bonds", "bridges", "vlans", "tunnels", "modems", "vrfs", "dummy-devices", "virtual-ethernets"];

pub(super) fn netplan(text: &str) -> NetFix {
    let mut edit = Edit::new(text);
    let ys = yaml_lines(&edit.lines);
    let devices: Vec<Device> = ys.iter().enumerate().filter(|(_, y)| opens_device(y)).map(|(i, _)| device(&ys, i)).collect();
    let mut macs = Vec::new();
    let mut kept_kinds: HashSet<String> = HashSet::new();
    for d in &devices {
        unbind(&mut edit, &ys, d, &mut kept_kinds, &mut macs);
    }
    fix(&edit, macs)
}

/// Whether `y` opens a device stanza: a key directly under `network.<device type>:`.
fn opens_device(y: &YLine) -> bool {
    y.key.is_some() && y.path.len() == 2 && y.path[0] == "network" && DEVICE_TYPES.contains(&y.path[1].as_str())
}

/// The device stanza that line `i` opens (see [`opens_device`]).
fn device(ys: &[YLine], i: usize) -> Device {
    let y = &ys[i];
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
    let mut d = Device { line: i, end, kind: y.path[1].clone(), ..Device::default() };
    for (j, z) in ys.iter().enumerate().take(end).skip(i + 1) {
        let Some(key) = &z.key else {
            // A list item directly under `match:` still counts as content.
            continue;
        };
        match z.path.len() {
            3 => d.stanza_key(j, key, &z.value),
            4 if z.path[3] == "match" => d.match_key(j, key, &z.value),
            _ => {}
        }
    }
    d
}

impl Device {
    /// Line `j`, `key: value` directly in the stanza.
    fn stanza_key(&mut self, j: usize, key: &str, value: &str) {
        match key {
            "match" => {
                self.match_line = Some(j);
                if value.starts_with('{')
                    && let Some(items) = flow_items(value)
                {
                    for (k, v) in &items {
                        if k == "macaddress" {
                            push_unique(&mut self.macs, macs_in_value(v));
                        }
                    }
                    self.match_flow = Some(items);
                }
            }
            "set-name" => self.set_name.push(j),
            "macaddress" => {
                self.set_mac.push(j);
                push_unique(&mut self.set_macs, macs_in_value(value));
            }
            _ => {}
        }
    }

    /// Line `j`, `key: value` in the stanza's block `match:`.
    fn match_key(&mut self, j: usize, key: &str, value: &str) {
        if key == "macaddress" {
            self.match_mac_lines.push(j);
            push_unique(&mut self.macs, macs_in_value(value));
        } else {
            self.match_other += 1;
        }
    }
}

/// Drops the MACs `d` sets, and for an ethernet or wifi stanza the MAC it matches (adding the
/// MACs to `macs`): the first MAC-bound stanza of its type then matches any NIC of that type
/// by name, a later one is dropped. `kept_kinds` holds the types whose stanza was kept.
fn unbind(edit: &mut Edit<'_>, ys: &[YLine], d: &Device, kept_kinds: &mut HashSet<String>, macs: &mut Vec<String>) {
    for &j in &d.set_mac {
        edit.drop[j] = true;
    }
    push_unique(macs, d.set_macs.iter().cloned());
    let glob = match d.kind.as_str() {
        "ethernets" => "e*",
        "wifis" => "w*",
        _ => return,
    };
    if d.macs.is_empty() {
        return;
    }
    push_unique(macs, d.macs.iter().cloned());
    if !kept_kinds.insert(d.kind.clone()) {
        // A second MAC-bound stanza would match the same NICs as the first: drop it.
        for j in d.line..d.end {
            edit.drop[j] = true;
        }
        return;
    }
    for &j in d.set_name.iter().chain(&d.match_mac_lines) {
        edit.drop[j] = true;
    }
    rematch(edit, ys, d, glob);
}

/// Rewrites `d`'s `match:`, its MAC gone, to match names `glob` if nothing else is left in it.
fn rematch(edit: &mut Edit<'_>, ys: &[YLine], d: &Device, glob: &str) {
    let Some(m) = d.match_line else { return };
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

#[cfg(test)]
mod tests {
    use super::super::tests::rewrite;
    use super::super::{NetFix, NetKind, neutralise};

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
}
