//! Waiters: poll until a resource is ready N times in a row (eventual consistency), fail at
//! once on a terminal state, stop at a wall-clock limit. Sleeps with tokio.

use std::future::Future;
use std::time::{Duration, Instant};

/// One poll's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    /// Ready.
    Ready,
    /// Not yet, with the state seen.
    Pending(String),
    /// A terminal failure state, with details.
    Failed(String),
}

/// Why waiting stopped.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// Terminal state.
    #[error("{what} failed: {detail}")]
    Failed {
        /// What was waited for.
        what: String,
        /// The state and reason.
        detail: String,
    },
    /// Wall-clock limit.
    #[error("{what} was not ready after {secs} s (last state: {state}); it is kept: check it later or delete it")]
    Timeout {
        /// What was waited for.
        what: String,
        /// Limit.
        secs: u64,
        /// Last state.
        state: String,
    },
    /// The poll call itself failed for good.
    #[error("Failed to check {what}: {message}")]
    Poll {
        /// What was waited for.
        what: String,
        /// Error.
        message: String,
    },
}

/// How to wait.
#[derive(Debug, Clone, Copy)]
pub struct Waiter {
    /// Between polls.
    pub interval: Duration,
    /// Consecutive `Ready` answers needed.
    pub needed: u32,
    /// Give up after.
    pub limit: Duration,
}

impl Waiter {
    /// Snapshots and AMIs: 3 in a row, polling every second, then every 5 s after a minute.
    pub fn standard(limit: Duration) -> Self {
        Self { interval: Duration::from_secs(1), needed: 3, limit }
    }

    /// Polls `poll` until ready.
    pub async fn wait<F, Fut>(&self, what: &str, mut poll: F) -> Result<(), WaitError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Poll, String>>,
    {
        let start = Instant::now();
        let mut in_a_row = 0;
        let mut last = String::from("unknown");
        loop {
            match poll().await.map_err(|message| WaitError::Poll { what: what.to_string(), message })? {
                Poll::Ready => {
                    in_a_row += 1;
                    if in_a_row >= self.needed {
                        return Ok(());
                    }
                    last = "ready".into();
                }
                Poll::Pending(state) => {
                    in_a_row = 0;
                    if state != last {
                        tracing::info!("{what}: {state} ({:.0} s)", start.elapsed().as_secs_f64());
                    }
                    last = state;
                }
                Poll::Failed(detail) => return Err(WaitError::Failed { what: what.to_string(), detail }),
            }
            if start.elapsed() >= self.limit {
                return Err(WaitError::Timeout { what: what.to_string(), secs: self.limit.as_secs(), state: last });
            }
            let pause = if start.elapsed() > Duration::from_secs(60) { self.interval.max(Duration::from_secs(5)) } else { self.interval };
            tokio::time::sleep(pause).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn needs_successes_in_a_row_and_fails_fast() {
        let w = Waiter { interval: Duration::from_millis(1), needed: 3, limit: Duration::from_millis(50) };
        let answers = std::sync::Mutex::new(vec![Poll::Ready, Poll::Pending("pending".into()), Poll::Ready, Poll::Ready, Poll::Ready]);
        let polls = std::sync::atomic::AtomicU32::new(0);
        w.wait("x", || {
            polls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let a = answers.lock().unwrap().remove(0);
            async move { Ok(a) }
        })
        .await
        .unwrap();
        assert_eq!(polls.load(std::sync::atomic::Ordering::Relaxed), 5);
        let e = w.wait("y", || async { Ok(Poll::Failed("error".into())) }).await.unwrap_err();
        assert!(matches!(e, WaitError::Failed { .. }));
        let e = w.wait("z", || async { Ok(Poll::Pending("pending".into())) }).await.unwrap_err();
        assert!(matches!(e, WaitError::Timeout { .. }), "{e}");
    }
}
