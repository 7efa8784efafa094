//! "user:group" → uid/gid, looked up in the IMAGE's /etc/passwd and /etc/group, never the host's.

use std::path::Path;

use anyhow::{Context, bail};

use crate::chroot::resolve::Root;

/// Numeric owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    /// uid.
    pub uid: u32,
    /// gid.
    pub gid: u32,
}

/// Looks `name` up in a passwd/group text (field 0 = name, field 2 = id). Pure.
pub fn lookup(db: &str, name: &str) -> Option<(u32, Option<u32>)> {
    db.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        match f.as_slice() {
            [n, _, id, rest @ ..] if *n == name => Some((id.parse().ok()?, rest.first().and_then(|g| g.parse().ok()))),
            _ => None,
        }
    })
}

/// Resolves an owner spec against the image (default root:root). A user without a group takes
/// the user's primary group.
pub fn resolve(root: &Root, spec: Option<&str>) -> anyhow::Result<Ids> {
    let Some(spec) = spec else {
        return Ok(Ids { uid: 0, gid: 0 });
    };
    let (user, group) = spec.split_once(':').map_or((spec, None), |(u, g)| (u, Some(g)));
    let read = |p: &str| -> anyhow::Result<String> {
        let bytes = root.read(Path::new(p))?.unwrap_or_default();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    let (uid, primary) = match user.parse::<u32>() {
        Ok(n) => (n, None),
        Err(_) => lookup(&read("/etc/passwd")?, user).with_context(|| format!("user `{user}` is not in the image's /etc/passwd"))?,
    };
    let gid = match group {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => lookup(&read("/etc/group")?, g)
                .map(|(id, _)| id)
                .with_context(|| format!("group `{g}` is not in the image's /etc/group"))?,
        },
        None => match primary {
            Some(g) => g,
            None if user.parse::<u32>().is_ok() => uid,
            None => bail!("user `{user}` has no primary group in the image's /etc/passwd"),
        },
    };
    Ok(Ids { uid, gid })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\ndebian:x:1000:1001::/home/debian:/bin/bash\n";
        assert_eq!(lookup(passwd, "debian"), Some((1000, Some(1001))));
        assert_eq!(lookup(passwd, "nobody"), None);
        assert_eq!(lookup("web:x:33:\n", "web"), Some((33, None)));
    }
}
