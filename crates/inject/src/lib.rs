//! crashcart: sideload a read-only tool image into a running container and run a command
//! inside its namespaces.

pub mod target;
