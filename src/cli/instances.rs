//! The commands that manage instances: start, ls, stop, restart, gc, logs, attach, url, and the
//! watcher each instance runs under.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueHint};

use super::parse::seconds;

/// Restart instances: same id, name, port and password, under a new watcher
///
/// By default ocx waits until the instance has no busy session (up to --wait), then ends the
/// server and its watcher as `ocx stop` does (the record stays), starts it again, and waits
/// until it is healthy. It works on running, unhealthy, failed and unsupervised instances,
/// and brings back dead ones (after a reboot, say). Clients and `ocx run --session` carry on
/// with the same URL, password and sessions.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ocx restart api            once api has nothing to do
  ocx restart --all --force  every instance, now, aborting what they do")]
pub struct RestartArgs {
    /// Instances to restart: id, unique id prefix, or name
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub instances: Vec<String>,

    /// Restart every instance
    #[arg(long, short)]
    pub all: bool,

    /// Do not wait for busy sessions: restart at once
    #[arg(long, short)]
    pub force: bool,

    /// How long to wait for busy sessions to finish (seconds, or 90s, 2m, 1h30m), then give up
    /// (exit 4)
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = seconds)]
    pub wait: Duration,

    /// How long to wait after TERM before KILL (seconds, or 90s, 2m, 1h30m)
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = seconds)]
    pub grace: Duration,

    /// How long the restarted server may take to become healthy (seconds, or 90s, 2m, 1h30m)
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = seconds)]
    pub timeout: Duration,

    /// Print the restarted instances as JSON (without secrets)
    #[arg(long)]
    pub json: bool,
}

/// `ocx __watch ID`: the watcher reads its plan on stdin.
#[derive(Debug, Args)]
pub struct WatchArgs {
    pub id: String,
}

/// List instances with their observed status
///
/// STATUS is what ocx observes now, not what it last wrote down:
///   running       alive and healthy
///   starting      being started, not healthy yet
///   unhealthy     alive, but the health check fails or hangs
///   restarting    being restarted by its watcher; `restarting (in 8s)`
///                 while the watcher waits
///   unsupervised  serving, but its watcher is gone (`ocx restart`
///                 supervises it again)
///   failed        the watcher gave up; `ocx restart` or `ocx stop`
///   stopping      being stopped
///   dead          the process is gone, or its PID now belongs to
///                 another process
///   corrupt       the record cannot be read (`ocx gc` moves it aside)
///   refused       the record is another user's or writable by others:
///                 never trusted or signalled (`ocx gc` moves it aside)
///   newer         the record was written by a newer ocx: left alone;
///                 upgrade ocx to manage it
///   unmanaged     (--all) an `opencode serve` process ocx did not start
///   unreachable   (--hosts, --all-hosts) a host that could not be
///                 asked; the row says why
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct LsArgs {
    /// Print a JSON array (without secrets)
    #[arg(long)]
    pub json: bool,

    /// Print instance ids only, one per line
    #[arg(long, short, conflicts_with = "json")]
    pub quiet: bool,

    /// Also list `opencode serve` processes of this user that ocx does not manage
    #[arg(long, short)]
    pub all: bool,

    /// Include passwords in --json output
    #[arg(long, requires = "json")]
    pub show_secrets: bool,

    /// Also list the instances of these hosts (names or ssh:// URLs, comma-separated), asked
    /// in parallel, with a HOST column; a host that cannot be reached is a row saying why
    #[arg(long, value_delimiter = ',', value_name = "HOSTS", conflicts_with = "quiet")]
    pub hosts: Vec<String>,

    /// Ask every server live (health, what its sessions do) instead of reading what its
    /// watcher observed
    #[arg(long)]
    pub probe: bool,

    /// List the instances here and on every host of `ocx host ls`
    #[arg(long, conflicts_with_all = ["hosts", "quiet"])]
    pub all_hosts: bool,

    /// Only the instances `ocx up` started from this fleet file (an `ocx.toml`, or the
    /// directory that has it)
    #[arg(long, short = 'f', value_name = "FILE", value_hint = ValueHint::FilePath, conflicts_with_all = ["hosts", "all_hosts"])]
    pub project: Option<PathBuf>,
}

