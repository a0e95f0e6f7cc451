//! `-v/--verbose`: one line per step on stderr.

use std::sync::atomic::{AtomicBool, Ordering};

static VERBOSE: AtomicBool = AtomicBool::new(false);

/// Turns step logging on or off.
pub fn set_verbose(on: bool) {
    VERBOSE.store(on, Ordering::Relaxed);
}

/// Whether step logging is on.
pub fn verbose() -> bool {
    VERBOSE.load(Ordering::Relaxed)
}

/// Logs one step (`crashcart: <step>`) when `-v` is on.
#[macro_export]
macro_rules! step {
    ($($arg:tt)*) => {
        if $crate::log::verbose() {
            eprintln!("crashcart: {}", format_args!($($arg)*));
        }
    };
}
