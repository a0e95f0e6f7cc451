//! Where the nix store for a build lives, per store mode.
//!
//! Both modes use a store under the user's cache directory, so no step needs root or a
//! system-wide nix installation: nix keeps the real files under `root` and builds inside a
//! chroot (a user namespace when unprivileged) in which `root/<store dir>` appears at the
//! logical store dir. The logical dir is what ends up in the files:
//! - relocated: `/nix/store`, so the public binary cache can serve every path;
//! - native: `/dev/crashcart/store`, the path the image is mounted at, so nothing needs
//!   rewriting (and everything is built from source).

use std::path::{Path, PathBuf};

use super::{NixError, StoreMode};

/// The logical store dir of relocated builds.
pub const NIX_STORE_DIR: &str = "/nix/store";
/// The logical store dir of native builds: the image's `store/` as crashcart mounts it.
pub const NATIVE_STORE_DIR: &str = crashcart_layout::IMAGE_STORE;

/// A store for one mode: nix's store URL and where its files really are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreLocation {
    /// The store's root: files of logical path `P` live at `root` + `P`.
    pub root: PathBuf,
    /// The logical store dir.
    pub store_dir: &'static str,
}

impl StoreLocation {
    /// The store for `mode` under `cache_root`; each mode has its own database.
    pub fn new(cache_root: &Path, mode: StoreMode) -> StoreLocation {
        match mode {
            StoreMode::Relocated => StoreLocation {
                root: cache_root.join("relocated"),
                store_dir: NIX_STORE_DIR,
            },
            StoreMode::Native => StoreLocation {
                root: cache_root.join("native"),
                store_dir: NATIVE_STORE_DIR,
            },
        }
    }

    /// Creates the root directory if needed.
    pub fn create(&self) -> Result<(), NixError> {
        std::fs::create_dir_all(&self.root).map_err(|source| NixError::StoreDir {
            path: self.root.clone(),
            source,
        })
    }

    /// Where the files of the logical store path `path` are.
    pub fn real_path(&self, path: &Path) -> PathBuf {
        self.root.join(path.strip_prefix("/").unwrap_or(path))
    }

    /// The `--store` URL of this store for nix on the host.
    pub fn url(&self) -> String {
        let root = percent_encode(&self.root.to_string_lossy());
        if self.store_dir == NIX_STORE_DIR {
            format!("local?root={root}")
        } else {
            // nix puts the real files at `root/nix/store` whatever the store dir; `real`
            // keeps them at `root` + logical path, as the image writer reads them.
            let real = percent_encode(&self.real_path(Path::new(self.store_dir)).to_string_lossy());
            format!(
                "local?root={root}&store={}&real={real}",
                percent_encode(self.store_dir)
            )
        }
    }
}

/// The default cache root: `$XDG_CACHE_HOME/crashcart/nix`, else `~/.cache/crashcart/nix`.
pub fn default_cache_root() -> Result<PathBuf, NixError> {
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(cache) = absolute("XDG_CACHE_HOME") {
        return Ok(cache.join("crashcart/nix"));
    }
    absolute("HOME")
        .map(|home| home.join(".cache/crashcart/nix"))
        .ok_or(NixError::NoCacheDir)
}

/// Escapes what would end a store URL parameter (`&`, `?`, `%`, spaces); nix decodes it.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"/-_.~+".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_per_mode() {
        let cache = Path::new("/home/u/.cache/crashcart/nix");
        assert_eq!(
            StoreLocation::new(cache, StoreMode::Relocated).url(),
            "local?root=/home/u/.cache/crashcart/nix/relocated"
        );
        assert_eq!(
            StoreLocation::new(cache, StoreMode::Native).url(),
            "local?root=/home/u/.cache/crashcart/nix/native&store=/dev/crashcart/store\
             &real=/home/u/.cache/crashcart/nix/native/dev/crashcart/store"
        );
    }

    #[test]
    fn separators_in_the_cache_path_are_escaped() {
        let location = StoreLocation::new(Path::new("/tmp/a b&c?d%"), StoreMode::Relocated);
        assert_eq!(location.url(), "local?root=/tmp/a%20b%26c%3Fd%25/relocated");
    }
}
