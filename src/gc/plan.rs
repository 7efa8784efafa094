//! The janitor's plan: one decision per record, with the guard or rule behind it. Pure.
//!
//! Guards hold whatever the rules say: the `imgforge:keep=true` tag, live descendants in the
//! registry, any AWS reference (`refs.rs`), sharing with other accounts (unless
//! `include_shared`), a launch within `keep_days`. Then the rules, in order: a channel points at
//! it now or did within `keep_days` (`keep_released`); younger than `keep_days`; older than
//! `max_days` (retired); among the newest `keep_last` of its name that no channel points at.

use std::collections::BTreeMap;

use serde::Serialize;

use super::refs::Refs;
use super::rules::Rules;
use crate::registry::{ChannelEntry, Record};

/// Keep or retire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Stays.
    Keep,
    /// Retired by `--apply`.
    Retire,
}

/// One record's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Decision {
    /// Record id.
    pub record: String,
    /// Image name.
    pub name: String,
    /// Version.
    pub version: String,
    /// When it was built.
    pub build_date: String,
    /// Keep or retire.
    pub action: Action,
    /// Why: every guard that holds, else the rule that decided.
    pub reasons: Vec<String>,
    /// Region → AMI id.
    pub amis: BTreeMap<String, String>,
    /// Region → snapshot id (as recorded at publish).
    pub snapshots: BTreeMap<String, String>,
    /// Local outputs (paths) and their recorded sizes.
    pub local: BTreeMap<String, u64>,
    /// Uploaded copies of the outputs (`s3://…`).
    pub uploads: Vec<String>,
}

/// A record's channel history: the channels pointing at it now, and when each earlier pointer
/// moved away (seconds since the epoch).
#[derive(Debug, Clone, Default)]
pub struct ChannelMarks {
    /// Channels pointing at it now.
    pub current: Vec<String>,
    /// (channel, when it moved away).
    pub left: Vec<(String, u64)>,
}

/// Channel marks per record id, from every channel log of the images considered. Pure.
pub fn channel_marks(logs: &[ChannelEntry]) -> BTreeMap<String, ChannelMarks> {
    let mut by_channel: BTreeMap<(&str, &str), Vec<&ChannelEntry>> = BTreeMap::new();
    for e in logs {
        by_channel.entry((&e.name, &e.channel)).or_default().push(e);
    }
    let mut out: BTreeMap<String, ChannelMarks> = BTreeMap::new();
    for entries in by_channel.values() {
        for (i, e) in entries.iter().enumerate() {
            let m = out.entry(e.record.clone()).or_default();
            match entries.get(i + 1) {
                None => m.current.push(e.channel.clone()),
                Some(next) if next.record != e.record => {
                    m.left.push((e.channel.clone(), crate::stamp::parse_rfc3339(&next.at).unwrap_or(0)));
                }
                Some(_) => {}
            }
        }
    }
    out
}

const DAY: u64 = 86_400;

/// Decides every live (not deleted) record of `records` whose name `names` allows (all when
/// empty). `records` holds every record, so that children of any name are seen. Newest first
/// within a name.
pub fn decide(
    records: &[Record],
    names: &[String],
    marks: &BTreeMap<String, ChannelMarks>,
    refs: &Refs,
    rules: &Rules,
    now: u64,
) -> Vec<Decision> {
    let live: Vec<&Record> = records.iter().filter(|r| r.status != "deleted").collect();
    let mut groups: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for r in &live {
        if names.is_empty() || names.iter().any(|n| n == &r.name) {
            groups.entry(&r.name).or_default().push(r);
        }
    }
    let mut out = Vec::new();
    for group in groups.values_mut() {
        group.sort_by(|a, b| (&b.build_date, &b.id).cmp(&(&a.build_date, &a.id)));
        let mut counted = 0usize;
        for r in group.iter() {
            let mut reasons = guards(r, &live, refs, rules, now);
            let no_marks = ChannelMarks::default();
            let m = marks.get(&r.id).unwrap_or(&no_marks);
            let age_days = now.saturating_sub(crate::stamp::parse_rfc3339(&r.build_date).unwrap_or(now)) / DAY;
            let on_channel = rules.keep_released && !m.current.is_empty();
            let action = if !reasons.is_empty() {
                Action::Keep
            } else if on_channel {
                reasons.push(format!("channel {} points at it", m.current.join(", ")));
                Action::Keep
            } else if let Some((c, at)) =
                m.left.iter().filter(|_| rules.keep_released).find(|(_, at)| now.saturating_sub(*at) < rules.keep_days * DAY)
            {
                reasons.push(format!(
                    "channel {c} pointed at it until {} (within keep_days = {})",
                    crate::stamp::rfc3339(*at),
                    rules.keep_days
                ));
                Action::Keep
            } else if age_days < rules.keep_days {
                reasons.push(format!("{age_days} days old (keep_days = {})", rules.keep_days));
                Action::Keep
            } else if let Some(max) = rules.max_days.filter(|m| age_days > *m) {
                reasons.push(format!("{age_days} days old (max_days = {max})"));
                Action::Retire
            } else if counted < rules.keep_last {
                counted += 1;
                reasons.push(format!("one of the {} newest (keep_last = {})", rules.keep_last, rules.keep_last));
                Action::Keep
            } else {
                reasons.push(format!("older than the {} newest kept (keep_last = {})", rules.keep_last, rules.keep_last));
                Action::Retire
            };
            out.push(Decision {
                record: r.id.clone(),
                name: r.name.clone(),
                version: r.version.clone(),
                build_date: r.build_date.clone(),
                action,
                reasons,
                amis: r.amis.clone(),
                snapshots: r.snapshots.clone(),
                local: r.outputs.iter().filter(|o| !o.path.starts_with("s3://")).map(|o| (o.path.clone(), o.size)).collect(),
                uploads: r.outputs.iter().filter_map(|o| o.url.clone()).collect(),
            });
        }
    }
    out
}

