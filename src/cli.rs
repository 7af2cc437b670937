//! The command line: clap types only, so completions and man pages can be built from them alone.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum, ValueHint};

const EXAMPLES: &str = "\
Examples:
  ocx start --name api            start a server for the current directory
  ocx ls                          every instance with its observed status
  ocx run api \"explain main.rs\"  send a prompt, stream the answer
  ocx url api --with-credentials  the URL for curl and other clients
  ocx logs api -f                 follow the server's log
  ocx stop api                    stop it: TERM, then KILL after the grace period
  ocx restart api                 restart it (same port and password) once it is idle
  ocx stop --all                  stop every instance, in parallel
  ocx gc                          clean up after crashes and killed servers
  ocx host add box ssh://me@box   a host to reach over ssh (with ocx installed there)
  ocx ls --all-hosts              instances here and on every host
  ocx run box:api \"fix it\"      a prompt to instance api on host box";

/// Run OpenCode servers in the background: start, list, prompt, stop and clean up.
///
/// ocx starts `opencode serve` detached under a small watcher of its own (one per instance,
/// no daemon) that restarts it when it crashes or hangs and keeps its log capped; it keeps one
/// lock-guarded JSON record per instance, and always reports what it observes (is the process
/// alive, the same one, healthy?) rather than what it last wrote down.
#[derive(Debug, Parser)]
#[command(name = "ocx", version, propagate_version = true, after_help = EXAMPLES)]
pub struct Cli {
    /// The state directory [default: the platform's state dir + ocx]
    #[arg(long, global = true, env = "OCX_HOME", value_name = "DIR", value_hint = ValueHint::DirPath)]
    pub home: Option<PathBuf>,

    /// Run the command on another host over ssh: a name from `ocx host ls`, or
    /// ssh://[user@]host[:port]. `NAME:instance` names an instance on host NAME too
    #[arg(long, global = true, env = "OCX_HOST", value_name = "HOST")]
    pub host: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Start(StartArgs),
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    Run(RunArgs),
    Wait(WaitArgs),
    Events(EventsArgs),
    Sessions(SessionsArgs),
    Stop(StopArgs),
    Restart(RestartArgs),
    Logs(LogsArgs),
    Attach(AttachArgs),
    Url(UrlArgs),
    Gc(GcArgs),
    Host(HostArgs),
    Tunnel(TunnelArgs),
    Completions(CompletionsArgs),
    #[command(hide = true)]
    Man(ManArgs),
    /// The watcher of one instance (started by `ocx start`; not for direct use)
    #[command(name = "__watch", hide = true)]
    Watch(WatchArgs),
    /// Run a command for an ocx on another machine (reads its request on stdin; not for
    /// direct use)
    #[command(name = "__remote", hide = true)]
    Remote,
}

/// Hosts to reach over ssh: add, list and remove their names
///
/// A host is reached with the system's `ssh` ($OCX_SSH overrides it), so ~/.ssh/config,
/// agents, keys and ProxyJump work as for any ssh command; it must log in without a prompt
/// (batch mode). One connection per host is shared by the commands that follow it within a
/// minute. The host needs the same version of ocx; --ocx says where it is when it is not on
/// the PATH of a non-interactive ssh session. The names are kept in ocx's config directory
/// (hosts.json, mode 0600).
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ocx host add box ssh://me@box.example --ocx '~/.cargo/bin/ocx'
  ocx --host box start --name api       start an instance on box
  ocx run box:api \"explain main.rs\"     prompt it (through a forwarded port)
  ocx ls --all-hosts                    instances here and on every host")]
pub struct HostArgs {
    #[command(subcommand)]
    pub command: HostCommand,
}

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Add a host (or change the one of that name)
    Add {
        /// The name to use in `--host NAME` and `NAME:instance`
        name: String,
        /// ssh://[user@]host[:port]
        url: String,
        /// The ocx binary on the host [default: ocx on its PATH]
        #[arg(long, value_name = "PATH")]
        ocx: Option<String>,
    },
    /// List the hosts
    #[command(visible_alias = "list")]
    Ls {
        /// Print a JSON array
        #[arg(long)]
        json: bool,
    },
    /// Remove hosts (their instances keep running there)
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// Forward a port to an instance on another host, until Ctrl-C
///
/// Prints a URL on this machine's loopback that reaches the instance's server through the
/// host's shared ssh connection; while it runs, `ocx url HOST:INSTANCE` prints it too (with
/// --with-credentials, the password as well), for curl, editors and `opencode attach`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ocx tunnel box:api &
  curl -su \"$(ocx url box:api --with-credentials | sed 's|.*//||; s|@.*||')\" \"$(ocx url box:api)/global/health\"")]
