//! The command's environment: the target's own (`/proc/PID/environ`) less its loader hooks,
//! the image's `bin` and `sbin` first on `PATH`, the caller's `TERM`, then the manifest's
//! variables.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// Prepended to the container's `PATH`.
pub const IMAGE_PATH: &str = "/dev/crashcart/bin:/dev/crashcart/sbin";
/// `PATH` when the container sets none (what Docker gives a container by default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Loader variables of the container that would run its code inside the image's tools (see
/// [`crate::preload`]). `LD_LIBRARY_PATH` stays: the container's own programs started from the
/// session need it, and tools bundled by crashcart-imgbuild carry an RPATH that wins over it.
pub const DROPPED_LOADER_VARS: [&[u8]; 2] = [b"LD_PRELOAD", b"LD_AUDIT"];

/// An ordered environment of `NAME=value` byte strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment {
    vars: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Environment {
    /// Builds the command's environment from the target's entries.
    pub fn for_command(
        container: &[Vec<u8>],
        caller_term: Option<&OsStr>,
        manifest: &[(String, String)],
    ) -> Environment {
        let mut env = Environment::default();
        for entry in container {
            // Entries without '=' are not variables; a hostile process may write anything.
            if let Some(eq) = entry.iter().position(|&b| b == b'=').filter(|&i| i > 0) {
                if !DROPPED_LOADER_VARS.contains(&&entry[..eq]) {
                    env.set(&entry[..eq], &entry[eq + 1..]);
                }
            }
        }
        let path = match env.get(b"PATH") {
            Some(p) if !p.is_empty() => [IMAGE_PATH.as_bytes(), b":", p].concat(),
            _ => format!("{IMAGE_PATH}:{DEFAULT_PATH}").into_bytes(),
        };
        env.set(b"PATH", &path);
        if let Some(term) = caller_term {
            env.set(b"TERM", term.as_bytes());
        }
        for (k, v) in manifest {
            env.set(k.as_bytes(), v.as_bytes());
        }
        env
    }

    /// The value of `name`.
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    /// Sets `name`, in place if it exists, else at the end.
    pub fn set(&mut self, name: &[u8], value: &[u8]) {
        match self.vars.iter_mut().find(|(k, _)| k == name) {
            Some((_, v)) => *v = value.to_vec(),
            None => self.vars.push((name.to_vec(), value.to_vec())),
        }
    }

    /// `NAME=value` entries, without any containing NUL.
    pub fn entries(&self) -> Vec<Vec<u8>> {
        self.vars
            .iter()
            .map(|(k, v)| [k.as_slice(), b"=", v.as_slice()].concat())
            .filter(|e| !e.contains(&0))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_first_on_path_term_and_manifest() {
        let env = Environment::for_command(
            &[
                b"PATH=/usr/bin:/bin".to_vec(),
                b"HOME=/root".to_vec(),
                b"junk".to_vec(),
                b"TERM=dumb".to_vec(),
                b"LD_PRELOAD=/evil.so".to_vec(),
                b"LD_AUDIT=/evil.so".to_vec(),
            ],
            Some(OsStr::new("xterm-256color")),
            &[(
                "TERMINFO_DIRS".into(),
                "/dev/crashcart/share/terminfo".into(),
            )],
        );
        assert_eq!(
            env.get(b"PATH"),
            Some(&b"/dev/crashcart/bin:/dev/crashcart/sbin:/usr/bin:/bin"[..])
        );
        assert_eq!(env.get(b"TERM"), Some(&b"xterm-256color"[..]));
        assert_eq!(env.get(b"HOME"), Some(&b"/root"[..]));
        assert_eq!(env.get(b"LD_PRELOAD"), None);
        assert_eq!(env.get(b"LD_AUDIT"), None);
        assert_eq!(env.entries().len(), 4);
    }

    #[test]
    fn default_path_when_container_has_none() {
        let env = Environment::for_command(&[], None, &[]);
        assert_eq!(
            env.get(b"PATH").unwrap(),
            format!("{IMAGE_PATH}:{DEFAULT_PATH}").as_bytes()
        );
        assert_eq!(env.get(b"TERM"), None);
    }
}
