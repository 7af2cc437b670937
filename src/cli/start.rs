//! `ocx start`'s arguments (also the keys of a fleet file, `ocx.toml`): clap types only.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, ValueEnum, ValueHint};

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

/// `ocx start`'s arguments alone, to parse a command line of `start` with (a fleet file's
/// table, the instances of `ocx batch --parallel`).
#[derive(Debug, Parser)]
#[command(name = "start")]
pub struct StartLine {
    #[command(flatten)]
    pub args: StartArgs,
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
