//! An instance's state, in one place: the classifier that reads it (record + process table →
//! `Status`, used by `ls`, `gc`, `stop`, `restart` and the watcher alike) and the guard that
//! changes it (`Held`: the instance's lock and its record, whose methods are the transitions,
//! each checked and saved once).

use std::time::{Duration, SystemTime};

use anyhow::{Result, anyhow};

use crate::home::{Home, Lock};
use crate::process::{Proc, ProcId, Processes};
use crate::record::{self, Exit, Record, RestartPolicy, State};

/// A restart the watcher recorded as due is taken as stuck (its watcher frozen) once it is
/// overdue by this much: spawning holds the instance's lock, so a live watcher is never late.
const STUCK_AFTER: Duration = Duration::from_secs(60);

/// What an instance is doing, as observed now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Being started (the first time), not healthy yet.
    Starting,
    /// Alive and healthy, under its watcher.
    Running,
    /// Alive, but its health check fails or hangs.
    Unhealthy,
    /// Its watcher is bringing it back: waiting to, or started it and it is not healthy yet.
    Restarting,
    /// Serving, but its watcher is gone.
    Unsupervised,
    /// Its watcher gave up restarting it.
    Failed,
    /// Being stopped.
    Stopping,
    /// The server is gone and nothing will bring it back.
    Dead,
    /// Its watcher lives but the server is gone and no restart is recorded: for a moment after
    /// a crash (until the watcher records it), or for good when the watcher is stuck. Shown as
    /// `restarting`; gc acts on it only when it lasts.
    WatcherWithoutServer,
}

impl Status {
    /// The word `ls` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Starting => "starting",
            Status::Running => "running",
            Status::Unhealthy => "unhealthy",
            Status::Restarting | Status::WatcherWithoutServer => "restarting",
            Status::Unsupervised => "unsupervised",
            Status::Failed => "failed",
            Status::Stopping => "stopping",
            Status::Dead => "dead",
        }
    }

    /// Something will bring the server up soon without anyone asking: wait for it.
    pub fn coming(self) -> bool {
        matches!(self, Status::Starting | Status::Restarting | Status::WatcherWithoutServer)
    }
}

/// What the process table says about one record.
#[derive(Debug, Clone, Copy, Default)]
pub struct Facts {
    /// The recorded server, alive (same PID and start time).
    pub server: Option<Proc>,
    /// The recorded watcher, alive and vouched for: same PID, start time, and this instance's marker.
    pub watcher: Option<Proc>,
    /// Whether the server answered its health check; None when nobody asked.
    pub healthy: Option<bool>,
}

impl Facts {
    /// The process facts of every record, from one targeted refresh (servers with their memory,
    /// watchers with their environment, to check their marker).
    pub fn of_all(home: &Home, records: &[Record]) -> Result<Vec<Facts>> {
        let servers: Vec<u32> = records.iter().map(|r| r.pid).collect();
        let watchers: Vec<u32> = records.iter().filter_map(|r| r.watcher.map(|w| w.pid)).collect();
        let table = Processes::of_servers_and_watchers(&servers, &watchers)?;
        let marked: std::collections::HashMap<u32, String> =
            table.marked(home.root()).into_iter().map(|m| (m.proc.pid, m.instance)).collect();
        Ok(records
            .iter()
            .map(|r| {
                let watcher =
                    r.watcher.and_then(|w| table.find(&w)).filter(|w| marked.get(&w.pid).is_some_and(|i| *i == r.id));
                Facts { server: table.find(&r.server()), watcher, healthy: None }
            })
            .collect())
    }

    /// The process facts of one record.
    pub fn of(home: &Home, record: &Record) -> Result<Facts> {
        Ok(Facts::of_all(home, std::slice::from_ref(record))?.remove(0))
    }
}

/// The one classifier: what `record` is doing, given `facts` about its processes.
pub fn classify(record: &Record, facts: &Facts, now: SystemTime) -> Status {
    let supervised = facts.watcher.is_some();
    if facts.server.is_some() {
        return match (record.state, facts.healthy, supervised) {
            (State::Stopping, ..) => Status::Stopping,
            // Observed health wins over the recorded intent: a start whose ocx died may be healthy.
            (_, Some(true), true) => Status::Running,
            (_, Some(true), false) => Status::Unsupervised,
            // Its watcher restarted it; it is not healthy yet.
            (State::Starting, _, true) if record.restarts > 0 => Status::Restarting,
            (State::Starting, ..) => Status::Starting,
            (_, Some(false), _) => Status::Unhealthy,
            // Not asked: as recorded.
            (_, None, true) => Status::Running,
            (_, None, false) => Status::Unsupervised,
        };
    }
    if !supervised {
        return if record.failed.is_some() { Status::Failed } else { Status::Dead };
    }
    let pending = record
        .next_restart_at
        .as_deref()
        .and_then(|at| humantime::parse_rfc3339(at).ok())
        .is_some_and(|at| at + STUCK_AFTER > now);
    match record.state {
        State::Stopping => Status::Stopping,
        _ if record.failed.is_some() => Status::Failed,
        State::Starting if record.restarts > 0 => Status::Restarting,
        State::Starting => Status::Starting,
        _ if pending => Status::Restarting,
        // Its watcher is only recording the exit (and keeps the log) before it ends too.
        _ if record.restart_policy == RestartPolicy::No => Status::Dead,
        _ => Status::WatcherWithoutServer,
    }
}