pub struct TunnelArgs {
    /// The instance: HOST:INSTANCE, or INSTANCE with --host
    pub instance: String,
}

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
  ocx start -- --cors https://x.io   pass arguments through to `opencode serve`")]
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

    /// Seconds to wait for the server to become healthy
    #[arg(long, default_value = "60", value_name = "SECS", value_parser = seconds)]
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

    /// Seconds between health checks of a running server
    #[arg(long, default_value = "10", value_name = "SECS", value_parser = seconds)]
    pub health_interval: Duration,

    /// Restart the server after this many failed health checks in a row (when it was last seen
    /// busy, only after five more minutes)
    #[arg(long, default_value_t = 3, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub health_failures: u32,

    /// Restart the server when its resident memory stays above this size (K, M, G), at the
    /// next moment no session is busy
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub max_memory: Option<u64>,

    /// Arguments passed through to `opencode serve`
    #[arg(last = true, value_name = "OPENCODE_ARGS")]
    pub extra: Vec<String>,
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

    /// Seconds to wait for busy sessions to finish before giving up (exit 4)
    #[arg(long, default_value = "300", value_name = "SECS", value_parser = seconds)]
    pub wait: Duration,

    /// Seconds to wait after TERM before KILL
    #[arg(long, default_value = "10", value_name = "SECS", value_parser = seconds)]
    pub grace: Duration,

    /// Seconds the restarted server may take to become healthy
    #[arg(long, default_value = "60", value_name = "SECS", value_parser = seconds)]
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
///   running     alive and healthy
///   starting    being started, not healthy yet
///   unhealthy   alive, but the health check fails or hangs
///   stopping    being stopped
///   dead        the process is gone, or its PID now belongs to another process
///   corrupt     the record cannot be read (`ocx gc` moves it aside)
///   refused     the record is another user's or writable by others: never trusted or signalled
///               (`ocx gc` moves it aside)
///   newer       the record was written by a newer ocx: left alone; upgrade ocx to manage it
///   unmanaged   (--all) an `opencode serve` process ocx did not start
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

    /// List the instances here and on every host of `ocx host ls`
    #[arg(long, conflicts_with_all = ["hosts", "quiet"])]
    pub all_hosts: bool,
}

/// Send a prompt to an instance and stream the answer
///
/// The answer's text goes to stdout as it arrives, so it can be piped; tool calls, retries and
/// the session id go to stderr. If the first word names an instance (its id, name, or a unique id
/// prefix of at least 3 characters) it is the instance; otherwise every word is the prompt and
/// the instance is the only one running. `-`, or no prompt with stdin not a terminal, reads the
/// prompt from stdin.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ocx run api \"explain src/main.rs\"          a new session on instance api
  ocx run \"add a test\" --continue            the only running instance, its latest session
  git diff | ocx run api - --title review      the prompt from stdin
  ocx run api \"fix it\" --format json | jq     JSON lines, as `opencode run --format json`")]
pub struct RunArgs {
    /// The instance: id, name or unique id prefix (optional when exactly one is running; a
    /// first word that names no instance is the prompt's)
    // Explicit indices: the completer is attached with `mut_arg`, which re-inserts the argument.
    #[arg(index = 1)]
    pub instance: Option<String>,

    /// The prompt's words; `-` reads it from stdin
    #[arg(index = 2)]
    pub prompt: Vec<String>,

    /// Continue this session instead of starting a new one
    #[arg(long, short, value_name = "ID", conflicts_with = "continue_")]
    pub session: Option<String>,

    /// Continue the instance's most recently updated session
    #[arg(long = "continue", short = 'c')]
    pub continue_: bool,

    /// The model to use, as PROVIDER/MODEL [default: the server's]
    #[arg(long, short, value_name = "PROVIDER/MODEL")]
    pub model: Option<String>,

    /// The agent to use [default: the server's, usually build]
    #[arg(long)]
    pub agent: Option<String>,

    /// The title of a new session [default: the prompt's first words]
    #[arg(long)]
    pub title: Option<String>,

