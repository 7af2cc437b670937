//! The instance record: its type, loading and saving, and resolving what the user typed
//! (id, unique id prefix, or name) to one record.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use serde::{Deserialize, Serialize};

use crate::error::{Failure, code};
use crate::home::{self, Home};
use crate::process::{self, ProcId};
use crate::token;

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
}

impl Default for Supervision {
    fn default() -> Self {
        Supervision {
            log_max_size: 10 * 1024 * 1024,
            log_max_files: 3,
            health_interval_s: 10,
            health_failures: 3,
            max_memory: None,
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

/// One file in `instances/`: a record, or one that cannot be used (never deleted silently).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per file, read once: boxing would only add noise
pub enum Entry {
    Valid(Record),
    Invalid(Invalid),
}

#[derive(Debug, Clone)]
pub struct Invalid {
    pub id: String,
    pub path: PathBuf,
    pub reason: String,
    pub kind: InvalidKind,
}

/// Why a record file cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidKind {
    /// It does not parse as a record.
    Corrupt,
    /// Readable, but not trusted: another user's, or writable by others (its PID could be
    /// anyone's).
    Refused,
    /// Written by a newer ocx, in a schema this one does not know: left alone.
    Newer,
}

impl Invalid {
    /// `corrupt`, `refused` or `newer`, as `ls` shows it.
    pub fn status(&self) -> &'static str {
        match self.kind {
            InvalidKind::Corrupt => "corrupt",
            InvalidKind::Refused => "refused",
            InvalidKind::Newer => "newer",
        }
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

/// Every file in `instances/`, valid records first (oldest first), then invalid ones.
pub fn list(home: &Home) -> Result<Vec<Entry>> {
    let dir = home.instances_dir();
    let mut valid = Vec::new();
    let mut invalid = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_suffix(".json") else { continue };
        if home::is_temp_file(&name) {
            continue;
        }
        match load_file(&entry.path(), id) {
            Ok(record) => valid.push(record),
            Err((reason, kind)) => invalid.push(Invalid { id: id.to_string(), path: entry.path(), reason, kind }),
        }
    }
    valid.sort_by(|a: &Record, b| (&a.started_at, &a.id).cmp(&(&b.started_at, &b.id)));
    invalid.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(valid.into_iter().map(Entry::Valid).chain(invalid.into_iter().map(Entry::Invalid)).collect())
}

/// The valid records only.
pub fn valid(entries: &[Entry]) -> Vec<Record> {
    entries
        .iter()
        .filter_map(|e| match e {
            Entry::Valid(r) => Some(r.clone()),
            Entry::Invalid(_) => None,
        })
        .collect()
}

/// Every id that has a file in `instances/`: a record (valid or not), or one moved aside
/// (`<id>.json.corrupt…`). Such an instance is not forgotten: its processes are not orphans.
pub fn ids_on_disk(home: &Home) -> Result<std::collections::HashSet<String>> {
    let dir = home.instances_dir();
    let mut ids = std::collections::HashSet::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let name = entry.with_context(|| format!("cannot read {}", dir.display()))?.file_name();
        let name = name.to_string_lossy();
        if let Some((id, _)) = name.split_once(".json")
            && is_valid_id(id)
        {
            ids.insert(id.to_string());
        }
    }
    Ok(ids)
}

/// A record file's content, or why not.
fn load_file(path: &Path, id: &str) -> Result<Record, (String, InvalidKind)> {
    let unreadable = |e: std::io::Error| (format!("cannot read: {e}"), InvalidKind::Corrupt);
    let meta = std::fs::symlink_metadata(path).map_err(unreadable)?;
    if !meta.is_file() || !process::is_trusted(&meta) {
        return Err(("refused: not a regular file of this user, or writable by others".into(), InvalidKind::Refused));
    }
    let bytes = std::fs::read(path).map_err(unreadable)?;
    parse(&bytes, id).map_err(|e| (e.reason, if e.newer { InvalidKind::Newer } else { InvalidKind::Corrupt }))
}

/// Load one record; None if it does not exist.
pub fn load(home: &Home, id: &str) -> Result<Option<Record>> {
    let path = home.record_path(id);
    if !path.exists() {
        return Ok(None);
    }
    load_file(&path, id).map(Some).map_err(|(reason, _)| anyhow!("record {}: {reason}", path.display()))
}

/// Write a record atomically. The caller holds the store lock (a new record) or the instance's
/// lock (an existing one).
pub fn save(home: &Home, record: &Record) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(record).context("cannot serialise the record")?;
    bytes.push(b'\n');
    home::write_atomic(&home.record_path(&record.id), &bytes)
}

