//! Planning a bundle (which host files go where) and writing it into the staging tree.
//!
//! Planning reads only; nothing is written until every program, interpreter and library has
//! been found, so bad input fails before the staging tree is touched.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crashcart_layout::IMAGE_ROOT;

use super::elf_deps::{Closure, ElfObject, LibraryResolver, Machine};
use super::files::{copy_file, write_file};
use super::locate::{classify, find_program, Executable};
use super::relocate::{rewrite_all, Rewrite};
use super::{runtime_data, HostError};
use crate::confine::GconvRedirect;

/// How many scripts may name scripts as their interpreter; the kernel's binfmt recursion
/// limit (`BINPRM_MAX_RECURSION`) is 4.
const MAX_INTERPRETER_DEPTH: usize = 4;

/// One program to place under `bin/`.
pub struct PlannedProgram {
    /// Its name under `bin/`.
    pub name: String,
    /// The path the user's argument resolved to.
    pub found_path: PathBuf,
    /// The file itself (canonical).
    pub host_path: PathBuf,
    kind: ProgramKind,
}

enum ProgramKind {
    Elf(ElfObject),
    /// A script: its new `#!` line, then the original from `body_offset` on.
    Script {
        shebang: String,
        body_offset: usize,
    },
}

/// Programs that run helper programs by an absolute path compiled in, and those helpers'
/// paths on the host. Each helper found is bundled under `bin/`, and the compiled-in path is
/// rewritten to the image's (equal length or shorter, [`crate::confine`]), so the program
/// never runs what the container has at that path.
const HELPERS: &[(&str, &[&str])] = &[(
    "man",
    &[
        "/usr/libexec/man-db/zsoelim",
        "/usr/libexec/man-db/manconv",
        "/usr/lib/man-db/zsoelim",
        "/usr/lib/man-db/manconv",
    ],
)];

/// Configuration files a program cannot start without, compiled in by absolute path: the
/// program reads the image's copy instead (`(program, container path, file in the image,
/// contents)`).
const CONFIG_FILES: &[(&str, &str, &str, &str)] = &[(
    "man",
    "/etc/manpath.config",
    ".man",
    "# man-db's configuration in a crashcart image: pages from the image only.\n\
     MANDATORY_MANPATH /dev/crashcart/share/man\n",
)];

/// A compiled-in container path the image's programs read as a path of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// The path compiled in.
    pub from: String,
    /// The image's path, no longer than `from`.
    pub to: String,
}

/// Everything a bundle will contain, found on the host but not yet copied.
pub struct Plan {
    /// Programs in the order given (script interpreters before their scripts).
    pub programs: Vec<PlannedProgram>,
    closure: Closure,
    /// Names in `lib/` that are loaders (`PT_INTERP` targets), which are never rewritten.
    loaders: BTreeSet<String>,
    /// Compiled-in paths pointed into the image.
    pub redirects: Vec<Redirect>,
    /// Files to create in the image (`path under the root`, contents) for [`CONFIG_FILES`].
    config_files: Vec<(String, String)>,
}

/// A program found in a package's file list (`--host-package`, `--host-set`).
pub struct PackagedProgram {
    /// Its path in a program directory.
    pub path: PathBuf,
    /// The package that installed it (or the program it links to).
    pub package: String,
}

/// Finds every program, interpreter and library for `programs`, then for the `packaged`
/// programs. A named program that cannot be bundled is an error; a package's program that
/// cannot (a script whose interpreter the host lacks, a name an earlier program took) is left
/// out, and returned as `name (why)`.
pub fn plan(
    programs: &[OsString],
    packaged: &[PackagedProgram],
) -> Result<(Plan, Vec<String>), HostError> {
    let mut planner = Planner {
        resolver: LibraryResolver::for_host(Machine::host()),
        plan: Plan {
            programs: Vec::new(),
            closure: Closure::default(),
            loaders: BTreeSet::new(),
            redirects: Vec::new(),
            config_files: Vec::new(),
        },
    };
    for program in programs {
        let found = find_program(program)?;
        planner.add_program(&found, 0)?;
    }
    let mut left_out = Vec::new();
    for program in packaged {
        let name = program
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let taken = planner.plan.programs.iter().find(|p| p.name == name);
        if let Some(taken) = taken {
            let same = std::fs::canonicalize(&program.path).is_ok_and(|p| p == taken.host_path);
            if !same {
                left_out.push(format!(
                    "{name} of {} (bin/{name} is {})",
                    program.package,
                    taken.found_path.display()
                ));
            }
            continue;
        }
        // Nothing of a program that fails is kept but libraries its closure reached.
        let before = planner.plan.programs.len();
        match planner.add_program(&program.path, 0) {
            Ok(_) => {}
            Err(
                e @ (HostError::NotExecutable(_)
                | HostError::InterpreterNotFound { .. }
                | HostError::InterpreterTooDeep(_)
                | HostError::WrongArchitecture { .. }
                | HostError::MissingLibrary { .. }
                | HostError::NameClash { .. }),
            ) => {
                planner.plan.programs.truncate(before);
                left_out.push(format!("{name} of {} ({e})", program.package));
            }
            Err(e) => return Err(e),
        }
    }
    planner.add_helpers()?;
    if let Some(libc) = planner.plan.closure.libraries.get("libc.so.6") {
        for (name, path) in runtime_data::libc_dlopened(&libc.path.clone()) {
            planner
                .plan
                .closure
                .add_dlopened(&planner.resolver, &name, &path)?;
        }
    }
    Ok((planner.plan, left_out))
}