    /// Attach a file to the prompt (repeatable)
    #[arg(long = "file", short = 'f', value_name = "PATH", value_hint = ValueHint::FilePath)]
    pub files: Vec<PathBuf>,

    /// How to print the answer
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Give up after this many seconds: abort the prompt on the server, exit 4
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    pub timeout: Option<Duration>,

    /// Work in this project directory on the server [default: the directory it serves]
    #[arg(long, value_hint = ValueHint::DirPath)]
    pub dir: Option<PathBuf>,

    /// Give up after the server retried a failing model this many times [default: let it retry]
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,

    /// What to answer when the agent asks for permission to run a tool: `reject` (as `opencode
    /// run` does), `allow` (once, each time; a warning says so), `ask` (at the terminal, each
    /// time). The agent's questions are dismissed, unless `ask` lets you answer them.
    #[arg(long, value_enum, default_value_t = PermissionPolicy::Reject, value_name = "ANSWER")]
    pub permission: PermissionPolicy,

    /// Send the prompt, print the session id once the server took it, and exit; `ocx wait ID`
    /// follows it later (and answers what it asks)
    #[arg(long, short = 'D', conflicts_with_all = ["timeout", "retries"])]
    pub detach: bool,
}

/// What `ocx run` and `ocx wait` answer to a permission request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PermissionPolicy {
    Reject,
    Allow,
    Ask,
}

/// Wait until a session is idle and print its last answer, as `ocx run` would have
///
/// For prompts sent with `ocx run --detach`: submit to several instances, then wait for each.
/// While it waits, ocx answers the session's permission requests and questions as
/// --permission says (reject by default), also those asked before it began waiting. The exit
/// code is `ocx run`'s: 0 answered, 1 the model failed, 4 --timeout, 130 Ctrl-C (which aborts
/// the prompt on the server).
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  a=$(ocx run --detach api \"task one\"); b=$(ocx run --detach web \"task two\")
  ocx wait \"$a\" > a.txt; ocx wait \"$b\" --format json > b.jsonl")]
pub struct WaitArgs {
    /// The session (`ses_…`), as `ocx run` printed it
    pub session: String,

    /// The instance that has the session [default: the running instance that has it]
    #[arg(long, short)]
    pub instance: Option<String>,

    /// How to print the answer
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Give up after this many seconds: abort the prompt on the server, exit 4
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    pub timeout: Option<Duration>,

    /// What to answer when the agent asks for permission (see `ocx run --permission`)
    #[arg(long, value_enum, default_value_t = PermissionPolicy::Reject, value_name = "ANSWER")]
    pub permission: PermissionPolicy,
}

/// Follow the live events of one or more instances, until Ctrl-C
///
/// One line per event that matters, with the time and the instance: sessions busy, idle,
/// retrying or failing; tools started and finished; permissions and questions asked and
/// answered; messages finished (with tokens); the server connecting and disconnecting. With
/// --text also the answers' text as it streams. A stream that drops (a restart, a crash) is
/// reconnected with backoff and the gap is marked. --json prints every event of the server as
/// one JSON object per line with "instance" added, for jq. Exits 0 on Ctrl-C, 1 when every
/// instance it follows is gone (stopped); with --all it waits for new ones.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ocx events --all                        everything, from every instance, as it happens
  ocx events api --session ses_abc --text one session, with its text
  ocx events --all --json | jq 'select(.type == \"session.idle\")'")]
pub struct EventsArgs {
    /// Instances to follow: id, unique id prefix, or name [default: all running ones]
    #[arg(conflicts_with = "all")]
    pub instances: Vec<String>,

    /// Every instance, also those started later
    #[arg(long, short)]
    pub all: bool,

    /// Only this session's events (and the server's own)
    #[arg(long, short, value_name = "ID")]
    pub session: Option<String>,

    /// Also the answers' text as it streams
    #[arg(long)]
    pub text: bool,

    /// One JSON object per line: the server's event with "instance" added
    #[arg(long, conflicts_with = "text")]
    pub json: bool,
}

/// List an instance's sessions, newest first
///
/// Each with its id, title, status (idle, busy, retry, asking: waiting for a permission or an
/// answer), when it was created and last updated, and how many messages it has.
#[derive(Debug, Args)]
pub struct SessionsArgs {
    /// The instance [default: the only running one]
    pub instance: Option<String>,

