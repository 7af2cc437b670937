//! `ocx resurrect`: bring back every instance that should be running and is not (after a
//! reboot), and say what was done.

use anyhow::{Result, anyhow};
use serde::Serialize;

use crate::cli::ResurrectArgs;
use crate::error::{self, Failure};
use crate::home::Home;
use crate::instance::resurrect;
use crate::{output, process};

#[derive(Debug, Serialize)]
struct Row {
    name: Option<String>,
    id: String,
    /// `resurrected`, `would resurrect` (--dry-run), `skipped` (another ocx got to it first) or
    /// `failed`.
    action: &'static str,
    why: String,
    url: String,
    pid: Option<u32>,
}

pub fn run(home: &Home, args: ResurrectArgs) -> Result<()> {
    process::install_interrupt_handler();
    let spinner = (!args.dry_run).then(|| output::Spinner::start("bringing back what should be running".to_string()));
    let outcomes = resurrect::resurrect(home, args.timeout, args.dry_run)?;
    drop(spinner);
    let mut code = None;
    let rows: Vec<Row> = outcomes
        .into_iter()
        .map(|o| {
            let why = "its server and watcher were gone".to_string();
            let (action, why, pid) = match (&o.started, &o.error) {
                (_, Some(err)) => {
                    code.get_or_insert(error::code_of(err));
                    ("failed", format!("{err:#}"), None)
                }
                (Some(s), None) => ("resurrected", why, Some(s.record.pid)),
                (None, None) if args.dry_run => ("would resurrect", why, None),
                (None, None) => ("skipped", "another ocx brought it back or changed it meanwhile".into(), None),
            };
            Row { name: o.record.name.clone(), id: o.record.id.clone(), action, why, url: o.record.url.clone(), pid }
        })
        .collect();
    if args.json {
        output::print_json(&serde_json::to_value(&rows)?)?;
    } else if rows.is_empty() {
        output::line("nothing to bring back: every instance that should be running is")?;
    } else {
        let mut table = output::table(["ID", "NAME", "ACTION", "URL", "PID", "WHY"]);
        for r in &rows {
            let pid = r.pid.map_or("-".to_string(), |p| p.to_string());
            table.add_row([&r.id, r.name.as_deref().unwrap_or("-"), r.action, &r.url, &pid, &r.why]);
        }
        output::print_table(&mut table)?;
    }
    match code {
        Some(code) => Err(anyhow!(Failure::silent(code))),
        None => Ok(()),
    }
}
