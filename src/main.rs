//! ocx: run OpenCode servers in the background — start, list, prompt, stop, clean up.

mod batch;
mod cli;
mod cmd;
mod doctor;
mod error;
mod events;
mod feed;
mod home;
mod hooks;
mod instance;
mod output;
mod parallel;
mod process;
mod record;
mod remote;
mod server;
mod service;
mod token;
mod turn;
mod worktree;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // A watcher lives as long as its server: it skips the command line's machinery, so that
    // code never becomes part of its resident memory.
    let result = match cmd::watch::asked() {
        Some(id) => cmd::watch::run_bare(&id),
        None => {
            cmd::completions::answer_if_asked();
            cmd::run(cli::Cli::parse())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => error::report(&err),
    }
}
