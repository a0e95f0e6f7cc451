//! crashcart-layout: the image contract that `crashcart-imgbuild` writes and `crashcart` reads.
//!
//! A tool image is an ext3/ext4 filesystem that crashcart mounts at [`IMAGE_ROOT`] inside the
//! container. Both programs spell its paths, its manifest and its store relocation through this
//! crate, so the writer and the reader cannot drift apart: a path or field changed here changes
//! on both sides, or fails to compile on one. The crate holds no I/O: how the manifest is read
//! (through the mount, never leaving it) is crashcart's business, how it is written
//! (byte for byte reproducible) the builder's.
//!
//! Paths without a leading `/` are relative to the image's root; those with one are where the
//! image's files appear in the container.

#![deny(missing_docs)]

mod manifest;

pub use manifest::{
    alias_name, exportable_env_name, Fs, Manifest, Package, Program, Relocation, RelocationError,
    SessionManifest, DIGEST_SCHEME, FORMAT,
};

/// The image root in the container, as a literal for `concat!`.
macro_rules! image_root {
    () => {
        "/dev/crashcart"
    };
}

/// The name of the image's mount point under the container's `/dev`.
pub const MOUNT_NAME: &str = "crashcart";
/// Where the image's root is in the container.
pub const IMAGE_ROOT: &str = image_root!();
/// The image's programs, first on the session's `PATH`.
pub const BIN_DIR: &str = "bin";
/// The image's system programs, before [`BIN_DIR`] on the session's `PATH`.
pub const SBIN_DIR: &str = "sbin";
/// Store paths of a nix closure, `store/<hash>-<name>`.
pub const STORE_DIR: &str = "store";
/// The symlink to the profile's store path; `bin` and `sbin` point into it in nix images.
pub const PROFILE_LINK: &str = "profile";
/// The rc file the session's shell reads (`ENV`).
pub const RC_PATH: &str = ".crashcartrc";
/// The directory of the image's own metadata.
pub const META_DIR: &str = ".crashcart";
/// The manifest.
pub const MANIFEST_PATH: &str = ".crashcart/manifest.json";
/// Shell snippets the rc file sources, `*.sh`.
pub const RC_D_DIR: &str = ".crashcart/rc.d";
/// [`BIN_DIR`] in the container.
pub const IMAGE_BIN: &str = concat!(image_root!(), "/bin");
/// [`RC_PATH`] in the container: what the session's `ENV` names.
pub const IMAGE_RC: &str = concat!(image_root!(), "/.crashcartrc");
/// The image's directories on the session's `PATH`, in order.
pub const IMAGE_PATH: &str = concat!(image_root!(), "/bin:", image_root!(), "/sbin");
/// The readline configuration the session's `INPUTRC` names (an image may ship one).
pub const IMAGE_INPUTRC: &str = concat!(image_root!(), "/.crashcart/inputrc");
/// [`STORE_DIR`] in the container: what a store alias points at.
pub const IMAGE_STORE: &str = concat!(image_root!(), "/store");
/// The container files glibc's loaders (nixpkgs' too) read before running any program: the
/// builder cuts their names out of the image's loaders and lists them in the manifest's
/// `ignores`; crashcart covers those an image does not ignore.
pub const PRELOAD_FILES: [&str; 2] = ["/etc/ld.so.preload", "/etc/ld-nix.so.preload"];
/// The store alias of relocated images: one name under `/dev`, as long as `/nix/store`.
pub const DEFAULT_STORE_ALIAS: &str = "/dev/.cart";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_paths_are_under_the_root() {
        assert_eq!(IMAGE_ROOT, format!("/dev/{MOUNT_NAME}"));
        assert_eq!(
            IMAGE_PATH,
            format!("{IMAGE_ROOT}/{BIN_DIR}:{IMAGE_ROOT}/{SBIN_DIR}")
        );
        assert_eq!(IMAGE_STORE, format!("{IMAGE_ROOT}/{STORE_DIR}"));
        assert!(IMAGE_INPUTRC.starts_with(&format!("{IMAGE_ROOT}/{META_DIR}/")));
        assert!(MANIFEST_PATH.starts_with(META_DIR) && RC_D_DIR.starts_with(META_DIR));
        assert_eq!(DEFAULT_STORE_ALIAS.len(), "/nix/store".len());
        assert!(alias_name(DEFAULT_STORE_ALIAS).is_ok());
    }
}
