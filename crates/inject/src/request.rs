//! The library's request: what the user asked crashcart to do, as plain data. The command line
//! builds it ([`crate::cli::Cli::request`]); [`crate::session::run`] carries it out. A mode
//! enum, not flags: combinations the command line rejects cannot be expressed here.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::privileges::Profile;

/// What to do with the target (cntr's `AttachOptions`, youki's split of its CLI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What the user named: a PID, a container ID, prefix or name, or `scheme://ID`.
    pub target: String,
    /// The image named with `-i`, if any.
    pub image: Option<PathBuf>,
    /// The mode, with the command where it has one.
    pub mode: Mode,
    /// `--user UID[:GID]`.
    pub user: Option<(u32, u32)>,
    /// `--profile`.
    pub profile: Profile,
    /// `--cri-endpoint`: the CRI socket asked about pods the bundles under `/run` do not
    /// know (`None`: `CONTAINER_RUNTIME_ENDPOINT`, else the usual sockets).
    pub cri_endpoint: Option<String>,
}

/// How crashcart deals with the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// A session: the image visible to the command only; the command (empty: the image's
    /// shell) runs under the profile.
    Session {
        /// The command and its arguments.
        command: Vec<OsString>,
    },
    /// `-m`: leave the image mounted in the container's own mount namespace.
    Mount,
    /// `-u`: remove what `-m` mounted.
    Unmount,
    /// `--list`: print what can be targeted on this machine.
    List,
    /// `-e`: `-m`, then the command (empty: the image's shell) through `docker exec`.
    DockerExec {
        /// The command and its arguments.
        command: Vec<OsString>,
    },
}
