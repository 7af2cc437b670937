//! Cleaning up what crashes and killed servers left behind (`ocx gc`).
//!
//! It decides under the store lock (records, files and process table at one moment), from the
//! one classifier; it acts outside that lock through the same stop protocol as `ocx stop`,
//! re-checking each decision under the instance's lock right before acting, so nothing is
//! signalled that ocx cannot vouch for and nothing a restart or a watcher changed meanwhile is
//! stopped; and it deletes logs under the store lock again, so a start that began meanwhile
//! never loses its new log.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use serde::Serialize;

use super::state::{Facts, Held, Status, classify};
use super::{client, log, stop, workspace};
use crate::home::{self, Home};
use crate::parallel;
use crate::process::{self, Marked, Processes};
use crate::record::{self, Entry, InvalidKind, Record};

/// A server whose start or stop was abandoned gets this long after TERM before KILL.
const GRACE: Duration = Duration::from_secs(5);
/// How long a watcher whose server is gone gets to record it before gc takes it for stuck.
const WATCHER_GRACE: Duration = Duration::from_secs(2);
/// How long an abandoned start's server gets to answer its health check.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub dry_run: bool,
    /// Records removed (or that would be), with how their instance ended.
    pub records: Vec<Stale>,
    /// Abandoned starts whose server is healthy: recorded as running instead of ended.
    pub promoted: Vec<String>,
    /// Instances whose watcher gave up restarting them: kept, for the user to restart or stop.
    pub failed: Vec<String>,
    /// Processes with a marker of this home whose instance has no record file at all, ended.
    pub orphans: Vec<Orphan>,
    /// Ports of removed instances still bound after their processes are gone.
    pub ghost_ports: Vec<GhostPort>,
    pub corrupt: Vec<MovedAside>,
    /// Records written by a newer ocx: left where they are, their processes untouched.
    pub newer: Vec<MovedAside>,
    pub temp_files: Vec<PathBuf>,
    pub logs_deleted: Vec<PathBuf>,
    /// Instances that should be running and are not (after a reboot, or with their watcher
    /// killed): kept, for `ocx resurrect` to bring back (or `ocx stop` to forget).
    pub resurrectable: Vec<String>,
    /// Instances skipped because another ocx (or their watcher) is starting, restarting or
    /// stopping them right now, or did since gc looked.
    pub busy: Vec<String>,
    /// Worktrees ocx made whose instance is gone, and what became of them (`stop`'s rule).
    pub worktrees: Vec<workspace::Released>,
    /// `--isolate` databases of instances that no longer exist, deleted with --logs.
    pub databases_deleted: Vec<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct Stale {
    pub id: String,
    pub name: Option<String>,
    /// Why it is stale: `process gone`, `PID reused`, `abandoned start`, `abandoned stop`,
    /// `watcher without server` (a watcher alive with no server and no restart due).
    pub reason: &'static str,
    /// `removed`, `stopped` or `failed` (`would remove` / `would stop` with --dry-run).
    pub result: String,
    pub signal: Option<&'static str>,
    pub orphans_ended: usize,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Orphan {
    pub pid: u32,
    pub instance: String,
}

#[derive(Debug, Serialize)]
pub struct GhostPort {
    pub id: String,
    pub port: u16,
    pub owner: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct MovedAside {
    pub path: PathBuf,
    pub moved_to: Option<PathBuf>,
    pub reason: String,
}

/// What `ocx gc` asks for.
pub struct Options {
    /// Say what would be done, change nothing.
    pub dry_run: bool,
    /// Also delete the logs of instances that no longer exist.
    pub logs: bool,
}

/// Clean up, and say what was (or would be) done.
pub fn gc(home: &Home, args: &Options) -> Result<Report> {
    let mut report = Report { dry_run: args.dry_run, ..Report::default() };
    let survey = survey(home, args.dry_run, &mut report)?;
    crate::hooks::pause("gc:decided");

    // An abandoned start whose server is healthy did everything but say so: keep it.
    let (promote, stale): (Vec<_>, Vec<_>) = survey.stale.into_iter().partition(|(record, reason)| {
        *reason == "abandoned start" && client(record, HEALTH_TIMEOUT).health().is_ok_and(|h| h.healthy)
    });
    // A watcher records its server's exit (and the restart it plans) within moments: one that
    // has not after this long is stuck, not busy.
    if !args.dry_run && stale.iter().any(|(_, reason)| *reason == "watcher without server") {
        std::thread::sleep(WATCHER_GRACE);
    }
    for (record, _) in &promote {
        if args.dry_run || promote_to_running(home, &record.id)? {
            report.promoted.push(record.id.clone());
        }
    }
    let outcomes = parallel::map(&stale, 32, |(record, reason)| {
        if args.dry_run {
            let action = match *reason {
                "abandoned start" | "abandoned stop" | "watcher without server" => "stop",
                _ => "remove",
            };
            let port_free = process::port_is_free(&record.hostname, record.port);
            let owner = (!port_free).then(|| process::port_owner(record.port)).flatten();
            let stale = Stale {
                id: record.id.clone(),
                name: record.name.clone(),
                reason,
                result: format!("would {action}"),
                signal: None,
                orphans_ended: 0,
                error: None,
            };
            (stale, port_free, owner.map(|o| o.to_string()))
        } else {
            // Checked again under the instance's lock, right before acting: a restart or a
            // watcher that changed the instance meanwhile is left alone.
            let o = stop::stop_if(home, record, GRACE, |now, facts| {
                now.pid == record.pid
                    && now.last_exit == record.last_exit
                    && stale_reason(now, facts, SystemTime::now()).is_some_and(|now| same_reason(now, reason))
            });
            let result = match (o.result, o.signal) {
                ("failed", _) => "failed",
                ("skipped", _) => "skipped",
                (_, Some(_)) => "stopped",
                _ => "removed",
            };
            let stale = Stale {
                id: o.id,
                name: o.name,
                reason,
                result: result.to_string(),
                signal: o.signal,
                orphans_ended: o.orphans_ended,
                error: o.error,
            };
            (stale, o.port_free, o.port_owner)
        }
    });
    for ((stale, port_free, owner), (record, _)) in outcomes.into_iter().zip(&stale) {
        // Changed meanwhile (restarted, or its watcher brought it back): not gc's any more.
        if stale.result == "skipped" {
            report.busy.push(stale.id);
            continue;
        }
        if !port_free {
            report.ghost_ports.push(GhostPort { id: record.id.clone(), port: record.port, owner });
        }
        report.records.push(stale);
    }

    report.orphans = survey.orphans.iter().map(|m| Orphan { pid: m.proc.pid, instance: m.instance.clone() }).collect();
    if !args.dry_run {
        stop::end_all(&survey.orphans.iter().map(|m| m.proc).collect::<Vec<_>>());
    }
    report.worktrees = workspace::sweep(home, &record::ids_on_disk(home)?, args.dry_run)?;
    finish_under_lock(home, args, &mut report)?;
    Ok(report)
}

/// What the survey found.
struct Survey {
    stale: Vec<(Record, &'static str)>,
    orphans: Vec<Marked>,
}

/// Look at files, records and processes at one moment, under the store lock (no start is
/// halfway between spawning and recording), and tidy the files: temp files of writers that are
/// gone, and records that cannot be read (moved aside; a newer schema's are left alone).
fn survey(home: &Home, dry_run: bool, report: &mut Report) -> Result<Survey> {
    let _store = home.lock_store()?;
    let dir = home.instances_dir();
    let temp_files: Vec<(PathBuf, Option<u32>)> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            home::is_temp_file(&name).then(|| (e.path(), home::temp_file_writer(&name)))
        })
        .collect();
    // Updates of a record hold only its instance's lock: a temp file whose writer lives may be
    // a write in progress.
    let writers = Processes::of(&temp_files.iter().filter_map(|(_, pid)| *pid).collect::<Vec<_>>())?;
    for (path, writer) in temp_files {
        if writer.is_some_and(|pid| writers.get(pid).is_some()) {
            continue;
        }
        if !dry_run {
            std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        }
        report.temp_files.push(path);
    }

    let entries = record::list(home)?;
    for entry in &entries {
        let Entry::Invalid(invalid) = entry else { continue };
        let moved = if invalid.kind == InvalidKind::Newer {
            report.newer.push(MovedAside {
                path: invalid.path.clone(),
                moved_to: None,
                reason: invalid.reason.clone(),
            });
            continue;
        } else if dry_run {
            None
        } else {
            Some(move_aside(&invalid.path)?)
        };
        report.corrupt.push(MovedAside { path: invalid.path.clone(), moved_to: moved, reason: invalid.reason.clone() });
    }

    let records = record::valid(&entries);
    let facts = Facts::of_all(home, &records)?;
    let table = Processes::marked_in(home.root())?;
    let mut stale = Vec::new();
    for (record, facts) in records.iter().zip(&facts) {
        // What resurrect would bring back is never forgotten silently: after a reboot every
        // instance looks dead, and its record (id, port, password) is what brings it back.
        if super::resurrect::wanted(record, facts, SystemTime::now()) {
            report.resurrectable.push(record.id.clone());
            continue;
        }
        let Some(reason) = stale_reason(record, facts, SystemTime::now()) else {
            if classify(record, facts, SystemTime::now()) == Status::Failed {
                report.failed.push(record.id.clone());
            }
            continue;
        };
        let reason = match reason {
            "process gone" if Processes::of(&[record.pid])?.get(record.pid).is_some() => "PID reused",
            reason => reason,
        };
        // A start or stop whose ocx is alive holds the instance's lock: not abandoned, not ours.
        match home.try_lock_instance(&record.id)? {
            Some(_) => stale.push((record.clone(), reason)),
            None => report.busy.push(record.id.clone()),
        }
    }
    // Processes of stale records are ended by their stop. An instance with any file in
    // `instances/`, even one this ocx cannot read, is not forgotten: its processes are no orphans.
    let protected = record::ids_on_disk(home)?;
    let orphans = table.marked(home.root()).into_iter().filter(|m| !protected.contains(&m.instance)).collect();
    Ok(Survey { stale, orphans })
}

/// Whether two reasons are the same (a reused PID is a gone process, told apart by the table).
fn same_reason(now: &str, before: &str) -> bool {
    now == before || (now == "process gone" && before == "PID reused")
}

/// Why gc would clean up an instance, from the one classifier's status: None for one that
/// runs, is being brought back by its watcher, or failed (kept for the user to decide).
fn stale_reason(record: &Record, facts: &Facts, now: SystemTime) -> Option<&'static str> {
    match classify(record, facts, now) {
        Status::Running | Status::Unsupervised | Status::Unhealthy | Status::Restarting | Status::Failed => None,
        Status::Starting => Some("abandoned start"),
        Status::Stopping => Some("abandoned stop"),
        Status::WatcherWithoutServer => Some("watcher without server"),
        Status::Dead => Some("process gone"),
    }
}

