//! `ocx top`: the clap type of the terminal dashboard.

use std::time::Duration;

use clap::Args;

use super::parse::seconds;

const TOP_EXAMPLES: &str = "\
Keys:
  ↑/↓ j/k   select an instance          Enter e   its live events
  l         its log (as `ocx logs -f`)  r / s     restart / stop it (asks y/n)
  a         attach (`ocx attach`), back here when it exits
  /         filter by name or id        ?         help
  q Esc     quit (Ctrl-C too)

Examples:
  ocx top                   every instance of this machine
  ocx top --all-hosts       with the instances of every host of `ocx host ls`
  ocx --host box top        the instances of host box";

/// A live dashboard of every instance, in the terminal
///
/// A table of the instances as `ocx ls` shows them (status, activity, restarts, uptime,
/// memory, CPU, directory), refreshed about twice a second, and below it the selected
/// instance's live events or log, and what it waits for (a permission or a question, and how
/// long it has waited). Restart, stop and attach from the keyboard. Needs a terminal: for
/// scripts use `ocx ls --json` and `ocx events --json`.
#[derive(Debug, Args)]
#[command(after_help = TOP_EXAMPLES)]
pub struct TopArgs {
    /// Also show the instances of every host of `ocx host ls` (each asked over ssh every few
    /// seconds; a host that cannot be reached is a row saying why)
    #[arg(long)]
    pub all_hosts: bool,

    /// How often the table is refreshed (100ms at least)
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = seconds)]
    pub interval: Duration,

    /// The host given with the global `--host` (taken off it: `top` runs here and asks the host)
    #[arg(skip)]
    pub host: Option<String>,
}
