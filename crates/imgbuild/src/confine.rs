//! The image's programs never read container-controlled configuration that makes them load or
//! run code: the paths of such files are cut out of every ELF file while it is written.
//!
//! crashcart runs the image's tools inside the container, where `/etc` belongs to the
//! container (THREAT-MODEL.md, invariant 2). Covering those files for the length of a session
//! protects only that session; after `crashcart -m`, the container's own processes run the
//! image's tools with no cover at all. So the builder takes the names away instead: a tool
//! whose compiled-in path is gone cannot open the file, whoever starts it.
//!
//! | whole C string | read by | what it would load or run |
//! | --- | --- | --- |
//! | `/etc/ld.so.preload` | glibc's loader | any library, into every program |
//! | `/etc/ld-nix.so.preload` | nixpkgs' loader (its name for the same file) | same |
//! | `/etc/ld.so.cache` | the loader, for names no `RPATH` entry resolves | a container library |
//! | `/etc/bash.bashrc`, `/etc/bashrc` | bash (Debian's, nixpkgs'), interactive shells | commands |
//! | `/etc/inputrc` | readline (in bash or linked) | macros that type commands |
//! | `/etc/nsswitch.conf` | glibc's NSS | a `libnss_*` module, or a path with `/` |
//! | `/etc/profile`, `/etc/bash.bash_logout` | bash login shells | commands |
//! | `/etc/gdb/gdbinit`, `/etc/gdb/gdbinit.d` | gdb (Debian's system init file and dir) | gdb and Python commands, `shell` |
//! | `/etc/vim/vimrc`, `/etc/vim/gvimrc` | vim (Debian's system vimrc) | Ex commands, `:!` |
//!
//! Each is **neutralised**: its first byte becomes NUL, so the program passes `""` to
//! `open`/`access`, which fails with `ENOENT`. The upstream code paths treat that exactly like
//! a missing file, with no fallback to another container path:
//!
//! - glibc `elf/rtld.c`: `__access (preload_file, R_OK) == 0` guards the whole preload step.
//! - glibc `elf/dl-cache.c`: `_dl_sysdep_read_whole_file (LD_SO_CACHE, ...)` returning
//!   `MAP_FAILED` marks the cache absent for the process; lookups then fall through to the
//!   default directories, which `DF_1_NODEFLIB` (set on every `--host` object) skips too, and
//!   the image's libraries are found through `DT_RPATH` before the cache is ever asked.
//! - bash `shell.c`/`builtins/evalfile.c`: `maybe_execute_file (SYS_BASHRC, 1)` evaluates with
//!   `FEVAL_ENOENTOK`: a missing file is silently skipped.
//! - readline `bind.c`: `rl_read_init_file` tries `$INPUTRC`, else `~/.inputrc`, then
//!   `SYS_INPUTRC` last; a failed open returns `errno`, nothing further is tried.
//! - vim `main.c`: `do_source (SYS_VIMRC_FILE, ...)` ignores a file it cannot read.
//! - glibc >= 2.34 `nss/nss_database.c`: `fopen (_PATH_NSSWITCH_CONF, "rce")` failing with
//!   `ENOENT` applies the built-in defaults (`files`, `dns` for hosts), both inside libc since
//!   2.34: no module is loaded.
//!
//! glibc's iconv loads modules from a **compiled-in gconv directory** (`GCONV_PATH` only adds
//! directories in front of it, `iconv/gconv_conf.c`), and first from the cache file in it,
//! whose entries are absolute paths. A container can add a cheaper module for any conversion
//! there, and a locale's charset is converted through it even without `iconv_open`. The
//! directory cannot be emptied (`assert (default_gconv_path[0] == '/')`), so a
//! [`GconvRedirect`] rewrites it, NUL padded, to a directory of the image, and neutralises the
//! cache path below it (the host's cache names host paths, which are container paths in the
//! container). Only `--host` bundles need it: a nix glibc's directory is a store path, in the
//! image's `store/` (native) or behind the store alias (relocated), like its loader.
//!
//! `--host` programs that run a **helper by absolute path** or cannot start without a
//! **configuration file** (man-db's `/usr/libexec/man-db/zsoelim` and `manconv`, and
//! `/etc/manpath.config`, whose `DEFINE` lines name the programs man runs) have those paths
//! rewritten to the image's copies (`/dev/crashcart/bin/zsoelim`, `/dev/crashcart/.man`),
//! NUL padded like the gconv directory: the builder finds them (`host::stage`), this module
//! rewrites them.
//!
//! **Which files.** Every regular file that starts with the ELF magic, from every input: the
//! strings only mean these paths, so cutting them out of an unexpected program (a statically
//! linked readline, a Go resolver reading `nsswitch.conf`) has the same, intended effect, while
//! a list of "the loader, libc, bash, readline" would miss the copies other programs link in.
//! Only whole C strings are touched (a NUL before, a NUL after): a longer string that merely
//! ends or starts with one of the paths is other data. Lengths never change, and the digest
//! hashes the rewritten bytes.
//!
//! What this does not reach: paths a program assembles at run time, a path stored as the
//! suffix of a longer string (linkers may merge strings that way), scripts, and configuration
//! chosen through the environment (`LD_PRELOAD`, `GCONV_PATH`, `INPUTRC`): the session
//! filters that.

