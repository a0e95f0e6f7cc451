//! The `DT_NEEDED` closure of a program, found the way glibc's dynamic loader finds it.
//!
//! For each object's needed name the loader tries, in order (`elf/dl-load.c`): a name with a
//! `/` as a path; the `DT_RPATH` of the object and of every object up the chain that loaded
//! it, unless the object has a `DT_RUNPATH`; `LD_LIBRARY_PATH` (ignored here: the bundle
//! must not depend on the builder's environment); the object's own `DT_RUNPATH`; the
//! `ld.so.cache`; the default directories. A candidate of the wrong ELF class or machine is
//! skipped and the search goes on. A name already loaded is not searched again, so the first
//! object found for a name serves everyone who needs it.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use goblin::elf::header::{self, Header};
use goblin::elf::Elf;

use super::ld_cache::LdCache;
use super::HostError;

/// ELF machine and word size of the host, which every bundled object must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    /// `e_machine`.
    pub machine: u16,
    /// ELFCLASS64 rather than ELFCLASS32.
    pub is_64: bool,
}

impl Machine {
    /// The machine this builder was compiled for, which is the host's.
    pub fn host() -> Machine {
        let machine = match std::env::consts::ARCH {
            "x86_64" => header::EM_X86_64,
            "x86" => header::EM_386,
            "aarch64" => header::EM_AARCH64,
            "arm" => header::EM_ARM,
            "riscv64" => header::EM_RISCV,
            "powerpc64" => header::EM_PPC64,
            "s390x" => header::EM_S390,
            "loongarch64" => header::EM_LOONGARCH,
            _ => header::EM_NONE,
        };
        Machine {
            machine,
            is_64: cfg!(target_pointer_width = "64"),
        }
    }

    fn of(header: &Header) -> Machine {
        Machine {
            machine: header.e_machine,
            is_64: header.e_ident[header::EI_CLASS] == header::ELFCLASS64,
        }
    }

    fn describe(self) -> String {
        let bits = if self.is_64 { 64 } else { 32 };
        format!("{} ({bits}-bit)", header::machine_to_str(self.machine))
    }
}

/// What the loader needs to know about one ELF object.
#[derive(Debug, Clone)]
pub struct ElfObject {
    /// The file, canonical (so `$ORIGIN` expands like the loader expands it).
    pub path: PathBuf,
    /// `PT_INTERP`, for programs.
    pub interpreter: Option<String>,
    /// `DT_NEEDED` names in order.
    pub needed: Vec<String>,
    rpath: Vec<String>,
    runpath: Vec<String>,
    /// Imports `iconv_open`, and so may need glibc's gconv modules at run time.
    pub uses_iconv: bool,
}

impl ElfObject {
    /// Reads and checks `path`: ELF, parseable, and for `machine`.
    pub fn read(path: &Path, machine: Machine) -> Result<ElfObject, HostError> {
        let bytes = std::fs::read(path).map_err(|source| HostError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let malformed = |source| HostError::MalformedElf {
            path: path.to_path_buf(),
            source,
        };
        // The header alone first: a foreign file may be too unlike ours to parse further.
        let found = Machine::of(&Elf::parse_header(&bytes).map_err(malformed)?);
        if found != machine {
            return Err(HostError::WrongArchitecture {
                path: path.to_path_buf(),
                found: found.describe(),
                expected: machine.describe(),
            });
        }
        let elf = Elf::parse(&bytes).map_err(malformed)?;
        let uses_iconv = elf
            .dynsyms
            .iter()
            .any(|sym| sym.is_import() && elf.dynstrtab.get_at(sym.st_name) == Some("iconv_open"));
        let split = |entries: &[&str]| -> Vec<String> {
            entries
                .iter()
                .flat_map(|e| e.split(':'))
                .filter(|dir| !dir.is_empty())
                .map(str::to_string)
                .collect()
        };
        Ok(ElfObject {
            path: std::fs::canonicalize(path).map_err(|source| HostError::Read {
                path: path.to_path_buf(),
                source,
            })?,
            interpreter: elf.interpreter.map(str::to_string),
            needed: elf.libraries.iter().map(|s| s.to_string()).collect(),
            rpath: split(&elf.rpaths),
            runpath: split(&elf.runpaths),
            uses_iconv,
        })
    }

    /// Whether this object loads anything at all (static programs and data-only libraries
    /// do not, and need no rewriting).
    pub fn is_dynamic(&self) -> bool {
        self.interpreter.is_some() || !self.needed.is_empty()
    }

    /// Expands `$ORIGIN` in a search directory; `None` for tokens we cannot expand
    /// (`$LIB`, `$PLATFORM`), which are skipped like an unreadable directory.
    fn expand(&self, dir: &str) -> Option<PathBuf> {
        let origin = self.path.parent()?.to_str()?;
        let expanded = dir.replace("${ORIGIN}", origin).replace("$ORIGIN", origin);
        (!expanded.contains('$')).then(|| PathBuf::from(expanded))
    }
}

/// Finds libraries where the host's loader would.
pub struct LibraryResolver {
    machine: Machine,
    cache: LdCache,
    default_dirs: Vec<PathBuf>,
}

impl LibraryResolver {
    /// A resolver for this host: its `/etc/ld.so.cache` and glibc's default directories.
    pub fn for_host(machine: Machine) -> LibraryResolver {
        let multiarch = format!("{}-linux-gnu", std::env::consts::ARCH);
        let lib64 = if machine.is_64 { "lib64" } else { "lib" };
        let default_dirs = [
            format!("/lib/{multiarch}"),
            format!("/usr/lib/{multiarch}"),
            format!("/{lib64}"),
            format!("/usr/{lib64}"),
            "/lib".to_string(),
            "/usr/lib".to_string(),
        ]
        .into_iter()
        .map(PathBuf::from)
        .collect();
        LibraryResolver {
            machine,
            cache: LdCache::load(Path::new("/etc/ld.so.cache")),
            default_dirs,
        }
    }

