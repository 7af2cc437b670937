//! `ocx up`: make this machine match the fleet file — start what is missing, leave alone what
//! matches, restart (idle-aware) what runs with other settings or is dead; report the file's
//! instances it no longer declares, and stop them with --remove-orphans.

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow};
use serde::Serialize;

use super::fleet::{self, file};
use crate::cli::UpArgs;
use crate::error::{self, Failure, code};
use crate::home::Home;
use crate::instance::launch::{self, Started};
use crate::instance::restart::{self, RestartOptions};
use crate::instance::spawn::{self, Plan};
use crate::instance::state::{Facts, Status, classify};
use crate::instance::stop;
use crate::record::{self, Record};
use crate::{output, parallel, process};

/// At most this many instances are started or restarted at once.
const PARALLEL: usize = 16;
/// Between TERM and KILL for a server restarted with new settings, or an orphan stopped.
const GRACE: Duration = Duration::from_secs(10);

/// What `up` did to one instance.
#[derive(Debug, Serialize)]
struct Row {
    name: String,
    id: Option<String>,
    /// `created`, `unchanged`, `restarted`, `failed`, `orphan` (not in the file any more) or
    /// `removed` (an orphan stopped by --remove-orphans).
    action: &'static str,
    why: String,
    url: Option<String>,
    pid: Option<u32>,
    #[serde(skip)]
    code: u8,
}

/// One instance of the file, with what runs under its name now.
struct Job<'a> {
    name: String,
    plan: &'a Plan,
    existing: Option<Record>,
}

pub fn run(home: &Home, args: UpArgs) -> Result<()> {
    let fleet = file::load(args.file.as_deref())?;
    let all_names: Vec<String> = fleet.tables.iter().flat_map(|t| t.names()).collect();
    for name in &args.names {
        if !fleet.tables.iter().any(|t| t.name == *name) {
            return Err(anyhow!(
                Failure::new(code::NOT_FOUND, format!("{} declares no instance {name:?}", fleet.path.display())).hint(
                    format!(
                        "its instances: {}",
                        fleet.tables.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
                    )
                )
            ));
        }
    }
    let chosen: Vec<_> =
        fleet.tables.iter().filter(|t| args.names.is_empty() || args.names.contains(&t.name)).collect();
    // Every plan checked (directories, binary, version) before anything starts.
    let mut plans = Vec::new();
    for table in &chosen {
        let mut plan = super::start_plan(home, &table.args)
            .with_context(|| format!("{}: instances.{}", fleet.path.display(), table.name))?;
        plan.project = Some(fleet.path.clone());
        plans.push(plan);
    }

    let _turn = fleet::lock(home, &fleet.path)?;
    process::install_interrupt_handler();
    let records = record::valid(&record::list(home)?);
    let mut jobs = Vec::new();
    for (table, plan) in chosen.iter().zip(&plans) {
        for name in table.names() {
            let existing = records.iter().find(|r| r.name.as_deref() == Some(name.as_str()) || r.id == name);
            if let Some(other) = existing.filter(|r| r.project.as_deref() != Some(fleet.path.as_path())) {
                let from = match &other.project {
                    Some(p) => format!("from {}", p.display()),
                    None => "by `ocx start`".to_string(),
                };
                return Err(anyhow!(
                    Failure::new(
                        code::FAILED,
                        format!(
                            "{} declares the instance {name}, but instance {} ({}) started {from} has that name; nothing was started",
                            fleet.path.display(),
                            other.label(),
                            other.id
                        )
                    )
                    .hint(format!("stop that one (`ocx stop {}`), or rename the table in the file", other.id))
                ));
            }
            jobs.push(Job { name, plan, existing: existing.cloned() });
        }
    }
    let orphans: Vec<Record> = fleet::of_project(&records, &fleet.path)
        .into_iter()
        .filter(|r| !r.name.as_ref().is_some_and(|n| all_names.contains(n)))
        .cloned()
        .collect();

    let spinner = output::Spinner::start(format!("bringing up {} instance(s)", jobs.len()));
    let mut rows = parallel::map(&jobs, PARALLEL, |job| act(home, job, &args));
    rows.extend(orphans.iter().map(|r| orphan(home, r, args.remove_orphans)));
    drop(spinner);
    print(&rows, args.json)?;
    match rows.iter().find(|r| r.action == "failed") {
        Some(failed) => Err(anyhow!(Failure::silent(failed.code))),
        None => Ok(()),
    }
}

