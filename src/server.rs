//! The opencode server's HTTP API, with the instance's credentials on every request.

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::{Value, json};
use ureq::Agent;
use ureq::http::Response;

/// Where a server answers whether it is healthy, in the order to ask: opencode 1.x's path,
/// then the one newer builds have (a 404 from the first means "ask the next").
pub const HEALTH_PATHS: [&str; 2] = ["/global/health", "/api/health"];

/// The server sends `server.heartbeat` every 10 s on every event stream: one silent for this
/// long is dead even though its connection looks open (a half-open connection, a stalled
/// proxy). Reading it then fails, and its reader reconnects as for a stream the server closed.
pub const EVENTS_SILENCE: Duration = Duration::from_secs(30);

/// Caps on what ocx reads of an answer, so a confused server cannot make it hold much: small
/// answers (health, status) stay small; lists of sessions or requests get room to grow.
const SMALL_BODY: u64 = 1 << 20;
const LIST_BODY: u64 = 64 << 20;
/// A session's messages: a long session easily passes ureq's default 10 MB (a 12 MB answer is
/// a normal long session), so the cap is only there to stop a runaway.
const MESSAGES_BODY: u64 = 1 << 30;
/// Messages asked for per request when a session is read from its end.
const PAGE: usize = 16;

/// An HTTP client for one server.
pub struct Client {
    agent: Agent,
    base: String,
    auth: Option<String>,
    /// The project directory to act in (`?directory=`); None means the server's own.
    directory: Option<String>,
}

/// What `/global/health` answers.
#[derive(Debug, Clone, Deserialize)]
pub struct Health {
    pub healthy: bool,
    #[serde(default)]
    pub version: Option<String>,
}

impl Client {
    /// `timeout` bounds each whole request, from connecting to reading the body.
    pub fn new(base: &str, username: &str, password: Option<&str>, timeout: Duration) -> Client {
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            // The server is local or named explicitly: never route it through a proxy.
            .proxy(None)
            .timeout_global(Some(timeout))
            .build()
            .into();
        Client {
            agent,
            base: base.trim_end_matches('/').to_string(),
            auth: password.map(|p| basic_auth(username, p)),
            directory: None,
        }
    }

    /// Act in this project directory instead of the server's own.
    pub fn in_directory(mut self, directory: Option<String>) -> Client {
        self.directory = directory;
        self
    }

    fn request<B>(&self, mut req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        if let Some(auth) = &self.auth {
            req = req.header("Authorization", auth);
        }
        if let Some(dir) = &self.directory {
            req = req.query("directory", dir);
        }
        req
    }

    fn get(&self, path: &str) -> Result<Response<ureq::Body>> {
        self.get_with(path, &[])
    }

    fn get_with(&self, path: &str, query: &[(&str, &str)]) -> Result<Response<ureq::Body>> {
        let url = format!("{}{path}", self.base);
        self.request(self.agent.get(&url))
            .query_pairs(query.iter().copied())
            .call()
            .with_context(|| format!("GET {url}"))
    }

    fn post(&self, path: &str, body: &Value) -> Result<Response<ureq::Body>> {
        let url = format!("{}{path}", self.base);
        self.request(self.agent.post(&url)).send_json(body).with_context(|| format!("POST {url}"))
    }

    /// `GET /global/health`, or `/api/health` on servers that only have that.
    pub fn health(&self) -> Result<Health> {
        let mut resp = self.get(HEALTH_PATHS[0])?;
        for path in &HEALTH_PATHS[1..] {
            if resp.status() != 404 {
                break;
            }
            resp = self.get(path)?;
        }
        match resp.status().as_u16() {
            200 => read_json(resp, SMALL_BODY).context("the health answer is not the expected JSON"),
            401 => bail!("the server refused ocx's credentials (401)"),
            status => bail!("the health check answered {status}"),
        }
    }

    /// `POST /session`: a new session; returns its id.
    pub fn create_session(&self, title: &str) -> Result<String> {
        let session: Value = ok_json(self.post("/session", &json!({ "title": title }))?, LIST_BODY)?;
        session["id"].as_str().map(str::to_string).context("the new session has no id")
    }

    /// `GET /config`: the configuration the server resolved for its project (`model`, …).
    pub fn config(&self) -> Result<Value> {
        ok_json(self.get("/config")?, SMALL_BODY)
    }

