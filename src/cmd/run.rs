//! `ocx run`: send a prompt over HTTP and stream the answer from the server's event stream.
//!
//! The event stream is subscribed to before the prompt is sent, so nothing is missed. If the
//! stream drops, ocx reconnects and fetches the session's messages to print what it missed.

use std::collections::{HashMap, HashSet};
use std::io::{IsTerminal, Read};
use std::path::Path;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use serde_json::{Value, json};

use crate::cli::{Format, RunArgs};
use crate::error::{Failure, code};
use crate::home::Home;
use crate::instance;
use crate::record::{self, Record};
use crate::server::{Client, Events};
use crate::{output, process};

/// Every request but the event stream gets this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Waits between attempts to get the event stream back (about 8 s in all).
const RECONNECT_DELAYS_MS: [u64; 6] = [100, 300, 600, 1000, 2000, 4000];
/// How long to wait for the server to confirm a subscription, or an abort.
const SETTLE: Duration = Duration::from_secs(5);

pub fn run(home: &Home, args: RunArgs) -> Result<()> {
    let records = record::valid(&record::list(home)?);
    let words: Vec<String> = args.instance.iter().chain(&args.prompt).cloned().collect();
    let (record, words) = split_instance(&records, &words)?;
    let prompt = read_prompt(&words)?;
    let record = record.clone();
    let directory = match &args.dir {
        Some(dir) => Some(
            dunce::canonicalize(dir)
                .with_context(|| format!("the directory {} does not exist", dir.display()))?
                .to_string_lossy()
                .into_owned(),
        ),
        None => None,
    };
    let client = Client::for_record(&record, REQUEST_TIMEOUT).in_directory(directory);
    ensure_running(&record, &client)?;
    let body = prompt_body(&prompt, &args)?;
    let session = choose_session(&client, &record, &args, &prompt)?;

    process::install_interrupt_handler();
    let mut turn = Turn::new(&client, &record, session, &args);
    let result = turn.run(&body).and_then(|()| Ok(turn.finish_output()?));
    output::note(format_args!("session: {}", turn.session));
    // Dropping the turn aborts the prompt on the server if it did not finish (a closed pipe,
    // an error, a panic): no agent goes on working after ocx is gone.
    drop(turn);
    result
}

/// The instance and the prompt's words: the first word is the instance if it names one.
fn split_instance<'a>(records: &'a [Record], words: &[String]) -> Result<(&'a Record, Vec<String>)> {
    if let Some(first) = words.first()
        && names_instance(records, first)
    {
        return Ok((record::resolve(records, first)?, words[1..].to_vec()));
    }
    Ok((record::resolve_default(records, None)?, words.to_vec()))
}

/// An exact id or name, or a unique id prefix long enough not to be an ordinary word.
fn names_instance(records: &[Record], word: &str) -> bool {
    records.iter().any(|r| r.id == word || r.name.as_deref() == Some(word))
        || (word.len() >= 3 && records.iter().filter(|r| r.id.starts_with(word)).count() == 1)
}

fn read_prompt(words: &[String]) -> Result<String> {
    let from_stdin = words == ["-"] || (words.is_empty() && !std::io::stdin().is_terminal());
    let prompt = if from_stdin {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("cannot read the prompt from stdin")?;
        text
    } else {
        words.join(" ")
    };
    if prompt.trim().is_empty() {
        return Err(anyhow!(
            Failure::new(code::USAGE, "no prompt").hint("give it as arguments, or `-` to read it from stdin")
        ));
    }
    Ok(prompt)
}

fn ensure_running(record: &Record, client: &Client) -> Result<()> {
    let label = record.label();
    instance::require_server(record)?;
    match client.health() {
        Ok(health) if health.healthy => Ok(()),
        Ok(_) => Err(anyhow!(Failure::new(code::FAILED, format!("instance {label} reports itself unhealthy")))),
        Err(err) => Err(anyhow!(
            Failure::new(code::FAILED, format!("instance {label} is not healthy: {err:#}"))
                .hint(format!("see its log: ocx logs {label}"))
        )),
    }
}

