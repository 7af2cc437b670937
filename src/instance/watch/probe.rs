//! The watcher's health probe: a lean HTTP GET on a plain connection (no ureq, no serde: see
//! `probe`), and what the watcher makes of the answers on its slow timer — healthy yet, still
//! healthy, busy, too big.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::Watcher;
use super::policy::{BUSY_GRACE, PROBE_TIMEOUT, STARTUP_LIMIT, STARTUP_POLL, STARTUP_SLOW_POLL};
use crate::instance::report::Report;
use crate::output;
use crate::process::{self, Processes, Signal};
use crate::record::Record;
use crate::server::HEALTH_PATHS;

impl Watcher<'_> {
    /// Probe the server: is it healthy yet, still healthy, busy, too big?
    pub(super) fn on_timer(&mut self) -> Result<()> {
        let Some(server) = self.server.as_mut() else { return Ok(()) };
        let now = Instant::now();
        if let Some((reason, kill_at)) = server.ending {
            if now >= kill_at {
                // TERM was not enough. Once: the reaper reports the exit.
                server.ending = Some((reason, now + Duration::from_secs(3600)));
                let (id, _) = (server.id, server.tree.end());
                process::signal(&super::live(id)?, Signal::Kill)?;
            }
            return Ok(());
        }
        if server.healthy_since.is_none() {
            let spawned_at = server.spawned_at;
            // Often once it said it listens, on a slow timer until then.
            self.next_probe = now + if server.ready_line { STARTUP_POLL } else { STARTUP_SLOW_POLL };
            // From the spawn on, whether the ready line came or not: a future opencode may word
            // it differently, and health is what counts.
            if let Some(version) = self.probe_health(Duration::from_secs(2)) {
                self.healthy(version);
            } else if now >= spawned_at + STARTUP_LIMIT && !self.reporting {
                self.end_server("unresponsive", "not healthy within 2 minutes of its start");
            }
            return Ok(());
        }
        let interval = Duration::from_secs(self.record.supervision.health_interval_s.max(1));
        self.next_probe = now + interval;
        match self.probe_health(PROBE_TIMEOUT) {
            Some(version) => {
                if version.is_some() {
                    // Upgraded in place, it says so: `ls` shows what runs.
                    self.observation.version = version;
                }
                self.failed_probes = 0;
                self.unresponsive_since = None;
                self.waiting_for_idle = false;
                // `/session/status` lists the sessions that are not idle: `{}` when none is. A
                // status that did not come (the server wedged just after its health answer)
                // leaves what was known. While the event stream is up, the sessions it shows
                // busy count too: it hears of a turn at once, a probe up to an interval late.
                if let Some((_, body)) = probe(&self.record, &self.auth, "/session/status", PROBE_TIMEOUT)
                    .filter(|(status, _)| *status == 200)
                {
                    self.busy = body.trim_ascii() != b"{}";
                }
                self.busy |= self.observation.stream && !self.observation.busy.is_empty();
                let rss = self.check_memory();
                self.probed(true, rss);
            }
            None => {
                self.probed(false, None);
                self.failed_probes += 1;
                let since = *self.unresponsive_since.get_or_insert(now);
                if self.failed_probes >= self.record.supervision.health_failures.max(1) {
                    if !self.busy {
                        let why = format!("{} health checks in a row failed", self.failed_probes);
                        self.end_server("unresponsive", &why);
                    } else if now.duration_since(since) >= BUSY_GRACE {
                        let why = format!("unresponsive for {} while busy", output::duration(now - since));
                        self.end_server("unresponsive", &why);
                    } else if !std::mem::replace(&mut self.waiting_for_idle, true) {
                        self.log_line(&format!(
                            "--- ocx: {} health checks in a row failed, but a session was busy: waiting up to {} \
                             before restarting it",
                            self.failed_probes,
                            output::duration(BUSY_GRACE)
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Restart a server whose memory stayed above the limit, once no session is busy. Its
    /// resident memory, for the observation.
    fn check_memory(&mut self) -> Option<u64> {
        let server = self.server.as_ref()?;
        let rss = Processes::of(&[server.id.pid]).ok().and_then(|t| t.find(&server.id)).map_or(0, |p| p.rss);
        let Some(limit) = self.record.supervision.max_memory else { return Some(rss) };
        if rss <= limit {
            self.over_memory = 0;
            self.waiting_for_idle = false;
            return Some(rss);
        }
        self.over_memory += 1;
        let why = format!("resident memory {} over --max-memory {}", output::bytes(rss), output::bytes(limit));
        if self.over_memory >= 2 && !self.busy {
            self.end_server("memory", &why);
        } else {
            if self.busy && !std::mem::replace(&mut self.waiting_for_idle, true) {
                self.log_line(&format!("--- ocx: {why}; restarting it once no session is busy"));
            }
            // Over the limit: look again soon, to restart at the first moment nothing is busy.
            self.next_probe = Instant::now() + Duration::from_secs(1);
        }
        Some(rss)
    }

    /// The health check's answer (the server's version), or None when it failed. The paths
    /// are tried in order while the server does not know one (404).
    fn probe_health(&self, timeout: Duration) -> Option<Option<String>> {
        for path in HEALTH_PATHS {
            let (status, body) = probe(&self.record, &self.auth, path, timeout)?;
            match status {
                200 => return healthy_version(&body),
                404 => continue,
                _ => return None,
            }
        }
        None
    }

    /// The server just answered its first health check.
    fn healthy(&mut self, version: Option<String>) {
        let now = Instant::now();
        if let Some(server) = self.server.as_mut() {
            server.healthy_since = Some(now);
        }
        self.next_probe = now + Duration::from_secs(self.record.supervision.health_interval_s.max(1));
        self.start_following(version.clone());
        if self.reporting {
            // The ocx that spawned the watcher records it as running; if it is gone (killed
            // while it waited), the watcher does.
            let told = self.report(&Report::Ready { version: version.clone() });
            self.reporting = false;
            if !told && let Err(err) = self.record_running(version) {
                self.note(&format!("error: {err:#}"));
            }
            // What it took to get here is not needed again: keep the watcher small.
            process::shed_code_pages();
        } else if let Err(err) = self.record_running(version) {
            self.note(&format!("error: {err:#}"));
        }
    }

    /// A restarted server is healthy again: `running`, unless a stop came meanwhile.
    fn record_running(&mut self, version: Option<String>) -> Result<()> {
        let Some(mut held) = self.hold()? else { return Ok(()) };
        held.healthy(version)?;
        self.record = held.record().clone();
        Ok(())
    }
}

/// `{"healthy":true,"version":"1.18.33"}`, read without a JSON parser (see `probe`): Some(the
/// version) when healthy.
fn healthy_version(body: &[u8]) -> Option<Option<String>> {
    let body = std::str::from_utf8(body).ok()?;
    let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    compact.contains("\"healthy\":true").then(|| {
        let (_, rest) = compact.split_once("\"version\":\"")?;
        Some(rest.split('"').next()?.to_string())
    })
}

/// `GET path` of the instance's server with its credentials (`auth`: the header line, or
/// empty): the status and body. One request on a plain connection, the only HTTP a watcher
/// does every few seconds, written out instead of going through `server::Client` (ureq,
/// serde_json), whose code would make up most of a long-lived watcher's resident memory
/// (measured: 4.1 MiB with it, 2.7 MiB without; docs/benchmarks.md). Kept hand-written for
/// that saving.
pub(super) fn probe(record: &Record, auth: &str, path: &str, timeout: Duration) -> Option<(u16, Vec<u8>)> {
    request(record, auth, "GET", path, None, timeout)
}

/// `POST path` with a JSON `body`: the status and body of the answer (the watcher's answers to
/// questions nobody else answered).
pub(super) fn post(record: &Record, auth: &str, path: &str, body: &str, timeout: Duration) -> Option<(u16, Vec<u8>)> {
    request(record, auth, "POST", path, Some(body), timeout)
}

fn request(
    record: &Record,
    auth: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Option<(u16, Vec<u8>)> {
    use std::net::{TcpStream, ToSocketAddrs};
    let authority = record.url.strip_prefix("http://")?.trim_end_matches('/');
    let addr = authority.to_socket_addrs().ok()?.next()?;
    let mut conn = TcpStream::connect_timeout(&addr, timeout).ok()?;
    conn.set_read_timeout(Some(timeout)).ok()?;
    conn.set_write_timeout(Some(timeout)).ok()?;
    let content =
        body.map_or(String::new(), |b| format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.len()));
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\n{auth}{content}Connection: close\r\n\r\n{}",
        body.unwrap_or("")
    )
    .ok()?;
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).ok()?;
    let head_end = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let (head, body) = (&answer[..head_end], &answer[head_end + 4..]);
    let head = String::from_utf8_lossy(head);
    let status: u16 = head.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()?;
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    Some((status, if chunked { dechunk(body)? } else { body.to_vec() }))
}

/// A chunked body's content.
fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_put_together() {
        assert_eq!(dechunk(b"4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n").unwrap(), b"{\"a\":1}");
        assert_eq!(dechunk(b"2\r\n{}\r\n0\r\n\r\n").unwrap(), b"{}");
        assert!(dechunk(b"zz\r\n").is_none());
    }

    #[test]
    fn health_answers_are_read_without_a_parser() {
        assert_eq!(healthy_version(br#"{"healthy":true,"version":"1.18.33"}"#), Some(Some("1.18.33".into())));
        assert_eq!(healthy_version(br#"{ "healthy": true }"#), Some(None));
        assert_eq!(healthy_version(br#"{"healthy":false}"#), None);
    }
}
