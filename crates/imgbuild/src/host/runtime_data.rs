//! Data files the bundled tools read at run time, which an empty container does not have:
//! terminfo, glibc's dlopened NSS modules and gconv modules, CA certificates, vim's runtime,
//! manual pages and groff's data.
//!
//! Each comes with the variable that points the tools at the image's copy. Those variables
//! also reach the container's own programs started from the debug shell, so each is chosen
//! to be harmless there: `TERMINFO_DIRS` ends with an empty entry, which ncurses reads as
//! "then the system's own directories".

use std::path::{Path, PathBuf};

use crashcart_layout::IMAGE_ROOT;

use super::files::copy_file;
use super::HostError;
use crate::confine::GconvRedirect;

/// ncurses' compiled-in search list, most specific first: an entry found in an earlier
/// directory hides the same name in a later one.
const TERMINFO_SOURCES: &[&str] = &["/etc/terminfo", "/lib/terminfo", "/usr/share/terminfo"];

/// Libraries glibc dlopens by name, from its own directory: the NSS modules `passwd`,
/// `group` and `hosts` lookups use (glibc 2.34+ builds `files` and `dns` into libc and keeps
/// stubs; older ones need the real modules), and `libthread_db`, which gdb loads to see
/// threads.
const LIBC_DLOPENED: &[&str] = &[
    "libnss_files.so.2",
    "libnss_dns.so.2",
    "libnss_compat.so.2",
    "libthread_db.so.1",
];

/// Bundled libraries whose presence means TLS, and so a need for CA certificates.
const TLS_LIBRARY_PREFIXES: &[&str] = &["libssl.so", "libgnutls", "libcurl", "libnss3.so"];

/// Where distributions keep the concatenated CA bundle (Debian, then Fedora).
const CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

/// Copies the host's whole terminfo database (every entry of [`TERMINFO_SOURCES`], the first
/// of each name winning, as for ncurses) into `share/terminfo/`, so that any `TERM` a user
/// comes with is known. Entries that are relative symlinks (aliases) stay symlinks.
pub fn copy_terminfo(staging: &Path) -> Result<Vec<(String, String)>, HostError> {
    let dest_root = staging.join("share/terminfo");
    let mut copied = 0;
    for source in TERMINFO_SOURCES.iter().map(Path::new) {
        if source.is_dir() {
            copied += merge_tree(source, &dest_root)?;
        }
    }
    Ok(if copied == 0 {
        Vec::new()
    } else {
        vec![(
            "TERMINFO_DIRS".to_string(),
            format!("{IMAGE_ROOT}/share/terminfo:"),
        )]
    })
}

/// Copies the files and relative symlinks under `from` into `to`, skipping names `to`
/// already has; other symlinks are followed (dangling ones skipped). Returns how many
/// entries were placed.
fn merge_tree(from: &Path, to: &Path) -> Result<usize, HostError> {
    let mut placed = 0;
    for entry in walkdir::WalkDir::new(from).sort_by_file_name().min_depth(1) {
        let entry = entry.map_err(|e| HostError::Read {
            path: from.to_path_buf(),
            source: e.into(),
        })?;
        let Ok(relative) = entry.path().strip_prefix(from) else {
            continue;
        };
        let dest = to.join(relative);
        if entry.file_type().is_dir() || std::fs::symlink_metadata(&dest).is_ok() {
            continue;
        }
        if entry.file_type().is_symlink() {
            let target = std::fs::read_link(entry.path()).map_err(|source| HostError::Read {
                path: entry.path().to_path_buf(),
                source,
            })?;
            let inside = target.is_relative()
                && relative.parent().is_some_and(|dir| {
                    let depth = dir.components().count();
                    target
                        .components()
                        .filter(|c| matches!(c, std::path::Component::ParentDir))
                        .count()
                        <= depth
                });
            if inside && entry.path().exists() {
                super::files::symlink(&target.to_string_lossy(), &dest)?;
                placed += 1;
                continue;
            }
        }
        if entry.path().is_file() {
            copy_file(entry.path(), &dest, 0o644)?;
            placed += 1;
        }
    }
    Ok(placed)
}

