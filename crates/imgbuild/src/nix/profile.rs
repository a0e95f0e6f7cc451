//! The profile: every package's files linked into one tree, as `nix-env -i` (nix's
//! `builtin:buildenv`) links a user's packages, worked out here instead of by a nix build.
//! Building a profile derivation would need nix's build sandbox, which stock CI runners deny
//! (no user namespaces, or no mounts in them); reading the store needs nothing.
//!
//! The rules are those of a nix profile:
//! - a name that only one package ships is a symlink to that package's file or directory;
//! - a directory that several ship is a real directory, merged entry by entry;
//! - a file that several ship goes to the package with the lower priority number: each line of
//!   the packages file has its own, in file order, so the one listed first wins;
//! - packages named in a package's `nix-support/propagated-user-env-packages` come after all
//!   listed ones, each with a priority of its own from 1000 on;
//! - hidden names (`.*`), `nix-support`, `propagated-build-inputs`, `perllocal.pod`, `log`,
//!   `manifest.nix`, `manifest.json` and `info/dir` are left out, dangling links skipped.
//!
//! Store paths are logical (`/nix/store/...`); their files are read under the store's real
//! root, symlinks in them resolved there too.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Component, Path, PathBuf};

use super::NixError;

/// Names a profile never links (their own files, or sure to collide).
const LEFT_OUT: &[&str] = &[
    "nix-support",
    "propagated-build-inputs",
    "perllocal.pod",
    "log",
    "manifest.nix",
    "manifest.json",
];

/// Where a package lists the packages it wants in the same profile.
const PROPAGATED: &str = "nix-support/propagated-user-env-packages";

/// Priority of the first propagated package (listed packages have 1, 2, ...).
const FIRST_PROPAGATED_PRIORITY: u32 = 1000;

/// Symlinks followed in one path before giving up (the kernel's limit).
const MAX_SYMLINKS: u32 = 40;

/// An entry of the profile tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A directory merged from several packages.
    Dir,
    /// A symlink to a logical store path.
    Link {
        /// Where it points.
        target: PathBuf,
        /// The priority of the package it came from.
        priority: u32,
    },
}

/// The profile: relative paths (parents before children) to entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    /// Every entry but the root.
    pub entries: BTreeMap<PathBuf, Entry>,
}

impl Profile {
    /// Whether `rel` (e.g. `bin`) exists in the profile, as a directory or a link.
    pub fn has(&self, rel: &str) -> bool {
        self.entries.contains_key(Path::new(rel))
    }

    /// The logical path `rel` leads to, one level deep (`share` being a link or a directory
    /// holding `share/man`): whether the profile provides `rel` at all.
    pub fn provides(&self, rel: &str, real_root: &Path) -> bool {
        let rel = Path::new(rel);
        for ancestor in rel.ancestors().collect::<Vec<_>>().into_iter().rev() {
            if ancestor.as_os_str().is_empty() {
                continue;
            }
            match self.entries.get(ancestor) {
                Some(Entry::Dir) => continue,
                Some(Entry::Link { target, .. }) => {
                    let rest = rel.strip_prefix(ancestor).expect("an ancestor");
                    return resolve(real_root, &target.join(rest)).is_ok();
                }
                None => return false,
            }
        }
        true
    }
}

/// Builds the profile of `packages`: each one's output paths, in priority order.
pub fn merge(packages: &[Vec<PathBuf>], real_root: &Path) -> Result<Profile, NixError> {
    let mut state = State {
        real_root,
        profile: Profile::default(),
        done: BTreeSet::new(),
        postponed: BTreeSet::new(),
    };
    for (index, outputs) in packages.iter().enumerate() {
        let priority = index as u32 + 1;
        for output in outputs {
            state.add_package(output, priority)?;
        }
    }
    let mut priority = FIRST_PROPAGATED_PRIORITY;
    while !state.postponed.is_empty() {
        for path in std::mem::take(&mut state.postponed) {
            state.add_package(&path, priority)?;
            priority += 1;
        }
    }
    Ok(state.profile)
}

