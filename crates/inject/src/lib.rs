//! crashcart: sideload a read-only tool image into a running container and run a command
//! inside its namespaces.
//!
//! The session, from target to `execve`, in the order it happens (see ARCHITECTURE.md):
//! [`target`] resolves what the user typed to a host PID; [`image`] picks and checks the image;
//! [`loopdev`] attaches it read-only with autoclear; [`mount`] makes a detached read-only mount
//! of it; [`namespaces`] and [`cgroup`] open the target's namespace and cgroup handles;
//! [`session`] forks the helper that enters the target's mount namespace, builds the private
//! `/dev` ([`devdir`]), covers the container's loader preload file ([`preload`]), enters the other namespaces and forks the command ([`exec`]) with the
//! environment from [`environment`]; [`signals`] forwards signals to it meanwhile.

pub mod cgroup;
pub mod cli;
pub mod devdir;
pub mod environment;
pub mod exec;
pub mod image;
pub mod log;
pub mod loopdev;
pub mod mount;
pub mod namespaces;
pub mod preload;
pub mod privileges;
pub mod process;
pub mod relay;
pub mod sealed;
pub mod session;
pub mod signals;
pub mod sweep;
mod sys;
pub mod target;

pub use session::run;
