//! `[system]` and `[[user]]`: the image's time zone, locale, first-boot host name, root password
//! and users, set without a shell step. Checked here into a provisioning step
//! (`provision::accounts`) that runs before the recipe's provisioners, so they can use the users.
//! Also `[[firstboot]]`: scripts for the image's first boot (`provision::firstboot`), installed
//! after the provisioners.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::error::RecipeError;
use super::parse::Src;
use crate::provision::plan::{AccountsPlan, FirstbootPlan, Password, UserPlan};

/// `[system]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct System {
    /// `Europe/Oslo`: /etc/localtime and /etc/timezone.
    pub timezone: Option<Spanned<String>>,
    /// `en_US.UTF-8`: LANG in /etc/default/locale and /etc/locale.conf (generated when the image
    /// has locale-gen).
    pub locale: Option<Spanned<String>>,
    /// The name the image boots with (the seal writes it to /etc/hostname).
    pub hostname: Option<Spanned<String>>,
    /// `locked` (default), `random`, `keep`, or a crypt(3) hash.
    pub root_password: Option<Spanned<String>>,
}

/// `[[user]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Login name.
    pub name: Spanned<String>,
    /// Supplementary groups (they must exist in the image).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Login shell (default: the image's useradd default).
    pub shell: Option<String>,
    /// Fixed uid.
    pub uid: Option<u32>,
    /// Public keys: key lines, or files (relative to the recipe) holding them.
    #[serde(default)]
    pub authorized_keys: Vec<Spanned<String>>,
    /// `locked` (default), `random`, or a crypt(3) hash.
    pub password: Option<Spanned<String>>,
}

/// The accounts step of a recipe, or `None` when it has neither `[system]` (other than
/// `hostname`) nor `[[user]]`.
pub fn plan(src: Src<'_>, dir: &Path, system: Option<&System>, users: &[User]) -> Result<Option<AccountsPlan>, RecipeError> {
    let hint = "see the README's recipe reference, [system] and [[user]]";
    let sys = system.map_or((None, None, None), |s| (s.timezone.as_ref(), s.locale.as_ref(), s.root_password.as_ref()));
    if sys.0.is_none() && sys.1.is_none() && sys.2.is_none() && users.is_empty() {
        return Ok(None);
    }
    let timezone = match sys.0 {
        Some(t) => {
            let v = t.get_ref();
            let ok = !v.is_empty()
                && !v.starts_with('/')
                && v.split('/').all(|c| !c.is_empty() && c != ".." && c != ".")
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"/_-+".contains(&b));
            if !ok {
                return Err(src.at(t.span(), format!("[system] timezone `{v}` is not a zone name like Europe/Oslo or Etc/UTC")).hint(hint));
            }
            Some(v.clone())
        }
        None => None,
    };
    let locale = match sys.1 {
        Some(l) => {
            let v = l.get_ref();
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b)) {
                return Err(src.at(l.span(), format!("[system] locale `{v}` is not a locale name like en_US.UTF-8")).hint(hint));
            }
            Some(v.clone())
        }
        None => None,
    };
    let root_password = match sys.2 {
        Some(p) if p.get_ref() == "keep" => Password::Keep,
        Some(p) => password(src, p, "[system] root_password")?,
        None => Password::Locked,
    };
    let mut out = Vec::new();
    let mut seen = BTreeMap::new();
    for (i, u) in users.iter().enumerate() {
        let name = u.name.get_ref();
        let valid = !name.is_empty()
            && name.len() <= 32
            && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b));
        if !valid {
            return Err(src
                .at(u.name.span(), format!("[[user]] #{}: `{name}` is not a user name ([a-z_][a-z0-9_-]*, at most 32)", i + 1))
                .hint(hint));
        }
        if name == "root" {
            return Err(src.at(u.name.span(), "[[user]] root: set root's password with [system] root_password").hint(hint));
        }
        if let Some(first) = seen.insert(name.clone(), i) {
            return Err(src.at(u.name.span(), format!("[[user]] `{name}` is given twice (#{} and #{})", first + 1, i + 1)));
        }
        for g in &u.groups {
            if g.is_empty() || !g.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b)) {
                return Err(src.at(u.name.span(), format!("[[user]] {name}: `{g}` is not a group name")).hint(hint));
            }
        }
        if let Some(s) = &u.shell
            && !s.starts_with('/')
        {
            return Err(src.at(u.name.span(), format!("[[user]] {name}: shell `{s}` must be an absolute path in the image")).hint(hint));
        }
        let mut keys = Vec::new();
        for k in &u.authorized_keys {
            let v = k.get_ref().trim();
            if looks_like_key(v) {
                keys.push(v.to_string());
                continue;
            }
            let path = dir.join(v);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                src.at(
                    k.span(),
                    format!(
                        "[[user]] {name}: authorized_keys `{v}` is neither a public key line nor a readable file ({}: {e})",
                        path.display()
                    ),
                )
                .hint("give a key line (ssh-ed25519 AAAA… comment) or a .pub file relative to the recipe")
            })?;
            let lines: Vec<String> =
                text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string).collect();
            if let Some(bad) = lines.iter().find(|l| !looks_like_key(l)) {
                return Err(src.at(k.span(), format!("[[user]] {name}: {} holds a line that is no public key: {bad:.40}", path.display())));
            }
            keys.extend(lines);
        }
        let password = match &u.password {
            Some(p) => password(src, p, &format!("[[user]] {name} password"))?,
            None => Password::Locked,
        };
        out.push(UserPlan { name: name.clone(), groups: u.groups.clone(), shell: u.shell.clone(), uid: u.uid, keys, password });
    }
    Ok(Some(AccountsPlan { timezone, locale, root_password, users: out }))
}

