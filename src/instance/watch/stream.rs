//! The watcher's eyes on its server: a thread that follows the server's event stream
//! (`GET /event`, server-sent events over chunked HTTP/1.1, on a plain connection like the
//! health probe) and hands the watcher what matters for the instance's observation: sessions
//! busy and idle, permission requests and questions asked and answered, session errors. The
//! server sends a heartbeat every 10 s: a stream silent for 30 s is taken as dropped, and the
//! thread reconnects (across restarts too) until its spawn is not the current one any more.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::time::Duration;

use super::Event;
use crate::events::{self, Event as ServerEvent, Status};

/// A stream silent this long (three heartbeats) is dead even if its connection looks open.
const SILENCE: Duration = Duration::from_secs(30);
/// The event types the observation follows (as they appear in an event's JSON).
const WANTED: [&str; 7] = [
    "\"session.status\"",
    "\"session.idle\"",
    "\"session.error\"",
    "\"session.created\"",
    "\"session.updated\"",
    "\"permission.",
    "\"question.",
];
/// Between two attempts to get the stream back.
const RETRY: Duration = Duration::from_secs(1);

/// What the watcher learns from its server's events.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// The stream is (back) up: what it missed meanwhile is to be read afresh.
    Up,
    Down,
    /// A session's status: `idle`, `busy` or `retry`.
    Status {
        session: String,
        status: String,
    },
    /// A permission request or a question (`kind`), waiting for an answer.
    Asked {
        id: String,
        kind: &'static str,
        session: String,
        what: String,
    },
    /// A request was answered (by anyone).
    Replied {
        id: String,
    },
    Title {
        session: String,
        title: String,
    },
    Error {
        session: String,
        message: String,
    },
}

/// Follow the event stream of the server at `url` (spawn number `spawn`) on a thread of its own,
/// until `current` says another spawn is the server now.
pub fn follow(url: &str, auth: &str, spawn: u64, current: Arc<AtomicU64>, tx: Sender<Event>) {
    let (url, auth) = (url.to_string(), auth.to_string());
    let _ = std::thread::Builder::new().stack_size(256 * 1024).spawn(move || {
        while current.load(Ordering::SeqCst) == spawn {
            let followed = stream(&url, &auth, &mut |seen| {
                current.load(Ordering::SeqCst) == spawn && tx.send(Event::Seen(spawn, seen)).is_ok()
            });
            if followed && tx.send(Event::Seen(spawn, Seen::Down)).is_err() {
                return;
            }
            std::thread::sleep(RETRY);
        }
    });
}

/// One connection's worth of the stream: whether it got as far as the stream (then `Down` is
/// due when it ends). `see` returns false when nobody wants more.
fn stream(url: &str, auth: &str, see: &mut dyn FnMut(Seen) -> bool) -> bool {
    let Some(authority) = url.strip_prefix("http://").map(|a| a.trim_end_matches('/')) else { return false };
    let Some(addr) = authority.to_socket_addrs().ok().and_then(|mut a| a.next()) else { return false };
    let Ok(mut conn) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else { return false };
    if conn.set_read_timeout(Some(SILENCE)).is_err()
        || write!(conn, "GET /event HTTP/1.1\r\nHost: {authority}\r\n{auth}Accept: text/event-stream\r\n\r\n").is_err()
    {
        return false;
    }
    let mut reader = BufReader::new(conn);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return false;
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line.to_ascii_lowercase());
    }
    if !head.starts_with("http/1.1 200") {
        return false;
    }
    if !see(Seen::Up) {
        return true;
    }
    let body: Box<dyn Read> =
        if head.contains("transfer-encoding: chunked") { Box::new(Chunked::new(reader)) } else { Box::new(reader) };
    let mut data = String::new();
    for line in BufReader::new(body).lines() {
        let Ok(line) = line else { break };
        if let Some(value) = line.strip_prefix("data:") {
            data.push_str(value.trim_start());
            continue;
        }
        if !line.is_empty() || data.is_empty() {
            continue;
        }
        // Most events (heartbeats, message parts and their deltas) mean nothing here: they are
        // passed over without parsing, so that the parser's code stays out of the watcher's
        // resident memory while its server idles or streams.
        let wanted = WANTED.iter().any(|t| data.contains(t));
        let seen = wanted
            .then(|| serde_json::from_str(&data).ok())
            .flatten()
            .and_then(|raw| ServerEvent::parse(&raw).ok())
            .and_then(seen);
        data.clear();
        if let Some(seen) = seen
            && !see(seen)
        {
            break;
        }
    }
    true
}

