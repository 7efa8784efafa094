//! The shared registry: a PostgreSQL database, for a fleet of build hosts
//! (`--registry postgres://USER[:PASSWORD]@HOST[:PORT]/DB`). Same schema and semantics as the
//! SQLite backend; migrations run under an advisory lock, so hosts starting at once migrate once.

use std::sync::Mutex;

use anyhow::{Context, anyhow, bail};
use postgres::types::ToSql;
use postgres::{Client, NoTls};

use super::Store;
use super::packages::Package;
use super::query::Query;
use super::record::Record;
use super::sql::{self, MIGRATIONS};

/// The advisory lock migrations hold ("imgf" in ASCII).
const MIGRATION_LOCK: i64 = 0x696d_6766;

/// How long to wait for the server when the URL does not say (`connect_timeout=`).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The database's clock, in seconds.
const NOW: &str = "CAST(extract(epoch FROM clock_timestamp()) AS BIGINT)";

/// PostgreSQL's numbered placeholder.
fn ph(n: usize) -> String {
    format!("${n}")
}

/// A registry in a PostgreSQL database.
pub struct Postgres {
    client: Mutex<Client>,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Postgres")
    }
}

/// `url` with its password replaced by `***`, for messages. Pure.
pub fn redact(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let auth_start = scheme_end + 3;
        let auth_end = out[auth_start..].find(['/', '?']).map_or(out.len(), |i| auth_start + i);
        if let Some(at) = out[auth_start..auth_end].rfind('@') {
            let userinfo = &out[auth_start..auth_start + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(auth_start + colon + 1..auth_start + at, "***");
            }
        }
    }
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let parts: Vec<String> =
            query.split('&').map(|kv| if kv.starts_with("password=") { "password=***".to_string() } else { kv.to_string() }).collect();
        out = format!("{head}{}", parts.join("&"));
    }
    out
}

impl Postgres {
    /// Connects to `url` and migrates the schema.
    pub fn open(url: &str) -> anyhow::Result<Self> {
        let shown = redact(url);
        let mut config: postgres::Config =
            url.parse().map_err(|e| anyhow!("the registry URL {shown} is not a valid PostgreSQL URL: {e}"))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.application_name("imgforge");
        let client = config.connect(NoTls).with_context(|| {
            format!("Failed to connect to the registry {shown} (is the server up, and does pg_hba.conf let this host in?)")
        })?;
        let mut me = Self { client: Mutex::new(client) };
        me.migrate().with_context(|| format!("Failed to migrate the registry {shown}"))?;
        Ok(me)
    }

