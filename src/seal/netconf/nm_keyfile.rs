//! NetworkManager keyfiles (`/etc/NetworkManager/system-connections/*`).

use super::NetFix;
use super::edit::{Edit, fix, ini_kv, ini_section, macs_in_value, push_unique};

pub(super) fn nm_keyfile(text: &str) -> NetFix {
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

#[cfg(test)]
mod tests {
    use super::super::tests::rewrite;
    use super::super::{NetFix, NetKind, neutralise};

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
}