struct Planner {
    resolver: LibraryResolver,
    plan: Plan,
}

impl Planner {
    /// Adds the [`HELPERS`] and [`CONFIG_FILES`] of the programs planned so far.
    fn add_helpers(&mut self) -> Result<(), HostError> {
        let names: Vec<String> = self.plan.programs.iter().map(|p| p.name.clone()).collect();
        for (program, helpers) in HELPERS {
            if !names.iter().any(|n| n == program) {
                continue;
            }
            for helper in helpers.iter().map(Path::new).filter(|h| h.is_file()) {
                let name = self.add_program(helper, 0)?;
                let to = format!("{IMAGE_ROOT}/bin/{name}");
                let from = helper.to_string_lossy().into_owned();
                if to.len() <= from.len() {
                    self.plan.redirects.push(Redirect { from, to });
                }
            }
        }
        for (program, path, file, contents) in CONFIG_FILES {
            let to = format!("{IMAGE_ROOT}/{file}");
            if names.iter().any(|n| n == program) && to.len() <= path.len() {
                self.plan.redirects.push(Redirect {
                    from: path.to_string(),
                    to,
                });
                self.plan
                    .config_files
                    .push((file.to_string(), contents.to_string()));
            }
        }
        Ok(())
    }

    /// Adds the program at `found`, returning its name under `bin/`.
    fn add_program(&mut self, found: &Path, depth: usize) -> Result<String, HostError> {
        let name = found
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| HostError::ProgramPathNotFound(found.to_path_buf()))?;
        let host_path = std::fs::canonicalize(found).map_err(|source| HostError::Read {
            path: found.to_path_buf(),
            source,
        })?;
        if let Some(existing) = self.plan.programs.iter().find(|p| p.name == name) {
            return if existing.host_path == host_path {
                Ok(name)
            } else {
                Err(HostError::NameClash {
                    name,
                    first: existing.found_path.clone(),
                    second: found.to_path_buf(),
                })
            };
        }
        let kind = match classify(&host_path)? {
            Executable::Elf => ProgramKind::Elf(self.add_elf_program(&host_path, found)?),
            Executable::Script(shebang) => {
                if depth >= MAX_INTERPRETER_DEPTH {
                    return Err(HostError::InterpreterTooDeep(found.to_path_buf()));
                }
                let (interpreter, argument) =
                    resolve_interpreter(found, &shebang.interpreter, shebang.argument)?;
                let interpreter_name = self.add_program(&interpreter, depth + 1)?;
                let argument = argument.map(|a| format!(" {a}")).unwrap_or_default();
                ProgramKind::Script {
                    shebang: format!("#!{IMAGE_ROOT}/bin/{interpreter_name}{argument}\n"),
                    body_offset: shebang.body_offset,
                }
            }
        };
        self.plan.programs.push(PlannedProgram {
            name: name.clone(),
            found_path: found.to_path_buf(),
            host_path,
            kind,
        });
        Ok(name)
    }

    /// Reads an ELF program and adds its loader and library closure.
    fn add_elf_program(&mut self, host_path: &Path, found: &Path) -> Result<ElfObject, HostError> {
        let object = ElfObject::read(host_path, self.resolver.machine())?;
        if let Some(interp) = &object.interpreter {
            let loader_name = Path::new(interp)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| interp.clone());
            if !self.plan.closure.libraries.contains_key(&loader_name) {
                let missing = || HostError::MissingLibrary {
                    library: interp.clone(),
                    needed_by: host_path.to_path_buf(),
                    program: found.to_path_buf(),
                };
                if !Path::new(interp).is_file() {
                    return Err(missing());
                }
                let loader = ElfObject::read(Path::new(interp), self.resolver.machine())?;
                self.plan
                    .closure
                    .libraries
                    .insert(loader_name.clone(), loader);
            }
            self.plan.loaders.insert(loader_name);
        }
        self.plan.closure.add(&self.resolver, &object, found)?;
        Ok(object)
    }
}

