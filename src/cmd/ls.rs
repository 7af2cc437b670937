//! `ocx ls`: every instance with its observed status (`instance::observe`), and with `--all`
//! the `opencode serve` processes ocx does not manage.

use std::time::Duration;

use anyhow::Result;
use comfy_table::Color;
use serde_json::json;

use crate::cli::LsArgs;
use crate::home::Home;
use crate::instance;
use crate::output;
use crate::process::Processes;
use crate::record::{self, Entry, InvalidKind};

pub fn run(home: &Home, args: LsArgs) -> Result<()> {
    let entries = record::list(home)?;
    let records = record::valid(&entries);
    if args.quiet {
        for r in &records {
            output::line(&r.id)?;
        }
        return Ok(());
    }
    let observed = instance::observe(&records)?;
    let unmanaged = if args.all { unmanaged(home)? } else { Vec::new() };
    let invalid = entries.iter().filter_map(|e| match e {
        Entry::Invalid(i) => Some(i),
        Entry::Valid(_) => None,
    });

    if args.json {
        let mut docs: Vec<serde_json::Value> = records
            .iter()
            .zip(&observed)
            .map(|(r, o)| {
                let mut doc = r.public_json(args.show_secrets);
                doc["status"] = o.status.into();
                doc["healthy"] = o.healthy.into();
                doc["version"] = o.version.clone().or_else(|| r.opencode.version.clone()).into();
                doc["uptime_s"] = o.uptime_s.into();
                doc["rss_bytes"] = o.rss_bytes.into();
                doc["activity"] = o.activity.clone().into();
                doc["supervised"] = o.supervised.into();
                doc["restart_in_s"] = o.restart_in_s.into();
                doc
            })
            .collect();
        docs.extend(invalid.map(|i| json!({"id": i.id, "status": i.status(), "path": i.path, "error": i.reason})));
        docs.extend(unmanaged.iter().map(
            |u| json!({"status": "unmanaged", "pid": u.pid, "port": u.port, "url": u.url(), "command": u.command}),
        ));
        return Ok(output::print_json(&serde_json::Value::Array(docs))?);
    }

    let mut table = output::table([
        "ID", "NAME", "STATUS", "ACTIVITY", "PID", "URL", "VERSION", "UPTIME", "MEM", "RESTARTS", "DIR",
    ]);
    for (r, o) in records.iter().zip(&observed) {
        let version = o.version.as_deref().or(r.opencode.version.as_deref()).unwrap_or("-");
        let alive = o.uptime_s.is_some();
        table.add_row(vec![
            comfy_table::Cell::new(&r.id),
            comfy_table::Cell::new(r.name.as_deref().unwrap_or("-")),
            output::colored(status_text(r, o), status_color(o.status)),
            comfy_table::Cell::new(o.activity.as_deref().unwrap_or("-")),
            comfy_table::Cell::new(if alive { r.pid.to_string() } else { "-".into() }),
            comfy_table::Cell::new(&r.url),
            comfy_table::Cell::new(if alive { version } else { "-" }),
            comfy_table::Cell::new(o.uptime_s.map_or("-".into(), |s| output::duration(Duration::from_secs(s)))),
            comfy_table::Cell::new(o.rss_bytes.map_or("-".into(), output::bytes)),
            comfy_table::Cell::new(restarts_text(r)),
            comfy_table::Cell::new(r.dir.display()),
        ]);
    }
    for i in invalid {
        table.add_row(vec![
            comfy_table::Cell::new(&i.id),
            comfy_table::Cell::new("-"),
            output::colored(i.status(), Color::Red),
            comfy_table::Cell::new("-"),
            comfy_table::Cell::new("-"),
            comfy_table::Cell::new("-"),
            comfy_table::Cell::new("-"),
            comfy_table::Cell::new("-"),
            comfy_table::Cell::new("-"),
            comfy_table::Cell::new("-"),
            comfy_table::Cell::new(format!("{}: {}", i.path.display(), i.reason)),
        ]);
    }
    for u in &unmanaged {
        table.add_row(vec![
            comfy_table::Cell::new("-"),
            comfy_table::Cell::new("-"),
            output::colored("unmanaged", Color::DarkGrey),
            comfy_table::Cell::new("-"),
            comfy_table::Cell::new(u.pid),
            comfy_table::Cell::new(u.url().unwrap_or_else(|| "-".into())),
            comfy_table::Cell::new("-"),
            comfy_table::Cell::new("-"),
            comfy_table::Cell::new(output::bytes(u.rss)),
            comfy_table::Cell::new("-"),
            comfy_table::Cell::new(u.command.join(" ")),
        ]);
    }
    output::print_table(&mut table)?;
    for invalid in entries.iter().filter_map(|e| match e {
        Entry::Invalid(i) => Some(i),
        Entry::Valid(_) => None,
    }) {
        match invalid.kind {
            InvalidKind::Refused => output::note(format_args!(
                "warning: refusing {}: owned by another user or writable by others",
                invalid.path.display()
            )),
            InvalidKind::Newer => output::note(format_args!(
                "warning: {} was written by a newer ocx; upgrade ocx to manage that instance",
                invalid.path.display()
            )),
            InvalidKind::Corrupt => {}
        }
    }
    let cleanable = entries.iter().filter(|e| matches!(e, Entry::Invalid(i) if i.kind != InvalidKind::Newer)).count();
    let stale = observed.iter().filter(|o| o.status == "dead").count() + cleanable;
    if stale > 0 {
        output::note(format_args!("hint: {stale} record(s) are dead, corrupt or refused; `ocx gc` cleans them up"));
    }
    Ok(())
}