/// The prompt as the API takes it: text, files, and the optional model and agent.
fn prompt_body(prompt: &str, args: &RunArgs) -> Result<Value> {
    let mut parts = vec![json!({"type": "text", "text": prompt})];
    for file in &args.files {
        let path = dunce::canonicalize(file).with_context(|| format!("cannot read --file {}", file.display()))?;
        parts.push(json!({
            "type": "file",
            "mime": mime_of(&path),
            "url": file_url(&path),
            "filename": path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        }));
    }
    let mut body = json!({ "parts": parts });
    if let Some(model) = &args.model {
        let Some((provider, model)) = model.split_once('/').filter(|(p, m)| !p.is_empty() && !m.is_empty()) else {
            return Err(anyhow!(Failure::new(code::USAGE, format!("--model {model:?} is not PROVIDER/MODEL"))));
        };
        body["model"] = json!({"providerID": provider, "modelID": model});
    }
    if let Some(agent) = &args.agent {
        body["agent"] = agent.as_str().into();
    }
    Ok(body)
}

fn mime_of(path: &Path) -> &'static str {
    if path.is_dir() {
        return "application/x-directory";
    }
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("pdf") => "application/pdf",
        _ => "text/plain",
    }
}

/// `file://` URL of an absolute path, percent-encoding all but unreserved characters and `/`.
fn file_url(path: &Path) -> String {
    let mut url = String::from("file://");
    let text = path.to_string_lossy().replace('\\', "/");
    if !text.starts_with('/') {
        url.push('/');
    }
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' | b':' => url.push(b as char),
            _ => url.push_str(&format!("%{b:02X}")),
        }
    }
    url
}

fn choose_session(client: &Client, record: &Record, args: &RunArgs, prompt: &str) -> Result<String> {
    let label = record.label();
    if let Some(id) = &args.session {
        return match client.session(id)? {
            Some(_) => Ok(id.clone()),
            None => Err(anyhow!(
                Failure::new(code::FAILED, format!("instance {label} has no session {id}"))
                    .hint(format!("`ocx run {label} --continue …` continues its latest session"))
            )),
        };
    }
    if args.continue_ {
        let latest = client
            .sessions()?
            .into_iter()
            .filter(|s| s.get("parentID").is_none_or(Value::is_null))
            .max_by_key(|s| s["time"]["updated"].as_u64().unwrap_or(0));
        return match latest.and_then(|s| s["id"].as_str().map(str::to_string)) {
            Some(id) => Ok(id),
            None => Err(anyhow!(
                Failure::new(code::FAILED, format!("instance {label} has no session to continue"))
                    .hint("leave out --continue to start a new one")
            )),
        };
    }
    let title = args.title.clone().unwrap_or_else(|| default_title(prompt));
    client.create_session(&title)
}

/// The prompt's first line, cut at a word boundary near 60 characters.
fn default_title(prompt: &str) -> String {
    let line = prompt.trim().lines().next().unwrap_or("").trim();
    if line.chars().count() <= 60 {
        return line.to_string();
    }
    let cut: String = line.chars().take(60).collect();
    match cut.rfind(' ') {
        Some(i) if i > 20 => format!("{}…", &cut[..i]),
        _ => format!("{cut}…"),
    }
}

/// What an event meant for the turn.
#[derive(PartialEq)]
enum Step {
    Continue,
    Done,
}

/// One prompt and its answer: follows the session's events and prints them.
struct Turn<'a> {
    client: &'a Client,
    record: &'a Record,
    session: String,
    format: Format,
    retries: Option<u32>,
    deadline: Option<Instant>,
    /// Role of every message of this session seen so far, by id.
    roles: HashMap<String, String>,
    /// The id of the user message this turn sent.
    prompt_message: Option<String>,
    /// Bytes of each text part already printed.
    printed: HashMap<String, usize>,
    /// Text parts whose deltas ocx has followed from their start (none were missed).
    in_sync: HashSet<String>,
    /// Parts already reported (tool lines, JSON lines), with the state they were reported in.
    reported: HashSet<String>,
    /// The text part printed last, and whether stdout is at the start of a line.
    last_text_part: Option<String>,
    at_line_start: bool,
    stdout_is_terminal: bool,
    /// The error the session ended with, if any.
    error: Option<String>,
    /// Set once ocx asked the server to abort, so the abort's own error is not reported.
    aborting: bool,
    /// The prompt was sent and the session has not gone idle (nor been aborted) since: if the
    /// turn ends now, the server is still working on it.
    in_flight: bool,
}

