//! SELinux labels for what the build wrote. When the image's `/etc/selinux/config` says
//! `enforcing` or `permissive`, every file the build created or replaced needs the label the
//! image's policy gives its path, or the image boots with unlabelled files (denials under
//! enforcing). After the seal, the image's own `setfiles` relabels its filesystems against the
//! image's own `file_contexts` (in the build sandbox; the host's kernel need not run SELinux:
//! labels are extended attributes). Where it cannot run (no `setfiles`, no policy, or it fails),
//! `/.autorelabel` is planted so the first boot relabels, and the report says why.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};

use crate::chroot::cmd::ChrootCmd;
use crate::chroot::resolve::Root;
use crate::progress::Events;

/// What the image's SELinux configuration says and what the build did about it (manifest).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct SelinuxReport {
    /// `SELINUX=`: "enforcing" or "permissive".
    pub mode: String,
    /// `SELINUXTYPE=`: the policy ("targeted", "default", …).
    pub policy: String,
    /// "setfiles" (labels written by the build) or "autorelabel" (left to the first boot).
    pub relabel: String,
    /// The trees relabelled (image paths), or why the first boot relabels.
    pub detail: String,
    /// Seconds the relabel took.
    pub seconds: f64,
}

/// `(mode, policy)` from `/etc/selinux/config` when SELinux is on; `None` when the file is
/// missing or says `disabled`.
pub fn config(root: &Root) -> anyhow::Result<Option<(String, String)>> {
    let Some(bytes) = root.read(Path::new("/etc/selinux/config"))? else { return Ok(None) };
    Ok(parse_config(&String::from_utf8_lossy(&bytes)))
}

/// Parses `SELINUX=` and `SELINUXTYPE=` (shell-style, comments and quotes allowed). Pure.
fn parse_config(text: &str) -> Option<(String, String)> {
    let mut mode = None;
    let mut policy = String::from("targeted");
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else { continue };
        let v = v.trim().trim_matches(|c| c == '"' || c == '\'').to_string();
        match k.trim() {
            "SELINUX" => mode = Some(v.to_ascii_lowercase()),
            "SELINUXTYPE" if !v.is_empty() => policy = v,
            _ => {}
        }
    }
    mode.filter(|m| m == "enforcing" || m == "permissive").map(|m| (m, policy))
}

/// The image's setfiles, if it has one.
fn setfiles(root: &Root) -> Option<&'static str> {
    ["/usr/sbin/setfiles", "/sbin/setfiles"].into_iter().find(|p| root.exists(Path::new(p)).unwrap_or(false))
}

/// Relabels the image when its SELinux configuration asks for labels; `None` when SELinux is
/// off. `filesystems` are the image's mounted filesystems (mount point, type): those that cannot
/// hold labels (vfat) are left out, as are the build's pseudo filesystems.
///
/// The image's `setfiles` runs in the build sandbox, which may not write `security.*`
/// attributes (a user namespace); so it only says what each label must be (`-n -v`), imgforge
/// writes the labels through the image root (never following a symlink), and a second
/// `setfiles -n` confirms nothing is left to change.
pub fn relabel(root: &Root, filesystems: &[(String, String)], events: &Events) -> anyhow::Result<Option<SelinuxReport>> {
    let Some((mode, policy)) = config(root)? else { return Ok(None) };
    let started = Instant::now();
    let contexts = format!("/etc/selinux/{policy}/contexts/files/file_contexts");
    let trees: Vec<&str> = filesystems.iter().filter(|(_, t)| holds_labels(t)).map(|(m, _)| m.as_str()).collect();
    let why = match setfiles(root) {
        None => format!("the image has no setfiles (install policycoreutils) for its {mode} SELinux"),
        Some(_) if !root.exists(Path::new(&contexts))? => format!("the image's {policy} policy has no {contexts}"),
        Some(prog) => {
            let cmd = setfiles_cmd(root, prog, &contexts, filesystems, &trees);
            match apply(root, &cmd) {
                Ok(changed) => {
                    let detail = format!("{} ({changed} labels written)", trees.join(" "));
                    events.output("selinux", &format!("relabelled {detail} with the image's {policy} policy ({mode})"));
                    let seconds = started.elapsed().as_secs_f64();
                    return Ok(Some(SelinuxReport { mode, policy, relabel: "setfiles".into(), detail, seconds }));
                }
                Err(e) => format!("relabelling with the image's setfiles failed: {e:#}"),
            }
        }
    };
    root.write_replacing(Path::new("/.autorelabel"), b"", 0o644)?;
    events.notice(&format!("SELinux ({mode}): {why}; planted /.autorelabel, so the first boot relabels (and reboots once)"));
    Ok(Some(SelinuxReport { mode, policy, relabel: "autorelabel".into(), detail: why, seconds: started.elapsed().as_secs_f64() }))
}

