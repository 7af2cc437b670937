//! One module per subcommand: each resolves its arguments, calls the layers below, and prints.
//! They never import each other; what two commands share lives below `cmd/`.

mod attach;
mod batch;
pub mod completions;
mod diff;
mod doctor;
mod down;
mod events;
mod fleet;
mod gc;
mod host;
mod install_opencode;
mod logs;
mod ls;
mod man;
mod restart;
mod resurrect;
mod run;
mod service;
mod sessions;
mod start;
mod stop;
mod top;
mod tunnel;
mod up;
mod url;
mod wait;
pub mod watch;

use anyhow::{Result, anyhow};

use crate::cli::{Cli, Command, Format, PermissionPolicy};
use crate::error::{Failure, code};
use crate::home::Home;
use crate::instance::{self, launch::Started};
use crate::remote::{self, Host, Hosts};
use crate::{output, turn};

pub fn run(cli: Cli) -> Result<()> {
    let Cli { home: home_dir, mut host, mut command } = cli;
    // `top` runs here and asks the host for its instances.
    if let Command::Top(args) = &mut command {
        args.host = host.take();
    }
    if let (Command::Batch(_), Some(host)) = (&command, &host) {
        return Err(anyhow!(
            Failure::new(code::USAGE, format!("`ocx batch` runs on this machine, not on host {host}"))
                .hint("run it on that host: ssh there and run `ocx batch` with its instances")
        ));
    }
    if let Some(host) = remote_target(host.as_deref(), &mut command)? {
        let home = Home::open(home_dir.as_deref())?;
        return match command {
            Command::Run(args) => run::run(&home, args, Some(&host)),
            Command::Attach(args) => attach::run(&home, args, Some(&host)),
            Command::Url(args) => url::run(&home, args, Some(&host)),
            Command::Tunnel(args) => tunnel::run(&home, args, &host),
            _ => host.passthrough(&home, &forwarded_args()?),
        };
    }
    run_here(home_dir.as_deref(), command)
}

/// Run `command` on this machine.
fn run_here(home_dir: Option<&std::path::Path>, command: Command) -> Result<()> {
    let home = || Home::open(home_dir);
    match command {
        Command::Start(args) => start::run(&home()?, args),
        Command::Ls(args) => ls::run(&home()?, args),
        Command::Run(args) => run::run(&home()?, args, None),
        Command::Wait(args) => wait::run(&home()?, args),
        Command::Batch(args) => batch::run(&home()?, args),
        Command::Events(args) => events::run(&home()?, args),
        Command::Sessions(args) => sessions::run(&home()?, args),
        Command::Stop(args) => stop::run(&home()?, args),
        Command::Restart(args) => restart::run(&home()?, args),
        Command::Logs(args) => logs::run(&home()?, args),
        Command::Attach(args) => attach::run(&home()?, args, None),
        Command::Url(args) => url::run(&home()?, args, None),
        Command::Gc(args) => gc::run(&home()?, args),
        Command::Host(args) => host::run(args),
        Command::Tunnel(_) => Err(anyhow!(
            Failure::new(code::USAGE, "`ocx tunnel` reaches an instance on another host")
                .hint("name it as HOST:INSTANCE, or give --host HOST")
        )),
        Command::Remote => serve_remote(),
        Command::Completions(args) => completions::run(args),
        Command::Man(args) => man::run(args),
        Command::Diff(args) => diff::run(&home()?, args),
        Command::Watch(args) => watch::run(&home()?, args),
        Command::Top(args) => top::run(&home()?, args),
        Command::Up(args) => up::run(&home()?, args),
        Command::Down(args) => down::run(&home()?, args),
        Command::Resurrect(args) => resurrect::run(&home()?, args),
        Command::Service(args) => service::run(&home()?, args),
        Command::Doctor(args) => doctor::run(home_dir, args),
        Command::InstallOpencode(args) => install_opencode::run(args),
    }
}

