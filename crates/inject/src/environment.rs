//! The command's environment: the target's own (`/proc/PID/environ`) less every variable that
//! would make a program load or run something the container chose, the image's `bin` and `sbin`
//! first on `PATH`, a few variables crashcart sets itself, the caller's `TERM`, then the
//! image manifest's variables.
//!
//! The container writes its environment and crashcart hands it to the image's tools, which run
//! with more privilege than the container has. So anything that names code or a startup file is
//! dropped (reviewed against glibc's loader, iconv and NSS, bash and readline, Python, Perl,
//! Ruby, Node, Lua, OpenSSL, less, vim, gdb, man and the tools that start a pager, editor or
//! shell), and `HOME` is the session's own directory so no tool finds a dotfile the container
//! wrote. Variables that point tools at their runtime data (`TERMINFO`, `TERMINFO_DIRS`,
//! `TERMCAP`, `MANPATH`, `VIMRUNTIME`, groff's paths) are dropped too: the container's
//! would hide the image's data from its tools or hand them the container's (`MANROFFOPT` even
//! passes options to groff). The image sets them in its manifest when it bundles that data;
//! the manifest is ours, so its variables are applied last, whatever their names. Data stays:
//! locale names, `TZ` and the application's own settings.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// The image's root inside the container, and what is prepended to its `PATH`.
pub use crashcart_layout::{IMAGE_PATH, IMAGE_ROOT};
/// `PATH` when the container sets none (what Docker gives a container by default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// readline reads only this file when `INPUTRC` is set, even when it does not exist: never the
/// container's `/etc/inputrc` or `~/.inputrc`.
pub use crashcart_layout::IMAGE_INPUTRC;

/// Variables dropped by exact name: each makes some program load, source or run a file or
/// command it names.
pub const DROPPED_VARS: &[&str] = &[
    // glibc: iconv modules, locale and message catalogues with code paths, tunables,
    // resolver aliases.
    "GCONV_PATH",
    "LOCPATH",
    "NLSPATH",
    "GLIBC_TUNABLES",
    "HOSTALIASES",
    // bash and POSIX shells: startup files, prompts (expanded, so they run commands), options.
    "BASH_ENV",
    "ENV",
    "SHELLOPTS",
    "BASHOPTS",
    "CDPATH",
    "GLOBIGNORE",
    "EXECIGNORE",
    "BASH_XTRACEFD",
    "BASH_LOADABLES_PATH",
    "PS0",
    "PS1",
    "PS2",
    "PS3",
    "PS4",
    "IFS",
    "INPUTRC",
    "HOME",
    "SHELL",
    // Programs that tools start: pagers, editors, browsers, askpass helpers.
    "PAGER",
    "MANPAGER",
    "MANOPT",
    "EDITOR",
    "VISUAL",
    "BROWSER",
    "SSH_ASKPASS",
    "SUDO_ASKPASS",
    "SYSTEMD_PAGER",
    // Where tools find their runtime data: the image's, from its manifest, or their defaults.
    "TERMCAP",
    "MANPATH",
    "MANSECT",
    "MANROFFOPT",
    "MANROFFSEQ",
    "MAN_DISABLE_SECCOMP",
    // vim and ex: startup commands and runtime files.
    "EXINIT",
    "MYVIMRC",
    "GVIMINIT",
    // Interpreters' module paths and startup hooks.
    "NODE_OPTIONS",
    "NODE_PATH",
    "RUBYOPT",
    "RUBYLIB",
    "TCLLIBPATH",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "CLASSPATH",
];

/// Variables dropped by prefix, for families where every member can name code or config:
/// the loader (`LD_PRELOAD`, `LD_AUDIT`, `LD_LIBRARY_PATH`, ...), malloc hooks, exported bash
/// functions, prompt commands, mail checks (whose messages are expanded), history files, Python,
/// Perl, Lua, OpenSSL (engines and providers), less (`LESSOPEN` runs a command), vim
/// (`VIMRUNTIME`), gdb, git, the XDG directories where tools look for their config, terminfo
/// (`TERMINFO`, `TERMINFO_DIRS`) and groff (`GROFF_TMAC_PATH`, ...).
pub const DROPPED_PREFIXES: &[&str] = &[
    "LD_",
    "MALLOC_",
    "BASH_FUNC_",
    "PROMPT_COMMAND",
    "MAIL",
    "HIST",
    "PYTHON",
    "PERL",
    "LUA_",
    "OPENSSL_",
    "LESS",
    "VIM",
    "GDB",
    "GIT_",
    "XDG_",
    "TERMINFO",
    "GROFF_",
];

/// Whether the container's variable `name` is dropped.
pub fn is_dropped(name: &[u8]) -> bool {
    DROPPED_VARS.iter().any(|v| v.as_bytes() == name)
        || DROPPED_PREFIXES
            .iter()
            .any(|p| name.starts_with(p.as_bytes()))
}

