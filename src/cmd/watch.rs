//! `ocx __watch ID` (hidden): the instance's watcher, spawned by `start` and `restart`. `main`
//! calls it before parsing the command line with clap (see `asked`); it is in the clap
//! definitions only so that they describe every way ocx is run.

use std::path::PathBuf;

use anyhow::Result;

use crate::cli::WatchArgs;
use crate::home::Home;
use crate::instance::watch;

pub fn run(home: &Home, args: WatchArgs) -> Result<()> {
    watch::run(home, &args.id)
}

/// The instance id when ocx was started as `ocx __watch ID`, exactly as `start` spawns it.
pub fn asked() -> Option<String> {
    let mut args = std::env::args_os().skip(1);
    match (args.next(), args.next(), args.next()) {
        (Some(cmd), Some(id), None) if cmd == "__watch" => id.into_string().ok(),
        _ => None,
    }
}

/// The watcher without clap: its home comes from `OCX_HOME`, which `start` always sets.
pub fn run_bare(id: &str) -> Result<()> {
    let home = Home::open(std::env::var_os("OCX_HOME").map(PathBuf::from).as_deref())?;
    watch::run(&home, id)
}
