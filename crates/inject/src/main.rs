//! `crashcart`: parse the command line, run the request, map errors to exit status 125.

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match crashcart::cli::parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    crashcart::log::set_verbose(cli.verbose);
    match crashcart::run(&cli.request()) {
        Ok(status) => ExitCode::from(status),
        Err(e) => {
            match e.hint() {
                Some(hint) => {
                    crashcart::log::say(format_args!("{}; {hint}", crashcart::log::chain(&e)))
                }
                None => crashcart::log::say(format_args!("{}", crashcart::log::chain(&e))),
            }
            ExitCode::from(crashcart::cli::EXIT_CRASHCART)
        }
    }
}
