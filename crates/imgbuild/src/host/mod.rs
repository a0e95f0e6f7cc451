//! `--host PROG`: bundle the host's own binaries, with their loader and libraries, into a
//! tree that runs from `/dev/crashcart` in any container.
//!
//! Programs come from `--host PROG`, and from `--host-package NAME` and `--host-set debug`
//! through the host's package database ([`packages`]).
//!
//! Seam with the image writer: the CLI flattens [`HostArgs`]; when programs are given, the
//! builder creates an empty staging directory, calls [`bundle`], then adds that directory to
//! the image exactly like a `--dir` source, and records [`HostBundle::programs`] and
//! [`HostBundle::env`] in the manifest.
//!
//! The staging tree:
//!
//! | path | what |
//! | --- | --- |
//! | `bin/<prog>` | each program, its interpreter set to the image's loader |
//! | `lib/<soname>` | every library of the closure, flat, and the loader itself |
//! | `lib/gconv/` | glibc's iconv modules (no host cache), when a bundled object calls `iconv_open` |
//! | `lib/pythonX.Y/` | the pure-Python standard library, for libpython (gdb) or `pythonX.Y` |
//! | `bin/<name>` → `<first>` | another name of a program already copied (`vi` → `vim`) |
//! | `share/terminfo/` | the host's whole terminfo database |
//! | `share/vim/vimNN/` | vim's runtime, when vim is bundled |
//! | `share/man/manN/` | the bundled packages' manual pages |
//! | `share/groff/` | groff's macros and fonts, when groff is bundled (`man`) |
//! | `.man` | man-db's configuration, when man is bundled |
//! | `share/gdb/` | gdb's data directory, when gdb is bundled |
//! | `share/misc/magic.mgc` | libmagic's database, when libmagic is bundled (`file`) |
//! | `etc/ssl/certs/ca-certificates.crt` | the host's CA bundle, when TLS libraries are bundled |
//!
//! Every program and library gets `DT_RPATH=/dev/crashcart/lib` and `DF_1_NODEFLIB`, so the
//! image's loader finds all dependencies in the image before `LD_LIBRARY_PATH`, and a name
//! missing from the image (an NSS module the container's `nsswitch.conf` asks for) is never
//! taken from the container's default directories. The container's `/etc/ld.so.preload`,
//! `ld.so.cache`, `nsswitch.conf`, bash and readline startup files and glibc's gconv
//! directory are cut out of the binaries while the image is written ([`crate::confine`]; the
//! libc's gconv directory is found here, [`HostBundle::gconv`]). What this cannot stop: an
//! `LD_PRELOAD` in the session's environment; filtering that is the session's job.

mod elf_deps;
mod files;
mod ld_cache;
mod locate;
mod packages;
mod pkginfo;
mod privdrop;
mod relocate;
mod runtime_data;
mod stage;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub use packages::HostSet;

/// Command-line flags owned by this module (flattened into the builder's CLI).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct HostArgs {
    /// Bundle a host program (a name looked up on PATH, or a path) with its loader and
    /// libraries. Repeatable.
    #[arg(long = "host", value_name = "PROG")]
    pub programs: Vec<OsString>,

    /// Bundle every program a package of the host installed in a bin or sbin directory (as
    /// dpkg or rpm lists them), with its manual pages. Repeatable.
    #[arg(long = "host-package", id = "host_packages", value_name = "NAME")]
    pub packages: Vec<String>,

    /// Bundle a ready set of host packages as --host-package does, those of them this host
    /// has (the others are named on stderr, in one line). Repeatable.
    #[arg(long = "host-set", id = "host_sets", value_name = "SET", value_enum)]
    pub sets: Vec<HostSet>,
}

impl HostArgs {
    /// Whether no host program was asked for.
    pub fn is_empty(&self) -> bool {
        self.programs.is_empty() && self.packages.is_empty() && self.sets.is_empty()
    }
}

