//! Launching a server: choose its id, name and port under the store lock, spawn its watcher
//! (which spawns the server), record both, and wait until it is healthy. Every failure after
//! the spawn ends what was spawned and removes the record (`Launch`'s `Drop`).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

use super::opencode;
use super::report::Report;
use super::spawn::{Plan, new_record, pick_port, port_taken};
use super::state::Held;
use super::workspace::Prepared;
use super::{log, stop};
use crate::error::{self, Failure, code};
use crate::home::Home;
use crate::hooks;
use crate::process::{self, MARKER_HOME, MARKER_ID, Processes, Signal};
use crate::record::{self, Record};

/// How often to look for the watcher's word and for Ctrl-C while waiting.
const POLL: Duration = Duration::from_millis(25);
/// How many times to spawn a server whose start failed in a way known to be transient.
const START_TRIES: u32 = 3;
const LOG_TAIL_LINES: usize = 15;
/// What opencode prints when it lost the race to migrate a fresh database (see `Transient`).
const DATABASE_RACE_SIGNS: [&str; 2] = ["Failed query", "database is locked"];

/// A server that started and answered its health check.
pub struct Started {
    pub record: Record,
    pub took: Duration,
}

/// Start one instance and wait until it is healthy. On any failure nothing is left behind:
/// no record, no process, no worktree. `index`: the instance's place (1-based) in a
/// `--count`, which suffixes its `--worktree BRANCH`.
pub fn start(home: &Home, plan: &Plan, name: Option<String>, index: Option<u32>) -> Result<Started> {
    let began = Instant::now();
    let deadline = began + plan.timeout;
    // A worktree (and its `--setup`, which may take minutes) is made before the store lock is
    // taken, for an id chosen and locked beforehand: gc leaves a locked instance's worktree alone.
    let early = if plan.worktree.is_some() || plan.isolate {
        let _store = home.lock_store()?;
        let entries = record::list(home)?;
        check_name_free(&record::valid(&entries), name.as_deref())?;
        let id = record::new_id(&taken_ids(&entries));
        let lock = home.lock_instance(&id, Duration::from_secs(1))?;
        Some((id, lock))
    } else {
        None
    };
    let prepared = match &early {
        Some((id, _)) => Some(Prepared::create(home, plan, id, name.as_deref(), index)?),
        None => None,
    };
    let make_record = |id: &str, port: u16| {
        let mut record = new_record(home, plan, id, name.clone(), port);
        if let Some(p) = &prepared {
            (record.dir, record.worktree, record.db) = (p.dir.clone(), p.worktree.clone(), p.db.clone());
        }
        record
    };
    // Choosing the id, name and port, spawning, and writing the record happen under the store
    // lock, so concurrent starts never pick the same ones and no record is ever half there.
    let mut launch = {
        let _store = home.lock_store()?;
        let entries = record::list(home)?;
        let records = record::valid(&entries);
        check_name_free(&records, name.as_deref())?;
        let taken = taken_ids(&entries);
        let (id, lock) = match early {
            Some((id, _)) if taken.contains(&id.as_str()) => {
                return Err(anyhow!("the id {id} was taken meanwhile; try again"));
            }
            Some(early) => early,
            None => {
                let id = record::new_id(&taken);
                let lock = home.lock_instance(&id, Duration::from_secs(1))?;
                (id, lock)
            }
        };
        let port = match plan.port {
            Some(port) if !process::port_is_free(&plan.hostname, port) => return Err(port_taken(&plan.hostname, port)),
            Some(port) => port,
            None => pick_port(&plan.hostname, &records)?,
        };
        let held = Held::create(home, make_record(&id, port), lock);
        let mut launch = Launch::new(home, held, true, plan.timeout);
        launch.spawn(deadline, false)?;
        launch
    };
    hooks::pause("start:waiting");

    let mut tries = 1;
    loop {
        match launch.wait_ready(deadline)? {
            Ok(version) => {
                hooks::fail("start:healthy")?;
                launch.held.healthy(version)?;
                let record = launch.finish();
                if let Some(prepared) = prepared {
                    prepared.finish();
                }
                return Ok(Started { record, took: began.elapsed() });
            }
            Err(status) => {
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
                        let id = launch.record().id.clone();
                        launch.held.plan(make_record(&id, port));
                    }
                    launch.spawn(deadline, false)?;
                    continue;
                }
                let port = launch.record().port;
                return Err(if plan.port.is_some() && !process::port_is_free(&plan.hostname, port) {
                    port_taken(&plan.hostname, port)
                } else {
                    launch.exited_error(&status)
                });
            }
        }
    }
}

