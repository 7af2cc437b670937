//! Launching a server: choose its id, name and port under the store lock, spawn it detached
//! with the marker and its password, write its record, and wait until it is healthy. Every
//! failure after the spawn ends what was spawned and removes the record (`Launch`'s `Drop`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

use crate::error::{Failure, code};
use crate::home::{Home, Lock};
use crate::instance::watch::{self, Report};
use crate::instance::{log, stop};
use crate::process::{self, MARKER_HOME, MARKER_ID, Processes, Signal};
use crate::record::{self, Binary, Exit, Record, RestartPolicy, State, Supervision};
use crate::server::Client;
use crate::{hooks, output, token};

/// How often to look for the watcher's word and for Ctrl-C while waiting.
const POLL: Duration = Duration::from_millis(25);
/// How many times to spawn a server whose start failed in a way known to be transient.
const START_TRIES: u32 = 3;
const LOG_TAIL_LINES: usize = 15;
pub const PASSWORD_VAR: &str = "OPENCODE_SERVER_PASSWORD";
pub const USERNAME_VAR: &str = "OPENCODE_SERVER_USERNAME";
/// What opencode prints once it listens (`opencode server listening on http://…`, or
/// `server listening on http://…` from newer builds).
pub const READY_MARK: &str = "server listening on http";
/// What opencode prints when it lost the race to migrate a fresh database (see `Transient`).
const DATABASE_RACE_SIGNS: [&str; 2] = ["Failed query", "database is locked"];

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
}

/// A server that started and answered its health check.
pub struct Started {
    pub record: Record,
    pub took: Duration,
}

/// Start one instance and wait until it is healthy. On any failure nothing is left behind:
/// no record, no process.
pub fn start(home: &Home, plan: &Plan, name: Option<String>) -> Result<Started> {
    let began = Instant::now();
    let deadline = began + plan.timeout;
    // Choosing the id, name and port, spawning, and writing the record happen under the store
    // lock, so concurrent starts never pick the same ones and no record is ever half there.
    let mut launch = {
        let _store = home.lock_store()?;
        let entries = record::list(home)?;
        let records = record::valid(&entries);
        if let Some(name) = &name
            && records.iter().any(|r| r.name.as_deref() == Some(name) || r.id == *name)
        {
            return Err(anyhow!(
                Failure::new(code::FAILED, format!("an instance named {name:?} exists already"))
                    .hint(format!("choose another --name, or stop that one first: ocx stop {name}"))
            ));
        }
        let mut taken: Vec<&str> = records.iter().filter_map(|r| r.name.as_deref()).collect();
        taken.extend(entries.iter().map(|e| match e {
            record::Entry::Valid(r) => r.id.as_str(),
            record::Entry::Invalid(i) => i.id.as_str(),
        }));
        let id = record::new_id(&taken);
        let lock = home.lock_instance(&id, Duration::from_secs(1))?;
        let port = match plan.port {
            Some(port) if !process::port_is_free(&plan.hostname, port) => return Err(port_taken(&plan.hostname, port)),
            Some(port) => port,
            None => pick_port(&plan.hostname, &records)?,
        };
        let mut launch = Launch::new(home, new_record(home, plan, &id, name.clone(), port), true, lock);
        launch.spawn(deadline)?;
        launch
    };
    hooks::pause("start:waiting");

    let mut tries = 1;
    loop {
        match launch.wait_ready(deadline) {
            Wait::Ready(version) => {
                hooks::fail("start:healthy")?;
                launch.record.state = State::Running;
                launch.record.opencode.version = version;
                record::save(home, &launch.record)?;
                return Ok(Started { record: launch.finish(), took: began.elapsed() });
            }
            Wait::Exited(status) => {
                if let Some(failure) = (tries < START_TRIES).then(|| launch.transient_failure(plan)).flatten() {
                    tries += 1;
                    if failure == Transient::DatabaseRace {
                        // Let the winner finish migrating before trying again.
                        std::thread::sleep(Duration::from_millis(100 + u64::from(getrandom::u32().unwrap_or(0) % 500)));
                    }
                    hooks::fail("start:retry")?;
                    let _store = home.lock_store()?;
                    if failure == Transient::PortTaken {
                        let port = pick_port(&plan.hostname, &record::valid(&record::list(home)?))?;
                        launch.record = new_record(home, plan, &launch.record.id, name.clone(), port);
                    }
                    launch.spawn(deadline)?;
                    continue;
                }
                let port = launch.record.port;
                return Err(if plan.port.is_some() && !process::port_is_free(&plan.hostname, port) {
                    port_taken(&plan.hostname, port)
                } else {
                    launch.exited_error(&status)
                });
            }
            Wait::Failed(error) => return Err(anyhow!(Failure::new(code::FAILED, error))),
            Wait::TimedOut => return Err(launch.timed_out_error(plan.timeout)),
            Wait::Interrupted => {
                return Err(anyhow!(Failure::new(code::INTERRUPTED, "interrupted; stopped the server being started")));
            }
        }
    }
}

