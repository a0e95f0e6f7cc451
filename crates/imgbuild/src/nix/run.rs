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

/// What nix says when its build sandbox cannot be set up: no user namespace (Docker's
/// default seccomp profile), no mount in one (Ubuntu 24.04's AppArmor rule), or, after nix fell
/// back to building without the sandbox, a builder that cannot exist outside it because the
/// store is a chroot store. Each is a fragment of one line of nix's log (nix 2.8 to 2.32, Lix).
const SANDBOX_FAILURES: &[&[&str]] = &[
    &["unable to make '/' private"],
    &["cloning builder process", "not permitted"],
    &["creating directory '/nix", "Permission denied"],
    &["executing '/", "No such file or directory"],
    &["mounting '", "not permitted"],
    &["kernel namespaces", "sandbox"],
    &["unable to setup", "namespace"],
];

/// What nix's log said, read while it ran.
#[derive(Default)]
struct LogSummary {
    /// The last [`LOG_TAIL_LINES`] lines, control bytes removed.
    tail: VecDeque<String>,
    /// Names from nix/default.nix's unknown-packages error.
    unknown: Option<Vec<String>>,
    /// The derivations nix said it would build.
    to_build: Vec<String>,
    /// Whether a line said the build sandbox could not be set up.
    sandbox_failed: bool,
}

impl LogSummary {
    fn read(&mut self, line: String, in_build_list: &mut bool) {
        if PROGRESS_PREFIXES.iter().any(|p| line.starts_with(p)) {
            let _ = writeln!(std::io::stderr(), "{line}");
        }
        if let Some(names) = unknown_packages(&line) {
            self.unknown = Some(names);
        }
        if *in_build_list {
            match line.strip_prefix("  ") {
                Some(drv) if drv.starts_with('/') => self.to_build.push(drv.trim().to_string()),
                _ => *in_build_list = false,
            }
        }
        if line.ends_with("will be built:") {
            *in_build_list = true;
        }
        if SANDBOX_FAILURES
            .iter()
            .any(|parts| parts.iter().all(|p| line.contains(p)))
        {
            self.sandbox_failed = true;
        }
        if self.tail.len() == LOG_TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }
}

/// Runs `command`, passing its progress on, and returns its stdout.
///
/// A missing program is reported by `not_found`; a failing one as an unknown package when
/// nix says so, as a build nix cannot do on this machine when it had derivations to build and
/// could not set up its sandbox, otherwise as a failed build with the end of its log.
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
        let mut log = LogSummary::default();
        let mut in_build_list = false;
        // Bytes, not UTF-8 lines: a builder may print anything, and nix 2.8 leaks bytes of its
        // worker protocol into messages; one bad byte must not end the log.
        for line in BufReader::new(stderr).split(b'\n') {
            let Ok(line) = line else { break };
            log.read(clean_line(&line), &mut in_build_list);
        }
        log
    });

    let output = child.wait_with_output().map_err(|source| NixError::Spawn {
        program: program.clone(),
        source,
    })?;
    let log = log_reader.join().expect("log reader does not panic");
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    if let Some(names) = log.unknown {
        return Err(NixError::UnknownPackages { names });
    }
    let log_tail = Vec::from(log.tail).join("\n");
    if log.sandbox_failed && !log.to_build.is_empty() {
        return Err(NixError::CannotBuildHere {
            derivations: log.to_build.iter().map(|d| derivation_name(d)).collect(),
            log_tail,
        });
    }
    Err(NixError::BuildFailed {
        program,
        status: output.status,
        log_tail,
    })
}

/// `hello-2.12` for `/nix/store/<hash>-hello-2.12.drv`.
fn derivation_name(drv: &str) -> String {
    let base = drv.rsplit('/').next().unwrap_or(drv);
    let base = base.strip_suffix(".drv").unwrap_or(base);
    match base.split_once('-') {
        Some((hash, name)) if hash.len() == 32 => name.to_string(),
        _ => base.to_string(),
    }
}

/// A line of nix's log as text: terminal escapes, control bytes (tabs but) and bytes that are
/// not UTF-8 removed, trailing blanks trimmed.
fn clean_line(bytes: &[u8]) -> String {
    let text = strip_ansi(&String::from_utf8_lossy(bytes));
    let cleaned: String = text
        .chars()
        .filter(|&c| c == '\t' || !(c.is_control() || c == char::REPLACEMENT_CHARACTER))
        .collect();
    cleaned.trim_end().to_string()
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

    #[test]
    fn protocol_bytes_and_controls_leave_the_line() {
        let raw = b"\x00\x00Error\x05\x00\xff\xfe  executing '/nix/store/x': No such file\r  ";
        assert_eq!(
            clean_line(raw),
            "Error  executing '/nix/store/x': No such file"
        );
        assert_eq!(clean_line(b"a\tb"), "a\tb");
    }

    #[test]
    fn derivations_to_build_and_sandbox_failures_are_noticed() {
        let mut log = LogSummary::default();
        let mut listing = false;
        for line in [
            "these 2 derivations will be built:",
            "  /nix/store/ajk9jxcb8v5zffmbn1mij3005jm4kbmp-cart-data-1.0.drv",
            "  /nix/store/bjk9jxcb8v5zffmbn1mij3005jm4kbmp-strace-6.1.drv",
            "building '/nix/store/ajk9jxcb8v5zffmbn1mij3005jm4kbmp-cart-data-1.0.drv'...",
            "error: unable to make '/' private: Operation not permitted",
        ] {
            log.read(line.to_string(), &mut listing);
        }
        let names: Vec<String> = log.to_build.iter().map(|d| derivation_name(d)).collect();
        assert_eq!(names, ["cart-data-1.0", "strace-6.1"]);
        assert!(log.sandbox_failed);

        let mut plain = LogSummary::default();
        plain.read(
            "error: builder for '/nix/store/x.drv' failed with exit code 3".into(),
            &mut listing,
        );
        assert!(!plain.sandbox_failed);
    }
}