use memchr::memmem::Finder;

/// Container paths whose names are cut out of every ELF file of the image.
pub const NEUTRALISED_PATHS: &[&str] = &[
    "/etc/ld.so.preload",
    "/etc/ld-nix.so.preload",
    "/etc/ld.so.cache",
    "/etc/bash.bashrc",
    "/etc/bashrc",
    "/etc/inputrc",
    "/etc/nsswitch.conf",
    "/etc/profile",
    "/etc/bash.bash_logout",
    "/etc/gdb/gdbinit",
    "/etc/gdb/gdbinit.d",
    "/etc/vim/vimrc",
    "/etc/vim/gvimrc",
];

/// The first bytes of every ELF file.
pub const ELF_MAGIC: &[u8; 4] = b"\x7fELF";

/// The gconv cache glibc reads from its compiled-in directory (`GCONV_MODULES_CACHE`).
const GCONV_CACHE: &str = "gconv-modules.cache";

/// Why a gconv redirect cannot be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfineError {
    /// The image's directory does not fit in the bytes of the compiled-in one.
    #[error("gconv directory {to:?} is longer than the compiled-in {from:?}")]
    TooLong {
        /// The compiled-in directory.
        from: String,
        /// The image's directory.
        to: String,
    },
}

/// glibc's compiled-in gconv directory `from`, to be read as `to` (a directory of the image,
/// no longer than `from`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GconvRedirect {
    /// The directory compiled into libc, e.g. `/usr/lib/x86_64-linux-gnu/gconv`.
    pub from: String,
    /// Where the image's programs look instead, e.g. `/dev/crashcart/lib/gconv`.
    pub to: String,
}

impl GconvRedirect {
    /// Checks that `to` fits in `from`.
    pub fn new(from: &str, to: &str) -> Result<GconvRedirect, ConfineError> {
        if to.len() > from.len() {
            return Err(ConfineError::TooLong {
                from: from.to_string(),
                to: to.to_string(),
            });
        }
        Ok(GconvRedirect {
            from: from.to_string(),
            to: to.to_string(),
        })
    }
}

/// One whole C string replaced by bytes of the same length.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    from: Vec<u8>,
    to: Vec<u8>,
}

impl Rule {
    /// The string made empty: its first byte becomes NUL.
    fn neutralise(path: &str) -> Rule {
        let mut to = path.as_bytes().to_vec();
        to[0] = 0;
        Rule {
            from: path.as_bytes().to_vec(),
            to,
        }
    }

