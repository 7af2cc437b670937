//! The instance record: its type and parts, and parsing a record file's bytes. The store on
//! disk is `store`; resolving what the user typed to a record is `resolve`.

mod resolve;
mod store;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::process::ProcId;

// Callers name `record::load`, `record::resolve`: the split into files is this module's own.
pub use resolve::*;
pub use store::*;

/// The record format this ocx reads and writes. Fields added since have serde defaults, so a
/// schema-1 record written by an older ocx still loads.
pub const SCHEMA: u32 = 1;
const ID_LEN: usize = 6;

/// What ocx wrote down about one instance. Whether it is alive is never trusted from here:
/// it is observed (see `process`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub schema: u32,
    pub id: String,
    pub name: Option<String>,
    pub pid: u32,
    /// The OS's start time of `pid` (seconds since the epoch): a PID whose start time differs
    /// is another process, and ocx never signals it. See `ProcId` for how it is compared.
    pub pid_started_at: u64,
    /// The exact start time of `pid` in the OS's own units (see `ProcId::start_key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start_key: Option<u64>,
    pub hostname: String,
    pub port: u16,
    pub url: String,
    pub username: String,
    /// None when started with `--no-auth`.
    pub password: Option<String>,
    pub dir: PathBuf,
    pub opencode: Binary,
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub log: PathBuf,
    pub started_at: String,
    pub state: State,
    /// The watcher supervising the server (None: the record of an ocx without supervision).
    #[serde(default)]
    pub watcher: Option<ProcId>,
    /// What the watcher does when the server exits. Records from before supervision: `no`.
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// How the watcher keeps the server's log and health.
    #[serde(default)]
    pub supervision: Supervision,
    /// How many times the server was restarted (by its watcher, or by `ocx restart`).
    #[serde(default)]
    pub restarts: u32,
    /// How the server last ended, if it did.
    #[serde(default)]
    pub last_exit: Option<Exit>,
    /// When the watcher will start the server again (it waits between unstable exits).
    #[serde(default)]
    pub next_restart_at: Option<String>,
    /// Why the watcher gave up restarting the server; the instance stays until restarted or stopped.
    #[serde(default)]
    pub failed: Option<String>,
    /// The host the record came from (`ocx --host`), in memory only: its process is not
    /// this machine's to look at.
    #[serde(skip)]
    pub remote: Option<String>,
    /// The fleet file (`ocx.toml`, absolute) whose `ocx up` started the instance; None for
    /// `ocx start`. `up`, `down` and `ls --project` select by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<PathBuf>,
    /// The git worktree ocx made for the instance (`ocx start --worktree`): the server serves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worktree: Option<Worktree>,
    /// The instance's own opencode database (`ocx start --isolate`), given as `OPENCODE_DB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db: Option<PathBuf>,
}

/// A git worktree ocx created for an instance, on a branch of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Worktree {
    /// The worktree's directory (under `<home>/worktrees/<id>/`).
    pub path: PathBuf,
    pub branch: String,
    /// The commit the branch started from: what `ocx diff` compares with, and what counts as
    /// "no work on the branch".
    pub base: String,
    /// The repository's main working tree.
    pub repo: PathBuf,
    /// Whether ocx created the branch (only then may it delete it).
    pub created_branch: bool,
}

/// What the watcher does when the server exits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never restart; the watcher only keeps the log and records the exit.
    #[default]
    No,
    /// Restart after a crash: a non-zero exit, or death by a signal other than TERM.
    OnFailure,
    /// Restart after any exit, also a clean one.
    Always,
}

/// How a watcher keeps its server's log and health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Supervision {
    /// The log file is rotated before it would grow past this many bytes.
    pub log_max_size: u64,
    /// The log and its rotated files: at most this many.
    pub log_max_files: u32,
    /// Seconds between health checks of a healthy server.
    pub health_interval_s: u64,
    /// This many failed health checks in a row make the server `unresponsive`: restarted.
    pub health_failures: u32,
    /// Restart the server when its resident memory stays above this many bytes.
    pub max_memory: Option<u64>,
    /// What the watcher answers a permission request or question no client answered within
    /// `ask_timeout_s`: `reject` or `allow` (None: it never answers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permission: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ask_timeout_s: Option<u64>,
    /// A shell command run (detached, with the facts in its environment) when something a
    /// person should know happens: a session asks, finishes or fails; a restart; giving up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify: Option<String>,
}

impl Default for Supervision {
    fn default() -> Self {
        Supervision {
            log_max_size: 10 * 1024 * 1024,
            log_max_files: 3,
            health_interval_s: 10,
            health_failures: 3,
            max_memory: None,
            permission: None,
            ask_timeout_s: None,
            notify: None,
        }
    }
}

