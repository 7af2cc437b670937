//! `ocx stop`: resolve the instances, stop them in parallel (`instance::stop`), report.

use std::time::Duration;

use anyhow::{Result, anyhow};

use crate::cli::StopArgs;
use crate::error::{Failure, code};
use crate::home::Home;
use crate::instance::stop;
use crate::{output, parallel};

/// At most this many instances are stopped at once.
const PARALLEL: usize = 32;

pub fn run(home: &Home, args: StopArgs) -> Result<()> {
    let targets = super::targets(home, &args.instances, args.all)?;
    let grace = if args.force { Duration::ZERO } else { args.grace };
    let outcomes = parallel::map(&targets, PARALLEL, |r| stop::stop(home, r, grace, args.discard));

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
    for o in &outcomes {
        if let Some(note) = &o.note {
            output::note(format_args!("note: {}: {note}", o.id));
        }
        if let Some(summary) = o.worktree.as_ref().and_then(|w| w.summary()) {
            output::note(format_args!("{}: {summary}", o.id));
        }
        if let Some(error) = &o.error {
            output::note(format_args!("error: {}: {error}", o.id));
        }
    }
    if outcomes.iter().any(|o| o.result == "failed") {
        return Err(anyhow!(Failure::silent(code::FAILED)));
    }
    Ok(())
}
