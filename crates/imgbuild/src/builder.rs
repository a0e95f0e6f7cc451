//! One build, start to finish: resolve the inputs (directories, host bundle, nix closure, tar),
//! size the image, write every input, add the rc file and the manifest, publish the image.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crashcart_layout::{
    exportable_env_name, Manifest, Package, Program, Relocation, BIN_DIR, FORMAT, MANIFEST_PATH,
    META_DIR, PROFILE_LINK, RC_PATH, SBIN_DIR, STORE_DIR,
};

use crate::attributes::Attributes;
use crate::cli::Cli;
use crate::confine::Confinement;
use crate::content::Content;
use crate::ext2::{FsKind, Geometry, BLOCK_SIZE, JOURNAL_BLOCKS};
use crate::image::{ImageWriter, WriteError, WriteOptions};
use crate::input::{self, InputError};
use crate::manifest;
use crate::output::{self, OutputError, PendingImage};
use crate::progress::Progress;
use crate::sizing::Estimate;
use crate::{host, nix};

/// Inode density of an image of a given `--size` (mke2fs's default ratio).
const BYTES_PER_INODE: u64 = 16 * 1024;

/// Blocks beyond the journal that even an empty image needs (metadata, root, lost+found).
const MIN_FREE_BLOCKS: u64 = 256;

/// The profile's directory linked at the image's root beside `bin`, so that man-db, which
/// derives its search path from `PATH` (`/dev/crashcart/bin` -> `/dev/crashcart/share/man`),
/// finds the pages.
const SHARE_DIR: &str = "share";

/// The store directory closures are taken from when no relocation names another.
const DEFAULT_STORE_DIR: &str = "/nix/store";

/// Why a build failed. [`BuildError::exit_code`] tells the classes apart.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The flags do not describe a build.
    #[error("{0}")]
    Usage(String),
    /// An input is missing, unreadable or inconsistent.
    #[error(transparent)]
    Input(InputError),
    /// A store path listed in the closure is not in the store.
    #[error("store path {} is not in the store (looked at {})", path.display(), at.display())]
    MissingStorePath {
        /// The store path.
        path: PathBuf,
        /// Where its bytes were expected.
        at: PathBuf,
    },
    /// The filesystem in the image ran out of blocks or inodes.
    #[error("{full}: the image is too small for its inputs{hint}")]
    ImageFull {
        /// What ran out (the start of the message, so not a source).
        full: WriteError,
        /// Advice about --size.
        hint: &'static str,
    },
    /// `--size` below what any image needs.
    #[error("--size of {size} bytes is too small: an image needs at least {min} bytes")]
    SizeTooSmall {
        /// The size asked for.
        size: u64,
        /// The least that works.
        min: u64,
    },
    /// The disk holding the output is full.
    #[error(transparent)]
    DiskFull(WriteError),
    /// The output cannot be written.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// `--host` failed.
    #[error("--host")]
    Host(#[from] host::HostError),
    /// `--packages` failed.
    #[error("--packages")]
    Nix(#[from] nix::NixError),
    /// Writing failed for another reason.
    #[error(transparent)]
    Write(WriteError),
}

impl From<WriteError> for BuildError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Tree(_)
            | WriteError::Content(_)
            | WriteError::LinkTarget { .. }
            | WriteError::LongSymlink { .. }
            | WriteError::BadSymlink { .. }
            | WriteError::BadXattr { .. }
            | WriteError::Unrepresentable { .. }
            | WriteError::TooManySubdirs { .. } => BuildError::Input(InputError::Write(e)),
            // Attributes libext2fs found no room for, whatever the image's size: the checks
            // before writing ([`crate::limits`]) refuse these first, this is the backstop.
            WriteError::Ext2(ref x) if x.is_xattr_overflow() || x.is_link_overflow() => {
                BuildError::Input(InputError::Write(e))
            }
            e if e.is_disk_full() => BuildError::DiskFull(e),
            e if e.is_image_full() => BuildError::ImageFull { full: e, hint: "" },
            e => BuildError::Write(e),
        }
    }
}

