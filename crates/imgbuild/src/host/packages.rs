//! `--host-package NAME` and `--host-set NAME`: the programs a package of the host installed,
//! as the host's package database lists them.
//!
//! The database is asked through its own client: `dpkg-query -L NAME` on dpkg systems (Debian,
//! Ubuntu), else `rpm -ql NAME` (Fedora, RHEL, SUSE). A package's programs are the executable
//! files it installed directly in a `bin` or `sbin` directory, plus the symlinks in those
//! directories that other packages or the alternatives system made to one of them (`vim` →
//! `/etc/alternatives/vim` → `vim.basic`, `awk` → `gawk`, `nc` → `nc.openbsd`): what a user
//! types. Its manual pages are the files it installed under `/usr/share/man/manN/`.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::HostError;

/// Directories whose executables are a package's programs.
const PROGRAM_DIRS: &[&str] = &[
    "/bin",
    "/sbin",
    "/usr/bin",
    "/usr/sbin",
    "/usr/local/bin",
    "/usr/local/sbin",
];

/// Where packages install manual pages (only the untranslated sections are taken).
const MAN_ROOT: &str = "/usr/share/man";

/// A named set of packages (`--host-set`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum HostSet {
    /// A shell and the tools an SRE reaches for in a container: bash, coreutils, procps,
    /// iproute2, util-linux, findutils, grep, sed, gawk, less, curl, dig, tcpdump, strace, gdb,
    /// lsof, htop, vim, jq, netcat, psmisc, tput, man and col/column/hexdump.
    Debug,
}

/// One member of a set: what it is called, and the package names that provide it on the
/// distributions crashcart knows, the first installed one taken.
pub struct SetMember {
    /// The name printed when the host has none of the packages.
    pub tool: &'static str,
    /// Candidate packages, dpkg names first, then rpm names.
    pub packages: &'static [&'static str],
}

const fn member(tool: &'static str, packages: &'static [&'static str]) -> SetMember {
    SetMember { tool, packages }
}

/// `--host-set debug`.
const DEBUG_SET: &[SetMember] = &[
    member("shell", &["bash"]),
    member("coreutils", &["coreutils"]),
    member("procps", &["procps", "procps-ng"]),
    member("iproute2", &["iproute2", "iproute"]),
    member("util-linux", &["util-linux"]),
    member("findutils", &["findutils"]),
    member("grep", &["grep"]),
    member("sed", &["sed"]),
    member("gawk", &["gawk"]),
    member("less", &["less"]),
    member("curl", &["curl"]),
    member("dig", &["bind9-dnsutils", "dnsutils", "bind-utils"]),
    member("tcpdump", &["tcpdump"]),
    member("strace", &["strace"]),
    member("gdb", &["gdb"]),
    member("lsof", &["lsof"]),
    member("htop", &["htop"]),
    member(
        "vim",
        &[
            "vim",
            "vim-nox",
            "vim-gtk3",
            "vim-enhanced",
            "vim-tiny",
            "vim-minimal",
        ],
    ),
    member("jq", &["jq"]),
    member(
        "netcat",
        &["netcat-openbsd", "netcat-traditional", "ncat", "nmap-ncat"],
    ),
    member("psmisc", &["psmisc"]),
    member("tput", &["ncurses-bin", "ncurses"]),
    member("man", &["man-db"]),
    member("groff", &["groff-base", "groff"]),
    member("col", &["bsdextrautils", "util-linux"]),
];

impl HostSet {
    /// The set's members.
    pub fn members(self) -> &'static [SetMember] {
        match self {
            HostSet::Debug => DEBUG_SET,
        }
    }

    /// The set's name as given on the command line.
    pub fn name(self) -> &'static str {
        match self {
            HostSet::Debug => "debug",
        }
    }
}

/// What a package installed that a bundle uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// The package's name.
    pub name: String,
    /// Its programs, as paths under a program directory (not canonicalized: the name is the
    /// one users type).
    pub programs: Vec<PathBuf>,
    /// Its manual pages (files and symlinks under `/usr/share/man/manN/`).
    pub man_pages: Vec<PathBuf>,
}

