//! One module per subcommand: each resolves its arguments, calls the layers below, and prints.
//! They never import each other; what two commands share lives below `cmd/`.

mod attach;
pub mod completions;
mod events;
mod gc;
mod logs;
mod ls;
mod man;
mod restart;
mod run;
mod sessions;
mod start;
mod stop;
mod url;
mod wait;
pub mod watch;

use anyhow::{Result, anyhow};

use crate::cli::{Cli, Command, Format, PermissionPolicy};
use crate::error::{Failure, code};
use crate::home::Home;
use crate::{output, turn};

pub fn run(cli: Cli) -> Result<()> {
    let home = || Home::open(cli.home.as_deref());
    match cli.command {
        Command::Start(args) => start::run(&home()?, args),
        Command::Ls(args) => ls::run(&home()?, args),
        Command::Run(args) => run::run(&home()?, args),
        Command::Wait(args) => wait::run(&home()?, args),
        Command::Events(args) => events::run(&home()?, args),
        Command::Sessions(args) => sessions::run(&home()?, args),
        Command::Stop(args) => stop::run(&home()?, args),
        Command::Restart(args) => restart::run(&home()?, args),
        Command::Logs(args) => logs::run(&home()?, args),
        Command::Attach(args) => attach::run(&home()?, args),
        Command::Url(args) => url::run(&home()?, args),
        Command::Gc(args) => gc::run(&home()?, args),
        Command::Completions(args) => completions::run(args),
        Command::Man(args) => man::run(args),
        Command::Watch(args) => watch::run(&home()?, args),
    }
}

/// `--permission` (of `run` and `wait`), checked: `ask` needs a terminal to ask at; `allow` is
/// said out loud, once.
fn permission_policy(policy: PermissionPolicy) -> Result<turn::Permissions> {
    Ok(match policy {
        PermissionPolicy::Reject => turn::Permissions::Reject,
        PermissionPolicy::Allow => {
            output::note("warning: --permission allow: every tool call the agent asks permission for will be allowed");
            turn::Permissions::Allow
        }
        PermissionPolicy::Ask
            if std::io::IsTerminal::is_terminal(&std::io::stdin())
                && std::io::IsTerminal::is_terminal(&std::io::stderr()) =>
        {
            turn::Permissions::Ask
        }
        PermissionPolicy::Ask => {
            return Err(anyhow!(
                Failure::new(code::USAGE, "--permission ask needs a terminal on stdin and stderr to ask at")
                    .hint("use --permission reject or allow in scripts")
            ));
        }
    })
}

fn turn_format(format: Format) -> turn::Format {
    match format {
        Format::Text => turn::Format::Text,
        Format::Json => turn::Format::Json,
    }
}
