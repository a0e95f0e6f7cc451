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
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crashcart-imgbuild: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