/// Bring one instance of the file to what the file says.
fn act(home: &Home, job: &Job, args: &UpArgs) -> Row {
    let mut row = Row {
        name: job.name.clone(),
        id: job.existing.as_ref().map(|r| r.id.clone()),
        action: "failed",
        why: String::new(),
        url: None,
        pid: None,
        code: code::FAILED,
    };
    let done = |row: &mut Row, action, why: String, started: Result<Started>| match started {
        Ok(s) => {
            (row.action, row.why) = (action, why);
            (row.id, row.url, row.pid) = (Some(s.record.id.clone()), Some(s.record.url.clone()), Some(s.record.pid));
        }
        Err(err) => {
            row.code = error::code_of(&err);
            row.why = format!("{err:#}");
        }
    };
    let Some(existing) = &job.existing else {
        let started = launch::start(home, job.plan, Some(job.name.clone()), None);
        done(&mut row, "created", "not running".to_string(), started);
        return row;
    };
    let wanted =
        spawn::new_record(home, job.plan, &existing.id, existing.name.clone(), job.plan.port.unwrap_or(existing.port));
    let diff = fleet::differences(&wanted, existing);
    let status = match Facts::of(home, existing) {
        Ok(facts) => classify(existing, &facts, SystemTime::now()),
        Err(err) => {
            row.why = format!("{err:#}");
            return row;
        }
    };
    let why = match status {
        _ if !diff.is_empty() => format!("changed: {}", diff.join(", ")),
        Status::Running | Status::Unhealthy | Status::Starting | Status::Restarting | Status::WatcherWithoutServer => {
            (row.action, row.why) = ("unchanged", format!("{} with the file's settings", status.as_str()));
            (row.url, row.pid) = (Some(existing.url.clone()), Some(existing.pid));
            return row;
        }
        Status::Stopping => {
            row.why = "it is being stopped; run `ocx up` again once it is gone".to_string();
            return row;
        }
        other => format!("it was {}", other.as_str()),
    };
    let options = RestartOptions { force: false, wait: args.wait, timeout: job.plan.timeout, grace: GRACE };
    let to = (!diff.is_empty()).then_some(&wanted);
    let restarted = restart::restart_as(home, &existing.id, &options, to, |_, _| true)
        .and_then(|s| s.ok_or_else(|| anyhow!("skipped")));
    done(&mut row, "restarted", why, restarted);
    row
}

/// An instance of this file that it no longer declares: reported, or stopped.
fn orphan(home: &Home, record: &Record, remove: bool) -> Row {
    let mut row = Row {
        name: record.label().to_string(),
        id: Some(record.id.clone()),
        action: "orphan",
        why: "the file no longer declares it; --remove-orphans stops it".to_string(),
        url: Some(record.url.clone()),
        pid: Some(record.pid),
        code: code::FAILED,
    };
    if remove {
        let outcome = stop::stop(home, record, GRACE, false);
        match outcome.error {
            None => (row.action, row.why) = ("removed", "the file no longer declares it; stopped".to_string()),
            Some(err) => (row.action, row.why) = ("failed", format!("stopping it failed: {err}")),
        }
        (row.url, row.pid) = (None, None);
    }
    row
}

fn print(rows: &[Row], json: bool) -> Result<()> {
    if json {
        return Ok(output::print_json(&serde_json::to_value(rows)?)?);
    }
    let mut table = output::table(["NAME", "ID", "ACTION", "URL", "WHY"]);
    for r in rows {
        table.add_row([
            r.name.as_str(),
            r.id.as_deref().unwrap_or("-"),
            r.action,
            r.url.as_deref().unwrap_or("-"),
            &r.why,
        ]);
    }
    Ok(output::print_table(&mut table)?)
}
