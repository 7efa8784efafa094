//! The embedded registry: one SQLite database (WAL, a 30 s busy timeout so concurrent builds on
//! one host queue instead of failing), migrated by `PRAGMA user_version`.

use std::path::Path;

use anyhow::{Context, bail};
use rusqlite::{Connection, OptionalExtension, params};

use super::Store;
use super::packages::Package;
use super::query::Query;
use super::record::Record;
use super::sql::{self, MIGRATIONS};

/// SQLite's numbered placeholder.
fn ph(n: usize) -> String {
    format!("?{n}")
}

/// Filesystems where SQLite's locking is unsafe (sqlite.org/wal.html): NFS, SMB/CIFS, Ceph, 9p.
const NETWORK_FS: &[(i64, &str)] =
    &[(0x6969, "NFS"), (0x517B, "SMB"), (0xFF53_4D42, "CIFS"), (0xFE53_4D42, "SMB2"), (0x00C3_6400, "Ceph"), (0x0102_1997, "9p")];

/// The database's clock, in seconds.
const NOW: &str = "CAST(strftime('%s', 'now') AS INTEGER)";

/// A registry in a SQLite file.
#[derive(Debug)]
pub struct Sqlite {
    conn: Connection,
}

impl Sqlite {
    /// Opens (creating, with its directory) and migrates the database at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("Failed to create {}", dir.display()))?;
        let fs = nix::sys::statfs::statfs(dir).with_context(|| format!("Failed to statfs {}", dir.display()))?;
        #[allow(clippy::useless_conversion)]
        let kind = i64::from(fs.filesystem_type().0);
        if let Some((_, name)) = NETWORK_FS.iter().find(|(m, _)| *m == kind) {
            bail!(
                "the registry {} is on {name}, a network filesystem where SQLite's locking is unsafe: keep it on a local disk, or share a registry between hosts with PostgreSQL (--registry postgres://…)",
                path.display()
            );
        }
        let conn = Connection::open(path).with_context(|| format!("Failed to open the registry {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        // Switching a new database to WAL takes its lock without the busy handler: a second
        // process opening it at the same moment gets "database is locked" at once. Retry for as
        // long as the busy timeout.
        let mut tries = 0;
        while let Err(e) = conn.pragma_update(None, "journal_mode", "WAL") {
            let busy = matches!(&e, rusqlite::Error::SqliteFailure(f, _) if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked));
            tries += 1;
            if !busy || tries > 300 {
                return Err(anyhow::Error::new(e).context(format!("Failed to switch the registry {} to WAL", path.display())));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let mut me = Self { conn };
        me.migrate().with_context(|| format!("Failed to migrate the registry {}", path.display()))?;
        Ok(me)
    }

    /// Applies the missing migrations under the write lock: of two processes opening a new
    /// database at once, the second sees the first's schema.
    fn migrate(&mut self) -> anyhow::Result<()> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let done: usize = tx.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))?.try_into().unwrap_or(0);
        if done > MIGRATIONS.len() {
            bail!("it has schema version {done}, newer than this imgforge knows ({}): upgrade imgforge", MIGRATIONS.len());
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(done) {
            tx.execute_batch(m)?;
            tx.pragma_update(None, "user_version", i64::try_from(i + 1)?)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn record_of(&self, data: &str, with_packages: Option<&[String]>) -> anyhow::Result<Record> {
        let mut r = sql::decode(data)?;
        if let Some(names) = with_packages {
            r.packages = self.packages(&r.id, names)?;
        }
        Ok(r)
    }

    /// The record's packages (all, or only those named).
    fn packages(&self, id: &str, names: &[String]) -> anyhow::Result<Vec<Package>> {
        let row = |row: &rusqlite::Row<'_>| Ok(Package { name: row.get(0)?, version: row.get(1)?, arch: row.get(2)?, source: row.get(3)? });
        if names.is_empty() {
            let mut stmt = self.conn.prepare_cached(&sql::packages(ph))?;
            return Ok(stmt.query_map([id], row)?.collect::<Result<_, _>>()?);
        }
        let mut stmt = self.conn.prepare_cached(&sql::packages_named(ph))?;
        let mut out = Vec::new();
        for n in names {
            for p in stmt.query_map([id, n.as_str()], row)? {
                out.push(p?);
            }
        }
        Ok(out)
    }
}

impl Store for Sqlite {
    fn register(&mut self, r: &Record) -> anyhow::Result<()> {
        let data = sql::encode(r)?;
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO records (id, name, version, status, layer_key, parent_id, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![r.id, r.name, r.version, r.status, r.layer_key, r.parent.record, data],
        )?;
        for (k, v) in &r.labels {
            tx.execute("INSERT INTO labels (record_id, key, value) VALUES (?1, ?2, ?3)", params![r.id, k, v])?;
        }
        {
            let mut ins = tx.prepare_cached("INSERT INTO packages (record_id, name, version, arch, source) VALUES (?1, ?2, ?3, ?4, ?5)")?;
            for p in &r.packages {
                ins.execute(params![r.id, p.name, p.version, p.arch, p.source])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn update(&mut self, id: &str, change: &mut dyn FnMut(&mut Record)) -> anyhow::Result<bool> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let data: Option<String> = tx.query_row("SELECT data FROM records WHERE id = ?1", [id], |r| r.get(0)).optional()?;
        let Some(data) = data else { return Ok(false) };
        let mut r = sql::decode(&data)?;
        change(&mut r);
        tx.execute("UPDATE records SET data = ?2, status = ?3 WHERE id = ?1", params![id, sql::encode(&r)?, r.status])?;
        tx.commit()?;
        Ok(true)
    }

    fn lease_acquire(&mut self, want: &super::lease::Lease) -> anyhow::Result<super::lease::Acquire> {
        use super::lease::{Acquire, decide};
        let data = serde_json::to_string(want)?;
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let found: Option<(String, i64)> = tx
            .query_row(&format!("SELECT data, {NOW} - heartbeat FROM leases WHERE layer_key = ?1"), params![want.layer_key], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let found = found.map(|(d, age)| serde_json::from_str(&d).map(|l| (l, u64::try_from(age).unwrap_or(0)))).transpose()?;
        let decision = decide(found, want);
        match &decision {
            Acquire::Held { .. } => {}
            Acquire::Acquired | Acquire::TakenOver { .. } => {
                tx.execute(
                    &format!("INSERT OR REPLACE INTO leases (layer_key, holder, heartbeat, data) VALUES (?1, ?2, {NOW}, ?3)"),
                    params![want.layer_key, want.holder, data],
                )?;
            }
        }
        if let Acquire::TakenOver { previous, silent } = &decision {
            let t = super::lease::Takeover { id: super::record::new_id(), previous: previous.clone(), by: want.clone(), silent: *silent };
            tx.execute(
                "INSERT INTO lease_log (id, layer_key, data) VALUES (?1, ?2, ?3)",
                params![t.id, want.layer_key, serde_json::to_string(&t)?],
            )?;
        }
        tx.commit()?;
        Ok(decision)
    }

    fn lease_heartbeat(&mut self, layer_key: &str, holder: &str) -> anyhow::Result<bool> {
        let n = self
            .conn
            .execute(&format!("UPDATE leases SET heartbeat = {NOW} WHERE layer_key = ?1 AND holder = ?2"), params![layer_key, holder])?;
        Ok(n == 1)
    }

    fn lease_release(&mut self, layer_key: &str, holder: &str) -> anyhow::Result<()> {
        self.conn.execute("DELETE FROM leases WHERE layer_key = ?1 AND holder = ?2", params![layer_key, holder])?;
        Ok(())
    }

    fn leases(&self) -> anyhow::Result<Vec<(super::lease::Lease, u64)>> {
        let mut st = self.conn.prepare(&format!("SELECT data, {NOW} - heartbeat FROM leases ORDER BY layer_key"))?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        rows.map(|row| {
            let (d, age) = row?;
            Ok((serde_json::from_str(&d)?, u64::try_from(age).unwrap_or(0)))
        })
        .collect()
    }

    fn lease_takeovers(&self) -> anyhow::Result<Vec<super::lease::Takeover>> {
        let mut st = self.conn.prepare("SELECT data FROM lease_log ORDER BY id")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        rows.map(|d| Ok(serde_json::from_str(&d?)?)).collect()
    }

    fn channel_append(&mut self, e: &super::ChannelEntry) -> anyhow::Result<()> {
        self.conn.execute(
            "INSERT INTO channel_log (id, name, channel, record_id, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![e.id, e.name, e.channel, e.record, serde_json::to_string(e)?],
        )?;
        Ok(())
    }

    fn channel_log(&self, name: &str, channel: Option<&str>) -> anyhow::Result<Vec<super::ChannelEntry>> {
        let mut stmt = self.conn.prepare("SELECT data FROM channel_log WHERE name = ?1 AND (?2 IS NULL OR channel = ?2) ORDER BY id")?;
        let rows: Vec<String> = stmt.query_map(params![name, channel], |r| r.get(0))?.collect::<Result<_, _>>()?;
        rows.iter().map(|d| Ok(serde_json::from_str(d)?)).collect()
    }

    fn get(&self, id: &str) -> anyhow::Result<Option<Record>> {
        let data: Option<String> = self.conn.query_row("SELECT data FROM records WHERE id = ?1", [id], |r| r.get(0)).optional()?;
        data.map(|d| self.record_of(&d, Some(&[]))).transpose()
    }

    fn find(&self, q: &Query) -> anyhow::Result<Vec<Record>> {
        let (sql, args) = sql::find(q, ph);
        let names: Vec<String> = q.packages.iter().map(|p| p.name.clone()).collect();
        let mut stmt = self.conn.prepare(&sql)?;
        let rows: Vec<String> = stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| r.get(0))?.collect::<Result<_, _>>()?;
        let mut out = Vec::new();
        for data in rows {
            let r = self.record_of(&data, (!names.is_empty()).then_some(names.as_slice()))?;
            if q.matches(&r) {
                out.push(r);
            }
        }
        Ok(out)
    }
}