/// The program a `#!` line runs and the argument to keep. `#!/usr/bin/env NAME` is resolved
/// to NAME on `PATH` now, since the container's `PATH` would find the container's NAME.
fn resolve_interpreter(
    script: &Path,
    interpreter: &str,
    argument: Option<String>,
) -> Result<(PathBuf, Option<String>), HostError> {
    let not_found = |what: &str| HostError::InterpreterNotFound {
        script: script.to_path_buf(),
        interpreter: what.to_string(),
    };
    let via_env = Path::new(interpreter).file_name() == Some("env".as_ref());
    match argument {
        Some(name) if via_env && !name.starts_with('-') && !name.contains([' ', '\t']) => {
            let found = find_program(name.as_ref()).map_err(|_| not_found(&name))?;
            Ok((found, None))
        }
        argument => {
            let path = PathBuf::from(interpreter);
            if path.is_absolute() && path.is_file() {
                Ok((path, argument))
            } else {
                Err(not_found(interpreter))
            }
        }
    }
}

/// What [`write`] produced besides the staging tree.
pub struct Staged {
    /// The session environment.
    pub env: Vec<(String, String)>,
    /// The bundled libc's gconv directory, to be pointed into the image.
    pub gconv: Option<GconvRedirect>,
    /// Lines for the user.
    pub notes: Vec<String>,
}

