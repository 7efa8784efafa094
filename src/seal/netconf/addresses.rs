//! MAC values, and the MACs and IP addresses held by configuration and lease files.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::edit::push_unique;
use super::netplan::yaml_key;

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
mod tests {
    use super::*;

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
