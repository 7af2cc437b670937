//! The command line: clap types only, so completions and man pages can be built from them alone.
//! One module per command family; every type is re-exported here, as `crate::cli::X`.

mod batch;
mod fleet;
mod generate;
mod hosts;
mod instances;
mod parse;
mod prompting;
mod setup;
mod start;
mod top;
mod worktrees;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueHint};

pub use batch::BatchArgs;
pub use fleet::{DownArgs, ResurrectArgs, ServiceArgs, ServiceCommand, ServiceManager, ServiceManagerArgs, UpArgs};
pub use generate::{CompletionsArgs, ManArgs, Shell};
pub use hosts::{HostArgs, HostCommand, TunnelArgs};
pub use instances::{AttachArgs, GcArgs, LogsArgs, LsArgs, RestartArgs, StopArgs, UrlArgs, WatchArgs};
pub use prompting::{EventsArgs, Format, PermissionPolicy, RunArgs, SessionsArgs, WaitArgs};
pub use setup::{DoctorArgs, InstallOpencodeArgs};
pub use start::{AnswerPolicy, LogLevel, RestartPolicy, StartArgs, StartLine};
pub use top::TopArgs;
pub use worktrees::DiffArgs;

const EXAMPLES: &str = "\
Examples:
  ocx start --name api            start a server for the current directory
  ocx ls                          every instance with its observed status
  ocx run api \"explain main.rs\"  send a prompt, stream the answer
  ocx batch tasks.txt -j 4        many prompts over four agents, with progress and results
  ocx url api --with-credentials  the URL for curl and other clients
  ocx logs api -f                 follow the server's log
  ocx stop api                    stop it: TERM, then KILL after the grace period
  ocx restart api                 restart it (same port and password) once it is idle
  ocx stop --all                  stop every instance, in parallel
  ocx gc                          clean up after crashes and killed servers
  ocx top                         a live dashboard of every instance
  ocx up                          start the instances ./ocx.toml declares
  ocx resurrect                   after a reboot: bring back what should run
  ocx host add box ssh://me@box   a host to reach over ssh (with ocx installed there)
  ocx ls --all-hosts              instances here and on every host
  ocx run box:api \"fix it\"      a prompt to instance api on host box
  ocx doctor                      check the whole setup, and say what to fix";

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
    Batch(BatchArgs),
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
    Top(TopArgs),
    Up(UpArgs),
    Down(DownArgs),
    Resurrect(ResurrectArgs),
    Service(ServiceArgs),
    Diff(DiffArgs),
    Doctor(DoctorArgs),
    InstallOpencode(InstallOpencodeArgs),
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