/// The host's package database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Database {
    Dpkg,
    Rpm,
}

impl Database {
    /// The first database whose client runs here (asked once per process).
    fn find() -> Option<Database> {
        static FOUND: OnceLock<Option<Database>> = OnceLock::new();
        *FOUND.get_or_init(|| {
            [Database::Dpkg, Database::Rpm]
                .into_iter()
                .find(|db| db.client_runs())
        })
    }

    fn client_runs(self) -> bool {
        let (program, arg) = match self {
            Database::Dpkg => ("dpkg-query", "--version"),
            Database::Rpm => ("rpm", "--version"),
        };
        Command::new(program)
            .arg(arg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The files `name` installed, or `None` when it is not installed.
    fn files(self, name: &str) -> Result<Option<Vec<PathBuf>>, HostError> {
        let mut command = match self {
            Database::Dpkg => {
                let mut c = Command::new("dpkg-query");
                c.args(["-W", "-f", "${db:Status-Abbrev}"]).arg(name);
                c
            }
            Database::Rpm => {
                let mut c = Command::new("rpm");
                c.arg("-q").arg(name);
                c
            }
        };
        // Installed, not merely known (dpkg keeps removed packages' configuration files).
        let status = run(&mut command)?;
        let installed = match self {
            Database::Dpkg => status.status.success() && status.stdout.starts_with(b"i"),
            Database::Rpm => status.status.success(),
        };
        if !installed {
            return Ok(None);
        }
        let mut command = match self {
            Database::Dpkg => {
                let mut c = Command::new("dpkg-query");
                c.arg("-L").arg(name);
                c
            }
            Database::Rpm => {
                let mut c = Command::new("rpm");
                c.arg("-ql").arg(name);
                c
            }
        };
        let out = run(&mut command)?;
        if !out.status.success() {
            return Ok(None);
        }
        Ok(Some(parse_file_list(&out.stdout)))
    }
}

fn run(command: &mut Command) -> Result<std::process::Output, HostError> {
    command
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|source| HostError::PackageDatabase {
            command: format!("{command:?}"),
            source,
        })
}

/// One absolute path per line; anything else (rpm's "(contains no files)") is skipped.
fn parse_file_list(stdout: &[u8]) -> Vec<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    stdout
        .split(|&b| b == b'\n')
        .filter(|line| line.starts_with(b"/"))
        .map(|line| PathBuf::from(OsStr::from_bytes(line)))
        .collect()
}

/// Looks `name` up in the host's package database: `None` when it is not installed.
pub fn lookup(name: &str) -> Result<Option<Package>, HostError> {
    let Some(database) = Database::find() else {
        return Ok(None);
    };
    let Some(files) = database.files(name)? else {
        return Ok(None);
    };
    Ok(Some(Package {
        name: name.to_string(),
        programs: programs_of(&files),
        man_pages: man_pages_of(&files),
    }))
}

/// Looks `name` up and fails when it is not installed.
pub fn require(name: &str) -> Result<Package, HostError> {
    lookup(name)?.ok_or_else(|| HostError::PackageNotInstalled(name.to_string()))
}

/// The package's executables directly in a program directory, then the symlinks in those
/// directories that lead to one of them under another name.
fn programs_of(files: &[PathBuf]) -> Vec<PathBuf> {
    let mut programs: Vec<PathBuf> = files
        .iter()
        .filter(|f| f.parent().is_some_and(is_program_dir))
        .filter(|f| is_executable(f))
        .cloned()
        .collect();
    let targets: BTreeSet<PathBuf> = programs
        .iter()
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .collect();
    let mut names: BTreeSet<std::ffi::OsString> = programs
        .iter()
        .filter_map(|p| p.file_name().map(OsStr::to_os_string))
        .collect();
    for (link, target) in program_dir_symlinks() {
        let Some(name) = link.file_name() else {
            continue;
        };
        if !names.contains(name) && targets.contains(target) {
            names.insert(name.to_os_string());
            programs.push(link.clone());
        }
    }
    programs
}

