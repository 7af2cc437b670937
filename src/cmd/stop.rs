//! `ocx stop`: end a server and everything it started, then delete its record.
//!
//! The protocol, per instance: take its lock; `state: stopping`; vouch for the PID (start time
//! and marker) before any signal; TERM, wait up to the grace period, KILL; end every process
//! still carrying the marker; check the port; delete the record; keep the log.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use serde::Serialize;

use crate::cli::StopArgs;
use crate::cmd::{parallel_map, pause_point};
use crate::error::{Failure, code};
use crate::home::Home;
use crate::output;
use crate::process::{self, PortOwner, Proc, Processes, Signal};
use crate::record::{self, Record, State};

/// How long the processes left behind by a server get between TERM and KILL.
const ORPHAN_GRACE: Duration = Duration::from_secs(2);
/// How long a process gets to disappear after KILL.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How long a freed port may take to show as free.
const PORT_WAIT: Duration = Duration::from_secs(2);
/// At most this many instances are stopped at once.
const PARALLEL: usize = 32;

/// What happened to one instance.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub id: String,
    pub name: Option<String>,
    /// `stopped`, `already gone` (dead, or stopped by another ocx meanwhile) or `failed`.
    pub result: &'static str,
    /// The signal that ended the server: `TERM`, `KILL`, or none when it was already gone.
    pub signal: Option<&'static str>,
    pub duration_ms: u64,
    /// Processes with the instance's marker that outlived the server and were ended.
    pub orphans_ended: usize,
    pub port: u16,
    pub port_free: bool,
    /// Who still holds the port, where the OS tells.
    pub port_owner: Option<String>,
    pub error: Option<String>,
}

pub fn run(home: &Home, args: StopArgs) -> Result<()> {
    let records = record::valid(&record::list(home)?);
    let targets: Vec<Record> = if args.all {
        records.clone()
    } else {
        // Resolve every name before stopping anything: a typo stops nothing.
        let mut targets: Vec<Record> = Vec::new();
        for query in &args.instances {
            let found = record::resolve(&records, query)?;
            if !targets.iter().any(|t| t.id == found.id) {
                targets.push(found.clone());
            }
        }
        targets
    };
    let grace = if args.force { Duration::ZERO } else { args.grace };
    let outcomes = parallel_map(&targets, PARALLEL, |r| stop_one(home, r, grace));

    if args.json {
        output::print_json(&serde_json::to_value(&outcomes)?)?;
    } else if !outcomes.is_empty() {
        let mut table = output::table(["ID", "NAME", "RESULT", "SIGNAL", "TOOK", "ORPHANS", "PORT"]);
        for o in &outcomes {
            let port = match (&o.port_owner, o.port_free) {
                (_, true) => format!("{} free", o.port),
                (Some(owner), false) => format!("{} held by {owner}", o.port),
                (None, false) => format!("{} still bound", o.port),
            };
            table.add_row([
                o.id.as_str(),
                o.name.as_deref().unwrap_or("-"),
                o.result,
                o.signal.unwrap_or("-"),
                &output::elapsed(Duration::from_millis(o.duration_ms)),
                &o.orphans_ended.to_string(),
                &port,
            ]);
        }
        output::print_table(&mut table)?;
    }
    for o in outcomes.iter().filter_map(|o| o.error.as_ref().map(|e| (o, e))) {
        eprintln!("error: {}: {}", o.0.id, o.1);
    }
    if outcomes.iter().any(|o| o.result == "failed") {
        return Err(anyhow!(Failure::silent(code::FAILED)));
    }
    Ok(())
}

/// Stop one instance; never fails outright, the outcome says what went wrong.
pub fn stop_one(home: &Home, record: &Record, grace: Duration) -> Outcome {
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
        error: None,
    };
    if let Err(err) = stop_locked(home, record, grace, &mut outcome) {
        outcome.result = "failed";
        outcome.error = Some(format!("{err:#}"));
    }
    outcome.duration_ms = began.elapsed().as_millis() as u64;
    outcome
}

fn stop_locked(home: &Home, record: &Record, grace: Duration, outcome: &mut Outcome) -> Result<()> {
    // Another ocx stopping (or starting) this instance holds the lock for at most about this long.
    let _lock = home.lock_instance(&record.id, grace + ORPHAN_GRACE + KILL_WAIT * 2 + Duration::from_secs(60))?;
    let Some(mut record) = record::load(home, &record.id)? else {
        outcome.result = "already gone";
        outcome.port_free = true;
        return Ok(());
    };
    // The instance's lock makes this write exclusive; the store lock is only for creating records.
    record.state = State::Stopping;
    record::save(home, &record)?;
    pause_point("stop:stopping");

    match vouch(home, &record)? {
        Vouch::Ours(server) => {
            outcome.signal = Some(end_process(&server, grace)?);
            outcome.result = "stopped";
        }
        Vouch::Gone => outcome.result = "already gone",
        Vouch::Unproven => {
            return Err(anyhow!(
                "PID {} is alive with the recorded start time but does not carry this instance's marker; not signalling it",
                record.pid
            ));
        }
    }
    outcome.orphans_ended = end_marked(home, &record.id);
    (outcome.port_free, outcome.port_owner) = port_after_stop(&record);
    record::delete(home, &record.id)?;
    home.remove_instance_lock(&record.id);
    Ok(())
}

enum Vouch {
    /// The recorded server: same PID, same start time, carries the marker.
    Ours(Proc),
    /// No process with that PID and start time: the server is gone.
    Gone,
    /// Same PID and start time but no readable marker: never signalled.
    Unproven,
}

fn vouch(home: &Home, record: &Record) -> Result<Vouch> {
    let table = Processes::of_with_environ(&[record.pid])?;
    let Some(server) = table.same(record.pid, record.pid_started_at) else { return Ok(Vouch::Gone) };
    let marked = table.marked(home.root()).iter().any(|m| m.proc.pid == server.pid && m.instance == record.id);
    Ok(if marked { Vouch::Ours(server) } else { Vouch::Unproven })
}

/// TERM (unless `grace` is zero), wait up to `grace`, then KILL. Returns the signal that ended it.
fn end_process(proc: &Proc, grace: Duration) -> Result<&'static str> {
    if !grace.is_zero() {
        process::signal(proc, Signal::Term)?;
        if process::wait_gone(proc, grace) {
            return Ok("TERM");
        }
    }
    process::signal(proc, Signal::Kill)?;
    if !process::wait_gone(proc, KILL_WAIT) {
        return Err(anyhow!("PID {} is still alive after KILL", proc.pid));
    }
    Ok("KILL")
}

/// End every process carrying this instance's marker (TERM, a short grace, KILL), such as the
/// agent's shell commands, which run in sessions of their own and outlive the server.
/// Returns how many there were.
pub fn end_marked(home: &Home, id: &str) -> usize {
    let Ok(table) = Processes::with_markers() else { return 0 };
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
