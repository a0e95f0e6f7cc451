//! Running nix (or the container engine running nix): its progress lines ("building ...",
//! "copying path ...") go to our stderr as they come; everything, builders' output included,
//! is kept as the tail of the log for the error when the build fails, so it is shown once.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use super::NixError;

/// How many lines of nix's log a failed build reports.
const LOG_TAIL_LINES: usize = 25;

/// Marker thrown by `nix/default.nix` before the JSON list of unknown attribute names.
const UNKNOWN_PACKAGES_MARKER: &str = "crashcart-unknown-packages: ";

/// Lines of nix's log that say what it is doing, as opposed to what builders print.
const PROGRESS_PREFIXES: &[&str] = &[
    "these ",
    "this ",
    "building '",
    "copying path '",
    "copying ",
    "downloading '",
    "unpacking '",
    "warning:",
];

/// Runs `command`, passing its progress on, and returns its stdout.
///
/// A missing program is reported by `not_found`; a failing one as an unknown package when
/// nix says so, otherwise as a failed build with the end of its log.
pub fn run_nix(
    mut command: Command,
    not_found: impl FnOnce() -> NixError,
) -> Result<String, NixError> {
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = match command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
        Err(source) => return Err(NixError::Spawn { program, source }),
    };

    let stderr = child.stderr.take().expect("stderr is piped");
    let log_reader = std::thread::spawn(move || {
        let mut tail = VecDeque::with_capacity(LOG_TAIL_LINES);
        let mut unknown = None;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let line = strip_ansi(&line);
            if PROGRESS_PREFIXES.iter().any(|p| line.starts_with(p)) {
                let _ = writeln!(std::io::stderr(), "{line}");
            }
            if let Some(names) = unknown_packages(&line) {
                unknown = Some(names);
            }
            if tail.len() == LOG_TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        }
        (tail, unknown)
    });

    let output = child.wait_with_output().map_err(|source| NixError::Spawn {
        program: program.clone(),
        source,
    })?;
    let (tail, unknown) = log_reader.join().expect("log reader does not panic");
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    if let Some(names) = unknown {
        return Err(NixError::UnknownPackages { names });
    }
    Err(NixError::BuildFailed {
        program,
        status: output.status,
        log_tail: Vec::from(tail).join("\n"),
    })
}

/// The names in nix's `error: crashcart-unknown-packages: ["a","b"]`, if `line` is that.
fn unknown_packages(line: &str) -> Option<Vec<String>> {
    let (_, list) = line.split_once(UNKNOWN_PACKAGES_MARKER)?;
    let list = list.trim().strip_prefix('[')?;
    let list = &list[..list.find(']')?];
    // The names were validated before the build: plain quoted strings, no escapes.
    Some(
        list.split(',')
            .map(|name| name.trim().trim_matches('"').to_string())
            .filter(|name| !name.is_empty())
            .collect(),
    )
}

/// `line` without terminal escape sequences (nix colours its messages in some setups).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters... final byte in @..~
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_packages_are_read_from_the_thrown_error() {
        assert_eq!(
            unknown_packages(r#"error: crashcart-unknown-packages: ["nope","x.y"]"#),
            Some(vec!["nope".to_string(), "x.y".to_string()])
        );
        assert_eq!(
            unknown_packages("\u{1b}[31;1merror:\u{1b}[0m crashcart-unknown-packages: [\"a\"]"),
            Some(vec!["a".to_string()])
        );
        assert_eq!(unknown_packages("building '/nix/store/x.drv'..."), None);
    }

    #[test]
    fn colours_are_stripped() {
        assert_eq!(
            strip_ansi("\u{1b}[31;1merror:\u{1b}[0m executing '\u{1b}[35;1m/x\u{1b}[0m'"),
            "error: executing '/x'"
        );
        assert_eq!(strip_ansi("plain"), "plain");
    }
}
