//! The image's namespace while it is being written: every directory, the names in it and the
//! inode each name points at.
//!
//! Files are written the moment their input is read, but a directory can only be laid out when
//! all of its names are known, so directories are laid out last. Merging several inputs into
//! one root happens here too: the same directory from two inputs merges, the same file from two
//! inputs is an error naming it and both inputs.
//!
//! Memory does not grow with the number of files: only directories are kept in memory (their
//! attributes and subdirectories). Every other name is appended, with its inode, type, input
//! and digest record, to a scratch file ([`Spill`], unnamed, next to `-o`); a directory keeps
//! the byte ranges of that file its names went to (one range per stretch of names written
//! together, so one or a few for a directory walk). A directory's names are read back, sorted
//! and checked for clashes only when they are needed: for the digest, for its blocks, for a
//! lookup. A name given twice is therefore found then, at the end of the build rather than when
//! the second copy is written; it is the same error, and nothing is left at `-o` either way.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
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

/// A name in a directory with what it points at, as [`Tree::children`] lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    /// The name.
    pub name: Vec<u8>,
    /// What it points at.
    pub child: Child,
}

/// A directory of the image.
#[derive(Debug, Clone)]
pub struct Dir {
    /// Its inode.
    pub ino: u32,
    /// Its parent (the root is its own parent).
    pub parent: DirId,
    /// Its name in the parent (empty for the root), for paths in messages.
    pub name: Box<[u8]>,
    /// Mode, owner and xattrs; defaults until an input provides the directory itself.
    pub attrs: Attributes,
    /// Whether an input provided it (rather than it being implied by a path below it).
    pub explicit: bool,
    /// The input that made it.
    origin: usize,
    /// Length of the scratch file when it was made: orders it against the names there.
    created: u64,
    /// Its subdirectories by name.
    subdirs: BTreeMap<Box<[u8]>, DirId>,
    /// Byte ranges of the scratch file holding its other names.
    runs: Vec<(u64, u64)>,
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

/// Why a directory's names cannot be listed: they clash, or the scratch file failed.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// Two names clash.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// Reading or writing the scratch file failed.
    #[error("cannot use the scratch file of the directory tree")]
    Spill(#[from] std::io::Error),
}

/// Bytes of a spilled name before the name itself: length, type, inode, input, record tag,
/// record.
const HEAD: usize = 1 + 1 + 4 + 4 + 1 + 32;
/// Spilled names are written in pieces of about this size.
const SPILL_BUFFER: usize = 64 * 1024;

/// The scratch file names are appended to, buffered.
#[derive(Debug)]
pub struct Spill {
    file: File,
    buf: Vec<u8>,
    /// Bytes already in the file (the buffer follows them).
    written: u64,
}

impl Spill {
    /// Appends to `file` (an empty scratch file).
    pub fn new(file: File) -> Spill {
        Spill {
            file,
            buf: Vec::with_capacity(SPILL_BUFFER),
            written: 0,
        }
    }

