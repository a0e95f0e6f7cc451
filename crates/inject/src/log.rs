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
            $crate::log::say(format_args!($($arg)*));
        }
    };
}

/// Writes `crashcart: <message>` on stderr, ignoring a closed stderr: the helper may outlive
/// crashcart (whose end of the helper's stderr is gone then) and must go on ending the session.
pub fn say(message: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "crashcart: {message}");
}

/// Writes `text` as it is on stderr, ignoring a closed stderr (`crashcart ... 2>&1 | head`
/// must not panic).
pub fn stderr_text(text: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// Writes `bytes` on stdout and flushes; a reader that went away (`crashcart --list | head`)
/// is not an error.
pub fn stdout_bytes(bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// An error and its causes on one line, each printed once: `error: cause: cause of the cause`.
/// Errors name what failed and leave the cause to [`std::error::Error::source`].
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        line.push_str(": ");
        line.push_str(&c.to_string());
        cause = c.source();
    }
    line
}
