//! Test fixture: a real PostgreSQL server (Debian's postgresql package) in a temporary
//! directory, on a free loopback port, trust authentication, stopped on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running server.
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// `postgres://imgforge@127.0.0.1:PORT/postgres`
    pub url: String,
}

fn strict() -> bool {
    let on = |v: &str| std::env::var(v).is_ok_and(|x| matches!(x.trim(), "1" | "true" | "yes"));
    on("CI") || on("IMGFORGE_STRICT")
}

/// Records a skip (target/test-skips.log, counted by scripts/test); a failure under CI.
fn skip(test: &str, why: &str) {
    use std::io::Write;
    let line = format!("skipped {test}: {why}");
    let log = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-skips.log");
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&log) {
        let _ = writeln!(f, "{line}");
    }
    eprintln!("{line}");
    assert!(!strict(), "{line} (a skip is a failure under CI=true or IMGFORGE_STRICT=1: run scripts/setup --tests)");
}

/// The newest installed server's bin directory (/usr/lib/postgresql/N/bin).
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, b): &(u32, PathBuf)| b.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

fn as_postgres(bin: &Path, tool: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new("runuser").args(["-u", "postgres", "--"]).arg(bin.join(tool)).args(args).output().unwrap();
    assert!(out.status.success(), "{tool} {args:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

impl PgServer {
    /// Starts a server, or records a skip for `test` and returns `None`.
    pub fn start(test: &str) -> Option<Self> {
        let Some(bin) = bin_dir() else {
            skip(test, "needs Debian's postgresql package (scripts/setup --tests)");
            return None;
        };
        if !nix::unistd::geteuid().is_root() || nix::unistd::User::from_name("postgres").ok().flatten().is_none() {
            skip(test, "needs root and the postgres user (to run the server as postgres)");
            return None;
        }
        let dir = tempfile::Builder::new().prefix("imgforge-pg-").tempdir().unwrap();
        let pg = nix::unistd::User::from_name("postgres").unwrap().unwrap();
        nix::unistd::chown(dir.path(), Some(pg.uid), Some(pg.gid)).unwrap();
        let data = dir.path().join("data");
        let d = data.to_str().unwrap();
        as_postgres(&bin, "initdb", &["-D", d, "-A", "trust", "-U", "imgforge", "-E", "UTF8", "--no-sync", "--no-instructions"]);
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={} -c fsync=off -c max_connections=50",
            dir.path().display()
        );
        let log = dir.path().join("server.log");
        as_postgres(&bin, "pg_ctl", &["-D", d, "-w", "-t", "60", "-l", log.to_str().unwrap(), "-o", &opts, "start"]);
        Some(Self { dir, bin, url: format!("postgres://imgforge@127.0.0.1:{port}/postgres") })
    }

    /// A fresh database on this server, and its URL.
    pub fn database(&self, name: &str) -> String {
        let mut c = postgres::Client::connect(&self.url, postgres::NoTls).unwrap();
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        self.url.replace("/postgres", &format!("/{name}"))
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &data.to_string_lossy(), "-m", "immediate", "-w", "stop"])
            .output();
    }
}