impl<'a> Turn<'a> {
    fn new(client: &'a Client, record: &'a Record, session: String, args: &RunArgs) -> Self {
        Turn {
            client,
            record,
            session,
            format: args.format,
            retries: args.retries,
            deadline: args.timeout.map(|t| Instant::now() + t),
            roles: HashMap::new(),
            prompt_message: None,
            printed: HashMap::new(),
            in_sync: HashSet::new(),
            reported: HashSet::new(),
            last_text_part: None,
            at_line_start: true,
            stdout_is_terminal: std::io::stdout().is_terminal(),
            error: None,
            aborting: false,
            in_flight: false,
        }
    }

    fn run(&mut self, body: &Value) -> Result<()> {
        let mut events = self.subscribe().context("cannot subscribe to the server's events")?;
        self.in_flight = true;
        self.client.prompt_async(&self.session, body)?;
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
            if process::interrupted() {
                self.abort(&events);
                return Err(anyhow!(Failure::new(code::INTERRUPTED, "interrupted; aborted the prompt on the server")));
            }
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                self.abort(&events);
                return Err(anyhow!(Failure::new(code::TIMED_OUT, "timed out; aborted the prompt on the server")));
            }
        }
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

    /// The stream dropped: get it back, then print from the session's messages whatever was
    /// missed. Returns None if the session finished meanwhile.
    fn reconnect(&mut self) -> Result<Option<Receiver<Option<Value>>>> {
        // Deltas that arrive from now on may not follow the ones already printed.
        self.in_sync.clear();
        for delay in RECONNECT_DELAYS_MS {
            if instance::server(self.record)?.is_none() {
                self.in_flight = false;
                return Err(anyhow!(
                    Failure::new(code::FAILED, format!("instance {} died while answering", self.record.label()))
                        .hint(format!("see its log: ocx logs {}", self.record.id))
                ));
            }
            std::thread::sleep(Duration::from_millis(delay));
            let Ok(events) = self.subscribe() else { continue };
            let Ok(messages) = self.client.messages(&self.session) else { continue };
            self.catch_up(&messages)?;
            let busy = self.client.busy_sessions().map(|b| b.contains_key(&self.session)).unwrap_or(true);
            return Ok(busy.then_some(events));
        }
        Err(anyhow!(
            Failure::new(code::FAILED, format!("lost the event stream of instance {}", self.record.label()))
                .hint(format!("the answer may still be on the server: ocx run {} --continue", self.record.label()))
        ))
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
            for part in message["parts"].as_array().into_iter().flatten() {
                self.part(part)?;
            }
        }
        Ok(())
    }

    fn handle(&mut self, event: &Value) -> Result<Step> {
        let props = &event["properties"];
        let session = props["sessionID"].as_str().or(props["info"]["sessionID"].as_str());
        if session != Some(self.session.as_str()) {
            return Ok(Step::Continue);
        }
        match event["type"].as_str().unwrap_or("") {
            "message.updated" => {
                let info = &props["info"];
                if let (Some(id), Some(role)) = (info["id"].as_str(), info["role"].as_str()) {
                    if role == "user" && self.prompt_message.is_none() {
                        self.prompt_message = Some(id.to_string());
                    }
                    self.roles.insert(id.to_string(), role.to_string());
                }
            }
            "message.part.updated" => self.part(&props["part"])?,
            "message.part.delta" => self.delta(props)?,
            "session.status" => return self.status(&props["status"]),
            "session.error" => {
                let error = &props["error"];
                if !(self.aborting && error["name"] == "MessageAbortedError") {
                    self.json_line("error", json!({"error": error}))?;
                    let message =
                        error["data"]["message"].as_str().or(error["name"].as_str()).unwrap_or("unknown error");
                    self.error = Some(message.to_string());
                }
            }
            "session.idle" => return Ok(Step::Done),
            _ => {}
        }
        Ok(Step::Continue)
    }

    fn status(&mut self, status: &Value) -> Result<Step> {
        match status["type"].as_str() {
            Some("idle") => Ok(Step::Done),
            Some("retry") => {
                let attempt = status["attempt"].as_u64().unwrap_or(0);
                let message = status["message"].as_str().unwrap_or("the model failed");
                if self.retries.is_some_and(|limit| attempt > u64::from(limit)) {
                    self.error = Some(message.to_string());
                    self.aborting = true;
                    self.in_flight = false;
                    let _ = self.client.abort(&self.session);
                    return Ok(Step::Done);
                }
                let next_ms = status["next"].as_u64().map(|next| next.saturating_sub(now_ms()));
                let next = next_ms.map(|ms| format!("; next try in {:.0}s", ms as f64 / 1000.0)).unwrap_or_default();
                self.note(&format!("retry {attempt}: {message}{next}"));
                Ok(Step::Continue)
            }
            _ => Ok(Step::Continue),
        }
    }

    fn is_answer(&self, part: &Value) -> bool {
        part["messageID"].as_str().is_some_and(|m| self.roles.get(m).is_some_and(|r| r == "assistant"))
    }

    /// A part of the answer changed (or was read from the messages after a reconnect).
    fn part(&mut self, part: &Value) -> Result<()> {
        if !self.is_answer(part) {
            return Ok(());
        }
        let id = part["id"].as_str().unwrap_or_default().to_string();
        match part["type"].as_str() {
            Some("text") => {
                let text = part["text"].as_str().unwrap_or("");
                let printed = self.printed.get(&id).copied().unwrap_or(0);
                if text.is_empty() && printed == 0 {
                    // A text part starts: its deltas follow.
                    self.in_sync.insert(id.clone());
                }
                if text.len() > printed && text.is_char_boundary(printed) {
                    self.print_text(&id, &text[printed..])?;
                }
                if !part["time"]["end"].is_null() && self.reported.insert(id) {
                    self.json_line("text", json!({"part": part}))?;
                }
            }
            Some("tool") => {
                let state = &part["state"];
                let status = state["status"].as_str().unwrap_or("");
                if matches!(status, "completed" | "error") && self.reported.insert(id) {
                    let tool = part["tool"].as_str().unwrap_or("tool");
                    self.note(&format!("tool {tool}: {} ({status})", short_input(&state["input"])));
                    self.json_line("tool_use", json!({"part": part}))?;
                }
            }
            Some(kind @ ("step-start" | "step-finish")) if self.reported.insert(id.clone()) => {
                let kind = if kind == "step-start" { "step_start" } else { "step_finish" };
                self.json_line(kind, json!({"part": part}))?;
            }
            _ => {}
        }
        Ok(())
    }

    fn delta(&mut self, props: &Value) -> Result<()> {
        let Some(id) = props["partID"].as_str() else { return Ok(()) };
        let known = props["messageID"].as_str().is_some_and(|m| self.roles.get(m).is_some_and(|r| r == "assistant"));
        if !known || props["field"] != "text" || !self.in_sync.contains(id) {
            return Ok(());
        }
        let delta = props["delta"].as_str().unwrap_or("");
        self.print_text(id, delta)
    }

    /// Text of the answer to stdout (text format only), a newline between separate parts.
    fn print_text(&mut self, part: &str, text: &str) -> Result<()> {
        *self.printed.entry(part.to_string()).or_insert(0) += text.len();
        if self.format != Format::Text || text.is_empty() {
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
        if self.format != Format::Json {
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
        if self.format == Format::Text && self.stdout_is_terminal && !self.at_line_start {
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
    fn finish_output(&mut self) -> std::io::Result<()> {
        if self.format == Format::Text && !self.at_line_start {
            output::write(b"\n")?;
            self.at_line_start = true;
        }
        Ok(())
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if self.in_flight {
            let _ = self.client.abort(&self.session);
        }
    }
}

/// A tool's input in a few words: a bash command as is, anything else as compact JSON.
fn short_input(input: &Value) -> String {
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
    fn titles_and_urls() {
        assert_eq!(default_title("  fix the bug\nand more"), "fix the bug");
        let long = "word ".repeat(30);
        assert!(default_title(&long).chars().count() <= 61);
        assert_eq!(file_url(Path::new("/tmp/a b.txt")), "file:///tmp/a%20b.txt");
        assert_eq!(short_input(&json!({"command": "sleep 1\nmore"})), "sleep 1");
    }
}