impl From<InputError> for BuildError {
    fn from(e: InputError) -> Self {
        match e {
            // Whether a failed write is the input's fault (a name clash, an unreadable file) or
            // the image's (out of room) is the write error's to say.
            InputError::Write(w) => w.into(),
            e => BuildError::Input(e),
        }
    }
}

impl BuildError {
    /// The end of nix's log when a `--packages` build failed, to show after the message.
    pub fn log_tail(&self) -> Option<&str> {
        match self {
            BuildError::Nix(e) => e.log_tail(),
            _ => None,
        }
    }

    /// The process exit status for this error (documented in `--help`).
    pub fn exit_code(&self) -> i32 {
        match self {
            BuildError::Usage(_) => 2,
            BuildError::Input(_) | BuildError::MissingStorePath { .. } => 3,
            BuildError::ImageFull { .. } | BuildError::SizeTooSmall { .. } => 4,
            BuildError::DiskFull(_) => 4,
            BuildError::Output(_) => 5,
            BuildError::Nix(e) if e.is_bad_input() => 3,
            BuildError::Host(
                host::HostError::ProgramNotFound(_)
                | host::HostError::ProgramPathNotFound(_)
                | host::HostError::NotExecutable(_)
                | host::HostError::InterpreterNotFound { .. }
                | host::HostError::WrongArchitecture { .. }
                | host::HostError::PackageNotInstalled(_)
                | host::HostError::ProgramIsAPackage(_),
            ) => 3,
            BuildError::Host(_) | BuildError::Nix(_) => 6,
            BuildError::Write(_) => 1,
        }
    }
}

/// What was built, for the summary line.
#[derive(Debug, Clone)]
pub struct Summary {
    /// `-o`.
    pub output: PathBuf,
    /// Non-directory entries.
    pub files: u64,
    /// Content bytes.
    pub bytes: u64,
    /// Image size in bytes.
    pub image_bytes: u64,
    /// Wall time.
    pub seconds: f64,
    /// Content digest.
    pub digest: String,
    /// `--packages`: what each line of the packages file costs.
    pub packages: Vec<Package>,
    /// Files whose contents the relocation rewrote.
    pub relocated_files: Option<u64>,
    /// Lines for the user about what was left out (`--host-set` members this host lacks).
    pub notes: Vec<String>,
}

/// A closure to write: from `--closure` or from `--packages`.
struct ClosureInput {
    store_paths: Vec<PathBuf>,
    profile: Option<ProfileInput>,
    real_root: PathBuf,
}

/// Where the image's `profile` comes from.
enum ProfileInput {
    /// `--profile`: a store path of the closure, linked to.
    StorePath(PathBuf),
    /// `--packages`: the merged tree, written as `profile/`.
    Tree(nix::Profile),
}

/// Where a tar input's bytes come from.
enum TarSource {
    Path(PathBuf),
    /// stdin, spooled to scratch space because the image size must be known first.
    Spooled(File),
    Stdin,
}

impl TarSource {
    fn open(&mut self) -> Result<Box<dyn Read>, InputError> {
        let reader: Box<dyn Read> = match self {
            TarSource::Path(p) => {
                Box::new(File::open(&*p).map_err(|source| InputError::Unreadable {
                    path: p.clone(),
                    source,
                })?)
            }
            TarSource::Spooled(f) => {
                f.rewind().map_err(|source| InputError::Unreadable {
                    path: "-".into(),
                    source,
                })?;
                Box::new(f.try_clone().map_err(|source| InputError::Unreadable {
                    path: "-".into(),
                    source,
                })?)
            }
            TarSource::Stdin => Box::new(std::io::stdin().lock()),
        };
        input::open_tar(reader).map_err(|source| InputError::Unreadable {
            path: self.name().into(),
            source,
        })
    }

    fn name(&self) -> String {
        match self {
            TarSource::Path(p) => p.display().to_string(),
            _ => "-".into(),
        }
    }
}

