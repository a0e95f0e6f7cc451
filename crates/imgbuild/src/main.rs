//! `crashcart-imgbuild`: parse flags, build, print one line, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use crashcart_imgbuild::builder;
use crashcart_imgbuild::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match builder::build(&cli) {
        Ok(s) => {
            if !cli.quiet {
                for note in &s.notes {
                    eprintln!("crashcart-imgbuild: {}", one_line(note));
                }
                eprintln!(
                    "crashcart-imgbuild: wrote {}: {} files, {:.1} MiB of contents, image {:.1} MiB, {:.2} s",
                    s.output.display(),
                    s.files,
                    s.bytes as f64 / 1048576.0,
                    s.image_bytes as f64 / 1048576.0,
                    s.seconds
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crashcart-imgbuild: {}", one_line(&chain(&e)));
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// The error and its causes, each printed once: `error: cause: cause of the cause`. Library
/// errors name what failed and leave the cause to [`std::error::Error::source`].
fn chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        line.push_str(": ");
        line.push_str(&c.to_string());
        cause = c.source();
    }
    line
}

/// The message with control characters escaped: names and tar headers come from the inputs and
/// may hold newlines or terminal escapes; the error stays one readable line.
fn one_line(message: &str) -> String {
    message
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn messages_stay_on_one_line() {
        assert_eq!(super::one_line("a\nb\x1b[31m"), "a\\nb\\u{1b}[31m");
        assert_eq!(super::one_line("café: ok"), "café: ok");
    }
}
