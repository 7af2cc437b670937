//! Waiting until an instance's server serves: what `run`, `wait`, `sessions` and `attach` do
//! before they talk to it, so that an instance its watcher is bringing back is waited for, not
//! failed.

use std::time::{Duration, Instant, SystemTime};

use anyhow::{Result, anyhow};

use super::observe;
use super::state::{Facts, Status};
use crate::error::{self, Failure, code};
use crate::home::Home;
use crate::output;
use crate::process;
use crate::record::{self, Record};
use crate::turn;

/// How long a command that talks to a server waits for one its watcher is bringing back, when
/// it has no `--timeout` of its own (a restarted server is `unresponsive` after as long).
pub const SERVE_WAIT: Duration = Duration::from_secs(120);
/// How long the server may take to answer whether it is healthy.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The instance's record once its server serves: at once when it does; when its watcher is
/// bringing it back (`starting`, `restarting`), after waiting for it (saying so on stderr) up to
/// `deadline` (the command's `--timeout`; exit 4 after), or `SERVE_WAIT`; a dead, failed or stopping instance fails at once with a hint. A
/// host's instance (`remote`) is taken as its ocx listed it.
pub fn wait_serving(home: &Home, record: &Record, deadline: Option<Instant>) -> Result<Record> {
    wait_serving_saying(home, record, deadline, true)
}

/// `wait_serving`, saying on stderr that it waits only when `say` (`batch` draws its progress there).
pub fn wait_serving_saying(home: &Home, record: &Record, deadline: Option<Instant>, say: bool) -> Result<Record> {
    if record.remote.is_some() {
        return Ok(record.clone());
    }
    let deadline = deadline.unwrap_or_else(|| Instant::now() + SERVE_WAIT);
    let timeout = deadline.saturating_duration_since(Instant::now());
    let label = record.label().to_string();
    let mut said = !say;
    loop {
        let Some(now) = record::load(home, &record.id)? else {
            return Err(anyhow!(Failure::new(code::NOT_FOUND, format!("instance {label} is gone (stopped)"))));
        };
        // Asked live (a server that just died still has a fresh observation), with the time a
        // loaded server may take, as the watcher's own probes give it.
        let seen = observe::observe_one(home, &now, Facts::of(home, &now)?, SystemTime::now(), Some(PROBE_TIMEOUT));
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
                        match status {
                            Status::Stopping => format!("instance {label} is being stopped"),
                            _ => format!("instance {label} is {}: its server is not running", status.as_str()),
                        }
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

/// An instance's server as `run` and `wait` follow a turn on it: when the event stream drops,
/// is it gone, or restarted by its watcher (a new PID, one restart more)? Another host's
/// instance is not looked at here.
pub struct Watched<'a> {
    pub home: &'a Home,
    pub record: &'a Record,
}

impl turn::Liveness for Watched<'_> {
    fn fate(&self) -> Result<turn::Fate> {
        let was = self.record;
        if was.remote.is_some() || super::server(was)?.is_some() {
            return Ok(turn::Fate::Alive);
        }
        let restarted = record::load(self.home, &was.id)
            .ok()
            .flatten()
            .is_some_and(|now| now.pid != was.pid && now.restarts > was.restarts);
        Ok(if restarted { turn::Fate::Restarted } else { turn::Fate::Gone })
    }

    fn label(&self) -> &str {
        self.record.label()
    }

    fn id(&self) -> &str {
        &self.record.id
    }
}
