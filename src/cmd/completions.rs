//! `ocx completions`: shell scripts that ask ocx itself what to complete, and the completers
//! behind them. Instance completion reads the records only: no health checks, no network, and
//! no error ever reaches the user's prompt.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::engine::{ArgValueCandidates, CompletionCandidate};
use clap_complete::env::Shells;

use crate::cli::{Cli, CompletionsArgs, Shell};
use crate::home::Home;
use crate::record::{self, Entry};

/// The environment variable the scripts set when they ask ocx for candidates.
const VAR: &str = "COMPLETE";

/// If the shell is asking for candidates (the scripts set `COMPLETE`), answer and exit.
pub fn answer_if_asked() {
    clap_complete::CompleteEnv::with_factory(command).var(VAR).complete();
}

/// The command line, with completers on every argument that names an instance or a session.
fn command() -> clap::Command {
    let instances = || ArgValueCandidates::new(instance_candidates);
    let sessions = || ArgValueCandidates::new(session_candidates);
    let hosts = || ArgValueCandidates::new(host_candidates);
    Cli::command()
        .mut_arg("host", |a| a.add(hosts()))
        .mut_subcommand("ls", |c| c.mut_arg("hosts", |a| a.add(hosts())))
        .mut_subcommand("host", |c| c.mut_subcommand("rm", |c| c.mut_arg("names", |a| a.add(hosts()))))
        .mut_subcommand("stop", |c| c.mut_arg("instances", |a| a.add(instances())))
        .mut_subcommand("batch", |c| c.mut_arg("on", |a| a.add(instances())))
        .mut_subcommand("restart", |c| c.mut_arg("instances", |a| a.add(instances())))
        .mut_subcommand("events", |c| {
            c.mut_arg("instances", |a| a.add(instances())).mut_arg("session", |a| a.add(sessions()))
        })
        .mut_subcommand("sessions", |c| c.mut_arg("instance", |a| a.add(instances())))
        .mut_subcommand("wait", |c| {
            c.mut_arg("session", |a| a.add(sessions())).mut_arg("instance", |a| a.add(instances()))
        })
        .mut_subcommand("logs", |c| c.mut_arg("instance", |a| a.add(instances())))
        .mut_subcommand("attach", |c| c.mut_arg("instance", |a| a.add(instances())))
        .mut_subcommand("url", |c| c.mut_arg("instance", |a| a.add(instances())))
        .mut_subcommand("run", |c| {
            c.mut_arg("instance", |a| a.add(instances())).mut_arg("session", |a| a.add(sessions()))
        })
}

pub fn run(args: CompletionsArgs) -> Result<()> {
    let name = match args.shell {
        Shell::Bash => "bash",
        Shell::Zsh => "zsh",
        Shell::Fish => "fish",
        Shell::Powershell => "powershell",
        Shell::Elvish => "elvish",
    };
    let shells = Shells::builtins();
    let shell = shells.completer(name).context("clap_complete does not know this shell")?;
    let mut script = Vec::new();
    // The script calls `ocx` from PATH: it stays valid when ocx is reinstalled elsewhere.
    shell.write_registration(VAR, "ocx", "ocx", "ocx", &mut script)?;
    std::io::stdout().lock().write_all(&script)?;
    Ok(())
}

/// The sessions of the running instances, newest first, each described by its instance and
/// title. Every server gets a short time to answer, all at once; one that is down or slow
/// gives nothing.
fn session_candidates() -> Vec<CompletionCandidate> {
    let explicit = std::env::var_os("OCX_HOME").map(PathBuf::from);
    let Some(home) = Home::existing(explicit.as_deref()) else { return Vec::new() };
    let Ok(entries) = record::list(&home) else { return Vec::new() };
    let records = record::valid(&entries);
    let found = crate::parallel::map(&records, records.len().max(1), |r| {
        let client = crate::instance::client(r, SESSION_LOOKUP);
        client.sessions().map(|s| (r.label().to_string(), s)).ok()
    });
    let mut sessions: Vec<(u64, CompletionCandidate)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (label, list) in found.into_iter().flatten() {
        for s in list {
            let Some(id) = s["id"].as_str().filter(|id| seen.insert(id.to_string())) else { continue };
            let about = format!("{label}: {}", s["title"].as_str().unwrap_or(""));
            sessions.push((
                s["time"]["updated"].as_u64().unwrap_or(0),
                CompletionCandidate::new(id).help(Some(about.into())),
            ));
        }
    }
    sessions.sort_by_key(|(updated, _)| std::cmp::Reverse(*updated));
    sessions.into_iter().map(|(_, c)| c).collect()
}

/// How long a server gets to list its sessions for completion (all at once: a second at most
/// before the prompt shows what answered; 300 ms proved too short on a loaded 2-core machine).
const SESSION_LOOKUP: std::time::Duration = std::time::Duration::from_secs(1);

/// The ids and names of the instances recorded now, described by their recorded state and
/// directory (the engine keeps those that match what was typed).
fn instance_candidates() -> Vec<CompletionCandidate> {
    let explicit = std::env::var_os("OCX_HOME").map(PathBuf::from);
    let Some(home) = Home::existing(explicit.as_deref()) else { return Vec::new() };
    let Ok(entries) = record::list(&home) else { return Vec::new() };
    let mut candidates = Vec::new();
    for entry in &entries {
        let Entry::Valid(r) = entry else { continue };
        let state = serde_json::to_value(r.state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        let about = format!("{state}, {}", r.dir.display());
        candidates.push(CompletionCandidate::new(&r.id).help(Some(about.clone().into())));
        if let Some(name) = &r.name {
            candidates.push(CompletionCandidate::new(name).help(Some(format!("{}, {about}", r.id).into())));
        }
    }
    candidates
}

/// The named hosts, described by their URL.
fn host_candidates() -> Vec<CompletionCandidate> {
    let Ok(hosts) = crate::remote::Hosts::load() else { return Vec::new() };
    hosts.hosts.iter().map(|(name, h)| CompletionCandidate::new(name).help(Some(h.url.clone().into()))).collect()
}

#[cfg(test)]
mod tests {
    /// clap's own consistency checks, on the command line as parsed and as completed (attaching
    /// completers re-inserts arguments, which once reordered `run`'s positionals).
    #[test]
    fn command_lines_are_consistent() {
        use clap::CommandFactory;
        crate::cli::Cli::command().debug_assert();
        super::command().debug_assert();
    }
}
