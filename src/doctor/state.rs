//! The checks of ocx's own state: the home and its files private to this user, every record
//! readable, no dead instance's port still bound, and (asked for) every named host reachable.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::Check;
use crate::home::{self, Home};
use crate::instance::state::{Facts, Status, classify};
use crate::record::{self, InvalidKind};
use crate::remote::Hosts;
use crate::{parallel, process};

/// How long one host may take to answer.
const HOST_TIMEOUT: Duration = Duration::from_secs(10);

/// The home and its directories and files: this user's, and private (0700 directories, 0600
/// files). A home that does not exist yet is fine: `ocx start` creates it so.
pub fn home(explicit: Option<&Path>) -> Vec<Check> {
    let root = match home::root_path(explicit) {
        Ok(root) => root,
        Err(err) => return vec![Check::fail("home", true, format!("{err:#}"), "set OCX_HOME to a directory of yours")],
    };
    let Ok(meta) = std::fs::metadata(&root) else {
        return vec![Check::pass(
            "home",
            true,
            format!("{} (not created yet; `ocx start` creates it, mode 0700)", root.display()),
        )];
    };
    let mut wrong: Vec<(String, String, u32)> = Vec::new();
    let mut look = |path: &Path, meta: &std::fs::Metadata, mode: u32| {
        if let Some(why) = process::not_private(meta) {
            wrong.push((path.display().to_string(), why, mode));
        }
    };
    look(&root, &meta, 0o700);
    for sub in ["instances", "logs", "locks"] {
        let dir = root.join(sub);
        if let Ok(meta) = std::fs::symlink_metadata(&dir) {
            look(&dir, &meta, 0o700);
        }
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if let Ok(meta) = entry.metadata() {
                look(&entry.path(), &meta, if meta.is_dir() { 0o700 } else { 0o600 });
            }
        }
    }
    if wrong.is_empty() {
        return vec![Check::pass("home", true, format!("{} (this user's, private)", root.display()))];
    }
    let (first, why, _) = &wrong[0];
    let more = if wrong.len() > 1 { format!(" (and {} more)", wrong.len() - 1) } else { String::new() };
    let fixes: Vec<String> = wrong.iter().take(3).map(|(path, _, mode)| format!("chmod {mode:o} {path}")).collect();
    let others = wrong.iter().any(|(_, why, _)| why.starts_with("belongs"));
    let hint = if others {
        format!("ocx trusts only its own user's files: `chown -R $USER {}`, then {}", root.display(), fixes.join("; "))
    } else {
        // Records hold passwords, and a writable one could point ocx at anyone's PID.
        format!("{}{}", fixes.join("; "), if wrong.len() > 3 { "; …" } else { "" })
    };
    vec![Check::fail("home", true, format!("{first} {why}{more}"), hint)]
}

/// Every record file readable: none corrupt, refused or written by a newer ocx.
pub fn records(home: &Home) -> Check {
    let entries = match record::list(home) {
        Ok(entries) => entries,
        Err(err) => return Check::fail("records", true, format!("{err:#}"), "check the home's permissions"),
    };
    let invalid = record::invalid(&entries);
    let valid = entries.len() - invalid.len();
    if invalid.is_empty() {
        return Check::pass("records", true, format!("{valid} record(s), all readable"));
    }
    let named: Vec<String> = invalid.iter().map(|i| format!("{} ({})", i.id, i.status())).collect();
    let newer = invalid.iter().any(|i| i.kind == InvalidKind::Newer);
    let hint = match (newer, invalid.iter().any(|i| i.kind != InvalidKind::Newer)) {
        (true, false) => "a newer ocx wrote them: use that ocx (this one leaves them alone)".to_string(),
        (true, true) => {
            "`ocx gc` moves the corrupt and refused ones aside (<file>.corrupt); the newer ones are a newer \
                         ocx's: use that ocx"
                .to_string()
        }
        _ => "`ocx gc` moves them aside (<file>.corrupt); their processes are never ended".to_string(),
    };
    Check::fail("records", true, format!("{} record(s) ocx cannot use: {}", invalid.len(), named.join(", ")), hint)
}

/// No port of a dead instance still bound (its restart would fail until whatever holds it goes).
pub fn ports(home: &Home) -> Check {
    let records = match record::list(home) {
        Ok(entries) => record::valid(&entries),
        Err(err) => return Check::fail("ports", false, format!("{err:#}"), "check the home's permissions"),
    };
    let facts = match Facts::of_all(home, &records) {
        Ok(facts) => facts,
        Err(err) => return Check::fail("ports", false, format!("{err:#}"), "see the error"),
    };
    let now = SystemTime::now();
    let bound: Vec<String> = records
        .iter()
        .zip(&facts)
        .filter(|(r, f)| matches!(classify(r, f, now), Status::Dead | Status::Failed))
        .filter(|(r, _)| !process::port_is_free(&r.hostname, r.port))
        .map(|(r, _)| match process::port_owner(r.port) {
            Some(owner) => format!("{} of {} (held by {owner})", r.port, r.label()),
            None => format!("{} of {}", r.port, r.label()),
        })
        .collect();
    if bound.is_empty() {
        return Check::pass("ports", false, "no port of a dead instance is still bound");
    }
    Check::fail(
        "ports",
        false,
        format!("still bound: {}", bound.join(", ")),
        "`ocx restart` fails until it is free: end what holds it, or `ocx stop` the instance and start a new one",
    )
}

/// Every named host reachable over ssh within `HOST_TIMEOUT`, with an ocx of this version
/// (the same remote protocol and records schema).
pub fn hosts(explicit: Option<&Path>) -> Vec<Check> {
    let hosts = match Hosts::load() {
        Ok(hosts) => hosts,
        Err(err) => return vec![Check::fail("hosts", false, format!("{err:#}"), "fix or remove hosts.json")],
    };
    if hosts.hosts.is_empty() {
        return vec![Check::pass("hosts", false, "no named hosts (`ocx host add NAME ssh://…`)")];
    }
    // Reaching a host may put an ssh control socket in the home, so it needs one.
    let home = match Home::open(explicit) {
        Ok(home) => home,
        Err(err) => return vec![Check::fail("hosts", false, format!("{err:#}"), "fix the home first")],
    };
    let list: Vec<_> = hosts.hosts.values().cloned().collect();
    parallel::map(&list, list.len(), |host| match host.json(&home, &["ls", "--json"], HOST_TIMEOUT) {
        Ok(doc) => Check::pass(
            "hosts",
            false,
            format!(
                "{} ({}): reachable, same ocx, {} instance(s)",
                host.label(),
                host.url,
                doc.as_array().map_or(0, Vec::len)
            ),
        ),
        Err(err) => Check::fail(
            "hosts",
            false,
            format!("{} ({}): {err:#}", host.label(), host.url),
            format!("check `ssh {}` works without a password prompt, and that its ocx is this version", host.url),
        ),
    })
}