/// Delete a record (the log stays). The caller holds the instance's lock.
pub fn delete(home: &Home, id: &str) -> Result<()> {
    let path = home.record_path(id);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot delete {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// A new id that is neither an existing id nor an existing name.
pub fn new_id(taken: &[&str]) -> String {
    loop {
        let id = token::random(ID_LEN);
        if !taken.contains(&id.as_str()) {
            return id;
        }
    }
}

pub fn is_valid_id(id: &str) -> bool {
    id.len() == ID_LEN && id.bytes().all(|b| token::ALPHABET.contains(&b))
}

/// Names are for humans and shells: letters, digits, `-`, `_`, `.`, starting with a letter
/// or digit, at most 64 characters.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(anyhow!(Failure::new(code::USAGE, format!("invalid name {name:?}")).hint(
            "names use letters, digits, '-', '_' and '.', start with a letter or digit, and have at most 64 characters"
        )))
    }
}

/// Find the one record `query` means: an exact id, an exact name, or a unique id prefix.
pub fn resolve<'a>(records: &'a [Record], query: &str) -> Result<&'a Record> {
    if let Some(r) = records.iter().find(|r| r.id == query) {
        return Ok(r);
    }
    if let Some(r) = records.iter().find(|r| r.name.as_deref() == Some(query)) {
        return Ok(r);
    }
    let matches: Vec<&Record> = records.iter().filter(|r| !query.is_empty() && r.id.starts_with(query)).collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(anyhow!(Failure::new(code::NOT_FOUND, format!("no instance matches {query:?}")).hint(
            if records.is_empty() {
                "there are no instances; start one with `ocx start`".to_string()
            } else {
                format!("the instances are: {}", describe(records.iter()))
            }
        ))),
        many => Err(anyhow!(
            Failure::new(
                code::NOT_FOUND,
                format!("{query:?} matches several instances: {}", describe(many.iter().copied()))
            )
            .hint("type more of the id, or use the name")
        )),
    }
}

/// The record a command means when the user may leave the instance out: the named one, or
/// else the only one whose server is alive.
pub fn resolve_default<'a>(records: &'a [Record], query: Option<&str>) -> Result<&'a Record> {
    if let Some(query) = query {
        return resolve(records, query);
    }
    let table = process::Processes::of(&records.iter().map(|r| r.pid).collect::<Vec<_>>())?;
    // A remote host's records are the ones its ocx saw alive.
    let alive: Vec<&Record> =
        records.iter().filter(|r| r.remote.is_some() || table.find(&r.server()).is_some()).collect();
    match alive.as_slice() {
        [one] => Ok(one),
        [] => Err(anyhow!(Failure::new(code::NOT_FOUND, "no instance is running").hint("start one with `ocx start`"))),
        many => Err(anyhow!(
            Failure::new(code::NOT_FOUND, format!("{} instances are running; say which one", many.len()))
                .hint(format!("the instances are: {}", describe(many.iter().copied())))
        )),
    }
}

