//! The commands that talk to an instance's sessions: run, wait, events, sessions.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum, ValueHint};

use super::parse::seconds;

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

    /// Give up after this long (seconds, or 90s, 2m, 1h30m): abort the prompt on the server, exit 4
    #[arg(long, value_name = "DURATION", value_parser = seconds)]
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

    /// Give up after this long (seconds, or 90s, 2m, 1h30m): abort the prompt on the server, exit 4
    #[arg(long, value_name = "DURATION", value_parser = seconds)]
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

/// How `ocx run` prints the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The answer's text as it streams, tool calls on stderr
    Text,
    /// One JSON object per line, as `opencode run --format json` prints them
    Json,
}
