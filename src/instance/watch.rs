//! The watcher: one small ocx process per instance, the server's parent, as podman's conmon is
//! a container's. No daemon: it spawns the server, copies its output into the capped log, tells
//! the ocx starting it when the server is healthy (or why not), and then blocks until something
//! happens. When the server exits it records the exit and restarts it per the policy, with
//! backoff; it probes health on a slow timer and restarts a server that stopped answering or
//! grew too big; a stop request (`ocx stop`) ends the server and the watcher.
//!
//! It decides under the instance's lock, from the record on disk: `stopping`, or no record at
//! all, means a stop is under way, and it exits instead of restarting, whatever the timing.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow};
use serde::{Deserialize, Serialize};

use crate::home::{Home, Lock};
use crate::instance::launch::{self, READY_MARK};
use crate::instance::{log, stop};
use crate::output;
use crate::process::{self, ProcId, Processes, Reaper, Signal, Tree};
use crate::record::{self, Exit, Record, RestartPolicy, State};

/// A server healthy this long before it exits was stable: the next restart comes at once, and
/// the count of unstable exits starts over.
/// How long the log copier lets a busy server's lines gather before the next read.
const COALESCE: Duration = Duration::from_millis(5);
const STABLE: Duration = Duration::from_secs(60);
/// This many unstable exits in a row, and the watcher gives up: the instance is `failed`.
pub const GIVE_UP_AFTER: u32 = 5;
/// The longest wait between two restarts.
const MAX_DELAY: Duration = Duration::from_secs(60);
/// How often to ask a server that printed its ready line whether it is healthy yet.
const STARTUP_POLL: Duration = Duration::from_millis(50);
/// A restarted server not healthy after this long is `unresponsive`.
const STARTUP_LIMIT: Duration = Duration::from_secs(120);
/// Between the polite signal and KILL, when the watcher ends its server.
const END_GRACE: Duration = Duration::from_secs(10);
/// How long an unresponsive server is given while its last known state was busy (a long tool
/// call can hold the event loop), before it is restarted anyway.
const BUSY_GRACE: Duration = Duration::from_secs(300);
/// How long one health probe of a running server may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long after the server's exit the rest of its output may take to arrive.
const DRAIN: Duration = Duration::from_secs(1);

/// What the watcher tells the ocx that spawned it (`start`, `restart`), one JSON line each on
/// its stdout, until the server is healthy or has failed.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Report {
    /// The server runs, as this process.
    Spawned(ProcId),
    /// It printed its ready line and answered its health check.
    Ready { version: Option<String> },
    /// It exited before it was healthy; the watcher exits too.
    Exited { status: String },
    /// It could not be started at all; the watcher exits.
    Failed { error: String },
}

/// Something for the watcher to act on.
enum Event {
    /// A child was reaped: the server, or something re-parented to the watcher.
    Exited(u32, ExitStatus),
    /// The output of spawn N carried the ready line.
    ReadyLine(u64),
    /// The output of spawn N ended.
    OutputClosed(u64),
    /// `ocx stop` (or anyone) asked the watcher to end its server and exit.
    Stop,
}