/// The host a command is for: `--host` (or `$OCX_HOST`), or the host of `NAME:instance`
/// arguments, whose `NAME:` is taken off. None: this machine.
fn remote_target(explicit: Option<&str>, command: &mut Command) -> Result<Option<Host>> {
    // Several hosts at once: `ls` asks each itself.
    if let Command::Ls(args) = command
        && (args.all_hosts || !args.hosts.is_empty())
    {
        return Ok(None);
    }
    let Some(instances) = instance_args(command) else { return Ok(None) };
    // Ids and names never hold a `:`; only then is the hosts file read. (`run`'s first word
    // may be the prompt's: `fix: …` names no host, and an unreadable hosts file is no reason
    // to fail a command for this machine.)
    let named = |i: &String| {
        i.split_once(':').is_some_and(|(h, rest)| !h.is_empty() && !rest.is_empty() && !i.contains(char::is_whitespace))
    };
    if explicit.is_none() && !instances.iter().any(|i| named(i)) {
        return Ok(None);
    }
    let hosts = match Hosts::load() {
        Ok(hosts) => hosts,
        Err(_) if explicit.is_none() => return Ok(None),
        Err(err) => return Err(err),
    };
    let mut target = explicit.map(|h| hosts.find(h)).transpose()?;
    for instance in instances.into_iter().filter(|i| named(i)) {
        let Some((host, rest)) = hosts.split(instance) else { continue };
        if target.as_ref().is_some_and(|t| t.url != host.url) {
            return Err(anyhow!(
                Failure::new(code::USAGE, format!("{instance} is on another host than the command's other instances"))
                    .hint("one host per command: run it once per host")
            ));
        }
        *instance = rest.to_string();
        target = Some(host);
    }
    Ok(target)
}

/// This command line for another host's ocx: as typed, without `--host` (and without the
/// program name). Values that only this machine knows stay here.
fn forwarded_args() -> Result<Vec<String>> {
    let mut args = Vec::new();
    let mut raw = std::env::args_os().skip(1);
    while let Some(arg) = raw.next() {
        let arg = arg.into_string().map_err(|a| anyhow!(Failure::new(code::USAGE, format!("{a:?} is not UTF-8"))))?;
        if arg == "--" {
            args.push(arg);
            args.extend(raw.by_ref().map(|a| a.to_string_lossy().into_owned()));
            break;
        }
        // `--home` is a path on this machine: the host's ocx uses its own home.
        if arg == "--host" || arg == "--home" {
            raw.next();
        } else if !arg.starts_with("--host=") && !arg.starts_with("--home=") {
            args.push(arg);
        }
    }
    Ok(args)
}

/// `ocx __remote`: the command another machine's ocx asked for, run here.
fn serve_remote() -> Result<()> {
    use clap::Parser;
    let envelope = remote::accept()?;
    let cli = Cli::try_parse_from(std::iter::once("ocx".to_string()).chain(envelope.args)).unwrap_or_else(|e| e.exit());
    let Cli { home, host: _, mut command } = cli;
    if let Some(name) = envelope.strip_host {
        strip_host(&name, &mut command);
    }
    // Here, never on to a third machine, whatever this one's OCX_HOST or hosts say.
    run_here(home.as_deref(), command)
}

/// Take `NAME:` off the instance arguments that carry it.
fn strip_host(name: &str, command: &mut Command) {
    let prefix = format!("{name}:");
    for instance in instance_args(command).into_iter().flatten() {
        if let Some(rest) = instance.strip_prefix(&prefix) {
            *instance = rest.to_string();
        }
    }
}

