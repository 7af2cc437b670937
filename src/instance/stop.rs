//! Stopping an instance: take its lock, vouch for the server (PID, start time, marker), mark
//! the intent `stopping`, TERM → grace → KILL, end every process still carrying the marker,
//! check the port, delete the record. The log stays.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use serde::Serialize;

use super::state::{Facts, Held};
use super::workspace::{self, Released};
use super::{Vouch, vouch};
use crate::home::Home;
use crate::hooks;
use crate::process::{self, PortOwner, Proc, Processes, Signal};
use crate::record::Record;

/// How long the processes left behind by a server get between TERM and KILL.
const ORPHAN_GRACE: Duration = Duration::from_secs(2);
/// How long a process gets to disappear after KILL.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How long a freed port may take to show as free.
const PORT_WAIT: Duration = Duration::from_secs(2);

/// What happened to one instance.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub id: String,
    pub name: Option<String>,
    /// `stopped`, `already gone` (dead, or stopped by another ocx meanwhile), `failed`, or
    /// `skipped` (what the caller stops it for no longer held once its lock was taken).
    pub result: &'static str,
    /// What ended the server: `TERM`, `KILL`, `watcher` (its watcher did, where ocx could not
    /// deliver the polite signal itself: Windows), or none when it was already gone.
    pub signal: Option<&'static str>,
    pub duration_ms: u64,
    /// Processes with the instance's marker that outlived the server and were ended.
    pub orphans_ended: usize,
    pub port: u16,
    pub port_free: bool,
    /// Who still holds the port, where the OS tells.
    pub port_owner: Option<String>,
    /// Something the user should know although the stop went through, e.g. that the polite
    /// signal could not be delivered and the server was ended at once.
    pub note: Option<String>,
    pub error: Option<String>,
    /// What became of the instance's `--worktree` and its branch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worktree: Option<Released>,
}

/// Stop one instance; never fails outright, the outcome says what went wrong. `discard`: also
/// remove its worktree and branch with the work in them.
pub fn stop(home: &Home, record: &Record, grace: Duration, discard: bool) -> Outcome {
    stop_inner(home, record, grace, discard, &|_, _| true)
}

/// Stop one instance if `still` holds for it once its lock is taken (its record and process
/// facts as they are then): a decision taken earlier (gc's) is checked again right before
/// acting, so a start, restart or watcher that changed it meanwhile is left alone.
pub fn stop_if(home: &Home, record: &Record, grace: Duration, still: impl Fn(&Record, &Facts) -> bool) -> Outcome {
    stop_inner(home, record, grace, false, &still)
}

fn stop_inner(
    home: &Home,
    record: &Record,
    grace: Duration,
    discard: bool,
    still: &dyn Fn(&Record, &Facts) -> bool,
) -> Outcome {
    let began = Instant::now();
    let mut outcome = Outcome {
        id: record.id.clone(),
        name: record.name.clone(),
        result: "failed",
        signal: None,
        duration_ms: 0,
        orphans_ended: 0,
        port: record.port,
        port_free: false,
        port_owner: None,
        note: None,
        error: None,
        worktree: None,
    };
    if let Err(err) = stop_locked(home, record, grace, discard, still, &mut outcome) {
        outcome.result = "failed";
        outcome.error = Some(format!("{err:#}"));
    }
    outcome.duration_ms = began.elapsed().as_millis() as u64;
    outcome
}

fn stop_locked(
    home: &Home,
    record: &Record,
    grace: Duration,
    discard: bool,
    still: &dyn Fn(&Record, &Facts) -> bool,
    outcome: &mut Outcome,
) -> Result<()> {
    // Another ocx stopping (or starting) this instance holds the lock for at most about this long.
    let timeout = grace + ORPHAN_GRACE + KILL_WAIT * 2 + Duration::from_secs(60);
    let Some(mut held) = Held::lock(home, &record.id, timeout)? else {
        outcome.result = "already gone";
        outcome.port_free = true;
        return Ok(());
    };
    if !still(held.record(), &held.facts()?) {
        outcome.result = "skipped";
        outcome.port_free = true;
        return Ok(());
    }
    let record = held.record().clone();
    let vouch = begin(home, &mut held)?;
    hooks::pause("stop:stopping");
    let ended = end_instance(home, &record, vouch, grace)?;
    outcome.result = if ended.signal.is_some() { "stopped" } else { "already gone" };
    (outcome.signal, outcome.note, outcome.orphans_ended) = (ended.signal, ended.note, ended.orphans_ended);
    (outcome.port_free, outcome.port_owner) = (ended.port_free, ended.port_owner);
    // Decided now, with nothing left running in it, and before the record goes: what holds work
    // stays (its marker too, so gc applies the same rule later).
    if let Some(wt) = &record.worktree {
        outcome.worktree = Some(workspace::release(home, &record.id, wt, discard));
    }
    held.delete()
}