fn describe<'a>(records: impl Iterator<Item = &'a Record>) -> String {
    records
        .map(|r| match &r.name {
            Some(name) => format!("{} ({name})", r.id),
            None => r.id.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The schema-1 record kept in `tests/fixtures`: every later ocx must still read it.
    const FIXTURE: &str = include_str!("../tests/fixtures/record-v1.json");

    pub(crate) fn sample(id: &str, name: Option<&str>) -> Record {
        let mut r = parse(FIXTURE.as_bytes(), "k3f9a2").unwrap();
        r.id = id.to_string();
        r.name = name.map(str::to_string);
        r
    }

    #[test]
    fn fixture_of_schema_1_loads() {
        let r = parse(FIXTURE.as_bytes(), "k3f9a2").unwrap();
        assert_eq!(r.schema, 1);
        assert_eq!(r.port, 40063);
        assert_eq!(r.state, State::Running);
        assert_eq!(r.opencode.version.as_deref(), Some("1.18.33"));
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(Some(dir.path())).unwrap();
        let r = sample("abc123", Some("api"));
        save(&home, &r).unwrap();
        assert_eq!(load(&home, "abc123").unwrap(), Some(r.clone()));
        let entries = list(&home).unwrap();
        assert!(matches!(entries.as_slice(), [Entry::Valid(x)] if *x == r));
        delete(&home, "abc123").unwrap();
        assert_eq!(load(&home, "abc123").unwrap(), None);
    }

    #[test]
    fn public_json_hides_secrets() {
        let mut r = sample("abc123", None);
        r.env.insert("API_KEY".into(), "sk-secret".into());
        let shown = r.public_json(false).to_string();
        assert!(!shown.contains(r.password.as_deref().unwrap()) && !shown.contains("sk-secret"), "{shown}");
        assert!(shown.contains("API_KEY"));
        let all = r.public_json(true).to_string();
        assert!(all.contains(r.password.as_deref().unwrap()) && all.contains("sk-secret"));
    }

    #[test]
    fn corrupt_files_are_reported_and_others_still_listed() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(Some(dir.path())).unwrap();
        save(&home, &sample("good01", None)).unwrap();
        let mut wrong_port = serde_json::to_value(sample("port99", None)).unwrap();
        wrong_port["port"] = 70000.into();
        let mut future = serde_json::to_value(sample("newer1", None)).unwrap();
        future["schema"] = 2.into();
        let bad: [(&str, Vec<u8>); 6] = [
            ("empty1", vec![]),
            ("trunc1", FIXTURE.as_bytes()[..40].to_vec()),
            ("shape1", br#"{"schema":1,"id":"shape1"}"#.to_vec()),
            ("array1", b"[1,2,3]".to_vec()),
            ("port99", wrong_port.to_string().into_bytes()),
            ("newer1", future.to_string().into_bytes()),
        ];
        for (id, bytes) in &bad {
            std::fs::write(home.record_path(id), bytes).unwrap();
        }
        let entries = list(&home).unwrap();
        assert_eq!(valid(&entries).len(), 1);
        let invalid: Vec<&Invalid> = entries
            .iter()
            .filter_map(|e| match e {
                Entry::Invalid(i) => Some(i),
                Entry::Valid(_) => None,
            })
            .collect();
        assert_eq!(invalid.len(), bad.len());
        let newer = invalid.iter().find(|i| i.id == "newer1").unwrap();
        assert_eq!(newer.kind, InvalidKind::Newer);
        assert!(newer.reason.contains("newer ocx (schema 2"), "{}", newer.reason);
        assert!(invalid.iter().filter(|i| i.id != "newer1").all(|i| i.kind == InvalidKind::Corrupt));
        // Nothing was deleted or rewritten.
        for (id, bytes) in &bad {
            assert_eq!(&std::fs::read(home.record_path(id)).unwrap(), bytes);
        }
    }

    #[test]
    fn concurrent_writers_never_leave_a_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(Some(dir.path())).unwrap();
        save(&home, &sample("race01", None)).unwrap();
        std::thread::scope(|s| {
            for t in 0..4 {
                let home = &home;
                s.spawn(move || {
                    for i in 0..200 {
                        let mut r = sample("race01", Some(&format!("writer-{t}-{i}")));
                        r.args = vec!["x".repeat(i * 7); t + 1];
                        // As every writer of an existing record does (see `save`).
                        let _lock = home.lock_instance("race01", std::time::Duration::from_secs(10)).unwrap();
                        save(home, &r).unwrap();
                    }
                });
            }
            for _ in 0..4 {
                let home = &home;
                s.spawn(move || {
                    for _ in 0..400 {
                        let r = load(home, "race01").expect("a reader sees a whole record").unwrap();
                        assert_eq!(r.id, "race01");
                        // Wine's rename cannot replace a file that is open at all (NTFS can), and
                        // `write_atomic` waits for that only so long: readers that never pause
                        // would starve the writer there. ocx's readers read a record once per
                        // command.
                        if cfg!(windows) {
                            std::thread::sleep(std::time::Duration::from_millis(10));
                        }
                    }
                });
            }
        });
        let names: Vec<String> = std::fs::read_dir(home.instances_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["race01.json".to_string()]);
    }

    /// A bounded fuzz of the parser: random bytes, and the fixture with bytes flipped, cut,
    /// duplicated or spliced with JSON tokens. Parsing may fail; it must never panic.
    #[test]
    fn parser_never_panics_on_arbitrary_input() {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let tokens: [&[u8]; 12] = [
            b"{",
            b"}",
            b"[",
            b"]",
            b"\"",
            b":",
            b",",
            b"null",
            b"-1",
            b"1e999",
            b"\"\\u0000\"",
            b"18446744073709551616",
        ];
        let fixture = FIXTURE.as_bytes();
        for round in 0..20_000 {
            let input: Vec<u8> = if round % 4 == 0 {
                (0..next() % 256).map(|_| next() as u8).collect()
            } else {
                let mut bytes = fixture.to_vec();
                for _ in 0..1 + next() % 4 {
                    let at = (next() as usize) % (bytes.len() + 1);
                    match next() % 4 {
                        0 if at < bytes.len() => bytes[at] = next() as u8,
                        1 => bytes.truncate(at),
                        2 => bytes.splice(at..at, tokens[(next() % 12) as usize].iter().copied()).for_each(drop),
                        _ => {
                            let end = (at + (next() as usize) % 32).min(bytes.len());
                            let copy = bytes[at..end].to_vec();
                            bytes.splice(at..at, copy).for_each(drop);
                        }
                    }
                }
                bytes
            };
            let _ = parse(&input, "k3f9a2");
        }
    }

    #[test]
    fn ids_are_six_characters_and_avoid_taken_ones() {
        for _ in 0..1000 {
            let id = new_id(&["aaaaaa"]);
            assert!(is_valid_id(&id), "{id}");
        }
    }

    #[test]
    fn names_are_checked() {
        for good in ["api", "my-app.2", "A_b"] {
            check_name(good).unwrap();
        }
        for bad in ["", "-x", "a b", "x/y", &"n".repeat(65)] {
            let err = check_name(bad).unwrap_err();
            assert_eq!(err.downcast_ref::<Failure>().unwrap().code, code::USAGE);
        }
    }

    #[test]
    fn resolve_by_id_name_and_prefix() {
        let records = vec![sample("k3f9a2", Some("api")), sample("k3aa11", None), sample("zz0000", Some("k3"))];
        assert_eq!(resolve(&records, "k3f9a2").unwrap().id, "k3f9a2");
        assert_eq!(resolve(&records, "api").unwrap().id, "k3f9a2");
        assert_eq!(resolve(&records, "k3f").unwrap().id, "k3f9a2");
        // An exact name wins over an ambiguous prefix.
        assert_eq!(resolve(&records, "k3").unwrap().id, "zz0000");
    }

    #[test]
    fn resolve_errors_name_the_candidates() {
        let records = vec![sample("k3f9a2", Some("api")), sample("k3aa11", None)];
        let err = resolve(&records, "k3").unwrap_err();
        let f = err.downcast_ref::<Failure>().unwrap();
        assert_eq!(f.code, code::NOT_FOUND);
        assert!(f.message.contains("k3f9a2 (api)") && f.message.contains("k3aa11"), "{}", f.message);

        let err = resolve(&records, "nope").unwrap_err();
        let f = err.downcast_ref::<Failure>().unwrap();
        assert_eq!(f.code, code::NOT_FOUND);
        assert!(f.hint.as_deref().unwrap().contains("k3f9a2 (api), k3aa11"));

        let err = resolve(&[], "x").unwrap_err();
        assert!(err.downcast_ref::<Failure>().unwrap().hint.as_deref().unwrap().contains("ocx start"));
    }
}
