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
  ocx stop --all                  stop every instance, in parallel
  ocx gc                          clean up after crashes and killed servers";

/// Run OpenCode servers in the background: start, list, prompt, stop and clean up.
///
/// ocx starts `opencode serve` detached, keeps one lock-guarded JSON record per instance,
/// and always reports what it observes (is the process alive, the same one, healthy?)
/// rather than what it last wrote down. There is no daemon.
#[derive(Debug, Parser)]
#[command(name = "ocx", version, propagate_version = true, after_help = EXAMPLES)]
pub struct Cli {
    /// The state directory [default: the platform's state dir + ocx]
    #[arg(long, global = true, env = "OCX_HOME", value_name = "DIR", value_hint = ValueHint::DirPath)]
    pub home: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Start(StartArgs),
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    Run(RunArgs),
    Stop(StopArgs),
    Logs(LogsArgs),
    Attach(AttachArgs),
    Url(UrlArgs),
    Gc(GcArgs),
    Completions(CompletionsArgs),
    #[command(hide = true)]
    Man(ManArgs),
}

/// Start opencode servers in the background and wait until they are healthy
///
/// The server runs detached in its own session with its output appended to
/// <home>/logs/<id>.log. ocx picks a free loopback port unless --port is given, and a
/// random password unless --no-auth is given. It returns once the server printed its ready
/// line and answered /global/health; if the server exits or --timeout passes first, ocx
/// stops what it started, leaves no record behind, and fails.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ocx start                          serve the current directory
  ocx start --name api --dir ~/api   a named instance for another directory
  ocx start --count 3 --json         three instances, described as JSON
  ocx start -- --log-level DEBUG     pass arguments through to `opencode serve`")]
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

    /// Arguments passed through to `opencode serve`
    #[arg(last = true, value_name = "OPENCODE_ARGS")]
    pub extra: Vec<String>,
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

/// Print the server's log
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The instance [default: the only running one]
    pub instance: Option<String>,

    /// Keep printing new lines as they are written, until Ctrl-C
    #[arg(long, short)]
    pub follow: bool,

    /// How many lines from the end to print
    #[arg(long, short = 'n', default_value_t = 50, value_name = "N")]
    pub lines: usize,
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

/// `KEY=VAL`, with a non-empty key.
fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{s:?} is not KEY=VAL")),
    }
}
