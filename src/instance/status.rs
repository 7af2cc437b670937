//! The watcher's observation of its instance: `status/<id>.json`, written only by the watcher
//! (atomically, when something changed, and at every health probe so that its freshness shows),
//! read by `ls` so that it asks no server. Never trusted when the watcher is gone, when it is
//! about another server than the record names, or when it is older than the probes allow.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::home::{self, Home};
use crate::output;
use crate::record::Record;

/// The format of the file; a different one is not read (the server is asked instead).
const SCHEMA: u32 = 1;
/// How many of the watcher's own answers the file keeps.
const ANSWERS_KEPT: usize = 20;

/// What the watcher sees of its server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub schema: u32,
    /// The server this is about (a restart makes an observation of the old one stale).
    pub pid: u32,
    pub healthy: bool,
    /// Since when it has been healthy (RFC 3339).
    #[serde(default)]
    pub healthy_since: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    /// Sessions that are not idle, with what they do (`busy`, `retry`).
    #[serde(default)]
    pub busy: BTreeMap<String, String>,
    /// Permission requests and questions waiting for an answer.
    #[serde(default)]
    pub pending: Vec<Pending>,
    /// The watcher follows the server's event stream right now.
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub last_event_at: Option<String>,
    #[serde(default)]
    pub rss_bytes: Option<u64>,
    /// The latest answers the watcher gave itself (`--permission`, `--ask-timeout`).
    #[serde(default)]
    pub answered: Vec<Answered>,
    /// When the watcher wrote this (RFC 3339).
    pub updated_at: String,
}

/// A permission request or a question waiting for an answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub id: String,
    /// `permission` or `question`.
    pub kind: String,
    pub session: String,
    /// What is asked: `bash (rm -rf build)`, or the question.
    pub what: String,
    /// When it was asked (RFC 3339).
    pub asked_at: String,
}

/// An answer the watcher gave because no client did in time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answered {
    pub at: String,
    pub kind: String,
    pub session: String,
    pub what: String,
    /// `reject`, `once`, or `dismissed`.
    pub reply: String,
}

impl Observation {
    pub fn new(pid: u32) -> Observation {
        Observation { schema: SCHEMA, pid, updated_at: output::rfc3339_in(Duration::ZERO), ..Default::default() }
    }

    /// `idle`, `busy 2`, or `asking 1m20s` (how long the oldest question of a busy session has
    /// waited).
    pub fn activity(&self, now: SystemTime) -> String {
        let asking = self.pending.iter().filter(|p| self.busy.contains_key(&p.session));
        let oldest = asking.filter_map(|p| humantime::parse_rfc3339(&p.asked_at).ok()).min();
        match (self.busy.len(), oldest) {
            (0, _) => "idle".to_string(),
            (_, Some(at)) => format!("asking {}", output::duration(now.duration_since(at).unwrap_or_default())),
            (n, None) => format!("busy {n}"),
        }
    }

    /// Keep an answer the watcher gave (the last few).
    pub fn answered(&mut self, answer: Answered) {
        self.answered.push(answer);
        let excess = self.answered.len().saturating_sub(ANSWERS_KEPT);
        self.answered.drain(..excess);
    }
}

/// Where instance `id`'s observation is.
pub fn path(home: &Home, id: &str) -> PathBuf {
    home.root().join("status").join(format!("{id}.json"))
}

/// Write the observation (the watcher does, atomically).
pub fn write(home: &Home, id: &str, observation: &Observation) -> Result<()> {
    let path = path(home, id);
    if let Some(dir) = path.parent() {
        crate::process::create_private_dir_all(dir)?;
    }
    home::write_atomic(&path, &serde_json::to_vec(observation)?)
}

/// The observation as the watcher last wrote it, fresh or not.
pub fn read(home: &Home, id: &str) -> Option<Observation> {
    use std::io::Read;
    // Not `fs::read`: `ls` reads 1,000 of these, and its size query is a syscall more each.
    let mut bytes = Vec::with_capacity(4096);
    std::fs::File::open(path(home, id)).ok()?.take(1 << 20).read_to_end(&mut bytes).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Remove it (the watcher, as it exits).
pub fn remove(home: &Home, id: &str) {
    let _ = std::fs::remove_file(path(home, id));
}

/// The observation of `record`'s server, if there is a fresh one: about the server the record
/// names, of this format, and written within what its health probes allow (the caller checks
/// that the watcher is alive and the instance's).
pub fn fresh(home: &Home, record: &Record, now: SystemTime) -> Option<Observation> {
    let observation = read(home, &record.id)?;
    let written = humantime::parse_rfc3339(&observation.updated_at).ok()?;
    // A probe every interval (and one taking up to 5 s), plus slack for a loaded machine.
    let allowed = Duration::from_secs(record.supervision.health_interval_s.max(1) * 2 + 10);
    let age = now.duration_since(written).unwrap_or_default();
    (observation.schema == SCHEMA && observation.pid == record.pid && age <= allowed).then_some(observation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_says_idle_busy_or_how_long_it_has_been_asking() {
        let now = SystemTime::now();
        let mut o = Observation::new(1);
        assert_eq!(o.activity(now), "idle");
        o.busy.insert("ses_a".into(), "busy".into());
        o.busy.insert("ses_b".into(), "busy".into());
        assert_eq!(o.activity(now), "busy 2");
        let asked = humantime::format_rfc3339_millis(now - Duration::from_secs(80)).to_string();
        o.pending.push(Pending {
            id: "per_1".into(),
            kind: "permission".into(),
            session: "ses_a".into(),
            what: "bash (ls)".into(),
            asked_at: asked,
        });
        assert_eq!(o.activity(now), "asking 1m20s");
        // A request left over from a session that is idle now does not count.
        o.busy.remove("ses_a");
        assert_eq!(o.activity(now), "busy 1");
        for i in 0..30 {
            o.answered(Answered {
                at: String::new(),
                kind: "permission".into(),
                session: format!("s{i}"),
                what: String::new(),
                reply: "reject".into(),
            });
        }
        assert_eq!(o.answered.len(), ANSWERS_KEPT);
        assert_eq!(o.answered[0].session, "s10");
    }

    #[test]
    fn only_a_fresh_observation_of_the_recorded_server_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(Some(dir.path())).unwrap();
        let record = crate::record::tests::sample("abc123", None);
        let now = SystemTime::now();
        assert!(fresh(&home, &record, now).is_none(), "no file");
        write(&home, "abc123", &Observation::new(record.pid)).unwrap();
        assert!(fresh(&home, &record, now).is_some());
        assert!(fresh(&home, &record, now + Duration::from_secs(3600)).is_none(), "too old");
        write(&home, "abc123", &Observation::new(record.pid + 1)).unwrap();
        assert!(fresh(&home, &record, now).is_none(), "about another server");
    }
}
