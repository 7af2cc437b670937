//! `ocx ls`: every instance with its observed status (`instance::observe`), and with `--all`
//! the `opencode serve` processes ocx does not manage; with `--hosts`, other hosts' too.

use std::time::Duration;

use anyhow::{Result, anyhow};
use comfy_table::{Cell, Color};
use serde_json::{Value, json};

use crate::cli::LsArgs;
use crate::error::{Failure, code};
use crate::home::Home;
use crate::instance::state::Status;
use crate::process::Processes;
use crate::record::{self, InvalidKind, Record};
use crate::remote::{Host, Hosts};
use crate::{instance, output, parallel};

/// How long one host may take to answer `ls --hosts`, connecting included.
const HOST_TIMEOUT: Duration = Duration::from_secs(20);

pub fn run(home: &Home, args: LsArgs) -> Result<()> {
    if args.quiet {
        for r in record::valid(&record::list(home)?).iter().filter(|r| of_project(r, &args)) {
            output::line(&r.id)?;
        }
        return Ok(());
    }
    if args.all_hosts || !args.hosts.is_empty() {
        return several_hosts(home, &args);
    }
    let docs = local(home, &args)?;
    match args.json {
        true => Ok(output::print_json(&Value::Array(docs))?),
        false => print_table(&docs, false),
    }
}

/// `--hosts` and `--all-hosts`: every host asked in parallel, each within its own time; a
/// host that cannot be reached is a row saying why. Fails only when every host did.
fn several_hosts(home: &Home, args: &LsArgs) -> Result<()> {
    let hosts = Hosts::load()?;
    let mut sources: Vec<Option<Host>> = Vec::new();
    if args.all_hosts {
        sources.push(None);
        sources.extend(hosts.hosts.values().cloned().map(Some));
    }
    for name in &args.hosts {
        sources.push(if name == "local" { None } else { Some(hosts.find(name)?) });
    }
    let mut remote_args = vec!["ls", "--json"];
    remote_args.extend(args.all.then_some("--all"));
    remote_args.extend(args.show_secrets.then_some("--show-secrets"));
    remote_args.extend(args.probe.then_some("--probe"));
    let answers = parallel::map(&sources, 16, |source| match source {
        None => local(home, args),
        Some(host) => host.json(home, &remote_args, HOST_TIMEOUT).and_then(|docs| match docs {
            Value::Array(docs) => Ok(docs),
            _ => Err(anyhow!("its ocx printed no list")),
        }),
    });
    let mut rows = Vec::new();
    let mut failed = 0;
    for (source, answer) in sources.iter().zip(answers) {
        let label = source.as_ref().map(|h| Value::from(h.label()));
        match answer {
            Ok(docs) => rows.extend(docs.into_iter().map(|mut doc| {
                doc["host"] = label.clone().unwrap_or(Value::Null);
                doc
            })),
            Err(err) => {
                failed += 1;
                rows.push(json!({"host": label, "status": "unreachable", "error": format!("{err:#}")}));
            }
        }
    }
    match args.json {
        true => output::print_json(&Value::Array(rows))?,
        false => print_table(&rows, true)?,
    }
    if failed == sources.len() {
        return Err(anyhow!(Failure::silent(code::FAILED)));
    }
    Ok(())
}

