//! The command line, defined once with clap derive; `--help`, completions and the man page are
//! all generated from it.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, ValueEnum};

use crate::request::{Mode, Request};

/// Exit status for crashcart's own errors (usage included), as `docker run` and `nsenter` use.
pub const EXIT_CRASHCART: u8 = 125;

const AFTER_HELP: &str = "\
Examples:
  crashcart web-1                      bash (or sh) from the image, inside container web-1
  crashcart 3f2a ls -la /proc/1/fd     one command; everything after TARGET is the command
  crashcart -m web-1                   leave the image mounted at /dev/crashcart in web-1, then
  docker exec -it web-1 /dev/crashcart/bin/tcpdump -i eth0
  crashcart -u web-1                   remove that mount

The image is, in order: -i PATH, $CRASHCART_IMAGE, ./crashcart.img[.zst],
<prefix>/share/crashcart/crashcart.img[.zst] beside the installed binary. A zstd image is
unpacked once into $CRASHCART_CACHE (default /var/cache/crashcart) and reused from there.

Exit status: the command's; 128+N when it dies of signal N; 125 crashcart's own errors;
126 the command cannot run; 127 the command was not found.";

/// Run a command from a read-only tool image inside a running container.
///
/// crashcart attaches the tool image read-only, makes it visible at /dev/crashcart for the
/// command only (unless -m), and runs the command in all of the target's namespaces, its
/// cgroups, root and working directory, with the container's environment less what could run
/// code, the image's bin and sbin first on PATH, a terminal of its own, and the privileges of
/// --profile (default debug: nothing that reaches the host). When the command ends, nothing of
/// the session remains in the container or on the host.
#[derive(Debug, Parser)]
#[command(
    name = "crashcart",
    version,
    after_help = AFTER_HELP,
    override_usage = "crashcart [OPTIONS] TARGET [--] [COMMAND [ARG...]]"
)]
pub struct Cli {
    /// The tool image to sideload: ext2/3/4, or zstd-compressed (unpacked once into the cache).
    #[arg(short, long, value_name = "PATH")]
    pub image: Option<PathBuf>,

    /// Mount the image at /dev/crashcart in the container's own mount namespace and leave it
    /// there (for `docker exec` and `nsenter`); no command is run.
    #[arg(short, long)]
    pub mount: bool,

    /// Remove a mount made with -m, its directory and its store alias.
    #[arg(short, long)]
    pub unmount: bool,

    /// Mount as -m does, then run the command with `docker exec -it` (Docker targets only).
    #[arg(short, long)]
    pub exec: bool,

    /// Run the command as UID[:GID] of the container (default 0:0; with --profile target, the
    /// target's).
    #[arg(long, value_name = "UID[:GID]", value_parser = parse_user)]
    pub user: Option<(u32, u32)>,

    /// What the command may do: `debug` (default) the target's capabilities plus those
    /// debuggers need, never one that reaches the host, with no_new_privs and a seccomp filter;
    /// `target` exactly the target process's credentials, capabilities, seccomp filters and
    /// LSM label, as docker exec; `sysadmin` host root (a hostile container can take such a
    /// session over).
    #[arg(long, value_name = "NAME", value_enum, default_value_t = ProfileArg::Debug)]
    pub profile: ProfileArg,

    /// Log each step (resolution, loop device, mount, namespaces) on stderr.
    #[arg(short, long)]
    pub verbose: bool,

