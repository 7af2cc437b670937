//! Following one turn of a session (a prompt and its answer) on a server: print the answer as
//! it streams (text, or `opencode run --format json`'s lines), answer what the server asks
//! meanwhile (permission requests, the agent's questions) so it never hangs, and survive a
//! dropped event stream. `ocx run` sends a prompt and follows it; `ocx wait` follows the turn a
//! session is on (or shows its last one).
//!
//! Here the turn and its loop; `stream` follows the event stream (and gets it back when it
//! drops or goes silent), `answer` answers the server's requests, `print` prints, `stop` ends
//! a turn early (Ctrl-C, the deadline, an abort seen through), `body` builds a prompt's
//! request. Whether the server is still running the turn learns from its caller (`Liveness`).

mod answer;
mod body;
mod print;
mod stop;
mod stream;

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use serde_json::{Value, json};

use crate::error::{Failure, code};
use crate::events::{Event, Part, Status};
use crate::output;
use crate::server::Client;
use answer::Answerer;
use print::Printer;
use stop::interruption;
use stream::Stream;

pub use body::{Prompt, default_title, split_model};

/// How long to wait for the server to confirm a subscription, or an abort.
const SETTLE: Duration = Duration::from_secs(5);
/// How often a wait looks up from what it waits for to see whether Ctrl-C or the deadline came.
const POLL: Duration = Duration::from_millis(100);

/// How the answer is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The text as it streams on stdout; tool calls, permissions and retries on stderr.
    Text,
    /// One JSON object per line, as `opencode run --format json` prints them.
    Json,
    /// Nothing printed, not even notes: the caller reads the stored answer (`ocx batch`).
    Silent,
}

/// What ocx answers when the server asks for permission to run a tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permissions {
    /// No, as `opencode run` does; the agent's question tool is dismissed too.
    Reject,
    /// Yes, once each time.
    Allow,
    /// Ask the user at the terminal, each time.
    Ask,
}

/// How a turn is followed.
pub struct Options {
    pub format: Format,
    /// Give up after the server retried a failing model this many times.
    pub retries: Option<u32>,
    /// `--timeout`: then the prompt is aborted on the server (exit 4), whatever ocx is doing.
    pub deadline: Option<Instant>,
    pub permissions: Permissions,
}

/// What became of the server, asked when its event stream dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Still running (or not the caller's to look at, such as another host's): get the stream back.
    Alive,
    /// Its process is gone.
    Gone,
    /// Its process is gone and its watcher started a new one; the answer went with the old one.
    Restarted,
}

/// How a turn learns whether the server it follows still runs, and how it names it: the caller
/// knows the instance (its record, its processes), the turn only talks to the server.
pub trait Liveness {
    /// Asked each time the turn tries to get a dropped event stream back.
    fn fate(&self) -> Result<Fate>;
    /// The instance as messages name it.
    fn label(&self) -> &str;
    /// The instance's id, for `ocx logs ID`.
    fn id(&self) -> &str;
}

/// Whether the session's latest prompt has a finished reply (or failed), from its messages.
/// Stored messages are shared by every server of a user (one database); a reply's `completed`
/// time is set when its step ends.
pub fn last_reply_finished(messages: &[Value]) -> bool {
    let Some(prompt) = messages.iter().rev().find(|m| m["info"]["role"] == "user") else { return true };
    let prompt_id = prompt["info"]["id"].as_str();
    messages
        .iter()
        .rev()
        .find(|m| m["info"]["role"] == "assistant" && m["info"]["parentID"].as_str() == prompt_id)
        .is_some_and(|reply| !reply["info"]["time"]["completed"].is_null() || !reply["info"]["error"].is_null())
}

/// What an event meant for the turn.
#[derive(PartialEq)]
enum Step {
    Continue,
    Done,
}

/// One turn of a session, followed.
pub struct Turn<'a> {
    client: &'a Client,
    server: &'a dyn Liveness,
    pub session: String,
    options: Options,
    /// This session and the sessions it started (subagents), whose requests are answered too.
    sessions: HashSet<String>,
    /// Role of every message of this session seen so far, by id.
    roles: HashMap<String, String>,
    /// The user message the turn answers.
    prompt_message: Option<String>,
    printer: Printer,
    answerer: Answerer,
    /// The error the session ended with, if any.
    error: Option<String>,
    /// Set once ocx asked the server to abort, so the abort's own error is not reported.
    aborting: bool,
    /// The server works on the turn and nothing said it finished: if ocx leaves now, it aborts it.
    in_flight: bool,
    /// The turn failed because its server's process went away (and maybe came back).
    server_lost: bool,
    warned_about_events: bool,
}

impl<'a> Turn<'a> {
    /// A turn of `session` on the server `client` talks to; `server` says whether it still runs.
    pub fn new(client: &'a Client, session: String, options: Options, server: &'a dyn Liveness) -> Self {
        Turn {
            client,
            server,
            sessions: HashSet::from([session.clone()]),
            printer: Printer::new(options.format, &session),
            answerer: Answerer::new(options.permissions, options.deadline),
            session,
            options,
            roles: HashMap::new(),
            prompt_message: None,
            error: None,
            aborting: false,
            in_flight: false,
            server_lost: false,
            warned_about_events: false,
        }
    }

    /// Send `body` as the session's next prompt and follow it until the session is idle.
    pub fn prompt(&mut self, body: &Value) -> Result<()> {
        let events = self.subscribe()?;
        self.in_flight = true;
        self.client.prompt_async(&self.session, body)?;
        self.follow_events(events)
    }