/// One program placed in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundledProgram {
    /// Name under `bin/` in the image.
    pub name: String,
    /// Where it came from on the host.
    pub host_path: PathBuf,
    /// Owning package, when the host's package manager knows it.
    pub package: Option<String>,
    /// That package's version.
    pub version: Option<String>,
}

/// What [`bundle`] produced besides the files in the staging tree.
#[derive(Debug, Clone, Default)]
pub struct HostBundle {
    /// The bundled programs, for the manifest.
    pub programs: Vec<BundledProgram>,
    /// Environment the tools need in the session (e.g. `TERMINFO_DIRS`); crashcart sets it
    /// and `.crashcartrc` exports it.
    pub env: Vec<(String, String)>,
    /// The bundled libc's compiled-in gconv directory and its stand-in in the image, for the
    /// writer's [`crate::confine::Confinement`].
    pub gconv: Option<crate::confine::GconvRedirect>,
    /// Compiled-in container paths (helper programs, configuration files) the bundled
    /// programs read as paths of the image, for the writer's [`crate::confine::Confinement`].
    pub redirects: Vec<(String, String)>,
    /// What the user should know about the bundle, one line each: the members of a
    /// `--host-set` this host lacks, package programs that were left out and why.
    pub notes: Vec<String>,
}

/// Errors from bundling host programs.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A name that is on neither `PATH` nor the sbin directories.
    #[error("program {} not found on PATH", .0.display())]
    ProgramNotFound(PathBuf),
    /// A path (an argument with a `/`) that is not a file.
    #[error("program {} not found", .0.display())]
    ProgramPathNotFound(PathBuf),
    /// The file is neither ELF nor a `#!` script.
    #[error("{0}: not an ELF executable and has no #! interpreter line")]
    NotExecutable(PathBuf),
    /// A script's interpreter does not exist on the host.
    #[error("{script}: interpreter {interpreter} not found")]
    InterpreterNotFound {
        /// The script.
        script: PathBuf,
        /// What its `#!` line names.
        interpreter: String,
    },
    /// Scripts naming scripts as interpreters, deeper than the kernel follows.
    #[error("{0}: #! interpreters nest deeper than the kernel follows")]
    InterpreterTooDeep(PathBuf),
    /// The file is ELF, but for a machine or word size this host cannot run.
    #[error("{path}: built for {found}, but this host runs {expected}")]
    WrongArchitecture {
        /// The program or library.
        path: PathBuf,
        /// Its ELF machine and class.
        found: String,
        /// The host's.
        expected: String,
    },
    /// The ELF headers cannot be parsed.
    #[error("{path}: malformed ELF file")]
    MalformedElf {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        #[source]
        source: goblin::error::Error,
    },
    /// A `DT_NEEDED` library is nowhere the host's loader would look.
    #[error(
        "library {library} needed by {}{} not found",
        needed_by.display(),
        for_program(needed_by, program)
    )]
    MissingLibrary {
        /// The `DT_NEEDED` name.
        library: String,
        /// The object that needs it.
        needed_by: PathBuf,
        /// The program whose closure it is part of.
        program: PathBuf,
    },
    /// Two different host files would land at the same `bin/` name.
    #[error("--host {first} and {second} would both be bin/{name} in the image")]
    NameClash {
        /// The name under `bin/`.
        name: String,
        /// The first program of that name.
        first: PathBuf,
        /// The second.
        second: PathBuf,
    },
    /// Reading a host file failed.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Writing into the staging tree failed.
    #[error("cannot write {path}")]
    Write {
        /// The file in the staging tree.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `patchelf` could not be started.
    #[error("cannot run patchelf (install the patchelf package)")]
    PatchelfMissing(#[source] std::io::Error),
    /// A `--host` name that is not a program but an installed package.
    #[error(
        "program {0} not found on PATH; {0} is a package: --host-package {0} bundles its programs"
    )]
    ProgramIsAPackage(String),
    /// A `--host-package` the host's package database does not have installed.
    #[error("package {0} is not installed on this host (asked dpkg-query, then rpm)")]
    PackageNotInstalled(String),
    /// The package database's client could not be run.
    #[error("cannot run {command}")]
    PackageDatabase {
        /// The command line.
        command: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `patchelf` refused a file.
    #[error("patchelf failed on {files}: {stderr}")]
    Patchelf {
        /// The files of that invocation.
        files: String,
        /// What patchelf printed.
        stderr: String,
    },
}

