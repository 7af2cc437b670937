//! `ocx ls`: every instance with its observed status, from one process-table refresh and
//! health checks in parallel.

use std::io::Write;
use std::time::Duration;

use anyhow::Result;
use comfy_table::Color;
use serde_json::json;

use crate::cli::LsArgs;
use crate::cmd::parallel_map;
use crate::home::Home;
use crate::output;
use crate::process::Processes;
use crate::record::{self, Entry, Record, State};
use crate::server::Client;

/// A hung server must not make `ls` slow: each health check gets this long at most.
const HEALTH_TIMEOUT: Duration = Duration::from_millis(800);
/// At most this many health checks at once.
const PARALLEL: usize = 32;

/// What `ls` observed about one record.
pub struct Observed {
    pub status: &'static str,
    pub healthy: Option<bool>,
    pub version: Option<String>,
    pub uptime_s: Option<u64>,
    pub rss_bytes: Option<u64>,
}

pub fn run(home: &Home, args: LsArgs) -> Result<()> {
    let entries = record::list(home)?;
    let records = record::valid(&entries);
    if args.quiet {
        let mut out = std::io::stdout().lock();
        for r in &records {
            writeln!(out, "{}", r.id)?;
        }
        return Ok(());
    }
    let observed = observe(&records)?;
    let unmanaged = if args.all { unmanaged(&records)? } else { Vec::new() };
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
                doc
            })
            .collect();
        docs.extend(invalid.map(|i| json!({"id": i.id, "status": i.status(), "path": i.path, "error": i.reason})));
        docs.extend(unmanaged.iter().map(
            |u| json!({"status": "unmanaged", "pid": u.pid, "port": u.port, "url": u.url(), "command": u.command}),
        ));
        return Ok(output::print_json(&serde_json::Value::Array(docs))?);
    }

    let mut table = output::table(["ID", "NAME", "STATUS", "PID", "URL", "VERSION", "UPTIME", "MEM", "DIR"]);
    for (r, o) in records.iter().zip(&observed) {
        let version = o.version.as_deref().or(r.opencode.version.as_deref()).unwrap_or("-");
        table.add_row(vec![
            comfy_table::Cell::new(&r.id),
            comfy_table::Cell::new(r.name.as_deref().unwrap_or("-")),
            output::colored(o.status, status_color(o.status)),
            comfy_table::Cell::new(r.pid),
            comfy_table::Cell::new(&r.url),
            comfy_table::Cell::new(if o.status == "dead" { "-" } else { version }),
            comfy_table::Cell::new(o.uptime_s.map_or("-".into(), |s| output::duration(Duration::from_secs(s)))),
            comfy_table::Cell::new(o.rss_bytes.map_or("-".into(), output::bytes)),
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
            comfy_table::Cell::new(format!("{}: {}", i.path.display(), i.reason)),
        ]);
    }
    for u in &unmanaged {
        table.add_row(vec![
            comfy_table::Cell::new("-"),
            comfy_table::Cell::new("-"),
            output::colored("unmanaged", Color::DarkGrey),
            comfy_table::Cell::new(u.pid),
            comfy_table::Cell::new(u.url().unwrap_or_else(|| "-".into())),
            comfy_table::Cell::new("-"),
            comfy_table::Cell::new("-"),
            comfy_table::Cell::new(output::bytes(u.rss)),
            comfy_table::Cell::new(u.command.join(" ")),
        ]);
    }
    output::print_table(&mut table)?;
    for refused in entries.iter().filter_map(|e| match e {
        Entry::Invalid(i) if i.refused => Some(i),
        _ => None,
    }) {
        eprintln!("warning: refusing {}: owned by another user or writable by others", refused.path.display());
    }
    let stale = observed.iter().filter(|o| o.status == "dead").count() + entries.len() - records.len();
    if stale > 0 {
        eprintln!("hint: {stale} record(s) are dead, corrupt or refused; `ocx gc` cleans them up");
    }
    Ok(())
}

fn status_color(status: &str) -> Color {
    match status {
        "running" => Color::Green,
        "starting" | "stopping" => Color::Yellow,
        _ => Color::Red,
    }
}

/// Observe every record: one targeted process-table refresh, then health checks in parallel
/// for the live ones.
pub fn observe(records: &[Record]) -> Result<Vec<Observed>> {
    let table = Processes::of(&records.iter().map(|r| r.pid).collect::<Vec<_>>())?;
    let now = output::now_secs();
    Ok(parallel_map(records, PARALLEL, |r| {
        let Some(proc) = table.same(r.pid, r.pid_started_at) else {
            return Observed { status: "dead", healthy: None, version: None, uptime_s: None, rss_bytes: None };
        };
        let uptime_s = Some(now.saturating_sub(proc.start_time));
        let rss_bytes = Some(proc.rss);
        if r.state == State::Stopping {
            return Observed { status: "stopping", healthy: None, version: None, uptime_s, rss_bytes };
        }
        let health = Client::for_record(r, HEALTH_TIMEOUT).health();
        let healthy = health.as_ref().is_ok_and(|h| h.healthy);
        // Observed health wins over the recorded intent: a start whose ocx died may be healthy.
        let status = match (healthy, r.state) {
            (true, _) => "running",
            (false, State::Starting) => "starting",
            (false, _) => "unhealthy",
        };
        Observed { status, healthy: Some(healthy), version: health.ok().and_then(|h| h.version), uptime_s, rss_bytes }
    }))
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

fn unmanaged(records: &[Record]) -> Result<Vec<Unmanaged>> {
    let table = Processes::all()?;
    Ok(table
        .opencode_servers()
        .into_iter()
        .filter(|(p, _)| !records.iter().any(|r| r.pid == p.pid && r.pid_started_at == p.start_time))
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
