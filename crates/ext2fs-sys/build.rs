//! Links the system libext2fs and libcom_err, found through pkg-config.

fn main() {
    for lib in ["ext2fs", "com_err"] {
        if let Err(e) = pkg_config::Config::new().atleast_version("1.46").probe(lib) {
            panic!(
                "\n\ncannot find the system library `{lib}` (libext2fs >= 1.46) through pkg-config: {e}\n\
                 On Debian/Ubuntu install it with: apt-get install libext2fs-dev pkg-config\n\n"
            );
        }
    }
}