/// `SOURCE_DATE_EPOCH`, 0 when unset. A time the image's timestamps cannot hold is refused,
/// never clamped or wrapped: ext3 ends in 2038, ext4 in 2446 ([`FsKind::max_time`]).
fn source_date_epoch(kind: FsKind) -> Result<u64, BuildError> {
    let time: u64 = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => v.trim().parse().map_err(|_| {
            BuildError::Usage(format!(
                "SOURCE_DATE_EPOCH={v:?} is not a number of seconds"
            ))
        })?,
        _ => 0,
    };
    if time > kind.max_time() {
        let limit = match kind {
            FsKind::Ext3 => "ext3 timestamps hold (2038-01-19); --fs ext4 holds times up to 2446",
            FsKind::Ext4 => "ext4 timestamps hold (2446-05-10)",
        };
        return Err(BuildError::Usage(format!(
            "SOURCE_DATE_EPOCH={time} is past the last time {limit}"
        )));
    }
    Ok(time)
}

fn read_closure_list(path: &Path) -> Result<Vec<PathBuf>, BuildError> {
    let mut text = String::new();
    let unreadable = |source| InputError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    if path == Path::new("-") {
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(unreadable)?;
    } else {
        File::open(path)
            .and_then(|mut f| f.read_to_string(&mut text))
            .map_err(unreadable)?;
    }
    let mut paths: Vec<PathBuf> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(PathBuf::from)
        .collect();
    for p in &paths {
        if !p.is_absolute() || p.file_name().is_none() {
            return Err(BuildError::Usage(format!(
                "--closure {}: {:?} is not an absolute store path",
                path.display(),
                p
            )));
        }
    }
    paths.sort();
    paths.dedup();
    Ok(paths)
}

/// Where the bytes of store path `p` are read from.
fn real_path(real_root: &Path, p: &Path) -> PathBuf {
    real_root.join(p.strip_prefix("/").unwrap_or(p))
}

fn image_store_path(p: &Path) -> PathBuf {
    // check_closure made sure every store path has a last component.
    Path::new(STORE_DIR).join(p.file_name().unwrap_or_default())
}

/// Everything a build reads, resolved before anything is written.
struct Inputs {
    /// `--dir` trees and the `--host` staging tree, with their names for messages.
    dirs: Vec<(PathBuf, String)>,
    closure: Option<ClosureInput>,
    tar: Option<TarSource>,
    relocation: Option<Relocation>,
    /// The store directory of closure and tar inputs (`/nix/store`, or the relocation's FROM).
    store_dir: String,
    env: BTreeMap<String, String>,
    programs: Vec<Program>,
    /// What is cut out of the ELF files (the `--host` libc's gconv directory among it).
    confinement: Confinement,
    /// Lines for the user from `--host` (set members skipped, programs left out).
    notes: Vec<String>,
    /// The `--host` staging directory, removed when the build ends.
    _staging: Option<tempfile::TempDir>,
    /// Whatever `--packages` needs alive until the image is written.
    _keep: Vec<Box<dyn std::any::Any>>,
    /// `--packages`: each package's outputs and closure size, for the manifest.
    packages: Vec<Package>,
}

/// Refuses flag combinations that do not describe a build.
fn check_flags(cli: &Cli) -> Result<(), BuildError> {
    let usage = |m: &str| Err(BuildError::Usage(m.to_string()));
    if cli.closure.is_some() && cli.nix.packages.is_some() {
        return usage("--closure and --packages both give a closure; use one");
    }
    let stdin = Some(Path::new("-"));
    if cli.closure.as_deref() == stdin && cli.tar.as_deref() == stdin {
        return usage("--closure - and --tar - cannot both read stdin");
    }
    if cli.profile.is_some() && cli.closure.is_none() && cli.tar.is_none() {
        return usage("--profile needs --closure or --tar");
    }
    let no_input = cli.dirs.is_empty()
        && cli.closure.is_none()
        && cli.tar.is_none()
        && cli.nix.packages.is_none()
        && cli.host.is_empty();
    if no_input {
        return usage(
            "no input: give --dir, --closure, --tar, --packages, --host, --host-package or --host-set",
        );
    }
    Ok(())
}

