//! The command line, defined once with clap derive; `--help`, completions and the man page are
//! all generated from it.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, ValueEnum};

use crate::request::{Mode, Request};
use crate::user::UserSpec;

/// Exit status for crashcart's own errors (usage included), as `docker run` and `nsenter` use.
pub const EXIT_CRASHCART: u8 = 125;

/// TARGET and COMMAND, for `--help` and the man page (the one positional that holds both is
/// hidden: clap would show it as a repeated optional group).
const ARGUMENTS: [(&str, &str); 2] = [
    (
        "TARGET",
        "a PID, a container ID or unique ID prefix, a container name, docker://ID, \
         containerd://ID, cri-o://ID, podman://ID, or a pod's container on this node: \
         k8s://NAMESPACE/POD[/CONTAINER] or NAMESPACE/POD[/CONTAINER]",
    ),
    (
        "COMMAND [ARG...]",
        "what to run (default: the image's bash, else its sh); everything after TARGET \
         belongs to the command, flags included",
    ),
];

/// Examples: the command line and what it does.
const EXAMPLES: [(&str, &str); 5] = [
    (
        "crashcart web-1",
        "the image's bash (or sh), inside container web-1",
    ),
    (
        "crashcart 3f2a ls -la /proc/1/fd",
        "one command, in the container whose ID starts with 3f2a",
    ),
    (
        "crashcart --user nginx web-1 id",
        "as the container's user nginx, with its groups",
    ),
    (
        "crashcart -m web-1",
        "leave the image mounted at /dev/crashcart for docker exec",
    ),
    ("crashcart -u web-1", "remove that mount"),
];

/// Where the image comes from.
const IMAGE_ORDER: &str = "The image is, in order: -i PATH, $CRASHCART_IMAGE, \
    ./crashcart.img[.zst], <prefix>/share/crashcart/crashcart.img[.zst] beside the installed \
    binary. A zstd image is unpacked once into $CRASHCART_CACHE (default /var/cache/crashcart) \
    and reused from there.";

/// The exit statuses.
const EXIT_STATUS: [(&str, &str); 5] = [
    ("N", "the command's own status"),
    ("128+N", "the command died of signal N"),
    (
        "125",
        "crashcart itself failed (usage, target, image, --user); nothing was changed",
    ),
    ("126", "the command exists but cannot run"),
    (
        "127",
        "the command is neither in the image nor on the container's PATH",
    ),
];

/// Wraps `text` into lines of at most `width` characters.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().expect("never empty");
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(word.to_string());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

/// A two-column block: names padded to one width, descriptions wrapped under each other.
fn two_columns(rows: &[(&str, &str)]) -> String {
    const WIDTH: usize = 96;
    let left = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0) + 2;
    let mut out = String::new();
    for (name, text) in rows {
        for (i, line) in wrap(text, WIDTH - 2 - left).iter().enumerate() {
            let name = if i == 0 { *name } else { "" };
            out.push_str(&format!("  {name:<left$}{line}\n"));
        }
    }
    out
}

/// The help template: clap's pieces around our own `Arguments:` block.
fn help_template() -> String {
    format!(
        "{{before-help}}{{about-with-newline}}\n{{usage-heading}} {{usage}}\n\n\
         \x1b[1m\x1b[4mArguments:\x1b[0m\n{}\n{{all-args}}{{after-help}}",
        two_columns(&ARGUMENTS)
    )
}