/// How `restart` goes about it.
pub struct RestartOptions {
    /// Restart at once, even while a session is busy.
    pub force: bool,
    /// How long to wait for busy sessions to finish.
    pub wait: Duration,
    /// How long the restarted server may take to become healthy.
    pub timeout: Duration,
    /// Between TERM and KILL for the old server.
    pub grace: Duration,
}

/// Restart an instance with the same id, name, port and password, under a new watcher: once
/// no session is busy (unless `force`), end the server and its watcher as a stop would (the
/// record stays), then start it again and wait until it is healthy. Works on instances that
/// are running, failed, unsupervised or dead (after a reboot). If it fails, the record says so
/// (`failed`) and nothing is left running.
pub fn restart(home: &Home, id: &str, options: &RestartOptions) -> Result<Started> {
    let began = Instant::now();
    if !options.force
        && let Some(record) = record::load(home, id)?
        && super::server(&record)?.is_some()
    {
        wait_until_idle(&record, options.wait)?;
    }
    let lock = home.lock_instance(id, options.grace + Duration::from_secs(60))?;
    let Some(mut record) = record::load(home, id)? else {
        return Err(anyhow!(Failure::new(code::NOT_FOUND, format!("instance {id} is gone (stopped meanwhile)"))));
    };
    let vouch = super::vouch(home, id, &record.server())?;
    let uptime_s = match &vouch {
        super::Vouch::Ours(server) => output::now_secs().saturating_sub(server.start_time),
        super::Vouch::Gone => 0,
        super::Vouch::Unproven => {
            return Err(anyhow!(
                "PID {} is alive with the recorded start time but does not carry this instance's marker; not restarting it",
                record.pid
            ));
        }
    };
    // Like a stop: the intent first, so the old watcher does not restart the server itself.
    record.state = State::Stopping;
    record::save(home, &record)?;
    let ended = stop::end_instance(home, &record, vouch, options.grace)?.signal.map(|signal| (signal, uptime_s));
    if !process::port_is_free(&record.hostname, record.port) {
        let err = port_taken(&record.hostname, record.port);
        record.failed = Some(format!("{err}"));
        record::save(home, &record)?;
        return Err(err);
    }
    if let Some((signal, uptime_s)) = ended {
        let at = watch::rfc3339_in(Duration::ZERO);
        record.last_exit =
            Some(Exit { code: None, signal: Some(format!("SIG{signal}")), at, uptime_s, reason: "restart".into() });
    }
    record.state = State::Starting;
    record.failed = None;
    record.next_restart_at = None;
    let deadline = Instant::now() + options.timeout;
    let mut launch = Launch::new(home, record, false, lock);
    launch.spawn(deadline)?;
    match launch.wait_ready(deadline) {
        Wait::Ready(version) => {
            launch.record.state = State::Running;
            launch.record.opencode.version = version;
            launch.record.restarts += 1;
            record::save(home, &launch.record)?;
            Ok(Started { record: launch.finish(), took: began.elapsed() })
        }
        Wait::Exited(status) => Err(launch.exited_error(&status)),
        Wait::Failed(error) => Err(anyhow!(Failure::new(code::FAILED, error))),
        Wait::TimedOut => Err(launch.timed_out_error(options.timeout)),
        Wait::Interrupted => Err(anyhow!(Failure::new(code::INTERRUPTED, "interrupted; the restart did not finish"))),
    }
}