    /// List what can be targeted on this machine (pods' containers, Docker, Podman, containerd
    /// and CRI-O containers): name, runtime, ID, PID, image, state; a table on a terminal,
    /// tab-separated lines otherwise.
    #[arg(
        long,
        conflicts_with_all = ["image", "mount", "unmount", "exec", "user", "target_and_command"]
    )]
    pub list: bool,

    /// The CRI runtime's socket (unix:///PATH or PATH), asked about a pod (k8s://) that the
    /// runtimes' state under /run does not show, and by --list when /run shows no pod
    /// [default: $CONTAINER_RUNTIME_ENDPOINT, else /run/containerd/containerd.sock, then
    /// /run/crio/crio.sock].
    #[arg(long, value_name = "ENDPOINT")]
    pub cri_endpoint: Option<String>,

    /// Print shell completions or the man page on stdout.
    #[arg(long, value_name = "WHAT", hide = true, exclusive = true)]
    pub generate: Option<Generate>,

    /// TARGET (PID, container ID or unique prefix, name, docker://ID, containerd://ID,
    /// cri-o://ID, podman://ID, or a pod's container on this node: k8s://NAMESPACE/POD[/CONTAINER]
    /// or NAMESPACE/POD[/CONTAINER]), then the COMMAND and its arguments (default: the image's
    /// bash, else its sh). Everything after TARGET belongs to the command, flags included.
    #[arg(
        value_name = "TARGET [COMMAND [ARG...]]",
        required_unless_present_any = ["generate", "list"],
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    target_and_command: Vec<OsString>,
}

/// `--profile` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProfileArg {
    /// Debugging power that cannot reach the host.
    Debug,
    /// Exactly the target's privileges.
    Target,
    /// Host root.
    Sysadmin,
}

/// What `--generate` prints.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Generate {
    /// bash completion script.
    CompletionsBash,
    /// zsh completion script.
    CompletionsZsh,
    /// fish completion script.
    CompletionsFish,
    /// roff man page (crashcart.1).
    Man,
}

impl Cli {
    /// What the user named as the target.
    pub fn target(&self) -> Option<&str> {
        self.target_and_command.first().and_then(|t| t.to_str())
    }

    /// The request for the library: the mode these flags select, with the command where the
    /// mode runs one. [`parse`] has rejected the combinations that have no meaning.
    pub fn request(&self) -> Request {
        let command = self.command_args().to_vec();
        let mode = if self.list {
            Mode::List
        } else if self.unmount {
            Mode::Unmount
        } else if self.exec {
            Mode::DockerExec { command }
        } else if self.mount {
            Mode::Mount
        } else {
            Mode::Session { command }
        };
        Request {
            target: self.target().unwrap_or_default().to_string(),
            image: self.image.clone(),
            mode,
            user: self.user,
            profile: self.profile(),
            cri_endpoint: self.cri_endpoint.clone(),
        }
    }

    /// The privilege profile asked for.
    pub fn profile(&self) -> crate::privileges::Profile {
        match self.profile {
            ProfileArg::Debug => crate::privileges::Profile::Debug,
            ProfileArg::Target => crate::privileges::Profile::Target,
            ProfileArg::Sysadmin => crate::privileges::Profile::Sysadmin,
        }
    }

    /// The command and its arguments (empty: the default shell).
    pub fn command_args(&self) -> &[OsString] {
        match self.target_and_command.split_first() {
            Some((_, command)) if command.first().is_some_and(|c| c == "--") => &command[1..],
            Some((_, command)) => command,
            None => &[],
        }
    }
}

fn parse_user(s: &str) -> Result<(u32, u32), String> {
    let (uid, gid) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    let uid: u32 = uid
        .parse()
        .map_err(|_| format!("{uid:?} is not a numeric UID"))?;
    let gid: u32 = match gid {
        Some(g) => g
            .parse()
            .map_err(|_| format!("{g:?} is not a numeric GID"))?,
        None => 0,
    };
    Ok((uid, gid))
}

