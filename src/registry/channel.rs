//! Channels: a name (`prod`, `staging`) per image name that points at one record, with its
//! history. `promote` points a channel at a record that passed its tests (or, forced, records
//! who overrode that and why); `rollback` points it back at the record before; `revoke` marks a
//! record (and with `cascade` its descendants) so that no build or promotion uses it again.

use anyhow::{Context, bail};

use super::Store;
use super::record::{Record, Revocation, new_id};

/// One entry of a channel's log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct ChannelEntry {
    /// ULID of the entry (sorts by time).
    pub id: String,
    /// Image name.
    pub name: String,
    /// Channel.
    pub channel: String,
    /// The record the channel points at from this entry on.
    pub record: String,
    /// Its version, for people.
    pub version: String,
    /// `promote` or `rollback`.
    pub action: String,
    /// When (RFC 3339).
    pub at: String,
    /// Who (`SUDO_USER`, else `USER`).
    pub actor: String,
    /// Why (required with `--force` and for a rollback's record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Promoted without a passing test verdict for the record's raw.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
}

fn now() -> String {
    crate::stamp::rfc3339(crate::stamp::unix_now())
}

/// Who is acting: the user behind sudo, else the current user.
pub fn actor() -> String {
    std::env::var("SUDO_USER").or_else(|_| std::env::var("USER")).unwrap_or_else(|_| "root".into())
}

/// Where `name`'s `channel` points now.
pub fn current(store: &dyn Store, name: &str, channel: &str) -> anyhow::Result<Option<ChannelEntry>> {
    Ok(store.channel_log(name, Some(channel))?.pop())
}

/// Why `r` may not be promoted without `--force`; `None`: a passing test run judged its raw.
pub fn untested(r: &Record) -> Option<String> {
    let Some(raw) = r.outputs.iter().find(|o| o.format == "raw") else { return Some("it has no raw output".into()) };
    match r.tests.iter().rev().find(|t| t.sha256 == raw.sha256) {
        Some(t) if t.passed() => None,
        Some(t) => Some(format!("its last test run ({}) failed: {}", t.date, t.failed.join("; "))),
        None if r.tests.is_empty() => Some("it was never tested".into()),
        None => Some("no test run judged its raw output (SHA-256 differs)".into()),
    }
}

/// Whether `r` may be promoted to `channel`: refused for a revoked record, and for an untested
/// one unless `force` with a `reason`. `Ok(true)`: it goes on forced.
pub fn promotable(r: &Record, channel: &str, force: bool, reason: Option<&str>) -> anyhow::Result<bool> {
    check_channel_name(channel)?;
    if r.status == "revoked" {
        bail!("{} {} ({}) is revoked{}: it cannot be promoted", r.name, r.version, r.id, revoked_why(r));
    }
    let forced = match untested(r) {
        None => false,
        Some(why) if !force => {
            bail!(
                "{} {} ({}) cannot be promoted to {channel}: {why}; run `imgforge test {}`, or --force --reason \"…\"",
                r.name,
                r.version,
                r.id,
                r.id
            )
        }
        Some(_) if reason.is_none_or(|s| s.trim().is_empty()) => {
            bail!("--force needs --reason \"…\": the channel's history keeps who overrode the tests and why")
        }
        Some(_) => true,
    };
    Ok(forced)
}

/// Points `channel` of `r`'s image at `r`. Refused for a revoked record, and for an untested
/// one unless `force` with a `reason`. A promoted record becomes `released`.
pub fn promote(store: &mut dyn Store, r: &Record, channel: &str, force: bool, reason: Option<&str>) -> anyhow::Result<ChannelEntry> {
    let forced = promotable(r, channel, force, reason)?;
    let e = ChannelEntry {
        id: new_id(),
        name: r.name.clone(),
        channel: channel.to_string(),
        record: r.id.clone(),
        version: r.version.clone(),
        action: "promote".into(),
        at: now(),
        actor: actor(),
        reason: reason.map(str::to_string),
        forced,
    };
    store.channel_append(&e).context("Failed to record the promotion")?;
    store.update(&r.id, &mut |x| {
        if x.status != "revoked" {
            x.status = "released".into();
        }
    })?;
    Ok(e)
}

/// The record a rollback of `name`'s `channel` points at (the one before the current record,
/// skipping revoked ones), and the current record's id.
pub fn previous(store: &dyn Store, name: &str, channel: &str) -> anyhow::Result<(Record, String)> {
    let log = store.channel_log(name, Some(channel))?;
    let Some(cur) = log.last() else { bail!("{name} has no channel {channel}: nothing to roll back") };
    // Walk back past the current record (and any entry that pointed at it).
    let mut target = None;
    for e in log.iter().rev() {
        if e.record == cur.record {
            continue;
        }
        match store.get(&e.record)? {
            Some(r) if r.status == "revoked" => continue,
            Some(r) => {
                target = Some(r);
                break;
            }
            None => continue,
        }
    }
    let Some(r) = target else { bail!("{name}'s channel {channel} has no earlier (unrevoked) record to roll back to") };
    Ok((r, cur.record.clone()))
}

/// Points `name`'s `channel` back at the record it pointed at before the current one (skipping
/// revoked records). Returns the new entry and the record it replaced.
pub fn rollback(store: &mut dyn Store, name: &str, channel: &str, reason: Option<&str>) -> anyhow::Result<(ChannelEntry, String)> {
    let (r, current) = previous(&*store, name, channel)?;
    let e = ChannelEntry {
        id: new_id(),
        name: name.to_string(),
        channel: channel.to_string(),
        record: r.id.clone(),
        version: r.version.clone(),
        action: "rollback".into(),
        at: now(),
        actor: actor(),
        reason: reason.map(str::to_string),
        forced: false,
    };
    store.channel_append(&e).context("Failed to record the rollback")?;
    Ok((e, current))
}

/// Marks `r` revoked (and, with `cascade`, every live descendant). Returns the records revoked
/// now, `r` first.
pub fn revoke(store: &mut dyn Store, r: &Record, cascade: bool, reason: &str) -> anyhow::Result<Vec<Record>> {
    if reason.trim().is_empty() {
        bail!("revoke needs --reason \"…\"");
    }
    let mut targets = vec![r.clone()];
    if cascade {
        let q = super::Query { descendant_of: Some(r.id.clone()), ..super::Query::default() };
        targets.extend(super::search(&*store, &q)?);
    }
    let revocation = Revocation { at: now(), actor: actor(), reason: reason.to_string(), by: r.id.clone() };
    let mut done = Vec::new();
    for t in targets {
        if t.status == "revoked" {
            continue;
        }
        store.update(&t.id, &mut |x| {
            x.status = "revoked".into();
            x.revoked = Some(revocation.clone());
        })?;
        done.push(t);
    }
    Ok(done)
}

/// `: REASON (by ACTOR at AT)` for a revoked record, for messages. Pure.
pub fn revoked_why(r: &Record) -> String {
    match &r.revoked {
        Some(v) if v.by != r.id => format!(" ({}, with its ancestor {}, by {} at {})", v.reason, v.by, v.actor, v.at),
        Some(v) => format!(" ({}, by {} at {})", v.reason, v.actor, v.at),
        None => String::new(),
    }
}

fn check_channel_name(c: &str) -> anyhow::Result<()> {
    if c.is_empty() || c.len() > 64 || !c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') {
        bail!("channel {c:?}: use 1 to 64 letters, digits, '-', '_' or '.'");
    }
    Ok(())
}
