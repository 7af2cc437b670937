//! The instance protocol, below the commands and shared by them: launching a server and
//! waiting until it is healthy (`launch`), stopping it and all it left behind (`stop`), and here
//! whether an instance's server is alive, provably ours, and healthy.

pub mod launch;
pub mod log;
pub mod resolve;
pub mod stop;
pub mod watch;

use std::time::Duration;

use anyhow::{Result, anyhow};

use crate::error::{Failure, code};
use crate::home::Home;
use crate::output;
use crate::process::{Proc, ProcId, Processes};
use crate::record::{Record, RestartPolicy, State};
use crate::server::Client;

/// A hung server must not make `ls` slow: each health check gets this long at most.
const HEALTH_TIMEOUT: Duration = Duration::from_millis(800);
/// At most this many health checks at once.
const PARALLEL: usize = 32;
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
    let deadline = std::time::Instant::now() + UNPROVEN_WAIT;
    loop {
        let table = Processes::of_with_environ(&[target.pid])?;
        let Some(proc) = table.find(target) else { return Ok(Vouch::Gone) };
        if table.marked(home.root()).iter().any(|m| m.proc.pid == proc.pid && m.instance == id) {
            return Ok(Vouch::Ours(proc));
        }
        if std::time::Instant::now() >= deadline {
            return Ok(Vouch::Unproven);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
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
    /// `running`, `unhealthy`, `starting`, `restarting`, `unsupervised`, `stopping`, `failed`
    /// or `dead`.
    pub status: &'static str,
    pub healthy: Option<bool>,
    pub version: Option<String>,
    pub uptime_s: Option<u64>,
    pub rss_bytes: Option<u64>,
    /// Its watcher is alive.
    pub supervised: bool,
    /// Seconds until the watcher starts the server again, while it waits to.
    pub restart_in_s: Option<u64>,
    /// What the server is doing: `idle`, `busy N`, `asking` (waiting for an answer).
    pub activity: Option<String>,
}

/// What a server's sessions are doing.
pub struct Activity {
    /// Sessions that are not idle, with their status (`busy`, `retry`).
    pub busy: serde_json::Map<String, serde_json::Value>,
    /// Busy sessions waiting for a permission or a question to be answered.
    pub asking: std::collections::HashSet<String>,
}

impl Activity {
    /// `idle`, `busy 2`, or `asking` when any session waits for an answer.
    pub fn summary(&self) -> String {
        match (self.busy.len(), self.asking.is_empty()) {
            (0, _) => "idle".to_string(),
            (_, false) => "asking".to_string(),
            (n, true) => format!("busy {n}"),
        }
    }
}

/// What the server's sessions are doing: three quick requests. Requests left over from
/// aborted prompts stay listed by the server; only those of busy sessions count.
pub fn activity(client: &Client) -> Result<Activity> {
    let busy = client.busy_sessions()?;
    // Only a busy session can be waiting for an answer: an idle server costs one request.
    if busy.is_empty() {
        return Ok(Activity { busy, asking: Default::default() });
    }
    let asking = client
        .permissions()?
        .into_iter()
        .chain(client.questions()?)
        .filter_map(|r| r["sessionID"].as_str().map(str::to_string))
        .filter(|s| busy.contains_key(s))
        .collect();
    Ok(Activity { busy, asking })
}

/// Observe every record: one targeted process-table refresh (servers and watchers), then
/// health checks in parallel for the live servers, each bounded by a short timeout.
pub fn observe(records: &[Record]) -> Result<Vec<Observed>> {
    let pids: Vec<u32> = records.iter().flat_map(|r| [Some(r.pid), r.watcher.map(|w| w.pid)]).flatten().collect();
    let table = Processes::of(&pids)?;
    let now = output::now_secs();
    Ok(crate::parallel::map(records, PARALLEL, |r| {
        let supervised = r.watcher.is_some_and(|w| table.find(&w).is_some());
        let restart_in_s = r
            .next_restart_at
            .as_deref()
            .and_then(|at| humantime::parse_rfc3339(at).ok())
            .and_then(|at| at.duration_since(std::time::SystemTime::now()).ok())
            .map(|left| left.as_secs() + 1);
        let mut observed = Observed {
            status: "dead",
            healthy: None,
            version: None,
            uptime_s: None,
            rss_bytes: None,
            supervised,
            restart_in_s: None,
            activity: None,
        };
        let Some(proc) = table.find(&r.server()) else {
            observed.status = match (r.state, supervised) {
                (State::Stopping, true) => "stopping",
                _ if r.failed.is_some() => "failed",
                (State::Starting, true) => "starting",
                // Its watcher is only recording the exit (and keeps the log) before it ends too.
                (_, true) if r.restart_policy == RestartPolicy::No => "dead",
                (_, true) => "restarting",
                (_, false) => "dead",
            };
            observed.restart_in_s = restart_in_s.filter(|_| supervised);
            return observed;
        };
        observed.uptime_s = Some(now.saturating_sub(proc.start_time));
        observed.rss_bytes = Some(proc.rss);
        if r.state == State::Stopping {
            observed.status = "stopping";
            return observed;
        }
        let client = Client::for_record(r, HEALTH_TIMEOUT);
        let health = client.health();
        let healthy = health.as_ref().is_ok_and(|h| h.healthy);
        if healthy {
            observed.activity = activity(&client).ok().map(|a| a.summary());
        }
        // Observed health wins over the recorded intent: a start whose ocx died may be healthy.
        observed.status = match (healthy, r.state, supervised) {
            (true, _, true) => "running",
            (true, _, false) => "unsupervised",
            // Its watcher restarted it; it is not healthy yet.
            (false, State::Starting, true) if r.restarts > 0 => "restarting",
            (false, State::Starting, _) => "starting",
            (false, _, _) => "unhealthy",
        };
        observed.healthy = Some(healthy);
        observed.version = health.ok().and_then(|h| h.version);
        observed
    }))
}