/// The dlopened companions of `libc` that exist next to it on the host.
pub fn libc_dlopened(libc: &Path) -> Vec<(String, PathBuf)> {
    let Some(dir) = libc.parent() else {
        return Vec::new();
    };
    LIBC_DLOPENED
        .iter()
        .map(|name| (name.to_string(), dir.join(name)))
        .filter(|(_, path)| path.is_file())
        .collect()
}

/// Where [`copy_gconv`] puts glibc's gconv modules, as the container sees it.
pub fn image_gconv_dir() -> String {
    format!("{IMAGE_ROOT}/lib/gconv")
}

/// Copies glibc's gconv modules (next to `libc`) into `lib/gconv/`, for programs that call
/// `iconv_open`. Without them only the charsets built into libc convert.
///
/// The host-built `gconv-modules.cache` is left out: it names the modules by absolute host
/// paths, which are the container's paths in the container. glibc reads the `gconv-modules`
/// configuration instead, from the directory [`gconv_redirect`] compiles in, or, when libc
/// could not be redirected there, from `GCONV_PATH`. The modules carry `RUNPATH=$ORIGIN`, so
/// the helper libraries some of them need are found beside them.
pub fn copy_gconv(
    libc: &Path,
    staging: &Path,
    redirected: bool,
) -> Result<Vec<(String, String)>, HostError> {
    let Some(source) = libc
        .parent()
        .map(|d| d.join("gconv"))
        .filter(|d| d.is_dir())
    else {
        return Ok(Vec::new());
    };
    copy_tree_filtered(&source, &staging.join("lib/gconv"), &|name| {
        name != "gconv-modules.cache"
    })?;
    Ok(if redirected {
        Vec::new()
    } else {
        vec![("GCONV_PATH".to_string(), image_gconv_dir())]
    })
}

/// The rewrite that makes the bundled `libc` read gconv modules from the image instead of its
/// compiled-in directory, which is the container's ([`crate::confine`]).
///
/// The image's `lib/gconv` when its name fits in the compiled-in one (Debian's
/// `/usr/lib/x86_64-linux-gnu/gconv`), else the image's root, which holds no `gconv-modules`:
/// only the conversions built into libc then work, and none of the container's. `None` when
/// libc names no gconv directory, or one shorter than the image's root.
pub fn gconv_redirect(libc: &Path) -> Result<Option<GconvRedirect>, HostError> {
    let bytes = std::fs::read(libc).map_err(|source| HostError::Read {
        path: libc.to_path_buf(),
        source,
    })?;
    let Some(from) = crate::confine::compiled_gconv_dir(&bytes) else {
        return Ok(None);
    };
    Ok([image_gconv_dir(), IMAGE_ROOT.to_string()]
        .iter()
        .find_map(|to| GconvRedirect::new(&from, to).ok()))
}

/// Whether the bundle speaks TLS: a curl or wget, or a TLS library in the closure.
pub fn needs_ca_bundle<'a>(
    programs: impl IntoIterator<Item = &'a str>,
    mut libraries: impl Iterator<Item = &'a str>,
) -> bool {
    programs.into_iter().any(|p| p == "curl" || p == "wget")
        || libraries.any(|l| TLS_LIBRARY_PREFIXES.iter().any(|t| l.starts_with(t)))
}

/// Copies the host's CA bundle to `etc/ssl/certs/ca-certificates.crt` and names it in the
/// variables OpenSSL and curl read.
pub fn copy_ca_bundle(staging: &Path) -> Result<Vec<(String, String)>, HostError> {
    let Some(source) = CA_BUNDLES.iter().map(Path::new).find(|p| p.is_file()) else {
        return Ok(Vec::new());
    };
    let relative = "etc/ssl/certs/ca-certificates.crt";
    copy_file(source, &staging.join(relative), 0o644)?;
    let in_image = format!("{IMAGE_ROOT}/{relative}");
    Ok(vec![
        ("CURL_CA_BUNDLE".to_string(), in_image.clone()),
        ("SSL_CERT_FILE".to_string(), in_image),
    ])
}