/// How the server ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// Its exit code, if it exited.
    pub code: Option<i32>,
    /// The signal that ended it, such as `SIGKILL`, if one did.
    pub signal: Option<String>,
    /// When (RFC 3339).
    pub at: String,
    /// How long it had run, in seconds.
    pub uptime_s: u64,
    /// Why: on its own, `exited` (code 0), `terminated` (SIGTERM) or `crashed` (any other code
    /// or signal); or why ocx ended it: `unresponsive` (its health checks failed), `memory` (over
    /// `--max-memory`), `restart` (`ocx restart`).
    pub reason: String,
}

impl Exit {
    /// `SIGKILL`, `exit 1`.
    pub fn status(&self) -> String {
        match (&self.signal, self.code) {
            (Some(signal), _) => signal.clone(),
            (None, Some(code)) => format!("exit {code}"),
            (None, None) => "unknown".to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binary {
    pub path: PathBuf,
    pub version: Option<String>,
}

/// ocx's intent for the instance, as last written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Starting,
    Running,
    Stopping,
}

impl Record {
    /// The record as shown to users and scripts: no password and no `--env` values unless
    /// `show_secrets` (API keys are often passed with `--env`).
    pub fn public_json(&self, show_secrets: bool) -> serde_json::Value {
        let mut value = serde_json::to_value(self).expect("a record always serialises");
        if !show_secrets {
            let obj = value.as_object_mut().expect("a record is an object");
            obj.remove("password");
            if let Some(env) = obj.get_mut("env").and_then(|e| e.as_object_mut()) {
                env.values_mut().for_each(|v| *v = "***".into());
            }
        }
        value
    }

    /// The status with what explains it, as `ls` and `top` show it: `restarting (in 8s)`,
    /// `dead (SIGKILL)`, `failed (exit 1)`.
    pub fn status_text(&self, status: &str, restart_in_s: Option<u64>) -> String {
        match (status, restart_in_s, &self.last_exit) {
            ("restarting", Some(secs), _) => {
                format!("restarting (in {})", crate::output::duration(std::time::Duration::from_secs(secs)))
            }
            ("dead" | "failed", _, Some(exit)) => format!("{status} ({})", exit.status()),
            (status, ..) => status.to_string(),
        }
    }

    /// `0`, or `3 (SIGKILL, 2m ago)`: how many restarts, and what caused the last one.
    pub fn restarts_text(&self) -> String {
        let Some(exit) = self.last_exit.as_ref().filter(|_| self.restarts > 0) else {
            return self.restarts.to_string();
        };
        let why = match exit.reason.as_str() {
            "crashed" | "exited" | "terminated" => exit.status(),
            reason => reason.to_string(),
        };
        let ago = humantime::parse_rfc3339(&exit.at)
            .ok()
            .and_then(|at| at.elapsed().ok())
            .map(|d| format!(", {} ago", crate::output::duration(d)))
            .unwrap_or_default();
        format!("{} ({why}{ago})", self.restarts)
    }

    /// The name if it has one, else the id.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }

    /// The server process as recorded.
    pub fn server(&self) -> ProcId {
        ProcId { pid: self.pid, started_at: self.pid_started_at, start_key: self.pid_start_key }
    }

    /// Record `id` as the server process.
    pub fn set_server(&mut self, id: ProcId) {
        (self.pid, self.pid_started_at, self.pid_start_key) = (id.pid, id.started_at, id.start_key);
    }
}

/// Why bytes are not a record this ocx can use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub reason: String,
    /// A record of a later schema: not broken, just not this ocx's to read.
    pub newer: bool,
}

impl From<String> for ParseError {
    fn from(reason: String) -> Self {
        ParseError { reason, newer: false }
    }
}

impl From<&str> for ParseError {
    fn from(reason: &str) -> Self {
        reason.to_string().into()
    }
}

/// Parse a record file's bytes; `id` is the file's stem, which the record must agree with.
pub fn parse(bytes: &[u8], id: &str) -> Result<Record, ParseError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    let schema = value.get("schema").ok_or("not an ocx record: no `schema` field")?;
    match schema.as_u64() {
        Some(n) if n == u64::from(SCHEMA) => {}
        Some(n) if n > u64::from(SCHEMA) => {
            return Err(ParseError {
                reason: format!("written by a newer ocx (schema {n}; this ocx reads schema {SCHEMA})"),
                newer: true,
            });
        }
        _ => return Err(format!("unsupported schema {schema} (this ocx reads schema {SCHEMA})").into()),
    }
    let record: Record = serde_json::from_value(value).map_err(|e| format!("not a valid record: {e}"))?;
    if record.id != id {
        return Err(format!("the record's id {:?} does not match its file name", record.id).into());
    }
    if !is_valid_id(&record.id) {
        return Err(format!("invalid id {:?}", record.id).into());
    }
    if record.port == 0 || record.pid == 0 {
        return Err("port and pid must not be 0".into());
    }
    Ok(record)
}