/// Record an abandoned start as running, if it still is an abandoned start. False if another
/// ocx got to it first.
fn promote_to_running(home: &Home, id: &str) -> Result<bool> {
    let Some(lock) = home.try_lock_instance(id)? else { return Ok(false) };
    let Some(mut held) = Held::with(home, lock, id)? else { return Ok(false) };
    held.healthy(None)
}

/// Under the store lock again: delete the logs of instances that have no file in `instances/`
/// (with --logs), and lock files nobody holds of instances without a record. A start creates
/// its record, log and lock file within one store-locked section, so none of its files is
/// ever taken for a leftover.
fn finish_under_lock(home: &Home, args: &Options, report: &mut Report) -> Result<()> {
    let _store = home.lock_store()?;
    let on_disk = record::ids_on_disk(home)?;
    if args.logs {
        report.logs_deleted = delete_logs(home, &on_disk, args.dry_run)?;
        report.databases_deleted = workspace::delete_databases(home, &on_disk, args.dry_run)?;
    }
    if !args.dry_run {
        remove_stale_locks(home, &on_disk);
        remove_stale_observations(home, &on_disk);
    }
    Ok(())
}

/// Rename `x.json` to `x.json.corrupt` (or `.corrupt.N` if taken); never deletes it.
fn move_aside(path: &Path) -> Result<PathBuf> {
    let mut target = PathBuf::from(format!("{}.corrupt", path.display()));
    let mut n = 1;
    while target.exists() {
        target = PathBuf::from(format!("{}.corrupt.{n}", path.display()));
        n += 1;
    }
    std::fs::rename(path, &target)
        .with_context(|| format!("cannot move {} aside to {}", path.display(), target.display()))?;
    Ok(target)
}