/// Parts of a Python standard library no debugging session needs: tests, build
/// configuration (a 25 MB static library on Debian), GUI and packaging tools, and bytecode
/// caches compiled for the host's paths.
const PYTHON_STDLIB_SKIPPED: &[&str] = &[
    "__pycache__",
    "dist-packages",
    "distutils",
    "ensurepip",
    "idlelib",
    "lib2to3",
    "pydoc_data",
    "site-packages",
    "test",
    "tkinter",
    "turtledemo",
    "unittest",
];

/// Copies the pure-Python standard library for each bundled `libpythonX.Y` or `pythonX.Y`
/// (file names of libraries and programs) to `lib/pythonX.Y/`, where Python run from
/// `/dev/crashcart/bin`, or embedded in a program there, finds it.
///
/// gdb links libpython and, when Python cannot initialise, quits before doing anything. gdb
/// relocates Python's program name next to its own binary, so Python looks for its
/// `lib/pythonX.Y/os.py` landmark under `/dev/crashcart` by itself: no `PYTHONHOME`, which
/// would break the container's own Python. C extension modules (`lib-dynload`) are left out,
/// so their closures (OpenSSL, sqlite, ...) are too: the directory is created empty because
/// it is Python's landmark for `exec_prefix`. Imports of those modules fail in the session.
pub fn copy_python_stdlib<'a>(
    file_names: impl Iterator<Item = &'a str>,
    staging: &Path,
) -> Result<(), HostError> {
    let mut versions: Vec<&str> = file_names.filter_map(python_version).collect();
    versions.sort();
    versions.dedup();
    for version in versions {
        let subdir = format!("python{version}");
        let Some(source) = ["/usr/lib", "/usr/lib64", "/usr/local/lib"]
            .iter()
            .map(|dir| Path::new(dir).join(&subdir))
            .find(|dir| dir.join("os.py").is_file())
        else {
            continue;
        };
        let dest = staging.join("lib").join(&subdir);
        copy_tree_filtered(&source, &dest, &|name| {
            !PYTHON_STDLIB_SKIPPED.contains(&name)
                && name != "lib-dynload"
                && !name.starts_with("config-")
        })?;
        let dynload = dest.join("lib-dynload");
        std::fs::create_dir_all(&dynload).map_err(|source| HostError::Write {
            path: dynload,
            source,
        })?;
    }
    Ok(())
}

/// `X.Y` from `libpythonX.Y[m|d].so...` or `pythonX.Y`.
fn python_version(file_name: &str) -> Option<&str> {
    let version = match file_name.strip_prefix("libpython") {
        Some(rest) => rest.split_once(".so")?.0.trim_end_matches(['m', 'd']),
        None => file_name.strip_prefix("python")?,
    };
    let (major, minor) = version.split_once('.')?;
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (numeric(major) && numeric(minor)).then_some(version)
}

/// Copies libmagic's compiled database to `share/misc/magic.mgc` when libmagic is bundled
/// (`file` finds nothing without it), and names it in `MAGIC`.
pub fn copy_magic<'a>(
    mut libraries: impl Iterator<Item = &'a str>,
    staging: &Path,
) -> Result<Vec<(String, String)>, HostError> {
    let source = Path::new("/usr/share/misc/magic.mgc");
    if !libraries.any(|l| l.starts_with("libmagic.so")) || !source.is_file() {
        return Ok(Vec::new());
    }
    let relative = "share/misc/magic.mgc";
    copy_file(source, &staging.join(relative), 0o644)?;
    Ok(vec![(
        "MAGIC".to_string(),
        format!("{IMAGE_ROOT}/{relative}"),
    )])
}

