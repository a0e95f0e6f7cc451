//! `--packages FILE`: build the tool set with nix (rootless) and hand its closure to the
//! image writer.
//!
//! Seam with the image writer: the CLI flattens [`NixArgs`]; when `--packages` is given the
//! builder calls [`build`] and writes the returned [`NixClosure`] as it writes a `--closure`
//! input: every store path under `store/` of the image, bytes read from `real_root` joined
//! with the logical path, and when [`NixClosure::relocate`] is set every occurrence of `from`
//! in file contents and symlink targets replaced with the equal-length `to`, which is also
//! recorded in the manifest as `store_alias` (crashcart makes that path resolve to
//! `/dev/crashcart/store`). The profile is not a store path: the image's `profile/` is the
//! [`Profile`] tree, its symlinks naming store paths (relocated like the closure's).
//!
//! The build itself: the packages file is parsed here (so typos get a line number), the
//! expressions of the repository's `nix/` give, from a pinned nixpkgs (or `--nixpkgs`), the
//! outputs each package installs, nix realises them (substitutes or builds) either on the
//! host against a chroot store under the user's cache directory (`local`) or inside a
//! container (`container`), and the profile is merged here (`profile`) without nix: a nix
//! build of it would need the build sandbox, which CI runners deny.

mod container;
mod expr;
mod info;
mod local;
mod packages;
mod profile;
mod run;
mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crashcart_layout::{Package, Relocation, DEFAULT_STORE_ALIAS, IMAGE_ROOT, PROFILE_LINK};

pub use packages::read_packages_file;
pub use profile::{Entry as ProfileEntry, Profile};
pub use store::NIX_STORE_DIR;

/// CA bundles a profile may hold (nixpkgs' `cacert`), the first found named in the session's
/// environment.
const CA_BUNDLES: &[&str] = &[
    "etc/ssl/certs/ca-bundle.crt",
    "etc/ssl/certs/ca-certificates.crt",
];

// `/nix/store` is rewritten to the store alias in relocated images: same length, so every
// offset stays valid.
const _: () = assert!(DEFAULT_STORE_ALIAS.len() == NIX_STORE_DIR.len());

/// How store paths are made to work from inside the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum StoreMode {
    /// Build with `/nix/store`, rewrite it to an equal-length alias while writing the image.
    #[default]
    Relocated,
    /// Build with store dir `/dev/crashcart/store`: no rewriting, seed-compatible layout.
    Native,
}

/// Command-line flags owned by this module (flattened into the builder's CLI).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NixArgs {
    /// Build the nixpkgs attributes listed in FILE (one per line, `#` comments) with nix.
    #[arg(long, value_name = "FILE")]
    pub packages: Option<PathBuf>,
    /// A nixpkgs-like expression to build from (`import PATH {}`); default: the pin in nix/.
    #[arg(long, value_name = "PATH", requires = "packages")]
    pub nixpkgs: Option<PathBuf>,
    /// How the store is made to work inside the image.
    #[arg(long, value_enum, default_value_t, requires = "packages")]
    pub store_mode: StoreMode,
    /// Where nix keeps its store between builds [default: ~/.cache/crashcart/nix].
    #[arg(long, value_name = "DIR", requires = "packages")]
    pub nix_store: Option<PathBuf>,
    /// Run nix inside this container image (podman, else docker) instead of the host's nix.
    #[arg(long, value_name = "IMAGE", requires = "packages")]
    pub nix_container: Option<String>,
    /// The engine running --nix-container [default: podman if installed, else docker].
    #[arg(long, value_name = "PROGRAM", requires = "nix_container")]
    pub container_engine: Option<PathBuf>,
}

/// A built closure, ready for the image writer.
pub struct NixClosure {
    /// Store paths as nix prints them (logical paths under the store dir), sorted.
    pub store_paths: Vec<PathBuf>,
    /// The packages' files linked into one tree: the image's `profile/`.
    pub profile: Profile,
    /// Each line of the packages file with the outputs it installs and its closure's size.
    pub packages: Vec<Package>,
    /// Variables the session needs for the profile's data files (CA bundle, man pages,
    /// terminfo), naming them where the container sees them.
    pub env: BTreeMap<String, String>,
    /// Where the bytes live: the logical path is read at `real_root` + path (`/` for a
    /// store at its logical location).
    pub real_root: PathBuf,
    /// Set in relocated mode.
    pub relocate: Option<Relocation>,
    /// Kept alive until the image is written (e.g. a temporary GC root or store).
    pub keep: Vec<Box<dyn std::any::Any>>,
}

impl std::fmt::Debug for NixClosure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NixClosure")
            .field("store_paths", &self.store_paths)
            .field("profile", &self.profile)
            .field("packages", &self.packages)
            .field("env", &self.env)
            .field("real_root", &self.real_root)
            .field("relocate", &self.relocate)
            .finish_non_exhaustive()
    }
}