/// Delete the logs (`<id>.log`, and rotated `<id>.log.N`) of every id not in `kept`.
fn delete_logs(home: &Home, kept: &HashSet<String>, dry_run: bool) -> Result<Vec<PathBuf>> {
    let mut deleted = Vec::new();
    let dir = home.logs_dir();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((id, _)) = name.split_once(".log") else { continue };
        if kept.contains(id) || !record::is_valid_id(id) || !log::belongs_to(&name, id) {
            continue;
        }
        if !dry_run {
            std::fs::remove_file(entry.path()).with_context(|| format!("cannot delete {}", entry.path().display()))?;
        }
        deleted.push(entry.path());
    }
    Ok(deleted)
}

/// Observations of instances without a record (a watcher that was killed leaves its own).
fn remove_stale_observations(home: &Home, on_disk: &HashSet<String>) {
    let Ok(dir) = std::fs::read_dir(home.root().join("status")) else { return };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(id) = name.strip_suffix(".json").filter(|id| record::is_valid_id(id) && !on_disk.contains(*id)) {
            super::status::remove(home, id);
        }
    }
}

/// Lock files of instances without a record, when nobody holds them.
fn remove_stale_locks(home: &Home, on_disk: &HashSet<String>) {
    let Ok(dir) = std::fs::read_dir(home.locks_dir()) else { return };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_suffix(".lock").filter(|id| record::is_valid_id(id)) else { continue };
        if !on_disk.contains(id)
            && let Ok(Some(_lock)) = home.try_lock_instance(id)
        {
            home.remove_instance_lock(id);
        }
    }
}