/// The arguments of `command` that name instances; None for the commands that always run on
/// this machine.
fn instance_args(command: &mut Command) -> Option<Vec<&mut String>> {
    Some(match command {
        Command::Host(_) | Command::Completions(_) | Command::Man(_) | Command::Watch(_) | Command::Remote => {
            return None;
        }
        Command::Run(args) => args.instance.iter_mut().collect(),
        Command::Batch(_) => return None,
        Command::Wait(args) => args.instance.iter_mut().collect(),
        Command::Events(args) => args.instances.iter_mut().collect(),
        Command::Sessions(args) => args.instance.iter_mut().collect(),
        Command::Stop(args) => args.instances.iter_mut().collect(),
        Command::Restart(args) => args.instances.iter_mut().collect(),
        Command::Logs(args) => args.instance.iter_mut().collect(),
        Command::Attach(args) => args.instance.iter_mut().collect(),
        Command::Url(args) => args.instance.iter_mut().collect(),
        Command::Tunnel(args) => vec![&mut args.instance],
        Command::Diff(args) => args.instance.iter_mut().collect(),
        Command::Start(_) | Command::Ls(_) | Command::Gc(_) => Vec::new(),
        Command::Top(_) => return None,
        // A fleet file and a boot unit are this machine's: `--host` runs them there as typed.
        Command::Up(_) | Command::Down(_) | Command::Resurrect(_) | Command::Service(_) => Vec::new(),
        // With --host, checked or installed on that host.
        Command::Doctor(_) | Command::InstallOpencode(_) => Vec::new(),
    })
}

/// What `ocx start` would do with `args`, checked (`ocx up` plans each instance of its fleet
/// file with `start`'s own planning).
fn start_plan(home: &Home, args: &crate::cli::StartArgs) -> Result<instance::spawn::Plan> {
    start::plan(home, args)
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

/// The instances a command that acts on several names (`stop`, `restart`): every one resolved
/// before anything is done, so a typo does nothing; each once; `all`: every instance.
fn targets(home: &Home, queries: &[String], all: bool) -> Result<Vec<crate::record::Record>> {
    let records = crate::record::valid(&crate::record::list(home)?);
    if all {
        return Ok(records);
    }
    let mut targets: Vec<crate::record::Record> = Vec::new();
    for query in queries {
        let found = crate::record::resolve(&records, query)?;
        if !targets.iter().any(|t| t.id == found.id) {
            targets.push(found.clone());
        }
    }
    Ok(targets)
}

/// The end of a command that did several things at once (`start --count`, `restart`): Ok when
/// none failed; one error as it is when it was the only thing asked (`single`); else each
/// reported on stderr, and the first one's exit code.
fn fail_with(errors: Vec<anyhow::Error>, single: bool) -> Result<()> {
    let mut errors = errors.into_iter();
    match errors.next() {
        None => Ok(()),
        Some(first) if single => Err(first),
        Some(first) => {
            let code = crate::error::code_of(&first);
            for err in std::iter::once(first).chain(errors) {
                crate::error::report(&err);
            }
            Err(anyhow!(Failure::silent(code)))
        }
    }
}

/// The instances `start` or `restart` brought up: a JSON array (with how long each took, as
/// `took_key`), or a table.
fn print_started(started: &[Started], json: bool, took_key: &str, took_header: &str) -> Result<()> {
    if json {
        let docs = started
            .iter()
            .map(|s| {
                let mut doc = s.record.public_json(false);
                doc[took_key] = (s.took.as_millis() as u64).into();
                doc
            })
            .collect();
        output::print_json(&serde_json::Value::Array(docs))?;
    } else if !started.is_empty() {
        let mut table = output::table(["ID", "NAME", "URL", "PID", took_header]);
        for s in started {
            let r = &s.record;
            table.add_row([
                &r.id,
                r.name.as_deref().unwrap_or("-"),
                &r.url,
                &r.pid.to_string(),
                &output::elapsed(s.took),
            ]);
        }
        output::print_table(&mut table)?;
    }
    Ok(())
}

fn turn_format(format: Format) -> turn::Format {
    match format {
        Format::Text => turn::Format::Text,
        Format::Json => turn::Format::Json,
    }
}
