//! The instance protocol, below the commands and shared by them: launching a server and
//! waiting until it is healthy (`launch`), stopping it and all it left behind (`stop`), and here
//! whether an instance's server is alive, provably ours, and healthy.

pub mod launch;
pub mod stop;

use std::time::Duration;

use anyhow::{Result, anyhow};

use crate::error::{Failure, code};
use crate::home::Home;
use crate::output;
use crate::process::{Proc, ProcId, Processes};
use crate::record::{Record, State};
use crate::server::Client;

/// A hung server must not make `ls` slow: each health check gets this long at most.
const HEALTH_TIMEOUT: Duration = Duration::from_millis(800);
/// At most this many health checks at once.
const PARALLEL: usize = 32;

/// Whether a recorded process may be signalled.
pub enum Vouch {
    /// The recorded process: same PID, same start time, and it carries the instance's marker.
    Ours(Proc),
    /// No process with that PID and start time: it is gone.
    Gone,
    /// Same PID and start time but no readable marker: never signalled.
    Unproven,
}

/// Vouch for the process `target` as instance `id`'s, from one look at the process table.
pub fn vouch(home: &Home, id: &str, target: &ProcId) -> Result<Vouch> {
    let table = Processes::of_with_environ(&[target.pid])?;
    let Some(proc) = table.find(target) else { return Ok(Vouch::Gone) };
    let marked = table.marked(home.root()).iter().any(|m| m.proc.pid == proc.pid && m.instance == id);
    Ok(if marked { Vouch::Ours(proc) } else { Vouch::Unproven })
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

/// What ocx observes about one record now.
pub struct Observed {
    /// `running`, `unhealthy`, `starting`, `stopping` or `dead`.
    pub status: &'static str,
    pub healthy: Option<bool>,
    pub version: Option<String>,
    pub uptime_s: Option<u64>,
    pub rss_bytes: Option<u64>,
}

/// Observe every record: one targeted process-table refresh, then health checks in parallel
/// for the live ones, each bounded by a short timeout.
pub fn observe(records: &[Record]) -> Result<Vec<Observed>> {
    let table = Processes::of(&records.iter().map(|r| r.pid).collect::<Vec<_>>())?;
    let now = output::now_secs();
    Ok(crate::parallel::map(records, PARALLEL, |r| {
        let Some(proc) = table.find(&r.server()) else {
            return Observed { status: "dead", healthy: None, version: None, uptime_s: None, rss_bytes: None };
        };
        let uptime_s = Some(now.saturating_sub(proc.start_time));
        let rss_bytes = Some(proc.rss);
        if r.state == State::Stopping {
            return Observed { status: "stopping", healthy: None, version: None, uptime_s, rss_bytes };
        }
        let health = Client::for_record(r, HEALTH_TIMEOUT).health();
        let healthy = health.as_ref().is_ok_and(|h| h.healthy);
        // Observed health wins over the recorded intent: a start whose ocx died may be healthy.
        let status = match (healthy, r.state) {
            (true, _) => "running",
            (false, State::Starting) => "starting",
            (false, _) => "unhealthy",
        };
        Observed { status, healthy: Some(healthy), version: health.ok().and_then(|h| h.version), uptime_s, rss_bytes }
    }))
}