/// Wait until the server has no busy session, for at most `limit`.
fn wait_until_idle(record: &Record, limit: Duration) -> Result<()> {
    let client = Client::for_record(record, Duration::from_secs(5));
    let deadline = Instant::now() + limit;
    loop {
        match client.busy_sessions() {
            Ok(busy) if busy.is_empty() => return Ok(()),
            // A server that does not answer has nothing to finish.
            Err(_) => return Ok(()),
            Ok(busy) if Instant::now() >= deadline => {
                return Err(anyhow!(
                    Failure::new(
                        code::TIMED_OUT,
                        format!(
                            "instance {} still has {} busy session(s) after {}s; not restarted",
                            record.label(),
                            busy.len(),
                            limit.as_secs()
                        )
                    )
                    .hint("--force restarts it at once, aborting what it is doing")
                ));
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(250)),
        }
        if process::interrupted() {
            return Err(anyhow!(Failure::new(code::INTERRUPTED, "interrupted; nothing was restarted")));
        }
    }
}

/// The record of a new instance, as its watcher gets it (no server yet).
fn new_record(home: &Home, plan: &Plan, id: &str, name: Option<String>, port: u16) -> Record {
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
    match &record.password {
        Some(password) => cmd.env(PASSWORD_VAR, password),
        None => cmd.env_remove(PASSWORD_VAR),
    };
    cmd
}

/// `--opencode`, else `$OCX_OPENCODE`, else `opencode` on PATH (with PATHEXT on Windows, where
/// npm installs `opencode.cmd`), else `~/.opencode/bin/opencode`.
pub fn find_opencode(explicit: Option<&Path>) -> Result<PathBuf> {
    let hint = "install it with `npm i -g opencode-ai`, or name it with --opencode PATH or OCX_OPENCODE";
    let named = explicit
        .map(|p| (p.to_path_buf(), "--opencode"))
        .or_else(|| std::env::var_os("OCX_OPENCODE").filter(|v| !v.is_empty()).map(|p| (p.into(), "OCX_OPENCODE")));
    if let Some((path, from)) = named {
        return match path.is_file() {
            true => std::path::absolute(&path).with_context(|| format!("cannot resolve {}", path.display())),
            false => Err(anyhow!(
                Failure::new(
                    code::FAILED,
                    format!("the opencode binary {} (from {from}) does not exist", path.display())
                )
                .hint(hint)
            )),
        };
    }
    let fallback = dirs::home_dir().map(|home| home.join(".opencode").join("bin"));
    find_in(std::env::var_os("PATH"), fallback).ok_or_else(|| {
        anyhow!(
            Failure::new(
                code::FAILED,
                "cannot find opencode: OCX_OPENCODE is unset, it is not on PATH, and not in ~/.opencode/bin"
            )
            .hint(hint)
        )
    })
}

/// `opencode` in the directories of `path_var`, else in `fallback`, as the platform finds
/// programs (executable bit on Unix; PATHEXT on Windows).
fn find_in(path_var: Option<std::ffi::OsString>, fallback: Option<PathBuf>) -> Option<PathBuf> {
    let cwd = std::env::current_dir().unwrap_or_default();
    let search = |paths: std::ffi::OsString| which::which_in("opencode", Some(paths), &cwd).ok();
    let found = path_var.and_then(search).or_else(|| fallback.and_then(|dir| search(dir.into_os_string())))?;
    Some(std::path::absolute(&found).unwrap_or(found))
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
fn pick_port(host: &str, records: &[Record]) -> Result<u16> {
    let claimed: Vec<u16> = records.iter().map(|r| r.port).collect();
    process::free_port(host, process::instance_ports(), &claimed)
}

fn port_taken(host: &str, port: u16) -> anyhow::Error {
    let by = process::port_owner(port).map(|owner| format!(" by {owner}")).unwrap_or_default();
    anyhow!(
        Failure::new(code::FAILED, format!("port {port} on {host} is already in use{by}"))
            .hint("choose another --port, or leave it out and ocx picks a free one")
    )
}

/// Ways a start can fail that another try fixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transient {
    /// The port ocx picked was taken between choosing it and the server binding it.
    PortTaken,
    /// opencode's first start in a fresh data directory migrates its SQLite database; servers
    /// starting at the same moment race on it and the losers exit (`DATABASE_RACE_SIGNS`).
    DatabaseRace,
}

