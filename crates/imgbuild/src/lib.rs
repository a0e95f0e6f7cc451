//! crashcart-imgbuild: write crashcart's tool image through libext2fs, without root.
//!
//! The pipeline ([`builder`]) sizes the image ([`sizing`]), feeds every input ([`input`]; mode,
//! owner and xattrs in [`attributes`]) to the writer ([`image`]), which reads file bytes
//! ([`content`]), rewrites store paths with [`relocate`], cuts container configuration paths
//! out of ELF files with [`confine`], places blocks and block maps ([`placement`],
//! [`blockmap`]), keeps the namespace in [`tree`], lays out directories with [`dirblock`], and
//! reaches libext2fs only through the safe handle in [`ext2`]. The output appears at `-o` only
//! when complete ([`output`]). The paths and the manifest it writes are the image contract of
//! [`crashcart_layout`].

#![deny(missing_docs)]

pub mod attributes;
pub mod blockmap;
pub mod builder;
pub mod cli;
pub mod compressed;
pub mod confine;
pub mod content;
pub mod digest;
pub mod dirblock;
pub mod ext2;
pub mod host;
pub mod image;
pub mod input;
pub mod limits;
pub mod manifest;
pub mod nix;
pub mod output;
pub mod pax;
pub mod placement;
pub mod progress;
pub mod relocate;
pub mod sizing;
pub mod tree;