    /// Print a JSON array
    #[arg(long)]
    pub json: bool,
}

/// Clean up what crashes and killed servers left behind
///
/// Removes records whose server is gone (or whose PID now belongs to another process, which is
/// never signalled); finishes starts and stops that no ocx is working on anymore (the ocx doing
/// them was killed); ends processes that carry an ocx marker but whose instance has no record
/// (an agent's shell command that outlived its server); reports ports of gone instances that are
/// still bound ("ghost ports"); removes temp files of interrupted writes; moves unreadable
/// records aside to <file>.corrupt. Nothing without the marker is ever touched.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Say what would be done, change nothing
    #[arg(long, short = 'n')]
    pub dry_run: bool,

    /// Also delete the logs of instances that no longer exist
    #[arg(long)]
    pub logs: bool,

    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

/// Print the shell completion script
///
/// The script asks ocx itself what to complete, so `ocx stop <TAB>` offers the instances that
/// exist right now. Load it from your shell's startup file:
///
///   bash:       source <(ocx completions bash)           (~/.bashrc)
///   zsh:        source <(ocx completions zsh)            (~/.zshrc)
///   fish:       ocx completions fish | source            (~/.config/fish/config.fish)
///   PowerShell: ocx completions powershell | Out-String | Invoke-Expression   ($PROFILE)
///   elvish:     eval (ocx completions elvish | slurp)    (~/.config/elvish/rc.elv)
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct CompletionsArgs {
    /// The shell to print the script for
    pub shell: Shell,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
    Powershell,
    Elvish,
}

/// Write the man pages (ocx.1, ocx-start.1, …) into a directory
#[derive(Debug, Args)]
pub struct ManArgs {
    #[arg(value_hint = ValueHint::DirPath)]
    pub dir: PathBuf,
}

/// How `ocx run` prints the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The answer's text as it streams, tool calls on stderr
    Text,
    /// One JSON object per line, as `opencode run --format json` prints them
    Json,
}

/// Stop instances: TERM, wait, KILL, then end every process the instance left behind
///
/// ocx checks that the PID still belongs to the server it started (start time and marker)
/// before it sends any signal. After the server is gone it ends every process still carrying
/// the instance's marker (OCX_INSTANCE_ID), such as shell commands the agent started, checks
/// that the port is free, and deletes the record. The log is kept.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ocx stop api             stop one instance by name (or id, or unique id prefix)
  ocx stop k3f 9x2         stop several
  ocx stop --all --grace 3 stop every instance, giving each 3 s before KILL")]
pub struct StopArgs {
    /// Instances to stop: id, unique id prefix, or name
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub instances: Vec<String>,

    /// Stop every instance, in parallel
    #[arg(long, short)]
    pub all: bool,

    /// Seconds to wait after TERM before KILL
    #[arg(long, default_value = "10", value_name = "SECS", value_parser = seconds)]
    pub grace: Duration,

    /// Skip the polite step: KILL at once
    #[arg(long, short)]
    pub force: bool,

    /// Print the outcome as JSON
    #[arg(long)]
    pub json: bool,
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

/// A number of seconds, fractions allowed: `2`, `0.5`.
fn seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is not a number of seconds"))
}

/// A size in bytes: `512K`, `10M`, `2G` (powers of 1024), or a plain number of bytes.
fn size(s: &str) -> Result<u64, String> {
    let upper = s.trim().to_ascii_uppercase();
    let digits = upper.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit: u64 = match &upper[digits.len()..] {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => return Err(format!("{s:?} is not a size such as 512K, 10M or 2G")),
    };
    let n: f64 = digits.parse().map_err(|_| format!("{s:?} is not a size such as 512K, 10M or 2G"))?;
    if !(n > 0.0 && n.is_finite()) {
        return Err(format!("{s:?} must be more than 0"));
    }
    Ok((n * unit as f64) as u64)
}

/// `KEY=VAL`, with a non-empty key.
fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{s:?} is not KEY=VAL")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::size("512K"), Ok(512 * 1024));
        assert_eq!(super::size("10M"), Ok(10 * 1024 * 1024));
        assert_eq!(super::size("1.5g"), Ok(3 * 512 * 1024 * 1024));
        assert_eq!(super::size("4096"), Ok(4096));
        assert!(super::size("0").is_err() && super::size("10X").is_err() && super::size("M").is_err());
    }
}