    /// The machine every object must match.
    pub fn machine(&self) -> Machine {
        self.machine
    }

    /// The first usable object for `name` among `candidates`: it exists and is for our
    /// machine (the loader skips foreign candidates rather than failing).
    fn probe(&self, candidates: impl IntoIterator<Item = PathBuf>) -> Option<ElfObject> {
        candidates
            .into_iter()
            .filter(|c| c.is_file())
            .find_map(|c| ElfObject::read(&c, self.machine).ok())
    }
}

/// Libraries found so far, by the name they were needed as (their name in the image).
#[derive(Debug, Default)]
pub struct Closure {
    /// Needed name → the object found for it.
    pub libraries: BTreeMap<String, ElfObject>,
}

impl Closure {
    /// Adds everything `root` needs, transitively. `program` names the bundled program the
    /// search is for, in errors.
    pub fn add(
        &mut self,
        resolver: &LibraryResolver,
        root: &ElfObject,
        program: &Path,
    ) -> Result<(), HostError> {
        // Each queued object carries the DT_RPATH directories of the chain that loaded it.
        let mut queue: VecDeque<(ElfObject, Vec<PathBuf>)> = VecDeque::new();
        queue.push_back((root.clone(), Vec::new()));
        while let Some((object, inherited)) = queue.pop_front() {
            let mut chain = Vec::new();
            if object.runpath.is_empty() {
                chain.extend(object.rpath.iter().filter_map(|d| object.expand(d)));
                chain.extend(inherited);
            }
            let runpath: Vec<PathBuf> = object
                .runpath
                .iter()
                .filter_map(|d| object.expand(d))
                .collect();
            for name in &object.needed {
                if self.libraries.contains_key(name) {
                    continue;
                }
                let found = if name.contains('/') {
                    resolver.probe([object.expand(name).unwrap_or_else(|| name.into())])
                } else {
                    let dirs = chain.iter().chain(&runpath);
                    resolver.probe(
                        dirs.map(|d| d.join(name))
                            .chain(resolver.cache.lookup(name).iter().cloned())
                            .chain(resolver.default_dirs.iter().map(|d| d.join(name))),
                    )
                };
                let Some(library) = found else {
                    return Err(HostError::MissingLibrary {
                        library: name.clone(),
                        needed_by: object.path.clone(),
                        program: program.to_path_buf(),
                    });
                };
                self.libraries.insert(name.clone(), library.clone());
                queue.push_back((library, chain.clone()));
            }
        }
        Ok(())
    }

    /// Adds one library that is not `DT_NEEDED` but dlopened by name at run time (NSS
    /// modules), plus its own closure.
    pub fn add_dlopened(
        &mut self,
        resolver: &LibraryResolver,
        name: &str,
        path: &Path,
    ) -> Result<(), HostError> {
        if self.libraries.contains_key(name) {
            return Ok(());
        }
        let object = ElfObject::read(path, resolver.machine)?;
        self.add(resolver, &object, path)?;
        self.libraries.insert(name.to_string(), object);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh() -> ElfObject {
        let path = std::fs::canonicalize("/bin/sh").unwrap();
        ElfObject::read(&path, Machine::host()).unwrap()
    }

    #[test]
    fn closure_of_sh_has_libc_from_the_host() {
        let resolver = LibraryResolver::for_host(Machine::host());
        let root = sh();
        let mut closure = Closure::default();
        closure.add(&resolver, &root, &root.path).unwrap();
        let libc = closure.libraries.get("libc.so.6").expect("sh needs libc");
        assert!(libc.path.is_absolute() && libc.path.exists());
        assert!(root.interpreter.is_some());
    }

    #[test]
    fn origin_rpath_is_searched_first() {
        // A program whose DT_RPATH is $ORIGIN/../private finds libc there before the host's.
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("private");
        std::fs::create_dir(&private).unwrap();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        let host_libc = LibraryResolver::for_host(Machine::host())
            .cache
            .lookup("libc.so.6")
            .first()
            .cloned()
            .expect("host libc in ld.so.cache");
        std::fs::copy(&host_libc, private.join("libc.so.6")).unwrap();
        let mut root = sh();
        root.path = dir.path().join("bin/sh");
        root.rpath = vec!["$ORIGIN/../private".into()];
        root.needed = vec!["libc.so.6".into()];
        let resolver = LibraryResolver::for_host(Machine::host());
        let mut closure = Closure::default();
        closure.add(&resolver, &root, &root.path).unwrap();
        assert_eq!(
            closure.libraries["libc.so.6"].path,
            std::fs::canonicalize(private.join("libc.so.6")).unwrap()
        );
    }

    #[test]
    fn missing_library_names_it_and_its_user() {
        let mut root = sh();
        root.needed = vec!["libcrashcart-nonexistent.so.9".into()];
        let resolver = LibraryResolver::for_host(Machine::host());
        let err = Closure::default()
            .add(&resolver, &root, Path::new("/bin/sh"))
            .unwrap_err();
        let HostError::MissingLibrary {
            library, needed_by, ..
        } = err
        else {
            panic!("wrong error {err}");
        };
        assert_eq!(library, "libcrashcart-nonexistent.so.9");
        assert_eq!(needed_by, root.path);
    }
}