/// The server as the watcher runs it.
struct Server {
    /// Which spawn this is (the events of earlier ones are stale).
    spawn: u64,
    id: ProcId,
    tree: Tree,
    spawned_at: Instant,
    ready_line: bool,
    output_open: bool,
    healthy_since: Option<Instant>,
    /// Why the watcher is ending it, and when KILL comes if TERM is not enough.
    ending: Option<(&'static str, Instant)>,
}

/// `ocx __watch ID`: the plan (the record to be) arrives on stdin, reports go to stdout.
pub fn run(home: &Home, id: &str) -> Result<()> {
    let mut plan = String::new();
    std::io::stdin().read_to_string(&mut plan).context("cannot read the watcher's plan")?;
    let record: Record = serde_json::from_str(&plan).context("the watcher's plan is not a record")?;
    anyhow::ensure!(record.id == id, "the plan is for instance {}, not {id}", record.id);
    process::become_watcher().context("cannot become a watcher")?;

    let (tx, events) = mpsc::channel();
    let mut stops = process::stop_requests(home.root(), id).context("cannot listen for stop requests")?;
    let stop_tx = tx.clone();
    std::thread::Builder::new()
        .stack_size(64 * 1024)
        .spawn(move || while stops.wait().is_ok() && stop_tx.send(Event::Stop).is_ok() {})?;
    let reaper_tx = Mutex::new(tx.clone());
    let reaper = Reaper::start(move |pid, status| {
        let _ = reaper_tx.lock().map(|tx| tx.send(Event::Exited(pid, status)));
    })?;
    let log = log::Writer::open(&record.log, record.supervision.log_max_size, record.supervision.log_max_files)
        .with_context(|| format!("cannot open the log {}", record.log.display()))?;
    let auth = record
        .password
        .as_deref()
        .map(|p| format!("Authorization: {}\r\n", crate::server::basic_auth(&record.username, p)))
        .unwrap_or_default();
    let mut watcher = Watcher {
        home,
        auth,
        record,
        events,
        tx,
        deferred: VecDeque::new(),
        reaper,
        log: Arc::new(Mutex::new(log)),
        reporting: true,
        server: None,
        spawns: 0,
        unstable: 0,
        stop_requested: false,
        failed_probes: 0,
        busy: false,
        unresponsive_since: None,
        over_memory: 0,
        next_probe: Instant::now(),
    };
    watcher.watch();
    Ok(())
}

struct Watcher<'a> {
    home: &'a Home,
    /// The record as last read (the plan, at first).
    record: Record,
    events: Receiver<Event>,
    tx: Sender<Event>,
    /// Events that arrived while waiting for something else.
    deferred: VecDeque<Event>,
    reaper: Reaper,
    log: Arc<Mutex<log::Writer>>,
    /// The server's `Authorization` header line (empty without a password).
    auth: String,
    /// The ocx that spawned the watcher still waits for a report.
    reporting: bool,
    server: Option<Server>,
    spawns: u64,
    /// Unstable exits in a row.
    unstable: u32,
    stop_requested: bool,
    failed_probes: u32,
    /// Whether the server last said a session was busy.
    busy: bool,
    unresponsive_since: Option<Instant>,
    /// Health probes in a row that found the server over `--max-memory`.
    over_memory: u32,
    next_probe: Instant,
}

/// What to do after the server exited.
enum Next {
    Restart(Duration),
    Done,
}

