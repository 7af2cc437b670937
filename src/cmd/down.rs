//! `ocx down`: stop the instances `ocx up` started from the fleet file, as `ocx stop` does.

use anyhow::{Result, anyhow};

use super::fleet::{self, file};
use crate::cli::DownArgs;
use crate::error::{Failure, code};
use crate::home::Home;
use crate::instance::stop;
use crate::record::{self, Record};
use crate::{output, parallel};

/// At most this many instances are stopped at once.
const PARALLEL: usize = 32;

pub fn run(home: &Home, args: DownArgs) -> Result<()> {
    // Only the file's path is needed: a file being edited (and broken meanwhile) still comes down.
    let project = file::locate(args.file.as_deref())?;
    let _turn = fleet::lock(home, &project)?;
    let records = record::valid(&record::list(home)?);
    let ours = fleet::of_project(&records, &project);
    let targets: Vec<Record> = ours
        .into_iter()
        .filter(|r| args.names.is_empty() || args.names.iter().any(|n| of_table(r, n)))
        .cloned()
        .collect();
    for name in &args.names {
        if !targets.iter().any(|r| of_table(r, name)) {
            return Err(anyhow!(
                Failure::new(
                    code::NOT_FOUND,
                    format!("no instance of table {name:?} of {} is running", project.display())
                )
                .hint("`ocx ls --project FILE` lists the file's instances")
            ));
        }
    }
    let outcomes = parallel::map(&targets, PARALLEL, |r| stop::stop(home, r, args.grace, false));
    if args.json {
        output::print_json(&serde_json::to_value(&outcomes)?)?;
    } else if outcomes.is_empty() {
        output::note(format_args!("no instance of {} is running", project.display()));
    } else {
        let mut table = output::table(["NAME", "ID", "RESULT", "SIGNAL", "TOOK"]);
        for o in &outcomes {
            table.add_row([
                o.name.as_deref().unwrap_or("-"),
                &o.id,
                o.result,
                o.signal.unwrap_or("-"),
                &output::elapsed(std::time::Duration::from_millis(o.duration_ms)),
            ]);
        }
        output::print_table(&mut table)?;
    }
    for o in outcomes.iter().filter(|o| o.error.is_some()) {
        output::note(format_args!("error: {}: {}", o.id, o.error.as_deref().unwrap_or_default()));
    }
    if outcomes.iter().any(|o| o.result == "failed") {
        return Err(anyhow!(Failure::silent(code::FAILED)));
    }
    Ok(())
}

/// Whether the instance is table `name`'s: `name`, or `name-N` of a `count`.
fn of_table(record: &Record, name: &str) -> bool {
    let Some(own) = record.name.as_deref() else { return false };
    own == name
        || own.strip_prefix(name).and_then(|rest| rest.strip_prefix('-')).is_some_and(|n| n.parse::<u32>().is_ok())
}
