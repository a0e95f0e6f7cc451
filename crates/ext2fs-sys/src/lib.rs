//! Raw bindings to libext2fs.
