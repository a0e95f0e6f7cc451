//! The image's namespace while it is being written: every directory, the names in it and the
//! inode each name points at.
//!
//! Files are written the moment their input is read, but a directory can only be laid out when
//! all of its names are known, so directories are kept here and written last. Merging several
//! inputs into one root happens here too: the same directory from two inputs merges, the same
//! file from two inputs is an error naming it and both inputs.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::attributes::Attributes;
use crate::digest::Record;
use crate::dirblock::FileType;

/// Index of a directory in the tree.
pub type DirId = usize;
/// The root directory.
pub const ROOT: DirId = 0;

/// A name in a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Child {
    /// Inode it points at.
    pub ino: u32,
    /// Its type.
    pub kind: FileType,
    /// The directory, when `kind` is a directory.
    pub dir: Option<DirId>,
    /// Which input provided it.
    pub origin: usize,
    /// What the digest records about it (unused for directories, recorded from their dir).
    pub record: Record,
}

/// A directory of the image.
#[derive(Debug, Clone)]
pub struct Dir {
    /// Its inode.
    pub ino: u32,
    /// Its parent (the root is its own parent).
    pub parent: DirId,
    /// Its name in the parent (empty for the root), for paths in messages.
    pub name: Vec<u8>,
    /// Names in it, in byte order (the order they are written in).
    pub children: BTreeMap<Vec<u8>, Child>,
    /// Mode, owner and xattrs; defaults until an input provides the directory itself.
    pub attrs: Attributes,
    /// Whether an input provided it (rather than it being implied by a path below it).
    pub explicit: bool,
}

/// A name clash between inputs, or a path that cannot be placed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TreeError {
    /// Two inputs provide the same non-directory path (or one provides it twice).
    #[error("{} is provided twice: by {first} and by {second}", path.display())]
    Duplicate {
        /// Path in the image.
        path: PathBuf,
        /// The input that provided it first.
        first: String,
        /// The input that provided it again.
        second: String,
    },
    /// A path component that is not a directory is used as one.
    #[error("{} is not a directory in the image (provided by {origin})", path.display())]
    NotADirectory {
        /// Path in the image.
        path: PathBuf,
        /// The input that provided the non-directory.
        origin: String,
    },
    /// A path with `..`, or an empty name.
    #[error("unsafe path {:?} in {origin}", path.display())]
    BadPath {
        /// The offending path.
        path: PathBuf,
        /// The input it came from.
        origin: String,
    },
    /// A name ext cannot hold: longer than [`NAME_MAX`] bytes (a directory entry keeps its
    /// length in one byte) or with a NUL byte (a PAX `path` may carry one).
    #[error("{:?} in {origin}: {problem}", path.display())]
    BadName {
        /// The offending path.
        path: PathBuf,
        /// The input it came from.
        origin: String,
        /// What is wrong with it.
        problem: &'static str,
    },
}

/// The longest name of a directory entry ext2/3/4 holds.
pub const NAME_MAX: usize = 255;

/// What keeps `name` out of an ext directory, if anything.
fn name_problem(name: &[u8]) -> Option<&'static str> {
    if name.len() > NAME_MAX {
        Some("a name longer than 255 bytes")
    } else if name.contains(&0) {
        Some("a name with a NUL byte")
    } else {
        None
    }
}

/// The namespace of the image.
#[derive(Debug)]
pub struct Tree {
    dirs: Vec<Dir>,
    origins: Vec<String>,
}

impl Tree {
    /// A tree with only the root directory (inode `root_ino`).
    pub fn new(root_ino: u32, root_attrs: Attributes) -> Tree {
        Tree {
            dirs: vec![Dir {
                ino: root_ino,
                parent: ROOT,
                name: Vec::new(),
                children: BTreeMap::new(),
                attrs: root_attrs,
                explicit: false,
            }],
            origins: Vec::new(),
        }
    }