impl Watcher<'_> {
    fn watch(&mut self) {
        let first = self.record.clone();
        if let Err(err) = self.spawn(&first) {
            self.report(&Report::Failed { error: format!("{err:#}") });
            return;
        }
        loop {
            if self.stop_requested {
                self.end_server_now();
                return;
            }
            let Some(event) = self.next_event(self.next_wake()) else {
                if let Err(err) = self.on_timer() {
                    self.note(&format!("error: {err:#}"));
                }
                continue;
            };
            match event {
                Event::Stop => self.stop_requested = true,
                Event::Exited(pid, status) if self.server.as_ref().is_some_and(|s| s.id.pid == pid) => {
                    let next = self.on_exit(status).unwrap_or_else(|err| {
                        self.note(&format!("error: {err:#}; the watcher exits"));
                        Next::Done
                    });
                    match next {
                        Next::Restart(delay) if self.restart_after(delay).unwrap_or(false) => {}
                        _ => return,
                    }
                }
                // Something the server left behind, re-parented to the watcher and now reaped.
                Event::Exited(..) => {}
                Event::ReadyLine(n) => {
                    if let Some(server) = self.server.as_mut().filter(|s| s.spawn == n) {
                        server.ready_line = true;
                        self.next_probe = Instant::now();
                    }
                }
                Event::OutputClosed(n) => {
                    if let Some(server) = self.server.as_mut().filter(|s| s.spawn == n) {
                        server.output_open = false;
                    }
                }
            }
        }
    }

    /// The next event: one deferred earlier, else from the channel within `timeout` (None:
    /// wait for ever). None when the time is up.
    fn next_event(&mut self, timeout: Option<Duration>) -> Option<Event> {
        if let Some(event) = self.deferred.pop_front() {
            return Some(event);
        }
        match timeout {
            Some(timeout) => self.events.recv_timeout(timeout).ok(),
            None => self.events.recv().ok(),
        }
    }

    /// Wait up to `timeout` for an event that `want` picks; others are deferred. A stop request
    /// is noted and ends the wait. Returns whether `want` picked an event.
    fn wait_for(&mut self, timeout: Duration, want: impl Fn(&Event) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Event::Stop) => {
                    self.stop_requested = true;
                    return false;
                }
                Ok(event) if want(&event) => return true,
                Ok(event) => self.deferred.push_back(event),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return false,
            }
        }
    }

    /// Wait up to `timeout` for the process `pid` to be reaped, whatever else comes.
    fn wait_reaped(&mut self, pid: u32, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while let Ok(event) = self.events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            if matches!(event, Event::Exited(p, _) if p == pid) {
                return true;
            }
        }
        false
    }

    /// When the watcher must wake without an event: to probe, or to KILL a server that ignored
    /// TERM. None: only an event wakes it.
    fn next_wake(&self) -> Option<Duration> {
        let server = self.server.as_ref()?;
        let now = Instant::now();
        let probe = match (server.healthy_since, server.ready_line) {
            (None, true) => now + STARTUP_POLL,
            (None, false) => server.spawned_at + STARTUP_LIMIT,
            (Some(_), _) => self.next_probe,
        };
        let wake = match server.ending {
            Some((_, kill_at)) => probe.min(kill_at),
            None => probe,
        };
        Some(wake.saturating_duration_since(now))
    }

    /// Spawn the server as `record` describes it, with its output coming to the log.
    fn spawn(&mut self, record: &Record) -> Result<()> {
        let mut cmd: Command = launch::server_command(self.home, record);
        let (reader, writer) = std::io::pipe().context("cannot make the log pipe")?;
        cmd.stdin(Stdio::null()).stdout(writer.try_clone()?).stderr(writer);
        process::new_session(&mut cmd);
        self.log_line(&format!(
            "--- ocx: {} starting: {} {}",
            record.id,
            record.opencode.path.display(),
            record.args.join(" ")
        ));
        let child = cmd.spawn().with_context(|| format!("cannot run {}", record.opencode.path.display()))?;
        // Our copies of the pipe's write end must go, or its reader never sees the end.
        drop(cmd);
        let tree = process::contain(&child);
        let pid = child.id();
        let id = Processes::of(&[pid])?.get(pid).map(|p| p.id()).unwrap_or(ProcId {
            pid,
            started_at: output::now_secs(),
            start_key: None,
        });
        self.spawns += 1;
        self.copy_output(reader, self.spawns)?;
        self.reaper.watch(child);
        self.server = Some(Server {
            spawn: self.spawns,
            id,
            tree,
            spawned_at: Instant::now(),
            ready_line: false,
            output_open: true,
            healthy_since: None,
            ending: None,
        });
        self.failed_probes = 0;
        self.over_memory = 0;
        self.unresponsive_since = None;
        self.report(&Report::Spawned(id));
        Ok(())
    }

    /// A thread that copies the server's output into the log, looking out for the ready line.
    fn copy_output(&self, mut pipe: std::io::PipeReader, spawn: u64) -> Result<()> {
        let (log, tx) = (Arc::clone(&self.log), self.tx.clone());
        std::thread::Builder::new().stack_size(128 * 1024).spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            // The ready line may straddle two reads: look at the end of the last one too.
            let mut seen = false;
            let mut tail: Vec<u8> = Vec::new();
            loop {
                let n = match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                if let Ok(mut log) = log.lock() {
                    let _ = log.write_chunk(&buf[..n]);
                }
                // A server writes a line at a time: let a busy one's lines gather in the pipe
                // for a moment (it holds 64 KiB; 5 ms of 10 MB/s is 50 KB), so that one read
                // and one write carry many lines. An idle server's line waits 5 ms at most.
                if n < buf.len() {
                    std::thread::sleep(COALESCE);
                }
                if !seen {
                    tail.extend_from_slice(&buf[..n]);
                    if tail.windows(READY_MARK.len()).any(|w| w == READY_MARK.as_bytes()) {
                        seen = true;
                        let _ = tx.send(Event::ReadyLine(spawn));
                    }
                    tail.drain(..tail.len().saturating_sub(READY_MARK.len()));
                }
            }
            if let Ok(mut log) = log.lock() {
                let _ = log.flush_partial();
            }
            let _ = tx.send(Event::OutputClosed(spawn));
        })?;
        Ok(())
    }

    /// Probe the server: is it healthy yet, still healthy, busy, too big?
    fn on_timer(&mut self) -> Result<()> {
        let Some(server) = self.server.as_mut() else { return Ok(()) };
        let now = Instant::now();
        if let Some((reason, kill_at)) = server.ending {
            if now >= kill_at {
                // TERM was not enough. Once: the reaper reports the exit.
                server.ending = Some((reason, now + Duration::from_secs(3600)));
                let (id, _) = (server.id, server.tree.end());
                process::signal(&live(id)?, Signal::Kill)?;
            }
            return Ok(());
        }
        if server.healthy_since.is_none() {
            let (ready_line, spawned_at) = (server.ready_line, server.spawned_at);
            if let Some(version) = ready_line.then(|| self.probe_health(Duration::from_secs(2))).flatten() {
                self.healthy(version);
            } else if now >= spawned_at + STARTUP_LIMIT && !self.reporting {
                self.end_server("unresponsive", "not healthy within 2 minutes of its start");
            }
            return Ok(());
        }
        let interval = Duration::from_secs(self.record.supervision.health_interval_s.max(1));
        self.next_probe = now + interval;
        match self.probe_health(PROBE_TIMEOUT) {
            Some(_) => {
                self.failed_probes = 0;
                self.unresponsive_since = None;
                // `/session/status` lists the sessions that are not idle: `{}` when none is.
                self.busy = probe(&self.record, &self.auth, "/session/status", PROBE_TIMEOUT)
                    .is_some_and(|body| body.trim_ascii() != b"{}");
                self.check_memory();
            }
            None => {
                self.failed_probes += 1;
                let since = *self.unresponsive_since.get_or_insert(now);
                if self.failed_probes >= self.record.supervision.health_failures.max(1) {
                    if !self.busy {
                        let why = format!("{} health checks in a row failed", self.failed_probes);
                        self.end_server("unresponsive", &why);
                    } else if now.duration_since(since) >= BUSY_GRACE {
                        let why = format!("unresponsive for {} while busy", output::duration(now - since));
                        self.end_server("unresponsive", &why);
                    }
                }
            }
        }
        Ok(())
    }

    /// Restart a server whose memory stayed above the limit, once no session is busy.
    fn check_memory(&mut self) {
        let (Some(limit), Some(server)) = (self.record.supervision.max_memory, self.server.as_ref()) else { return };
        let rss = Processes::of(&[server.id.pid]).ok().and_then(|t| t.find(&server.id)).map_or(0, |p| p.rss);
        if rss <= limit {
            self.over_memory = 0;
            return;
        }
        self.over_memory += 1;
        if self.over_memory >= 2 && !self.busy {
            let why = format!("resident memory {} over --max-memory {}", output::bytes(rss), output::bytes(limit));
            self.end_server("memory", &why);
        } else {
            // Over the limit: look again soon, to restart at the first moment nothing is busy.
            self.next_probe = Instant::now() + Duration::from_secs(1);
        }
    }

    /// The health check's answer (the server's version), or None when it failed.
    fn probe_health(&self, timeout: Duration) -> Option<Option<String>> {
        let body = probe(&self.record, &self.auth, "/global/health", timeout)?;
        let body = String::from_utf8(body).ok()?;
        // `{"healthy":true,"version":"1.18.33"}`, read without a JSON parser (see `probe`).
        let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        compact.contains("\"healthy\":true").then(|| {
            let (_, rest) = compact.split_once("\"version\":\"")?;
            Some(rest.split('"').next()?.to_string())
        })
    }

    /// The server just answered its first health check.
    fn healthy(&mut self, version: Option<String>) {
        let now = Instant::now();
        if let Some(server) = self.server.as_mut() {
            server.healthy_since = Some(now);
        }
        self.next_probe = now + Duration::from_secs(self.record.supervision.health_interval_s.max(1));
        if self.reporting {
            // The ocx that spawned the watcher records it as running.
            self.report(&Report::Ready { version });
            self.reporting = false;
            // What it took to get here is not needed again: keep the watcher small.
            process::shed_code_pages();
        } else if let Err(err) = self.record_running(version) {
            self.note(&format!("error: {err:#}"));
        }
    }

    /// A restarted server is healthy again: `running`, unless a stop came meanwhile.
    fn record_running(&mut self, version: Option<String>) -> Result<()> {
        let Some(_lock) = self.lock()? else { return Ok(()) };
        let Some(mut record) = self.load()? else { return Ok(()) };
        if record.state == State::Starting {
            record.state = State::Running;
            record.opencode.version = version.or(record.opencode.version);
            record::save(self.home, &record)?;
        }
        self.record = record;
        Ok(())
    }

    /// Ask the server to exit (TERM now, KILL after a grace), to restart it for `reason`.
    fn end_server(&mut self, reason: &'static str, why: &str) {
        let Some(server) = self.server.as_mut().filter(|s| s.ending.is_none()) else { return };
        server.ending = Some((reason, Instant::now() + END_GRACE));
        let id = server.id;
        self.log_line(&format!("--- ocx: ending the server ({reason}: {why}) to restart it"));
        if let Ok(proc) = live(id)
            && let Err(err) = process::signal(&proc, Signal::Term)
        {
            // Waiting out the grace would change nothing: KILL at the next wake, at once.
            self.note(&format!("cannot deliver the polite signal ({err:#}); ending the server at once"));
            if let Some(server) = self.server.as_mut() {
                server.ending = Some((reason, Instant::now()));
            }
        }
    }

    /// A stop request: end the server (TERM, a grace, KILL) and its tree, then exit. The record
    /// is `ocx stop`'s to delete.
    fn end_server_now(&mut self) {
        let Some(server) = self.server.take() else { return };
        self.log_line("--- ocx: stop requested; ending the server");
        if let Ok(proc) = live(server.id) {
            let delivered = process::signal(&proc, Signal::Term)
                .inspect_err(|err| {
                    // On Windows only a process on the server's console can send it CTRL_BREAK
                    // (and Wine cannot at all): end it at once instead of waiting in vain.
                    self.note(&format!("cannot deliver the polite signal ({err:#}); ending the server at once"));
                })
                .is_ok();
            if !delivered || !self.wait_reaped(proc.pid, END_GRACE) {
                let _ = process::signal(&proc, Signal::Kill);
                self.wait_reaped(proc.pid, Duration::from_secs(5));
            }
        }
        server.tree.end();
    }

    /// The server exited: record it, and say whether (and when) to start it again.
    fn on_exit(&mut self, status: ExitStatus) -> Result<Next> {
        let server = self.server.take().expect("on_exit is called for the running server");
        if server.output_open {
            let spawn = server.spawn;
            self.wait_for(DRAIN, |e| matches!(e, Event::OutputClosed(n) if *n == spawn));
        }
        let uptime = server.spawned_at.elapsed();
        let (code, signal) = (status.code(), process::exit_signal(&status));
        let ended_by_us = server.ending.map(|(reason, _)| reason);
        let reason = ended_by_us.unwrap_or_else(|| exit_reason(code, signal.as_deref()));
        let exit = Exit {
            code,
            signal,
            at: rfc3339_in(Duration::ZERO),
            uptime_s: uptime.as_secs(),
            reason: reason.to_string(),
        };
        if self.reporting {
            // Not healthy yet: the ocx starting it decides (it may try again); nothing restarts.
            self.report(&Report::Exited { status: exit.status() });
            server.tree.end();
            return Ok(Next::Done);
        }
        let restart = ended_by_us.is_some()
            || match self.record.restart_policy {
                RestartPolicy::No => false,
                RestartPolicy::OnFailure => reason == "crashed",
                RestartPolicy::Always => true,
            };
        let stable = server.healthy_since.is_some_and(|t| t.elapsed() >= STABLE);
        self.unstable = if stable { 0 } else { self.unstable + 1 };

        let Some(_lock) = self.lock()? else { return Ok(Next::Done) };
        let Some(mut record) = self.load()? else { return Ok(Next::Done) };
        let what = format!("the server exited ({}, up {})", exit.status(), output::duration(uptime));
        record.last_exit = Some(exit);
        let next = if !restart {
            let policy = serde_json::to_value(record.restart_policy)?;
            self.log_line(&format!("--- ocx: {what}; not restarted (--restart {})", policy.as_str().unwrap_or("")));
            Next::Done
        } else if self.unstable >= GIVE_UP_AFTER {
            let why = format!("gave up after {} unstable exits in a row (the last: {what})", self.unstable);
            self.log_line(&format!("--- ocx: {why}"));
            record.failed = Some(why);
            Next::Done
        } else {
            let delay = backoff(self.unstable);
            record.next_restart_at = (!delay.is_zero()).then(|| rfc3339_in(delay));
            let when = if delay.is_zero() { "at once".to_string() } else { format!("in {}", output::duration(delay)) };
            self.log_line(&format!("--- ocx: {what}; restarting {when}"));
            Next::Restart(delay)
        };
        record::save(self.home, &record)?;
        self.record = record;
        server.tree.end();
        Ok(next)
    }

    /// End what the dead server left behind, wait `delay`, and start it again. False when the
    /// watcher should exit instead (a stop, a failure).
    fn restart_after(&mut self, mut delay: Duration) -> Result<bool> {
        // The agent's commands of the dead server must not run on next to the new one.
        stop::end_marked(self.home, &self.record.id);
        loop {
            self.wait_for(delay, |_| false);
            if self.stop_requested {
                return Ok(false);
            }
            let Some(_lock) = self.lock()? else { return Ok(false) };
            let Some(mut record) = self.load()? else { return Ok(false) };
            if !process::port_is_free(&record.hostname, record.port) {
                // Someone took the port meanwhile: wait for it, never move silently.
                self.unstable += 1;
                let by = process::port_owner(record.port).map(|o| format!(" by {o}")).unwrap_or_default();
                let what = format!("port {} taken{by}", record.port);
                if self.unstable >= GIVE_UP_AFTER {
                    self.log_line(&format!("--- ocx: {what}; gave up"));
                    record.failed = Some(what);
                    record.next_restart_at = None;
                    record::save(self.home, &record)?;
                    return Ok(false);
                }
                delay = backoff(self.unstable);
                self.log_line(&format!("--- ocx: {what}; trying again in {}", output::duration(delay)));
                record.next_restart_at = Some(rfc3339_in(delay));
                record::save(self.home, &record)?;
                self.record = record;
                continue;
            }
            let last = record.last_exit.as_ref().map_or("an exit".to_string(), |e| {
                format!("{} (up {})", e.status(), output::duration(Duration::from_secs(e.uptime_s)))
            });
            if let Err(err) = self.spawn(&record) {
                let why = format!("cannot restart: {err:#}");
                self.log_line(&format!("--- ocx: {why}"));
                record.failed = Some(why);
                record.next_restart_at = None;
                record::save(self.home, &record)?;
                return Ok(false);
            }
            let server = self.server.as_ref().expect("just spawned");
            record.set_server(server.id);
            record.restarts += 1;
            record.next_restart_at = None;
            // Until it is healthy again (`healthy` writes `running`).
            record.state = State::Starting;
            self.log_line(&format!("--- ocx: restart {} after {last}", record.restarts));
            record::save(self.home, &record)?;
            self.record = record;
            return Ok(true);
        }
    }

    /// The instance's lock, once whoever holds it (a start, restart or stop in progress) lets
    /// go. None if a stop was requested meanwhile.
    fn lock(&mut self) -> Result<Option<Lock>> {
        loop {
            if self.stop_requested {
                return Ok(None);
            }
            if let Some(lock) = self.home.try_lock_instance(&self.record.id)? {
                return Ok(Some(lock));
            }
            self.wait_for(Duration::from_millis(50), |_| false);
        }
    }

    /// The record, unless a stop is under way (`stopping`, or already deleted). Under the lock.
    fn load(&mut self) -> Result<Option<Record>> {
        Ok(record::load(self.home, &self.record.id)?.filter(|r| r.state != State::Stopping))
    }

    /// A line to the ocx that spawned the watcher, while it listens. Once it stopped listening
    /// (it finished, or was killed) there is nobody to tell.
    fn report(&self, report: &Report) {
        if self.reporting
            && let Ok(line) = serde_json::to_string(report)
        {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}").and_then(|()| out.flush());
        }
    }

    /// A line of the watcher's own in the log (a restart, an error).
    fn log_line(&self, line: &str) {
        if let Ok(mut log) = self.log.lock() {
            let _ = log.write_line(line);
        }
    }

    fn note(&self, line: &str) {
        self.log_line(&format!("--- ocx: watcher {line}"));
    }
}

