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
                eprintln!(
                    "crashcart-imgbuild: wrote {}: {} files, {:.1} MiB of contents, image {:.1} MiB, {:.2} s",
                    s.output.display(),
                    s.files,
                    s.bytes as f64 / 1048576.0,
                    s.image_bytes as f64 / 1048576.0,
                    s.seconds
                );
                if let Some(n) = s.relocated_files {
                    eprintln!("crashcart-imgbuild: relocation rewrote {n} files");
                }
                if !s.packages.is_empty() {
                    eprintln!(
                        "crashcart-imgbuild: closure of each package (shared paths in each):"
                    );
                }
                for p in &s.packages {
                    let paths = if p.closure_paths == 1 {
                        "path"
                    } else {
                        "paths"
                    };
                    eprintln!(
                        "crashcart-imgbuild:   {:<24} {:>10} in {:>4} store {paths}",
                        p.name,
                        human_bytes(p.closure_bytes),
                        p.closure_paths
                    );
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crashcart-imgbuild: {}", one_line(&chain(&e)));
            if let Some(log) = e.log_tail() {
                // Lines as nix printed them (control bytes already removed).
                eprintln!("{log}");
            }
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// `512 B`, `3.4 KiB`, `12.0 MiB`, `1.2 GiB`.
fn human_bytes(bytes: u64) -> String {
    let mut value = bytes as f64;
    for unit in ["B", "KiB", "MiB"] {
        if value < 1024.0 {
            return if unit == "B" {
                format!("{bytes} B")
            } else {
                format!("{value:.1} {unit}")
            };
        }
        value /= 1024.0;
    }
    format!("{value:.1} GiB")
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
    fn sizes_read_as_people_read_them() {
        assert_eq!(super::human_bytes(472), "472 B");
        assert_eq!(super::human_bytes(1985440), "1.9 MiB");
        assert_eq!(super::human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn messages_stay_on_one_line() {
        assert_eq!(super::one_line("a\nb\x1b[31m"), "a\\nb\\u{1b}[31m");
        assert_eq!(super::one_line("café: ok"), "café: ok");
    }
}
