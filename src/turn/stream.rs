//! Following a turn's event stream: subscribing (and waiting for the server to confirm it),
//! getting a dropped stream back, and catching up from the server's stored messages on what the
//! stream did not carry.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use serde_json::Value;

use super::{Fate, POLL, SETTLE, Turn, interruption};
use crate::error::{Failure, code};
use crate::events::Part;
use crate::server::{Client, Events};

/// Waits between attempts to get the event stream back (about 8 s in all).
const RECONNECT_DELAYS_MS: [u64; 6] = [100, 300, 600, 1000, 2000, 4000];

/// The event stream as a turn reads it: events, then None when the stream ended.
pub type Stream = Receiver<Option<Value>>;

/// Open the event stream on a thread and wait for the server to confirm it; Ctrl-C or the
/// `deadline` cut the wait short (the caller tells them apart from a failure).
fn open(client: &Client, deadline: Option<Instant>) -> Result<Stream> {
    let events: Events = client.events()?;
    let (tx, rx) = mpsc::channel();
    // Ends with the stream: closed, failed, or silent for `server::EVENTS_SILENCE`.
    std::thread::spawn(move || {
        for event in events {
            let Ok(event) = event else { break };
            if tx.send(Some(event)).is_err() {
                break;
            }
        }
        let _ = tx.send(None);
    });
    let settled = Instant::now() + SETTLE;
    loop {
        match rx.recv_timeout(POLL) {
            Ok(Some(first)) if first["type"] == "server.connected" => return Ok(rx),
            Ok(Some(other)) => {
                return Err(anyhow!("the event stream began with {}, not server.connected", other["type"]));
            }
            Err(RecvTimeoutError::Timeout) if Instant::now() < settled && interruption(deadline).is_none() => {}
            _ => return Err(anyhow!("the server did not confirm the event subscription")),
        }
    }
}

impl Turn<'_> {
    /// Subscribe to the server's events, unless Ctrl-C or the deadline comes first.
    pub(super) fn subscribe(&mut self) -> Result<Stream> {
        let subscribed = open(self.client, self.options.deadline);
        self.check_interruptions(None)?;
        subscribed.context("cannot subscribe to the server's events")
    }

    /// The stream dropped (or went silent): get it back, then print what was missed and answer
    /// what was asked meanwhile. None when the session finished meanwhile. Ctrl-C and the
    /// deadline are looked at all along, as while the stream is up.
    pub(super) fn reconnect(&mut self) -> Result<Option<Stream>> {
        self.printer.lose_sync();
        for delay in RECONNECT_DELAYS_MS {
            let what = match self.server.fate()? {
                Fate::Alive => None,
                Fate::Gone => Some("died while answering"),
                Fate::Restarted => Some("died while answering; its watcher restarted it"),
            };
            if let Some(what) = what {
                self.in_flight = false;
                self.server_lost = true;
                return Err(anyhow!(
                    Failure::new(code::FAILED, format!("instance {} {what}", self.server.label()))
                        .hint(format!("see its log: ocx logs {}", self.server.id()))
                ));
            }
            self.pause(Duration::from_millis(delay))?;
            let subscribed = open(self.client, self.options.deadline);
            self.check_interruptions(None)?;
            let Ok(events) = subscribed else { continue };
            // Answering may have waited at the terminal until Ctrl-C or the deadline.
            let resynced = self.resync();
            self.check_interruptions(Some(&events))?;
            let Ok(busy) = resynced else { continue };
            return Ok(busy.then_some(events));
        }
        Err(anyhow!(
            Failure::new(code::FAILED, format!("lost the event stream of instance {}", self.server.label()))
                .hint(format!("the answer may still be on the server: ocx wait {}", self.session))
        ))
    }

    /// Catch up from the server's own records: print what the session's messages hold beyond
    /// what was printed, answer requests still waiting. Whether the session is still busy.
    pub(super) fn resync(&mut self) -> Result<bool> {
        // Status first: messages read after the session was seen idle are final (read before,
        // they could hold a reply that ended in between, with its text still empty).
        let busy = self.client.busy_sessions().map(|b| b.contains_key(&self.session)).unwrap_or(true);
        // This turn's messages only: a long session's earlier ones pass 10 MB.
        let messages = self.client.last_turn(&self.session)?;
        self.catch_up(&messages)?;
        self.answerer.pending(self.client, &mut self.printer, &self.sessions)?;
        // A prompt the server has stored but not begun to answer is under way too.
        let answered = messages.iter().any(|m| {
            m["info"]["role"] == "assistant" && m["info"]["parentID"].as_str() == self.prompt_message.as_deref()
        });
        Ok(busy || (self.prompt_message.is_some() && !answered))
    }

    /// The sessions this one started (subagents), whose requests are this turn's to answer.
    pub(super) fn subagents(&mut self) -> Result<()> {
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
    pub(super) fn catch_up(&mut self, messages: &[Value]) -> Result<()> {
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
}