/// What one of the server's events means for the observation.
fn seen(event: ServerEvent) -> Option<Seen> {
    Some(match event {
        ServerEvent::SessionStatus { session, status } => {
            let status = match status {
                Status::Idle => "idle",
                Status::Busy => "busy",
                Status::Retry { .. } => "retry",
            };
            Seen::Status { session, status: status.to_string() }
        }
        ServerEvent::SessionIdle { session } => Seen::Status { session, status: "idle".into() },
        ServerEvent::PermissionAsked(p) => Seen::Asked {
            what: format!("{} ({})", p.permission, p.patterns.join(", ")),
            id: p.id,
            kind: "permission",
            session: p.session,
        },
        ServerEvent::QuestionAsked(q) => Seen::Asked {
            what: q.questions.iter().map(|q| q.question.as_str()).collect::<Vec<_>>().join(" / "),
            id: q.id,
            kind: "question",
            session: q.session,
        },
        ServerEvent::PermissionReplied { request, .. }
        | ServerEvent::QuestionReplied { request, .. }
        | ServerEvent::QuestionRejected { request, .. } => Seen::Replied { id: request },
        ServerEvent::SessionCreated { info } | ServerEvent::SessionUpdated { info } => {
            Seen::Title { session: info.id, title: info.title }
        }
        ServerEvent::SessionError { session: Some(session), error } => Seen::Error {
            session,
            message: error.map_or_else(|| "failed".to_string(), |e| events::ErrorInfo::message(&e)),
        },
        _ => return None,
    })
}

/// A chunked HTTP body, read as the plain bytes it carries.
struct Chunked<R> {
    inner: R,
    /// Bytes left in the current chunk; None at the end of the body.
    left: Option<usize>,
}

impl<R: BufRead> Chunked<R> {
    fn new(inner: R) -> Self {
        Chunked { inner, left: Some(0) }
    }
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.left {
                None => return Ok(0),
                Some(0) => {
                    let mut line = String::new();
                    if self.inner.read_line(&mut line)? == 0 {
                        return Ok(0);
                    }
                    let size = line.trim();
                    if size.is_empty() {
                        continue; // the CRLF after a chunk's data
                    }
                    let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
                        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "a bad chunk size"))?;
                    self.left = (size > 0).then_some(size);
                }
                Some(left) => {
                    let room = left.min(buf.len());
                    let n = self.inner.read(&mut buf[..room])?;
                    if n == 0 {
                        return Ok(0);
                    }
                    self.left = Some(left - n);
                    return Ok(n);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunked_body_reads_as_its_bytes() {
        let body = b"5\r\nhello\r\n7\r\n world\n\r\n0\r\n\r\n";
        let mut text = String::new();
        Chunked::new(&body[..]).read_to_string(&mut text).unwrap();
        assert_eq!(text, "hello world\n");
    }

    #[test]
    fn the_events_that_matter_are_seen() {
        let parse = |json: serde_json::Value| seen(ServerEvent::parse(&json).unwrap());
        assert_eq!(
            parse(
                serde_json::json!({"type": "session.status", "properties": {"sessionID": "s", "status": {"type": "busy"}}})
            ),
            Some(Seen::Status { session: "s".into(), status: "busy".into() })
        );
        let asked = serde_json::json!({"type": "permission.asked", "properties": {"id": "per_1", "sessionID": "s", "permission": "bash", "patterns": ["ls"]}});
        assert_eq!(
            parse(asked),
            Some(Seen::Asked { id: "per_1".into(), kind: "permission", session: "s".into(), what: "bash (ls)".into() })
        );
        assert_eq!(parse(serde_json::json!({"type": "server.heartbeat", "properties": {}})), None);
    }
}
