//! `--user NAME[:GROUP]`: who the command runs as, resolved the way `docker exec -u` (runc)
//! resolves it, from the container's `/etc/passwd` and `/etc/group`.
//!
//! Those files belong to the container, so they are read as data: never through NSS (whose
//! modules the container's `nsswitch.conf` chooses), through the target's root with
//! `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS` (a symlink cannot lead to a host file), as
//! regular files only (checked on an `O_PATH` descriptor before anything is opened for
//! reading: a FIFO cannot hang crashcart, a device node is never opened), and at most
//! [`MAX_FILE_BYTES`] of them. Malformed lines are skipped, as glibc's files module does;
//! an ID field that is not a number within range never becomes one (runc reads it as 0).
//!
//! The rules, as runc's `GetExecUser` applies them for `docker exec -u`:
//!
//! - `NAME`: the first passwd entry of that name gives the uid and the gid; no entry is an
//!   error. `UID` (digits): the first entry with that uid gives the gid; without one the uid
//!   stands alone with gid 0.
//! - `:GROUP` given: its gid (by name from `/etc/group`, an unknown name an error; digits used
//!   as they are), and no other supplementary group.
//! - No `:GROUP`: the supplementary groups are every group of `/etc/group` that lists the
//!   passwd entry's name as a member.
//! - The primary gid is among the supplementary groups too, as containerd and runc have set it
//!   since CVE-2023-25173 (`docker exec -u 101` shows `groups=...,101`).

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{fstat, fstatfs, openat, openat2, FileType, Mode, OFlags, ResolveFlags, CWD};
use rustix::io::Errno;

/// The largest passwd or group file read (a large LDAP dump is a few MB).
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// The largest ID accepted, as runc: IDs above it are negative in a C `int`, and
/// `(uid_t) -1` means "unchanged" to `setresuid`.
pub const MAX_ID: u32 = i32::MAX as u32;

/// The passwd file, inside the container's root.
pub const PASSWD: &str = "/etc/passwd";
/// The group file, inside the container's root.
pub const GROUP: &str = "/etc/group";

/// `FUSE_SUPER_MAGIC`: a file there is served by a process that may never answer.
const FUSE_MAGIC: i64 = 0x6573_5546;

/// A user or group as `--user` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// Digits: an ID in the container's user namespace.
    Id(u32),
    /// Anything else: a name to look up.
    Name(String),
}

impl Who {
    fn parse(s: &str, kind: &str) -> Result<Who, String> {
        if s.is_empty() {
            return Err(format!("the {kind} is empty"));
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return match s.parse::<u32>() {
                Ok(id) if id <= MAX_ID => Ok(Who::Id(id)),
                _ => Err(format!("{kind} {s} is out of range (at most {MAX_ID})")),
            };
        }
        if s.contains(['\n', '\0']) {
            return Err(format!("{kind} name {s:?} holds a newline or NUL"));
        }
        Ok(Who::Name(s.to_string()))
    }
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Who::Id(id) => write!(f, "{id}"),
            Who::Name(name) => f.write_str(name),
        }
    }
}

/// `--user USER[:GROUP]`, as typed (names not resolved yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSpec {
    /// The user.
    pub user: Who,
    /// The group, when one was given after `:`.
    pub group: Option<Who>,
}

impl UserSpec {
    /// Parses `NAME`, `UID`, `NAME:GROUP`, `UID:GID`, `NAME:GID` or `UID:GROUP`.
    pub fn parse(s: &str) -> Result<UserSpec, String> {
        let (user, group) = match s.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (s, None),
        };
        Ok(UserSpec {
            user: Who::parse(user, "user")?,
            group: group.map(|g| Who::parse(g, "group")).transpose()?,
        })
    }

    /// Whether resolving needs no file of the container: `UID:GID`.
    pub fn is_numeric(&self) -> bool {
        matches!((&self.user, &self.group), (Who::Id(_), Some(Who::Id(_))))
    }
}

impl fmt::Display for UserSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.group {
            Some(group) => write!(f, "{}:{group}", self.user),
            None => write!(f, "{}", self.user),
        }
    }
}

/// The IDs a command runs with, in the target's user namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// User ID.
    pub uid: u32,
    /// Primary group ID.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

