//! What the table shows, gathered off the draw path: this machine's instances from one
//! `instance::observe::observe` call (plus CPU from the process table) every refresh, and each
//! other host's from its `ocx ls --json`, on threads of their own.

use std::sync::mpsc::Sender;
use std::time::Duration;

use serde_json::Value;

use crate::home::Home;
use crate::instance::observe::Observed;
use crate::output;
use crate::process::CpuMeter;
use crate::record::{self, Record};
use crate::remote::Host;

/// How often another host is asked (each time over ssh).
const HOST_EVERY: Duration = Duration::from_secs(3);
/// How long one host may take to answer.
const HOST_TIMEOUT: Duration = Duration::from_secs(20);

/// One line of the table: everything is text already, so drawing does no work.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    /// The host's label; None for this machine.
    pub host: Option<String>,
    pub id: String,
    pub name: Option<String>,
    /// The classifier's status, as `ls` says it (`running`, `restarting`, …).
    pub status: String,
    /// The status with what explains it: `restarting (in 8s)`, `dead (SIGKILL)`.
    pub status_text: String,
    pub activity: String,
    pub restarts: u32,
    /// `1 (SIGKILL, 3s ago)`.
    pub restarts_text: String,
    pub uptime: String,
    pub mem: String,
    pub cpu: String,
    pub pid: String,
    pub url: String,
    /// Where the instance works. (When records carry a worktree, its branch goes here.)
    pub place: String,
    /// When it was started, for a stable order.
    pub started_at: String,
    /// The record, for actions on this machine's instances.
    pub record: Option<Record>,
}

impl Row {
    /// The name, else the id.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }

    /// A row for an instance of `host` (None: this one), from its record and what was observed.
    pub fn of(host: Option<String>, r: &Record, o: &Observation, cpu: Option<f32>) -> Row {
        let alive = o.uptime_s.is_some();
        Row {
            host,
            id: r.id.clone(),
            name: r.name.clone(),
            status: o.status.clone(),
            status_text: r.status_text(&o.status, o.restart_in_s),
            activity: o.activity.clone().unwrap_or_else(|| "-".into()),
            restarts: r.restarts,
            restarts_text: r.restarts_text(),
            uptime: o.uptime_s.map_or("-".into(), |s| output::duration(Duration::from_secs(s))),
            mem: o.rss_bytes.map_or("-".into(), output::bytes),
            cpu: cpu.filter(|_| alive).map_or("-".into(), |c| format!("{c:.0}%")),
            pid: if alive { r.pid.to_string() } else { "-".into() },
            url: r.url.clone(),
            place: r.dir.display().to_string(),
            started_at: r.started_at.clone(),
            record: Some(r.clone()),
        }
    }

    /// A row for what cannot be listed as an instance: a corrupt record, a host that did not answer.
    pub fn broken(host: Option<String>, id: &str, status: &str, why: String) -> Row {
        let dash = || "-".to_string();
        Row {
            host,
            id: id.to_string(),
            status: status.into(),
            status_text: status.into(),
            activity: dash(),
            restarts_text: dash(),
            uptime: dash(),
            mem: dash(),
            cpu: dash(),
            pid: dash(),
            url: dash(),
            place: why,
            ..Row::default()
        }
    }
}

/// What was observed of an instance, from `observe` here or from a host's `ls --json`.
pub struct Observation {
    pub status: String,
    pub activity: Option<String>,
    pub uptime_s: Option<u64>,
    pub rss_bytes: Option<u64>,
    pub restart_in_s: Option<u64>,
}

impl From<&Observed> for Observation {
    fn from(o: &Observed) -> Self {
        Observation {
            status: o.status.as_str().to_string(),
            activity: o.activity.clone(),
            uptime_s: o.uptime_s,
            rss_bytes: o.rss_bytes,
            restart_in_s: o.restart_in_s,
        }
    }
}

/// What the gatherers send: a whole table of one source (None: this machine).
pub struct Snapshot {
    pub host: Option<String>,
    pub rows: Vec<Row>,
}

/// This machine's rows, every `interval`, until nobody listens.
pub fn gather_here(home: &Home, interval: Duration, tx: Sender<Snapshot>) {
    let home = home.clone();
    std::thread::spawn(move || {
        let mut cpu = CpuMeter::new().ok();
        loop {
            let rows = here(&home, cpu.as_mut())
                .unwrap_or_else(|err| vec![Row::broken(None, "-", "error", format!("cannot list instances: {err:#}"))]);
            if tx.send(Snapshot { host: None, rows }).is_err() {
                return;
            }
            std::thread::sleep(interval);
        }
    });
}

fn here(home: &Home, cpu: Option<&mut CpuMeter>) -> anyhow::Result<Vec<Row>> {
    let entries = record::list(home)?;
    let records = record::valid(&entries);
    // The one call for what each instance is doing (the watchers' observation, once it is kept).
    let observed = crate::instance::observe::observe(home, &records, false)?;
    let pids: Vec<u32> =
        records.iter().zip(&observed).filter(|(_, o)| o.uptime_s.is_some()).map(|(r, _)| r.pid).collect();
    let usage = cpu.map(|meter| meter.sample(&pids)).unwrap_or_default();
    let mut rows: Vec<Row> =
        records.iter().zip(&observed).map(|(r, o)| Row::of(None, r, &o.into(), usage.get(&r.pid).copied())).collect();
    rows.extend(
        record::invalid(&entries)
            .into_iter()
            .map(|i| Row::broken(None, &i.id, i.status(), format!("{}: {}", i.path.display(), i.reason))),
    );
    Ok(rows)
}

/// `host`'s rows (from its `ocx ls --json`), every few seconds, until nobody listens.
pub fn gather_host(home: &Home, host: Host, tx: Sender<Snapshot>) {
    let home = home.clone();
    std::thread::spawn(move || {
        let label = host.label().to_string();
        loop {
            let rows = match host.json(&home, &["ls", "--json"], HOST_TIMEOUT) {
                Ok(Value::Array(docs)) => docs.iter().map(|doc| of_doc(&label, doc)).collect(),
                Ok(_) => vec![Row::broken(Some(label.clone()), "-", "unreachable", "its ocx printed no list".into())],
                Err(err) => vec![Row::broken(Some(label.clone()), "-", "unreachable", format!("{err:#}"))],
            };
            if tx.send(Snapshot { host: Some(label.clone()), rows }).is_err() {
                return;
            }
            std::thread::sleep(HOST_EVERY);
        }
    });
}

/// A row from one document of `ls --json`.
fn of_doc(host: &str, doc: &Value) -> Row {
    let host = Some(host.to_string());
    let status = doc["status"].as_str().unwrap_or("-");
    let text = |key: &str| doc[key].as_str().unwrap_or("-").to_string();
    if doc.get("error").is_some() {
        return Row::broken(host, &text("id"), status, format!("{}: {}", text("path"), text("error")));
    }
    let Ok(r) = serde_json::from_value::<Record>(doc.clone()) else {
        return Row::broken(host, &text("id"), status, text("command"));
    };
    let observation = Observation {
        status: status.to_string(),
        activity: doc["activity"].as_str().map(str::to_string),
        uptime_s: doc["uptime_s"].as_u64(),
        rss_bytes: doc["rss_bytes"].as_u64(),
        restart_in_s: doc["restart_in_s"].as_u64(),
    };
    Row::of(host, &r, &observation, None)
}