enum Wait {
    Ready(Option<String>),
    Exited(String),
    Failed(String),
    TimedOut,
    Interrupted,
}

/// One instance being started (or restarted) under its lock, through its watcher. Until
/// `finish`, dropping it (an error, a timeout, Ctrl-C, a panic) ends everything it spawned;
/// a new instance's record and lock file go too, an existing one is marked `failed`.
struct Launch<'a> {
    home: &'a Home,
    /// The record being started: the watcher's plan, then with the server and watcher in it.
    record: Record,
    /// True for a new instance, false for a restart of an existing one.
    fresh: bool,
    /// The watcher spawned last; earlier ones have exited and were reaped.
    watcher: Option<Child>,
    reports: Option<Receiver<Report>>,
    /// Where the last spawn's output starts in the log.
    log_offset: u64,
    finished: bool,
    _lock: Lock,
}

impl<'a> Launch<'a> {
    fn new(home: &'a Home, record: Record, fresh: bool, lock: Lock) -> Self {
        Launch { home, record, fresh, watcher: None, reports: None, log_offset: 0, finished: false, _lock: lock }
    }

    /// Spawn a watcher for the record, which spawns the server; write the record with both.
    /// The caller holds the store lock for a new instance.
    fn spawn(&mut self, deadline: Instant) -> Result<()> {
        if let Some(mut old) = self.watcher.take() {
            let _ = old.wait();
        }
        self.log_offset = std::fs::metadata(&self.record.log).map_or(0, |m| m.len());
        let exe = std::env::current_exe().context("cannot find the ocx binary to run the watcher")?;
        let mut cmd = Command::new(&exe);
        cmd.args(["__watch", &self.record.id])
            .env(MARKER_ID, &self.record.id)
            .env(MARKER_HOME, self.home.root())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        process::detach(&mut cmd);
        hooks::pause("start:before-spawn");
        let mut watcher = cmd.spawn().with_context(|| format!("cannot run the watcher {}", exe.display()))?;
        let (stdin, stdout) = (watcher.stdin.take(), watcher.stdout.take());
        let wpid = watcher.id();
        self.watcher = Some(watcher);
        hooks::fail("start:spawned")?;
        let mut plan = serde_json::to_vec(&self.record)?;
        plan.push(b'\n');
        stdin.expect("piped").write_all(&plan).context("cannot hand the watcher its plan")?;
        let (tx, reports) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout.expect("piped")).lines() {
                let Ok(report) = line.map_err(anyhow::Error::from).and_then(|l| Ok(serde_json::from_str(&l)?)) else {
                    break;
                };
                if tx.send(report).is_err() {
                    break;
                }
            }
        });
        let server = loop {
            match reports.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Report::Spawned(server)) => break server,
                Ok(Report::Failed { error }) => return Err(anyhow!(Failure::new(code::FAILED, error))),
                Ok(_) => {}
                Err(_) => return Err(anyhow!("the watcher exited before it started the server")),
            }
        };
        self.reports = Some(reports);
        self.record.watcher = Processes::of(&[wpid])?.get(wpid).map(|p| p.id());
        self.record.set_server(server);
        hooks::pause("start:after-spawn");
        hooks::fail("start:record")?;
        record::save(self.home, &self.record)
    }

    /// Wait for the watcher's word: healthy, exited, failed; or `deadline`, or Ctrl-C.
    fn wait_ready(&mut self, deadline: Instant) -> Wait {
        let Some(reports) = &self.reports else { return Wait::Exited("not started".into()) };
        loop {
            if process::interrupted() {
                return Wait::Interrupted;
            }
            if Instant::now() >= deadline {
                return Wait::TimedOut;
            }
            match reports.recv_timeout(POLL) {
                Ok(Report::Ready { version }) => return Wait::Ready(version),
                Ok(Report::Exited { status }) => return Wait::Exited(status),
                Ok(Report::Failed { error }) => return Wait::Failed(error),
                Ok(Report::Spawned(_)) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Wait::Exited("its watcher exited".into()),
            }
        }
    }

    fn exited_error(&self, status: &str) -> anyhow::Error {
        anyhow!(
            Failure::new(
                code::FAILED,
                format!(
                    "opencode exited ({status}) before it became healthy; the end of its log:\n{}",
                    self.log_tail()
                )
            )
            .hint(format!("the whole log: ocx logs {}", self.record.id))
        )
    }

    fn timed_out_error(&self, timeout: Duration) -> anyhow::Error {
        anyhow!(
            Failure::new(
                code::TIMED_OUT,
                format!("opencode did not become healthy within {}s; stopped it", timeout.as_secs_f64())
            )
            .hint(format!(
                "start-up can take 20 s with many plugins: raise --timeout; the log: ocx logs {}",
                self.record.id
            ))
        )
    }

    /// Why the exited server failed, if another try would fix it.
    fn transient_failure(&self, plan: &Plan) -> Option<Transient> {
        if plan.port.is_none() && !process::port_is_free(&plan.hostname, self.record.port) {
            return Some(Transient::PortTaken);
        }
        let log = self.new_log();
        DATABASE_RACE_SIGNS.iter().any(|sign| log.contains(sign)).then_some(Transient::DatabaseRace)
    }

    /// What the last spawn wrote to the log so far, without the times of its lines.
    fn new_log(&self) -> String {
        let mut bytes = Vec::new();
        if let Ok(mut file) = File::open(&self.record.log) {
            let len = file.metadata().map_or(0, |m| m.len());
            // Rotated meanwhile: all of the new file is this spawn's.
            let from = if len < self.log_offset { 0 } else { self.log_offset };
            if file.seek(SeekFrom::Start(from)).is_ok() {
                let _ = file.read_to_end(&mut bytes);
            }
        }
        let mut text = Vec::new();
        let mut after = true;
        log::Show { timestamps: false, since: None }.render(&bytes, &mut text, &mut after);
        String::from_utf8_lossy(&text).into_owned()
    }

    /// The last lines of the last spawn's output, without terminal colour codes, indented.
    fn log_tail(&self) -> String {
        let text = strip_ansi(&self.new_log());
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with("--- ocx:")).collect();
        if lines.is_empty() {
            return "  (nothing)".to_string();
        }
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..]
            .iter()
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The start succeeded: keep everything, hand over the record.
    fn finish(mut self) -> Record {
        self.finished = true;
        self.record.clone()
    }
}