/// One line of a passwd file, the fields crashcart uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    /// Login name.
    pub name: String,
    /// User ID.
    pub uid: u32,
    /// Primary group ID.
    pub gid: u32,
}

/// One line of a group file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    /// Group name.
    pub name: String,
    /// Group ID.
    pub gid: u32,
    /// Member login names.
    pub members: Vec<String>,
}

/// Why `--user` could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// No passwd entry of that name.
    #[error("no user {0:?} in the container's /etc/passwd")]
    NoSuchUser(String),
    /// No group entry of that name.
    #[error("no group {0:?} in the container's /etc/group")]
    NoSuchGroup(String),
    /// The file is a FIFO, directory, device...
    #[error("the container's {0} is not a regular file")]
    NotRegular(&'static str),
    /// The file is on FUSE: whoever serves it could stall the read.
    #[error("the container's {0} is on a FUSE filesystem; not reading it")]
    Fuse(&'static str),
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error("the container's {0} is larger than {MAX_FILE_BYTES} bytes")]
    TooLarge(&'static str),
    /// Opening or reading the file failed.
    #[error("cannot read the container's {file}")]
    Read {
        /// The file.
        file: &'static str,
        /// Why.
        #[source]
        source: Errno,
    },
}

/// Parses the ID field of a passwd or group line: digits only, at most [`MAX_ID`].
fn parse_id(field: &str) -> Option<u32> {
    if field.is_empty() || !field.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    field.parse::<u32>().ok().filter(|&id| id <= MAX_ID)
}

/// The lines of a passwd or group file worth reading: not empty, not a comment, not a NIS
/// `+`/`-` compat line; each split into its `:` fields. Bytes that are not UTF-8 make the
/// line's name one no `--user` can match (names are typed as UTF-8).
fn records(text: &[u8]) -> impl Iterator<Item = Vec<String>> + '_ {
    text.split(|&b| b == b'\n').filter_map(|line| {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with(['#', '+', '-']) {
            return None;
        }
        Some(line.split(':').map(str::to_string).collect())
    })
}

/// The valid entries of a passwd file (`name:password:uid:gid:gecos:home:shell`), in order;
/// lines with fewer than four fields, an empty name or a bad ID are skipped.
pub fn parse_passwd(text: &[u8]) -> Vec<PasswdEntry> {
    records(text)
        .filter_map(|fields| {
            let [name, _, uid, gid, ..] = fields.as_slice() else {
                return None;
            };
            Some(PasswdEntry {
                name: name.clone(),
                uid: parse_id(uid)?,
                gid: parse_id(gid)?,
            })
            .filter(|e| !e.name.is_empty())
        })
        .collect()
}

/// The valid entries of a group file (`name:password:gid:member,member`), in order.
pub fn parse_group(text: &[u8]) -> Vec<GroupEntry> {
    records(text)
        .filter_map(|fields| {
            let [name, _, gid, rest @ ..] = fields.as_slice() else {
                return None;
            };
            let members = rest.first().map_or("", String::as_str);
            Some(GroupEntry {
                name: name.clone(),
                gid: parse_id(gid)?,
                members: members
                    .split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect(),
            })
            .filter(|e| !e.name.is_empty())
        })
        .collect()
}

/// Resolves `spec` against the container's passwd and group files (`None`: the file does not
/// exist), by the rules in the module docs.
pub fn resolve(
    spec: &UserSpec,
    passwd: Option<&[u8]>,
    group: Option<&[u8]>,
) -> Result<Identity, UserError> {
    let users = passwd.map(parse_passwd).unwrap_or_default();
    let entry = users.iter().find(|e| match &spec.user {
        Who::Id(uid) => e.uid == *uid,
        Who::Name(name) => e.name == *name,
    });
    let (uid, mut gid, name) = match (entry, &spec.user) {
        (Some(e), _) => (e.uid, e.gid, Some(e.name.as_str())),
        (None, Who::Id(uid)) => (*uid, 0, None),
        (None, Who::Name(name)) => return Err(UserError::NoSuchUser(name.clone())),
    };
    let groups_file = group.map(parse_group).unwrap_or_default();
    let mut groups = Vec::new();
    match &spec.group {
        Some(Who::Id(id)) => gid = *id,
        Some(Who::Name(wanted)) => {
            gid = groups_file
                .iter()
                .find(|g| g.name == *wanted)
                .map(|g| g.gid)
                .ok_or_else(|| UserError::NoSuchGroup(wanted.clone()))?;
        }
        None => {
            if let Some(name) = name {
                for g in groups_file
                    .iter()
                    .filter(|g| g.members.iter().any(|m| m == name))
                {
                    if !groups.contains(&g.gid) {
                        groups.push(g.gid);
                    }
                }
            }
        }
    }
    if !groups.contains(&gid) {
        groups.push(gid);
    }
    Ok(Identity { uid, gid, groups })
}

