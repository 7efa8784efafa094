//! What the SQL backends share: the schema's migrations, the query narrowing, the record's
//! stored form. Placeholders differ (`?1` in SQLite, `$1` in PostgreSQL): each backend passes
//! its own.

use anyhow::Context;

use super::query::Query;
use super::record::Record;

/// Schema migrations, in order (plain SQL both backends run); each backend counts those applied.
pub const MIGRATIONS: &[&str] = &[
    "CREATE TABLE records (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        status TEXT NOT NULL,
        layer_key TEXT,
        parent_id TEXT,
        data TEXT NOT NULL
    );
    CREATE INDEX records_name ON records(name, id);
    CREATE INDEX records_layer_key ON records(layer_key);
    CREATE TABLE labels (record_id TEXT NOT NULL REFERENCES records(id), key TEXT NOT NULL, value TEXT NOT NULL,
        PRIMARY KEY (record_id, key));
    CREATE INDEX labels_kv ON labels(key, value);
    CREATE TABLE packages (record_id TEXT NOT NULL REFERENCES records(id), name TEXT NOT NULL, version TEXT NOT NULL,
        arch TEXT NOT NULL, source TEXT);
    CREATE INDEX packages_name ON packages(name, record_id);
    CREATE INDEX packages_record ON packages(record_id);",
    // Channels (`imgforge promote`): an append-only log per image name and channel; the newest
    // entry is where the channel points. Ids are ULIDs, so they sort by time.
    "CREATE TABLE channel_log (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        channel TEXT NOT NULL,
        record_id TEXT NOT NULL REFERENCES records(id),
        data TEXT NOT NULL
    );
    CREATE INDEX channel_log_name ON channel_log(name, channel, id);",
    // Build leases (`lease.rs`): one row per layer key being built, its heartbeat in the
    // database's clock (seconds); takeovers of silent holders are logged.
    "CREATE TABLE leases (
        layer_key TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        heartbeat BIGINT NOT NULL,
        data TEXT NOT NULL
    );
    CREATE TABLE lease_log (
        id TEXT PRIMARY KEY,
        layer_key TEXT NOT NULL,
        data TEXT NOT NULL
    );",
];

/// A placeholder for the n-th (1-based) argument.
pub type Placeholder = fn(usize) -> String;

/// The query's SQL narrowing (name, status, labels, package names) and its arguments: it
/// selects `data`, newest first; `Query::matches` decides on what it returns. Pure.
pub fn find(q: &Query, ph: Placeholder) -> (String, Vec<String>) {
    let mut sql = String::from("SELECT data FROM records r WHERE 1 = 1");
    let mut args: Vec<String> = Vec::new();
    let mut arg = |sql: &mut String, clause: &str, v: &str| {
        args.push(v.to_string());
        sql.push_str(&clause.replace('?', &ph(args.len())));
    };
    if let Some(n) = &q.name {
        arg(&mut sql, " AND r.name = ?", n);
    }
    if let Some(s) = &q.status {
        arg(&mut sql, " AND r.status = ?", s);
    }
    for (k, v) in &q.labels {
        arg(&mut sql, " AND EXISTS (SELECT 1 FROM labels l WHERE l.record_id = r.id AND l.key = ?", k);
        arg(&mut sql, " AND l.value = ?)", v);
    }
    for p in &q.packages {
        arg(&mut sql, " AND EXISTS (SELECT 1 FROM packages p WHERE p.record_id = r.id AND p.name = ?)", &p.name);
    }
    sql.push_str(" ORDER BY r.id DESC");
    (sql, args)
}

/// The packages of record `ph(1)`.
pub fn packages(ph: Placeholder) -> String {
    format!("SELECT name, version, arch, source FROM packages WHERE record_id = {} ORDER BY name, arch", ph(1))
}

/// The packages named `ph(2)` of record `ph(1)` (one index lookup: a query naming packages
/// reads only those).
pub fn packages_named(ph: Placeholder) -> String {
    format!("SELECT name, version, arch, source FROM packages WHERE name = {} AND record_id = {} ORDER BY arch", ph(2), ph(1))
}

/// What is stored in `records.data`: the record without its packages (they have their table).
pub fn encode(r: &Record) -> anyhow::Result<String> {
    let mut bare = r.clone();
    bare.packages.clear();
    Ok(serde_json::to_string(&bare)?)
}

/// A record from `records.data`.
pub fn decode(data: &str) -> anyhow::Result<Record> {
    serde_json::from_str(data).context("a registry record is not valid JSON")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::query::PackageReq;

    #[test]
    fn narrowing_numbers_its_placeholders() {
        let q = Query {
            name: Some("base".into()),
            labels: vec![("env".into(), "prod".into())],
            packages: vec![PackageReq::parse("openssl<3").unwrap()],
            ..Query::default()
        };
        let (sql, args) = find(&q, |n| format!("${n}"));
        assert_eq!(args, ["base", "env", "prod", "openssl"]);
        assert!(
            sql.contains("r.name = $1") && sql.contains("l.key = $2") && sql.contains("l.value = $3") && sql.contains("p.name = $4"),
            "{sql}"
        );
        assert!(sql.ends_with("ORDER BY r.id DESC"));
    }
}
