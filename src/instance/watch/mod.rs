//! The watcher: one small ocx process per instance, the server's parent, as podman's conmon is
//! a container's. No daemon: it spawns the server, copies its output into the capped log, tells
//! the ocx starting it when the server is healthy (or why not), and then blocks until something
//! happens. When the server exits it records the exit and restarts it per the policy, with
//! backoff; it probes health on a slow timer and restarts a server that stopped answering or
//! grew too big; a stop request (`ocx stop`) ends the server and the watcher.
//!
//! It decides under the instance's lock, from the record on disk: `stopping`, or no record at
//! all, means a stop is under way, and it exits instead of restarting, whatever the timing.
//! Here: the event loop. `lifecycle` spawns, ends and restarts the server; `probe` checks its
//! health; `output` copies its log; `policy` says when to restart and when to give up.

mod eyes;
mod lifecycle;
mod notify;
mod output;
mod policy;
mod probe;
mod stream;

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::process::ExitStatus;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

use crate::home::Home;
use crate::instance::log;
use crate::instance::report::Report;
use crate::instance::state::Held;
use crate::instance::status::{self, Observation};
use crate::process::{self, ProcId, Processes, Reaper, Tree};
use crate::record::{Record, State};
use policy::STARTUP_LIMIT;

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
    /// What the event stream of spawn N showed.
    Seen(u64, stream::Seen),
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
        waiting_for_idle: false,
        next_probe: Instant::now(),
        observation: Observation::default(),
        dirty: false,
        last_flush: Instant::now(),
        current_spawn: Arc::new(AtomicU64::new(0)),
        titles: HashMap::new(),
        alerts: notify::Alerts::default(),
    };
    watcher.watch();
    // Nothing is observed once the watcher is gone. The `failed` alert of a watcher that gave
    // up runs its time unless a stop is asked for; what still runs then is ended.
    status::remove(home, id);
    if !watcher.stop_requested {
        watcher.let_alerts_finish();
    }
    watcher.alerts.end_all();
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
    /// A restart is due but waits for a busy session (said once in the log).
    waiting_for_idle: bool,
    next_probe: Instant,
    /// What the watcher sees of its server (`status/<id>.json`), and whether that changed
    /// since it was last written.
    observation: Observation,
    dirty: bool,
    last_flush: Instant,
    /// The spawn whose event stream is followed (0: none); a follower of another one stops.
    current_spawn: Arc<AtomicU64>,
    /// Session titles, for alerts.
    titles: HashMap<String, String>,
    alerts: notify::Alerts,
}

/// What to do after the server exited.
enum Next {
    Restart(Duration),
    Done,
}

impl<'a> Watcher<'a> {
    fn watch(&mut self) {
        let first = self.record.clone();
        crate::hooks::pause("watch:before-spawn");
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
                if self.server_wake_due()
                    && let Err(err) = self.on_timer()
                {
                    self.note(&format!("error: {err:#}"));
                }
                self.eyes_timer();
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
                // An alert's command, or something the server left behind (re-parented to the
                // watcher), now reaped.
                Event::Exited(pid, _) => self.alerts.reaped(pid),
                Event::Seen(spawn, seen) => {
                    self.on_seen(spawn, seen);
                    self.flush(false);
                }
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

    /// The watcher ends on its own: if it gave up, wait until its `failed` alert's command has
    /// exited or is ended at its time (killed at once, it may never have said anything). Other
    /// alerts do not hold it up (an instance left down by its watcher must not look restarting
    /// for half a minute). A stop request ends the wait.
    fn let_alerts_finish(&mut self) {
        while let Some(due) = self.alerts.last_word_due() {
            match self.next_event(Some(due.saturating_duration_since(Instant::now()))) {
                Some(Event::Stop) => return,
                Some(Event::Exited(pid, _)) => self.alerts.reaped(pid),
                Some(_) => {}
                None => self.alerts.end_overdue(),
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

    /// When the watcher must wake without an event: to probe, to KILL a server that ignored
    /// TERM, or for its eyes (a changed observation to write, a question to answer, an alert to
    /// end). None: only an event wakes it.
    fn next_wake(&self) -> Option<Duration> {
        let now = Instant::now();
        let wake = [self.server_wake(), self.eyes_wake()].into_iter().flatten().min()?;
        Some(wake.saturating_duration_since(now))
    }

    /// Whether the server's own timer (a probe, a KILL) is due.
    fn server_wake_due(&self) -> bool {
        self.server_wake().is_some_and(|at| at <= Instant::now())
    }

    fn server_wake(&self) -> Option<Instant> {
        let server = self.server.as_ref()?;
        let probe = match server.healthy_since {
            // Not healthy yet: ended once it has taken too long.
            None => self.next_probe.min(server.spawned_at + STARTUP_LIMIT),
            Some(_) => self.next_probe,
        };
        Some(match server.ending {
            Some((_, kill_at)) => probe.min(kill_at),
            None => probe,
        })
    }

    /// The instance's record under its lock, once whoever holds it (a start, restart or stop
    /// in progress) lets go. None if a stop was requested meanwhile, or is under way
    /// (`stopping`, or the record already deleted).
    fn hold(&mut self) -> Result<Option<Held<'a>>> {
        loop {
            if self.stop_requested {
                return Ok(None);
            }
            // A stop's intent is final: seen without the lock too (the stop may hold it).
            if crate::record::load(self.home, &self.record.id)
                .is_ok_and(|r| r.is_none_or(|r| r.state == State::Stopping))
            {
                return Ok(None);
            }
            if let Some(lock) = self.home.try_lock_instance(&self.record.id)? {
                let held = Held::with(self.home, lock, &self.record.id)?;
                return Ok(held.filter(|h| h.record().state != State::Stopping));
            }
            self.wait_for(Duration::from_millis(50), |_| false);
        }
    }

    /// A line to the ocx that spawned the watcher, while it listens. Once it stopped listening
    /// (it finished, or was killed) there is nobody to tell: false.
    fn report(&self, report: &Report) -> bool {
        self.reporting
            && serde_json::to_string(report).is_ok_and(|line| {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
            })
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

/// The live process `id`, while it is that process.
fn live(id: ProcId) -> Result<process::Proc> {
    Processes::of(&[id.pid])?.find(&id).ok_or_else(|| anyhow!("PID {} is gone", id.pid))
}
