//! Bringing back the instances that should be running and are not (after a reboot, a power
//! loss, a killed watcher): the rule that says which (shared with `gc`, which keeps them), and
//! the restart that brings each back with the same id, port and password.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;

use super::launch::Started;
use super::restart::{self, RestartOptions};
use super::state::{Facts, Status, classify};
use crate::home::Home;
use crate::record::{self, Record, RestartPolicy, State};
use crate::{parallel, process};

/// At most this many instances are brought back at once.
const PARALLEL: usize = 8;

/// Whether the instance should be running and is not: its record says it was running (or
/// its watcher was restarting it: nobody stopped it, as a stop deletes the record), its policy
/// wants it back (not `--restart no`), its server and watcher are both gone, and its watcher
/// did not leave it down on purpose. A start that never became healthy, a stop under way, an
/// instance whose watcher gave up (`failed`: the user decides), and a server that exited
/// cleanly under `on-failure` are not.
pub fn wanted(record: &Record, facts: &Facts, now: SystemTime) -> bool {
    let was_running = record.state == State::Running || (record.state == State::Starting && record.restarts > 0);
    was_running
        && record.restart_policy != RestartPolicy::No
        && record.failed.is_none()
        && record.remote.is_none()
        && !left_down(record, process::boot_time())
        && classify(record, facts, now) == Status::Dead
}

/// Whether the watcher saw this server exit and decided, by its policy, not to restart it: a
/// clean exit or a TERM (taken as a request to stop) under `on-failure`; every other exit is
/// restarted, or ends in `failed`. A TERM from before this boot is the shutdown's, sent to
/// every process, and no decision of the user's; a server that vanished unseen (SIGKILL of
/// both, a power loss) left no exit of its own.
fn left_down(record: &Record, boot_time: u64) -> bool {
    let Some(exit) = &record.last_exit else { return false };
    if record.restart_policy != RestartPolicy::OnFailure || !matches!(exit.reason.as_str(), "exited" | "terminated") {
        return false;
    }
    let Some(at) = humantime::parse_rfc3339(&exit.at).ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()) else {
        return false;
    };
    let of_this_server = at.as_secs() >= record.pid_started_at;
    let at_shutdown = exit.reason == "terminated" && at.as_secs() < boot_time;
    of_this_server && record.next_restart_at.is_none() && !at_shutdown
}

/// One instance that `resurrect` brought back, or tried to.
pub struct Outcome {
    pub record: Record,
    /// The instance as it runs again; None: skipped (brought back or changed by another ocx
    /// meanwhile), or `dry_run`.
    pub started: Option<Started>,
    pub error: Option<anyhow::Error>,
}

/// Bring back every instance that should be running and is not, in parallel; each is
/// re-checked under its lock right before, so two `resurrect`s at once start each once.
pub fn resurrect(home: &Home, timeout: Duration, dry_run: bool) -> Result<Vec<Outcome>> {
    let records = record::valid(&record::list(home)?);
    let facts = Facts::of_all(home, &records)?;
    let now = SystemTime::now();
    let due: Vec<Record> = records.into_iter().zip(&facts).filter(|(r, f)| wanted(r, f, now)).map(|(r, _)| r).collect();
    if dry_run {
        return Ok(due.into_iter().map(|record| Outcome { record, started: None, error: None }).collect());
    }
    // Nothing runs that a session could be busy in: no waiting for idle.
    let options = RestartOptions { force: true, wait: Duration::ZERO, timeout, grace: Duration::from_secs(10) };
    let results = parallel::map(&due, PARALLEL, |r| {
        restart::restart_as(home, &r.id, &options, None, |now, facts| {
            now.pid == r.pid && wanted(now, facts, SystemTime::now())
        })
    });
    Ok(due
        .into_iter()
        .zip(results)
        .map(|(record, result)| match result {
            Ok(started) => Outcome { record, started, error: None },
            Err(err) => Outcome { record, started: None, error: Some(err) },
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Exit;
    use crate::record::tests::sample;

    #[test]
    fn what_its_watcher_left_down_on_purpose_stays_down() {
        let mut r = sample("abc123", None);
        r.restart_policy = RestartPolicy::OnFailure;
        r.pid_started_at = 1_000;
        assert!(!left_down(&r, 500), "vanished unseen: no exit of its own");
        let exit = |reason: &str, at: u64| Exit {
            code: Some(0),
            signal: None,
            at: humantime::format_rfc3339(UNIX_EPOCH + Duration::from_secs(at)).to_string(),
            uptime_s: 1,
            reason: reason.into(),
        };
        r.last_exit = Some(exit("exited", 1_000));
        assert!(left_down(&r, 500), "a clean exit under on-failure, seen by its watcher");
        r.last_exit = Some(exit("exited", 900));
        assert!(!left_down(&r, 500), "an exit of an earlier server");
        r.last_exit = Some(exit("restart", 1_000));
        assert!(!left_down(&r, 500), "ocx ended it to start it again");
        r.last_exit = Some(exit("terminated", 1_100));
        assert!(left_down(&r, 500), "a TERM in this boot: a request to stop");
        assert!(!left_down(&r, 2_000), "a TERM before this boot: the shutdown's");
        r.restart_policy = RestartPolicy::Always;
        r.last_exit = Some(exit("exited", 1_000));
        assert!(!left_down(&r, 500), "always: the watcher would have restarted it");
    }
}