/// An error if `name` is another instance's name or id.
fn check_name_free(records: &[Record], name: Option<&str>) -> Result<()> {
    if let Some(name) = name
        && records.iter().any(|r| r.name.as_deref() == Some(name) || r.id == *name)
    {
        return Err(anyhow!(
            Failure::new(code::FAILED, format!("an instance named {name:?} exists already"))
                .hint(format!("choose another --name, or stop that one first: ocx stop {name}"))
        ));
    }
    Ok(())
}

/// The names and ids a new id must differ from, also of records ocx cannot read.
fn taken_ids(entries: &[record::Entry]) -> Vec<&str> {
    let mut taken: Vec<&str> = entries
        .iter()
        .filter_map(|e| match e {
            record::Entry::Valid(r) => r.name.as_deref(),
            record::Entry::Invalid(_) => None,
        })
        .collect();
    taken.extend(entries.iter().map(|e| match e {
        record::Entry::Valid(r) => r.id.as_str(),
        record::Entry::Invalid(i) => i.id.as_str(),
    }));
    taken
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

/// One instance being started (or restarted) under its lock, through its watcher. Until
/// `finish`, dropping it (an error, a timeout, Ctrl-C, a panic) ends everything it spawned;
/// a new instance's record and lock file go too, an existing one is marked `failed`.
pub(super) struct Launch<'a> {
    home: &'a Home,
    /// The record being started, under the instance's lock: the watcher's plan, then with the
    /// server and watcher in it.
    pub(super) held: Held<'a>,
    /// True for a new instance, false for a restart of an existing one.
    fresh: bool,
    /// The watcher spawned last; earlier ones have exited and were reaped.
    watcher: Option<Child>,
    reports: Option<Receiver<Report>>,
    /// Where the last spawn's output starts in the log.
    log_offset: u64,
    /// How long the server may take to become healthy (for the message when it did not).
    timeout: Duration,
    finished: bool,
}

impl<'a> Launch<'a> {
    pub(super) fn new(home: &'a Home, held: Held<'a>, fresh: bool, timeout: Duration) -> Self {
        Launch { home, held, fresh, watcher: None, reports: None, log_offset: 0, timeout, finished: false }
    }

    pub(super) fn record(&self) -> &Record {
        self.held.record()
    }