fn after_help() -> String {
    let mut exit = String::new();
    for (code, what) in EXIT_STATUS {
        exit.push_str(&format!("  {code:<7}{what}\n"));
    }
    format!(
        "Examples:\n{}\n{}\n\nExit status:\n{}",
        two_columns(&EXAMPLES),
        wrap(IMAGE_ORDER, 94).join("\n"),
        exit.trim_end()
    )
}

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
    after_help = after_help(),
    help_template = help_template(),
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

    /// Run the command as this user of the container: a name or UID, optionally :GROUP or :GID,
    /// looked up in the container's /etc/passwd and /etc/group as docker exec -u does (default
    /// 0:0; with --profile target, the target's).
    #[arg(long, value_name = "USER[:GROUP]", value_parser = UserSpec::parse)]
    pub user: Option<UserSpec>,

    /// What the command may do: `debug` (default) the target's capabilities plus those
    /// debuggers need, never one that reaches the host, with no_new_privs and a seccomp filter;
    /// `target` exactly the target process's credentials, capabilities, seccomp filters and
    /// LSM label, as docker exec; `sysadmin` host root (a hostile container can take such a
    /// session over).
    #[arg(long, value_name = "NAME", value_enum, default_value_t = ProfileArg::Debug)]
    pub profile: ProfileArg,

    /// Log each step (resolution, loop device, mount, namespaces) on stderr.
    #[arg(short, long, conflicts_with = "quiet")]
    pub verbose: bool,

    /// Print no hints (-m prints the command that uses the mount).
    #[arg(short, long)]
    pub quiet: bool,

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
    #[arg(long, value_name = "WHAT", exclusive = true)]
    pub generate: Option<Generate>,

    /// TARGET, then the COMMAND and its arguments (see `ARGUMENTS`).
    #[arg(
        value_name = "TARGET",
        hide = true,
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
            user: self.user.clone(),
            profile: self.profile(),
            cri_endpoint: self.cri_endpoint.clone(),
            quiet: self.quiet,
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
            crate::log::say(format_args!("{what} (see crashcart --help)"));
            return Err(ExitCode::from(EXIT_CRASHCART));
        }
    };
    if let Some(what) = cli.generate {
        return Err(generate(what));
    }
    let usage = if let Some(flag) = cli.target().filter(|t| t.starts_with('-')) {
        // The trailing TARGET/COMMAND list accepts leading hyphens; no target starts with one.
        crate::log::say(format_args!(
            "unexpected argument '{flag}' (see crashcart --help)"
        ));
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
        crate::log::say(format_args!("{msg}"));
        return Err(ExitCode::from(EXIT_CRASHCART));
    }
    Ok(cli)
}

/// Renders what `--generate` asks for. Everything is rendered in memory first: clap_complete
/// panics when its writer fails, and `crashcart --generate completions-bash | head` closes
/// the pipe early.
pub fn render_generated(what: Generate) -> Vec<u8> {
    let mut cmd = <Cli as CommandFactory>::command();
    let mut out = Vec::new();
    let shell = match what {
        Generate::CompletionsBash => clap_complete::Shell::Bash,
        Generate::CompletionsZsh => clap_complete::Shell::Zsh,
        Generate::CompletionsFish => clap_complete::Shell::Fish,
        Generate::Man => {
            man_page(cmd, &mut out).expect("writing to a Vec cannot fail");
            return out;
        }
    };
    clap_complete::generate(shell, &mut cmd, "crashcart", &mut out);
    out
}

/// The man page: clap_mangen's title, name, synopsis, description and options, with our own
/// ARGUMENTS, EXAMPLES, IMAGE and EXIT STATUS sections in place of its catch-all `EXTRA`.
fn man_page(cmd: clap::Command, out: &mut Vec<u8>) -> std::io::Result<()> {
    use roff::{bold, roman, Roff};
    let man = clap_mangen::Man::new(cmd);
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    let mut roff = Roff::new();
    roff.control("SH", ["ARGUMENTS"]);
    for (name, text) in ARGUMENTS {
        roff.control("TP", [])
            .text([bold(name)])
            .text([roman(text)]);
    }
    roff.to_writer(out)?;
    man.render_options_section(out)?;
    let mut roff = Roff::new();
    roff.control("SH", ["EXAMPLES"]);
    for (example, text) in EXAMPLES {
        roff.control("TP", [])
            .text([bold(example)])
            .text([roman(text)]);
    }
    roff.control("SH", ["IMAGE"]).text([roman(IMAGE_ORDER)]);
    roff.control("SH", ["EXIT STATUS"]);
    for (code, text) in EXIT_STATUS {
        roff.control("TP", [])
            .text([bold(code)])
            .text([roman(text)]);
    }
    roff.to_writer(out)?;
    man.render_version_section(out)
}

fn generate(what: Generate) -> ExitCode {
    match crate::log::stdout_bytes(&render_generated(what)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            crate::log::say(format_args!("cannot write to stdout: {e}"));
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
        assert_eq!(request.user, Some(UserSpec::parse("7:8").unwrap()));
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
        for good in ["1000", "1000:100", "nginx", "nginx:www", "101:www", "bob:7"] {
            assert!(Cli::try_parse_from(["crashcart", "--user", good, "web-1"]).is_ok());
        }
        for bad in ["", "bob:", "99999999999", "1:4294967296"] {
            assert!(Cli::try_parse_from(["crashcart", "--user", bad, "web-1"]).is_err());
        }
    }

    #[test]
    fn definition_is_consistent() {
        <Cli as CommandFactory>::command().debug_assert();
    }
}