    fn client(&self) -> anyhow::Result<std::sync::MutexGuard<'_, Client>> {
        self.client.lock().map_err(|_| anyhow!("the registry connection was poisoned by a panic"))
    }

    fn migrate(&mut self) -> anyhow::Result<()> {
        let mut c = self.client()?;
        let mut tx = c.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS imgforge_schema (version INTEGER NOT NULL)")?;
        let done: i32 = match tx.query_opt("SELECT version FROM imgforge_schema", &[])? {
            Some(row) => row.get(0),
            None => {
                tx.execute("INSERT INTO imgforge_schema (version) VALUES (0)", &[])?;
                0
            }
        };
        let done = usize::try_from(done).unwrap_or(0);
        if done > MIGRATIONS.len() {
            bail!("it has schema version {done}, newer than this imgforge knows ({}): upgrade imgforge", MIGRATIONS.len());
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(done) {
            tx.batch_execute(m)?;
            tx.execute("UPDATE imgforge_schema SET version = $1", &[&i32::try_from(i + 1)?])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The record's packages (all, or only those named).
    fn packages(c: &mut Client, id: &str, names: &[String]) -> anyhow::Result<Vec<Package>> {
        let row = |row: &postgres::Row| Package { name: row.get(0), version: row.get(1), arch: row.get(2), source: row.get(3) };
        if names.is_empty() {
            return Ok(c.query(&sql::packages(ph), &[&id])?.iter().map(row).collect());
        }
        let stmt = c.prepare(&sql::packages_named(ph))?;
        let mut out = Vec::new();
        for n in names {
            out.extend(c.query(&stmt, &[&id, n])?.iter().map(row));
        }
        Ok(out)
    }
}

impl Store for Postgres {
    fn register(&mut self, r: &Record) -> anyhow::Result<()> {
        let data = sql::encode(r)?;
        let mut c = self.client()?;
        let mut tx = c.transaction()?;
        tx.execute(
            "INSERT INTO records (id, name, version, status, layer_key, parent_id, data) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[&r.id, &r.name, &r.version, &r.status, &r.layer_key, &r.parent.record, &data],
        )?;
        for (k, v) in &r.labels {
            tx.execute("INSERT INTO labels (record_id, key, value) VALUES ($1, $2, $3)", &[&r.id, k, v])?;
        }
        let ins = tx.prepare("INSERT INTO packages (record_id, name, version, arch, source) VALUES ($1, $2, $3, $4, $5)")?;
        for p in &r.packages {
            tx.execute(&ins, &[&r.id, &p.name, &p.version, &p.arch, &p.source])?;
        }
        tx.commit()?;
        Ok(())
    }

    fn update(&mut self, id: &str, change: &mut dyn FnMut(&mut Record)) -> anyhow::Result<bool> {
        let mut c = self.client()?;
        let mut tx = c.transaction()?;
        let Some(row) = tx.query_opt("SELECT data FROM records WHERE id = $1 FOR UPDATE", &[&id])? else { return Ok(false) };
        let mut r = sql::decode(row.get(0))?;
        change(&mut r);
        tx.execute("UPDATE records SET data = $2, status = $3 WHERE id = $1", &[&id, &sql::encode(&r)?, &r.status])?;
        tx.commit()?;
        Ok(true)
    }

    fn lease_acquire(&mut self, want: &super::lease::Lease) -> anyhow::Result<super::lease::Acquire> {
        use super::lease::{Acquire, decide};
        let data = serde_json::to_string(want)?;
        let mut c = self.client()?;
        let mut tx = c.transaction()?;
        // A new key: inserted, or left to whoever inserted it first (then read below, locked).
        let inserted = tx.execute(
            &format!(
                "INSERT INTO leases (layer_key, holder, heartbeat, data) VALUES ($1, $2, {NOW}, $3) ON CONFLICT (layer_key) DO NOTHING"
            ),
            &[&want.layer_key, &want.holder, &data],
        )?;
        if inserted == 1 {
            tx.commit()?;
            return Ok(Acquire::Acquired);
        }
        let row =
            tx.query_opt(&format!("SELECT data, {NOW} - heartbeat FROM leases WHERE layer_key = $1 FOR UPDATE"), &[&want.layer_key])?;
        let found = match row {
            Some(r) => {
                Some((serde_json::from_str::<super::lease::Lease>(r.get::<_, &str>(0))?, u64::try_from(r.get::<_, i64>(1)).unwrap_or(0)))
            }
            None => None,
        };
        let decision = decide(found, want);
        if !matches!(decision, Acquire::Held { .. }) {
            tx.execute(
                &format!(
                    "INSERT INTO leases (layer_key, holder, heartbeat, data) VALUES ($1, $2, {NOW}, $3) ON CONFLICT (layer_key) DO UPDATE SET holder = $2, heartbeat = {NOW}, data = $3"
                ),
                &[&want.layer_key, &want.holder, &data],
            )?;
        }
        if let Acquire::TakenOver { previous, silent } = &decision {
            let t = super::lease::Takeover { id: super::record::new_id(), previous: previous.clone(), by: want.clone(), silent: *silent };
            tx.execute(
                "INSERT INTO lease_log (id, layer_key, data) VALUES ($1, $2, $3)",
                &[&t.id, &want.layer_key, &serde_json::to_string(&t)?],
            )?;
        }
        tx.commit()?;
        Ok(decision)
    }

    fn lease_heartbeat(&mut self, layer_key: &str, holder: &str) -> anyhow::Result<bool> {
        let n = self
            .client()?
            .execute(&format!("UPDATE leases SET heartbeat = {NOW} WHERE layer_key = $1 AND holder = $2"), &[&layer_key, &holder])?;
        Ok(n == 1)
    }

    fn lease_release(&mut self, layer_key: &str, holder: &str) -> anyhow::Result<()> {
        self.client()?.execute("DELETE FROM leases WHERE layer_key = $1 AND holder = $2", &[&layer_key, &holder])?;
        Ok(())
    }

    fn leases(&self) -> anyhow::Result<Vec<(super::lease::Lease, u64)>> {
        let rows = self.client()?.query(&format!("SELECT data, {NOW} - heartbeat FROM leases ORDER BY layer_key"), &[])?;
        rows.iter().map(|r| Ok((serde_json::from_str(r.get::<_, &str>(0))?, u64::try_from(r.get::<_, i64>(1)).unwrap_or(0)))).collect()
    }

    fn lease_takeovers(&self) -> anyhow::Result<Vec<super::lease::Takeover>> {
        let rows = self.client()?.query("SELECT data FROM lease_log ORDER BY id", &[])?;
        rows.iter().map(|r| Ok(serde_json::from_str(r.get::<_, &str>(0))?)).collect()
    }

    fn channel_append(&mut self, e: &super::ChannelEntry) -> anyhow::Result<()> {
        let mut c = self.client()?;
        c.execute(
            "INSERT INTO channel_log (id, name, channel, record_id, data) VALUES ($1, $2, $3, $4, $5)",
            &[&e.id, &e.name, &e.channel, &e.record, &serde_json::to_string(e)?],
        )?;
        Ok(())
    }

    fn channel_log(&self, name: &str, channel: Option<&str>) -> anyhow::Result<Vec<super::ChannelEntry>> {
        let mut c = self.client()?;
        let rows =
            c.query("SELECT data FROM channel_log WHERE name = $1 AND ($2::TEXT IS NULL OR channel = $2) ORDER BY id", &[&name, &channel])?;
        rows.iter().map(|r| Ok(serde_json::from_str(r.get::<_, &str>(0))?)).collect()
    }

    fn get(&self, id: &str) -> anyhow::Result<Option<Record>> {
        let mut c = self.client()?;
        let Some(row) = c.query_opt("SELECT data FROM records WHERE id = $1", &[&id])? else { return Ok(None) };
        let mut r = sql::decode(row.get(0))?;
        r.packages = Self::packages(&mut c, id, &[])?;
        Ok(Some(r))
    }

    fn find(&self, q: &Query) -> anyhow::Result<Vec<Record>> {
        let (text, args) = sql::find(q, ph);
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
        let names: Vec<String> = q.packages.iter().map(|p| p.name.clone()).collect();
        let mut c = self.client()?;
        let rows = c.query(&text, &params)?;
        let mut out = Vec::new();
        for row in rows {
            let mut r = sql::decode(row.get(0))?;
            if !names.is_empty() {
                r.packages = Self::packages(&mut c, &r.id, &names)?;
            }
            if q.matches(&r) {
                out.push(r);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_reach_a_message() {
        assert_eq!(redact("postgres://imgforge:s3cret@db.example:5432/images"), "postgres://imgforge:***@db.example:5432/images");
        assert_eq!(
            redact("postgres://imgforge@db/images?password=s3cret&sslmode=disable"),
            "postgres://imgforge@db/images?password=***&sslmode=disable"
        );
        assert_eq!(redact("postgresql://db/images"), "postgresql://db/images");
        assert_eq!(redact("postgres://u:p@ss@db/x"), "postgres://u:***@db/x");
    }
}