/// Reads `file` ([`PASSWD`] or [`GROUP`]) of the container whose root is `root` (its
/// `/proc/PID/root`), safely (see the module docs); `None` when it does not exist.
pub fn read_container_file(
    root: BorrowedFd<'_>,
    file: &'static str,
) -> Result<Option<Vec<u8>>, UserError> {
    let read_err = |source| UserError::Read { file, source };
    let path = match openat2(
        root,
        file.trim_start_matches('/'),
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    let st = fstat(&path).map_err(read_err)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(UserError::NotRegular(file));
    }
    if fstatfs(&path).map_err(read_err)?.f_type as i64 == FUSE_MAGIC {
        return Err(UserError::Fuse(file));
    }
    if st.st_size as u64 > MAX_FILE_BYTES {
        return Err(UserError::TooLarge(file));
    }
    // Opened for reading only now, through our own descriptor: the same inode, known regular.
    let fd: OwnedFd = openat(
        CWD,
        format!("/proc/self/fd/{}", path.as_fd().as_raw_fd()),
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(read_err)?;
    let mut bytes = Vec::new();
    File::from(fd)
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| read_err(Errno::from_io_error(&e).unwrap_or(Errno::IO)))?;
    // It may have grown since fstat.
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(UserError::TooLarge(file));
    }
    Ok(Some(bytes))
}

