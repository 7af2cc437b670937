//! The commands for a fleet of instances: `up` and `down` (from a fleet file, `ocx.toml`),
//! `resurrect` (what should run after a reboot), and `service` (run `resurrect` at boot).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum, ValueHint};

use super::parse::seconds;

/// Make this machine match the fleet file: start what is missing, restart what changed
///
/// The fleet file, `ocx.toml` (in the current directory or the nearest parent that has one,
/// or -f FILE), declares instances by name, one table each, keys spelled as `ocx start`'s
/// long flags; a `[defaults]` table applies to all:
///
///   [defaults]
///   restart = "on-failure"
///
///   [instances.api]
///   dir = "."                          # relative to the file (the default)
///   env = { OPENCODE_LOG_LEVEL = "INFO" }
///
///   [instances.worker]
///   count = 2                          # worker-1, worker-2
///   max-memory = "2G"
///   args = ["--cors", "https://x.io"]  # passed to `opencode serve`
///
/// For each instance `up` starts it if it is missing (in parallel, each healthy before `up`
/// returns), leaves it alone if it runs with the file's settings (same PID), and restarts it
/// (once it is idle, as `ocx restart` does; same id, port and password) if its settings
/// differ or it is dead. One row per instance says what was done (`created`, `unchanged`,
/// `restarted`, `failed`) and why. Instances of this file that the file no longer declares
/// are reported (`orphan`), and stopped with --remove-orphans. A bad key or value is an error
/// naming the file, line and key (exit 2), and nothing is started. Two `ocx up` of one file at
/// once take turns: each instance is started once.
#[derive(Debug, Args)]
#[command(
    verbatim_doc_comment,
    after_help = "\
Examples:
  ocx up                     every instance of ./ocx.toml (or a parent's)
  ocx up api                 only the instance api of the file
  ocx up -f ci/ocx.toml      another fleet file
  ocx up --remove-orphans    also stop instances the file no longer declares
  ocx up --json              one JSON document: [{name, id, action, why, …}]"
)]
pub struct UpArgs {
    /// Instances of the file to bring up (table names) [default: all]
    pub names: Vec<String>,

    /// The fleet file [default: ocx.toml in the current directory or its nearest parent]
    #[arg(long = "file", short = 'f', value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub file: Option<PathBuf>,

    /// Stop the instances of this file that it no longer declares
    #[arg(long)]
    pub remove_orphans: bool,

    /// How long a busy instance whose settings changed is waited for before its restart
    /// (seconds, or 90s, 2m, 1h30m), then it is `failed` (exit 4)
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = seconds)]
    pub wait: Duration,

    /// Print one JSON document: a list of {name, id, action, why, url, pid}
    #[arg(long)]
    pub json: bool,
}

/// Stop the fleet file's instances, as `ocx stop` does
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ocx down                   every instance started from ./ocx.toml (or a parent's)
  ocx down worker            only the instances of table worker (worker-1, worker-2, …)")]
pub struct DownArgs {
    /// Instances of the file to stop (table names) [default: all the file's instances]
    pub names: Vec<String>,

    /// The fleet file [default: ocx.toml in the current directory or its nearest parent]
    #[arg(long = "file", short = 'f', value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub file: Option<PathBuf>,

    /// How long to wait after TERM before KILL (seconds, or 90s, 2m, 1h30m)
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = seconds)]
    pub grace: Duration,

    /// Print the outcome as JSON
    #[arg(long)]
    pub json: bool,
}

/// Bring back every instance that should be running and is not (after a reboot)
///
/// An instance should be running when its record says it was (nobody stopped it: `ocx stop`
/// deletes the record) and its restart policy is not `no`; it is not when its server and its
/// watcher are both gone: after a reboot, a power loss, or its watcher killed. Each comes back
/// with the same id, name, port, password and settings, so clients and `ocx run --session`
/// carry on. What runs, what the user stopped and `--restart no` instances are left alone; a
/// second run does nothing. `ocx service install` runs this at boot or login.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ocx resurrect              after a reboot
  ocx resurrect --dry-run    what would come back")]
pub struct ResurrectArgs {
    /// Say what would be brought back, start nothing
    #[arg(long, short = 'n')]
    pub dry_run: bool,

    /// How long each server may take to become healthy (seconds, or 90s, 2m, 1h30m)
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = seconds)]
    pub timeout: Duration,

    /// Print a JSON array: {name, id, action, why, url, pid}
    #[arg(long)]
    pub json: bool,
}

/// Run `ocx resurrect` at boot or login: a per-user unit, no root
///
/// Linux: a systemd user unit (with a hint to `loginctl enable-linger` when lingering is off,
/// so it runs at boot and not only at login); macOS: a LaunchAgent; Windows: a Task Scheduler
/// task at logon. It runs this ocx (its absolute path) for this home. Where the system has no
/// such manager (a container without systemd), ocx says so and prints the equivalent
/// `@reboot` crontab line instead.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ocx service install            set it up for this home
  ocx service install --print    show what would be installed, install nothing
  ocx service status
  ocx service uninstall")]
pub struct ServiceArgs {
    #[command(subcommand)]
    pub command: ServiceCommand,
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Install and enable the unit that runs `ocx resurrect` at boot or login
    Install(ServiceInstallArgs),
    /// Disable and remove it
    Uninstall(ServiceManagerArgs),
    /// Whether it is installed, where, and what it runs
    Status(ServiceManagerArgs),
}

#[derive(Debug, Args)]
pub struct ServiceInstallArgs {
    /// Print what would be installed (the unit file and where it goes), install nothing
    #[arg(long)]
    pub print: bool,

    #[command(flatten)]
    pub manager: ServiceManagerArgs,
}

#[derive(Debug, Args)]
pub struct ServiceManagerArgs {
    /// The service manager [default: this system's: systemd, launchd, task-scheduler, or cron
    /// where there is none]
    #[arg(long, value_enum, value_name = "MANAGER")]
    pub manager: Option<ServiceManager>,
}

/// Who runs `ocx resurrect` at boot or login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServiceManager {
    Systemd,
    Launchd,
    TaskScheduler,
    Cron,
}
