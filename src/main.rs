//! ocx: run OpenCode servers in the background — start, list, prompt, stop, clean up.

mod cli;
mod cmd;
mod error;
mod home;
mod hooks;
mod instance;
mod output;
mod parallel;
mod process;
mod record;
mod server;
mod token;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    cmd::completions::answer_if_asked();
    let cli = cli::Cli::parse();
    match cmd::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => error::report(&err),
    }
}
