//! What `ls` shows of each record: the classifier's status from one process-table refresh and,
//! for a live server, what its watcher observed (`instance::status`: health, version, what its
//! sessions do) — no server is asked. Only where there is no fresh observation (no watcher, an
//! older ocx's, a stale file), or with `--probe`, is the server asked directly, in parallel and
//! each within a short timeout.

use std::time::{Duration, SystemTime};

use anyhow::Result;

use super::state::{Facts, Status, classify};
use super::status;
use crate::home::Home;
use crate::output;
use crate::record::{Record, State};
use crate::server::Client;

/// A hung server must not make `ls` slow: each health check gets this long at most.
const HEALTH_TIMEOUT: Duration = Duration::from_millis(800);
/// At most this many health checks at once.
const PARALLEL: usize = 32;

/// What ocx observes about one record now.
pub struct Observed {
    pub status: Status,
    pub healthy: Option<bool>,
    pub version: Option<String>,
    pub uptime_s: Option<u64>,
    pub rss_bytes: Option<u64>,
    /// Its watcher is alive (and provably this instance's).
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

/// What the server's sessions are doing: up to three quick requests. Requests left over from
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

/// Observe every record: one targeted process-table refresh (servers and watchers), then each
/// watcher's observation (read on a thread per core: that is CPU work), then health checks of
/// the rest (`probe`: of every record), many in parallel (they wait on servers).
pub fn observe(home: &Home, records: &[Record], probe: bool) -> Result<Vec<Observed>> {
    let facts = Facts::of_all(home, records)?;
    let now = SystemTime::now();
    let items: Vec<(&Record, Facts)> = records.iter().zip(facts).collect();
    let mut observed = match probe {
        true => items.iter().map(|_| None).collect(),
        false => crate::parallel::map(&items, crate::parallel::cores_for(items.len()), |(r, facts)| {
            seen(home, r, *facts, now)
        }),
    };
    let ask: Vec<usize> = (0..items.len()).filter(|&i| observed[i].is_none()).collect();
    let asked = crate::parallel::map(&ask, PARALLEL, |&i| asking(items[i].0, items[i].1, now, HEALTH_TIMEOUT));
    for (i, o) in ask.into_iter().zip(asked) {
        observed[i] = Some(o);
    }
    Ok(observed.into_iter().flatten().collect())
}

/// One record's observation, from its process facts and its watcher's observation; with
/// `probe` (how long the server may take to answer), or without a fresh observation, by asking
/// the server.
pub fn observe_one(home: &Home, r: &Record, facts: Facts, now: SystemTime, probe: Option<Duration>) -> Observed {
    match probe {
        Some(timeout) => asking(r, facts, now, timeout),
        None => seen(home, r, facts, now).unwrap_or_else(|| asking(r, facts, now, HEALTH_TIMEOUT)),
    }
}

/// What the facts alone say, before any health is known.
fn unasked(facts: &Facts) -> Observed {
    Observed {
        status: Status::Dead,
        healthy: None,
        version: None,
        uptime_s: facts.server.map(|p| output::now_secs().saturating_sub(p.start_time)),
        rss_bytes: facts.server.map(|p| p.rss),
        supervised: facts.watcher.is_some(),
        restart_in_s: None,
        activity: None,
    }
}

/// The observation from the watcher's file, or None when the server must be asked: it lives,
/// and there is no fresh observation of it by a live watcher of this instance's.
fn seen(home: &Home, r: &Record, mut facts: Facts, now: SystemTime) -> Option<Observed> {
    let mut observed = unasked(&facts);
    let fresh = (facts.server.is_some() && facts.watcher.is_some()).then(|| status::fresh(home, r, now)).flatten();
    match fresh {
        Some(seen) => {
            facts.healthy = Some(seen.healthy);
            observed.healthy = Some(seen.healthy);
            observed.activity = seen.healthy.then(|| seen.activity(now));
            observed.version = seen.version;
        }
        None if facts.server.is_some() && r.state != State::Stopping => return None,
        None => {}
    }
    Some(classified(observed, r, &facts, now))
}

/// The observation with the server asked (if it lives), each request within `timeout`.
fn asking(r: &Record, mut facts: Facts, now: SystemTime, timeout: Duration) -> Observed {
    let mut observed = unasked(&facts);
    if facts.server.is_some() && r.state != State::Stopping {
        let client = super::client(r, timeout);
        let health = client.health();
        let healthy = health.as_ref().is_ok_and(|h| h.healthy);
        if healthy {
            observed.activity = activity(&client).ok().map(|a| a.summary());
        }
        facts.healthy = Some(healthy);
        observed.healthy = Some(healthy);
        observed.version = health.ok().and_then(|h| h.version);
    }
    classified(observed, r, &facts, now)
}

/// The status from the facts, and how long until a pending restart.
fn classified(mut observed: Observed, r: &Record, facts: &Facts, now: SystemTime) -> Observed {
    observed.status = classify(r, facts, now);
    if observed.status == Status::Restarting && facts.server.is_none() {
        observed.restart_in_s = r
            .next_restart_at
            .as_deref()
            .and_then(|at| humantime::parse_rfc3339(at).ok())
            .and_then(|at| at.duration_since(now).ok())
            .map(|left| left.as_secs() + 1);
    }
    observed
}