struct State<'a> {
    real_root: &'a Path,
    profile: Profile,
    done: BTreeSet<PathBuf>,
    postponed: BTreeSet<PathBuf>,
}

impl State<'_> {
    fn add_package(&mut self, path: &Path, priority: u32) -> Result<(), NixError> {
        if !self.done.insert(path.to_path_buf()) {
            return Ok(());
        }
        self.link_tree(path, Path::new(""), priority)?;
        let list = real(self.real_root, &path.join(PROPAGATED));
        if let Ok(text) = std::fs::read_to_string(list) {
            for other in text.split_whitespace().map(PathBuf::from) {
                if !self.done.contains(&other) {
                    self.postponed.insert(other);
                }
            }
        }
        Ok(())
    }

    /// Links the entries of the logical directory `source` into the profile at `dest`.
    fn link_tree(&mut self, source: &Path, dest: &Path, priority: u32) -> Result<(), NixError> {
        let Ok(dir) = resolve(self.real_root, source) else {
            return Ok(());
        };
        let read = |e| NixError::Profile {
            path: source.to_path_buf(),
            reason: format!("cannot be read: {e}"),
        };
        let Ok(meta) = std::fs::metadata(&dir) else {
            return Ok(());
        };
        if !meta.is_dir() {
            eprintln!(
                "crashcart-imgbuild: warning: {} is not a directory: not in the profile",
                source.display()
            );
            return Ok(());
        }
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .map_err(read)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(read)?;
        names.sort();
        for name in names {
            let text = name.to_string_lossy();
            if text.starts_with('.') || LEFT_OUT.contains(&&*text) {
                continue;
            }
            let from = source.join(&name);
            let to = dest.join(&name);
            if text == "dir" && source.file_name().is_some_and(|n| n == "info") {
                continue;
            }
            let Ok(real_from) = resolve(self.real_root, &from) else {
                // A dangling symlink.
                continue;
            };
            let is_dir = std::fs::metadata(&real_from).is_ok_and(|m| m.is_dir());
            match self.profile.entries.get(&to).cloned() {
                None => {
                    self.profile.entries.insert(
                        to,
                        Entry::Link {
                            target: from,
                            priority,
                        },
                    );
                }
                Some(Entry::Dir) if is_dir => self.link_tree(&from, &to, priority)?,
                Some(Entry::Dir) => return Err(collision(&from, &to, "a directory")),
                Some(Entry::Link {
                    target,
                    priority: theirs,
                }) if is_dir => {
                    let theirs_is_dir = resolve(self.real_root, &target)
                        .and_then(std::fs::metadata)
                        .is_ok_and(|m| m.is_dir());
                    if !theirs_is_dir {
                        return Err(collision(&from, &to, "a file"));
                    }
                    // Two directories: a real directory holding both.
                    self.profile.entries.insert(to.clone(), Entry::Dir);
                    self.link_tree(&target, &to, theirs)?;
                    self.link_tree(&from, &to, priority)?;
                }
                Some(Entry::Link {
                    target,
                    priority: theirs,
                }) => {
                    if theirs == priority {
                        return Err(NixError::Profile {
                            path: from,
                            reason: format!(
                                "and {} are both {} with the same priority",
                                target.display(),
                                to.display()
                            ),
                        });
                    }
                    if priority < theirs {
                        self.remove_below(&to);
                        self.profile.entries.insert(
                            to,
                            Entry::Link {
                                target: from,
                                priority,
                            },
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// Removes the entries under `dir` (a link being replaced has none; kept for safety).
    fn remove_below(&mut self, dir: &Path) {
        let below: Vec<PathBuf> = self
            .profile
            .entries
            .range(dir.to_path_buf()..)
            .map(|(p, _)| p.clone())
            .take_while(|p| p.starts_with(dir))
            .filter(|p| p != dir)
            .collect();
        for p in below {
            self.profile.entries.remove(&p);
        }
    }
}

fn collision(from: &Path, to: &Path, what: &str) -> NixError {
    NixError::Profile {
        path: from.to_path_buf(),
        reason: format!(
            "collides with {} in the profile, which is {what}",
            to.display()
        ),
    }
}

/// Where the files of logical `path` are under `real_root`.
fn real(real_root: &Path, path: &Path) -> PathBuf {
    real_root.join(path.strip_prefix("/").unwrap_or(path))
}

/// The real path of logical `path`, every symlink on the way followed inside `real_root`
/// (absolute targets are logical paths, as in the chroot nix builds in).
pub fn resolve(real_root: &Path, path: &Path) -> std::io::Result<PathBuf> {
    let mut todo: VecDeque<PathBuf> = components(path);
    let mut current = PathBuf::from("/");
    let mut followed = 0;
    while let Some(part) = todo.pop_front() {
        if part == Path::new("/") {
            current = PathBuf::from("/");
            continue;
        }
        if part == Path::new("..") {
            current.pop();
            continue;
        }
        let next = current.join(&part);
        let meta = std::fs::symlink_metadata(real(real_root, &next))?;
        if meta.file_type().is_symlink() {
            followed += 1;
            if followed > MAX_SYMLINKS {
                return Err(std::io::Error::from_raw_os_error(libc_eloop()));
            }
            let target = std::fs::read_link(real(real_root, &next))?;
            let mut spliced = components(&target);
            spliced.extend(todo);
            todo = spliced;
        } else {
            current = next;
        }
    }
    Ok(real(real_root, &current))
}

/// `ELOOP`.
fn libc_eloop() -> i32 {
    rustix::io::Errno::LOOP.raw_os_error()
}

/// The components of `path`: `/` for the root, `..`, names; `.` dropped.
fn components(path: &Path) -> VecDeque<PathBuf> {
    path.components()
        .filter_map(|c| match c {
            Component::RootDir => Some(PathBuf::from("/")),
            Component::ParentDir => Some(PathBuf::from("..")),
            Component::Normal(n) => Some(PathBuf::from(n)),
            Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A fake store under a temporary real root: `files` are `(logical path, content)`,
    /// a content starting with `->` a symlink.
    fn store(files: &[(&str, &str)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for (path, content) in files {
            let at = real(root.path(), Path::new(path));
            std::fs::create_dir_all(at.parent().unwrap()).unwrap();
            match content.strip_prefix("->") {
                Some(target) => symlink(target, &at).unwrap(),
                None => std::fs::write(&at, content).unwrap(),
            }
        }
        root
    }

    fn link(target: &str, priority: u32) -> Entry {
        Entry::Link {
            target: target.into(),
            priority,
        }
    }

    fn p(s: &str) -> Vec<PathBuf> {
        vec![PathBuf::from(s)]
    }

    #[test]
    fn one_package_is_links_to_its_top_level() {
        let root = store(&[
            ("/nix/store/a-x/bin/x", "x"),
            ("/nix/store/a-x/share/man/man1/x.1", "page"),
            ("/nix/store/a-x/nix-support/setup-hook", ""),
            ("/nix/store/a-x/.hidden", ""),
        ]);
        let profile = merge(&[p("/nix/store/a-x")], root.path()).unwrap();
        assert_eq!(
            profile.entries,
            BTreeMap::from([
                ("bin".into(), link("/nix/store/a-x/bin", 1)),
                ("share".into(), link("/nix/store/a-x/share", 1)),
            ])
        );
        assert!(profile.provides("share/man", root.path()));
        assert!(!profile.provides("share/info", root.path()));
    }

    #[test]
    fn shared_directories_merge_and_the_first_listed_wins() {
        let root = store(&[
            ("/nix/store/a-x/bin/x", "x"),
            ("/nix/store/a-x/bin/common", "from x"),
            ("/nix/store/b-y/bin/y", "y"),
            ("/nix/store/b-y/bin/common", "from y"),
            ("/nix/store/b-y/lib", "->/nix/store/c-lib/lib"),
            ("/nix/store/c-lib/lib/liby.so", ""),
            ("/nix/store/b-y/dangling", "->/nix/store/gone"),
        ]);
        let profile = merge(&[p("/nix/store/b-y"), p("/nix/store/a-x")], root.path()).unwrap();
        assert_eq!(
            profile.entries,
            BTreeMap::from([
                ("bin".into(), Entry::Dir),
                ("bin/common".into(), link("/nix/store/b-y/bin/common", 1)),
                ("bin/x".into(), link("/nix/store/a-x/bin/x", 2)),
                ("bin/y".into(), link("/nix/store/b-y/bin/y", 1)),
                ("lib".into(), link("/nix/store/b-y/lib", 1)),
            ])
        );
        // Listed the other way round, the other copy wins.
        let profile = merge(&[p("/nix/store/a-x"), p("/nix/store/b-y")], root.path()).unwrap();
        assert_eq!(
            profile.entries[Path::new("bin/common")],
            link("/nix/store/a-x/bin/common", 1)
        );
    }

    #[test]
    fn a_directory_reached_through_a_link_merges_too() {
        let root = store(&[
            ("/nix/store/a-x/share", "->/nix/store/d-data/share"),
            ("/nix/store/d-data/share/man/man1/x.1", "x"),
            ("/nix/store/b-y/share/man/man1/y.1", "y"),
        ]);
        let profile = merge(&[p("/nix/store/a-x"), p("/nix/store/b-y")], root.path()).unwrap();
        assert_eq!(profile.entries[Path::new("share")], Entry::Dir);
        assert_eq!(profile.entries[Path::new("share/man")], Entry::Dir);
        assert_eq!(
            profile.entries[Path::new("share/man/man1")],
            Entry::Dir,
            "{profile:?}"
        );
        assert_eq!(
            profile.entries[Path::new("share/man/man1/x.1")],
            link("/nix/store/a-x/share/man/man1/x.1", 1)
        );
    }

    #[test]
    fn propagated_packages_come_last() {
        let root = store(&[
            ("/nix/store/a-x/bin/tool", "x"),
            (
                "/nix/store/a-x/nix-support/propagated-user-env-packages",
                "/nix/store/p-dep\n",
            ),
            ("/nix/store/p-dep/bin/tool", "dep"),
            ("/nix/store/p-dep/bin/dep", "dep"),
            ("/nix/store/b-y/bin/dep", "y"),
        ]);
        let profile = merge(&[p("/nix/store/a-x"), p("/nix/store/b-y")], root.path()).unwrap();
        assert_eq!(
            profile.entries[Path::new("bin/tool")],
            link("/nix/store/a-x/bin/tool", 1)
        );
        assert_eq!(
            profile.entries[Path::new("bin/dep")],
            link("/nix/store/b-y/bin/dep", 2)
        );
    }

    #[test]
    fn a_file_against_a_merged_directory_is_a_collision() {
        let root = store(&[
            ("/nix/store/a-x/lib/x", "x"),
            ("/nix/store/c-z/lib/z", "z"),
            ("/nix/store/b-y/lib", "a file"),
        ]);
        // Against a directory still linked from one package, priorities decide, as in nix.
        let profile = merge(&[p("/nix/store/a-x"), p("/nix/store/b-y")], root.path()).unwrap();
        assert_eq!(
            profile.entries[Path::new("lib")],
            link("/nix/store/a-x/lib", 1)
        );
        let err = merge(
            &[
                p("/nix/store/a-x"),
                p("/nix/store/c-z"),
                p("/nix/store/b-y"),
            ],
            root.path(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("collides"), "{err}");
    }

    #[test]
    fn resolve_stays_in_the_real_root_and_stops_at_loops() {
        let root = store(&[
            ("/nix/store/a-x/up", "->../../../../../etc"),
            ("/nix/store/a-x/loop", "->/nix/store/a-x/loop"),
        ]);
        let up = resolve(root.path(), Path::new("/nix/store/a-x/up"));
        assert!(up.is_err() || up.unwrap().starts_with(root.path()));
        assert!(resolve(root.path(), Path::new("/nix/store/a-x/loop")).is_err());
    }
}