/// Copies `plan` into `staging` and rewrites it, then adds the data its programs read and
/// the manual pages `man_pages`.
pub fn write(plan: &Plan, staging: &Path, man_pages: &[PathBuf]) -> Result<Staged, HostError> {
    let bin = staging.join("bin");
    let lib = staging.join("lib");
    let lib_in_image = format!("{IMAGE_ROOT}/lib");
    let mut programs_by_loader: BTreeMap<Option<String>, Vec<PathBuf>> = BTreeMap::new();
    let mut uses_iconv = false;
    // A file reached under several names (`pkill` and `pgrep`, `vim` and `vi`) is copied once;
    // its other names are symlinks to the first, so each still starts under the name typed.
    let mut first_name: BTreeMap<&Path, &str> = BTreeMap::new();
    for program in &plan.programs {
        let dest = bin.join(&program.name);
        if let Some(first) = first_name.get(program.host_path.as_path()) {
            super::files::symlink(first, &dest)?;
            continue;
        }
        first_name.insert(&program.host_path, &program.name);
        match &program.kind {
            ProgramKind::Elf(object) => {
                copy_file(&program.host_path, &dest, 0o755)?;
                uses_iconv |= object.uses_iconv;
                if object.is_dynamic() {
                    let loader = object.interpreter.as_ref().map(|interp| {
                        let name = Path::new(interp).file_name().unwrap_or_default();
                        format!("{lib_in_image}/{}", name.to_string_lossy())
                    });
                    programs_by_loader.entry(loader).or_default().push(dest);
                }
            }
            ProgramKind::Script {
                shebang,
                body_offset,
            } => {
                let original =
                    std::fs::read(&program.host_path).map_err(|source| HostError::Read {
                        path: program.host_path.clone(),
                        source,
                    })?;
                let mut content = shebang.as_bytes().to_vec();
                content.extend_from_slice(original.get(*body_offset..).unwrap_or_default());
                write_file(&dest, &content, 0o755)?;
            }
        }
    }
    let mut libraries = Vec::new();
    for (name, object) in &plan.closure.libraries {
        let dest = lib.join(name);
        copy_file(&object.path, &dest, 0o755)?;
        uses_iconv |= object.uses_iconv;
        if !plan.loaders.contains(name) && object.is_dynamic() {
            libraries.push(dest);
        }
    }
    let mut batches: Vec<Rewrite> = programs_by_loader
        .into_iter()
        .map(|(interpreter, files)| Rewrite {
            interpreter,
            rpath: lib_in_image.clone(),
            files,
        })
        .collect();
    batches.push(Rewrite {
        interpreter: None,
        rpath: lib_in_image.clone(),
        files: libraries,
    });
    rewrite_all(&batches)?;
    let mut notes = Vec::new();
    for program in &plan.programs {
        if first_name.get(program.host_path.as_path()) == Some(&program.name.as_str()) {
            if let Some(note) =
                super::privdrop::patch(&program.host_path, &bin.join(&program.name))?
            {
                notes.push(note);
            }
        }
    }

    for (file, contents) in &plan.config_files {
        write_file(&staging.join(file), contents.as_bytes(), 0o644)?;
    }

    let mut env = runtime_data::copy_terminfo(staging)?;
    let mut gconv = None;
    if let Some(libc) = plan.closure.libraries.get("libc.so.6") {
        // Always, not only with iconv users: libc converts a locale's charset through gconv.
        gconv = runtime_data::gconv_redirect(&libc.path)?;
        if uses_iconv {
            let redirected = gconv
                .as_ref()
                .is_some_and(|g| g.to == runtime_data::image_gconv_dir());
            env.extend(runtime_data::copy_gconv(&libc.path, staging, redirected)?);
        }
    }
    let program_files = plan
        .programs
        .iter()
        .filter_map(|p| p.host_path.file_name().and_then(|n| n.to_str()));
    runtime_data::copy_python_stdlib(
        plan.closure
            .libraries
            .keys()
            .map(String::as_str)
            .chain(program_files),
        staging,
    )?;
    env.extend(runtime_data::copy_magic(
        plan.closure.libraries.keys().map(String::as_str),
        staging,
    )?);
    if let Some(gdb) = plan.programs.iter().find(|p| p.name == "gdb") {
        runtime_data::copy_gdb_data(&gdb.host_path, staging)?;
    }
    if let Some(vim) = plan
        .programs
        .iter()
        .find(|p| runtime_data::is_vim(&p.host_path))
    {
        env.extend(runtime_data::copy_vim_runtime(&vim.host_path, staging)?);
    }
    env.extend(runtime_data::copy_man_pages(man_pages, staging)?);
    if let Some(groff) = plan.programs.iter().find(|p| p.name == "groff") {
        env.extend(runtime_data::copy_groff_data(&groff.host_path, staging)?);
        // groff runs troff and its output drivers from here before PATH.
        env.push(("GROFF_BIN_PATH".to_string(), format!("{IMAGE_ROOT}/bin")));
    }
    if runtime_data::needs_ca_bundle(
        plan.programs.iter().map(|p| p.name.as_str()),
        plan.closure.libraries.keys().map(String::as_str),
    ) {
        env.extend(runtime_data::copy_ca_bundle(staging)?);
    }
    env.sort();
    Ok(Staged { env, gconv, notes })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn script(dir: &Path, name: &str, content: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn env_script_brings_its_interpreter_and_points_at_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = script(dir.path(), "hello", "#!/usr/bin/env sh\necho hi\n");
        let (plan, _) = plan(&[path.clone().into()], &[]).unwrap();
        let names: Vec<&str> = plan.programs.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["sh", "hello"]);
        let ProgramKind::Script { shebang, .. } = &plan.programs[1].kind else {
            panic!("hello is a script");
        };
        assert_eq!(shebang, "#!/dev/crashcart/bin/sh\n");
        assert!(plan.closure.libraries.contains_key("libc.so.6"));

        let staging = tempfile::tempdir().unwrap();
        write(&plan, staging.path(), &[]).unwrap();
        assert_eq!(
            std::fs::read_to_string(staging.path().join("bin/hello")).unwrap(),
            "#!/dev/crashcart/bin/sh\necho hi\n"
        );
    }

    #[test]
    fn same_name_from_two_places_is_a_clash() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        std::fs::create_dir(dir.path().join("b")).unwrap();
        let a = script(&dir.path().join("a"), "tool", "#!/bin/sh\necho a\n");
        let b = script(&dir.path().join("b"), "tool", "#!/bin/sh\necho b\n");
        let err = plan(&[a.clone().into(), b.into()], &[])
            .err()
            .expect("clash");
        assert!(
            matches!(err, HostError::NameClash { ref name, .. } if name == "tool"),
            "{err}"
        );
        // The same file twice is one program.
        assert_eq!(
            plan(&[a.clone().into(), a.into()], &[])
                .unwrap()
                .0
                .programs
                .len(),
            2
        );
    }
}
