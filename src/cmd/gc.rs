//! `ocx gc`: clean up what crashes and killed servers left behind (`instance::gc`), and say
//! what was done.

use anyhow::Result;

use crate::cli::GcArgs;
use crate::home::Home;
use crate::instance::gc::{self, Options, Report};
use crate::output;

pub fn run(home: &Home, args: GcArgs) -> Result<()> {
    let report = gc::gc(home, &Options { dry_run: args.dry_run, logs: args.logs })?;
    if args.json {
        output::print_json(&serde_json::to_value(&report)?)?;
    } else {
        print_summary(&report)?;
    }
    Ok(())
}

fn print_summary(report: &Report) -> Result<()> {
    let would = |done: &str, planned: &str| if report.dry_run { planned.to_string() } else { done.to_string() };
    let mut lines = Vec::new();
    for r in &report.records {
        let name = r.name.as_ref().map(|n| format!(" ({n})")).unwrap_or_default();
        let how = match (r.signal, r.orphans_ended) {
            (Some(signal), 0) => format!(" with {signal}"),
            (Some(signal), n) => format!(" with {signal}, and {n} process(es) it left behind"),
            (None, 0) => String::new(),
            (None, n) => format!("; ended {n} process(es) it left behind"),
        };
        let error = r.error.as_ref().map(|e| format!(": {e}")).unwrap_or_default();
        lines.push(format!("{} {}{name}: {}{how}{error}", r.result, r.id, r.reason));
    }
    for id in &report.promoted {
        lines.push(format!(
            "{} {id}: its start was abandoned, but the server is healthy",
            would("recorded as running", "would record as running")
        ));
    }
    for o in &report.orphans {
        lines.push(format!(
            "{} PID {}: carries the marker of instance {}, which has no record",
            would("ended", "would end"),
            o.pid,
            o.instance
        ));
    }
    for g in &report.ghost_ports {
        let owner = g.owner.as_deref().unwrap_or("an owner the OS does not name");
        lines.push(format!("ghost port {} of instance {}: still bound, by {owner}", g.port, g.id));
    }
    for c in &report.corrupt {
        let target = c.moved_to.as_ref().map_or("<file>.corrupt".to_string(), |t| t.display().to_string());
        lines.push(format!(
            "{} {} to {target}: {}",
            would("moved aside", "would move aside"),
            c.path.display(),
            c.reason
        ));
    }
    for n in &report.newer {
        lines.push(format!("left alone {}: {}", n.path.display(), n.reason));
    }
    if !report.temp_files.is_empty() {
        lines.push(format!(
            "{} {} temp file(s) of interrupted writes",
            would("removed", "would remove"),
            report.temp_files.len()
        ));
    }
    if !report.logs_deleted.is_empty() {
        lines.push(format!(
            "{} {} log(s) of instances that no longer exist",
            would("deleted", "would delete"),
            report.logs_deleted.len()
        ));
    }
    for w in &report.worktrees {
        match w.summary() {
            Some(summary) => lines.push(format!("{}: {summary}", w.id)),
            None => lines.push(format!(
                "{} worktree {} of instance {} (branch {}: {})",
                would("removed", "would remove"),
                w.path.display(),
                w.id,
                w.branch,
                w.branch_result
            )),
        }
    }
    if !report.databases_deleted.is_empty() {
        lines.push(format!(
            "{} {} database(s) of isolated instances that no longer exist",
            would("deleted", "would delete"),
            report.databases_deleted.len()
        ));
    }
    for id in &report.failed {
        lines.push(format!("kept {id}: its watcher gave up restarting it; `ocx restart {id}` or `ocx stop {id}`"));
    }
    for id in &report.resurrectable {
        lines.push(format!(
            "kept {id}: it should be running (its server and watcher are gone); `ocx resurrect` brings it back, `ocx stop {id}` forgets it"
        ));
    }
    for id in &report.busy {
        lines.push(format!("skipped {id}: another ocx (or its watcher) is starting, restarting or stopping it"));
    }
    if lines.is_empty() {
        lines.push("nothing to clean up".to_string());
    }
    for line in lines {
        output::line(line)?;
    }
    Ok(())
}
