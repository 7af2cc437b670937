//! What `ocx events` shows of a server's event stream, for it and for `ocx top`: a follower
//! thread per instance (reconnecting with backoff) and the printer that turns events into one
//! line each, as `ocx events` prints them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use serde_json::{Map, Value, json};

use crate::events::{Event, Part, PartKind, Status};
use crate::home::Home;
use crate::instance::status;
use crate::{instance, output, record, turn};

/// The longest wait between two attempts to get a dropped stream back.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What a follower thread reports.
pub enum Item {
    Event(Value),
    /// The stream is (back) up; after a gap of this long, if it was down.
    Connected(Option<Duration>),
    Disconnected,
    /// The instance's record is gone: it was stopped.
    Gone,
    /// Its watcher answered a request no client answered in time (`start --permission`).
    Answered(status::Answered),
}

/// The answers each followed instance's watcher gave, from its observation: the ones not
/// handed out yet (those from before following began are not).
#[derive(Default)]
pub struct WatcherAnswers {
    seen: HashMap<String, String>,
}

impl WatcherAnswers {
    pub fn new_ones(&mut self, home: &Home, id: &str) -> Vec<status::Answered> {
        let Some(observation) = status::read(home, id) else {
            // None yet: every answer from now on is new.
            self.seen.entry(id.to_string()).or_default();
            return Vec::new();
        };
        let last = observation.answered.last().map(|a| a.at.clone()).unwrap_or_default();
        let Some(before) = self.seen.insert(id.to_string(), last) else { return Vec::new() };
        observation.answered.into_iter().filter(|a| a.at > before).collect()
    }
}

