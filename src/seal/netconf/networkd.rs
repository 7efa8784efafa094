//! systemd-networkd `.network` and `.link` files (`/etc/systemd/network/`).

use super::NetFix;
use super::edit::{Edit, fix, ini_kv, ini_section, macs_in_value, push_unique};

pub(super) fn networkd(text: &str, link: bool) -> NetFix {
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

#[cfg(test)]
mod tests {
    use super::super::tests::rewrite;
    use super::super::{NetFix, NetKind, neutralise};

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

    #[test]
    fn crlf_and_missing_final_newline_kept() {
        let src = "[Match]\r\nMACAddress=52:54:00:12:34:56\r\n[Network]\r\nDHCP=yes";
        let (text, _) = rewrite(NetKind::NetworkdNetwork, src);
        assert_eq!(text, "[Match]\r\nType=ether\r\n[Network]\r\nDHCP=yes");
    }
}