/// Parses `std::env::args`. On `--help`/`--version`/`--generate` prints and returns the exit
/// code; on a usage error prints one line and returns 125.
pub fn parse() -> Result<Cli, ExitCode> {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return Err(ExitCode::SUCCESS);
        }
        Err(e) => {
            // clap's message spans lines (what, then the usage); keep it to one.
            let text = e.to_string();
            let what: Vec<&str> = text
                .lines()
                .take_while(|l| !l.starts_with("Usage:"))
                .map(str::trim)
                .filter(|l| {
                    !l.is_empty()
                        && !l.starts_with("tip:")
                        && !l.starts_with("For more information")
                })
                .collect();
            let what = what.join(" ");
            let what = what.strip_prefix("error: ").unwrap_or(&what);
            eprintln!("crashcart: {what} (see crashcart --help)");
            return Err(ExitCode::from(EXIT_CRASHCART));
        }
    };
    if let Some(what) = cli.generate {
        return Err(generate(what));
    }
    let usage = if let Some(flag) = cli.target().filter(|t| t.starts_with('-')) {
        // The trailing TARGET/COMMAND list accepts leading hyphens; no target starts with one.
        eprintln!("crashcart: unexpected argument '{flag}' (see crashcart --help)");
        return Err(ExitCode::from(EXIT_CRASHCART));
    } else if cli.mount && cli.unmount {
        Some("-m/--mount and -u/--unmount cannot be used together")
    } else if cli.exec && cli.unmount {
        Some("-e/--exec and -u/--unmount cannot be used together")
    } else if (cli.mount || cli.unmount) && !cli.exec && !cli.command_args().is_empty() {
        Some("-m and -u take no COMMAND (use -e to mount and run one with docker exec)")
    } else {
        None
    };
    if let Some(msg) = usage {
        eprintln!("crashcart: {msg}");
        return Err(ExitCode::from(EXIT_CRASHCART));
    }
    Ok(cli)
}

fn generate(what: Generate) -> ExitCode {
    let mut cmd = <Cli as CommandFactory>::command();
    let mut out = std::io::stdout().lock();
    let result = match what {
        Generate::CompletionsBash => {
            clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, "crashcart", &mut out);
            Ok(())
        }
        Generate::CompletionsZsh => {
            clap_complete::generate(clap_complete::Shell::Zsh, &mut cmd, "crashcart", &mut out);
            Ok(())
        }
        Generate::CompletionsFish => {
            clap_complete::generate(clap_complete::Shell::Fish, &mut cmd, "crashcart", &mut out);
            Ok(())
        }
        Generate::Man => clap_mangen::Man::new(cmd).render(&mut out),
    };
    match result.and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        // `crashcart --generate man | head` is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crashcart: cannot write to stdout: {e}");
            ExitCode::from(EXIT_CRASHCART)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("crashcart").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn flags_select_one_mode() {
        assert_eq!(
            parse(&["web-1", "ls"]).request().mode,
            Mode::Session {
                command: vec!["ls".into()]
            }
        );
        assert_eq!(parse(&["-m", "web-1"]).request().mode, Mode::Mount);
        assert_eq!(parse(&["-u", "web-1"]).request().mode, Mode::Unmount);
        assert_eq!(parse(&["--list"]).request().mode, Mode::List);
        assert_eq!(
            parse(&["-e", "web-1"]).request().mode,
            Mode::DockerExec { command: vec![] }
        );
        let request = parse(&["--profile", "target", "--user", "7:8", "web-1"]).request();
        assert_eq!(request.profile, crate::privileges::Profile::Target);
        assert_eq!(request.user, Some((7, 8)));
        assert_eq!(request.target, "web-1");
    }

    #[test]
    fn flags_after_target_belong_to_the_command() {
        let cli = parse(&["web-1", "ls", "-la"]);
        assert_eq!(cli.target(), Some("web-1"));
        assert_eq!(cli.command_args(), ["ls", "-la"]);
        let cli = parse(&["-v", "web-1", "-v", "--help"]);
        assert!(cli.verbose);
        assert_eq!(cli.command_args(), ["-v", "--help"]);
        let cli = parse(&["web-1", "--", "ls", "-l"]);
        assert_eq!(cli.command_args(), ["ls", "-l"]);
        let cli = parse(&["-i", "x.img", "--", "web-1", "-m"]);
        assert_eq!(cli.target(), Some("web-1"));
        assert_eq!(cli.command_args(), ["-m"]);
        assert!(!cli.mount);
        assert!(parse(&["web-1"]).command_args().is_empty());
    }

    #[test]
    fn user_forms() {
        assert_eq!(parse_user("1000"), Ok((1000, 0)));
        assert_eq!(parse_user("1000:100"), Ok((1000, 100)));
        assert!(parse_user("bob").is_err());
        assert!(parse_user("1:x").is_err());
    }

    #[test]
    fn definition_is_consistent() {
        <Cli as CommandFactory>::command().debug_assert();
    }
}