/// Vouch for the held instance's server, then record the intent to stop it (a stop, or the
/// first half of a restart): from here on its watcher exits instead of restarting it, whatever
/// comes. A live PID ocx cannot vouch for is an error, and nothing is written.
pub fn begin(home: &Home, held: &mut Held) -> Result<Vouch> {
    let record = held.record();
    let vouch = vouch(home, &record.id, &record.server())?;
    if let Vouch::Unproven = vouch {
        return Err(anyhow!(
            "PID {} is alive with the recorded start time but does not carry this instance's marker; not signalling it",
            record.pid
        ));
    }
    held.begin_stop()?;
    Ok(vouch)
}

/// How an instance's processes ended.
pub struct Ended {
    /// The signal that ended the server: `TERM`, `KILL`, `watcher`, or none when it was
    /// already gone (nothing was sent).
    pub signal: Option<&'static str>,
    pub note: Option<String>,
    pub orphans_ended: usize,
    pub port_free: bool,
    pub port_owner: Option<String>,
}

/// End an instance whose intent `stopping` is recorded (the caller holds its lock and vouched
/// for its server): tell its watcher, end the server (TERM, up to `grace`, KILL), end every
/// process still carrying the marker (the watcher too, if it is still there), check the port.
pub fn end_instance(home: &Home, record: &Record, server: Vouch, grace: Duration) -> Result<Ended> {
    let told = tell_watcher(home, record);
    let (signal, note) = match server {
        Vouch::Ours(server) => end_process(&server, grace, told)?,
        Vouch::Gone | Vouch::Unproven => (None, None),
    };
    let orphans_ended = end_marked(home, &record.id);
    let (port_free, port_owner) = port_after_stop(record);
    Ok(Ended { signal, note, orphans_ended, port_free, port_owner })
}

/// Ask the instance's watcher, if it is alive and provably the instance's, to end its server
/// and exit without restarting it. Whether it was told.
fn tell_watcher(home: &Home, record: &Record) -> bool {
    let Some(watcher) = record.watcher else { return false };
    match vouch(home, &record.id, &watcher) {
        Ok(Vouch::Ours(proc)) => process::request_stop(home.root(), &record.id, &proc).unwrap_or(false),
        _ => false,
    }
}

/// TERM (unless `grace` is zero), wait up to `grace`, then KILL. Returns the signal that ended
/// it (None: it was gone before anything was sent), and a note when the polite signal could
/// not be delivered: then KILL comes at once, unless the watcher was told (`told`) and
/// delivers it itself (on Windows only a process sharing the server's console can).
fn end_process(proc: &Proc, grace: Duration, told: bool) -> Result<(Option<&'static str>, Option<String>)> {
    let mut note = None;
    if !grace.is_zero() {
        match process::signal(proc, Signal::Term) {
            // Gone already: its watcher, told first, ended it; or nothing did (it was gone).
            Ok(false) => return Ok((told.then_some("watcher"), None)),
            Ok(true) if process::wait_gone(proc, grace) => return Ok((Some("TERM"), None)),
            Ok(true) => {}
            // What the watcher sent, ocx cannot tell: it ended its server.
            Err(_) if told && process::wait_gone(proc, grace) => return Ok((Some("watcher"), None)),
            Err(_) if told => {}
            // A detached server without a watcher: waiting out the grace would change nothing.
            Err(err) => note = Some(format!("the polite signal could not be delivered ({err:#}); ended it at once")),
        }
    }
    if !process::signal(proc, Signal::Kill)? {
        // Gone meanwhile (after the polite signal, or on its own).
        return Ok((if grace.is_zero() { None } else { Some("TERM") }, note));
    }
    if !process::wait_gone(proc, KILL_WAIT) {
        return Err(anyhow!("PID {} is still alive after KILL", proc.pid));
    }
    Ok((Some("KILL"), note))
}

/// End every process carrying this instance's marker (TERM, a short grace, KILL), such as the
/// agent's shell commands, which run in sessions of their own and outlive the server.
/// Returns how many there were.
pub fn end_marked(home: &Home, id: &str) -> usize {
    let Ok(table) = Processes::marked_in(home.root()) else { return 0 };
    let procs: Vec<Proc> = table.marked(home.root()).into_iter().filter(|m| m.instance == id).map(|m| m.proc).collect();
    end_all(&procs);
    procs.len()
}

/// TERM to all, one shared grace period, KILL to those still there.
pub fn end_all(procs: &[Proc]) {
    for p in procs {
        let _ = process::signal(p, Signal::Term);
    }
    let deadline = Instant::now() + ORPHAN_GRACE;
    for p in procs {
        let left = deadline.saturating_duration_since(Instant::now());
        if !process::wait_gone(p, left) {
            let _ = process::signal(p, Signal::Kill);
            process::wait_gone(p, KILL_WAIT);
        }
    }
}

/// Whether the instance's port is free again, and if not, who holds it.
fn port_after_stop(record: &Record) -> (bool, Option<String>) {
    let deadline = Instant::now() + PORT_WAIT;
    loop {
        if process::port_is_free(&record.hostname, record.port) {
            return (true, None);
        }
        if Instant::now() >= deadline {
            return (false, process::port_owner(record.port).as_ref().map(PortOwner::to_string));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