/// Follow instance `id`'s event stream on a thread of its own, sending what happens to `tx`
/// tagged with the id, until its record is gone, nobody listens, or `quit` is set (looked at
/// between connections). The stream is reconnected with backoff when it drops (a restart, a
/// crash) or goes silent (`server::EVENTS_SILENCE`).
pub fn follow(home: &Home, id: &str, tx: &Sender<(String, Item)>, quit: Arc<AtomicBool>) {
    let (home, id, tx) = (home.clone(), id.to_string(), tx.clone());
    std::thread::spawn(move || {
        let send = |item: Item| tx.send((id.clone(), item)).is_ok();
        let mut backoff = Duration::from_millis(100);
        let mut lost_at: Option<Instant> = None;
        while !quit.load(Ordering::SeqCst) {
            // The record as it is now: a restart keeps the port and password, not the PID.
            let Ok(Some(record)) = record::load(&home, &id) else {
                send(Item::Gone);
                return;
            };
            let alive = instance::server(&record).ok().flatten().is_some();
            let stream = alive.then(|| instance::client(&record, Duration::from_secs(5)).events().ok()).flatten();
            if let Some(stream) = stream {
                if !send(Item::Connected(lost_at.map(|t| t.elapsed()))) {
                    return;
                }
                backoff = Duration::from_millis(100);
                for event in stream {
                    let Ok(event) = event else { break };
                    // The server's own `server.connected` is said by `Connected` already.
                    if quit.load(Ordering::SeqCst) || (event["type"] != "server.connected" && !send(Item::Event(event)))
                    {
                        return;
                    }
                }
                lost_at = Some(Instant::now());
                if !send(Item::Disconnected) {
                    return;
                }
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    });
}

/// Beyond this many sessions a printer keeps what it showed of, it forgets the one heard from
/// longest ago: at worst, one of that session's states is said again.
const MAX_SESSIONS: usize = 256;

/// Turns events into lines: the server's JSON (with the instance) or one line per event that
/// matters, with what it takes to say it (which tool call is which, what was asked), kept per
/// session and bounded: a session's is forgotten once it is idle, and only so many are kept.
pub struct Printer {
    json: bool,
    text: bool,
    session: Option<String>,
    /// What was shown of each session, by instance and session.
    sessions: HashMap<(String, String), Shown>,
    /// Counts the events that touched a session, to tell which was heard from longest ago.
    clock: u64,
}

/// What was shown of one session's events: enough to say each change once.
#[derive(Default)]
struct Shown {
    /// The printer's clock when the session was last heard from.
    touched: u64,
    /// Its last status shown (the server repeats a status).
    status: Option<String>,
    /// The last state shown of each tool part.
    tools: HashMap<String, String>,
    /// What each permission or question asked, by request id.
    asked: HashMap<String, String>,
    /// Messages whose end was shown.
    finished: HashSet<String>,
    /// Text not yet shown as a whole line, by part.
    text_lines: HashMap<String, String>,
}

impl Printer {
    /// `json`: the server's events as they are (with the instance); `text`: the answer's text
    /// too, line by line; `session`: only that session's events.
    pub fn new(json: bool, text: bool, session: Option<String>) -> Self {
        Printer { json, text, session, sessions: HashMap::new(), clock: 0 }
    }

    /// Print what `item` of instance `id` says, on stdout.
    pub fn print(&mut self, id: &str, label: &str, item: Item) -> Result<()> {
        for line in self.lines(id, label, item) {
            output::line(line)?;
        }
        Ok(())
    }

    /// What to print for `item` of instance `id`.
    pub fn lines(&mut self, id: &str, label: &str, item: Item) -> Vec<String> {
        if let Item::Answered(a) = item {
            if self.session.as_ref().is_some_and(|s| *s != a.session) {
                return Vec::new();
            }
            if self.json {
                let line = json!({"instance": id, "type": "ocx.watcher.answered", "kind": a.kind,
                    "sessionID": a.session, "what": a.what, "reply": a.reply, "at": a.at});
                return vec![line.to_string()];
            }
            let what = format!("{} {}: {} by the watcher (no client answered in time)", a.kind, a.what, a.reply);
            return vec![stamped(label, Some(&a.session), &what)];
        }
        let (kind, gap) = match item {
            Item::Event(raw) => return self.event(id, label, raw),
            Item::Connected(None) => ("ocx.connected", None),
            Item::Connected(Some(gap)) => ("ocx.reconnected", Some(gap)),
            Item::Disconnected => ("ocx.disconnected", None),
            Item::Gone => ("ocx.gone", None),
            Item::Answered(_) => unreachable!("handled above"),
        };
        if self.json {
            let mut line = json!({"instance": id, "type": kind});
            if let Some(gap) = gap {
                line["gap_ms"] = (gap.as_millis() as u64).into();
            }
            return vec![line.to_string()];
        }
        let what = match (kind, gap) {
            ("ocx.connected", _) => "connected".to_string(),
            ("ocx.reconnected", Some(gap)) => {
                format!("reconnected after {}: events of that gap were missed", output::elapsed(gap))
            }
            ("ocx.disconnected", _) => "disconnected; reconnecting".to_string(),
            _ => "gone (stopped)".to_string(),
        };
        vec![stamped(label, None, &what)]
    }

    /// What was shown of `session` of instance `id`, heard from now.
    fn shown(&mut self, id: &str, session: &str) -> &mut Shown {
        self.clock += 1;
        let key = (id.to_string(), session.to_string());
        if !self.sessions.contains_key(&key)
            && self.sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = self.sessions.iter().min_by_key(|(_, s)| s.touched).map(|(k, _)| k.clone())
        {
            self.sessions.remove(&oldest);
        }
        let shown = self.sessions.entry(key).or_default();
        shown.touched = self.clock;
        shown
    }

    fn event(&mut self, id: &str, label: &str, raw: Value) -> Vec<String> {
        let event = Event::parse(&raw).unwrap_or(Event::Other);
        if let (Some(wanted), Some(session)) = (&self.session, event.session())
            && wanted != session
        {
            return Vec::new();
        }
        if self.json {
            let mut line = Map::new();
            line.insert("instance".into(), id.into());
            if let Value::Object(fields) = raw {
                line.extend(fields);
            }
            return vec![Value::Object(line).to_string()];
        }
        let session = event.session().map(str::to_string);
        let what = match event {
            // The server repeats a status: say it when it changes.
            Event::SessionStatus { session, status } => {
                let what = match status {
                    Status::Busy => "busy".to_string(),
                    Status::Idle => "idle".to_string(),
                    Status::Retry { attempt, message, .. } => format!("retry {attempt}: {message}"),
                };
                if self.shown(id, &session).status.replace(what.clone()).as_ref() == Some(&what) {
                    return Vec::new();
                }
                what
            }
            // The turn is over: what it takes to say its events is not needed any more.
            Event::SessionIdle { session } => {
                let shown = self.shown(id, &session);
                *shown = Shown { touched: shown.touched, status: shown.status.take(), ..Shown::default() };
                return Vec::new();
            }
            Event::SessionError { error: Some(error), .. } => format!("error: {}", error.message()),
            Event::SessionCreated { info } => match info.parent {
                Some(parent) => format!("subagent session created by {parent}: {}", info.title),
                None => format!("session created: {}", info.title),
            },
            Event::MessageUpdated { info } if info.role == "assistant" && info.time.completed.is_some() => {
                if !self.shown(id, &info.session).finished.insert(info.id) {
                    return Vec::new();
                }
                let tokens =
                    info.tokens.map(|t| format!(": {} in, {} out tokens", t.input, t.output)).unwrap_or_default();
                let why = info.finish.map(|f| format!(" ({f})")).unwrap_or_default();
                match info.error {
                    Some(error) => format!("message failed: {}", error.message()),
                    None => format!("message finished{why}{tokens}"),
                }
            }
            Event::PartUpdated { part: Part { ids, kind: PartKind::Tool { tool, state } } } => {
                let status = state.status.clone();
                let tools = &mut self.shown(id, &ids.session).tools;
                if status == "pending" || tools.get(&ids.id) == Some(&status) {
                    return Vec::new();
                }
                tools.insert(ids.id, status.clone());
                let error = state.error.map(|e| format!(": {e}")).unwrap_or_default();
                format!("tool {tool}: {} ({status}){error}", turn::short_input(&state.input))
            }
            Event::PartUpdated { part: Part { ids, kind: PartKind::Text { time, .. } } }
                if self.text && time.end.is_some() =>
            {
                match self.shown(id, &ids.session).text_lines.remove(&ids.id).filter(|rest| !rest.is_empty()) {
                    Some(rest) => format!("text: {rest}"),
                    None => return Vec::new(),
                }
            }
            Event::PartDelta { session, part, field, delta, .. } if self.text && field == "text" => {
                let pending = self.shown(id, &session).text_lines.entry(part).or_default();
                pending.push_str(&delta);
                let Some(end) = pending.rfind('\n') else { return Vec::new() };
                let lines: String = pending.drain(..=end).collect();
                return lines.lines().map(|line| stamped(label, Some(&session), &format!("text: {line}"))).collect();
            }
            Event::PermissionAsked(p) => {
                let what = format!("{} ({})", p.permission, p.patterns.join(", "));
                self.shown(id, &p.session).asked.insert(p.id, what.clone());
                format!("permission asked: {what}")
            }
            Event::PermissionReplied { session, request, reply } => {
                let what = self.shown(id, &session).asked.remove(&request).unwrap_or(request);
                format!("permission {what}: {reply}")
            }
            Event::QuestionAsked(q) => {
                let what = q
                    .questions
                    .iter()
                    .map(|q| {
                        let options: Vec<&str> = q.options.iter().map(|o| o.label.as_str()).collect();
                        format!("{} ({})", q.question, options.join(", "))
                    })
                    .collect::<Vec<_>>()
                    .join(" / ");
                self.shown(id, &q.session).asked.insert(q.id, what.clone());
                format!("question asked: {what}")
            }
            Event::QuestionReplied { session, request, answers } => {
                let what = self.shown(id, &session).asked.remove(&request).unwrap_or(request);
                let given: Vec<String> = answers.iter().map(|a| a.join(", ")).collect();
                format!("question {what}: answered {}", given.join(" / "))
            }
            Event::QuestionRejected { session, request } => {
                format!("question {}: dismissed", self.shown(id, &session).asked.remove(&request).unwrap_or(request))
            }
            _ => return Vec::new(),
        };
        vec![stamped(label, session.as_deref(), &what)]
    }
}

/// `10:02:03.123  api  ses_…  busy`
fn stamped(label: &str, session: Option<&str>, what: &str) -> String {
    let now = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let time = now.get(11..23).unwrap_or(&now);
    match session {
        Some(session) => format!("{time}  {label}  {session}  {what}"),
        None => format!("{time}  {label}  {what}"),
    }
}

#[cfg(test)]
mod tests;