/// Clean up what crashes and killed servers left behind
///
/// Removes records whose server is gone (or whose PID now belongs to another process, which is
/// never signalled); finishes starts and stops that no ocx is working on anymore (the ocx doing
/// them was killed); ends processes that carry an ocx marker but whose instance has no record
/// (an agent's shell command that outlived its server); reports ports of gone instances that are
/// still bound ("ghost ports"); removes temp files of interrupted writes; moves unreadable
/// records aside to <file>.corrupt. Nothing without the marker is ever touched. Worktrees ocx
/// made (`start --worktree`) whose instance is gone go by the rule of `stop`: only when they
/// have no changes, their branch only when it has no commits beyond its base.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Say what would be done, change nothing
    #[arg(long, short = 'n')]
    pub dry_run: bool,

    /// Also delete the logs, and the --isolate databases, of instances that no longer exist
    #[arg(long)]
    pub logs: bool,

    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

/// Stop instances: TERM, wait, KILL, then end every process the instance left behind
///
/// ocx checks that the PID still belongs to the server it started (start time and marker)
/// before it sends any signal. After the server is gone it ends every process still carrying
/// the instance's marker (OCX_INSTANCE_ID), such as shell commands the agent started, checks
/// that the port is free, and deletes the record. The log is kept. An instance's --worktree is
/// removed only if it has no uncommitted or untracked changes, its branch only if it has no
/// commits beyond its base; what is kept is said, with the command that removes it.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ocx stop api             stop one instance by name (or id, or unique id prefix)
  ocx stop k3f 9x2         stop several
  ocx stop --all --grace 3 stop every instance, giving each 3 s before KILL
  ocx stop api --discard   also remove its worktree and branch, work and all")]
pub struct StopArgs {
    /// Instances to stop: id, unique id prefix, or name
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub instances: Vec<String>,

    /// Stop every instance, in parallel
    #[arg(long, short)]
    pub all: bool,

    /// How long to wait after TERM before KILL (seconds, or 90s, 2m, 1h30m)
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = seconds)]
    pub grace: Duration,

    /// Skip the polite step: KILL at once
    #[arg(long, short)]
    pub force: bool,

    /// Print the outcome as JSON
    #[arg(long)]
    pub json: bool,

    /// Also remove an instance's --worktree when it has uncommitted or untracked changes, and
    /// its branch when it has commits: that work is lost
    #[arg(long)]
    pub discard: bool,
}

/// Print an instance's log: the server's own log and ocx's notes
///
/// The watcher writes the server's output (its log at `ocx start --log-level`) and its own
/// notes (`--- ocx: …`: starts, exits, restarts and why) to <home>/logs/<id>.log, rotated to
/// <id>.log.1, .2, … and capped by `ocx start --log-max-size` and `--log-max-files`. Each line
/// is stored with the time it arrived; -n and --since read across the rotated files, -f
/// follows across rotations and restarts. The log of a stopped instance stays (by its id)
/// until `ocx gc --logs`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ocx logs api                 the last 50 lines
  ocx logs api -f              follow, until Ctrl-C
  ocx logs api --since 10m -t  the last ten minutes, with each line's time")]
pub struct LogsArgs {
    /// The instance [default: the only running one]
    pub instance: Option<String>,

    /// Keep printing new lines as they are written, until Ctrl-C
    #[arg(long, short)]
    pub follow: bool,

    /// How many lines from the end to print [default: 50, or all with --since]
    #[arg(long, short = 'n', value_name = "N")]
    pub lines: Option<usize>,

    /// Only lines since then: a duration ago (10m, 2h, 1h30m) or a time (2026-11-22T10:00:00Z)
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,

    /// Show the time each line arrived
    #[arg(long, short)]
    pub timestamps: bool,
}

/// Open opencode's terminal interface on an instance
///
/// Runs `opencode attach URL` with the instance's credentials in its environment (never on
/// its command line, where other users could read them) and exits with its exit code.
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// The instance [default: the only running one]
    pub instance: Option<String>,

    /// The opencode binary [default: the one the instance was started with]
    #[arg(long, value_name = "PATH", value_hint = ValueHint::FilePath)]
    pub opencode: Option<PathBuf>,

    /// Arguments passed through to `opencode attach`
    #[arg(last = true, value_name = "OPENCODE_ARGS")]
    pub extra: Vec<String>,
}

/// Print an instance's URL, for curl and other clients
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  curl \"$(ocx url api --with-credentials)/global/health\"")]
pub struct UrlArgs {
    /// The instance [default: the only running one]
    pub instance: Option<String>,

    /// Include the username and password in the URL
    #[arg(long)]
    pub with_credentials: bool,
}
