//! Command-line flags of `crashcart-imgbuild`.

use std::path::PathBuf;

use crashcart_layout::Relocation;

use crate::ext2::FsKind;
use crate::host::HostArgs;
use crate::nix::NixArgs;

/// `--fs`: the flag's spelling of [`FsKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FsType {
    /// Journal and block-mapped files.
    Ext3,
    /// ext3 plus extent-mapped files.
    Ext4,
}

impl From<FsType> for FsKind {
    fn from(fs: FsType) -> FsKind {
        match fs {
            FsType::Ext3 => FsKind::Ext3,
            FsType::Ext4 => FsKind::Ext4,
        }
    }
}

/// Build crashcart's tool image (an ext3 or ext4 filesystem) from directories, host programs
/// (--host), nix packages (--packages) or a closure, and a tar stream, without root and
/// reproducibly.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "crashcart-imgbuild", version, long_about = None)]
#[command(
    after_help = "Exit status: 0 image written, 2 usage, 3 bad input (among it a \
    --host program or --host-package package this host does not have), 4 image or disk too \
    small, 5 cannot write the output, 6 --host or --packages could not bundle or build what \
    exists (patchelf, nix), 1 anything else. SOURCE_DATE_EPOCH sets every timestamp (default 0; at most 2147483647, \
    2038-01-19, with --fs ext3, 15032385535, 2446-05-10, with ext4; later is a usage error)."
)]
pub struct Cli {
    /// Copy the tree under DIR into the image root (DIR/bin/x becomes /dev/crashcart/bin/x).
    /// Repeatable; two dirs providing the same file is an error.
    #[arg(long = "dir", value_name = "DIR")]
    pub dirs: Vec<PathBuf>,

    /// Nix store paths, one per line as `nix-store -qR` prints them (`-` reads stdin).
    #[arg(long, value_name = "FILE")]
    pub closure: Option<PathBuf>,

    /// A tar stream (plain or gzip; `-` reads stdin) of store paths or of any tree, written
    /// into the image as it streams.
    #[arg(long, value_name = "FILE")]
    pub tar: Option<PathBuf>,

    /// The store path whose bin/ and sbin/ become the image's (`profile`, `bin`, `sbin` links).
    #[arg(long, value_name = "STOREPATH")]
    pub profile: Option<PathBuf>,

    /// Read closure paths from DIR + path (a store that lives elsewhere, e.g. a chroot store).
    #[arg(long, value_name = "DIR")]
    pub store_root: Option<PathBuf>,

    /// Replace FROM with the equal-length TO in file contents and symlink targets of closure
    /// and tar inputs; TO is recorded as the image's store alias.
    #[arg(long, value_name = "FROM=TO")]
    pub relocate: Option<Relocation>,

    /// The image to write (replaced only by a complete new image).
    #[arg(short = 'o', long = "output", value_name = "IMAGE")]
    pub output: PathBuf,

    /// Image size (e.g. 64M, 2G); default: the smallest that fits plus --headroom.
    #[arg(long, value_name = "SIZE", value_parser = crate::sizing::parse_size)]
    pub size: Option<u64>,

    /// Free space to leave in a computed size, in percent of the content.
    #[arg(long, value_name = "PERCENT", default_value_t = 2)]
    pub headroom: u32,

    /// Filesystem type.
    #[arg(long = "fs", value_enum, default_value_t = FsType::Ext3)]
    pub fs: FsType,

    /// Keep the inputs' owners (default: everything is owned by 0:0).
    #[arg(long)]
    pub keep_owner: bool,

    /// Volume UUID (default: derived from the content).
    #[arg(long, value_name = "UUID", value_parser = parse_uuid)]
    pub uuid: Option<[u8; 16]>,

    /// No progress bar and no summary.
    #[arg(short, long)]
    pub quiet: bool,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub host: HostArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub nix: NixArgs,
}

/// Parses `01234567-89ab-cdef-0123-456789abcdef`.
pub fn parse_uuid(s: &str) -> Result<[u8; 16], String> {
    let hex: String = s.chars().filter(|&c| c != '-').collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("{s:?} is not a UUID"));
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("checked hex");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn uuid_parses() {
        let u = parse_uuid("01234567-89ab-cdef-0123-456789abcdef").unwrap();
        assert_eq!(u[0], 0x01);
        assert_eq!(u[15], 0xef);
        assert!(parse_uuid("xyz").is_err());
    }

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from([
            "crashcart-imgbuild",
            "--dir",
            "a",
            "--dir",
            "b",
            "-o",
            "img",
            "--size",
            "64M",
            "--relocate",
            "/nix/store=/dev/.cart",
            "--fs",
            "ext4",
        ])
        .unwrap();
        assert_eq!(cli.dirs.len(), 2);
        assert_eq!(cli.size, Some(64 << 20));
        assert_eq!(FsKind::from(cli.fs), FsKind::Ext4);
        assert!(
            Cli::try_parse_from(["crashcart-imgbuild", "--dir", "a"]).is_err(),
            "-o required"
        );
        assert!(Cli::try_parse_from([
            "crashcart-imgbuild",
            "-o",
            "x",
            "--relocate",
            "/nix/store=/dev/x"
        ])
        .is_err());
    }
}