    /// `GET /config/providers`: the providers it can use, and each one's default model.
    pub fn providers(&self) -> Result<Value> {
        ok_json(self.get("/config/providers")?, LIST_BODY)
    }

    /// `GET /session`: every session of the project.
    pub fn sessions(&self) -> Result<Vec<Value>> {
        ok_json(self.get("/session")?, LIST_BODY)
    }

    /// `GET /session/{id}`: None when the server does not know it.
    pub fn session(&self, id: &str) -> Result<Option<Value>> {
        let resp = self.get(&format!("/session/{id}"))?;
        if is_unknown_session(resp.status().as_u16()) {
            return Ok(None);
        }
        ok_json(resp, LIST_BODY).map(Some)
    }

    /// `GET /session/status`: the sessions that are not idle, by id.
    pub fn busy_sessions(&self) -> Result<serde_json::Map<String, Value>> {
        ok_json(self.get("/session/status")?, SMALL_BODY)
    }

    /// `POST /session/{id}/prompt_async`: start a prompt; the work shows on the event stream.
    pub fn prompt_async(&self, id: &str, body: &Value) -> Result<()> {
        let resp = self.post(&format!("/session/{id}/prompt_async"), body)?;
        if is_unknown_session(resp.status().as_u16()) {
            bail!("the server does not know session {id}");
        }
        check(resp).map(drop)
    }

    /// `POST /session/{id}/abort`: stop what the session is doing.
    pub fn abort(&self, id: &str) -> Result<()> {
        check(self.post(&format!("/session/{id}/abort"), &json!({}))?).map(drop)
    }

    /// `GET /permission`: the permission requests waiting for an answer (stale ones of aborted
    /// prompts included).
    pub fn permissions(&self) -> Result<Vec<Value>> {
        ok_json(self.get("/permission")?, LIST_BODY)
    }

    /// `POST /permission/{id}/reply`: `once`, `always` or `reject`.
    pub fn reply_permission(&self, id: &str, reply: &str) -> Result<()> {
        check(self.post(&format!("/permission/{id}/reply"), &json!({ "reply": reply }))?).map(drop)
    }

    /// `GET /question`: the agent's questions waiting for an answer.
    pub fn questions(&self) -> Result<Vec<Value>> {
        ok_json(self.get("/question")?, LIST_BODY)
    }

    /// `POST /question/{id}/reply`: the chosen labels (or typed answer), one list per question.
    pub fn answer_question(&self, id: &str, answers: &[Vec<String>]) -> Result<()> {
        check(self.post(&format!("/question/{id}/reply"), &json!({ "answers": answers }))?).map(drop)
    }

    /// `POST /question/{id}/reject`: dismiss the question.
    pub fn dismiss_question(&self, id: &str) -> Result<()> {
        check(self.post(&format!("/question/{id}/reject"), &json!({}))?).map(drop)
    }

    /// `GET /session/{id}/message?limit=N&before=CURSOR`: the last `limit` messages before the
    /// cursor (or the session's end), oldest first, and the cursor for the page before them
    /// (None at the session's start). A server that does not page answers every message and
    /// no cursor.
    pub fn message_page(&self, id: &str, limit: usize, before: Option<&str>) -> Result<(Vec<Value>, Option<String>)> {
        // `limit=0` means no limit.
        let limit = limit.max(1).to_string();
        let mut query = vec![("limit", limit.as_str())];
        query.extend(before.map(|cursor| ("before", cursor)));
        let resp = check(self.get_with(&format!("/session/{id}/message"), &query)?)?;
        let next = resp.headers().get("x-next-cursor").and_then(|v| v.to_str().ok()).map(str::to_string);
        let page = read_json(resp, MESSAGES_BODY).context("the server's answer is not the expected JSON")?;
        Ok((page, next.filter(|c| !c.is_empty())))
    }

    /// The messages after the one with id `after`, oldest first: all of them when `after` is
    /// None or not among them. Read from the session's end a page at a time, so the earlier
    /// messages of a long session are neither fetched nor kept.
    pub fn messages_since(&self, id: &str, after: Option<&str>) -> Result<Vec<Value>> {
        self.back_until(id, |page| {
            after.and_then(|after| page.iter().position(|m| m["info"]["id"] == after)).map(|at| at + 1)
        })
    }

