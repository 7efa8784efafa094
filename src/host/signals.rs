//! SIGINT/SIGTERM: the first asks for an orderly stop (checked between steps and chunks); the
//! second exits at once, and the private mount namespace plus autoclear loop devices release
//! everything.

use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    if STOP.swap(true, Ordering::SeqCst) {
        // Second signal: leave now. Only async-signal-safe calls here.
        #[allow(unsafe_code)]
        // SAFETY: _exit is async-signal-safe and takes no pointers.
        unsafe {
            libc::_exit(130)
        };
    }
}

/// Installs the handlers for SIGINT and SIGTERM.
pub fn install() -> Result<(), nix::Error> {
    let action = SigAction::new(SigHandler::Handler(on_signal), SaFlags::SA_RESTART, SigSet::empty());
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        #[allow(unsafe_code)]
        // SAFETY: the handler only touches an atomic and calls _exit; both are signal-safe.
        unsafe {
            sigaction(sig, &action)?
        };
    }
    Ok(())
}

/// Whether a stop was requested.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// An error for a build stopped by a signal.
#[derive(Debug, thiserror::Error)]
#[error("interrupted by a signal; cleaned up")]
pub struct Interrupted;

/// `Err(Interrupted)` when a stop was requested.
pub fn check() -> Result<(), Interrupted> {
    if stop_requested() { Err(Interrupted) } else { Ok(()) }
}