/// This machine's instances as `ls --json` prints them; warnings and hints on stderr.
fn local(home: &Home, args: &LsArgs) -> Result<Vec<Value>> {
    let mut entries = record::list(home)?;
    if args.project.is_some() {
        entries.retain(|e| matches!(e, record::Entry::Valid(r) if of_project(r, args)));
    }
    let records = record::valid(&entries);
    let observed = instance::observe::observe(home, &records, args.probe)?;
    let unmanaged = if args.all { unmanaged(home)? } else { Vec::new() };
    // Serialising 1,000 records is CPU work: a thread per core.
    let pairs: Vec<(&Record, &instance::observe::Observed)> = records.iter().zip(&observed).collect();
    let mut docs: Vec<Value> = parallel::map(&pairs, parallel::cores_for(pairs.len()), |&(r, o)| {
        let mut doc = r.public_json(args.show_secrets);
        doc["status"] = o.status.as_str().into();
        doc["healthy"] = o.healthy.into();
        doc["version"] = o.version.clone().or_else(|| r.opencode.version.clone()).into();
        doc["uptime_s"] = o.uptime_s.into();
        doc["rss_bytes"] = o.rss_bytes.into();
        doc["activity"] = o.activity.clone().into();
        doc["supervised"] = o.supervised.into();
        doc["restart_in_s"] = o.restart_in_s.into();
        doc
    });
    let invalid = record::invalid(&entries);
    docs.extend(invalid.iter().map(|i| json!({"id": i.id, "status": i.status(), "path": i.path, "error": i.reason})));
    docs.extend(unmanaged.iter().map(
        |u| json!({"status": "unmanaged", "pid": u.pid, "port": u.port, "url": u.url(), "command": u.command, "rss_bytes": u.rss}),
    ));
    for invalid in invalid.iter().filter(|_| !args.json) {
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
    let cleanable = invalid.iter().filter(|i| i.kind != InvalidKind::Newer).count();
    // Dead, but what `ocx resurrect` brings back (after a reboot) is not gc's to clean up.
    let gone = instance::state::Facts::default();
    let dead = |o: &&instance::observe::Observed| o.status == Status::Dead;
    let now = std::time::SystemTime::now();
    let wanted =
        records.iter().zip(&observed).filter(|(r, o)| dead(o) && instance::resurrect::wanted(r, &gone, now)).count();
    if wanted > 0 && !args.json {
        output::note(format_args!(
            "hint: {wanted} instance(s) should be running and are not; `ocx resurrect` brings them back"
        ));
    }
    let stale = observed.iter().filter(dead).count() - wanted + cleanable;
    if stale > 0 && !args.json {
        output::note(format_args!("hint: {stale} record(s) are dead, corrupt or refused; `ocx gc` cleans them up"));
    }
    Ok(docs)
}

/// Whether `record` is of the fleet file `--project` names (any record without the flag).
fn of_project(record: &Record, args: &LsArgs) -> bool {
    let Some(project) = &args.project else { return true };
    let file = if project.is_dir() { project.join("ocx.toml") } else { project.clone() };
    let file = dunce::canonicalize(&file).unwrap_or(file);
    record.project.as_deref() == Some(file.as_path())
}

/// The table of `ls`, from the documents `ls --json` prints (this machine's or a host's), so
/// that every host's rows look alike. With `hosts`, a HOST column first.
fn print_table(docs: &[Value], hosts: bool) -> Result<()> {
    let mut header =
        vec!["ID", "NAME", "STATUS", "ACTIVITY", "PID", "URL", "VERSION", "UPTIME", "MEM", "RESTARTS", "DIR"];
    if hosts {
        header.insert(0, "HOST");
    }
    let mut table = output::table(header);
    // A row reads its record back from the document: CPU work, a thread per core.
    let rows = parallel::map(docs, parallel::cores_for(docs.len()), |doc| {
        let mut row = row(doc);
        if hosts {
            row.insert(0, Cell::new(doc["host"].as_str().unwrap_or("local")));
        }
        row
    });
    table.add_rows(rows);
    Ok(output::print_table(&mut table)?)
}

fn row(doc: &Value) -> Vec<Cell> {
    let text = |key: &str| doc[key].as_str().map_or("-".to_string(), str::to_string);
    let status = doc["status"].as_str().unwrap_or("-");
    let dash = || Cell::new("-");
    match status {
        "unreachable" => {
            let mut row = vec![dash(), dash(), output::colored(status, Color::Red)];
            row.extend((0..7).map(|_| dash()));
            row.push(Cell::new(text("error")));
            row
        }
        "unmanaged" => vec![
            dash(),
            dash(),
            output::colored(status, Color::DarkGrey),
            dash(),
            Cell::new(&doc["pid"]),
            Cell::new(text("url")),
            dash(),
            dash(),
            Cell::new(doc["rss_bytes"].as_u64().map_or("-".into(), output::bytes)),
            dash(),
            Cell::new(
                doc["command"].as_array().into_iter().flatten().filter_map(Value::as_str).collect::<Vec<_>>().join(" "),
            ),
        ],
        _ if doc.get("error").is_some() => {
            let mut row = vec![Cell::new(text("id")), dash(), output::colored(status, Color::Red)];
            row.extend((0..7).map(|_| dash()));
            row.push(Cell::new(format!("{}: {}", text("path"), text("error"))));
            row
        }
        _ => {
            let Ok(r) = <Record as serde::Deserialize>::deserialize(doc) else {
                return vec![Cell::new(text("id")), dash(), Cell::new(status)];
            };
            let uptime = doc["uptime_s"].as_u64();
            let alive = uptime.is_some();
            vec![
                Cell::new(&r.id),
                Cell::new(r.name.as_deref().unwrap_or("-")),
                output::colored(r.status_text(status, doc["restart_in_s"].as_u64()), status_color(status)),
                Cell::new(text("activity")),
                Cell::new(if alive { r.pid.to_string() } else { "-".into() }),
                Cell::new(&r.url),
                Cell::new(if alive { text("version") } else { "-".into() }),
                Cell::new(uptime.map_or("-".into(), |s| output::duration(Duration::from_secs(s)))),
                Cell::new(doc["rss_bytes"].as_u64().map_or("-".into(), output::bytes)),
                Cell::new(r.restarts_text()),
                // A worktree's own path says little: its repository and branch say what it works on.
                Cell::new(match &r.worktree {
                    Some(wt) => format!("{} [{}]", wt.repo.display(), wt.branch),
                    None => r.dir.display().to_string(),
                }),
            ]
        }
    }
}

fn status_color(status: &str) -> Color {
    match status {
        "running" => Color::Green,
        "starting" | "stopping" | "restarting" | "unsupervised" => Color::Yellow,
        _ => Color::Red,
    }
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