/// Resolves `spec` in the container whose root is `root`: reads its passwd and group files
/// only when a name, or a uid's group, must be looked up.
pub fn resolve_in_container(spec: &UserSpec, root: BorrowedFd<'_>) -> Result<Identity, UserError> {
    if let (Who::Id(uid), Some(Who::Id(gid))) = (&spec.user, &spec.group) {
        return Ok(Identity {
            uid: *uid,
            gid: *gid,
            groups: vec![*gid],
        });
    }
    let passwd = read_container_file(root, PASSWD)?;
    let group = match &spec.group {
        Some(Who::Id(_)) => None,
        _ => read_container_file(root, GROUP)?,
    };
    resolve(spec, passwd.as_deref(), group.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD_TEXT: &[u8] = b"root:x:0:0:root:/root:/bin/sh\n\
        # a comment\n\
        \n\
        nginx:x:101:101:nginx:/nonexistent:/sbin/nologin\n\
        bob:x:1000:1000::/home/bob:/bin/sh\n\
        +nis::::::\n\
        evil:x:-1:0::/:/bin/sh\n\
        big:x:99999999999:0::/:/bin/sh\n\
        bob:x:1001:1001::/home/bob2:/bin/sh\n\
        short:x:7\n";
    const GROUP_TEXT: &[u8] = b"root:x:0:\n\
        nginx:x:101:\n\
        wheel:x:10:root,bob\n\
        docker:x:999: bob , alice\n\
        wheel2:x:10:bob\n\
        bad:x:abc:bob\n";

    fn spec(s: &str) -> UserSpec {
        UserSpec::parse(s).unwrap()
    }

    fn id(s: &str) -> Result<Identity, UserError> {
        resolve(&spec(s), Some(PASSWD_TEXT), Some(GROUP_TEXT))
    }

    fn ids(uid: u32, gid: u32, groups: &[u32]) -> Identity {
        Identity {
            uid,
            gid,
            groups: groups.to_vec(),
        }
    }

    #[test]
    fn spec_forms() {
        assert_eq!(
            spec("nginx"),
            UserSpec {
                user: Who::Name("nginx".into()),
                group: None
            }
        );
        assert_eq!(
            spec("101:web"),
            UserSpec {
                user: Who::Id(101),
                group: Some(Who::Name("web".into()))
            }
        );
        assert!(spec("1:2").is_numeric());
        assert!(!spec("1").is_numeric());
        assert_eq!(spec("bob:10").to_string(), "bob:10");
        for bad in [
            "",
            ":",
            "bob:",
            ":5",
            "4294967296",
            "2147483648",
            "1:99999999999",
        ] {
            assert!(UserSpec::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(spec("2147483647").user, Who::Id(MAX_ID));
    }

    #[test]
    fn docker_exec_rules() {
        // A name: its passwd uid and gid, and the groups listing it.
        assert_eq!(id("nginx").unwrap(), ids(101, 101, &[101]));
        assert_eq!(id("bob").unwrap(), ids(1000, 1000, &[10, 999, 1000]));
        // A uid with an entry gets that entry's gid and groups; without one, gid 0.
        assert_eq!(id("1000").unwrap(), ids(1000, 1000, &[10, 999, 1000]));
        assert_eq!(id("4242").unwrap(), ids(4242, 0, &[0]));
        // An explicit group replaces the gid and leaves no other supplementary group.
        assert_eq!(id("bob:docker").unwrap(), ids(1000, 999, &[999]));
        assert_eq!(id("bob:77").unwrap(), ids(1000, 77, &[77]));
        assert_eq!(id("4242:nginx").unwrap(), ids(4242, 101, &[101]));
        assert!(matches!(id("nobody"), Err(UserError::NoSuchUser(n)) if n == "nobody"));
        assert!(matches!(id("bob:staff"), Err(UserError::NoSuchGroup(n)) if n == "staff"));
        // Bad lines never match: not "evil" (uid -1), not "big", not a NIS line.
        assert!(id("evil").is_err() && id("big").is_err() && id("+nis").is_err());
        // No passwd file at all: numbers still work, names do not.
        assert_eq!(resolve(&spec("7"), None, None).unwrap(), ids(7, 0, &[0]));
        assert!(resolve(&spec("root"), None, None).is_err());
    }

    #[test]
    fn parsers_skip_what_they_cannot_read() {
        let users = parse_passwd(PASSWD_TEXT);
        let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["root", "nginx", "bob", "bob"]);
        let groups = parse_group(GROUP_TEXT);
        assert_eq!(groups.len(), 5);
        assert_eq!(groups[3].members, ["bob", "alice"]);
        assert!(parse_passwd(b"\xff\xfe:x:1:1::/:/\nok:x:2:2::/:/").len() == 2);
        assert!(parse_passwd(b"a:x:1:1\r\n")
            .first()
            .is_some_and(|e| e.gid == 1));
    }
}

/// The parsers against a model of the format: each generated line knows whether it is an
/// entry and which, independently of the parser's code; hostile lines (overflowing or signed
/// IDs, missing and extra fields, comments, NIS lines, CR, non-UTF-8 bytes) are mixed in.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    /// A name as the model sees it: no `:`, newline or leading `#`/`+`/`-`.
    fn name() -> impl Strategy<Value = String> {
        "[a-z_][a-z0-9_.-]{0,12}"
    }

    /// An ID field and the ID the model expects from it.
    fn id_field() -> impl Strategy<Value = (String, Option<u32>)> {
        prop_oneof![
            (0..=MAX_ID).prop_map(|id| (id.to_string(), Some(id))),
            ((MAX_ID as u64 + 1)..=u64::MAX).prop_map(|id| (id.to_string(), None)),
            Just(("-1".to_string(), None)),
            Just((String::new(), None)),
            Just((" 7".to_string(), None)),
            Just(("0x10".to_string(), None)),
            Just(("٣".to_string(), None)),
        ]
    }

    /// A passwd line and the entry the model expects from it.
    fn passwd_line() -> impl Strategy<Value = (Vec<u8>, Option<PasswdEntry>)> {
        prop_oneof![
            4 => (name(), id_field(), id_field(), "[^:\n]{0,8}", any::<bool>()).prop_map(
                |(name, (uid_f, uid), (gid_f, gid), rest, crlf)| {
                    let mut line = format!("{name}:x:{uid_f}:{gid_f}:{rest}:/home:/bin/sh");
                    if crlf {
                        line.push('\r');
                    }
                    let entry = uid.zip(gid).map(|(uid, gid)| PasswdEntry { name, uid, gid });
                    (line.into_bytes(), entry)
                }
            ),
            1 => (name(), 0..=MAX_ID).prop_map(|(name, id)| (
                format!("{name}:x:{id}").into_bytes(),
                None
            )),
            1 => (prop_oneof![Just('#'), Just('+'), Just('-')], name(), 0..=MAX_ID)
                .prop_map(|(c, name, id)| (format!("{c}{name}:x:{id}:{id}::/:/").into_bytes(), None)),
            1 => (0..=MAX_ID).prop_map(|id| (format!(":x:{id}:{id}::/:/").into_bytes(), None)),
            1 => proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..40)
                .prop_map(|bytes| {
                    // Arbitrary bytes: an entry only if the model would read one out of them.
                    let expected = model_passwd(&bytes);
                    (bytes, expected)
                }),
        ]
    }

    /// The model's reading of one line, used only for arbitrary bytes: the split is the same
    /// by definition of the format; the checks are written out again, not shared.
    fn model_passwd(bytes: &[u8]) -> Option<PasswdEntry> {
        let text = String::from_utf8_lossy(bytes);
        let text = text.strip_suffix('\r').unwrap_or(&text);
        if text.trim().is_empty() || matches!(text.chars().next(), Some('#' | '+' | '-')) {
            return None;
        }
        let fields: Vec<&str> = text.split(':').collect();
        if fields.len() < 4 || fields[0].is_empty() {
            return None;
        }
        let num = |f: &str| {
            (!f.is_empty() && f.chars().all(|c| c.is_ascii_digit()))
                .then(|| f.parse::<u64>().ok())
                .flatten()
                .filter(|&n| n <= u64::from(MAX_ID))
                .map(|n| n as u32)
        };
        Some(PasswdEntry {
            name: fields[0].to_string(),
            uid: num(fields[2])?,
            gid: num(fields[3])?,
        })
    }

    proptest! {
        #[test]
        fn passwd_parser_matches_the_model(lines in proptest::collection::vec(passwd_line(), 0..30)) {
            let text = lines.iter().map(|(l, _)| l.clone()).collect::<Vec<_>>().join(&b'\n');
            let expected: Vec<PasswdEntry> = lines.into_iter().filter_map(|(_, e)| e).collect();
            prop_assert_eq!(parse_passwd(&text), expected);
        }

        #[test]
        fn group_parser_reads_members_and_never_panics(
            groups in proptest::collection::vec((name(), id_field(), proptest::collection::vec(name(), 0..5)), 0..20),
            noise in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut text = Vec::new();
            for (name, (gid_f, _), members) in &groups {
                text.extend(format!("{name}:x:{gid_f}:{}\n", members.join(",")).bytes());
            }
            let parsed = parse_group(&text);
            let expected: Vec<(String, u32, Vec<String>)> = groups
                .iter()
                .filter_map(|(n, (_, gid), m)| Some((n.clone(), (*gid)?, m.clone())))
                .collect();
            let got: Vec<(String, u32, Vec<String>)> =
                parsed.into_iter().map(|g| (g.name, g.gid, g.members)).collect();
            prop_assert_eq!(got, expected);
            // Anything at all: no panic, and no entry with an out-of-range ID.
            text.extend(&noise);
            prop_assert!(parse_group(&text).iter().all(|g| g.gid <= MAX_ID));
            prop_assert!(parse_passwd(&noise).iter().all(|p| p.uid <= MAX_ID && p.gid <= MAX_ID));
        }

        #[test]
        fn a_name_resolves_to_its_first_entry(
            entries in proptest::collection::vec((name(), 0..=MAX_ID, 0..=MAX_ID), 1..10),
            pick in any::<prop::sample::Index>(),
        ) {
            let text: String = entries
                .iter()
                .map(|(n, u, g)| format!("{n}:x:{u}:{g}::/:/bin/sh\n"))
                .collect();
            let (name, _, _) = pick.get(&entries);
            let first = entries.iter().find(|(n, _, _)| n == name).unwrap();
            let got = resolve(&UserSpec::parse(name).unwrap(), Some(text.as_bytes()), None);
            // A name of digits is a uid, not a name (as docker exec reads it).
            if !name.bytes().all(|b| b.is_ascii_digit()) {
                let got = got.unwrap();
                prop_assert_eq!((got.uid, got.gid), (first.1, first.2));
            }
        }
    }
}