/// Copies gdb's data directory (its Python package, syscall names for `catch syscall`) to
/// `share/gdb/`: gdb relocates its configured `PREFIX/share/gdb` relative to its binary.
pub fn copy_gdb_data(gdb: &Path, staging: &Path) -> Result<(), HostError> {
    let Some(source) = gdb
        .parent()
        .and_then(Path::parent)
        .map(|prefix| prefix.join("share/gdb"))
        .filter(|dir| dir.is_dir())
    else {
        return Ok(());
    };
    copy_tree(&source, &staging.join("share/gdb"))
}

/// Whether `program` (a canonical host path) is vim (`vim`, Debian's `vim.basic`,
/// `vim.tiny`, `vim.nox`...), which reads its runtime files from `$VIMRUNTIME`.
pub fn is_vim(program: &Path) -> bool {
    program
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n == "vim" || n.starts_with("vim."))
}

/// Where distributions keep vim's runtime directories (`vimNN`).
const VIM_ROOTS: &[&str] = &["/usr/share/vim", "/usr/local/share/vim"];

/// Copies vim's runtime directory (`defaults.vim`, syntax, filetype and indent plugins, help,
/// colours) to `share/vim/vimNN/`, and names it in `VIMRUNTIME` (and `$VIM` its parent), so
/// vim finds it in any container. The directory is the one whose name (`vim90`) the binary
/// was built for; failing that, the newest that has `defaults.vim`.
pub fn copy_vim_runtime(vim: &Path, staging: &Path) -> Result<Vec<(String, String)>, HostError> {
    let binary = std::fs::read(vim).map_err(|source| HostError::Read {
        path: vim.to_path_buf(),
        source,
    })?;
    let mut candidates: Vec<PathBuf> = VIM_ROOTS
        .iter()
        .filter_map(|root| std::fs::read_dir(root).ok())
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|dir| {
            dir.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("vim"))
                .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                && dir.join("defaults.vim").is_file()
        })
        .collect();
    candidates.sort();
    let built_for = candidates.iter().find(|dir| {
        let name = dir.file_name().unwrap_or_default().as_encoded_bytes();
        memchr::memmem::find(&binary, name).is_some()
    });
    let Some(source) = built_for.or(candidates.last()) else {
        return Ok(Vec::new());
    };
    let name = source.file_name().unwrap_or_default().to_string_lossy();
    copy_tree(source, &staging.join("share/vim").join(&*name))?;
    Ok(vec![
        ("VIM".to_string(), format!("{IMAGE_ROOT}/share/vim")),
        (
            "VIMRUNTIME".to_string(),
            format!("{IMAGE_ROOT}/share/vim/{name}"),
        ),
    ])
}

/// The topic of a manual page file: `ls` for `.../man1/ls.1.gz`.
pub fn man_page_topic(page: &Path) -> Option<&str> {
    let name = page.file_name()?.to_str()?;
    let name = name.strip_suffix(".gz").unwrap_or(name);
    let (topic, section) = name.rsplit_once('.')?;
    section
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_digit())
        .then_some(topic)
}

/// Copies manual pages (host paths under `/usr/share/man/manN/`) to `share/man/manN/` and
/// names that directory in `MANPATH`.
pub fn copy_man_pages(
    pages: &[PathBuf],
    staging: &Path,
) -> Result<Vec<(String, String)>, HostError> {
    let mut copied = 0;
    for page in pages {
        let (Some(name), Some(section)) =
            (page.file_name(), page.parent().and_then(Path::file_name))
        else {
            continue;
        };
        let dest = staging.join("share/man").join(section).join(name);
        // A page reached twice (two packages, or a program and its package) is one file.
        if page.is_file() && std::fs::symlink_metadata(&dest).is_err() {
            copy_file(page, &dest, 0o644)?;
            copied += 1;
        }
    }
    Ok(if copied == 0 {
        Vec::new()
    } else {
        vec![("MANPATH".to_string(), format!("{IMAGE_ROOT}/share/man"))]
    })
}