/// An instance's record held under its lock: the only way its state changes. Each transition
/// checks that it is legal and saves the record once.
pub struct Held<'a> {
    home: &'a Home,
    record: Record,
    _lock: Lock,
}

impl<'a> Held<'a> {
    /// Take the instance's lock (waiting up to `timeout`) and load its record; None if the
    /// record is gone (stopped meanwhile).
    pub fn lock(home: &'a Home, id: &str, timeout: Duration) -> Result<Option<Held<'a>>> {
        let lock = home.lock_instance(id, timeout)?;
        Held::with(home, lock, id)
    }

    /// The record under a lock already taken; None if it is gone.
    pub fn with(home: &'a Home, lock: Lock, id: &str) -> Result<Option<Held<'a>>> {
        Ok(record::load(home, id)?.map(|record| Held { home, record, _lock: lock }))
    }

    /// A new instance's record, written for the first time (the caller holds the store lock,
    /// and `lock` is the new instance's).
    pub fn create(home: &'a Home, record: Record, lock: Lock) -> Held<'a> {
        Held { home, record, _lock: lock }
    }

    pub fn record(&self) -> &Record {
        &self.record
    }

    /// Its processes, as the process table says now.
    pub fn facts(&self) -> Result<Facts> {
        Facts::of(self.home, &self.record)
    }

    fn save(&self) -> Result<()> {
        record::save(self.home, &self.record)
    }

    /// The intent to stop, recorded before any signal: from here on the watcher exits instead
    /// of restarting, whatever comes. Legal from any state.
    pub fn begin_stop(&mut self) -> Result<()> {
        self.record.state = State::Stopping;
        self.save()
    }

    /// A (re)start is under way: a watcher is (about to be) spawned for it.
    /// The second half of a restart: legal only once `begin_stop` ended the old server; `exit`
    /// is how it ended (the restart itself), when it was running.
    pub fn begin_start(&mut self, exit: Option<Exit>) -> Result<()> {
        if self.record.state != State::Stopping {
            return Err(anyhow!("instance {} must be stopped before it is started again", self.record.id));
        }
        if let Some(exit) = exit {
            self.record.last_exit = Some(exit);
        }
        self.record.state = State::Starting;
        self.record.failed = None;
        self.record.next_restart_at = None;
        self.save()
    }

    /// The server (and its watcher, when `start` spawned one) runs as these processes; not
    /// healthy yet. Refused while a stop is under way.
    pub fn spawned(&mut self, server: ProcId, watcher: Option<ProcId>, restart: bool) -> Result<()> {
        if self.record.state == State::Stopping {
            return Err(anyhow!("instance {} is being stopped", self.record.id));
        }
        self.record.set_server(server);
        if let Some(watcher) = watcher {
            self.record.watcher = Some(watcher);
        }
        if restart {
            self.record.restarts += 1;
        }
        self.record.state = State::Starting;
        self.record.next_restart_at = None;
        self.save()
    }

    /// The server answered its health check: `running`. False (nothing saved) unless it was
    /// starting: a stop came meanwhile.
    pub fn healthy(&mut self, version: Option<String>) -> Result<bool> {
        if self.record.state != State::Starting {
            return Ok(false);
        }
        self.record.state = State::Running;
        self.record.opencode.version = version.or(self.record.opencode.version.take());
        self.save()?;
        Ok(true)
    }

    /// The server ended (`exit`); `restart_in` says when the watcher starts it again (at once
    /// included: recorded, so that nobody takes the instance for abandoned meanwhile).
    pub fn exited(&mut self, exit: Option<Exit>, restart_in: Option<Duration>) -> Result<()> {
        if self.record.state == State::Stopping {
            return Err(anyhow!("instance {} is being stopped", self.record.id));
        }
        if let Some(exit) = exit {
            self.record.last_exit = Some(exit);
        }
        self.record.next_restart_at = restart_in.map(crate::output::rfc3339_in);
        self.save()
    }

    /// Nothing brings the server back until `ocx restart`: the record stays, saying why (also
    /// after a restart that failed half-way: its `stopping` is taken back).
    pub fn failed(&mut self, why: String, exit: Option<Exit>) -> Result<()> {
        if let Some(exit) = exit {
            self.record.last_exit = Some(exit);
        }
        self.record.state = State::Running;
        self.record.failed = Some(why);
        self.record.next_restart_at = None;
        self.save()
    }

    /// The plan for the next spawn of a start that has not spawned yet (a new port after a
    /// clash): nothing runs, nothing is saved.
    pub fn plan(&mut self, record: Record) {
        self.record = record;
    }

    /// A new instance that never came up: its record and lock file go (its log stays).
    pub fn discard(&mut self) -> Result<()> {
        record::delete(self.home, &self.record.id)?;
        self.home.remove_instance_lock(&self.record.id);
        Ok(())
    }

    /// The instance is gone: its record and lock file go (its log stays).
    pub fn delete(self) -> Result<()> {
        record::delete(self.home, &self.record.id)?;
        self.home.remove_instance_lock(&self.record.id);
        Ok(())
    }

    /// New settings for the next start of an instance being restarted (`ocx up` after its
    /// fleet file changed): `to`'s command line, directory, environment, binary, address,
    /// policy and supervision, with the instance's own id, name, log, count of restarts, and
    /// password (a new one only when auth is turned on). Refused unless a restart is under way
    /// (`begin_stop` came first, so no watcher acts on the old settings meanwhile).
    pub fn reconfigure(&mut self, to: &Record) -> Result<()> {
        if self.record.state != State::Stopping {
            return Err(anyhow!("instance {} is not being restarted", self.record.id));
        }
        let r = &mut self.record;
        if r.opencode.path != to.opencode.path {
            r.opencode = to.opencode.clone();
        }
        r.password = match (&r.password, &to.password) {
            (_, None) => None,
            (Some(kept), Some(_)) => Some(kept.clone()),
            (None, Some(new)) => Some(new.clone()),
        };
        (r.args, r.env, r.dir) = (to.args.clone(), to.env.clone(), to.dir.clone());
        (r.hostname, r.port, r.url, r.username) = (to.hostname.clone(), to.port, to.url.clone(), to.username.clone());
        (r.restart_policy, r.supervision, r.project) = (to.restart_policy, to.supervision.clone(), to.project.clone());
        self.save()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::sample;

    fn proc() -> Proc {
        Proc { pid: 1, start_time: 0, start_key: 0, rss: 0 }
    }

    #[test]
    fn the_classifier_reads_record_and_processes_as_one() {
        let now = SystemTime::now();
        let alive = |healthy| Facts { server: Some(proc()), watcher: Some(proc()), healthy };
        let gone = |watcher: bool| Facts { server: None, watcher: watcher.then(proc), healthy: None };
        let mut r = sample("abc123", None);
        r.restart_policy = RestartPolicy::OnFailure;
        assert_eq!(classify(&r, &alive(Some(true)), now), Status::Running);
        assert_eq!(classify(&r, &alive(Some(false)), now), Status::Unhealthy);
        assert_eq!(classify(&r, &alive(None), now), Status::Running);
        assert_eq!(classify(&r, &Facts { watcher: None, ..alive(Some(true)) }, now), Status::Unsupervised);
        assert_eq!(classify(&r, &gone(false), now), Status::Dead);
        // A crash the watcher has not recorded yet, or a stuck watcher.
        assert_eq!(classify(&r, &gone(true), now), Status::WatcherWithoutServer);
        // A restart the watcher recorded, also an immediate one.
        r.next_restart_at = Some(humantime::format_rfc3339_millis(now).to_string());
        assert_eq!(classify(&r, &gone(true), now), Status::Restarting);
        assert_eq!(classify(&r, &gone(true), now + STUCK_AFTER * 2), Status::WatcherWithoutServer);
        r.next_restart_at = None;
        r.state = State::Starting;
        r.restarts = 1;
        assert_eq!(classify(&r, &alive(Some(false)), now), Status::Restarting);
        assert_eq!(classify(&r, &gone(true), now), Status::Restarting);
        r.restarts = 0;
        assert_eq!(classify(&r, &alive(Some(false)), now), Status::Starting);
        assert_eq!(classify(&r, &alive(Some(true)), now), Status::Running);
        r.state = State::Stopping;
        assert_eq!(classify(&r, &alive(Some(true)), now), Status::Stopping);
        assert_eq!(classify(&r, &gone(true), now), Status::Stopping);
        r.state = State::Running;
        r.failed = Some("gave up".into());
        assert_eq!(classify(&r, &gone(true), now), Status::Failed);
        assert_eq!(classify(&r, &gone(false), now), Status::Failed);
        r.failed = None;
        r.restart_policy = RestartPolicy::No;
        assert_eq!(classify(&r, &gone(true), now), Status::Dead);
    }
}
