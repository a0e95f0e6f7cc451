//! crashcart: sideload a read-only tool image into a running container and run a command
//! inside its namespaces.
//!
//! The session, from target to `execve`, in the order it happens (see ARCHITECTURE.md):
//! [`sealed`] re-executes crashcart from a sealed copy; [`resolve`] resolves what the user typed
//! to a host PID; [`image`] picks and checks the image; [`loopdev`] attaches it read-only with
//! autoclear; [`mount`] makes a detached read-only mount of it; [`namespaces`] and [`cgroup`]
//! open the target's namespace and cgroup handles; [`privileges`] works out what the command
//! may do; [`relay`] gives the command a pty or pipes; [`session`] forks the helper that enters
//! the target's mount namespace, builds the private `/dev` ([`devdir`]), covers loader preload
//! lists where needed ([`preload`]), enters the other namespaces and forks the command
//! ([`exec`]) with the environment from [`environment`]; [`signals`] and [`relay`] pass signals
//! and bytes meanwhile; [`sweep`] ends whatever the session left running.

pub mod cgroup;
mod cgroupfs;
pub mod cli;
pub mod devdir;
pub mod environment;
pub mod exec;
pub mod image;
pub mod log;
pub mod loopdev;
pub mod mount;
pub mod namespaces;
pub mod packed;
pub mod preload;
pub mod privileges;
pub mod process;
pub mod relay;
pub mod request;
pub mod resolve;
pub mod sealed;
pub mod session;
pub mod signals;
pub mod sweep;
mod sys;

pub use request::{Mode, Request};
pub use session::run;