/// ` (for PROGRAM)` when the library is needed by one of the program's libraries.
fn for_program(needed_by: &Path, program: &Path) -> String {
    let same = std::fs::canonicalize(program).is_ok_and(|p| p == needed_by);
    if same || needed_by == program {
        String::new()
    } else {
        format!(" (for {})", program.display())
    }
}

/// Fills the empty directory `staging` with the programs `args` asks for and everything they
/// need.
pub fn bundle(args: &HostArgs, staging: &Path) -> Result<HostBundle, HostError> {
    let mut notes = Vec::new();
    let mut wanted: Vec<packages::Package> = Vec::new();
    for name in &args.packages {
        wanted.push(packages::require(name)?);
    }
    for set in &args.sets {
        let (found, missing) = packages::resolve_set(*set)?;
        if !missing.is_empty() {
            notes.push(format!(
                "--host-set {}: not installed on this host, skipped: {}",
                set.name(),
                missing.join(", ")
            ));
        }
        wanted.extend(found);
    }
    let mut seen = std::collections::BTreeSet::new();
    wanted.retain(|p| seen.insert(p.name.clone()));
    let packaged: Vec<stage::PackagedProgram> = wanted
        .iter()
        .flat_map(|p| {
            p.programs.iter().map(|path| stage::PackagedProgram {
                path: path.clone(),
                package: p.name.clone(),
            })
        })
        .collect();

    let (plan, left_out) = match stage::plan(&args.programs, &packaged) {
        // `--host coreutils`: say what the user meant.
        Err(HostError::ProgramNotFound(name)) => {
            let name = name.to_string_lossy().into_owned();
            return Err(match packages::lookup(&name)? {
                Some(_) => HostError::ProgramIsAPackage(name),
                None => HostError::ProgramNotFound(name.into()),
            });
        }
        result => result?,
    };
    if !left_out.is_empty() {
        notes.push(format!("--host-package: left out {}", left_out.join(", ")));
    }
    let packages = pkginfo::lookup(
        &plan
            .programs
            .iter()
            .map(|p| (p.found_path.as_path(), p.host_path.as_path()))
            .collect::<Vec<_>>(),
    );
    // Manual pages: all of each bundled package's, and for single programs those of their
    // package that carry the program's name.
    let mut man_pages: Vec<PathBuf> = wanted.iter().flat_map(|p| p.man_pages.clone()).collect();
    let mut single: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (program, package) in plan.programs.iter().zip(&packages) {
        if let Some((name, _)) = package {
            if !seen.contains(name) {
                single
                    .entry(name.clone())
                    .or_default()
                    .push(program.name.clone());
            }
        }
    }
    for (package, programs) in single {
        if let Some(p) = packages::lookup(&package)? {
            man_pages.extend(p.man_pages.into_iter().filter(|page| {
                runtime_data::man_page_topic(page).is_some_and(|t| programs.iter().any(|n| n == t))
            }));
        }
    }
    let staged = stage::write(&plan, staging, &man_pages)?;
    notes.extend(staged.notes);
    let programs = plan
        .programs
        .iter()
        .zip(packages)
        .map(|(p, pkg)| {
            let (package, version) = pkg.map_or((None, None), |(n, v)| (Some(n), Some(v)));
            BundledProgram {
                name: p.name.clone(),
                host_path: p.host_path.clone(),
                package,
                version,
            }
        })
        .collect();
    Ok(HostBundle {
        programs,
        env: staged.env,
        gconv: staged.gconv,
        redirects: plan
            .redirects
            .iter()
            .map(|r| (r.from.clone(), r.to.clone()))
            .collect(),
        notes,
    })
}
