//! A build's lease on its layer key (see `registry::lease`): taken before any work, renewed by
//! a thread with its own registry connection, given back when the guard drops (after the record
//! is written, or on failure). A build that finds the key held by a live builder waits for that
//! builder's record and reuses it, takes the lease over if the holder goes silent, or with
//! `--no-wait` stops with exit 3 naming the holder.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::progress::Events;
use crate::registry::Store;
use crate::registry::lease::{self, Acquire};
use crate::registry::record::Record;

/// A lease held; dropping it stops the heartbeat and gives the lease back.
pub struct Held {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _joined = t.join();
        }
    }
}

/// What to do after asking for the lease.
pub enum Take {
    /// Build: the lease is ours while this lives.
    Build(Held),
    /// Another builder registered this layer meanwhile: its record.
    Reuse(Box<Record>),
}

/// Another builder holds the layer and `--no-wait` was given (exit code 3).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Busy(pub String);

/// What a build asks for.
pub struct Ask<'a> {
    /// The registry (`--registry`): the heartbeat opens its own connection to it.
    pub spec: Option<&'a str>,
    /// The image.
    pub name: &'a str,
    /// Its layer key.
    pub key: &'a str,
    /// Seconds between heartbeats.
    pub period: Duration,
    /// Exit 3 rather than wait for a live holder.
    pub no_wait: bool,
    /// A record the holder registers meanwhile ends the wait (not with `--rebuild`).
    pub reuse: bool,
}

/// Takes the lease `ask` describes in `store`, waiting for a live holder unless `no_wait`.
pub fn take(store: &mut dyn Store, ask: &Ask<'_>, events: &Events) -> anyhow::Result<Take> {
    let Ask { spec, name, key, period, no_wait, reuse } = *ask;
    let me = lease::mine(key, name, period.as_secs().max(1));
    let mut told = false;
    loop {
        let got = store.lease_acquire(&me)?;
        if let Acquire::TakenOver { previous, silent } = &got {
            events.notice(&format!(
                "took over the lease on {name}'s layer from {}: no heartbeat for {silent} s (logged; what that build left is the janitor's)",
                previous.who()
            ));
        }
        match got {
            Acquire::Acquired | Acquire::TakenOver { .. } => {
                let held = heartbeat(spec, me, period)?;
                // A builder that finished just before we asked: its record, not a second build.
                if reuse && let Some(r) = super::layer::up_to_date(store, name, key)? {
                    return Ok(Take::Reuse(Box::new(r)));
                }
                return Ok(Take::Build(held));
            }
            Acquire::Held { lease: l, age } => {
                if no_wait {
                    return Err(Busy(format!(
                        "{name}: this layer ({key}) is being built by {} (heartbeat {age} s ago); --no-wait: not waiting",
                        l.who()
                    ))
                    .into());
                }
                if !told {
                    events.notice(&format!("{name}: {} is building this layer; waiting for its record", l.who()));
                    told = true;
                }
            }
        }
        std::thread::sleep((period / 2).clamp(Duration::from_millis(200), Duration::from_secs(5)));
        crate::host::signals::check()?;
        if reuse && let Some(r) = super::layer::up_to_date(store, name, key)? {
            events.notice(&format!("{name}: reusing {} {} ({}), built by the holder of the lease", r.name, r.version, r.id));
            return Ok(Take::Reuse(Box::new(r)));
        }
    }
}

/// Starts the heartbeat thread: every `period` it renews the lease on its own connection; when
/// the guard drops it gives the lease back.
fn heartbeat(spec: Option<&str>, me: lease::Lease, period: Duration) -> anyhow::Result<Held> {
    let mut store = crate::registry::open(spec)?;
    let (tx, rx) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new().name("lease-heartbeat".into()).spawn(move || {
        // Until the guard drops (the channel disconnects).
        while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(period) {
            match store.lease_heartbeat(&me.layer_key, &me.holder) {
                Ok(true) => {}
                Ok(false) => tracing::warn!("the lease on {}'s layer was taken over by another builder", me.name),
                Err(e) => tracing::warn!("could not renew the lease on {}'s layer: {e:#}", me.name),
            }
        }
        if let Err(e) = store.lease_release(&me.layer_key, &me.holder) {
            tracing::warn!("could not give the lease on {}'s layer back: {e:#} (it lapses after {} heartbeats)", me.name, lease::MISSED);
        }
    })?;
    Ok(Held { stop: Some(tx), thread: Some(thread) })
}
