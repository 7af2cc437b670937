//! What the watcher makes of what it sees: the instance's observation (`instance::status`,
//! written when it changes, at most a few times a second, and at every probe), the question
//! policy (`--permission` / `--ask-timeout`: an answer for what no client answered in time),
//! and the alerts (`--notify`).

use std::time::{Duration, Instant, SystemTime};

use super::notify::Alert;
use super::probe::{post, probe};
use super::stream::Seen;
use super::{Watcher, stream};
use crate::instance::status::{self, Answered, Pending};
use crate::output;

/// The observation is written at most this often while things change.
const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// How long one request of the watcher's own may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Session titles kept for alerts (a busy server makes many sessions).
const TITLES_KEPT: usize = 512;

impl Watcher<'_> {
    /// The server just became healthy: follow its events from now on.
    pub(super) fn start_following(&mut self, version: Option<String>) {
        let Some(server) = self.server.as_ref() else { return };
        self.current_spawn.store(server.spawn, std::sync::atomic::Ordering::SeqCst);
        self.observation = status::Observation::new(server.id.pid);
        self.observation.healthy = true;
        self.observation.healthy_since = Some(output::rfc3339_in(Duration::ZERO));
        self.observation.version = version;
        stream::follow(&self.record.url, &self.auth, server.spawn, self.current_spawn.clone(), self.tx.clone());
        self.flush(true);
    }

    /// Something the event stream of spawn `spawn` showed.
    pub(super) fn on_seen(&mut self, spawn: u64, seen: Seen) {
        if self.server.as_ref().is_none_or(|s| s.spawn != spawn) {
            return;
        }
        let now = output::rfc3339_in(Duration::ZERO);
        let o = &mut self.observation;
        match seen {
            Seen::Up => {
                o.stream = true;
                self.catch_up();
            }
            Seen::Down => o.stream = false,
            Seen::Status { session, status } if status == "idle" => {
                o.pending.retain(|p| p.session != session);
                if o.busy.remove(&session).is_some() {
                    self.alert(Alert::Idle, &session, "");
                }
            }
            Seen::Status { session, status } => {
                o.busy.insert(session, status);
            }
            Seen::Asked { id, kind, session, what } => {
                let first = !o.pending.iter().any(|p| p.session == session);
                if !o.pending.iter().any(|p| p.id == id) {
                    o.pending.push(Pending {
                        id,
                        kind: kind.into(),
                        session: session.clone(),
                        what: what.clone(),
                        asked_at: now.clone(),
                    });
                }
                if first {
                    self.alert(Alert::Asking, &session, &what);
                }
            }
            Seen::Replied { id } => o.pending.retain(|p| p.id != id),
            Seen::Title { session, title } => {
                if self.titles.len() >= TITLES_KEPT {
                    self.titles.clear();
                }
                self.titles.insert(session, title);
            }
            Seen::Error { session, message } => self.alert(Alert::Error, &session, &message),
        }
        self.observation.last_event_at = Some(now);
        self.dirty = true;
    }

    /// The stream is (back) up: what it missed meanwhile is read afresh (busy sessions, and
    /// the requests waiting for an answer).
    fn catch_up(&mut self) {
        let get = |path: &str| {
            probe(&self.record, &self.auth, path, REQUEST_TIMEOUT)
                .filter(|(status, _)| *status == 200)
                .and_then(|(_, body)| serde_json::from_slice::<serde_json::Value>(&body).ok())
        };
        if let Some(serde_json::Value::Object(busy)) = get("/session/status") {
            self.observation.busy = busy
                .into_iter()
                .map(|(session, s)| (session, s["type"].as_str().unwrap_or("busy").to_string()))
                .collect();
        }
        let now = output::rfc3339_in(Duration::ZERO);
        for (path, kind) in [("/permission", "permission"), ("/question", "question")] {
            for request in get(path).and_then(|v| v.as_array().cloned()).unwrap_or_default() {
                let (Some(id), Some(session)) = (request["id"].as_str(), request["sessionID"].as_str()) else {
                    continue;
                };
                if self.observation.pending.iter().any(|p| p.id == id) {
                    continue;
                }
                let what = match kind {
                    "permission" => format!(
                        "{} ({})",
                        request["permission"].as_str().unwrap_or("?"),
                        request["patterns"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|p| p.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    _ => request["questions"][0]["question"].as_str().unwrap_or("?").to_string(),
                };
                self.observation.pending.push(Pending {
                    id: id.into(),
                    kind: kind.into(),
                    session: session.into(),
                    what,
                    asked_at: now.clone(),
                });
            }
        }
    }

    /// The server is gone (it exited): nothing of it is observed any more.
    pub(super) fn stop_following(&mut self) {
        self.current_spawn.store(0, std::sync::atomic::Ordering::SeqCst);
        self.observation.healthy = false;
        self.observation.stream = false;
        self.observation.busy.clear();
        self.observation.pending.clear();
        self.flush(true);
    }

    /// A probe's result (healthy or not, resident memory): always written, so that `ls` can
    /// tell a live observation from a stale one.
    pub(super) fn probed(&mut self, healthy: bool, rss: Option<u64>) {
        self.observation.healthy = healthy;
        self.observation.rss_bytes = rss.or(self.observation.rss_bytes);
        self.flush(true);
        // What the last events needed (the parser) is not needed while the server idles.
        crate::process::shed_code_pages();
    }

    /// Write the observation if it changed (at most every `FLUSH_EVERY`), or now if `force`.
    pub(super) fn flush(&mut self, force: bool) {
        if !(force || (self.dirty && self.last_flush.elapsed() >= FLUSH_EVERY)) || self.observation.pid == 0 {
            return;
        }
        self.observation.updated_at = output::rfc3339_in(Duration::ZERO);
        if let Err(err) = status::write(self.home, &self.record.id, &self.observation) {
            self.note(&format!("cannot write the observation: {err:#}"));
        }
        self.dirty = false;
        self.last_flush = Instant::now();
    }

    /// When the watcher must wake for its eyes: to write a changed observation, to answer
    /// what waited too long, to end an alert that ran too long.
    pub(super) fn eyes_wake(&self) -> Option<Instant> {
        let flush = self.dirty.then(|| self.last_flush + FLUSH_EVERY);
        let answer = self.ask_timeout().and_then(|timeout| {
            self.observation
                .pending
                .iter()
                .filter_map(|p| humantime::parse_rfc3339(&p.asked_at).ok())
                .min()
                .map(|at| Instant::now() + (at + timeout).duration_since(SystemTime::now()).unwrap_or_default())
        });
        [flush, answer, self.alerts.next_deadline()].into_iter().flatten().min()
    }

    /// On a wake: write, answer, end what is due.
    pub(super) fn eyes_timer(&mut self) {
        self.answer_overdue();
        self.alerts.end_overdue();
        self.flush(false);
    }

    fn ask_timeout(&self) -> Option<Duration> {
        let s = &self.record.supervision;
        s.permission.as_ref().and(s.ask_timeout_s).map(Duration::from_secs)
    }

    /// Answer, per `--permission`, every request no client answered within `--ask-timeout`,
    /// whoever sent the prompt; say so in the log and in the observation.
    fn answer_overdue(&mut self) {
        let (Some(timeout), Some(policy)) = (self.ask_timeout(), self.record.supervision.permission.clone()) else {
            return;
        };
        let now = SystemTime::now();
        let due: Vec<Pending> = self
            .observation
            .pending
            .iter()
            .filter(|p| humantime::parse_rfc3339(&p.asked_at).is_ok_and(|at| at + timeout <= now))
            .cloned()
            .collect();
        for p in due {
            let (path, body, reply) = match (p.kind.as_str(), policy.as_str()) {
                ("permission", "allow") => (format!("/permission/{}/reply", p.id), r#"{"reply":"once"}"#, "once"),
                ("permission", _) => (format!("/permission/{}/reply", p.id), r#"{"reply":"reject"}"#, "reject"),
                _ => (format!("/question/{}/reject", p.id), "{}", "dismissed"),
            };
            let answered = post(&self.record, &self.auth, &path, body, REQUEST_TIMEOUT).is_some_and(|(s, _)| s < 300);
            self.observation.pending.retain(|q| q.id != p.id);
            if !answered {
                continue;
            }
            let secs = timeout.as_secs();
            self.log_line(&format!(
                "--- ocx: the watcher answered {} {} of session {}: {reply} (no client answered within {secs}s)",
                p.kind, p.what, p.session
            ));
            self.observation.answered(Answered {
                at: output::rfc3339_in(Duration::ZERO),
                kind: p.kind,
                session: p.session,
                what: p.what,
                reply: reply.into(),
            });
            self.dirty = true;
        }
    }

    /// Run the `--notify` command for `alert` (never waiting for it).
    pub(super) fn alert(&mut self, alert: Alert, session: &str, detail: &str) {
        let title = self.titles.get(session).cloned().unwrap_or_default();
        self.alerts.fire(&self.reaper, &self.record, alert, session, &title, detail);
    }
}
