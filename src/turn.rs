//! Following one turn of a session (a prompt and its answer) on a server: print the answer as
//! it streams (text, or `opencode run --format json`'s lines), answer what the server asks
//! meanwhile (permission requests, the agent's questions) so it never hangs, and survive a
//! dropped event stream. `ocx run` sends a prompt and follows it; `ocx wait` follows the turn a
//! session is on (or shows its last one).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, IsTerminal};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use serde_json::{Value, json};

use crate::error::{Failure, code};
use crate::events::{Event, Part, PartKind, Permission, Question, Status};
use crate::home::Home;
use crate::instance;
use crate::output;
use crate::process;
use crate::record::{self, Record};
use crate::server::{Client, Events};

/// Waits between attempts to get the event stream back (about 8 s in all).
const RECONNECT_DELAYS_MS: [u64; 6] = [100, 300, 600, 1000, 2000, 4000];
/// How long to wait for the server to confirm a subscription, or an abort.
const SETTLE: Duration = Duration::from_secs(5);

/// How the answer is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The text as it streams on stdout; tool calls, permissions and retries on stderr.
    Text,
    /// One JSON object per line, as `opencode run --format json` prints them.
    Json,
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

pub struct Options {
    pub format: Format,
    /// Give up after the server retried a failing model this many times.
    pub retries: Option<u32>,
    pub deadline: Option<Instant>,
    pub permissions: Permissions,
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
    home: &'a Home,
    client: &'a Client,
    record: &'a Record,
    pub session: String,
    options: Options,
    /// This session and the sessions it started (subagents), whose requests are answered too.
    sessions: HashSet<String>,
    /// Role of every message of this session seen so far, by id.
    roles: HashMap<String, String>,
    /// The user message the turn answers.
    prompt_message: Option<String>,
    /// The text of each text part printed so far.
    printed: HashMap<String, String>,
    /// Text parts followed from their start on the live stream: their deltas can be printed.
    in_sync: HashSet<String>,
    /// Parts already reported (tool lines, JSON lines).
    reported: HashSet<String>,
    /// Permission and question requests already answered.
    answered: HashSet<String>,
    last_text_part: Option<String>,
    at_line_start: bool,
    stdout_is_terminal: bool,
    /// Lines typed at the terminal, for `--permission ask` (read on a thread of its own).
    typed: Option<Receiver<String>>,
    /// The error the session ended with, if any.
    error: Option<String>,
    /// Set once ocx asked the server to abort, so the abort's own error is not reported.
    aborting: bool,
    /// The server works on the turn and nothing said it finished: if ocx leaves now, it aborts it.
    in_flight: bool,
    warned_about_events: bool,
}

impl<'a> Turn<'a> {
    pub fn new(home: &'a Home, client: &'a Client, record: &'a Record, session: String, options: Options) -> Self {
        Turn {
            home,
            client,
            record,
            sessions: HashSet::from([session.clone()]),
            session,
            options,
            roles: HashMap::new(),
            prompt_message: None,
            printed: HashMap::new(),
            in_sync: HashSet::new(),
            reported: HashSet::new(),
            answered: HashSet::new(),
            last_text_part: None,
            at_line_start: true,
            stdout_is_terminal: std::io::stdout().is_terminal(),
            typed: None,
            error: None,
            aborting: false,
            in_flight: false,
            warned_about_events: false,
        }
    }

    /// Send `body` as the session's next prompt and follow it until the session is idle.
    pub fn prompt(&mut self, body: &Value) -> Result<()> {
        let events = self.subscribe().context("cannot subscribe to the server's events")?;
        self.in_flight = true;
        self.client.prompt_async(&self.session, body)?;
        self.follow_events(events)
    }

    /// Follow the turn the session is on until it is idle, printing what it answered so far
    /// first; a session that is idle already shows its last turn.
    pub fn follow(&mut self, abort_on_exit: bool) -> Result<()> {
        let events = self.subscribe().context("cannot subscribe to the server's events")?;
        self.subagents()?;
        match self.resync()? {
            true => {
                self.in_flight = abort_on_exit;
                self.follow_events(events)
            }
            false => self.outcome(),
        }
    }