    /// The session's last turn: its last user message and everything after it (every message
    /// when it has none), read from the end a page at a time, as `messages_since`.
    pub fn last_turn(&self, id: &str) -> Result<Vec<Value>> {
        self.back_until(id, |page| page.iter().rposition(|m| m["info"]["role"] == "user"))
    }

    /// Pages from the session's end back to the first one where `found` says where to begin
    /// (an index into that page), or to the session's start; oldest first.
    fn back_until(&self, id: &str, found: impl Fn(&[Value]) -> Option<usize>) -> Result<Vec<Value>> {
        let mut pages = Vec::new();
        let mut cursor = None;
        loop {
            let (mut page, next) = self.message_page(id, PAGE, cursor.as_deref())?;
            if let Some(at) = found(&page) {
                page.drain(..at);
                pages.push(page);
                break;
            }
            pages.push(page);
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        Ok(pages.into_iter().rev().flatten().collect())
    }

    /// How many messages a session has, counted as the answer streams in: none of them is kept.
    pub fn message_count(&self, id: &str) -> Result<usize> {
        let resp = check(self.get(&format!("/session/{id}/message"))?)?;
        let body = BufReader::new(resp.into_body().into_with_config().limit(MESSAGES_BODY).reader());
        // `IgnoredAny` is zero-sized, so the Vec allocates nothing; each message is skipped
        // as it is parsed.
        let messages: Vec<IgnoredAny> =
            serde_json::from_reader(body).context("the server's answer is not the expected JSON")?;
        Ok(messages.len())
    }

    /// `GET /event`: the server's event stream, one JSON value per event. The request has no
    /// overall timeout (the stream is meant to stay open), only one for connecting and one for
    /// the answer's head (a server still starting can accept a connection and never answer it),
    /// and reading fails after `EVENTS_SILENCE` without a byte.
    pub fn events(&self) -> Result<Events> {
        self.events_silent_for(EVENTS_SILENCE)
    }

    fn events_silent_for(&self, silence: Duration) -> Result<Events> {
        let url = format!("{}/event", self.base);
        let req = self
            .request(self.agent.get(&url))
            .config()
            .timeout_global(None)
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_recv_response(Some(Duration::from_secs(5)))
            // Each read of the socket, not the whole body: an idle timeout.
            .timeout_per_read(Some(silence))
            .build();
        let resp = check(req.call().with_context(|| format!("GET {url}"))?)?;
        Ok(Events { reader: BufReader::new(Box::new(resp.into_body().into_reader())) })
    }
}

/// The `Authorization` header value for HTTP basic auth.
pub fn basic_auth(username: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}")))
}

/// opencode answers 404 for an unknown session (older builds: 500 `UnknownError`).
fn is_unknown_session(status: u16) -> bool {
    status == 404
}

/// The response if its status is 2xx; otherwise an error quoting the server's message.
fn check(resp: Response<ureq::Body>) -> Result<Response<ureq::Body>> {
    let status = resp.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(resp);
    }
    let body = resp.into_body().read_to_string().unwrap_or_default();
    let message = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["data"]["message"].as_str().or(v["message"].as_str()).map(str::to_string))
        .unwrap_or(body);
    match status {
        401 => Err(anyhow!("the server refused ocx's credentials (401)")),
        _ => Err(anyhow!("the server answered {status}: {}", message.trim())),
    }
}

/// The body of a 2xx answer as JSON, read up to `limit` bytes.
fn ok_json<T: DeserializeOwned>(resp: Response<ureq::Body>, limit: u64) -> Result<T> {
    read_json(check(resp)?, limit).context("the server's answer is not the expected JSON")
}

fn read_json<T: DeserializeOwned>(resp: Response<ureq::Body>, limit: u64) -> Result<T, ureq::Error> {
    resp.into_body().into_with_config().limit(limit).read_json()
}

/// Server-sent events: `data: {json}` lines, events separated by blank lines.
pub struct Events {
    reader: BufReader<Box<dyn Read + Send>>,
}

impl Iterator for Events {
    type Item = Result<Value>;

