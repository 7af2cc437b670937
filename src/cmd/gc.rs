//! `ocx gc`: clean up what crashes and killed servers left behind.
//!
//! It looks at everything under the store lock (records and process table at one moment), then
//! acts outside it: stale records go through `stop::stop_one`, the same protocol as `ocx stop`,
//! so nothing is signalled that ocx cannot vouch for.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::cli::GcArgs;
use crate::cmd::{parallel_map, stop};
use crate::home::{self, Home};
use crate::output;
use crate::process::{self, Marked, Processes};
use crate::record::{self, Entry, Record, State};

/// A server whose start or stop was abandoned gets this long after TERM before KILL.
const GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Default, Serialize)]
struct Report {
    dry_run: bool,
    /// Records removed (or that would be), with how their instance ended.
    records: Vec<Stale>,
    /// Processes with a marker of this home whose instance has no record, ended.
    orphans: Vec<Orphan>,
    /// Ports of removed instances still bound after their processes are gone.
    ghost_ports: Vec<GhostPort>,
    corrupt: Vec<MovedAside>,
    temp_files: Vec<PathBuf>,
    logs_deleted: Vec<PathBuf>,
    /// Instances skipped because another ocx is starting or stopping them right now.
    busy: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Stale {
    id: String,
    name: Option<String>,
    /// Why it is stale: `process gone`, `PID reused`, `abandoned start`, `abandoned stop`.
    reason: &'static str,
    /// `removed`, `stopped` or `failed` (`would remove` / `would stop` with --dry-run).
    result: String,
    signal: Option<&'static str>,
    orphans_ended: usize,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Orphan {
    pid: u32,
    instance: String,
}

#[derive(Debug, Serialize)]
struct GhostPort {
    id: String,
    port: u16,
    owner: Option<String>,
}

#[derive(Debug, Serialize)]
struct MovedAside {
    path: PathBuf,
    moved_to: Option<PathBuf>,
    reason: String,
}

pub fn run(home: &Home, args: GcArgs) -> Result<()> {
    let mut report = Report { dry_run: args.dry_run, ..Report::default() };
    let survey = survey(home, args.dry_run, &mut report)?;

    let outcomes = parallel_map(&survey.stale, 32, |(record, reason)| {
        if args.dry_run {
            let action = if *reason == "abandoned start" || *reason == "abandoned stop" { "stop" } else { "remove" };
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
            let o = stop::stop_one(home, record, GRACE);
            let result = match (o.result, o.signal) {
                ("failed", _) => "failed",
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
    for ((stale, port_free, owner), (record, _)) in outcomes.into_iter().zip(&survey.stale) {
        if !port_free {
            report.ghost_ports.push(GhostPort { id: record.id.clone(), port: record.port, owner });
        }
        report.records.push(stale);
    }

    report.orphans = survey.orphans.iter().map(|m| Orphan { pid: m.proc.pid, instance: m.instance.clone() }).collect();
    if !args.dry_run {
        stop::end_all(&survey.orphans.iter().map(|m| m.proc).collect::<Vec<_>>());
    }
    if args.logs {
        report.logs_deleted = delete_logs(home, &survey.kept, args.dry_run)?;
    }
    if !args.dry_run {
        remove_stale_locks(home);
    }

    if args.json {
        output::print_json(&serde_json::to_value(&report)?)?;
    } else {
        print_summary(&report);
    }
    Ok(())
}

/// What the survey found.
struct Survey {
    stale: Vec<(Record, &'static str)>,
    orphans: Vec<Marked>,
    /// Ids of the records that stay.
    kept: Vec<String>,
}

/// Look at records and processes at one moment (under the store lock, so no start is halfway
/// between spawning and recording), and tidy the files: temp files and unreadable records.
fn survey(home: &Home, dry_run: bool, report: &mut Report) -> Result<Survey> {
    let _store = home.lock_store()?;
    // No write is in progress while the store lock is held: any temp file is left over.
    let dir = home.instances_dir();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?.flatten() {
        if home::is_temp_file(&entry.file_name().to_string_lossy()) {
            if !dry_run {
                std::fs::remove_file(entry.path())
                    .with_context(|| format!("cannot remove {}", entry.path().display()))?;
            }
            report.temp_files.push(entry.path());
        }
    }
    let entries = record::list(home)?;
    for entry in &entries {
        if let Entry::Invalid(invalid) = entry {
            let moved_to = if dry_run { None } else { Some(move_aside(&invalid.path)?) };
            report.corrupt.push(MovedAside { path: invalid.path.clone(), moved_to, reason: invalid.reason.clone() });
        }
    }

    let records = record::valid(&entries);
    let table = Processes::with_markers()?;
    let mut stale = Vec::new();
    let mut kept = Vec::new();
    for record in records.iter() {
        let reason = match (table.same(record.pid, record.pid_started_at), record.state) {
            (Some(_), State::Running) => None,
            (Some(_), State::Starting) => Some("abandoned start"),
            (Some(_), State::Stopping) => Some("abandoned stop"),
            (None, _) if table.get(record.pid).is_some() => Some("PID reused"),
            (None, _) => Some("process gone"),
        };
        // A start or stop whose ocx is alive holds the instance's lock: not abandoned, not ours.
        match reason {
            Some(reason) if home.try_lock_instance(&record.id)?.is_some() => stale.push((record.clone(), reason)),
            Some(_) => {
                report.busy.push(record.id.clone());
                kept.push(record.id.clone());
            }
            None => kept.push(record.id.clone()),
        }
    }
    // Processes of stale records are ended by their stop; these have no record at all.
    let orphans =
        table.marked(home.root()).into_iter().filter(|m| !records.iter().any(|r| r.id == m.instance)).collect();
    Ok(Survey { stale, orphans, kept })
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

/// Delete `logs/<id>.log` of every id not in `kept`.
fn delete_logs(home: &Home, kept: &[String], dry_run: bool) -> Result<Vec<PathBuf>> {
    let mut deleted = Vec::new();
    let dir = home.logs_dir();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_suffix(".log") else { continue };
        if kept.iter().any(|k| k == id) {
            continue;
        }
        if !dry_run {
            std::fs::remove_file(entry.path()).with_context(|| format!("cannot delete {}", entry.path().display()))?;
        }
        deleted.push(entry.path());
    }
    Ok(deleted)
}

/// Lock files of instances without a record, when nobody holds them. Under the store lock: a
/// start creates its lock file and its record within one store-locked section.
fn remove_stale_locks(home: &Home) {
    let Ok(_store) = home.lock_store() else { return };
    let Ok(dir) = std::fs::read_dir(home.locks_dir()) else { return };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_suffix(".lock").filter(|id| record::is_valid_id(id)) else { continue };
        if !home.record_path(id).exists()
            && let Ok(Some(_lock)) = home.try_lock_instance(id)
        {
            home.remove_instance_lock(id);
        }
    }
}

fn print_summary(report: &Report) {
    let would = |done: &str, planned: &str| if report.dry_run { planned.to_string() } else { done.to_string() };
    let mut said = false;
    let mut say = |line: String| {
        said = true;
        println!("{line}");
    };
    for r in &report.records {
        let name = r.name.as_ref().map(|n| format!(" ({n})")).unwrap_or_default();
        let how = match (r.signal, r.orphans_ended) {
            (Some(signal), 0) => format!(" with {signal}"),
            (Some(signal), n) => format!(" with {signal}, and {n} process(es) it left behind"),
            (None, 0) => String::new(),
            (None, n) => format!("; ended {n} process(es) it left behind"),
        };
        let error = r.error.as_ref().map(|e| format!(": {e}")).unwrap_or_default();
        say(format!("{} {}{name}: {}{how}{error}", r.result, r.id, r.reason));
    }
    for o in &report.orphans {
        say(format!(
            "{} PID {}: carries the marker of instance {}, which has no record",
            would("ended", "would end"),
            o.pid,
            o.instance
        ));
    }
    for g in &report.ghost_ports {
        let owner = g.owner.as_deref().unwrap_or("an owner the OS does not name");
        say(format!("ghost port {} of instance {}: still bound, by {owner}", g.port, g.id));
    }
    for c in &report.corrupt {
        let target = c.moved_to.as_ref().map_or("<file>.corrupt".to_string(), |t| t.display().to_string());
        say(format!("{} {} to {target}: {}", would("moved aside", "would move aside"), c.path.display(), c.reason));
    }
    if !report.temp_files.is_empty() {
        say(format!(
            "{} {} temp file(s) of interrupted writes",
            would("removed", "would remove"),
            report.temp_files.len()
        ));
    }
    if !report.logs_deleted.is_empty() {
        say(format!(
            "{} {} log(s) of instances that no longer exist",
            would("deleted", "would delete"),
            report.logs_deleted.len()
        ));
    }
    for id in &report.busy {
        say(format!("skipped {id}: another ocx is starting or stopping it"));
    }
    if !said {
        println!("nothing to clean up");
    }
}
