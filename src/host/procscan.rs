//! Finds processes that use a directory tree (root, cwd or open files under it).

use std::path::Path;

/// One process found using a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Process id.
    pub pid: i32,
    /// Its command line (or comm), shortened.
    pub command: String,
}

/// Processes whose root, cwd or any open fd lies at or below `dir`.
pub fn users_of(dir: &Path) -> Vec<User> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| uses(*pid, dir))
        .map(|pid| User { pid, command: command_of(pid) })
        .collect()
}

/// Like `users_of`, without this process.
pub fn others_using(dir: &Path) -> Vec<User> {
    let me = std::process::id() as i32;
    users_of(dir).into_iter().filter(|u| u.pid != me).collect()
}

fn uses(pid: i32, dir: &Path) -> bool {
    let base = format!("/proc/{pid}");
    let under = |link: &str| std::fs::read_link(format!("{base}/{link}")).is_ok_and(|t| t.starts_with(dir));
    if under("root") || under("cwd") {
        return true;
    }
    let Ok(fds) = std::fs::read_dir(format!("{base}/fd")) else {
        return false;
    };
    fds.filter_map(|e| e.ok()).any(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.starts_with(dir)))
}

/// The command line of a process, NULs as spaces, at most 120 characters.
pub fn command_of(pid: i32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut s: String = String::from_utf8_lossy(&raw).replace('\0', " ").trim().to_string();
    if s.is_empty() {
        s = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_string();
    }
    s.chars().take(120).collect()
}

/// "; still in use by pid 12 (sleep 1000), pid 13 (gpg-agent)" or "".
pub fn describe(users: &[User]) -> String {
    if users.is_empty() {
        return String::new();
    }
    let list: Vec<String> = users.iter().map(|u| format!("pid {} ({})", u.pid, u.command)).collect();
    format!("; still in use by {}", list.join(", "))
}