fn status_color(status: &str) -> Color {
    match status {
        "running" => Color::Green,
        "starting" | "stopping" | "restarting" | "unsupervised" => Color::Yellow,
        _ => Color::Red,
    }
}

/// The status with what explains it: `restarting (in 8s)`, `dead (SIGKILL)`, `failed (exit 1)`.
fn status_text(r: &record::Record, o: &instance::Observed) -> String {
    match (o.status, o.restart_in_s, &r.last_exit) {
        ("restarting", Some(secs), _) => format!("restarting (in {})", output::duration(Duration::from_secs(secs))),
        ("dead" | "failed", _, Some(exit)) => format!("{} ({})", o.status, exit.status()),
        (status, ..) => status.to_string(),
    }
}

/// `0`, or `3 (SIGKILL, 2m ago)`: how many restarts, and what caused the last one.
fn restarts_text(r: &record::Record) -> String {
    let Some(exit) = r.last_exit.as_ref().filter(|_| r.restarts > 0) else { return r.restarts.to_string() };
    let why = match exit.reason.as_str() {
        "crashed" | "exited" | "terminated" => exit.status(),
        reason => reason.to_string(),
    };
    let ago = humantime::parse_rfc3339(&exit.at)
        .ok()
        .and_then(|at| at.elapsed().ok())
        .map(|d| format!(", {} ago", output::duration(d)))
        .unwrap_or_default();
    format!("{} ({why}{ago})", r.restarts)
}

/// An `opencode serve` process that no record accounts for.
struct Unmanaged {
    pid: u32,
    port: Option<u16>,
    hostname: String,
    rss: u64,
    command: Vec<String>,
}

impl Unmanaged {
    fn url(&self) -> Option<String> {
        self.port.map(|p| format!("http://{}:{p}", self.hostname))
    }
}

/// `opencode serve` processes without this home's marker. Whatever carries it belongs to an
/// instance, also a server started through a wrapper (whose PID the record does not name).
fn unmanaged(home: &Home) -> Result<Vec<Unmanaged>> {
    let table = Processes::all()?;
    let ours: Vec<u32> = table.marked(home.root()).iter().map(|m| m.proc.pid).collect();
    Ok(table
        .opencode_servers()
        .into_iter()
        .filter(|(p, _)| !ours.contains(&p.pid))
        .map(|(p, command)| {
            let flag = |name: &str| command.iter().position(|a| a == name).and_then(|i| command.get(i + 1)).cloned();
            Unmanaged {
                pid: p.pid,
                port: flag("--port").and_then(|v| v.parse().ok()).filter(|&port| port != 0),
                hostname: flag("--hostname").unwrap_or_else(|| "127.0.0.1".into()),
                rss: p.rss,
                command,
            }
        })
        .collect())
}