    /// The string replaced by a shorter or equal one, NUL padded.
    fn replace(from: &str, to: &str) -> Rule {
        let mut bytes = to.as_bytes().to_vec();
        bytes.resize(from.len(), 0);
        Rule {
            from: from.as_bytes().to_vec(),
            to: bytes,
        }
    }
}

/// The strings cut out of the image's ELF files, and what the manifest says about them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confinement {
    rules: Vec<Rule>,
    ignores: Vec<String>,
}

impl Confinement {
    /// [`NEUTRALISED_PATHS`], plus the gconv directory when a `--host` libc has one, plus
    /// `redirects` (`(container path, image path)`, the image's no longer): compiled-in
    /// helper programs and configuration files of `--host` programs, read from the image.
    pub fn new(gconv: Option<&GconvRedirect>, redirects: &[(String, String)]) -> Confinement {
        let mut rules: Vec<Rule> = NEUTRALISED_PATHS
            .iter()
            .map(|p| Rule::neutralise(p))
            .collect();
        let mut ignores: Vec<String> = NEUTRALISED_PATHS.iter().map(|p| p.to_string()).collect();
        if let Some(g) = gconv {
            rules.push(Rule::replace(&g.from, &g.to));
            rules.push(Rule::neutralise(&format!("{}/{GCONV_CACHE}", g.from)));
            ignores.push(g.from.clone());
        }
        for (from, to) in redirects.iter().filter(|(f, t)| t.len() <= f.len()) {
            rules.push(Rule::replace(from, to));
            ignores.push(from.clone());
        }
        Confinement { rules, ignores }
    }

    /// The container paths the image's programs no longer read, for the manifest.
    pub fn ignores(&self) -> &[String] {
        &self.ignores
    }

    /// A streaming rewriter for one file at a time.
    pub fn rewriter(&self) -> StringRewriter<'_> {
        StringRewriter {
            rules: self
                .rules
                .iter()
                .map(|r| (Finder::new(&r.from), r.to.as_slice()))
                .collect(),
            hold: self.rules.iter().map(|r| r.from.len()).max().unwrap_or(0),
        }
    }
}

/// What follows the bytes handed to [`StringRewriter::rewrite`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// More of the file, in a later call.
    Pending,
    /// A NUL byte that is not in the buffer (a hole of a sparse file).
    Nul,
    /// The end of the file.
    End,
}

/// Rewrites whole C strings in a file's chunks.
///
/// Like the relocation [`crate::relocate::Rewriter`], it holds back the bytes it cannot decide
/// yet: a string is whole only when the byte after it is NUL, so a match that reaches the end
/// of the buffer waits for the next chunk.
pub struct StringRewriter<'a> {
    rules: Vec<(Finder<'a>, &'a [u8])>,
    /// The longest string: matches starting in the last `hold` bytes may be undecided.
    hold: usize,
}

impl StringRewriter<'_> {
    /// Rewrites `buf` in place; `after_nul` tells whether the byte before `buf` (the last byte
    /// returned final by the previous call, or a hole) is NUL. Returns how many leading bytes
    /// are final; the rest must be handed in again at the front of the next call. Rewriting
    /// is idempotent: bytes handed in twice are not changed twice.
    pub fn rewrite(&self, buf: &mut [u8], after_nul: bool, next: Next) -> usize {
        let n = buf.len();
        for (finder, to) in &self.rules {
            let len = to.len();
            let mut pos = 0;
            while let Some(i) = finder.find(&buf[pos..]) {
                let at = pos + i;
                let starts_whole = if at == 0 { after_nul } else { buf[at - 1] == 0 };
                let end = at + len;
                let ends_whole = match buf.get(end) {
                    Some(&b) => b == 0,
                    None => next == Next::Nul,
                };
                if starts_whole && ends_whole {
                    buf[at..end].copy_from_slice(to);
                    pos = end;
                } else {
                    pos = at + 1;
                }
            }
        }
        match next {
            Next::Pending => n.saturating_sub(self.hold),
            Next::Nul | Next::End => n,
        }
    }
}

