//! The record store on disk: loading, saving, listing and deleting the files in `instances/`,
//! and the ids they are kept under.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};

use super::{ID_LEN, Record, is_valid_id, parse};
use crate::home::{self, Home};
use crate::process;
use crate::token;

/// One file in `instances/`: a record, or one that cannot be used (never deleted silently).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per file, read once: boxing would only add noise
pub enum Entry {
    Valid(Record),
    Invalid(Invalid),
}

/// A record file that cannot be used, and why.
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

/// Every file in `instances/`, valid records first (oldest first), then invalid ones.
pub fn list(home: &Home) -> Result<Vec<Entry>> {
    let dir = home.instances_dir();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") && !home::is_temp_file(&name) {
            files.push((entry.path(), name));
        }
    }
    // Reading and parsing is CPU work: a thread per core (1,000 records take tens of ms).
    let loaded = crate::parallel::map(&files, crate::parallel::cores_for(files.len()), |(path, name)| {
        let id = name.strip_suffix(".json").unwrap_or(name);
        load_file(path, id).map_err(|(reason, kind)| Invalid { id: id.to_string(), path: path.clone(), reason, kind })
    });
    let (mut valid, mut invalid): (Vec<Record>, Vec<Invalid>) = (Vec::new(), Vec::new());
    for result in loaded {
        match result {
            Ok(record) => valid.push(record),
            Err(bad) => invalid.push(bad),
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

/// The files that cannot be used only, in `list`'s order.
pub fn invalid(entries: &[Entry]) -> Vec<&Invalid> {
    entries
        .iter()
        .filter_map(|e| match e {
            Entry::Invalid(i) => Some(i),
            Entry::Valid(_) => None,
        })
        .collect()
}

/// Every id that has a file in `instances/`: a record (valid or not), or one moved aside
/// (`<id>.json.corrupt…`). Such an instance is not forgotten: its processes are not orphans.
pub fn ids_on_disk(home: &Home) -> Result<HashSet<String>> {
    let dir = home.instances_dir();
    let mut ids = HashSet::new();
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
    let Some(bytes) = process::read_trusted(path).map_err(unreadable)? else {
        return Err(("refused: not a regular file of this user, or writable by others".into(), InvalidKind::Refused));
    };
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
