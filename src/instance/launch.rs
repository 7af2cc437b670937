//! Launching a server: choose its id, name and port under the store lock, spawn it detached
//! with the marker and its password, write its record, and wait until it is healthy. Every
//! failure after the spawn ends what was spawned and removes the record (`Launch`'s `Drop`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

use crate::error::{Failure, code};
use crate::home::{Home, Lock};
use crate::instance::stop;
use crate::process::{self, MARKER_HOME, MARKER_ID, Processes, Signal};
use crate::record::{self, Binary, Record, State};
use crate::server::Client;
use crate::{hooks, output, token};

/// How often to ask the server "is it ready?": short, so ocx adds little to start-up time.
const POLL: Duration = Duration::from_millis(25);
/// How many times to spawn a server whose start failed in a way known to be transient.
const START_TRIES: u32 = 3;
const LOG_TAIL_LINES: usize = 15;
pub const PASSWORD_VAR: &str = "OPENCODE_SERVER_PASSWORD";
pub const USERNAME_VAR: &str = "OPENCODE_SERVER_USERNAME";
const READY_MARK: &str = "server listening on http";
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
        let mut launch = Launch::new(home, id, name, lock);
        launch.spawn(plan, port)?;
        launch
    };
    hooks::pause("start:waiting");

    let mut tries = 1;
    loop {
        match launch.wait_ready(deadline) {
            Wait::Ready(version) => {
                hooks::fail("start:healthy")?;
                let record = launch.record_mut();
                record.state = State::Running;
                record.opencode.version = version;
                record::save(home, record)?;
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
                    let port = match failure {
                        Transient::PortTaken => pick_port(&plan.hostname, &record::valid(&record::list(home)?))?,
                        Transient::DatabaseRace => launch.record_mut().port,
                    };
                    launch.spawn(plan, port)?;
                    continue;
                }
                let port = launch.record_mut().port;
                return Err(if plan.port.is_some() && !process::port_is_free(&plan.hostname, port) {
                    port_taken(&plan.hostname, port)
                } else {
                    anyhow!(
                        Failure::new(
                            code::FAILED,
                            format!(
                                "opencode exited ({status}) before it became healthy; the end of its log:\n{}",
                                launch.log_tail()
                            )
                        )
                        .hint(format!("the whole log: ocx logs {}", launch.id))
                    )
                });
            }
            Wait::TimedOut => {
                return Err(anyhow!(
                    Failure::new(
                        code::TIMED_OUT,
                        format!("opencode did not become healthy within {}s; stopped it", plan.timeout.as_secs_f64())
                    )
                    .hint(format!(
                        "start-up can take 20 s with many plugins: raise --timeout; the log: ocx logs {}",
                        launch.id
                    ))
                ));
            }
            Wait::Interrupted => {
                return Err(anyhow!(Failure::new(code::INTERRUPTED, "interrupted; stopped the server being started")));
            }
        }
    }
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

/// A free port that no record claims (a server that is still starting may not have bound its
/// port yet).
fn pick_port(host: &str, records: &[Record]) -> Result<u16> {
    for _ in 0..20 {
        let port = process::free_port(host)?;
        if !records.iter().any(|r| r.port == port) {
            return Ok(port);
        }
    }
    Err(anyhow!("cannot find a free port on {host}"))
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
    Exited(ExitStatus),
    TimedOut,
    Interrupted,
}

/// One instance being started, under its lock. Until `finish`, dropping it (an error, a
/// timeout, Ctrl-C, a panic) ends everything it spawned, removes the record and the lock file.
struct Launch<'a> {
    home: &'a Home,
    id: String,
    name: Option<String>,
    /// The server spawned last; earlier ones have exited and were reaped.
    child: Option<Child>,
    /// Written once the last spawn was recorded.
    record: Option<Record>,
    /// Where the last spawn's output starts in the (appended) log.
    log_offset: u64,
    ready_line_seen: bool,
    finished: bool,
    _lock: Lock,
}

impl<'a> Launch<'a> {
    fn new(home: &'a Home, id: String, name: Option<String>, lock: Lock) -> Self {
        Launch {
            home,
            id,
            name,
            child: None,
            record: None,
            log_offset: 0,
            ready_line_seen: false,
            finished: false,
            _lock: lock,
        }
    }

    fn record_mut(&mut self) -> &mut Record {
        self.record.as_mut().expect("a launch is recorded once spawned")
    }

