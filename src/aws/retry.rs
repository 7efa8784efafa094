//! One retry layer for every AWS call: the SDK's own retries are off (max attempts 1, see
//! `client.rs`), so each call gets exactly the budget given here, never a product of two.
//!
//! Retried, with full-jitter exponential backoff: throttling, 5xx, timeouts, connection errors,
//! unreadable responses. "Snapshot does not exist" right after StartSnapshot is retried only
//! within a warm-up window (EBS needs up to about two minutes). Everything else, AccessDenied
//! and validation errors first, fails at once.

use std::future::Future;
use std::time::{Duration, Instant};

use aws_sdk_ebs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// What to do with a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Transient: retry within the budget.
    Retry,
    /// The snapshot is not visible yet: retry within the warm-up window.
    NotYet,
    /// Give up now.
    Fatal,
}

const THROTTLING: &[&str] = &[
    "RequestThrottledException",
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "SlowDown",
    "InternalServerException",
    "InternalError",
    "ServiceUnavailable",
    "Unavailable",
];

/// Classifies an HTTP status, an error code and message. Pure.
pub fn classify_parts(status: Option<u16>, code: Option<&str>, message: Option<&str>) -> Class {
    let code = code.unwrap_or("");
    if code.contains("AccessDenied") || code.contains("UnauthorizedOperation") || code.contains("AuthFailure") || status == Some(403) {
        return Class::Fatal;
    }
    if THROTTLING.contains(&code) || matches!(status, Some(429 | 500..=599)) {
        return Class::Retry;
    }
    let msg = message.unwrap_or("").to_ascii_lowercase();
    if code == "ResourceNotFoundException" || msg.contains("does not exist") || code == "InvalidSnapshot.NotFound" {
        return Class::NotYet;
    }
    Class::Fatal
}

/// Whether an error (or one of its causes) is the TLS layer refusing the server's certificate:
/// no retry helps.
pub fn certificate_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(x) = cur {
        let text = x.to_string();
        if text.contains("invalid peer certificate") || text.contains("certificate verify failed") {
            return true;
        }
        cur = x.source();
    }
    false
}

/// What to do about a refused certificate.
const CERTIFICATE_HINT: &str = "the endpoint's TLS certificate is not trusted: if a proxy or private endpoint uses its own CA, set AWS_CA_BUNDLE (or SSL_CERT_FILE) to that CA's PEM file";

/// Classifies an SDK error.
pub fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(e: &SdkError<E>) -> Class {
    match e {
        SdkError::DispatchFailure(_) if certificate_refused(e) => Class::Fatal,
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => Class::Retry,
        SdkError::ServiceError(s) => classify_parts(Some(s.raw().status().as_u16()), s.err().code(), s.err().message()),
        _ => Class::Fatal,
    }
}

/// The retry budget of one call.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// First backoff ceiling; doubles per attempt.
    pub base: Duration,
    /// Largest backoff ceiling.
    pub cap: Duration,
    /// How long "does not exist" counts as "not yet", from `since`.
    pub warmup: Duration,
}

impl Policy {
    /// For block puts and most calls: 10 attempts, 0.2 s doubling to 20 s (about 1.5 min worst
    /// case), and a 150 s warm-up window.
    pub const DEFAULT: Policy =
        Policy { attempts: 10, base: Duration::from_millis(200), cap: Duration::from_secs(20), warmup: Duration::from_secs(150) };

    /// For look-ups and cleanups, where "not found" is an answer, not a resource still
    /// appearing: no warm-up window.
    pub const NO_WARMUP: Policy = Policy { warmup: Duration::ZERO, ..Policy::DEFAULT };
}

/// A call that failed for good.
#[derive(Debug)]
pub struct Failed {
    /// Attempts made.
    pub attempts: u32,
    /// Why it stopped retrying.
    pub class: Class,
    /// The last error, with its causes.
    pub message: String,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let why = match self.class {
            Class::Fatal => "not retryable",
            Class::Retry | Class::NotYet => "retries exhausted",
        };
        write!(f, "{} ({} attempt(s), {why})", self.message, self.attempts)
    }
}

/// Full jitter: a pseudo-random delay in [0, ceiling].
pub fn backoff(policy: &Policy, attempt: u32, seed: u64) -> Duration {
    let ceiling = policy.base.saturating_mul(1u32 << attempt.min(16)).min(policy.cap);
    let mut x = seed ^ 0x9E37_79B9_7F4A_7C15 ^ u64::from(attempt).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 30;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    let frac = (x % 10_001) as f64 / 10_000.0;
    ceiling.mul_f64(frac)
}

fn seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| u64::from(d.subsec_nanos()))
}

/// Runs `call` until it succeeds or the budget is spent. `since` starts the warm-up window.
pub async fn retry<T, E, F, Fut>(policy: &Policy, since: Instant, what: &(dyn Fn() -> String + Sync), mut call: F) -> Result<T, Failed>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E>>>,
{
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let e = match call().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let class = classify(&e);
        let retry = match class {
            Class::Retry => attempt < policy.attempts,
            Class::NotYet => since.elapsed() < policy.warmup && attempt < policy.attempts.saturating_mul(3),
            Class::Fatal => false,
        };
        let mut message = format!("{}", DisplayErrorContext(&e));
        if certificate_refused(&e) {
            message = format!("{message}; {CERTIFICATE_HINT}");
        }
        if !retry {
            return Err(Failed { attempts: attempt, class, message });
        }
        let mut delay = backoff(policy, attempt, seed());
        if class == Class::NotYet {
            delay = delay.max(Duration::from_secs(2));
        }
        tracing::debug!("{}: attempt {attempt} failed ({class:?}), retrying in {delay:.1?}: {message}", what());
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies() {
        assert_eq!(classify_parts(Some(400), Some("RequestThrottledException"), None), Class::Retry);
        assert_eq!(classify_parts(Some(503), None, None), Class::Retry);
        assert_eq!(classify_parts(Some(500), Some("InternalServerException"), None), Class::Retry);
        assert_eq!(classify_parts(Some(403), Some("AccessDeniedException"), None), Class::Fatal);
        assert_eq!(classify_parts(Some(400), Some("ValidationException"), Some("bad checksum")), Class::Fatal);
        assert_eq!(classify_parts(Some(400), Some("ValidationException"), Some("The snapshot 'snap-1' does not exist.")), Class::NotYet);
        assert_eq!(classify_parts(Some(404), Some("ResourceNotFoundException"), None), Class::NotYet);
    }

    #[test]
    fn backoff_is_bounded_and_grows() {
        let p = Policy::DEFAULT;
        for a in 1..30 {
            for s in 0..20 {
                assert!(backoff(&p, a, s) <= p.cap);
            }
        }
        assert!(backoff(&p, 1, 7) <= Duration::from_millis(400));
    }
}
