//! Minimal sealing so the output is a usable template: SSH host keys removed (and something in
//! the image regenerates them on first boot), machine-id emptied, never deleted. Every path is
//! resolved inside the image root. The full catalogue of operations comes later.

use std::path::Path;

use crate::chroot::resolve::{ResolveError, Root};

/// What sealing did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SealReport {
    /// Paths removed.
    pub removed: Vec<String>,
    /// Paths rewritten or created.
    pub rewritten: Vec<String>,
    /// How SSH host keys come back on first boot.
    pub ssh_regenerator: Option<String>,
}

/// The oneshot unit installed when nothing else in the image regenerates SSH host keys.
pub const KEYGEN_UNIT: &str = "[Unit]\nDescription=Generate SSH host keys on first boot (installed by imgforge)\nConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key\nBefore=ssh.service sshd.service\n\n[Service]\nType=oneshot\nExecStart=/usr/bin/ssh-keygen -A\n\n[Install]\nWantedBy=multi-user.target ssh.service sshd.service\n";

const KEYGEN_UNIT_PATH: &str = "/etc/systemd/system/imgforge-ssh-keygen.service";

/// Runs the minimal seal.
pub fn minimal(root: &Root) -> Result<SealReport, ResolveError> {
    let mut report = SealReport::default();
    ssh_host_keys(root, &mut report)?;
    machine_id(root, &mut report)?;
    Ok(report)
}

fn ssh_host_keys(root: &Root, report: &mut SealReport) -> Result<(), ResolveError> {
    for name in root.list(Path::new("/etc/ssh"))? {
        let name = name.to_string_lossy();
        if name.starts_with("ssh_host_") {
            let p = format!("/etc/ssh/{name}");
            if root.remove_file(Path::new(&p))? {
                report.removed.push(p);
            }
        }
    }
    if !root.exists(Path::new("/usr/sbin/sshd"))? {
        return Ok(());
    }
    let known = [
        "/usr/lib/systemd/system/sshd-keygen.service",
        "/usr/lib/systemd/system/sshd-keygen@.service",
        "/lib/systemd/system/sshd-keygen.service",
    ];
    for k in known {
        if root.exists(Path::new(k))? {
            report.ssh_regenerator = Some(k.to_string());
            return Ok(());
        }
    }
    // Install our own oneshot and enable it for both unit names sshd has across distros.
    root.mkdir_all(Path::new("/etc/systemd/system/multi-user.target.wants"), 0o755)?;
    root.write(Path::new(KEYGEN_UNIT_PATH), KEYGEN_UNIT.as_bytes(), 0o644)?;
    let link = Path::new("/etc/systemd/system/multi-user.target.wants/imgforge-ssh-keygen.service");
    root.remove_file(link)?;
    root.symlink(Path::new(KEYGEN_UNIT_PATH), link)?;
    report.rewritten.extend([KEYGEN_UNIT_PATH.to_string(), link.display().to_string()]);
    report.ssh_regenerator = Some(KEYGEN_UNIT_PATH.to_string());
    Ok(())
}

fn machine_id(root: &Root, report: &mut SealReport) -> Result<(), ResolveError> {
    let etc = Path::new("/etc/machine-id");
    let is_regular = root.lstat(etc)?.is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG);
    if is_regular {
        root.write(etc, b"", 0o444)?;
    } else {
        // Absent, or a symlink (possibly pointing out of the image): an empty regular file.
        let f = root.create_replacing(etc, 0o444)?;
        drop(f);
    }
    report.rewritten.push(etc.display().to_string());
    let dbus = Path::new("/var/lib/dbus/machine-id");
    if root.lstat(dbus)?.is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG) {
        root.remove_file(dbus)?;
        root.symlink(Path::new("/etc/machine-id"), dbus)?;
        report.rewritten.push(dbus.display().to_string());
    }
    Ok(())
}