/// Checks the inputs exist and runs the modules that make inputs (`--host`, `--packages`).
fn resolve_inputs(cli: &Cli) -> Result<Inputs, BuildError> {
    for dir in &cli.dirs {
        let meta = std::fs::metadata(dir).map_err(|source| InputError::Unreadable {
            path: dir.clone(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(InputError::NotADirectory(dir.clone()).into());
        }
    }
    let mut dirs: Vec<(PathBuf, String)> = cli
        .dirs
        .iter()
        .map(|d| (d.clone(), format!("--dir {}", d.display())))
        .collect();

    let mut env = BTreeMap::new();
    let mut programs = Vec::new();
    let mut gconv = None;
    let mut notes = Vec::new();
    let mut redirects = Vec::new();
    let staging = if cli.host.is_empty() {
        None
    } else {
        let staging = tempfile::tempdir().map_err(|source| OutputError::Create {
            dir: std::env::temp_dir(),
            source,
        })?;
        let bundle = host::bundle(&cli.host, staging.path())?;
        dirs.push((staging.path().to_path_buf(), "--host".into()));
        env.extend(bundle.env);
        notes = bundle.notes;
        redirects = bundle.redirects;
        gconv = bundle.gconv;
        programs = bundle
            .programs
            .into_iter()
            .map(|p| Program {
                name: p.name,
                host_path: p.host_path.display().to_string(),
                package: p.package,
                version: p.version,
            })
            .collect();
        Some(staging)
    };
    let mut relocation = cli.relocate.clone();
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    let mut packages = Vec::new();
    let closure = if cli.nix.packages.is_some() {
        let built = nix::build(&cli.nix)?;
        packages = built.packages;
        for (name, value) in built.env {
            // A `--host` bundle's own setting of the same variable is kept.
            env.entry(name).or_insert(value);
        }
        if let Some(r) = &built.relocate {
            relocation = Some(
                Relocation::new(&r.from, &r.to).map_err(|e| BuildError::Usage(e.to_string()))?,
            );
        }
        keep = built.keep;
        let mut store_paths = built.store_paths;
        store_paths.sort();
        store_paths.dedup();
        Some(ClosureInput {
            store_paths,
            profile: Some(ProfileInput::Tree(built.profile)),
            real_root: built.real_root,
        })
    } else if let Some(list) = &cli.closure {
        Some(ClosureInput {
            store_paths: read_closure_list(list)?,
            profile: cli.profile.clone().map(ProfileInput::StorePath),
            real_root: cli.store_root.clone().unwrap_or_else(|| "/".into()),
        })
    } else {
        None
    };
    if let Some(bad) = env.keys().find(|k| !exportable_env_name(k)) {
        return Err(BuildError::Usage(format!(
            "environment variable name {bad:?} cannot be exported"
        )));
    }

    if let Some(c) = &closure {
        check_closure(c)?;
    }
    let store_dir = relocation
        .as_ref()
        .map_or(DEFAULT_STORE_DIR.to_string(), |r| r.from.clone());
    let tar = match &cli.tar {
        None => None,
        Some(p) if p == Path::new("-") && cli.size.is_some() => Some(TarSource::Stdin),
        Some(p) if p == Path::new("-") => {
            // The size must be known before writing: keep the stream (not its contents
            // unpacked) until it has been measured.
            let mut spool = output::scratch_file(&cli.output)?;
            std::io::copy(&mut std::io::stdin().lock(), &mut spool).map_err(|source| {
                InputError::Unreadable {
                    path: "-".into(),
                    source,
                }
            })?;
            Some(TarSource::Spooled(spool))
        }
        Some(p) => {
            File::open(p).map_err(|source| InputError::Unreadable {
                path: p.clone(),
                source,
            })?;
            Some(TarSource::Path(p.clone()))
        }
    };
    Ok(Inputs {
        dirs,
        closure,
        tar,
        relocation,
        store_dir,
        env,
        programs,
        confinement: Confinement::new(gconv.as_ref(), &redirects),
        notes,
        _staging: staging,
        _keep: keep,
        packages,
    })
}

/// Every store path is where its bytes should be, and the profile is one of them.
fn check_closure(c: &ClosureInput) -> Result<(), BuildError> {
    for p in &c.store_paths {
        if !p.is_absolute() || p.file_name().is_none() {
            return Err(BuildError::Usage(format!(
                "{} is not an absolute store path",
                p.display()
            )));
        }
        let at = real_path(&c.real_root, p);
        if std::fs::symlink_metadata(&at).is_err() {
            return Err(BuildError::MissingStorePath {
                path: p.clone(),
                at,
            });
        }
    }
    if let Some(ProfileInput::StorePath(profile)) = &c.profile {
        if !c.store_paths.contains(profile) {
            return Err(BuildError::Usage(format!(
                "--profile {} is not one of the closure's store paths",
                profile.display()
            )));
        }
    }
    Ok(())
}

/// Measures the inputs (metadata only) and picks the geometry: `--size`, or computed.
fn size_image(cli: &Cli, inputs: &mut Inputs) -> Result<(Geometry, Estimate), BuildError> {
    let mut estimate = Estimate::default();
    let mut linked = std::collections::HashSet::new();
    for (dir, _) in &inputs.dirs {
        estimate.add_tree(dir, &mut linked, true)?;
    }
    if let Some(c) = &inputs.closure {
        for p in &c.store_paths {
            estimate.add_tree(&real_path(&c.real_root, p), &mut linked, false)?;
        }
        estimate.store_paths += c.store_paths.len() as u64;
    }
    if let Some(t) = inputs.tar.as_mut() {
        if !matches!(t, TarSource::Stdin) {
            let name = t.name();
            estimate.add_tar(t.open()?, &name, inputs.store_dir.as_bytes())?;
        }
    }
    // The manifest and the rc file.
    estimate.generated(4096 + estimate.store_paths * 160 + inputs.programs.len() as u64 * 256);
    estimate.generated(4096);
    let computed = estimate
        .geometry(cli.fs.into(), cli.headroom)
        .map_err(WriteError::from)?;
    let Some(size) = cli.size else {
        return Ok((computed, estimate));
    };
    let min = (u64::from(JOURNAL_BLOCKS) + MIN_FREE_BLOCKS) * u64::from(BLOCK_SIZE);
    if size < min {
        return Err(BuildError::SizeTooSmall { size, min });
    }
    // Inputs not measured (a tar on stdin) may hold any number of files: give a fixed size
    // at least mke2fs's inode density, one per 16 KiB.
    let by_density = u32::try_from(size / BYTES_PER_INODE).unwrap_or(u32::MAX);
    let geometry = Geometry {
        blocks: size / u64::from(BLOCK_SIZE),
        inodes: computed.inodes.max(by_density),
        ..computed
    };
    Ok((geometry, estimate))
}

/// Writes every input: trees first, then the closure and the tar stream (each store input
/// carries the relocation), then the profile links.
fn write_inputs(
    writer: &mut ImageWriter,
    cli: &Cli,
    inputs: &mut Inputs,
) -> Result<(), BuildError> {
    for (dir, name) in &inputs.dirs {
        let origin = writer.add_origin(name.clone());
        input::add_tree(writer, dir, Path::new(""), origin, input::TreeKind::Dir)?;
    }
    let relocation = &inputs.relocation;
    if let Some(c) = &inputs.closure {
        for p in &c.store_paths {
            let name = format!("store path {}", p.display());
            let origin = writer.add_input(name, relocation.clone());
            let source = real_path(&c.real_root, p);
            let at = image_store_path(p);
            input::add_tree(writer, &source, &at, origin, input::TreeKind::StorePath)?;
        }
    }
    if let Some(t) = inputs.tar.as_mut() {
        let name = format!("--tar {}", t.name());
        let origin = writer.add_input(name.clone(), relocation.clone());
        let stream = t.open()?;
        input::add_tar(writer, stream, inputs.store_dir.as_bytes(), origin, &name)?;
    }
    match inputs.closure.as_ref().and_then(|c| c.profile.as_ref()) {
        Some(ProfileInput::Tree(tree)) => write_profile(writer, tree, relocation)?,
        Some(ProfileInput::StorePath(profile)) => link_profile(writer, profile)?,
        None => {
            if let Some(profile) = &cli.profile {
                link_profile(writer, profile)?;
            }
        }
    }
    Ok(())
}

/// Adds `.crashcartrc` (unless an input brought one) and the manifest; returns the digest.
fn write_generated(
    writer: &mut ImageWriter,
    cli: &Cli,
    inputs: &Inputs,
) -> Result<(String, crate::image::Totals), BuildError> {
    let origin = writer.add_origin("the builder".into());
    if writer.exists(Path::new(MANIFEST_PATH))? {
        return Err(InputError::Reserved(MANIFEST_PATH.into()).into());
    }
    if !writer.exists(Path::new(RC_PATH))? {
        let rc = manifest::rc_file(&inputs.env);
        let size = rc.len() as u64;
        writer.file(
            Path::new(RC_PATH),
            plain(0o644),
            size,
            Content::Bytes(&rc),
            None,
            origin,
        )?;
    }
    // Store paths: the closure's, or those a tar stream brought (its members under the store
    // directory), named as nix names them — the same list for the same paths either way.
    let mut store_paths: Vec<String> = inputs
        .closure
        .iter()
        .flat_map(|c| c.store_paths.iter().map(|p| p.display().to_string()))
        .collect();
    if inputs.tar.is_some() {
        for name in writer.names_in(Path::new(STORE_DIR))? {
            let name = String::from_utf8_lossy(&name);
            store_paths.push(format!("{}/{name}", inputs.store_dir));
        }
    }
    store_paths.sort();
    store_paths.dedup();
    // Everything but the manifest is counted and digested.
    let totals = writer.totals();
    let digest = writer.digest()?;
    let relocation = inputs.relocation.as_ref();
    let record = Manifest {
        format: FORMAT,
        builder: format!("crashcart-imgbuild {}", env!("CARGO_PKG_VERSION")),
        fs: FsKind::from(cli.fs).into(),
        store_alias: relocation.map(|r| r.to.clone()),
        relocation: relocation.cloned(),
        env: inputs.env.clone(),
        ignores: inputs.confinement.ignores().to_vec(),
        store_paths,
        programs: inputs.programs.clone(),
        packages: inputs.packages.clone(),
        relocated_files: relocation.map(|_| writer.relocated_files()),
        files: totals.files,
        bytes: totals.bytes,
        digest: digest.clone(),
        digest_scheme: crate::digest::DIGEST_SCHEME.into(),
    };
    let json = record.to_json();
    writer.dir(Path::new(META_DIR), plain(0o755), origin)?;
    let size = json.len() as u64;
    writer.file(
        Path::new(MANIFEST_PATH),
        plain(0o644),
        size,
        Content::Bytes(&json),
        None,
        origin,
    )?;
    Ok((digest, totals))
}

/// Runs one build.
pub fn build(cli: &Cli) -> Result<Summary, BuildError> {
    let started = Instant::now();
    let time = source_date_epoch(cli.fs.into())?;
    check_flags(cli)?;
    let mut inputs = resolve_inputs(cli)?;
    let (geometry, estimate) = size_image(cli, &mut inputs)?;
    let image_bytes = geometry.blocks * u64::from(BLOCK_SIZE);
    let hint = if cli.size.is_some() {
        "; give a larger --size, or none to compute it"
    } else {
        ""
    };
    let with_hint = |e: BuildError| match e {
        BuildError::ImageFull { full, .. } => BuildError::ImageFull { full, hint },
        e => e,
    };

    let pending = PendingImage::create(&cli.output, image_bytes)?;
    let show = !cli.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let opts = WriteOptions {
        kind: cli.fs.into(),
        time,
        keep_owner: cli.keep_owner,
        confinement: inputs.confinement.clone(),
    };
    let progress = Progress::new(show, estimate.bytes);
    // The directory tree's names, kept out of memory next to the output (an unnamed file).
    let scratch = output::scratch_file(&cli.output)?;
    let mut writer = ImageWriter::create(
        pending.file()?,
        scratch,
        pending.path(),
        geometry,
        opts,
        progress,
    )
    .map_err(|e| with_hint(e.into()))?;
    write_inputs(&mut writer, cli, &mut inputs).map_err(with_hint)?;
    warn_unrewritable(writer.unrewritable(), &inputs);
    let (digest, totals) = write_generated(&mut writer, cli, &inputs).map_err(with_hint)?;
    let relocated_files = inputs.relocation.as_ref().map(|_| writer.relocated_files());
    writer.finish(cli.uuid).map_err(|e| with_hint(e.into()))?;
    pending.publish()?;
    Ok(Summary {
        output: cli.output.clone(),
        files: totals.files,
        bytes: totals.bytes,
        image_bytes,
        seconds: started.elapsed().as_secs_f64(),
        digest,
        packages: inputs.packages,
        relocated_files,
        notes: inputs.notes,
    })
}

fn plain(perm: u32) -> Attributes {
    Attributes {
        perm,
        ..Attributes::default()
    }
}

/// `profile -> store/<profile>`, `bin -> profile/bin`, `sbin -> profile/sbin` (the latter two
/// only when the profile has them).
fn link_profile(writer: &mut ImageWriter, profile: &Path) -> Result<(), BuildError> {
    let origin = writer.add_origin(format!("--profile {}", profile.display()));
    let in_store = image_store_path(profile);
    if !writer.exists(&in_store)? {
        return Err(BuildError::Usage(format!(
            "--profile {} is not in the image",
            profile.display()
        )));
    }
    writer.symlink(
        Path::new(PROFILE_LINK),
        plain(0o777),
        in_store.as_os_str().as_bytes(),
        origin,
    )?;
    for sub in [BIN_DIR, SBIN_DIR] {
        if writer.exists(&in_store.join(sub))? {
            let target = format!("{PROFILE_LINK}/{sub}");
            writer.symlink(Path::new(sub), plain(0o777), target.as_bytes(), origin)?;
        }
    }
    Ok(())
}

/// `--packages`: writes the profile tree as `profile/` (directories as nix profiles have
/// them, read-only; symlinks to store paths, relocated like the closure), then `bin`, `sbin`
/// and `share` beside it pointing into it, each only when the profile has it and nothing else
/// took the name.
fn write_profile(
    writer: &mut ImageWriter,
    profile: &nix::Profile,
    relocation: &Option<Relocation>,
) -> Result<(), BuildError> {
    let origin = writer.add_input("the profile".into(), relocation.clone());
    let root = Path::new(PROFILE_LINK);
    writer.dir(root, plain(0o555), origin)?;
    for (rel, entry) in &profile.entries {
        let at = root.join(rel);
        match entry {
            nix::ProfileEntry::Dir => writer.dir(&at, plain(0o555), origin)?,
            nix::ProfileEntry::Link { target, .. } => {
                writer.symlink(&at, plain(0o777), target.as_os_str().as_bytes(), origin)?
            }
        }
    }
    for sub in [BIN_DIR, SBIN_DIR, SHARE_DIR] {
        if profile.has(sub) && !writer.exists(Path::new(sub))? {
            let target = format!("{PROFILE_LINK}/{sub}");
            writer.symlink(Path::new(sub), plain(0o777), target.as_bytes(), origin)?;
        }
    }
    Ok(())
}

/// How many paths a warning names before summing up the rest.
const WARN_PATHS: usize = 5;

/// Warns about compressed files that name the store once unpacked: `--relocate` rewrote the
/// store directory in their bytes, not in what a program unpacks.
fn warn_unrewritable(paths: &[PathBuf], inputs: &Inputs) {
    let Some(relocation) = &inputs.relocation else {
        return;
    };
    if paths.is_empty() {
        return;
    }
    let mut named: Vec<String> = paths
        .iter()
        .take(WARN_PATHS)
        .map(|p| p.display().to_string())
        .collect();
    if paths.len() > WARN_PATHS {
        named.push(format!("and {} more", paths.len() - WARN_PATHS));
    }
    eprintln!(
        "crashcart-imgbuild: warning: {} compressed file{} (gzip, xz, zip) name {} once \
         unpacked, which the relocation to {} cannot rewrite: {}",
        paths.len(),
        if paths.len() == 1 { "" } else { "s" },
        relocation.from,
        relocation.to,
        named.join(", ")
    );
}
