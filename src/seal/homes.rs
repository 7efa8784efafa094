//! Home directories of the image's accounts: /root, every home in /etc/passwd that lies inside
//! the image's usual places, and every directory under /home.

use std::collections::BTreeSet;

use super::scrub::{Kind, Scrubber, join};
use crate::chroot::resolve::ResolveError;

/// One passwd entry (the fields sealing needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: String,
}

/// Parses /etc/passwd text. Pure.
pub fn parse_passwd(text: &str) -> Vec<Account> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let (name, uid, gid, home) = (f.first()?, f.get(2)?, f.get(3)?, f.get(5)?);
            Some(Account { name: (*name).to_string(), uid: uid.parse().ok()?, gid: gid.parse().ok()?, home: (*home).to_string() })
        })
        .collect()
}

/// Home directories that exist as real directories (never through a symlink).
pub fn homes(s: &Scrubber) -> Result<Vec<String>, ResolveError> {
    let mut set = BTreeSet::from(["/root".to_string()]);
    if let Some(p) = s.read("/etc/passwd")? {
        for a in parse_passwd(&String::from_utf8_lossy(&p)) {
            let usual = a.home.starts_with("/home/") || a.home.starts_with("/root") || a.home.starts_with("/var/lib/");
            if usual && !a.home.contains("/../") {
                set.insert(a.home.trim_end_matches('/').to_string());
            }
        }
    }
    for name in s.list("/home")? {
        set.insert(join("/home", &name));
    }
    let mut out = Vec::new();
    for h in set {
        if s.kind_of(&h)? == Some(Kind::Dir) {
            out.push(h);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn passwd() {
        let a = parse_passwd("root:x:0:0:root:/root:/bin/bash\n# c\nbad\ndebian:x:1000:1000:Debian,,,:/home/debian:/bin/bash\n");
        assert_eq!(a.len(), 2);
        assert_eq!(a[1], Account { name: "debian".into(), uid: 1000, gid: 1000, home: "/home/debian".into() });
    }
}
