//! `ocx restart`: resolve the instances, restart them in parallel (`instance::launch::restart`),
//! print them as `start` does.

use anyhow::{Result, anyhow};

use crate::cli::RestartArgs;
use crate::error::{self, Failure};
use crate::home::Home;
use crate::instance::launch::Started;
use crate::instance::restart::{self, RestartOptions};
use crate::record::{self, Record};
use crate::{output, parallel, process};

pub fn run(home: &Home, args: RestartArgs) -> Result<()> {
    let records = record::valid(&record::list(home)?);
    let targets: Vec<Record> = if args.all {
        records.clone()
    } else {
        // Resolve every name first: a typo restarts nothing.
        let mut targets: Vec<Record> = Vec::new();
        for query in &args.instances {
            let found = record::resolve(&records, query)?;
            if !targets.iter().any(|t| t.id == found.id) {
                targets.push(found.clone());
            }
        }
        targets
    };
    let options = RestartOptions { force: args.force, wait: args.wait, timeout: args.timeout, grace: args.grace };
    process::install_interrupt_handler();
    let spinner = output::Spinner::start(match targets.len() {
        1 => format!("restarting {}", targets[0].label()),
        n => format!("restarting {n} instances"),
    });
    let results = parallel::map(&targets, targets.len().max(1), |r| restart::restart(home, &r.id, &options));
    drop(spinner);

    let mut restarted: Vec<Started> = Vec::new();
    let mut errors: Vec<anyhow::Error> = Vec::new();
    for (result, target) in results.into_iter().zip(&targets) {
        match result {
            Ok(s) => restarted.push(s),
            Err(e) => errors.push(e.context(format!("instance {}", target.label()))),
        }
    }
    super::print_started(&restarted, args.json, "restart_ms", "RESTARTED IN")?;
    let mut errors = errors.into_iter();
    match errors.next() {
        None => Ok(()),
        Some(first) if targets.len() == 1 => Err(first),
        Some(first) => {
            let code = error::code_of(&first);
            for err in std::iter::once(first).chain(errors) {
                error::report(&err);
            }
            Err(anyhow!(Failure::silent(code)))
        }
    }
}