fn is_program_dir(dir: &Path) -> bool {
    PROGRAM_DIRS.iter().any(|d| Path::new(d) == dir)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Every symlink in the program directories (each directory once, when `/bin` is `/usr/bin`),
/// in name order, with the file it leads to (read once per process).
fn program_dir_symlinks() -> &'static [(PathBuf, PathBuf)] {
    static LINKS: OnceLock<Vec<(PathBuf, PathBuf)>> = OnceLock::new();
    LINKS.get_or_init(|| {
        symlinks_in_program_dirs()
            .into_iter()
            .filter_map(|link| std::fs::canonicalize(&link).ok().map(|t| (link, t)))
            .collect()
    })
}

fn symlinks_in_program_dirs() -> Vec<PathBuf> {
    let mut seen = BTreeSet::new();
    let mut links = Vec::new();
    for dir in PROGRAM_DIRS {
        let Ok(real) = std::fs::canonicalize(dir) else {
            continue;
        };
        if !seen.insert(real) {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_symlink()))
            .map(|e| e.path())
            .collect();
        found.sort();
        links.extend(found);
    }
    links
}

/// The package's manual pages in `/usr/share/man/manN/` (translations left out).
fn man_pages_of(files: &[PathBuf]) -> Vec<PathBuf> {
    files
        .iter()
        .filter(|f| {
            f.parent().is_some_and(|dir| {
                dir.parent() == Some(Path::new(MAN_ROOT))
                    && dir
                        .file_name()
                        .and_then(OsStr::to_str)
                        .is_some_and(|n| n.starts_with("man"))
            })
        })
        .filter(|f| {
            std::fs::symlink_metadata(f).is_ok_and(|m| m.is_file() || m.file_type().is_symlink())
        })
        .cloned()
        .collect()
}

/// The installed package of each member of `set`, and the members the host has none of.
pub fn resolve_set(set: HostSet) -> Result<(Vec<Package>, Vec<&'static str>), HostError> {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for member in set.members() {
        let mut package = None;
        for name in member.packages {
            if let Some(p) = lookup(name)? {
                package = Some(p);
                break;
            }
        }
        match package {
            Some(p) => found.push(p),
            None => missing.push(member.tool),
        }
    }
    Ok((found, missing))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_lists_keep_paths_only() {
        let list = parse_file_list(b"/.\n/bin\n/bin/ls\n(contains no files)\n\n/usr/bin/x y\n");
        assert_eq!(
            list,
            [
                PathBuf::from("/."),
                PathBuf::from("/bin"),
                PathBuf::from("/bin/ls"),
                PathBuf::from("/usr/bin/x y")
            ]
        );
    }

    #[test]
    fn programs_are_executables_in_program_dirs() {
        let files = [
            PathBuf::from("/bin"),
            PathBuf::from("/bin/sh"),
            PathBuf::from("/usr/share/doc"),
            PathBuf::from("/etc/passwd"),
        ];
        let programs = programs_of(&files);
        assert_eq!(programs[0], PathBuf::from("/bin/sh"));
        assert!(!programs.contains(&PathBuf::from("/bin")));
        assert!(!programs.contains(&PathBuf::from("/etc/passwd")));
    }

    #[test]
    fn man_pages_are_untranslated_sections() {
        let dir = PathBuf::from(MAN_ROOT);
        let files = [
            dir.join("man1"),
            dir.join("de/man1/ls.1.gz"),
            dir.join("man1/crashcart-no-such-page.1.gz"),
        ];
        // Only existing files count; the directory itself is not a page.
        assert!(man_pages_of(&files).is_empty());
    }

    #[test]
    fn every_set_member_names_a_package() {
        for member in HostSet::Debug.members() {
            assert!(!member.packages.is_empty(), "{}", member.tool);
        }
    }
}
