//! The instance protocol, below the commands and shared by them. Start here:
//! - `state`: an instance's state in one place — the classifier (record + process table →
//!   status) that every command reads, and `Held`, the guard whose methods are its transitions;
//! - `launch` (start and wait until healthy), `restart`, `stop`: what commands do to instances;
//! - `watch`: the watcher process that supervises one server; `report`: what it tells `launch`;
//! - `spawn` (the server's command line, port, record) and `opencode` (the binary, its version);
//! - `gc`: cleaning up after crashes; `observe`: what `ls` shows; `log`: the capped log; `resolve`: which instance a user means.
//!
//! Here: whether an instance's server is alive and provably ours, and waiting until it serves.

pub mod gc;
pub mod install;
pub mod launch;
pub mod log;
pub mod observe;
pub mod opencode;
pub mod report;
pub mod resolve;
pub mod restart;
pub mod spawn;
pub mod state;
pub mod stop;
pub mod watch;

use std::time::{Duration, Instant, SystemTime};

use anyhow::{Result, anyhow};

use crate::error::{self, Failure, code};
use crate::home::Home;
use crate::output;
use crate::process::{self, Proc, ProcId, Processes};
use crate::record::{self, Record};
use crate::server::Client;
use state::{Facts, Status};

/// How long a command that talks to a server waits for one its watcher is bringing back, when
/// it has no `--timeout` of its own (a restarted server is `unresponsive` after as long).
pub const SERVE_WAIT: Duration = Duration::from_secs(120);
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

/// The instance's record once its server serves: at once when it does; when its watcher is
/// bringing it back (`starting`, `restarting`), after waiting for it (saying so on stderr) up to
/// `timeout` (exit 4 after); a dead, failed or stopping instance fails at once with a hint. A
/// host's instance (`remote`) is taken as its ocx listed it.
pub fn wait_serving(home: &Home, record: &Record, timeout: Duration) -> Result<Record> {
    if record.remote.is_some() {
        return Ok(record.clone());
    }
    let deadline = Instant::now() + timeout;
    let label = record.label().to_string();
    let mut said = false;
    loop {
        let Some(now) = record::load(home, &record.id)? else {
            return Err(anyhow!(Failure::new(code::NOT_FOUND, format!("instance {label} is gone (stopped)"))));
        };
        let seen = observe::observe_one(&now, Facts::of(home, &now)?, SystemTime::now());
        match seen.status {
            Status::Running | Status::Unsupervised => return Ok(now),
            // Its watcher brings it back (a wedged server, too, once its checks keep failing).
            status if status.coming() || (status == Status::Unhealthy && seen.supervised) => {
                if !said {
                    output::note(format_args!(
                        "instance {label} is {}; waiting until it is healthy (up to {})",
                        status.as_str(),
                        output::duration(timeout)
                    ));
                    said = true;
                }
            }
            Status::Unhealthy => {
                return Err(anyhow!(
                    Failure::new(code::FAILED, format!("instance {label} is not healthy"))
                        .hint(format!("see its log: ocx logs {label}; `ocx restart {label}` starts it afresh"))
                ));
            }
            status => {
                return Err(anyhow!(
                    Failure::new(
                        code::FAILED,
                        format!("instance {label} is {}: its server is not running", status.as_str())
                    )
                    .hint(format!("`ocx restart {label}` starts it again (same port and password)"))
                ));
            }
        }
        if Instant::now() >= deadline {
            return Err(anyhow!(
                Failure::new(code::TIMED_OUT, format!("instance {label} did not become healthy in time"))
                    .hint(format!("see its log: ocx logs {label}"))
            ));
        }
        if process::interrupted() {
            return Err(error::interrupted("interrupted while waiting for the instance"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