/// What a nix run produced, before it is checked against the store on disk.
struct Realised {
    /// Per package, the outputs it installs.
    packages: Vec<info::PlannedPackage>,
    /// The closure of all outputs.
    store_paths: Vec<PathBuf>,
    /// The store's registration of each closure path.
    infos: BTreeMap<PathBuf, info::PathInfo>,
}

/// Errors from building the tool set with nix.
#[derive(Debug, thiserror::Error)]
pub enum NixError {
    /// The packages file cannot be read.
    #[error("cannot read packages file {path}")]
    PackagesUnreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The packages file lists nothing.
    #[error("packages file {path} names no packages (one nixpkgs attribute per line, `#` starts a comment)")]
    PackagesEmpty {
        /// The file.
        path: PathBuf,
    },
    /// A line of the packages file is not an attribute name.
    #[error("{path}:{line}: `{text}` is not a nixpkgs attribute name (one per line)")]
    BadPackageName {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The offending text.
        text: String,
    },
    /// Names that the nixpkgs set does not have.
    #[error("unknown package{}: {}", if names.len() == 1 { "" } else { "s" }, names.join(", "))]
    UnknownPackages {
        /// The attribute names not found.
        names: Vec<String>,
    },
    /// `--nixpkgs` does not exist.
    #[error("--nixpkgs {path}")]
    Nixpkgs {
        /// The path given.
        path: PathBuf,
        /// Why it cannot be used.
        source: std::io::Error,
    },
    /// nix is not on PATH.
    #[error(
        "nix is not installed (`{program}` not found on PATH): install it \
         (https://nixos.org/download, or `apt install nix-bin`), \
         or build inside a container with --nix-container IMAGE (e.g. nixos/nix)"
    )]
    NixNotInstalled {
        /// The nix command that was looked for.
        program: &'static str,
    },
    /// The container engine for --nix-container is not installed.
    #[error("--nix-container: container engine {engine} not found (install podman or docker, or pass --container-engine PROGRAM)")]
    NoContainerEngine {
        /// The engine looked for.
        engine: String,
    },
    /// A program could not be started for another reason than being absent.
    #[error("cannot run {program}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// nix ran and failed.
    #[error("nix build failed ({program}: {status}); the end of its log follows")]
    BuildFailed {
        /// The program that failed (nix-build, nix-store, or the container engine).
        program: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The last lines nix wrote to stderr.
        log_tail: String,
    },
    /// Packages missing from the binary cache had to be built, and nix's build sandbox
    /// cannot be set up here.
    #[error(
        "{} not in the binary cache, and nix cannot build here: its build sandbox needs user \
         namespaces that may mount, which this machine denies; build with \
         --nix-container IMAGE (podman or docker) instead; the end of nix's log follows",
        plural(derivations, "derivation")
    )]
    CannotBuildHere {
        /// The derivations nix had to build (`name-version`).
        derivations: Vec<String>,
        /// The last lines nix wrote to stderr.
        log_tail: String,
    },
    /// nix printed something we could not read.
    #[error("cannot read {what} nix printed: {detail}")]
    BadNixOutput {
        /// Which output.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// The packages cannot be linked into one profile.
    #[error("profile: {} {reason}", path.display())]
    Profile {
        /// The store file at fault.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The nix container did not leave its result files.
    #[error("cannot read the nix container's result {path}")]
    ContainerResult {
        /// The expected file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A path of the closure is not where the store keeps its files.
    #[error("store path {path} of the closure is missing at {real}")]
    MissingStorePath {
        /// The logical store path.
        path: PathBuf,
        /// Where its files should be.
        real: PathBuf,
    },
    /// Neither `XDG_CACHE_HOME` nor `HOME` is set.
    #[error(
        "no cache directory for the nix store: set HOME or XDG_CACHE_HOME, or pass --nix-store DIR"
    )]
    NoCacheDir,
    /// The store or a scratch directory cannot be created.
    #[error("cannot create directory {path}")]
    StoreDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The nix expressions cannot be written out.
    #[error("cannot write nix expression {path}")]
    Expressions {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `build` was called without `--packages`.
    #[error("no --packages file given")]
    NoPackagesFile,
}

/// `2 derivations: a-1, b-2` (the names listed).
fn plural(names: &[String], noun: &str) -> String {
    let s = if names.len() == 1 { "" } else { "s" };
    format!("{} {noun}{s} ({})", names.len(), names.join(", "))
}

impl NixError {
    /// The end of nix's log, for errors that have one: shown after the message, line by line
    /// as nix printed them.
    pub fn log_tail(&self) -> Option<&str> {
        match self {
            NixError::BuildFailed { log_tail, .. } | NixError::CannotBuildHere { log_tail, .. } => {
                Some(log_tail)
            }
            _ => None,
        }
    }

    /// Whether the user's input is at fault (the packages file, a package name, --nixpkgs)
    /// rather than the machine or the build: such errors deserve the "bad input" exit code.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            NixError::PackagesUnreadable { .. }
                | NixError::PackagesEmpty { .. }
                | NixError::BadPackageName { .. }
                | NixError::UnknownPackages { .. }
                | NixError::Nixpkgs { .. }
        )
    }
}

