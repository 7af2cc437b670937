//! What a server is started as: its command line, marker and credentials in its environment,
//! the line it prints once it listens, its port (chosen below the ephemeral range), its URL,
//! and the record of a new instance before anything runs.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Result, anyhow};

use crate::error::{Failure, code};
use crate::home::Home;
use crate::process::{self, MARKER_HOME, MARKER_ID};
use crate::record::{self, Binary, Record, RestartPolicy, State, Supervision};
use crate::{output, token};

pub const PASSWORD_VAR: &str = "OPENCODE_SERVER_PASSWORD";
pub const USERNAME_VAR: &str = "OPENCODE_SERVER_USERNAME";
/// What opencode prints once it listens (`opencode server listening on http://…`, or
/// `server listening on http://…` from newer builds). A hint only: the watcher probes health
/// from the spawn on, and the health check is what counts.
pub const READY_MARK: &str = "server listening on http";

/// What is the same for every instance of one `ocx start`.
pub struct Plan {
    pub binary: PathBuf,
    pub dir: PathBuf,
    pub hostname: String,
    /// None: ocx picks a free port (and another if it was taken meanwhile).
    pub port: Option<u16>,
    pub auth: bool,
    pub timeout: Duration,
    pub env: BTreeMap<String, String>,
    pub extra: Vec<String>,
    pub restart: RestartPolicy,
    pub supervision: Supervision,
    /// `--print-logs --log-level LEVEL` before `serve`, so the server's own log comes to the
    /// watcher (None: leave opencode's logging as it is).
    pub log_level: Option<String>,
    /// The fleet file the instances are started from (`ocx up`), recorded with them.
    pub project: Option<PathBuf>,
    /// `--worktree`: a git worktree of its own per instance, on a new (or existing) branch.
    pub worktree: Option<super::workspace::WorktreePlan>,
    /// `--setup CMD`: run in a new worktree before the server starts.
    pub setup: Option<String>,
    /// `--isolate`: a database of its own per instance.
    pub isolate: bool,
}

/// The record of a new instance, as its watcher gets it (no server yet).
pub fn new_record(home: &Home, plan: &Plan, id: &str, name: Option<String>, port: u16) -> Record {
    let password = plan.auth.then(|| plan.env.get(PASSWORD_VAR).cloned().unwrap_or_else(token::password));
    let username = plan.env.get(USERNAME_VAR).cloned().unwrap_or_else(|| "opencode".to_string());
    let mut args: Vec<String> =
        plan.log_level.iter().flat_map(|l| ["--print-logs".to_string(), "--log-level".into(), l.clone()]).collect();
    args.extend(["serve", "--hostname", &plan.hostname, "--port", &port.to_string()].map(String::from));
    args.extend(plan.extra.iter().cloned());
    Record {
        schema: record::SCHEMA,
        id: id.to_string(),
        name,
        pid: 0,
        pid_started_at: 0,
        pid_start_key: None,
        hostname: plan.hostname.clone(),
        port,
        url: client_url(&plan.hostname, port),
        username,
        password,
        dir: plan.dir.clone(),
        opencode: Binary { path: plan.binary.clone(), version: None },
        args,
        env: plan.env.clone(),
        log: home.log_path(id),
        started_at: output::rfc3339(output::now_secs()),
        state: State::Starting,
        watcher: None,
        restart_policy: plan.restart,
        supervision: plan.supervision.clone(),
        restarts: 0,
        last_exit: None,
        next_restart_at: None,
        failed: None,
        remote: None,
        project: plan.project.clone(),
        worktree: None,
        db: None,
    }
}

/// The command that runs the server as `record` describes it: its binary, arguments,
/// directory, environment, the marker and the credentials (in the environment, never on the
/// command line). Stdio is the caller's to set.
pub fn server_command(home: &Home, record: &Record) -> Command {
    let mut cmd = Command::new(&record.opencode.path);
    cmd.args(&record.args)
        .current_dir(&record.dir)
        .envs(&record.env)
        .env(MARKER_ID, &record.id)
        .env(MARKER_HOME, home.root())
        .env(USERNAME_VAR, &record.username);
    if let Some(db) = &record.db {
        // opencode 1.18.33 takes an absolute OPENCODE_DB as is (a relative one below its data
        // directory); the rest of that directory (auth.json: provider credentials) stays shared.
        cmd.env("OPENCODE_DB", db);
    }
    match &record.password {
        Some(password) => cmd.env(PASSWORD_VAR, password),
        None => cmd.env_remove(PASSWORD_VAR),
    };
    cmd
}

pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The URL clients use: an unspecified listen address is reached on loopback.
fn client_url(host: &str, port: u16) -> String {
    let host = host.trim_matches(['[', ']']);
    match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_unspecified() && ip.is_ipv4() => format!("http://127.0.0.1:{port}"),
        Ok(ip) if ip.is_unspecified() => format!("http://[::1]:{port}"),
        Ok(IpAddr::V6(ip)) => format!("http://[{ip}]:{port}"),
        _ => format!("http://{host}:{port}"),
    }
}

/// A free port below the ephemeral range that no record claims (a server that is still
/// starting, or being restarted, may not hold its port right now).
pub fn pick_port(host: &str, records: &[Record]) -> Result<u16> {
    let claimed: Vec<u16> = records.iter().map(|r| r.port).collect();
    process::free_port(host, process::instance_ports(), &claimed)
}

pub fn port_taken(host: &str, port: u16) -> anyhow::Error {
    let by = process::port_owner(port).map(|owner| format!(" by {owner}")).unwrap_or_default();
    anyhow!(
        Failure::new(code::FAILED, format!("port {port} on {host} is already in use{by}"))
            .hint("choose another --port, or leave it out and ocx picks a free one")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_client_urls() {
        assert!(is_loopback("127.0.0.1") && is_loopback("localhost") && is_loopback("::1") && is_loopback("[::1]"));
        assert!(!is_loopback("0.0.0.0") && !is_loopback("192.168.1.2") && !is_loopback("example.com"));
        assert_eq!(client_url("0.0.0.0", 5), "http://127.0.0.1:5");
        assert_eq!(client_url("::", 5), "http://[::1]:5");
        assert_eq!(client_url("::1", 5), "http://[::1]:5");
        assert_eq!(client_url("localhost", 5), "http://localhost:5");
    }

    #[test]
    fn ports_are_picked_below_the_ephemeral_range_and_never_twice() {
        let range = process::instance_ports();
        assert!(range.end <= process::ephemeral_ports().0.max(10_001));
        let records: Vec<Record> = (0..3)
            .map(|i| {
                let mut r = crate::record::tests::sample(&format!("abc12{i}"), None);
                r.port = pick_port("127.0.0.1", &[]).unwrap();
                r
            })
            .collect();
        for _ in 0..50 {
            let port = pick_port("127.0.0.1", &records).unwrap();
            assert!(range.contains(&port), "{port}");
            assert!(records.iter().all(|r| r.port != port));
        }
    }
}