/// `setfiles -n -v -F -m` over the label-holding filesystems: prints what it would change.
fn setfiles_cmd(root: &Root, prog: &str, contexts: &str, filesystems: &[(String, String)], trees: &[&str]) -> ChrootCmd {
    // -m: not /proc/mounts (on a host without SELinux no mount says `seclabel`, and every one
    // would be skipped); the pseudo filesystems and vfat are excluded by name instead.
    let mut cmd = ChrootCmd::new(root.path(), prog).args(["-n", "-v", "-F", "-m"]);
    for skip in ["/proc", "/sys", "/dev", "/run"] {
        cmd = cmd.args(["-e", skip]);
    }
    for (target, fstype) in filesystems {
        if !holds_labels(fstype) {
            cmd = cmd.args(["-e", target.as_str()]);
        }
    }
    // setfiles stays on the filesystem it starts in: each mount point is walked on its own.
    cmd.arg(contexts).args(trees.iter().copied())
}

/// Runs `cmd` (a `setfiles -n -v`) and returns its relabel lines, parsed.
fn wanted(cmd: &ChrootCmd) -> anyhow::Result<Vec<(String, String)>> {
    let child = cmd.spawn(std::process::Stdio::piped(), std::process::Stdio::piped())?;
    let out = child.wait_with_output().context("Failed to wait for setfiles")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last: Vec<&str> = err.lines().rev().take(5).collect();
        bail!("setfiles exited with {}: {}", out.status, last.into_iter().rev().collect::<Vec<_>>().join("; "));
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().filter_map(parse_line).collect())
}

/// Writes the labels `setfiles` asks for, then asks again: nothing may be left. Returns how
/// many labels were written.
fn apply(root: &Root, cmd: &ChrootCmd) -> anyhow::Result<usize> {
    let todo = wanted(cmd)?;
    for (path, context) in &todo {
        let mut value = context.as_bytes().to_vec();
        value.push(0);
        root.set_xattr(Path::new(path), "security.selinux", &value).with_context(|| format!("Failed to label {path} {context}"))?;
    }
    let left = wanted(cmd)?;
    if let Some((path, context)) = left.first() {
        bail!("{} labels still differ after relabelling, e.g. {path} (wants {context})", left.len());
    }
    Ok(todo.len())
}

/// `Would relabel PATH from OLD to NEW` → (PATH, NEW). Contexts hold no spaces; a path may.
/// Pure.
fn parse_line(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix("Would relabel ")?;
    let (left, new) = rest.rsplit_once(" to ")?;
    let (path, _old) = left.rsplit_once(" from ")?;
    let ok = path.starts_with('/') && !new.is_empty() && new.split(':').count() >= 3 && !new.contains(char::is_whitespace);
    ok.then(|| (path.to_string(), new.to_string()))
}

/// Whether a filesystem type stores SELinux labels (extended attributes in the security
/// namespace).
fn holds_labels(fstype: &str) -> bool {
    matches!(fstype, "ext2" | "ext3" | "ext4" | "xfs" | "btrfs")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_modes() {
        let debian = "# This file controls the state of SELinux\nSELINUX=permissive\nSELINUXTYPE=default\n";
        assert_eq!(parse_config(debian), Some(("permissive".into(), "default".into())));
        assert_eq!(parse_config("SELINUX=\"Enforcing\"\n"), Some(("enforcing".into(), "targeted".into())));
        assert_eq!(parse_config("SELINUX=disabled\nSELINUXTYPE=targeted\n"), None);
        assert_eq!(parse_config("#SELINUX=enforcing\n"), None);
        assert_eq!(parse_config(""), None);
    }

    #[test]
    fn label_holding_filesystems() {
        assert!(holds_labels("xfs") && holds_labels("ext4"));
        assert!(!holds_labels("vfat") && !holds_labels(""));
    }

    #[test]
    fn setfiles_lines() {
        // As Debian's setfiles 3.4 prints them (`-n -v`), a path with " from " and " to " in it.
        let l = "Would relabel /etc/a file from x to y from (null) to system_u:object_r:etc_t:s0";
        assert_eq!(parse_line(l), Some(("/etc/a file from x to y".into(), "system_u:object_r:etc_t:s0".into())));
        let l = "Would relabel /usr/bin/ls from system_u:object_r:default_t:s0 to system_u:object_r:bin_t:s0";
        assert_eq!(parse_line(l), Some(("/usr/bin/ls".into(), "system_u:object_r:bin_t:s0".into())));
        assert_eq!(parse_line("setfiles: conflicting specifications"), None);
        assert_eq!(parse_line("Would relabel relative from (null) to a:b:c"), None);
        assert_eq!(parse_line("Would relabel /x from (null) to nocolons"), None);
    }
}
