//! One module per subcommand: each resolves its arguments, calls the layers below, and prints.
//! They never import each other; what two commands share lives below `cmd/`.

mod attach;
pub mod completions;
mod gc;
mod logs;
mod ls;
mod man;
mod restart;
mod run;
mod start;
mod stop;
mod url;
pub mod watch;

use anyhow::Result;

use crate::cli::{Cli, Command};
use crate::home::Home;

pub fn run(cli: Cli) -> Result<()> {
    let home = || Home::open(cli.home.as_deref());
    match cli.command {
        Command::Start(args) => start::run(&home()?, args),
        Command::Ls(args) => ls::run(&home()?, args),
        Command::Run(args) => run::run(&home()?, args),
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