/// `GET path` of the instance's server with its credentials (`auth`: the header line, or
/// empty): the body of a 200 answer. One request on a plain connection, the only HTTP a
/// watcher does every few seconds, written out instead of going through `server::Client`
/// (ureq, serde_json), whose code would make up most of a long-lived watcher's resident memory
/// (measured: 4.1 MiB with it, 2.7 MiB without; docs/benchmarks.md).
fn probe(record: &Record, auth: &str, path: &str, timeout: Duration) -> Option<Vec<u8>> {
    use std::net::{TcpStream, ToSocketAddrs};
    let authority = record.url.strip_prefix("http://")?.trim_end_matches('/');
    let addr = authority.to_socket_addrs().ok()?.next()?;
    let mut conn = TcpStream::connect_timeout(&addr, timeout).ok()?;
    conn.set_read_timeout(Some(timeout)).ok()?;
    conn.set_write_timeout(Some(timeout)).ok()?;
    write!(conn, "GET {path} HTTP/1.1\r\nHost: {authority}\r\n{auth}Connection: close\r\n\r\n").ok()?;
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).ok()?;
    let head_end = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let (head, body) = (&answer[..head_end], &answer[head_end + 4..]);
    if !head.starts_with(b"HTTP/1.1 200") && !head.starts_with(b"HTTP/1.0 200") {
        return None;
    }
    let chunked = String::from_utf8_lossy(head).to_ascii_lowercase().contains("transfer-encoding: chunked");
    Some(if chunked { dechunk(body)? } else { body.to_vec() })
}