    /// Follow the turn the session is on until it is idle, printing what it answered so far
    /// first; a session that is idle already shows its last turn.
    pub fn follow(&mut self, abort_on_exit: bool) -> Result<()> {
        let events = self.subscribe()?;
        self.subagents()?;
        let busy = self.resync();
        self.check_interruptions(Some(&events))?;
        match busy? {
            true => {
                self.in_flight = abort_on_exit;
                self.follow_events(events)
            }
            false => self.outcome(),
        }
    }

    fn follow_events(&mut self, mut events: Stream) -> Result<()> {
        loop {
            match events.recv_timeout(POLL) {
                Ok(Some(event)) => {
                    if self.handle(&event)? == Step::Done {
                        self.in_flight = false;
                        break;
                    }
                }
                Ok(None) | Err(RecvTimeoutError::Disconnected) => match self.reconnect()? {
                    Some(again) => events = again,
                    None => {
                        self.in_flight = false;
                        break;
                    }
                },
                Err(RecvTimeoutError::Timeout) => {}
            }
            self.check_interruptions(Some(&events))?;
        }
        // The turn is over: what is stored is final. An update the stream carried before ocx
        // subscribed (while the stored text was still empty) is printed from it now.
        if !self.aborting {
            let messages = self.client.last_turn(&self.session)?;
            self.catch_up(&messages)?;
        }
        self.outcome()
    }

    fn outcome(&mut self) -> Result<()> {
        match self.error.take() {
            Some(message) => Err(anyhow!(Failure::new(code::FAILED, format!("the model failed: {message}")))),
            None => Ok(()),
        }
    }

    fn handle(&mut self, raw: &Value) -> Result<Step> {
        let event = match Event::parse(raw) {
            Ok(event) => event,
            Err(err) => {
                if !std::mem::replace(&mut self.warned_about_events, true) && self.options.format != Format::Silent {
                    output::note(format_args!(
                        "warning: ocx does not understand a {} event of this server ({err}); the answer may be incomplete",
                        raw["type"]
                    ));
                }
                return Ok(Step::Continue);
            }
        };
        if let Event::SessionCreated { info } | Event::SessionUpdated { info } = &event
            && info.parent.as_ref().is_some_and(|p| self.sessions.contains(p))
        {
            self.sessions.insert(info.id.clone());
        }
        let Some(session) = event.session() else { return Ok(Step::Continue) };
        if !self.sessions.contains(session) {
            return Ok(Step::Continue);
        }
        let ours = session == self.session;
        let properties = &raw["properties"];
        match event {
            Event::PermissionAsked(request) => {
                self.answerer.permission(self.client, &mut self.printer, &request, properties)?
            }
            Event::QuestionAsked(question) => {
                self.answerer.question(self.client, &mut self.printer, &question, properties)?
            }
            _ if !ours => {}
            Event::MessageUpdated { info } => {
                if info.role == "user" && self.prompt_message.is_none() {
                    self.prompt_message = Some(info.id.clone());
                }
                self.roles.insert(info.id, info.role);
            }
            Event::PartUpdated { part } => self.part(&part, &properties["part"], true)?,
            Event::PartDelta { message, part, field, delta, .. }
                if field == "text" && self.roles.get(&message).is_some_and(|r| r == "assistant") =>
            {
                self.printer.delta(&part, &delta)?
            }
            Event::SessionStatus { status, .. } => return self.status(status),
            Event::SessionError { error: Some(error), .. }
                if !(self.aborting && error.name == "MessageAbortedError") =>
            {
                self.printer.json_line("error", json!({"error": properties["error"]}))?;
                self.error = Some(error.message());
            }
            Event::SessionIdle { .. } => return Ok(Step::Done),
            _ => {}
        }
        Ok(Step::Continue)
    }

    fn status(&mut self, status: Status) -> Result<Step> {
        match status {
            Status::Idle => Ok(Step::Done),
            Status::Retry { attempt, message, next } => {
                let message = if message.is_empty() { "the model failed".to_string() } else { message };
                if self.options.retries.is_some_and(|limit| attempt > u64::from(limit)) {
                    self.error = Some(message);
                    self.aborting = true;
                    self.in_flight = false;
                    let _ = self.client.abort(&self.session);
                    return Ok(Step::Done);
                }
                let next = next
                    .map(|next| next.saturating_sub(now_ms()))
                    .map(|ms| format!("; next try in {:.0}s", ms as f64 / 1000.0))
                    .unwrap_or_default();
                self.printer.note(&format!("retry {attempt}: {message}{next}"));
                Ok(Step::Continue)
            }
            Status::Busy => Ok(Step::Continue),
        }
    }

    /// A part of this turn's answer changed (`live`), or was read from the messages.
    fn part(&mut self, part: &Part, raw: &Value, live: bool) -> Result<()> {
        if self.roles.get(&part.ids.message).is_none_or(|r| r != "assistant") {
            return Ok(());
        }
        self.printer.part(part, raw, live)
    }

    /// Whether the turn failed because its server's process went away: the watcher may have
    /// brought it back, and the prompt is then worth sending again.
    pub fn server_lost(&self) -> bool {
        self.server_lost
    }

    /// End the answer's last line.
    pub fn finish_output(&mut self) -> std::io::Result<()> {
        self.printer.end_line()
    }
}

/// A tool's input in a few words: a bash command as is, anything else as compact JSON.
pub fn short_input(input: &Value) -> String {
    let text = match input["command"].as_str() {
        Some(command) => command.to_string(),
        None => input.to_string(),
    };
    crate::output::cut(text.lines().next().unwrap_or(""), 80)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_inputs() {
        assert_eq!(short_input(&json!({"command": "sleep 1\nmore"})), "sleep 1");
        assert_eq!(short_input(&json!({"path": "a"})), r#"{"path":"a"}"#);
    }
}