    /// The next event; None when the server closed the stream, an error when reading it failed
    /// (it was silent for `EVENTS_SILENCE`, for one).
    fn next(&mut self) -> Option<Result<Value>> {
        let mut data = String::new();
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => return Some(Err(e.into())),
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if data.is_empty() {
                    continue;
                }
                return Some(serde_json::from_str(&data).context("an event is not JSON"));
            }
            if let Some(value) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value.strip_prefix(' ').unwrap_or(value));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    use serde_json::{Value, json};

    use super::Client;

    #[test]
    fn basic_auth_is_rfc_7617() {
        assert_eq!(super::basic_auth("opencode", "pw"), "Basic b3BlbmNvZGU6cHc=");
        assert_eq!(super::basic_auth("a", ""), "Basic YTo=");
    }

    /// A stream that says one event and then nothing, its connection open: reading it fails
    /// once it has been silent for the limit, not never.
    #[test]
    fn a_silent_event_stream_fails_to_read() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let _ = conn.read(&mut [0; 4096]);
            let event = "data: {\"type\":\"server.connected\",\"properties\":{}}\n\n";
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
            write!(conn, "{head}{:x}\r\n{event}\r\n", event.len()).unwrap();
            // Held open, silent, well past the limit.
            std::thread::sleep(Duration::from_secs(10));
        });
        let client = super::Client::new(&format!("http://127.0.0.1:{port}"), "opencode", None, Duration::from_secs(5));
        let mut events = client.events_silent_for(Duration::from_millis(300)).unwrap();
        assert_eq!(events.next().unwrap().unwrap()["type"], "server.connected");
        let started = Instant::now();
        assert!(events.next().is_some_and(|e| e.is_err()), "silence is an error");
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(5), "{took:?}");
    }

    /// A server with one session of `count` messages `m0`, `m1`, …, paged as opencode 1.18.33
    /// pages them: the last `limit` before the cursor, and `x-next-cursor` while there are more
    /// (here the cursor is the index of the page's first message). Its requests' paths go on
    /// the channel.
    fn paging_server(count: usize) -> (String, std::sync::mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().map_while(Result::ok) {
                // The request line, then the headers up to the blank line (read, so that closing
                // the connection does not reset it).
                let lines: Vec<String> =
                    BufReader::new(&conn).lines().map_while(Result::ok).take_while(|l| !l.is_empty()).collect();
                let path = lines.first().and_then(|l| l.split_whitespace().nth(1)).unwrap_or("").to_string();
                let param = |name: &str| {
                    let query = path.split_once('?').map_or("", |(_, q)| q);
                    query.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse::<usize>().ok())
                };
                let end = param("before").unwrap_or(count);
                let start = param("limit").map_or(0, |limit| end.saturating_sub(limit));
                let page: Vec<Value> = (start..end).map(|i| json!({"info": {"id": format!("m{i}")}})).collect();
                let body = Value::from(page).to_string();
                let cursor = if start > 0 { format!("x-next-cursor: {start}\r\n") } else { String::new() };
                let head =
                    format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{cursor}connection: close\r\n\r\n", body.len());
                // Sent before the answer: the client has it on the channel once it has its answer.
                let _ = tx.send(path);
                let _ = conn.write_all(format!("{head}{body}").as_bytes());
            }
        });
        (base, rx)
    }

    #[test]
    fn a_session_is_read_from_its_end_a_page_at_a_time() {
        let ids = |messages: Vec<Value>| -> Vec<String> {
            messages.iter().map(|m| m["info"]["id"].as_str().unwrap().to_string()).collect()
        };
        let names = |range: std::ops::Range<usize>| -> Vec<String> { range.map(|i| format!("m{i}")).collect() };
        let (base, requests) = paging_server(40);
        let client = Client::new(&base, "opencode", None, Duration::from_secs(5));
        let (last, cursor) = client.message_page("ses_a", 1, None).unwrap();
        assert_eq!((ids(last), cursor.as_deref()), (names(39..40), Some("39")));
        assert_eq!(requests.recv().unwrap(), "/session/ses_a/message?limit=1");
        // Pages of 16 back to the one that holds m10: [24, 40), then [8, 24).
        assert_eq!(ids(client.messages_since("ses_a", Some("m10")).unwrap()), names(11..40));
        assert_eq!(requests.try_iter().count(), 2, "two pages");
        assert_eq!(ids(client.messages_since("ses_a", Some("m39")).unwrap()), names(0..0));
        assert_eq!(requests.try_iter().count(), 1);
        // Not found, or none given: every message, in order.
        assert_eq!(ids(client.messages_since("ses_a", Some("gone")).unwrap()), names(0..40));
        assert_eq!(ids(client.messages_since("ses_a", None).unwrap()), names(0..40));
        assert_eq!(client.message_count("ses_a").unwrap(), 40);
    }
}