/// glibc's compiled-in gconv directory, found in the bytes of its `libc.so.6`: the whole C
/// string that is an absolute path ending in `/gconv` and also starts the cache path
/// `<dir>/gconv-modules.cache`. `None` when there is not exactly one.
pub fn compiled_gconv_dir(libc: &[u8]) -> Option<String> {
    let mut found: Vec<&[u8]> = libc
        .split(|&b| b == 0)
        .filter(|s| s.starts_with(b"/") && s.ends_with(b"/gconv"))
        .filter(|dir| {
            let cache = [*dir, b"/", GCONV_CACHE.as_bytes(), b"\0"].concat();
            memchr::memmem::find(libc, &cache).is_some()
        })
        .collect();
    found.sort();
    found.dedup();
    match found.as_slice() {
        [one] => std::str::from_utf8(one).ok().map(str::to_string),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIR: &str = "/usr/lib/x86_64-linux-gnu/gconv";

    fn elf(body: &[u8]) -> Vec<u8> {
        [ELF_MAGIC.as_slice(), b"\x02\x01\x01\0", body].concat()
    }

    /// Feeds `input` in chunks of `size` the way the writer does: only what a call returns
    /// final is drained, the rest comes back at the front of the next call.
    fn stream(c: &Confinement, input: &[u8], size: usize) -> Vec<u8> {
        let rw = c.rewriter();
        let mut out: Vec<u8> = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut chunks = input.chunks(size).peekable();
        while let Some(chunk) = chunks.next() {
            buf.extend_from_slice(chunk);
            let next = if chunks.peek().is_some() {
                Next::Pending
            } else {
                Next::End
            };
            let after_nul = out.last() == Some(&0);
            let done = rw.rewrite(&mut buf, after_nul, next);
            out.extend_from_slice(&buf[..done]);
            buf.drain(..done);
        }
        assert!(buf.is_empty());
        out
    }

    fn neutralised(path: &str) -> Vec<u8> {
        let mut v = path.as_bytes().to_vec();
        v[0] = 0;
        v
    }

    #[test]
    fn whole_strings_are_emptied_at_every_chunk_boundary() {
        let c = Confinement::new(None, &[]);
        let mut input = b"\0".to_vec();
        let mut want = b"\0".to_vec();
        for p in NEUTRALISED_PATHS {
            input.extend_from_slice(p.as_bytes());
            input.push(0);
            want.extend_from_slice(&neutralised(p));
            want.push(0);
        }
        let (input, want) = (elf(&input), elf(&want));
        for size in 1..=input.len() {
            assert_eq!(stream(&c, &input, size), want, "chunk size {size}");
        }
    }

    #[test]
    fn suffixes_prefixes_and_unterminated_strings_stay() {
        let c = Confinement::new(None, &[]);
        let input = elf(b"\0x/etc/inputrc\0\
              \0/etc/inputrc.d\0\
              \0/etc/bash.bashrc.local\0\
              --inhibit-cache Do not use /etc/ld.so.cache\n\0\
              \0/etc/nsswitch.co<\0\
              \0/etc/ld.so.preload");
        for size in 1..=input.len() {
            assert_eq!(stream(&c, &input, size), input, "chunk size {size}");
        }
    }

    #[test]
    fn a_string_before_a_hole_or_after_one_counts_as_whole() {
        let c = Confinement::new(None, &[]);
        let rw = c.rewriter();
        let mut buf = b"/etc/inputrc".to_vec();
        assert_eq!(rw.rewrite(&mut buf, true, Next::Nul), buf.len());
        assert_eq!(buf, neutralised("/etc/inputrc"));
        let mut buf = b"/etc/inputrc".to_vec();
        rw.rewrite(&mut buf, true, Next::End);
        assert_eq!(buf, b"/etc/inputrc", "no NUL after the end of the file");
        let mut buf = b"/etc/inputrc\0".to_vec();
        rw.rewrite(&mut buf, false, Next::End);
        assert_eq!(buf, b"/etc/inputrc\0", "the byte before was not NUL");
    }

    #[test]
    fn gconv_directory_is_redirected_and_its_cache_emptied() {
        let g = GconvRedirect::new(DIR, "/dev/crashcart/lib/gconv").unwrap();
        let c = Confinement::new(Some(&g), &[]);
        let cache = format!("{DIR}/{GCONV_CACHE}");
        let input = elf(format!("\0{DIR}\0gconv-modules\0{cache}\0{DIR}/X\0").as_bytes());
        let mut want = b"\0".to_vec();
        want.extend_from_slice(b"/dev/crashcart/lib/gconv");
        want.resize(1 + DIR.len(), 0);
        want.extend_from_slice(b"\0gconv-modules\0");
        want.extend_from_slice(&neutralised(&cache));
        want.extend_from_slice(format!("\0{DIR}/X\0").as_bytes());
        let want = elf(&want);
        for size in 1..=input.len() {
            assert_eq!(stream(&c, &input, size), want, "chunk size {size}");
        }
        assert_eq!(c.ignores().last().map(String::as_str), Some(DIR));
        assert!(GconvRedirect::new("/usr/lib64/gconv", "/dev/crashcart/lib/gconv").is_err());
    }

    #[test]
    fn helpers_and_configuration_are_redirected_into_the_image() {
        let redirects = [
            (
                "/usr/libexec/man-db/zsoelim".to_string(),
                "/dev/crashcart/bin/zsoelim".to_string(),
            ),
            (
                "/etc/manpath.config".to_string(),
                "/dev/crashcart/.man".to_string(),
            ),
            // Longer than the compiled-in path: cannot be made, left alone.
            ("/etc/x".to_string(), "/dev/crashcart/x".to_string()),
        ];
        let c = Confinement::new(None, &redirects);
        let input = elf(b"\0/usr/libexec/man-db/zsoelim\0/etc/manpath.config\0/etc/x\0");
        let mut want = b"\0/dev/crashcart/bin/zsoelim\0\0".to_vec();
        want.extend_from_slice(b"/dev/crashcart/.man\0/etc/x\0");
        let want = elf(&want);
        for size in 1..=input.len() {
            assert_eq!(stream(&c, &input, size), want, "chunk size {size}");
        }
        let ignores = c.ignores();
        assert!(ignores.iter().any(|p| p == "/etc/manpath.config"));
        assert!(!ignores.iter().any(|p| p == "/etc/x"));
    }

    #[test]
    fn rewriting_twice_changes_nothing_more() {
        let g = GconvRedirect::new(DIR, "/dev/crashcart/lib/gconv").unwrap();
        let c = Confinement::new(Some(&g), &[]);
        let rw = c.rewriter();
        let mut once = elf(format!("\0{DIR}\0/etc/ld.so.cache\0").as_bytes());
        rw.rewrite(&mut once, false, Next::End);
        let mut twice = once.clone();
        rw.rewrite(&mut twice, false, Next::End);
        assert_eq!(once, twice);
    }

    #[test]
    fn gconv_directory_is_found_by_its_cache_path() {
        let libc = format!("\0gconv\0{DIR}\0x\0{DIR}/{GCONV_CACHE}\0/other/gconv\0");
        assert_eq!(compiled_gconv_dir(libc.as_bytes()).as_deref(), Some(DIR));
        assert_eq!(compiled_gconv_dir(b"\0/usr/lib/gconv\0"), None);
    }

    #[test]
    fn preload_files_are_neutralised() {
        for file in crashcart_layout::PRELOAD_FILES {
            assert!(NEUTRALISED_PATHS.contains(&file), "{file}");
        }
    }
}