/// A chunked body's content.
fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

/// The live process `id`, while it is that process.
fn live(id: ProcId) -> Result<process::Proc> {
    Processes::of(&[id.pid])?.find(&id).ok_or_else(|| anyhow!("PID {} is gone", id.pid))
}

/// Why a server ended on its own: `exited` (code 0), `terminated` (SIGTERM, which is how ocx,
/// and anyone else, asks a server to stop), or `crashed` (any other code or signal): a failure,
/// which `--restart on-failure` restarts.
pub fn exit_reason(code: Option<i32>, signal: Option<&str>) -> &'static str {
    match (code, signal) {
        (_, Some("SIGTERM")) => "terminated",
        (Some(0), None) => "exited",
        _ => "crashed",
    }
}

/// The wait before the restart that follows the `unstable`-th unstable exit in a row: at once
/// for the first, then 1 s, doubling, at most a minute.
pub fn backoff(unstable: u32) -> Duration {
    match unstable {
        0 | 1 => Duration::ZERO,
        n => Duration::from_secs(1u64 << (n - 2).min(6)).min(MAX_DELAY),
    }
}

/// The time `delay` from now, RFC 3339 with milliseconds.
pub fn rfc3339_in(delay: Duration) -> String {
    humantime::format_rfc3339_millis(SystemTime::now() + delay).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_put_together() {
        assert_eq!(dechunk(b"4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n").unwrap(), b"{\"a\":1}");
        assert_eq!(dechunk(b"2\r\n{}\r\n0\r\n\r\n").unwrap(), b"{}");
        assert!(dechunk(b"zz\r\n").is_none());
    }

    #[test]
    fn backoff_starts_at_once_then_doubles_up_to_a_minute() {
        let secs: Vec<u64> = (1..=10).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [0, 1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn failures_are_non_zero_exits_and_signals_but_term() {
        assert_eq!(exit_reason(Some(0), None), "exited");
        assert_eq!(exit_reason(Some(1), None), "crashed");
        assert_eq!(exit_reason(None, Some("SIGKILL")), "crashed");
        assert_eq!(exit_reason(None, Some("SIGSEGV")), "crashed");
        assert_eq!(exit_reason(None, Some("SIGTERM")), "terminated");
    }
}
