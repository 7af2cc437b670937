//! The commands that manage instances: start, ls, stop, restart, gc, logs, attach, url, and the
//! watcher each instance runs under.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum, ValueHint};

use super::parse::{key_value, seconds, size};

/// Start opencode servers in the background and wait until they are healthy
///
/// Each server runs detached under a watcher of its own (`ocx __watch ID`, its parent): the
/// watcher copies the server's output, with its own log at --log-level, into
/// <home>/logs/<id>.log, rotated and capped; restarts it per --restart when it exits (on the
/// same port, with the same password; at once, then after 1 s, 2 s, … up to a minute; after 5
/// unstable exits in a row it gives up and the instance is `failed`); and restarts it when its
/// health checks keep failing or its memory stays above --max-memory, at a moment no session
/// is busy.
///
/// ocx picks a free loopback port (outside the range the OS hands out for outgoing
/// connections) unless --port is given, and a random password unless --no-auth is given. It
/// returns once the server printed its ready line and answered /global/health; if the server
/// exits or --timeout passes first, ocx stops what it started, leaves no record behind, and
/// fails.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ocx start                          serve the current directory
  ocx start --name api --dir ~/api   a named instance for another directory
  ocx start --count 3 --json         three instances, described as JSON
  ocx start --restart always         restart it even when it exits cleanly
  ocx start --max-memory 2G          restart it when it grows past 2 GiB (once idle)
  ocx start -- --cors https://x.io   pass arguments through to `opencode serve`
  ocx start --name api --worktree    a worktree and branch ocx/api of its own
  ocx start --count 3 --worktree --base main --setup 'npm ci'
                                     three agents, each on its own branch from main
  ocx start --isolate                a session database of its own")]
pub struct StartArgs {
    /// A unique name to refer to the instance by (with --count, suffixed -1..-N)
    #[arg(long, short)]
    pub name: Option<String>,

    /// The directory the server serves [default: the current directory]
    #[arg(long, short, value_hint = ValueHint::DirPath)]
    pub dir: Option<PathBuf>,

    /// Listen on this port instead of a free one ocx picks (never retried)
    #[arg(long, short)]
    pub port: Option<u16>,

    /// The address to listen on
    #[arg(long, default_value = "127.0.0.1")]
    pub hostname: String,

    /// Start without a password (refused with a non-loopback --hostname)
    #[arg(long)]
    pub no_auth: bool,

    /// How long to wait for the server to become healthy (seconds, or 90s, 2m, 1h30m)
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = seconds)]
    pub timeout: Duration,

    /// The opencode binary [default: $OCX_OPENCODE, opencode on PATH, ~/.opencode/bin/opencode]
    #[arg(long, value_name = "PATH", value_hint = ValueHint::FilePath)]
    pub opencode: Option<PathBuf>,

    /// Set an environment variable for the server (repeatable)
    #[arg(long = "env", short = 'e', value_name = "KEY=VAL", value_parser = key_value)]
    pub env: Vec<(String, String)>,

    /// Start this many instances in parallel
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub count: u32,

    /// Print the started instances as JSON (without secrets)
    #[arg(long)]
    pub json: bool,

    /// When the watcher restarts the server: `on-failure` (a non-zero exit, or a signal other
    /// than TERM), `always` (also after a clean exit), `no` (never; it still keeps the log)
    #[arg(long, value_enum, default_value_t = RestartPolicy::OnFailure, value_name = "WHEN")]
    pub restart: RestartPolicy,

    /// The level of the server's own log, which comes to the instance's log
    #[arg(long, value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,

    /// Rotate the log before it grows past this size (K, M, G)
    #[arg(long, default_value = "10M", value_name = "SIZE", value_parser = size)]
    pub log_max_size: u64,

    /// Keep at most this many log files: the current one and the rotated ones
    #[arg(long, default_value_t = 3, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub log_max_files: u32,

    /// How long between health checks of a running server (seconds, or 90s, 2m, 1h30m)
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = seconds)]
    pub health_interval: Duration,

    /// Restart the server after this many failed health checks in a row (when it was last seen
    /// busy, only after five more minutes)
    #[arg(long, default_value_t = 3, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub health_failures: u32,

    /// Restart the server when its resident memory stays above this size (K, M, G), at the
    /// next moment no session is busy
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub max_memory: Option<u64>,

    /// Answer a permission request or question that no client answered within --ask-timeout,
    /// whoever sent the prompt (the SDK, the web UI, curl): `reject` (the tool call fails, the
    /// question is dismissed) or `allow` (once). The watcher answers, and says so in the log.
    /// Without it nothing is answered for a client: a slow person at a TUI is never overruled
    #[arg(long, value_enum, value_name = "ANSWER")]
    pub permission: Option<AnswerPolicy>,

    /// How long a request may wait for a client's answer before --permission answers it
    /// (seconds, or 90s, 2m) [default with --permission: 60s]
    #[arg(long, value_name = "DURATION", value_parser = seconds, requires = "permission")]
    pub ask_timeout: Option<Duration>,

    /// Run this shell command when something a person should know happens: a session starts
    /// asking, finishes its turn or fails, the server is restarted, the watcher gives up. It runs
    /// detached (ended after 30 s), with OCX_EVENT (asking, idle, error, restarted, failed),
    /// OCX_INSTANCE, OCX_NAME, OCX_SESSION, OCX_TITLE, OCX_DETAIL, OCX_URL and OCX_DIR set
    #[arg(long, value_name = "CMD")]
    pub notify: Option<String>,

    /// Serve a git worktree of its own instead of the directory: a new branch BRANCH [default:
    /// ocx/<name or id>; with --count, BRANCH-1..N] from --base, under <home>/worktrees/, so
    /// agents of one repository never edit the same files. An existing BRANCH is checked out if
    /// git allows it. `ocx diff` shows what the agent changed; `ocx stop` removes the worktree
    /// only if it has no changes, and the branch only if it has no commits beyond its base
    #[arg(long, value_name = "BRANCH", num_args = 0..=1)]
    pub worktree: Option<Option<String>>,

    /// The commit, branch or tag a --worktree's new branch starts from
    #[arg(long, value_name = "REF", requires = "worktree")]
    pub base: Option<String>,

    /// A shell command run in the new worktree before the server starts (`npm ci`), its output
    /// in the instance's log; if it fails, the start fails and the worktree and branch go
    #[arg(long, value_name = "CMD", requires = "worktree")]
    pub setup: Option<String>,

    /// Give the instance an opencode database of its own (<home>/data/<id>/), so its sessions
    /// are listed only by its own `ocx sessions` and stay out of your own opencode; provider
    /// credentials and config stay shared. The database outlives stop and restart (it is the
    /// instance's history); `ocx gc --logs` deletes it once the instance is gone
    #[arg(long)]
    pub isolate: bool,

    /// Arguments passed through to `opencode serve`
    #[arg(last = true, value_name = "OPENCODE_ARGS")]
    pub extra: Vec<String>,

    /// When no opencode is found (or only one of a major version ocx does not speak, on PATH),
    /// install the version ocx is tested with from the npm registry into ocx's own cache
    /// directory, without asking, and use it from then on (`ocx install-opencode` does only
    /// that). On a terminal `ocx start` offers it; in scripts, give this
    #[arg(long)]
    pub install_opencode: bool,
}

/// What the watcher answers for a client that did not (`start --permission`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AnswerPolicy {
    Reject,
    Allow,
}

/// When the watcher restarts a server that exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RestartPolicy {
    No,
    OnFailure,
    Always,
}

/// opencode's log levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

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
