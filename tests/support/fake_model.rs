//! A fake OpenAI-compatible model on a loopback port, so real opencode servers run offline.
//!
//! What it answers depends on the last user message of each `/v1/chat/completions` call:
//! - `FAIL` anywhere → HTTP 500;
//! - `SLOW` → 40 text chunks (`tick N `), 150 ms apart;
//! - `ENDLESS` → text chunks 150 ms apart until the caller hangs up (or 10 minutes): an answer
//!   that ends only when it is aborted;
//! - `HUGE` (when the call offers tools) → [`huge_answer`], about 12 MB of text in 64 KiB chunks
//!   (longer than ureq's default body cap, as a long session's messages are);
//! - `RUN:<command>` (when the call offers tools) → a `bash` tool call running `<command>`;
//! - `ASK:` (when the call offers the `question` tool) → the agent asks "Pick one?" (A or B);
//! - anything else → `echo: <the message>` streamed in small chunks.
//!
//! After a tool result (last message has role `tool`) it answers `tool finished`.
//! Every request body is kept for assertions, and the most agent calls (those that offer
//! tools) it answered at once.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

pub struct FakeModel {
    pub port: u16,
    requests: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
    load: Arc<Load>,
}

/// Agent calls being answered now, and the most there were at once.
#[derive(Default)]
struct Load {
    now: AtomicUsize,
    most: AtomicUsize,
}

impl FakeModel {
    pub fn start() -> FakeModel {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake model");
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let load = Arc::new(Load::default());
        let (reqs, stopped, loaded) = (Arc::clone(&requests), Arc::clone(&stop), Arc::clone(&load));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (reqs, load) = (Arc::clone(&reqs), Arc::clone(&loaded));
                std::thread::spawn(move || {
                    let _ = serve(conn, &reqs, &load);
                });
            }
        });
        FakeModel { port, requests, stop, load }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// Every chat-completion request body received so far.
    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }

    /// The most agent calls (calls that offer tools: not a title's) answered at once so far.
    pub fn most_at_once(&self) -> usize {
        self.load.most.load(Ordering::SeqCst)
    }
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(conn: TcpStream, requests: &Mutex<Vec<Value>>, load: &Load) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut content_length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            content_length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body)?;
    let mut conn = conn;
    if !request_line.starts_with("POST") || !request_line.contains("/chat/completions") {
        return conn.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    requests.lock().unwrap().push(request.clone());
    let agent = request.get("tools").is_some_and(|t| t.as_array().is_some_and(|a| !a.is_empty()));
    if !agent {
        return answer(&mut conn, &request);
    }
    let now = load.now.fetch_add(1, Ordering::SeqCst) + 1;
    load.most.fetch_max(now, Ordering::SeqCst);
    let answered = answer(&mut conn, &request);
    load.now.fetch_sub(1, Ordering::SeqCst);
    answered
}

fn answer(conn: &mut TcpStream, request: &Value) -> std::io::Result<()> {
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    let last_role = messages.last().and_then(|m| m["role"].as_str()).unwrap_or("");
    let text = messages.iter().rev().find(|m| m["role"] == "user").map(message_text).unwrap_or_default();
    let offers_tools = request.get("tools").is_some_and(|t| t.as_array().is_some_and(|a| !a.is_empty()));

    if last_role == "tool" {
        return stream_text(conn, &["tool ", "finished"], Duration::ZERO);
    }
    if text.contains("FAIL") {
        let body = r#"{"error":{"message":"the fake model failed on purpose","type":"server_error"}}"#;
        let head = format!(
            "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        conn.write_all(head.as_bytes())?;
        return conn.write_all(body.as_bytes());
    }
    if text.contains("ENDLESS") {
        let ticks: Vec<String> = (0..4000).map(|i| format!("tick {i} ")).collect();
        let ticks: Vec<&str> = ticks.iter().map(String::as_str).collect();
        return stream_text(conn, &ticks, Duration::from_millis(150));
    }
    if text.contains("SLOW") {
        let ticks: Vec<String> = (0..40).map(|i| format!("tick {i} ")).collect();
        let ticks: Vec<&str> = ticks.iter().map(String::as_str).collect();
        return stream_text(conn, &ticks, Duration::from_millis(150));
    }
    if offers_tools && text.contains("HUGE") {
        // Only the main call: a title or summary call must not get 12 MB too.
        let huge = huge_answer();
        let pieces: Vec<&str> = huge.as_bytes().chunks(HUGE_CHUNK).map(|c| std::str::from_utf8(c).unwrap()).collect();
        return stream_text(conn, &pieces, Duration::ZERO);
    }
    let offers = |name: &str| {
        request["tools"].as_array().is_some_and(|tools| tools.iter().any(|t| t["function"]["name"] == name))
    };
    if text.contains("ASK:") && offers("question") {
        let args = json!({"questions": [{"question": "Pick one?", "header": "Pick", "options": [
            {"label": "A", "description": "option a"}, {"label": "B", "description": "option b"}]}]})
        .to_string();
        let call = json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_q", "type": "function",
            "function": {"name": "question", "arguments": args}}]});
        start_sse(conn)?;
        send_chunk(conn, call, None)?;
        send_chunk(conn, json!({}), Some("tool_calls"))?;
        return conn.write_all(b"data: [DONE]\n\n");
    }
    if offers_tools && let Some(command) = text.split("RUN:").nth(1).map(|c| c.lines().next().unwrap_or("").trim()) {
        let args = json!({"command": command, "description": "run what the test asked for"}).to_string();
        let call = json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_1", "type": "function",
            "function": {"name": "bash", "arguments": args}}]});
        start_sse(conn)?;
        send_chunk(conn, call, None)?;
        send_chunk(conn, json!({}), Some("tool_calls"))?;
        return conn.write_all(b"data: [DONE]\n\n");
    }
    let reply = format!("echo: {text}");
    let pieces: Vec<String> = reply.chars().collect::<Vec<_>>().chunks(6).map(|c| c.iter().collect()).collect();
    let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
    stream_text(conn, &pieces, Duration::ZERO)
}

/// The size of each chunk of the `HUGE` answer.
const HUGE_CHUNK: usize = 64 * 1024;

/// What the fake model answers to `HUGE`: 192 chunks of 1024 numbered 64-byte lines (12 MiB).
pub fn huge_answer() -> String {
    (0..192 * 1024).map(|i| format!("huge line {i:06} {}\n", "x".repeat(64 - 18))).collect()
}

fn message_text(message: &Value) -> String {
    match &message["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join("\n"),
        _ => String::new(),
    }
}

fn start_sse(conn: &mut TcpStream) -> std::io::Result<()> {
    conn.write_all(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n",
    )
}

fn stream_text(conn: &mut TcpStream, pieces: &[&str], gap: Duration) -> std::io::Result<()> {
    start_sse(conn)?;
    send_chunk(conn, json!({"role": "assistant", "content": ""}), None)?;
    for piece in pieces {
        send_chunk(conn, json!({"content": piece}), None)?;
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
    }
    send_chunk(conn, json!({}), Some("stop"))?;
    conn.write_all(b"data: [DONE]\n\n")
}

fn send_chunk(conn: &mut TcpStream, delta: Value, finish: Option<&str>) -> std::io::Result<()> {
    let mut chunk = json!({"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "fake",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    if finish.is_some() {
        chunk["usage"] = json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15});
    }
    conn.write_all(format!("data: {chunk}\n\n").as_bytes())?;
    conn.flush()
}