/// Every guard that keeps `r`, as reasons. Pure.
pub fn guards(r: &Record, live: &[&Record], refs: &Refs, rules: &Rules, now: u64) -> Vec<String> {
    let mut why = Vec::new();
    let children: Vec<String> = live
        .iter()
        .filter(|c| c.parent.record.as_deref() == Some(r.id.as_str()))
        .map(|c| format!("{} {} ({})", c.name, c.version, c.id))
        .collect();
    if !children.is_empty() {
        why.push(format!("parent of {}", children.join(", ")));
    }
    for (region, ami) in &r.amis {
        let key = (region.clone(), ami.clone());
        if refs.keep_tagged.contains(&key) {
            why.push(format!("{ami} in {region} is tagged imgforge:keep=true"));
        }
        for u in refs.uses.get(&key).into_iter().flatten() {
            why.push(format!("{ami} in {region} is used by {u}"));
        }
        if let Some(accounts) = refs.shared.get(&key).filter(|_| !rules.include_shared) {
            why.push(format!("{ami} in {region} is shared with {} (their use is invisible here; --include-shared)", accounts.join(", ")));
        }
        if let Some(t) = refs.last_launched.get(&key)
            && crate::stamp::parse_rfc3339(t).is_some_and(|at| now.saturating_sub(at) < rules.keep_days * DAY)
        {
            why.push(format!("{ami} in {region} was launched at {t} (within keep_days = {})", rules.keep_days));
        }
    }
    why
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rec(id: &str, version: &str, day: u64) -> Record {
        Record {
            id: id.into(),
            name: "web".into(),
            version: version.into(),
            status: "tested".into(),
            build_date: crate::stamp::rfc3339(day * DAY),
            amis: BTreeMap::from([("eu-west-1".to_string(), format!("ami-{id}"))]),
            ..Record::default()
        }
    }

    fn entry(record: &str, channel: &str, day: u64) -> ChannelEntry {
        ChannelEntry {
            id: format!("{record}{day}"),
            name: "web".into(),
            channel: channel.into(),
            record: record.into(),
            version: String::new(),
            action: "promote".into(),
            at: crate::stamp::rfc3339(day * DAY),
            actor: "ci".into(),
            reason: None,
            forced: false,
        }
    }

    /// The case: 8 versions, a launch template on 3, a child on 2, 7 on prod.
    #[test]
    fn keep_last_two_retires_exactly_one_four_and_five() {
        let mut records: Vec<Record> = (1..=8).map(|i| rec(&format!("r{i}"), &format!("1.0.{i}"), 100 + i)).collect();
        let mut child = rec("c1", "2.0.0", 120);
        child.name = "app".into();
        child.parent.record = Some("r2".into());
        records.push(child);
        let mut refs = Refs::default();
        refs.uses.insert(("eu-west-1".into(), "ami-r3".into()), vec!["launch template web (lt-1) version 3 ($Default)".into()]);
        let marks = channel_marks(&[entry("r6", "prod", 110), entry("r7", "prod", 111)]);
        let rules = Rules { keep_last: 2, keep_days: 0, ..Rules::default() };
        let d = decide(&records, &["web".to_string()], &marks, &refs, &rules, 200 * DAY);
        let retired: Vec<&str> = d.iter().filter(|x| x.action == Action::Retire).map(|x| x.version.as_str()).collect();
        assert_eq!(retired, ["1.0.5", "1.0.4", "1.0.1"]);
        let why = |v: &str| d.iter().find(|x| x.version == v).unwrap().reasons.join("; ");
        assert_eq!(why("1.0.8"), "one of the 2 newest (keep_last = 2)");
        assert_eq!(why("1.0.7"), "channel prod points at it");
        assert_eq!(why("1.0.6"), "one of the 2 newest (keep_last = 2)");
        assert_eq!(why("1.0.3"), "ami-r3 in eu-west-1 is used by launch template web (lt-1) version 3 ($Default)");
        assert_eq!(why("1.0.2"), "parent of app 2.0.0 (c1)");
        assert_eq!(why("1.0.1"), "older than the 2 newest kept (keep_last = 2)");

        // keep_days: r6 left prod 89 days ago, so keep_days = 95 keeps it for that; r8 is 92 days old.
        let rules = Rules { keep_last: 0, keep_days: 95, ..Rules::default() };
        let d = decide(&records, &["web".to_string()], &marks, &refs, &rules, 200 * DAY);
        assert!(d.iter().all(|x| x.action == Action::Retire || !x.reasons.is_empty()));
        assert_eq!(
            d.iter().find(|x| x.version == "1.0.6").unwrap().reasons,
            ["channel prod pointed at it until 1970-04-22T00:00:00Z (within keep_days = 95)"]
        );
        assert_eq!(d.iter().find(|x| x.version == "1.0.8").unwrap().reasons, ["92 days old (keep_days = 95)"]);
    }
}