/// Copies groff's macro and font directories (which `man` formats pages with) to
/// `share/groff/`, and names them in `GROFF_TMAC_PATH` and `GROFF_FONT_PATH`, which groff
/// searches before its compiled-in directories.
pub fn copy_groff_data(groff: &Path, staging: &Path) -> Result<Vec<(String, String)>, HostError> {
    let Some(root) = groff
        .parent()
        .and_then(Path::parent)
        .map(|prefix| prefix.join("share/groff"))
    else {
        return Ok(Vec::new());
    };
    let current = ["current"]
        .iter()
        .map(|n| root.join(n))
        .find(|d| d.join("tmac").is_dir());
    let Some(current) = current else {
        return Ok(Vec::new());
    };
    let dest = staging.join("share/groff");
    copy_tree(&current.join("tmac"), &dest.join("tmac"))?;
    copy_tree(&current.join("font"), &dest.join("font"))?;
    if root.join("site-tmac").is_dir() {
        copy_tree(&root.join("site-tmac"), &dest.join("site-tmac"))?;
    }
    Ok(vec![
        (
            "GROFF_TMAC_PATH".to_string(),
            format!("{IMAGE_ROOT}/share/groff/site-tmac:{IMAGE_ROOT}/share/groff/tmac"),
        ),
        (
            "GROFF_FONT_PATH".to_string(),
            format!("{IMAGE_ROOT}/share/groff/font"),
        ),
    ])
}

/// Copies regular files and directories under `from` to `to`, in name order; symlinks are
/// followed (dangling ones skipped).
fn copy_tree(from: &Path, to: &Path) -> Result<(), HostError> {
    copy_tree_filtered(from, to, &|_| true)
}

/// [`copy_tree`], skipping entries (at any depth) whose name `keep` rejects.
fn copy_tree_filtered(
    from: &Path,
    to: &Path,
    keep: &dyn Fn(&str) -> bool,
) -> Result<(), HostError> {
    let read_err = |source| HostError::Read {
        path: from.to_path_buf(),
        source,
    };
    let mut entries = std::fs::read_dir(from)
        .and_then(|d| d.collect::<Result<Vec<_>, _>>())
        .map_err(read_err)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        if !keep(&entry.file_name().to_string_lossy()) {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_tree_filtered(&path, &to.join(entry.file_name()), keep)?;
        } else if path.is_file() {
            copy_file(&path, &to.join(entry.file_name()), 0o644)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_versions_from_file_names() {
        assert_eq!(python_version("libpython3.11.so.1.0"), Some("3.11"));
        assert_eq!(python_version("libpython3.7m.so.1.0"), Some("3.7"));
        assert_eq!(python_version("python3.12"), Some("3.12"));
        assert_eq!(python_version("python3"), None);
        assert_eq!(python_version("python3.11-config"), None);
        assert_eq!(python_version("libz.so.1"), None);
    }

    #[test]
    fn man_page_topics() {
        assert_eq!(man_page_topic(Path::new("/m/man1/ls.1.gz")), Some("ls"));
        assert_eq!(
            man_page_topic(Path::new("/m/man8/ip-link.8")),
            Some("ip-link")
        );
        assert_eq!(
            man_page_topic(Path::new("/m/man3/SSL.3ssl.gz")),
            Some("SSL")
        );
        assert_eq!(man_page_topic(Path::new("/m/man1/README")), None);
    }

    #[test]
    fn vim_is_recognised_by_its_file_name() {
        assert!(is_vim(Path::new("/usr/bin/vim.basic")));
        assert!(is_vim(Path::new("/usr/bin/vim")));
        assert!(!is_vim(Path::new("/usr/bin/vimdiff")));
    }

    #[test]
    fn tls_is_detected_from_programs_or_libraries() {
        assert!(needs_ca_bundle(["curl"], std::iter::empty()));
        assert!(needs_ca_bundle(["gdb"], ["libgnutls.so.30"].into_iter()));
        assert!(needs_ca_bundle(["x"], ["libssl.so.3"].into_iter()));
        assert!(!needs_ca_bundle(["bash"], ["libtinfo.so.6"].into_iter()));
    }
}
