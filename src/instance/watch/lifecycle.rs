//! The watcher's part in its server's life: spawning it, ending it (to restart it, or on a stop
//! request), and what happens when it exits — record the exit, then restart it per the policy.
//! Every decision is taken under the instance's lock from the record on disk (`Held`).

use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::notify::Alert;
use super::policy::{DRAIN, END_GRACE, GIVE_UP_AFTER, STABLE, backoff, exit_reason};
use super::{Event, Next, Server, Watcher, live, output};
use crate::hooks;
use crate::instance::report::Report;
use crate::instance::{spawn, stop};
use crate::output as fmt;
use crate::process::{self, ProcId, Processes, Signal};
use crate::record::{Exit, Record, RestartPolicy};

impl Watcher<'_> {
    /// Spawn the server as `record` describes it, with its output coming to the log. If any
    /// step after the spawn fails, the server just spawned is ended and reaped: no unrecorded
    /// server is ever left holding the port.
    pub(super) fn spawn(&mut self, record: &Record) -> Result<()> {
        let mut cmd: Command = spawn::server_command(self.home, record);
        let (reader, writer) = std::io::pipe().context("cannot make the log pipe")?;
        cmd.stdin(Stdio::null()).stdout(writer.try_clone()?).stderr(writer);
        process::new_session(&mut cmd);
        self.log_line(&format!(
            "--- ocx: {} starting: {} {}",
            record.id,
            record.opencode.path.display(),
            record.args.join(" ")
        ));
        let mut child =
            process::spawn(&mut cmd).with_context(|| format!("cannot run {}", record.opencode.path.display()))?;
        // Our copies of the pipe's write end must go, or its reader never sees the end.
        drop(cmd);
        let tree = process::contain(&child);
        let pid = child.id();
        let spawn = self.spawns + 1;
        let ready = (|| -> Result<ProcId> {
            hooks::fail(if spawn == 1 { "watch:spawned" } else { "watch:respawned" })?;
            let id = Processes::of(&[pid])?.get(pid).map(|p| p.id()).unwrap_or(ProcId {
                pid,
                started_at: fmt::now_secs(),
                start_key: None,
            });
            output::copy_output(reader, spawn, self.log.clone(), self.tx.clone())?;
            Ok(id)
        })();
        let id = match ready {
            Ok(id) => id,
            Err(err) => {
                // Our own child, not reaped yet: its PID is still its own.
                process::signal_child(&child, Signal::Kill);
                let _ = child.wait();
                tree.end();
                return Err(err);
            }
        };
        self.spawns = spawn;
        self.reaper.watch(child);
        self.server = Some(Server {
            spawn,
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
        self.waiting_for_idle = false;
        self.unresponsive_since = None;
        self.next_probe = Instant::now();
        self.report(&Report::Spawned(id));
        Ok(())
    }

    /// Ask the server to exit (TERM now, KILL after a grace), to restart it for `reason`.
    pub(super) fn end_server(&mut self, reason: &'static str, why: &str) {
        if self.server.as_ref().is_none_or(|s| s.ending.is_some()) {
            return;
        }
        // The restart is recorded as due before the server goes, so that nobody (gc, `ocx run`)
        // takes the instance for dead meanwhile, whatever its `--restart`.
        match self.hold() {
            Ok(Some(mut held)) => {
                if let Err(err) = held.exited(None, Some(Duration::ZERO)) {
                    self.note(&format!("error: {err:#}"));
                }
                self.record = held.record().clone();
            }
            // A stop is under way: it ends the server.
            Ok(None) => return,
            Err(err) => self.note(&format!("error: {err:#}")),
        }
        let Some(server) = self.server.as_mut() else { return };
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
    pub(super) fn end_server_now(&mut self) {
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

    /// The server exited: record it (and the restart, if one is due: at once included) under
    /// the lock first, so that nobody takes the instance for abandoned meanwhile; then let the
    /// rest of its output arrive; say whether (and when) to start it again.
    pub(super) fn on_exit(&mut self, status: ExitStatus) -> Result<Next> {
        self.stop_following();
        let server = self.server.take().expect("on_exit is called for the running server");
        let uptime = server.spawned_at.elapsed();
        let (code, signal) = (status.code(), process::exit_signal(&status));
        let ended_by_us = server.ending.map(|(reason, _)| reason);
        let reason = ended_by_us.unwrap_or_else(|| exit_reason(code, signal.as_deref()));
        let exit = Exit {
            code,
            signal,
            at: fmt::rfc3339_in(Duration::ZERO),
            uptime_s: uptime.as_secs(),
            reason: reason.to_string(),
        };
        if self.reporting {
            // Not healthy yet: the ocx starting it decides (it may try again); nothing restarts.
            self.drain(&server);
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

        let what = format!("the server exited ({}, up {})", exit.status(), fmt::duration(uptime));
        let (next, line) = {
            let Some(mut held) = self.hold()? else { return Ok(Next::Done) };
            let policy = serde_json::to_value(held.record().restart_policy)?;
            let decided = if !restart {
                held.exited(Some(exit), None)?;
                (Next::Done, format!("--- ocx: {what}; not restarted (--restart {})", policy.as_str().unwrap_or("")))
            } else if self.unstable >= GIVE_UP_AFTER {
                let why = format!("gave up after {} unstable exits in a row (the last: {what})", self.unstable);
                held.failed(why.clone(), Some(exit))?;
                self.alert(Alert::Failed, "", &why);
                (Next::Done, format!("--- ocx: {why}"))
            } else {
                let delay = backoff(self.unstable);
                held.exited(Some(exit), Some(delay))?;
                let when = if delay.is_zero() { "at once".to_string() } else { format!("in {}", fmt::duration(delay)) };
                (Next::Restart(delay), format!("--- ocx: {what}; restarting {when}"))
            };
            self.record = held.record().clone();
            decided
        };
        self.drain(&server);
        self.log_line(&line);
        server.tree.end();
        Ok(next)
    }

    /// Let the rest of an exited server's output reach the log (for a moment at most: a child
    /// that inherited the pipe may hold it open).
    fn drain(&mut self, server: &Server) {
        if server.output_open {
            let spawn = server.spawn;
            self.wait_for(DRAIN, |e| matches!(e, Event::OutputClosed(n) if *n == spawn));
        }
    }

    /// End what the dead server left behind, wait `delay`, and start it again. False when the
    /// watcher should exit instead (a stop, a failure).
    pub(super) fn restart_after(&mut self, mut delay: Duration) -> Result<bool> {
        hooks::pause("watch:restart");
        // The agent's commands of the dead server must not run on next to the new one.
        stop::end_marked(self.home, &self.record.id);
        loop {
            self.wait_for(delay, |_| false);
            if self.stop_requested {
                return Ok(false);
            }
            let Some(mut held) = self.hold()? else { return Ok(false) };
            let record = held.record().clone();
            if !process::port_is_free(&record.hostname, record.port) {
                // Someone took the port meanwhile: wait for it, never move silently.
                self.unstable += 1;
                let by = process::port_owner(record.port).map(|o| format!(" by {o}")).unwrap_or_default();
                let what = format!("port {} taken{by}", record.port);
                if self.unstable >= GIVE_UP_AFTER {
                    self.log_line(&format!("--- ocx: {what}; gave up"));
                    self.alert(Alert::Failed, "", &what);
                    held.failed(what, None)?;
                    return Ok(false);
                }
                delay = backoff(self.unstable);
                self.log_line(&format!("--- ocx: {what}; trying again in {}", fmt::duration(delay)));
                held.exited(None, Some(delay))?;
                self.record = held.record().clone();
                continue;
            }
            let last = record.last_exit.as_ref().map_or("an exit".to_string(), |e| {
                format!("{} (up {})", e.status(), fmt::duration(Duration::from_secs(e.uptime_s)))
            });
            if let Err(err) = self.spawn(&record) {
                let why = format!("cannot restart: {err:#}");
                self.log_line(&format!("--- ocx: {why}"));
                self.alert(Alert::Failed, "", &why);
                held.failed(why, None)?;
                return Ok(false);
            }
            let server = self.server.as_ref().expect("just spawned").id;
            // Until it is healthy again (`healthy` writes `running`). A server that cannot be
            // recorded is ended: none runs unrecorded, holding the port.
            if let Err(err) = held.spawned(server, None, true) {
                self.end_server_now();
                let why = format!("cannot record the restarted server: {err:#}");
                self.log_line(&format!("--- ocx: {why}"));
                held.failed(why, None)?;
                return Ok(false);
            }
            self.log_line(&format!("--- ocx: restart {} after {last}", held.record().restarts));
            self.record = held.record().clone();
            let why = self
                .record
                .last_exit
                .as_ref()
                .map_or("an exit".to_string(), |e| format!("{} ({})", e.reason, e.status()));
            self.alert(Alert::Restarted, "", &why);
            return Ok(true);
        }
    }
}
