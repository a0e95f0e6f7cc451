//! The `packages` file: one nixpkgs attribute per line, `#` starts a comment.

use std::path::{Path, PathBuf};

use super::NixError;

/// Reads the attribute names listed in `path`, in file order, without duplicates.
pub fn read_packages_file(path: &Path) -> Result<Vec<String>, NixError> {
    let text = std::fs::read_to_string(path).map_err(|source| NixError::PackagesUnreadable {
        path: path.to_path_buf(),
        source,
    })?;
    parse_packages(path, &text)
}

/// Parses the text of a packages file; `path` only names it in errors.
fn parse_packages(path: &Path, text: &str) -> Result<Vec<String>, NixError> {
    let mut names: Vec<String> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let name = line.split('#').next().unwrap_or_default().trim();
        if name.is_empty() {
            continue;
        }
        if !is_attribute_path(name) {
            return Err(NixError::BadPackageName {
                path: PathBuf::from(path),
                line: index + 1,
                text: name.to_string(),
            });
        }
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    if names.is_empty() {
        return Err(NixError::PackagesEmpty {
            path: path.to_path_buf(),
        });
    }
    Ok(names)
}

/// A dotted nixpkgs attribute path (`strace`, `python3Packages.requests`, `gtk+3`).
///
/// Checking the characters here keeps the names safe to splice into a JSON string and gives
/// a line number for typos such as `strace gdb` on one line.
fn is_attribute_path(name: &str) -> bool {
    name.split('.').all(|part| {
        part.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+' | '\''))
    })
}

/// The names as a JSON array of strings, for `--argstr packagesJSON`.
pub fn to_json(names: &[String]) -> String {
    // Names passed is_attribute_path: no quote, backslash or control character to escape.
    let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    format!("[{}]", quoted.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<String>, NixError> {
        parse_packages(Path::new("packages"), text)
    }

    #[test]
    fn comments_blank_lines_and_duplicates_are_skipped() {
        let names = parse("# tools\nstrace\n\n  gdb   # debugger\nstrace\npython3Packages.pip\n")
            .expect("valid file");
        assert_eq!(names, ["strace", "gdb", "python3Packages.pip"]);
        assert_eq!(to_json(&names), r#"["strace","gdb","python3Packages.pip"]"#);
    }

    #[test]
    fn the_repository_packages_file_lists_the_tool_set() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packages");
        let names = read_packages_file(&path).expect("packages parses");
        for tool in [
            "bashInteractive",
            "binutils-unwrapped",
            "bzip2",
            "coreutils",
            "curl",
            "gdb",
            "gnutar",
            "gzip",
            "lsof",
            "ltrace",
            "man",
            "netcat-gnu",
            "openssl",
            "pigz",
            "strace",
            "tcpdump",
            "wget",
            "iproute2",
            "procps",
            "iputils",
            "dnsutils",
            "findutils",
            "gnugrep",
            "gnused",
            "less",
            "vim",
            "htop",
            "file",
            "jq",
            "socat",
            "ncurses",
            "cacert",
        ] {
            assert!(
                names.iter().any(|n| n == tool),
                "{tool} missing from packages"
            );
        }
    }

    #[test]
    fn only_comments_is_empty() {
        assert!(matches!(
            parse("# nothing\n\n   \n"),
            Err(NixError::PackagesEmpty { .. })
        ));
    }

    #[test]
    fn two_names_on_a_line_are_rejected_with_the_line_number() {
        match parse("strace\nstrace gdb\n") {
            Err(NixError::BadPackageName { line, text, .. }) => {
                assert_eq!(line, 2);
                assert_eq!(text, "strace gdb");
            }
            other => panic!("expected BadPackageName, got {other:?}"),
        }
    }

    #[test]
    fn quotes_and_empty_path_components_are_rejected() {
        for bad in ["a\"b", "a..b", ".a", "a.", "1password", "${x}"] {
            assert!(!is_attribute_path(bad), "{bad} accepted");
        }
        for good in [
            "gtk+3",
            "bashInteractive",
            "netcat-gnu",
            "_1password",
            "a.b_c",
        ] {
            assert!(is_attribute_path(good), "{good} rejected");
        }
    }
}
