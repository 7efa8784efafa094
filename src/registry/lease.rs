//! Build leases: one builder per layer key across the hosts sharing a registry. A build takes
//! the lease on its key before working and heart-beats it; another build of the same key
//! waits for the holder's record (or, with `--no-wait`, exits 3 naming the holder). A lease
//! whose holder stopped heart-beating for three periods is taken over, and the takeover logged
//! (the janitor's view of builds that died). Time is the database's clock, so hosts with skewed
//! clocks agree.

use serde::{Deserialize, Serialize};

/// Heartbeats a holder may miss before its lease is taken over.
pub const MISSED: u64 = 3;

/// A lease: who holds which layer key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Lease {
    /// The layer key.
    pub layer_key: String,
    /// The image being built.
    pub name: String,
    /// This acquisition's token (a ULID).
    pub holder: String,
    /// The holder's host name.
    pub host: String,
    /// The holder's process id.
    pub pid: u32,
    /// Seconds between heartbeats.
    pub period: u64,
    /// When it was taken (RFC 3339, the holder's clock; for people).
    pub acquired: String,
}

impl Lease {
    /// "HOST pid PID since ACQUIRED", for messages.
    pub fn who(&self) -> String {
        format!("{} pid {} (since {})", self.host, self.pid, self.acquired)
    }
}

/// What taking a lease found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire {
    /// No one held it (or this holder did): it is ours.
    Acquired,
    /// Its holder stopped heart-beating `silent` seconds ago: it is ours now, and the takeover
    /// is logged.
    TakenOver {
        /// The holder it was taken from.
        previous: Lease,
        /// Seconds since its last heartbeat.
        silent: u64,
    },
    /// A live holder has it.
    Held {
        /// The holder.
        lease: Lease,
        /// Seconds since its last heartbeat.
        age: u64,
    },
}

/// A takeover, as logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Takeover {
    /// ULID of the log entry.
    pub id: String,
    /// The lease taken from a silent holder.
    pub previous: Lease,
    /// Who took it.
    pub by: Lease,
    /// Seconds the previous holder had been silent.
    pub silent: u64,
}

/// What a backend's acquire decides, given the row it found (its lease and heartbeat age).
/// Pure.
pub fn decide(found: Option<(Lease, u64)>, want: &Lease) -> Acquire {
    match found {
        None => Acquire::Acquired,
        Some((l, _)) if l.holder == want.holder => Acquire::Acquired,
        Some((l, age)) if age > MISSED * l.period => Acquire::TakenOver { previous: l, silent: age },
        Some((l, age)) => Acquire::Held { lease: l, age },
    }
}

/// A new lease for this process on `layer_key`.
pub fn mine(layer_key: &str, name: &str, period: u64) -> Lease {
    Lease {
        layer_key: layer_key.to_string(),
        name: name.to_string(),
        holder: super::record::new_id(),
        host: nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_else(|_| "?".into()),
        pid: std::process::id(),
        period,
        acquired: crate::stamp::rfc3339(crate::stamp::unix_now()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_holders_keep_it_silent_ones_lose_it() {
        let a = mine("sha256:k", "base", 10);
        let b = mine("sha256:k", "base", 10);
        assert_eq!(decide(None, &b), Acquire::Acquired);
        assert_eq!(decide(Some((b.clone(), 100)), &b), Acquire::Acquired, "its own lease, again");
        assert_eq!(decide(Some((a.clone(), 30)), &b), Acquire::Held { lease: a.clone(), age: 30 });
        assert_eq!(decide(Some((a.clone(), 31)), &b), Acquire::TakenOver { previous: a, silent: 31 });
    }
}