/// Builds the packages named in `args` and returns their closure.
pub fn build(args: &NixArgs) -> Result<NixClosure, NixError> {
    let packages_file = args.packages.as_deref().ok_or(NixError::NoPackagesFile)?;
    let names = read_packages_file(packages_file)?;
    let nixpkgs = args
        .nixpkgs
        .as_deref()
        .map(|path| {
            path.canonicalize().map_err(|source| NixError::Nixpkgs {
                path: path.to_path_buf(),
                source,
            })
        })
        .transpose()?;

    let cache_root = match &args.nix_store {
        Some(dir) => absolute(dir)?,
        None => store::default_cache_root()?,
    };
    let location = store::StoreLocation::new(&cache_root, args.store_mode);
    location.create()?;

    let work_dir = tempfile::Builder::new()
        .prefix("crashcart-nix-")
        .tempdir()
        .map_err(|source| NixError::StoreDir {
            path: std::env::temp_dir(),
            source,
        })?;
    let expressions = work_dir.path().join("nix");
    std::fs::create_dir(&expressions).map_err(|source| NixError::StoreDir {
        path: expressions.clone(),
        source,
    })?;
    expr::write_expressions(&expressions)?;

    let packages_json = packages::to_json(&names);
    let request = local::BuildRequest {
        expressions: &expressions,
        packages_json: &packages_json,
        nixpkgs: nixpkgs.as_deref(),
        work_dir: work_dir.path(),
    };
    let realised = match &args.nix_container {
        None => local::build(&location, &request)?,
        Some(image) => {
            let engine = match &args.container_engine {
                Some(engine) => engine.clone(),
                None => container::default_engine()?,
            };
            container::build(&engine, image, &location, args.store_mode, &request)?
        }
    };

    let mut store_paths = realised.store_paths;
    store_paths.sort();
    store_paths.dedup();
    for path in &store_paths {
        let real = location.real_path(path);
        if std::fs::symlink_metadata(&real).is_err() {
            return Err(NixError::MissingStorePath {
                path: path.clone(),
                real,
            });
        }
    }
    // Only the closure is read: a propagated package outside it (it cannot be, nix records
    // it as a reference) would not be linked.
    let in_closure: BTreeSet<&Path> = store_paths.iter().map(PathBuf::as_path).collect();
    let outputs: Vec<Vec<PathBuf>> = realised
        .packages
        .iter()
        .map(|p| {
            p.outputs
                .iter()
                .filter(|o| in_closure.contains(o.as_path()))
                .cloned()
                .collect()
        })
        .collect();
    let profile = profile::merge(&outputs, &location.root)?;
    let env = profile_env(&profile, &location.root);

    Ok(NixClosure {
        store_paths,
        profile,
        packages: info::costs(&realised.packages, &realised.infos),
        env,
        real_root: location.root,
        relocate: (args.store_mode == StoreMode::Relocated).then(|| Relocation {
            from: NIX_STORE_DIR.to_string(),
            to: DEFAULT_STORE_ALIAS.to_string(),
        }),
        keep: vec![Box::new(work_dir)],
    })
}

/// The variables that point the image's tools at the profile's data files, as the container
/// sees them (`/dev/crashcart/profile/...`). Each keeps the container's own files reachable
/// to the container's programs: nixpkgs' OpenSSL reads `NIX_SSL_CERT_FILE` (then
/// `SSL_CERT_FILE`); `MANPATH` and `TERMINFO_DIRS` end with an empty entry, which man-db and
/// ncurses read as "then the usual places".
fn profile_env(profile: &Profile, real_root: &Path) -> BTreeMap<String, String> {
    let in_image = |rel: &str| format!("{IMAGE_ROOT}/{PROFILE_LINK}/{rel}");
    let mut env = BTreeMap::new();
    if let Some(bundle) = CA_BUNDLES.iter().find(|b| profile.provides(b, real_root)) {
        for name in ["NIX_SSL_CERT_FILE", "SSL_CERT_FILE"] {
            env.insert(name.to_string(), in_image(bundle));
        }
    }
    if profile.provides("share/man", real_root) {
        env.insert("MANPATH".to_string(), format!("{}:", in_image("share/man")));
    }
    if profile.provides("share/terminfo", real_root) {
        env.insert(
            "TERMINFO_DIRS".to_string(),
            format!("{}:", in_image("share/terminfo")),
        );
    }
    env
}

fn absolute(dir: &std::path::Path) -> Result<PathBuf, NixError> {
    std::path::absolute(dir).map_err(|source| NixError::StoreDir {
        path: dir.to_path_buf(),
        source,
    })
}