    /// Spawn a watcher for the record, which spawns the server; record both (`restart`: one
    /// more restart). The caller holds the store lock for a new instance.
    pub(super) fn spawn(&mut self, deadline: Instant, restart: bool) -> Result<()> {
        if let Some(mut old) = self.watcher.take() {
            let _ = old.wait();
        }
        let record = self.record().clone();
        self.log_offset = std::fs::metadata(&record.log).map_or(0, |m| m.len());
        let exe = std::env::current_exe().context("cannot find the ocx binary to run the watcher")?;
        let mut cmd = Command::new(&exe);
        // The watcher lives for days: it must not keep the directory ocx was started in busy.
        cmd.args(["__watch", &record.id])
            .current_dir(std::path::Path::new("/"))
            .env(MARKER_ID, &record.id)
            .env(MARKER_HOME, self.home.root())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        process::detach(&mut cmd);
        hooks::pause("start:before-spawn");
        let mut watcher =
            process::spawn(&mut cmd).with_context(|| format!("cannot run the watcher {}", exe.display()))?;
        let (stdin, stdout) = (watcher.stdin.take(), watcher.stdout.take());
        let wpid = watcher.id();
        self.watcher = Some(watcher);
        hooks::fail("start:spawned")?;
        let mut plan = serde_json::to_vec(&record)?;
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
                Err(RecvTimeoutError::Timeout) => return Err(self.timed_out_error()),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(anyhow!("the watcher exited before it started the server"));
                }
            }
        };
        self.reports = Some(reports);
        let watcher = Processes::of(&[wpid])?.get(wpid).map(|p| p.id());
        hooks::pause("start:after-spawn");
        hooks::fail("start:record")?;
        self.held.spawned(server, watcher, restart)
    }

    /// Wait for the watcher's word: healthy (with the server's version), or exited (how); an
    /// error for a failure, `deadline`, or Ctrl-C (and SIGTERM, SIGHUP).
    pub(super) fn wait_ready(&mut self, deadline: Instant) -> Result<Result<Option<String>, String>> {
        let Some(reports) = &self.reports else { return Ok(Err("not started".into())) };
        loop {
            if process::interrupted() {
                return Err(error::interrupted("interrupted; stopped the server being started"));
            }
            if Instant::now() >= deadline {
                return Err(self.timed_out_error());
            }
            match reports.recv_timeout(POLL) {
                Ok(Report::Ready { version }) => {
                    if let Some(version) = &version {
                        opencode::check_supported(version, "its health check says")?;
                    }
                    return Ok(Ok(version));
                }
                Ok(Report::Exited { status }) => return Ok(Err(status)),
                Ok(Report::Failed { error }) => return Err(anyhow!(Failure::new(code::FAILED, error))),
                Ok(Report::Spawned(_)) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(Err("its watcher exited".into())),
            }
        }
    }

    pub(super) fn exited_error(&self, status: &str) -> anyhow::Error {
        anyhow!(
            Failure::new(
                code::FAILED,
                format!(
                    "opencode exited ({status}) before it became healthy; the end of its log:\n{}",
                    self.log_tail()
                )
            )
            .hint(format!("the whole log: ocx logs {}", self.record().id))
        )
    }

    fn timed_out_error(&self) -> anyhow::Error {
        let secs = self.timeout.as_secs_f64();
        anyhow!(
            Failure::new(code::TIMED_OUT, format!("opencode did not become healthy within {secs}s; stopped it")).hint(
                format!(
                    "start-up can take 20 s with many plugins: raise --timeout; the log: ocx logs {}",
                    self.record().id
                )
            )
        )
    }

    /// Why the exited server failed, if another try would fix it.
    fn transient_failure(&self, plan: &Plan) -> Option<Transient> {
        if plan.port.is_none() && !process::port_is_free(&plan.hostname, self.record().port) {
            return Some(Transient::PortTaken);
        }
        let log = self.new_log();
        DATABASE_RACE_SIGNS.iter().any(|sign| log.contains(sign)).then_some(Transient::DatabaseRace)
    }

    /// What the last spawn wrote to the log so far, without the times of its lines.
    fn new_log(&self) -> String {
        let mut bytes = Vec::new();
        if let Ok(mut file) = File::open(&self.record().log) {
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
        let text = strip_ansi_escapes::strip_str(self.new_log());
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
    pub(super) fn finish(mut self) -> Record {
        self.finished = true;
        self.record().clone()
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
        stop::end_marked(self.home, &self.record().id);
        if self.fresh {
            let _ = self.held.discard();
        } else {
            let _ = self.held.failed("the restart did not complete; see `ocx logs`".to_string(), None);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ansi_codes_are_stripped() {
        assert_eq!(strip_ansi_escapes::strip_str("\u{1b}[31mError\u{1b}[0m: x"), "Error: x");
    }
}
