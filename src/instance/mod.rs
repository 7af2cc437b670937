//! The instance protocol, below the commands and shared by them. Start here:
//! - `state`: an instance's state in one place — the classifier (record + process table →
//!   status) that every command reads, and `Held`, the guard whose methods are its transitions;
//! - `launch` (start and wait until healthy), `restart`, `stop`: what commands do to instances;
//! - `watch`: the watcher process that supervises one server; `report`: what it tells `launch`;
//! - `spawn` (the server's command line, port, record) and `opencode` (the binary, its version);
//! - `gc`: cleaning up after crashes; `observe`: what `ls` shows; `log`: the capped log; `resolve`: which instance a user means.
//!
//! Here: whether an instance's server is alive and provably ours (`serving`: waiting until it
//! serves).

pub mod gc;
pub mod install;
pub mod launch;
pub mod log;
pub mod observe;
pub mod opencode;
pub mod report;
pub mod resolve;
pub mod restart;
pub mod resurrect;
pub mod serving;
pub mod spawn;
pub mod state;
pub mod status;
pub mod stop;
pub mod watch;
pub mod workspace;

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

use crate::error::{Failure, code};
use crate::home::Home;
use crate::process::{Proc, ProcId, Processes};
use crate::record::Record;
use crate::server::Client;

/// How long a process without a readable marker is looked at again before it counts as
/// unproven (one that is exiting is gone well within it).
const UNPROVEN_WAIT: Duration = Duration::from_secs(2);

/// Whether a recorded process may be signalled.
pub enum Vouch {
    /// The recorded process: same PID, same start time, and it carries the instance's marker.
    Ours(Proc),
    /// No process with that PID and start time: it is gone.
    Gone,
    /// Same PID and start time but no readable marker: never signalled.
    Unproven,
}

/// Vouch for the process `target` as instance `id`'s. A process that is exiting cannot show
/// its marker any more (on Linux its environment reads empty from the moment its memory is
/// torn down, before it even turns zombie): without the marker it is looked at again for a
/// short while, until it shows the marker or is gone.
pub fn vouch(home: &Home, id: &str, target: &ProcId) -> Result<Vouch> {
    let deadline = Instant::now() + UNPROVEN_WAIT;
    loop {
        let table = Processes::of_with_environ(&[target.pid])?;
        let Some(proc) = table.find(target) else { return Ok(Vouch::Gone) };
        if table.marked(home.root()).iter().any(|m| m.proc.pid == proc.pid && m.instance == id) {
            return Ok(Vouch::Ours(proc));
        }
        if Instant::now() >= deadline {
            return Ok(Vouch::Unproven);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// An HTTP client for the instance's server, with its credentials.
pub fn client(record: &Record, timeout: Duration) -> Client {
    Client::new(&record.url, &record.username, record.password.as_deref(), timeout)
}

/// The instance's server if it is alive: the recorded PID, started when recorded.
pub fn server(record: &Record) -> Result<Option<Proc>> {
    Ok(Processes::of(&[record.pid])?.find(&record.server()))
}

/// The instance's server, or an error saying it is not running (for commands that talk to it).
pub fn require_server(record: &Record) -> Result<Proc> {
    server(record)?.ok_or_else(|| {
        let label = record.label();
        anyhow!(
            Failure::new(code::FAILED, format!("instance {label} is not running (its server process is gone)"))
                .hint(format!("start a new one with `ocx start`; `ocx stop {label}` removes the old record"))
        )
    })
}
