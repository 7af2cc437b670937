//! What `ocx up` and `ocx down` share: the fleet file (`file`), the instances it started
//! (their records carry the file as their project), how a running instance's settings differ
//! from the file's, and the lock that makes two `up`s of one file take turns.

pub mod file;

use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use crate::home::{Home, Lock};
use crate::record::Record;

/// How long an `up` or `down` waits for another one of the same file to finish.
const FLEET_LOCK_TIMEOUT: Duration = Duration::from_secs(600);

/// The lock of one fleet file: two `ocx up` (or `down`) of it at once take turns, so the
/// second sees what the first started and starts each instance once.
pub fn lock(home: &Home, project: &Path) -> Result<Lock> {
    // FNV-1a of the path: a lock file name of its own per file (never a valid instance id, so
    // gc's sweep of stale instance locks leaves it alone).
    let digest = project
        .to_string_lossy()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    home.lock_instance(&format!("fleet-{digest:016x}"), FLEET_LOCK_TIMEOUT)
}

/// The records of instances started from `project`.
pub fn of_project<'a>(records: &'a [Record], project: &Path) -> Vec<&'a Record> {
    records.iter().filter(|r| r.project.as_deref() == Some(project)).collect()
}

/// How `actual`'s settings differ from `wanted`'s (the record a start from the file would make,
/// with `actual`'s port unless the file names one): the names of the settings, empty when
/// they match.
pub fn differences(wanted: &Record, actual: &Record) -> Vec<&'static str> {
    let mut diff = Vec::new();
    let mut check = |same: bool, what| {
        if !same {
            diff.push(what)
        }
    };
    check(wanted.dir == actual.dir, "dir");
    check(wanted.env == actual.env, "env");
    check(wanted.hostname == actual.hostname, "hostname");
    check(wanted.port == actual.port, "port");
    check(wanted.password.is_some() == actual.password.is_some(), "no-auth");
    check(wanted.restart_policy == actual.restart_policy, "restart");
    check(wanted.opencode.path == actual.opencode.path, "opencode");
    let s = (&wanted.supervision, &actual.supervision);
    check(s.0.max_memory == s.1.max_memory, "max-memory");
    check(s.0.health_interval_s == s.1.health_interval_s && s.0.health_failures == s.1.health_failures, "health");
    check(s.0.log_max_size == s.1.log_max_size && s.0.log_max_files == s.1.log_max_files, "log size");
    // The rest of the command line: the log level and the arguments for `opencode serve`
    // (address and port are told apart above).
    let address_differs = wanted.hostname != actual.hostname || wanted.port != actual.port;
    check(address_differs || wanted.args == actual.args, "args or log-level");
    diff
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::sample;

    #[test]
    fn settings_that_differ_are_named() {
        let a = sample("abc123", Some("api"));
        assert!(differences(&a, &a).is_empty());
        let mut b = a.clone();
        b.supervision.max_memory = Some(1 << 30);
        b.env.insert("K".into(), "V".into());
        assert_eq!(differences(&a, &b), ["env", "max-memory"]);
        let mut c = a.clone();
        c.args.push("--cors".into());
        assert_eq!(differences(&a, &c), ["args or log-level"]);
        c.port += 1;
        assert_eq!(differences(&a, &c), ["port"]);
    }
}
