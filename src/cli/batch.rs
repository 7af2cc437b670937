//! `ocx batch`: many prompts across a pool of instances.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueHint};

use super::PermissionPolicy;
use super::parse::seconds;

/// Run many prompts across a pool of agents, with progress and one result per task
///
/// FILE (or `-` for stdin) holds the tasks: one prompt per line, or JSON lines with "prompt"
/// and optional "name", "dir", "model", "agent", "files" and "session" (as `ocx run` takes
/// them). Blank lines and `#` comments are skipped; a malformed line is an error naming it,
/// before anything is sent. Each instance of the pool runs one task at a time; tasks go to
/// whichever instance is free, in file order.
///
/// Where the tasks run: --on uses instances you started; --parallel N starts N instances for
/// the batch (serving the current directory) and stops them at the end; with --worktree every
/// task gets an instance of its own in a worktree and branch of its own (at most N at once),
/// and a worktree with changes is kept: its result names the branch.
///
/// When a task's server crashes and its watcher brings it back, the task's prompt is sent
/// again in the same session; a task fails only when its instance cannot come back. Progress
/// goes to stderr when it is a terminal. Results: --json prints one JSON line per finished
/// task; otherwise a table at the end. --results FILE appends those lines to FILE, and a rerun
/// with the same FILE skips the tasks that succeeded. Exit code: 0 when every task succeeded, 1
/// when any failed, 130/143 on Ctrl-C/SIGTERM, which aborts every running task on its server
/// and stops the instances the batch started.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ocx batch tasks.txt --on api,web           two instances you started, one task each at a time
  ocx batch tasks.jsonl --parallel 4 --json  four instances for the batch, JSON lines out
  ocx batch fixes.txt --parallel 3 --worktree --results done.jsonl
                                             a worktree and branch per task; rerun to resume
  printf 'explain %s\\n' src/*.rs | ocx batch - --on api

A JSON task line:
  {\"name\": \"docs\", \"prompt\": \"document src/lib.rs\", \"model\": \"anthropic/claude-sonnet-4\"}")]
pub struct BatchArgs {
    /// The tasks: a file, or `-` for stdin
    #[arg(value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub file: PathBuf,

    /// Run the tasks on these instances (ids, names or unique id prefixes, comma-separated)
    #[arg(long, value_name = "NAME,…", value_delimiter = ',', num_args = 1..)]
    pub on: Vec<String>,

    /// Start N instances for the batch and stop them when it ends; with --worktree, run at
    /// most N tasks at once
    #[arg(long, short = 'j', value_name = "N", conflicts_with = "on", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub parallel: Option<u32>,

    /// Give every task its own instance in a git worktree and branch of its own
    /// (ocx/batch-ID-N, from --base); a worktree with changes is kept when the task ends
    #[arg(long, requires = "parallel")]
    pub worktree: bool,

    /// The commit, branch or tag the worktrees' branches start from [default: HEAD]
    #[arg(long, value_name = "REF", requires = "worktree")]
    pub base: Option<String>,

    /// A shell command run in each new worktree before its server starts (`npm ci`)
    #[arg(long, value_name = "CMD", requires = "worktree")]
    pub setup: Option<String>,

    /// Print one JSON line per finished task (instead of the table at the end)
    #[arg(long)]
    pub json: bool,

    /// Append each finished task's JSON line to FILE; tasks that succeeded in an earlier run
    /// with the same FILE are skipped
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub results: Option<PathBuf>,

    /// Give each task this long (seconds, or 90s, 2m, 1h30m): then abort it on the server; its
    /// status is `timeout`
    #[arg(long, value_name = "DURATION", value_parser = seconds)]
    pub timeout: Option<Duration>,

    /// What to answer when an agent asks for permission to run a tool: `reject` (as `opencode
    /// run` does) or `allow` (once, each time). `ask` is refused: many agents cannot share one
    /// terminal
    #[arg(long, value_enum, default_value_t = PermissionPolicy::Reject, value_name = "ANSWER")]
    pub permission: PermissionPolicy,

    /// Fail a task once the server retried its failing model this many times [default: let it retry]
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,
}