    fn len(&self) -> u64 {
        self.written + self.buf.len() as u64
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.file.write_all_at(&self.buf, self.written)?;
            self.written += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    /// Appends one name; returns where it starts.
    fn push(&mut self, name: &[u8], child: &Child) -> std::io::Result<u64> {
        let at = self.len();
        let (tag, value) = match child.record {
            Record::Ready(r) => (0, r),
            Record::Slot(s) => {
                let mut v = [0; 32];
                v[..8].copy_from_slice(&(s as u64).to_le_bytes());
                (1, v)
            }
        };
        let origin = u32::try_from(child.origin).expect("fewer than 2^32 inputs");
        self.buf.push(name.len() as u8);
        self.buf.push(child.kind as u8);
        self.buf.extend_from_slice(&child.ino.to_le_bytes());
        self.buf.extend_from_slice(&origin.to_le_bytes());
        self.buf.push(tag);
        self.buf.extend_from_slice(&value);
        self.buf.extend_from_slice(name);
        if self.buf.len() >= SPILL_BUFFER {
            self.flush()?;
        }
        Ok(at)
    }

    /// Reads the names in bytes `start..end` back: (where each starts, name, what it is).
    fn read(&mut self, start: u64, end: u64, out: &mut Vec<(u64, Named)>) -> std::io::Result<()> {
        if end > self.written {
            self.flush()?;
        }
        let mut bytes = vec![0; (end - start) as usize];
        self.file.read_exact_at(&mut bytes, start)?;
        let mut at = 0;
        while at < bytes.len() {
            let b = &bytes[at..];
            let len = usize::from(b[0]);
            let kind = file_type(b[1]);
            let word = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
            let mut value = [0; 32];
            value.copy_from_slice(&b[11..HEAD]);
            let record = match b[10] {
                0 => Record::Ready(value),
                _ => Record::Slot(
                    u64::from_le_bytes(value[..8].try_into().expect("8 bytes")) as usize
                ),
            };
            out.push((
                start + at as u64,
                Named {
                    name: b[HEAD..HEAD + len].to_vec(),
                    child: Child {
                        ino: word(2),
                        kind,
                        dir: None,
                        origin: word(6) as usize,
                        record,
                    },
                },
            ));
            at += HEAD + len;
        }
        Ok(())
    }
}

/// The type a spilled name records (never a directory: those stay in memory).
fn file_type(b: u8) -> FileType {
    [
        FileType::Regular,
        FileType::CharDevice,
        FileType::BlockDevice,
        FileType::Fifo,
        FileType::Socket,
        FileType::Symlink,
    ]
    .into_iter()
    .find(|k| *k as u8 == b)
    .expect("a type this module wrote")
}

/// A directory's names, for lookups.
type Names = HashMap<Box<[u8]>, Child>;

/// The namespace of the image.
#[derive(Debug)]
pub struct Tree {
    dirs: Vec<Dir>,
    origins: Vec<String>,
    spill: Spill,
    /// The names of the directory last looked up in (the first given for each), kept in step
    /// with inserts into it: a run of hard links into one directory reads it once.
    recent: Option<(DirId, Names)>,
}

impl Tree {
    /// A tree with only the root directory (inode `root_ino`), keeping its names in `scratch`
    /// (an empty file no one else uses).
    pub fn new(root_ino: u32, root_attrs: Attributes, scratch: File) -> Tree {
        Tree {
            dirs: vec![Dir {
                ino: root_ino,
                parent: ROOT,
                name: Box::default(),
                attrs: root_attrs,
                explicit: false,
                origin: usize::MAX,
                created: 0,
                subdirs: BTreeMap::new(),
                runs: Vec::new(),
            }],
            origins: Vec::new(),
            spill: Spill::new(scratch),
            recent: None,
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
    /// (which allocates an inode) and `default_attrs`. A name that turns out to be a file as
    /// well is found when the directory's names are listed.
    pub fn walk<E: From<TreeError>>(
        &mut self,
        names: &[&[u8]],
        origin: usize,
        default_attrs: &Attributes,
        new_dir: &mut impl FnMut(&Path) -> Result<u32, E>,
    ) -> Result<DirId, E> {
        let mut id = ROOT;
        for (depth, name) in names.iter().enumerate() {
            id = match self.dirs[id].subdirs.get(*name) {
                Some(d) => *d,
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
            name: name.into(),
            attrs,
            explicit,
            origin,
            created: self.spill.len(),
            subdirs: BTreeMap::new(),
            runs: Vec::new(),
        });
        self.dirs[parent].subdirs.insert(name.into(), id);
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
        match self.dirs[parent].subdirs.get(name).copied() {
            Some(d) => {
                if !self.dirs[d].explicit {
                    self.dirs[d].attrs = attrs;
                    self.dirs[d].explicit = true;
                }
                Ok(d)
            }
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

    /// Fails if `name` is a directory in `parent` (checked before writing a file's data; a
    /// file of the same name is found when the directory's names are listed).
    pub fn check_free(&self, parent: DirId, name: &[u8], origin: usize) -> Result<(), TreeError> {
        match self.dirs[parent].subdirs.get(name) {
            None => Ok(()),
            Some(&existing) => Err(TreeError::Duplicate {
                path: self.child_path(parent, name),
                first: self.origin(self.dirs[existing].origin),
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
    ) -> Result<(), ListError> {
        self.check_free(parent, name, origin)?;
        let child = Child {
            ino,
            kind,
            dir: None,
            origin,
            record,
        };
        let start = self.spill.push(name, &child)?;
        if let Some((_, names)) = self.recent.as_mut().filter(|(d, _)| *d == parent) {
            names.entry(name.into()).or_insert(child);
        }
        let end = self.spill.len();
        let runs = &mut self.dirs[parent].runs;
        match runs.last_mut() {
            Some(last) if last.1 == start => last.1 = end,
            _ => runs.push((start, end)),
        }
        Ok(())
    }

    /// The names in directory `id` with what they point at, in byte order of names; an error
    /// when two clash (the same name given twice, or a file where a directory is).
    pub fn children(&mut self, id: DirId) -> Result<Vec<Named>, ListError> {
        let mut all: Vec<(u64, Named)> = Vec::new();
        for i in 0..self.dirs[id].runs.len() {
            let (start, end) = self.dirs[id].runs[i];
            self.spill.read(start, end, &mut all)?;
        }
        // A directory made when the scratch file had N bytes came before the name at N.
        let mut keyed: Vec<((u64, bool), Named)> = all
            .into_iter()
            .map(|(at, named)| ((at, true), named))
            .collect();
        for (name, &d) in &self.dirs[id].subdirs {
            let dir = &self.dirs[d];
            keyed.push((
                (dir.created, false),
                Named {
                    name: name.to_vec(),
                    child: Child {
                        ino: dir.ino,
                        kind: FileType::Directory,
                        dir: Some(d),
                        origin: dir.origin,
                        record: Record::Ready([0; 32]),
                    },
                },
            ));
        }
        keyed.sort_unstable_by(|(a_at, a), (b_at, b)| a.name.cmp(&b.name).then(a_at.cmp(b_at)));
        if let Some(pair) = keyed.windows(2).find(|w| w[0].1.name == w[1].1.name) {
            let (first, second) = (&pair[0].1, &pair[1].1);
            let path = self.child_path(id, &first.name);
            return Err(if first.child.dir.is_none() && second.child.dir.is_some() {
                TreeError::NotADirectory {
                    path,
                    origin: self.origin(first.child.origin),
                }
            } else {
                TreeError::Duplicate {
                    path,
                    first: self.origin(first.child.origin),
                    second: self.origin(second.child.origin),
                }
            }
            .into());
        }
        Ok(keyed.into_iter().map(|(_, named)| named).collect())
    }

    /// Looks up a path (for hard links inside a tar stream); the first name given for it.
    pub fn lookup(&mut self, path: &Path) -> std::io::Result<Option<Child>> {
        let mut names = Vec::new();
        for c in path.components() {
            match c {
                std::path::Component::Normal(name) => names.push(name.as_bytes()),
                std::path::Component::RootDir | std::path::Component::CurDir => continue,
                // `..` is never followed: inputs name paths inside the image only.
                _ => return Ok(None),
            }
        }
        let Some((last, parents)) = names.split_last() else {
            return Ok(None);
        };
        let mut id = ROOT;
        for name in parents {
            match self.dirs[id].subdirs.get(*name) {
                Some(&d) => id = d,
                None => return Ok(None), // missing, or a file used as a directory
            }
        }
        if let Some(&d) = self.dirs[id].subdirs.get(*last) {
            let dir = &self.dirs[d];
            return Ok(Some(Child {
                ino: dir.ino,
                kind: FileType::Directory,
                dir: Some(d),
                origin: dir.origin,
                record: Record::Ready([0; 32]),
            }));
        }
        if self.recent.as_ref().is_none_or(|(d, _)| *d != id) {
            self.recent = None;
            let mut all = Vec::new();
            for i in 0..self.dirs[id].runs.len() {
                let (start, end) = self.dirs[id].runs[i];
                self.spill.read(start, end, &mut all)?;
            }
            let mut names = HashMap::with_capacity(all.len());
            for (_, n) in all {
                names.entry(n.name.into_boxed_slice()).or_insert(n.child);
            }
            self.recent = Some((id, names));
        }
        Ok(self
            .recent
            .as_ref()
            .and_then(|(_, names)| names.get(*last).copied()))
    }

    /// Number of subdirectories of `id` (its link count is 2 plus this).
    pub fn subdirs(&self, id: DirId) -> usize {
        self.dirs[id].subdirs.len()
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

    fn scratch() -> File {
        tempfile::tempfile().unwrap()
    }

    fn counter() -> impl FnMut(&Path) -> Result<u32, TreeError> {
        let mut next = 100;
        move |_| {
            next += 1;
            Ok(next)
        }
    }

    #[test]
    fn same_directory_from_two_inputs_merges() {
        let mut t = Tree::new(2, Attributes::default(), scratch());
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
        assert_eq!(t.children(bin_a).unwrap().len(), 2);
    }

    #[test]
    fn same_file_from_two_inputs_is_an_error_naming_both() {
        let mut t = Tree::new(2, Attributes::default(), scratch());
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
        t.insert(
            bin,
            b"busybox",
            8,
            FileType::Regular,
            b,
            Record::Ready([0; 32]),
        )
        .unwrap();
        let err = t.children(bin).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/bin/busybox is provided twice: by --dir a and by --dir b"
        );
    }

    #[test]
    fn file_used_as_directory_is_refused() {
        let mut t = Tree::new(2, Attributes::default(), scratch());
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
        t.walk(&[b"bin".as_slice()], a, &Attributes::default(), &mut alloc)
            .unwrap();
        let err = t.children(ROOT).unwrap_err();
        assert!(
            matches!(err, ListError::Tree(TreeError::NotADirectory { .. })),
            "{err}"
        );
    }

    #[test]
    fn lookup_follows_directories_only() {
        let mut t = Tree::new(2, Attributes::default(), scratch());
        let a = t.add_origin("x".into());
        let mut alloc = counter();
        let bin = t
            .walk(&[b"bin".as_slice()], a, &Attributes::default(), &mut alloc)
            .unwrap();
        t.insert(bin, b"sh", 7, FileType::Regular, a, Record::Ready([0; 32]))
            .unwrap();
        assert_eq!(
            t.lookup(Path::new("/bin/sh")).unwrap().map(|c| c.ino),
            Some(7)
        );
        assert!(t.lookup(Path::new("bin/sh/x")).unwrap().is_none());
        assert!(t.lookup(Path::new("bin/../bin/sh")).unwrap().is_none());
        assert!(t.lookup(Path::new("sh")).unwrap().is_none());
        assert_eq!(t.path_of(bin), Path::new("/bin"));
    }

    #[test]
    fn spilled_names_come_back_sorted_per_directory_with_their_records() {
        let mut t = Tree::new(2, Attributes::default(), scratch());
        let a = t.add_origin("x".into());
        let mut alloc = counter();
        let d1 = t
            .walk(&[b"d1".as_slice()], a, &Attributes::default(), &mut alloc)
            .unwrap();
        let d2 = t
            .walk(&[b"d2".as_slice()], a, &Attributes::default(), &mut alloc)
            .unwrap();
        // Interleaved between the two directories, in no order, past the write buffer.
        let mut want1 = Vec::new();
        for i in (0..5000u32).rev() {
            let name = format!("file-{i:05}-{}", "x".repeat((i % 200) as usize));
            let (dir, record) = if i % 3 == 0 {
                (d1, Record::Slot(i as usize))
            } else {
                (d2, Record::Ready([i as u8; 32]))
            };
            t.insert(dir, name.as_bytes(), 1000 + i, FileType::Symlink, a, record)
                .unwrap();
            if dir == d1 {
                want1.push((name.into_bytes(), 1000 + i, record));
            }
        }
        want1.sort_by(|x, y| x.0.cmp(&y.0));
        let got: Vec<_> = t
            .children(d1)
            .unwrap()
            .into_iter()
            .map(|n| (n.name, n.child.ino, n.child.record))
            .collect();
        assert_eq!(got, want1);
        assert_eq!(t.children(d2).unwrap().len(), 5000 - want1.len());
        let names: Vec<_> = t
            .children(ROOT)
            .unwrap()
            .into_iter()
            .map(|n| n.name)
            .collect();
        assert_eq!(names, vec![b"d1".to_vec(), b"d2".to_vec()]);
        assert_eq!(
            t.lookup(Path::new("d2/file-00001-x"))
                .unwrap()
                .map(|c| c.record),
            Some(Record::Ready([1; 32]))
        );
    }

    #[test]
    fn lookups_see_names_added_after_the_directory_was_read() {
        let mut t = Tree::new(2, Attributes::default(), scratch());
        let a = t.add_origin("x".into());
        let mut alloc = counter();
        let d = t
            .walk(&[b"d".as_slice()], a, &Attributes::default(), &mut alloc)
            .unwrap();
        let ready = |i: u8| Record::Ready([i; 32]);
        t.insert(d, b"f1", 11, FileType::Regular, a, ready(1))
            .unwrap();
        assert_eq!(
            t.lookup(Path::new("d/f1")).unwrap().map(|c| c.ino),
            Some(11)
        );
        // Into the directory just read, into another, the same name again.
        t.insert(d, b"f2", 12, FileType::Regular, a, ready(2))
            .unwrap();
        t.insert(ROOT, b"g", 13, FileType::Regular, a, ready(3))
            .unwrap();
        t.insert(d, b"f1", 14, FileType::Regular, a, ready(4))
            .unwrap();
        assert_eq!(
            t.lookup(Path::new("d/f2")).unwrap().map(|c| c.ino),
            Some(12)
        );
        assert_eq!(
            t.lookup(Path::new("d/f1")).unwrap().map(|c| c.ino),
            Some(11)
        );
        assert_eq!(t.lookup(Path::new("g")).unwrap().map(|c| c.ino), Some(13));
        assert_eq!(
            t.lookup(Path::new("d/f1")).unwrap().map(|c| c.ino),
            Some(11)
        );
        assert!(t.lookup(Path::new("d/f3")).unwrap().is_none());
    }

    #[test]
    fn a_directory_then_a_file_of_its_name_is_a_duplicate() {
        let mut t = Tree::new(2, Attributes::default(), scratch());
        let a = t.add_origin("--dir a".into());
        let b = t.add_origin("--tar b".into());
        let mut alloc = counter();
        t.walk(
            &[b"x".as_slice(), b"y"],
            a,
            &Attributes::default(),
            &mut alloc,
        )
        .unwrap();
        let x = t.lookup(Path::new("x")).unwrap().unwrap().dir.unwrap();
        // The directory is there when the file comes: refused at once.
        let err = t
            .insert(ROOT, b"x", 9, FileType::Regular, b, Record::Ready([0; 32]))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "/x is provided twice: by --dir a and by --tar b"
        );
        // A file in x named like a later directory.
        t.insert(x, b"z", 9, FileType::Regular, b, Record::Ready([0; 32]))
            .unwrap();
        t.walk(
            &[b"x".as_slice(), b"z", b"w"],
            a,
            &Attributes::default(),
            &mut alloc,
        )
        .unwrap();
        let err = t.children(x).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/x/z is not a directory in the image (provided by --tar b)"
        );
    }

    #[test]
    fn dotdot_is_refused_and_paths_are_reported() {
        let t = Tree::new(2, Attributes::default(), scratch());
        assert!(t.split(Path::new("a/../b"), 0).is_err());
        let (parents, name) = t.split(Path::new("./a/b/c"), 0).unwrap();
        assert_eq!(parents, vec![b"a".as_slice(), b"b".as_slice()]);
        assert_eq!(name, b"c");
    }

    #[test]
    fn names_past_255_bytes_are_refused_anywhere_in_the_path() {
        let t = Tree::new(2, Attributes::default(), scratch());
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