    /// Registers an input (for error messages) and returns its number.
    pub fn add_origin(&mut self, name: String) -> usize {
        self.origins.push(name);
        self.origins.len() - 1
    }

    fn origin(&self, origin: usize) -> String {
        self.origins
            .get(origin)
            .cloned()
            .unwrap_or_else(|| "the builder".to_string())
    }

    /// All directories, in creation order.
    pub fn dirs(&self) -> &[Dir] {
        &self.dirs
    }

    /// One directory.
    pub fn dir(&self, id: DirId) -> &Dir {
        &self.dirs[id]
    }

    /// The image path of a directory.
    pub fn path_of(&self, mut id: DirId) -> PathBuf {
        let mut parts = Vec::new();
        while id != ROOT {
            parts.push(&self.dirs[id].name);
            id = self.dirs[id].parent;
        }
        let mut path = PathBuf::from("/");
        for part in parts.iter().rev() {
            path.push(OsStr::from_bytes(part));
        }
        path
    }

    /// Splits an image path into its parent's names and its own name, refusing `..`.
    pub fn split<'p>(
        &self,
        path: &'p Path,
        origin: usize,
    ) -> Result<(Vec<&'p [u8]>, &'p [u8]), TreeError> {
        let mut names = Vec::new();
        for c in path.components() {
            match c {
                std::path::Component::Normal(n) => names.push(n.as_bytes()),
                std::path::Component::RootDir | std::path::Component::CurDir => {}
                _ => {
                    return Err(TreeError::BadPath {
                        path: path.to_path_buf(),
                        origin: self.origin(origin),
                    })
                }
            }
        }
        if let Some(problem) = names.iter().find_map(|n| name_problem(n)) {
            return Err(TreeError::BadName {
                path: path.to_path_buf(),
                origin: self.origin(origin),
                problem,
            });
        }
        let name = names.pop().ok_or_else(|| TreeError::BadPath {
            path: path.to_path_buf(),
            origin: self.origin(origin),
        })?;
        Ok((names, name))
    }

    /// Finds the directory at `names` under the root, creating missing ones with `new_dir`
    /// (which allocates an inode) and `default_attrs`.
    pub fn walk<E: From<TreeError>>(
        &mut self,
        names: &[&[u8]],
        origin: usize,
        default_attrs: &Attributes,
        new_dir: &mut impl FnMut(&Path) -> Result<u32, E>,
    ) -> Result<DirId, E> {
        let mut id = ROOT;
        for (depth, name) in names.iter().enumerate() {
            id = match self.dirs[id].children.get(*name) {
                Some(Child { dir: Some(d), .. }) => *d,
                Some(other) => {
                    let path = join(&names[..=depth]);
                    return Err(TreeError::NotADirectory {
                        path,
                        origin: self.origin(other.origin),
                    }
                    .into());
                }
                None => {
                    let path = join(&names[..=depth]);
                    let ino = new_dir(&path)?;
                    self.add_dir(id, name, ino, default_attrs.clone(), false, origin)
                }
            };
        }
        Ok(id)
    }

    fn add_dir(
        &mut self,
        parent: DirId,
        name: &[u8],
        ino: u32,
        attrs: Attributes,
        explicit: bool,
        origin: usize,
    ) -> DirId {
        let id = self.dirs.len();
        self.dirs.push(Dir {
            ino,
            parent,
            name: name.to_vec(),
            children: BTreeMap::new(),
            attrs,
            explicit,
        });
        self.dirs[parent].children.insert(
            name.to_vec(),
            Child {
                ino,
                kind: FileType::Directory,
                dir: Some(id),
                origin,
                record: Record::Ready([0; 32]),
            },
        );
        id
    }

    /// Declares directory `name` in `parent` with `attrs`: merges with an existing directory
    /// (the first input to provide it decides its attributes), creates it otherwise.
    pub fn declare_dir<E: From<TreeError>>(
        &mut self,
        parent: DirId,
        name: &[u8],
        attrs: Attributes,
        origin: usize,
        new_dir: &mut impl FnMut(&Path) -> Result<u32, E>,
    ) -> Result<DirId, E> {
        match self.dirs[parent].children.get(name).copied() {
            Some(Child { dir: Some(d), .. }) => {
                if !self.dirs[d].explicit {
                    self.dirs[d].attrs = attrs;
                    self.dirs[d].explicit = true;
                }
                Ok(d)
            }
            Some(other) => Err(TreeError::NotADirectory {
                path: self.child_path(parent, name),
                origin: self.origin(other.origin),
            }
            .into()),
            None => {
                let ino = new_dir(&self.child_path(parent, name))?;
                Ok(self.add_dir(parent, name, ino, attrs, true, origin))
            }
        }
    }

    /// The image path of `name` in directory `parent`.
    pub fn child_path(&self, parent: DirId, name: &[u8]) -> PathBuf {
        self.path_of(parent).join(OsStr::from_bytes(name))
    }

    /// Fails if `name` already exists in `parent` (checked before writing a file's data).
    pub fn check_free(&self, parent: DirId, name: &[u8], origin: usize) -> Result<(), TreeError> {
        match self.dirs[parent].children.get(name) {
            None => Ok(()),
            Some(existing) => Err(TreeError::Duplicate {
                path: self.child_path(parent, name),
                first: self.origin(existing.origin),
                second: self.origin(origin),
            }),
        }
    }

    /// Enters a non-directory `name` in `parent`.
    pub fn insert(
        &mut self,
        parent: DirId,
        name: &[u8],
        ino: u32,
        kind: FileType,
        origin: usize,
        record: Record,
    ) -> Result<(), TreeError> {
        self.check_free(parent, name, origin)?;
        self.dirs[parent].children.insert(
            name.to_vec(),
            Child {
                ino,
                kind,
                dir: None,
                origin,
                record,
            },
        );
        Ok(())
    }

    /// Looks up a path (for hard links inside a tar stream).
    pub fn lookup(&self, path: &Path) -> Option<Child> {
        // `None` until a name is found; then the directory to continue in, if it is one.
        let mut found: Option<Child> = None;
        for c in path.components() {
            let name = match c {
                std::path::Component::Normal(name) => name,
                std::path::Component::RootDir | std::path::Component::CurDir => continue,
                // `..` is never followed: inputs name paths inside the image only.
                _ => return None,
            };
            let id = match found {
                None => ROOT,
                Some(Child { dir: Some(d), .. }) => d,
                Some(_) => return None, // a file used as a directory
            };
            found = Some(*self.dirs[id].children.get(name.as_bytes())?);
        }
        found
    }

    /// Number of subdirectories of `id` (its link count is 2 plus this).
    pub fn subdirs(&self, id: DirId) -> usize {
        self.dirs[id]
            .children
            .values()
            .filter(|c| c.dir.is_some())
            .count()
    }
}