    /// Spawn the server detached and write its record (`state: starting`). The caller holds
    /// the store lock.
    fn spawn(&mut self, plan: &Plan, port: u16) -> Result<()> {
        if let Some(mut old) = self.child.take() {
            let _ = old.wait();
        }
        let id = self.id.clone();
        let log_path = self.home.log_path(&id);
        let mut log = process::open_private_log(&log_path)
            .with_context(|| format!("cannot open the log {}", log_path.display()))?;
        let password = plan.auth.then(|| plan.env.get(PASSWORD_VAR).cloned().unwrap_or_else(token::password));
        let username = plan.env.get(USERNAME_VAR).cloned().unwrap_or_else(|| "opencode".to_string());
        let mut args: Vec<String> =
            ["serve", "--hostname", &plan.hostname, "--port", &port.to_string()].map(String::from).to_vec();
        args.extend(plan.extra.iter().cloned());
        let now = output::now_secs();
        writeln!(
            log,
            "--- ocx: {id} started at {}: {} {}",
            output::rfc3339(now),
            plan.binary.display(),
            args.join(" ")
        )
        .with_context(|| format!("cannot write the log {}", log_path.display()))?;
        self.log_offset = log.metadata().map_or(0, |m| m.len());
        self.ready_line_seen = false;

        let mut cmd = Command::new(&plan.binary);
        cmd.args(&args)
            .current_dir(&plan.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .envs(&plan.env)
            .env(MARKER_ID, &id)
            .env(MARKER_HOME, self.home.root())
            .env(USERNAME_VAR, &username);
        match &password {
            Some(password) => cmd.env(PASSWORD_VAR, password),
            None => cmd.env_remove(PASSWORD_VAR),
        };
        process::detach(&mut cmd);
        hooks::pause("start:before-spawn");
        let child = cmd.spawn().with_context(|| format!("cannot run {}", plan.binary.display()))?;
        let pid = child.id();
        self.child = Some(child);
        hooks::fail("start:spawned")?;
        // A server that already exited has no start time; the wait below reports its exit.
        let server = Processes::of(&[pid])?.get(pid).map(|p| p.id());
        hooks::pause("start:after-spawn");
        let mut record = Record {
            schema: record::SCHEMA,
            id: id.clone(),
            name: self.name.clone(),
            pid,
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
            log: log_path,
            started_at: output::rfc3339(now),
            state: State::Starting,
        };
        if let Some(server) = server {
            record.set_server(server);
        }
        hooks::fail("start:record")?;
        record::save(self.home, &record)?;
        self.record = Some(record);
        Ok(())
    }

    /// Poll until the ready line is in the log and the health check passes, or the server
    /// exits, or `deadline` passes, or the user presses Ctrl-C.
    fn wait_ready(&mut self, deadline: Instant) -> Wait {
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Wait::Exited(status);
            }
            if process::interrupted() {
                return Wait::Interrupted;
            }
            let now = Instant::now();
            if now >= deadline {
                return Wait::TimedOut;
            }
            if !self.ready_line_seen {
                self.ready_line_seen = self.new_log().contains(READY_MARK);
            }
            if self.ready_line_seen {
                let client = Client::for_record(self.record_mut(), (deadline - now).min(Duration::from_secs(2)));
                if let Ok(health) = client.health()
                    && health.healthy
                {
                    return Wait::Ready(health.version);
                }
            }
            std::thread::sleep(POLL);
        }
    }

    /// Why the exited server failed, if another try would fix it.
    fn transient_failure(&mut self, plan: &Plan) -> Option<Transient> {
        if plan.port.is_none() && !process::port_is_free(&plan.hostname, self.record_mut().port) {
            return Some(Transient::PortTaken);
        }
        let log = self.new_log();
        DATABASE_RACE_SIGNS.iter().any(|sign| log.contains(sign)).then_some(Transient::DatabaseRace)
    }

    /// What the last spawn wrote to the log so far.
    fn new_log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(self.home.log_path(&self.id))
            && file.seek(SeekFrom::Start(self.log_offset)).is_ok()
        {
            let mut bytes = Vec::new();
            let _ = file.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    }

    /// The last lines of the last spawn's output, without terminal colour codes, indented.
    fn log_tail(&self) -> String {
        let text = strip_ansi(&self.new_log());
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
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
        self.record.take().expect("a finished launch is recorded")
    }
}

impl Drop for Launch<'_> {
    /// A start that did not finish: end the server and everything it started, delete its
    /// record. The log stays, for `ocx logs <id>`.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Some(child) = &mut self.child {
            end_child(child);
        }
        stop::end_marked(self.home, &self.id);
        let _ = record::delete(self.home, &self.id);
        self.home.remove_instance_lock(&self.id);
    }
}

/// End a server this ocx spawned and still holds: TERM, a short grace, KILL; then reap it.
/// Its PID cannot be reused while ocx has not reaped it, so it needs no further vouching.
fn end_child(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        process::signal_child(child, Signal::Term);
        let deadline = Instant::now() + Duration::from_secs(3);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        process::signal_child(child, Signal::Kill);
    }
    let _ = child.wait();
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
