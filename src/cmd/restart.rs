//! `ocx restart`: resolve the instances, restart them in parallel (`instance::restart`),
//! print them as `start` does.

use anyhow::Result;

use crate::cli::RestartArgs;
use crate::home::Home;
use crate::instance::launch::Started;
use crate::instance::restart::{self, RestartOptions};
use crate::{output, parallel, process};

pub fn run(home: &Home, args: RestartArgs) -> Result<()> {
    let targets = super::targets(home, &args.instances, args.all)?;
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
    super::fail_with(errors, targets.len() == 1)
}