fn join(names: &[&[u8]]) -> PathBuf {
    let mut p = PathBuf::from("/");
    for n in names {
        p.push(OsStr::from_bytes(n));
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter() -> impl FnMut(&Path) -> Result<u32, TreeError> {
        let mut next = 100;
        move |_| {
            next += 1;
            Ok(next)
        }
    }

    #[test]
    fn same_directory_from_two_inputs_merges() {
        let mut t = Tree::new(2, Attributes::default());
        let a = t.add_origin("--dir a".into());
        let b = t.add_origin("--dir b".into());
        let mut alloc = counter();
        let bin_a = t
            .declare_dir(
                ROOT,
                b"bin",
                Attributes {
                    perm: 0o755,
                    ..Default::default()
                },
                a,
                &mut alloc,
            )
            .unwrap();
        let bin_b = t
            .declare_dir(
                ROOT,
                b"bin",
                Attributes {
                    perm: 0o700,
                    ..Default::default()
                },
                b,
                &mut alloc,
            )
            .unwrap();
        assert_eq!(bin_a, bin_b);
        assert_eq!(t.dir(bin_a).attrs.perm, 0o755, "first input decides");
        t.insert(
            bin_a,
            b"ls",
            7,
            FileType::Regular,
            a,
            Record::Ready([0; 32]),
        )
        .unwrap();
        t.insert(
            bin_a,
            b"cat",
            8,
            FileType::Regular,
            b,
            Record::Ready([0; 32]),
        )
        .unwrap();
        assert_eq!(t.dir(bin_a).children.len(), 2);
    }

    #[test]
    fn same_file_from_two_inputs_is_an_error_naming_both() {
        let mut t = Tree::new(2, Attributes::default());
        let a = t.add_origin("--dir a".into());
        let b = t.add_origin("--dir b".into());
        let mut alloc = counter();
        let bin = t
            .walk(&[b"bin".as_slice()], a, &Attributes::default(), &mut alloc)
            .unwrap();
        t.insert(
            bin,
            b"busybox",
            7,
            FileType::Regular,
            a,
            Record::Ready([0; 32]),
        )
        .unwrap();
        let err = t
            .insert(
                bin,
                b"busybox",
                8,
                FileType::Regular,
                b,
                Record::Ready([0; 32]),
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "/bin/busybox is provided twice: by --dir a and by --dir b"
        );
    }

    #[test]
    fn file_used_as_directory_is_refused() {
        let mut t = Tree::new(2, Attributes::default());
        let a = t.add_origin("--tar x".into());
        let mut alloc = counter();
        t.insert(
            ROOT,
            b"bin",
            7,
            FileType::Symlink,
            a,
            Record::Ready([0; 32]),
        )
        .unwrap();
        let err = t
            .walk(&[b"bin".as_slice()], a, &Attributes::default(), &mut alloc)
            .unwrap_err();
        assert!(matches!(err, TreeError::NotADirectory { .. }));
    }

    #[test]
    fn lookup_follows_directories_only() {
        let mut t = Tree::new(2, Attributes::default());
        let a = t.add_origin("x".into());
        let mut alloc = counter();
        let bin = t
            .walk(&[b"bin".as_slice()], a, &Attributes::default(), &mut alloc)
            .unwrap();
        t.insert(bin, b"sh", 7, FileType::Regular, a, Record::Ready([0; 32]))
            .unwrap();
        assert_eq!(t.lookup(Path::new("/bin/sh")).map(|c| c.ino), Some(7));
        assert!(t.lookup(Path::new("bin/sh/x")).is_none());
        assert!(t.lookup(Path::new("bin/../bin/sh")).is_none());
        assert!(t.lookup(Path::new("sh")).is_none());
        assert_eq!(t.path_of(bin), Path::new("/bin"));
    }

    #[test]
    fn dotdot_is_refused_and_paths_are_reported() {
        let t = Tree::new(2, Attributes::default());
        assert!(t.split(Path::new("a/../b"), 0).is_err());
        let (parents, name) = t.split(Path::new("./a/b/c"), 0).unwrap();
        assert_eq!(parents, vec![b"a".as_slice(), b"b".as_slice()]);
        assert_eq!(name, b"c");
    }

    #[test]
    fn names_past_255_bytes_are_refused_anywhere_in_the_path() {
        let t = Tree::new(2, Attributes::default());
        let long = "n".repeat(256);
        for path in [format!("a/{long}"), format!("{long}/b"), "n".repeat(300)] {
            let err = t.split(Path::new(&path), 0).unwrap_err();
            assert!(matches!(err, TreeError::BadName { .. }), "{path}: {err}");
        }
        assert!(t.split(Path::new(&"n".repeat(255)), 0).is_ok());
        let nul = std::ffi::OsStr::from_bytes(b"a/b\0c");
        assert!(matches!(
            t.split(Path::new(nul), 0),
            Err(TreeError::BadName { .. })
        ));
    }
}