/// `locked`, `random`, or a crypt(3) hash (`$6$…`, `$y$…`, `$5$…`, `$2b$…`).
fn password(src: Src<'_>, p: &Spanned<String>, what: &str) -> Result<Password, RecipeError> {
    match p.get_ref().as_str() {
        "locked" => Ok(Password::Locked),
        "random" => Ok(Password::Random),
        h if ["$6$", "$5$", "$y$", "$2b$", "$2y$", "$gy$"].iter().any(|x| h.starts_with(x)) && !h.contains(':') && !h.contains('\n') => {
            Ok(Password::Hash(h.to_string()))
        }
        _ => Err(src
            .at(p.span(), format!("{what}: `locked`, `random`, or a crypt(3) hash such as `$6$…` (never a clear-text password)"))
            .hint("make a hash with `openssl passwd -6` or `mkpasswd -m yescrypt`")),
    }
}

/// An OpenSSH public key line (with options or not). Pure.
fn looks_like_key(l: &str) -> bool {
    l.split_whitespace()
        .any(|w| w.starts_with("ssh-") || w.starts_with("ecdsa-sha2-") || w.starts_with("sk-ssh-") || w.starts_with("sk-ecdsa-"))
        && l.split_whitespace().any(|w| w.starts_with("AAAA"))
}

/// `[[firstboot]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Firstboot {
    /// A label (default `firstboot-N`).
    pub name: Option<String>,
    /// Lines run by `/bin/sh -e` …
    pub inline: Option<Vec<String>>,
    /// … or a script file (relative to the recipe; run directly when it has a `#!` line).
    pub script: Option<Spanned<String>>,
}

/// The first-boot step, or `None` without `[[firstboot]]`.
pub fn firstboot(src: Src<'_>, dir: &Path, entries: &[Spanned<Firstboot>]) -> Result<Option<FirstbootPlan>, RecipeError> {
    if entries.is_empty() {
        return Ok(None);
    }
    let mut scripts = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let f = e.get_ref();
        let name: String = f
            .name
            .clone()
            .unwrap_or_else(|| format!("firstboot-{}", i + 1))
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' })
            .collect();
        let body = match (&f.inline, &f.script) {
            (Some(lines), None) => (lines.join("\n") + "\n").into_bytes(),
            (None, Some(p)) => std::fs::read(dir.join(p.get_ref())).map_err(|err| {
                src.at(p.span(), format!("[[firstboot]] #{}: cannot read {}: {err}", i + 1, dir.join(p.get_ref()).display()))
                    .hint("paths are relative to the recipe's directory")
            })?,
            _ => return Err(src.at(e.span(), format!("[[firstboot]] #{}: give exactly one of `inline` and `script`", i + 1))),
        };
        scripts.push((name, body));
    }
    Ok(Some(FirstbootPlan { scripts }))
}