    fn follow_events(&mut self, mut events: Receiver<Option<Value>>) -> Result<()> {
        loop {
            match events.recv_timeout(Duration::from_millis(100)) {
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
            self.check_interruptions(&events)?;
        }
        // The turn is over: what is stored is final. An update the stream carried before ocx
        // subscribed (while the stored text was still empty) is printed from it now.
        if !self.aborting {
            let messages = self.client.messages(&self.session)?;
            self.catch_up(&messages)?;
        }
        self.outcome()
    }

    /// Ctrl-C or the deadline: abort the prompt on the server, and fail with 130 or 4.
    fn check_interruptions(&mut self, events: &Receiver<Option<Value>>) -> Result<()> {
        if process::interrupted() {
            self.abort(events);
            return Err(anyhow!(Failure::new(code::INTERRUPTED, "interrupted; aborted the prompt on the server")));
        }
        if self.options.deadline.is_some_and(|d| Instant::now() >= d) {
            self.abort(events);
            return Err(anyhow!(Failure::new(code::TIMED_OUT, "timed out; aborted the prompt on the server")));
        }
        Ok(())
    }

    fn outcome(&mut self) -> Result<()> {
        match self.error.take() {
            Some(message) => Err(anyhow!(Failure::new(code::FAILED, format!("the model failed: {message}")))),
            None => Ok(()),
        }
    }

    /// Open the event stream on a thread and wait for the server to confirm it.
    /// The channel carries events, then None when the stream ends.
    fn subscribe(&self) -> Result<Receiver<Option<Value>>> {
        let events: Events = self.client.events()?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for event in events {
                let Ok(event) = event else { break };
                if tx.send(Some(event)).is_err() {
                    break;
                }
            }
            let _ = tx.send(None);
        });
        match rx.recv_timeout(SETTLE) {
            Ok(Some(first)) if first["type"] == "server.connected" => Ok(rx),
            Ok(Some(other)) => Err(anyhow!("the event stream began with {}, not server.connected", other["type"])),
            _ => Err(anyhow!("the server did not confirm the event subscription")),
        }
    }

    /// The stream dropped: get it back, then print what was missed and answer what was asked
    /// meanwhile. None when the session finished meanwhile.
    fn reconnect(&mut self) -> Result<Option<Receiver<Option<Value>>>> {
        // Deltas that arrive from now on may not follow the ones already printed.
        self.in_sync.clear();
        for delay in RECONNECT_DELAYS_MS {
            if self.record.remote.is_none() && instance::server(self.record)?.is_none() {
                self.in_flight = false;
                let restarted = record::load(self.home, &self.record.id)
                    .ok()
                    .flatten()
                    .is_some_and(|now| now.pid != self.record.pid && now.restarts > self.record.restarts);
                let what =
                    if restarted { "died while answering; its watcher restarted it" } else { "died while answering" };
                return Err(anyhow!(
                    Failure::new(code::FAILED, format!("instance {} {what}", self.record.label()))
                        .hint(format!("see its log: ocx logs {}", self.record.id))
                ));
            }
            std::thread::sleep(Duration::from_millis(delay));
            let Ok(events) = self.subscribe() else { continue };
            let Ok(busy) = self.resync() else { continue };
            return Ok(busy.then_some(events));
        }
        Err(anyhow!(
            Failure::new(code::FAILED, format!("lost the event stream of instance {}", self.record.label()))
                .hint(format!("the answer may still be on the server: ocx wait {}", self.session))
        ))
    }

    /// Catch up from the server's own records: print what the session's messages hold beyond
    /// what was printed, answer requests still waiting. Whether the session is still busy.
    fn resync(&mut self) -> Result<bool> {
        // Status first: messages read after the session was seen idle are final (read before,
        // they could hold a reply that ended in between, with its text still empty).
        let busy = self.client.busy_sessions().map(|b| b.contains_key(&self.session)).unwrap_or(true);
        let messages = self.client.messages(&self.session)?;
        self.catch_up(&messages)?;
        self.answer_pending()?;
        // A prompt the server has stored but not begun to answer is under way too.
        let answered = messages.iter().any(|m| {
            m["info"]["role"] == "assistant" && m["info"]["parentID"].as_str() == self.prompt_message.as_deref()
        });
        Ok(busy || (self.prompt_message.is_some() && !answered))
    }

    /// The sessions this one started (subagents), whose requests are this turn's to answer.
    fn subagents(&mut self) -> Result<()> {
        let sessions = self.client.sessions()?;
        loop {
            let before = self.sessions.len();
            for s in &sessions {
                if let (Some(id), Some(parent)) = (s["id"].as_str(), s["parentID"].as_str())
                    && self.sessions.contains(parent)
                {
                    self.sessions.insert(id.to_string());
                }
            }
            if self.sessions.len() == before {
                return Ok(());
            }
        }
    }

    /// Print what the messages hold beyond what was printed: the parts of this turn's answers.
    fn catch_up(&mut self, messages: &[Value]) -> Result<()> {
        let prompt = self.prompt_message.clone().or_else(|| {
            messages
                .iter()
                .rev()
                .find(|m| m["info"]["role"] == "user")
                .and_then(|m| m["info"]["id"].as_str())
                .map(String::from)
        });
        self.prompt_message = prompt.clone();
        for message in messages {
            let info = &message["info"];
            if info["role"] != "assistant" || info["parentID"].as_str() != prompt.as_deref() {
                continue;
            }
            if let Some(id) = info["id"].as_str() {
                self.roles.insert(id.to_string(), "assistant".into());
            }
            // The session failed while the stream was down.
            if let Some(message) = info["error"]["data"]["message"].as_str().or(info["error"]["name"].as_str())
                && !(self.aborting && info["error"]["name"] == "MessageAbortedError")
            {
                self.error = Some(message.to_string());
            }
            for raw in message["parts"].as_array().into_iter().flatten() {
                if let Ok(part) = serde_json::from_value::<Part>(raw.clone()) {
                    self.part(&part, raw, false)?;
                }
            }
        }
        Ok(())
    }

    fn handle(&mut self, raw: &Value) -> Result<Step> {
        let event = match Event::parse(raw) {
            Ok(event) => event,
            Err(err) => {
                if !std::mem::replace(&mut self.warned_about_events, true) {
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
        match event {
            Event::PermissionAsked(request) => self.permission(&request, &raw["properties"])?,
            Event::QuestionAsked(question) => self.question(&question, &raw["properties"])?,
            _ if !ours => {}
            Event::MessageUpdated { info } => {
                if info.role == "user" && self.prompt_message.is_none() {
                    self.prompt_message = Some(info.id.clone());
                }
                self.roles.insert(info.id, info.role);
            }
            Event::PartUpdated { part } => self.part(&part, &raw["properties"]["part"], true)?,
            Event::PartDelta { message, part, field, delta, .. } => {
                let known = self.roles.get(&message).is_some_and(|r| r == "assistant");
                if known && field == "text" && self.in_sync.contains(&part) {
                    self.print_text(&part, &delta)?;
                }
            }
            Event::SessionStatus { status, .. } => return self.status(status),
            Event::SessionError { error: Some(error), .. }
                if !(self.aborting && error.name == "MessageAbortedError") =>
            {
                self.json_line("error", json!({"error": raw["properties"]["error"]}))?;
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
                self.note(&format!("retry {attempt}: {message}{next}"));
                Ok(Step::Continue)
            }
            Status::Busy => Ok(Step::Continue),
        }
    }

    /// A part of the answer changed (`live`), or was read from the messages after the stream
    /// dropped.
    fn part(&mut self, part: &Part, raw: &Value, live: bool) -> Result<()> {
        if self.roles.get(&part.ids.message).is_none_or(|r| r != "assistant") {
            return Ok(());
        }
        let id = part.ids.id.clone();
        match &part.kind {
            PartKind::Text { text, time } => {
                let printed = self.printed.get(&id).map_or(0, String::len);
                if text.is_empty() && printed == 0 && live {
                    // The part starts on the live stream: its deltas follow, none missed. (Read
                    // from the messages, a part's text is empty until it ends: deltas were missed.)
                    self.in_sync.insert(id.clone());
                }
                // Print only what extends what was printed.
                let rest = self.printed.get(&id).map_or(Some(text.as_str()), |p| text.strip_prefix(p.as_str()));
                if let Some(rest) = rest.filter(|r| !r.is_empty()) {
                    let rest = rest.to_string();
                    self.print_text(&id, &rest)?;
                }
                if time.end.is_some() && self.reported.insert(id) {
                    self.json_line("text", json!({"part": raw}))?;
                }
            }
            PartKind::Tool { tool, state }
                if matches!(state.status.as_str(), "completed" | "error") && self.reported.insert(id.clone()) =>
            {
                self.note(&format!("tool {tool}: {} ({})", short_input(&state.input), state.status));
                self.json_line("tool_use", json!({"part": raw}))?;
            }
            PartKind::StepStart {} | PartKind::StepFinish { .. } if self.reported.insert(id.clone()) => {
                let kind = if matches!(part.kind, PartKind::StepStart {}) { "step_start" } else { "step_finish" };
                self.json_line(kind, json!({"part": raw}))?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Answer a permission request of this turn's sessions, as `--permission` says.
    fn permission(&mut self, request: &Permission, raw: &Value) -> Result<()> {
        if !self.answered.insert(request.id.clone()) {
            return Ok(());
        }
        let what = format!("{} ({})", request.permission, request.patterns.join(", "));
        let reply = match self.options.permissions {
            Permissions::Reject => "reject",
            Permissions::Allow => "once",
            Permissions::Ask => {
                let typed =
                    self.ask(&format!("permission: {what} — allow [o]nce, [a]lways, or [r]eject? "), &["o", "a", "r"])?;
                match typed.as_str() {
                    "o" => "once",
                    "a" => "always",
                    _ => "reject",
                }
            }
        };
        self.client.reply_permission(&request.id, reply)?;
        let shown = match reply {
            "once" => "allowed once",
            "always" => "allowed always",
            _ => "rejected",
        };
        self.note(&format!("permission {what}: {shown}"));
        self.json_line("permission", json!({"permission": raw, "reply": reply}))
    }

    /// Answer the agent's question: dismissed, unless `--permission ask` lets the user answer.
    fn question(&mut self, question: &Question, raw: &Value) -> Result<()> {
        if !self.answered.insert(question.id.clone()) {
            return Ok(());
        }
        let mut answers: Vec<Vec<String>> = Vec::new();
        if self.options.permissions == Permissions::Ask {
            for q in &question.questions {
                let options: Vec<String> = q
                    .options
                    .iter()
                    .enumerate()
                    .map(|(i, o)| format!("  {}. {} {}", i + 1, o.label, o.description))
                    .collect();
                let typed = self.ask(
                    &format!(
                        "question: {}\n{}\nanswer (a number, or text; empty dismisses): ",
                        q.question,
                        options.join("\n")
                    ),
                    &[],
                )?;
                if typed.is_empty() {
                    answers.clear();
                    break;
                }
                let picked = typed.parse::<usize>().ok().and_then(|n| q.options.get(n.wrapping_sub(1)));
                answers.push(vec![picked.map_or(typed.clone(), |o| o.label.clone())]);
            }
        }
        let asked = question.questions.iter().map(|q| q.question.as_str()).collect::<Vec<_>>().join(" / ");
        if answers.is_empty() {
            self.client.dismiss_question(&question.id)?;
            self.note(&format!("question \"{asked}\": dismissed"));
            self.json_line("question", json!({"question": raw, "answers": null}))
        } else {
            self.client.answer_question(&question.id, &answers)?;
            let given = answers.iter().map(|a| a.join(", ")).collect::<Vec<_>>().join(" / ");
            self.note(&format!("question \"{asked}\": answered {given}"));
            self.json_line("question", json!({"question": raw, "answers": answers}))
        }
    }

    /// Requests of this turn's sessions that wait for an answer already (asked before ocx was
    /// listening, or while its stream was down).
    fn answer_pending(&mut self) -> Result<()> {
        for raw in self.client.permissions()? {
            if let Ok(request) = serde_json::from_value::<Permission>(raw.clone())
                && self.sessions.contains(&request.session)
            {
                self.permission(&request, &raw)?;
            }
        }
        for raw in self.client.questions()? {
            if let Ok(question) = serde_json::from_value::<Question>(raw.clone())
                && self.sessions.contains(&question.session)
            {
                self.question(&question, &raw)?;
            }
        }
        Ok(())
    }

    /// Ask the user at the terminal; one line (lowercase, trimmed). With `choices`, until it is
    /// one of them. Ctrl-C and the deadline still work while waiting.
    fn ask(&mut self, prompt: &str, choices: &[&str]) -> Result<String> {
        let typed = self.typed.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in std::io::stdin().lock().lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        });
        loop {
            if self.options.format == Format::Text && !self.at_line_start {
                let _ = output::write(b"\n");
                self.at_line_start = true;
            }
            use std::io::Write;
            let _ = write!(std::io::stderr(), "{prompt}");
            let line = loop {
                match typed.recv_timeout(Duration::from_millis(100)) {
                    Ok(line) => break line.trim().to_lowercase(),
                    Err(RecvTimeoutError::Disconnected) => break String::new(),
                    Err(RecvTimeoutError::Timeout) => {}
                }
                if process::interrupted() {
                    return Err(anyhow!(Failure::new(
                        code::INTERRUPTED,
                        "interrupted; aborted the prompt on the server"
                    )));
                }
            };
            if choices.is_empty() || choices.contains(&line.as_str()) || line.is_empty() {
                return Ok(line);
            }
        }
    }

    /// Text of the answer to stdout (text format only), a newline between separate parts.
    fn print_text(&mut self, part: &str, text: &str) -> Result<()> {
        self.printed.entry(part.to_string()).or_default().push_str(text);
        if self.options.format != Format::Text || text.is_empty() {
            return Ok(());
        }
        if self.last_text_part.as_deref() != Some(part) {
            if !self.at_line_start {
                output::write(b"\n")?;
            }
            self.last_text_part = Some(part.to_string());
        }
        output::write(text.as_bytes())?;
        self.at_line_start = text.ends_with('\n');
        Ok(())
    }

    /// One line in `opencode run --format json`'s shape (json format only).
    fn json_line(&self, kind: &str, fields: Value) -> Result<()> {
        if self.options.format != Format::Json {
            return Ok(());
        }
        let mut line = json!({"type": kind, "timestamp": now_ms(), "sessionID": self.session});
        if let (Some(line), Some(fields)) = (line.as_object_mut(), fields.as_object()) {
            line.extend(fields.clone());
        }
        output::line(line)?;
        Ok(())
    }

    /// A line on stderr; on a shared terminal, first end the answer's line.
    fn note(&mut self, line: &str) {
        if self.options.format == Format::Text && self.stdout_is_terminal && !self.at_line_start {
            let _ = output::write(b"\n");
            self.at_line_start = true;
        }
        output::note(line);
    }

    /// Ask the server to stop the prompt and wait (briefly) until the session is idle.
    fn abort(&mut self, events: &Receiver<Option<Value>>) {
        self.aborting = true;
        self.in_flight = false;
        let _ = self.client.abort(&self.session);
        let deadline = Instant::now() + SETTLE;
        while Instant::now() < deadline {
            match events.recv_timeout(Duration::from_millis(100)) {
                Ok(Some(event)) => {
                    if self.handle(&event).is_ok_and(|s| s == Step::Done) {
                        return;
                    }
                }
                Ok(None) | Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// End the answer's last line.
    pub fn finish_output(&mut self) -> std::io::Result<()> {
        if self.options.format == Format::Text && !self.at_line_start {
            output::write(b"\n")?;
            self.at_line_start = true;
        }
        Ok(())
    }
}

impl Drop for Turn<'_> {
    /// A turn left before the server finished it (a closed pipe, an error, a panic): abort it,
    /// so no agent goes on working after ocx is gone.
    fn drop(&mut self) {
        if self.in_flight {
            let _ = self.client.abort(&self.session);
        }
    }
}

/// A tool's input in a few words: a bash command as is, anything else as compact JSON.
pub fn short_input(input: &Value) -> String {
    let text = match input["command"].as_str() {
        Some(command) => command.to_string(),
        None => input.to_string(),
    };
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() > 80 {
        format!("{}…", line.chars().take(80).collect::<String>())
    } else {
        line.to_string()
    }
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
