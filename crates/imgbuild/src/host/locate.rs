//! Finding a `--host` program on the host and telling ELF files from `#!` scripts.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::HostError;

/// Searched after `PATH`: a non-root user's `PATH` on Debian lacks the sbin directories,
/// yet `ip` and `tcpdump` live there and are among the tools people want most.
const SBIN_FALLBACK: &[&str] = &["/usr/local/sbin", "/usr/sbin", "/sbin"];

/// Used when `PATH` is unset, as the shell would.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The kernel reads at most this many bytes of a `#!` line (`BINPRM_BUF_SIZE`, Linux 5.1+).
const SHEBANG_MAX: usize = 256;

/// Resolves `program` the way a shell would: a name containing `/` is a path, anything else
/// is looked up on `PATH`. Returns the path found, not canonicalized (its name is the one the
/// user asked for, e.g. `vi` rather than the alternative it points to).
pub fn find_program(program: &OsStr) -> Result<PathBuf, HostError> {
    let not_found = || HostError::ProgramNotFound(PathBuf::from(program));
    if program.is_empty() {
        return Err(not_found());
    }
    if program.as_encoded_bytes().contains(&b'/') {
        let path = PathBuf::from(program);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(HostError::ProgramPathNotFound(path))
        };
    }
    let path_var = std::env::var_os("PATH").unwrap_or_else(|| OsString::from(DEFAULT_PATH));
    std::env::split_paths(&path_var)
        .filter(|dir| dir.is_absolute())
        .chain(SBIN_FALLBACK.iter().map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable_file(candidate))
        .ok_or_else(not_found)
}

fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What kind of executable a file is, judged by its first bytes like the kernel does.
#[derive(Debug, PartialEq, Eq)]
pub enum Executable {
    /// Starts with the ELF magic.
    Elf,
    /// A `#!` script.
    Script(Shebang),
}

/// A parsed `#!` line: the kernel passes everything after the interpreter as one argument.
#[derive(Debug, PartialEq, Eq)]
pub struct Shebang {
    /// The interpreter path as written.
    pub interpreter: String,
    /// The optional single argument.
    pub argument: Option<String>,
    /// Byte offset where the script's body (after the `#!` line) starts.
    pub body_offset: usize,
}

/// Reads the first bytes of `path` and classifies it.
pub fn classify(path: &Path) -> Result<Executable, HostError> {
    let read_err = |source| HostError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut head = Vec::with_capacity(SHEBANG_MAX);
    std::fs::File::open(path)
        .and_then(|f| f.take(SHEBANG_MAX as u64).read_to_end(&mut head))
        .map_err(read_err)?;
    if head.starts_with(b"\x7fELF") {
        return Ok(Executable::Elf);
    }
    parse_shebang(&head)
        .map(Executable::Script)
        .ok_or_else(|| HostError::NotExecutable(path.to_path_buf()))
}

/// Parses a `#!` line from the start of a file; `None` when there is no usable one.
fn parse_shebang(head: &[u8]) -> Option<Shebang> {
    let rest = head.strip_prefix(b"#!")?;
    let line_end = rest.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&rest[..line_end]).ok()?;
    let line = line.trim_matches([' ', '\t', '\r']);
    let (interpreter, argument) = match line.split_once([' ', '\t']) {
        Some((interp, arg)) => (interp, Some(arg.trim_matches([' ', '\t']))),
        None => (line, None),
    };
    if interpreter.is_empty() {
        return None;
    }
    Some(Shebang {
        interpreter: interpreter.to_string(),
        argument: argument.filter(|a| !a.is_empty()).map(str::to_string),
        body_offset: 2 + line_end + 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shebang_with_argument_is_one_argument() {
        let s = parse_shebang(b"#! /usr/bin/env  python3 -u \nprint(1)\n").unwrap();
        assert_eq!(s.interpreter, "/usr/bin/env");
        assert_eq!(s.argument.as_deref(), Some("python3 -u"));
        assert_eq!(
            &b"#! /usr/bin/env  python3 -u \nprint(1)\n"[s.body_offset..],
            b"print(1)\n"
        );
    }

    #[test]
    fn shebang_without_argument() {
        let s = parse_shebang(b"#!/bin/sh\necho\n").unwrap();
        assert_eq!(s.interpreter, "/bin/sh");
        assert_eq!(s.argument, None);
    }

    #[test]
    fn not_a_shebang() {
        assert_eq!(parse_shebang(b"echo hi\n"), None);
        assert_eq!(parse_shebang(b"#!\n"), None);
        // No newline within the kernel's buffer: the kernel would truncate; we refuse.
        assert_eq!(parse_shebang(b"#!/bin/sh"), None);
    }

    #[test]
    fn finds_sh_on_path() {
        let found = find_program(OsStr::new("sh")).unwrap();
        assert!(found.is_absolute() && found.ends_with("sh"));
        assert!(matches!(
            find_program(OsStr::new("no-such-program-crashcart")),
            Err(HostError::ProgramNotFound(_))
        ));
    }
}