impl Drop for Launch<'_> {
    /// A start that did not finish: end the watcher, the server and everything it started. A
    /// new instance's record goes (its log stays, for `ocx logs <id>`); an existing one says it
    /// failed.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Some(watcher) = &mut self.watcher {
            // Our own child, not reaped yet: its PID is still its own. KILL: it must not react.
            process::signal_child(watcher, Signal::Kill);
            let _ = watcher.wait();
        }
        stop::end_marked(self.home, &self.record.id);
        if self.fresh {
            let _ = record::delete(self.home, &self.record.id);
            self.home.remove_instance_lock(&self.record.id);
        } else if let Ok(Some(mut record)) = record::load(self.home, &self.record.id) {
            record.state = State::Running;
            record.failed = Some("the restart did not complete; see `ocx logs`".to_string());
            let _ = record::save(self.home, &record);
        }
    }
}

/// Remove terminal escape sequences (`ESC [ … letter`) such as colours.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
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
    fn ansi_codes_are_stripped() {
        assert_eq!(strip_ansi("\u{1b}[31mError\u{1b}[0m: x"), "Error: x");
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

    /// `opencode` is found on PATH as the platform finds programs, and in the fallback directory.
    #[test]
    fn opencode_is_found_on_path_and_in_the_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let (on_path, fallback, empty) = (dir.path().join("bin"), dir.path().join("fallback"), dir.path().join("e"));
        for d in [&on_path, &fallback, &empty] {
            std::fs::create_dir(d).unwrap();
        }
        let name = format!("opencode{}", std::env::consts::EXE_SUFFIX);
        for d in [&on_path, &fallback] {
            std::fs::write(d.join(&name), "#!/bin/sh\n").unwrap();
            process::make_executable(&d.join(&name)).unwrap();
        }
        let path_var = std::env::join_paths([&empty, &on_path]).unwrap();
        assert_eq!(find_in(Some(path_var), Some(fallback.clone())), Some(on_path.join(&name)));
        assert_eq!(find_in(Some(empty.clone().into_os_string()), Some(fallback.clone())), Some(fallback.join(&name)));
        assert_eq!(find_in(None, Some(empty)), None);
    }
}