/// An ordered environment of `NAME=value` byte strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment {
    vars: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Environment {
    /// Builds the command's environment from the target's entries.
    ///
    /// `shell` is the image's shell (`SHELL`, what tools start for `!` escapes), when it has
    /// one; `home` the session's own `HOME` (never a directory of the container's).
    pub fn for_command(
        container: &[Vec<u8>],
        caller_term: Option<&OsStr>,
        shell: Option<&str>,
        home: &str,
        manifest: &[(String, String)],
    ) -> Environment {
        let mut env = Environment::default();
        for entry in container {
            // Entries without '=' are not variables; a hostile process may write anything.
            if let Some(eq) = entry.iter().position(|&b| b == b'=').filter(|&i| i > 0) {
                if !is_dropped(&entry[..eq]) {
                    env.set(&entry[..eq], &entry[eq + 1..]);
                }
            }
        }
        let path = match env.get(b"PATH") {
            Some(p) if !p.is_empty() => [IMAGE_PATH.as_bytes(), b":", p].concat(),
            _ => format!("{IMAGE_PATH}:{DEFAULT_PATH}").into_bytes(),
        };
        env.set(b"PATH", &path);
        env.set(b"HOME", home.as_bytes());
        env.set(b"INPUTRC", IMAGE_INPUTRC.as_bytes());
        // less: no shell escapes, no LESSOPEN pipes, no log files.
        env.set(b"LESSSECURE", b"1");
        if let Some(shell) = shell {
            env.set(b"SHELL", shell.as_bytes());
        }
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
            None,
            "/dev/crashcart-home",
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
        assert_eq!(env.get(b"HOME"), Some(&b"/dev/crashcart-home"[..]));
        assert_eq!(env.get(b"LD_PRELOAD"), None);
        assert_eq!(env.get(b"LD_AUDIT"), None);
        // PATH, HOME, TERM, INPUTRC, LESSSECURE, TERMINFO_DIRS.
        assert_eq!(env.entries().len(), 6);
    }

    #[test]
    fn runtime_data_variables_come_from_the_image_never_the_container() {
        let container: Vec<Vec<u8>> = [
            &b"TERMINFO=/evil/terminfo"[..],
            b"TERMINFO_DIRS=/evil/terminfo",
            b"VIMRUNTIME=/evil/vim",
            b"MANPATH=/evil/man",
            b"MANROFFOPT=-U",
        ]
        .iter()
        .map(|e| e.to_vec())
        .collect();
        let manifest: Vec<(String, String)> = [
            ("TERMINFO_DIRS", "/dev/crashcart/share/terminfo"),
            ("VIMRUNTIME", "/dev/crashcart/share/vim/vim91"),
            ("MANPATH", "/dev/crashcart/share/man"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let env = Environment::for_command(&container, None, None, "/h", &manifest);
        for (k, v) in &manifest {
            assert_eq!(env.get(k.as_bytes()), Some(v.as_bytes()), "{k}");
        }
        assert_eq!(env.get(b"TERMINFO"), None);
        assert_eq!(env.get(b"MANROFFOPT"), None);
        // Without the manifest, none of the container's survives.
        let env = Environment::for_command(&container, None, None, "/h", &[]);
        for name in [
            "TERMINFO",
            "TERMINFO_DIRS",
            "VIMRUNTIME",
            "MANPATH",
            "MANROFFOPT",
        ] {
            assert_eq!(env.get(name.as_bytes()), None, "{name}");
        }
    }

    #[test]
    fn default_path_when_container_has_none() {
        let env = Environment::for_command(&[], None, None, "/h", &[]);
        assert_eq!(
            env.get(b"PATH").unwrap(),
            format!("{IMAGE_PATH}:{DEFAULT_PATH}").as_bytes()
        );
        assert_eq!(env.get(b"TERM"), None);
        assert_eq!(env.get(b"SHELL"), None);
    }

    #[test]
    fn variables_that_name_code_are_dropped_and_data_is_kept() {
        let hostile: &[&[u8]] = &[
            b"PROMPT_COMMAND=/payload",
            b"PROMPT_COMMANDS=/payload",
            b"PS1=$(/payload)",
            b"BASH_FUNC_ls%%=() { /payload; }",
            b"BASH_ENV=/payload.sh",
            b"ENV=/payload.sh",
            b"INPUTRC=/evil",
            b"LD_LIBRARY_PATH=/evil",
            b"GCONV_PATH=/evil",
            b"PAGER=/payload",
            b"HOME=/evilhome",
            b"SHELL=/payload",
            b"LESSOPEN=|/payload %s",
            b"PYTHONSTARTUP=/payload.py",
            b"PERL5OPT=-M/evil",
            b"OPENSSL_CONF=/evil.cnf",
            b"XDG_CONFIG_HOME=/evil",
            b"MAILPATH=/x?$(/payload)",
            b"HISTFILE=/etc/passwd",
            b"VIMINIT=:!/payload",
            b"GLIBC_TUNABLES=glibc.malloc.x=1",
            b"TERMINFO=/evil",
            b"TERMINFO_DIRS=/evil",
            b"TERMCAP=/evil",
            b"MANPATH=/evil",
            b"MANROFFOPT=-U",
            b"VIMRUNTIME=/evil",
        ];
        let mut container: Vec<Vec<u8>> = hostile.iter().map(|e| e.to_vec()).collect();
        container.push(b"APP_MODE=prod".to_vec());
        container.push(b"LANG=C.UTF-8".to_vec());
        let env = Environment::for_command(
            &container,
            None,
            Some("/dev/crashcart/bin/bash"),
            "/dev/crashcart-home",
            &[],
        );
        for entry in hostile {
            let name = &entry[..entry.iter().position(|&b| b == b'=').unwrap()];
            let value = env.get(name);
            assert!(
                value.is_none() || !entry.ends_with(value.unwrap()),
                "{} kept",
                String::from_utf8_lossy(name)
            );
        }
        assert_eq!(env.get(b"APP_MODE"), Some(&b"prod"[..]));
        assert_eq!(env.get(b"LANG"), Some(&b"C.UTF-8"[..]));
        assert_eq!(env.get(b"HOME"), Some(&b"/dev/crashcart-home"[..]));
        assert_eq!(env.get(b"SHELL"), Some(&b"/dev/crashcart/bin/bash"[..]));
        assert_eq!(env.get(b"INPUTRC"), Some(IMAGE_INPUTRC.as_bytes()));
    }
}
