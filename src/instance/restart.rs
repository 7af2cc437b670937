//! Restarting an instance: wait until it is idle, end it as a stop would (the record stays),
//! and start it again with the same id, name, port and password under a new watcher.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

use super::launch::{Launch, Started};
use super::spawn::port_taken;
use super::state::Held;
use super::{Vouch, opencode, stop};
use crate::error::{self, Failure, code};
use crate::home::Home;
use crate::process;
use crate::record::{Exit, Record};
use crate::{hooks, output};

/// How `restart` goes about it.
pub struct RestartOptions {
    /// Restart at once, even while a session is busy.
    pub force: bool,
    /// How long to wait for busy sessions to finish.
    pub wait: Duration,
    /// How long the restarted server may take to become healthy.
    pub timeout: Duration,
    /// Between TERM and KILL for the old server.
    pub grace: Duration,
}

/// Restart an instance with the same id, name, port and password, under a new watcher: once
/// no session is busy (unless `force`), end the server and its watcher as a stop would (the
/// record stays), then start it again and wait until it is healthy. Works on instances that
/// are running, failed, unsupervised or dead (after a reboot). If it fails after the old
/// server was ended, the record says so (`failed`) and nothing is left running.
pub fn restart(home: &Home, id: &str, options: &RestartOptions) -> Result<Started> {
    let restarted = restart_as(home, id, options, None, |_, _| true)?;
    Ok(restarted.expect("a restart that always holds is never skipped"))
}

/// `restart`, with new settings (`to`: the record a start with them would make, whose
/// settings the instance takes; see `Held::reconfigure`), and only if `still` holds for the
/// record and its processes once the instance's lock is taken (None: skipped), so that a
/// decision taken before (`resurrect`'s) is re-checked right before acting.
pub fn restart_as(
    home: &Home,
    id: &str,
    options: &RestartOptions,
    to: Option<&Record>,
    still: impl Fn(&Record, &super::state::Facts) -> bool,
) -> Result<Option<Started>> {
    let began = Instant::now();
    if !options.force
        && let Some(record) = crate::record::load(home, id)?
        && super::server(&record)?.is_some()
    {
        wait_until_idle(&record, options.wait)?;
    }
    let Some(mut held) = Held::lock(home, id, options.grace + Duration::from_secs(60))? else {
        return Err(anyhow!(Failure::new(code::NOT_FOUND, format!("instance {id} is gone (stopped meanwhile)"))));
    };
    if !still(held.record(), &held.facts()?) {
        return Ok(None);
    }
    let record = held.record().clone();
    let next = to.unwrap_or(&record);
    opencode::check_version(home, &next.opencode.path, &next.env)?;
    // Like a stop: the intent first, so the old watcher does not restart the server itself.
    let vouch = stop::begin(home, &mut held)?;
    let uptime_s = match &vouch {
        Vouch::Ours(server) => output::now_secs().saturating_sub(server.start_time),
        Vouch::Gone | Vouch::Unproven => 0,
    };
    // From here on any failure is recorded (`failed`): the record stays, for `ocx restart` again.
    let ended = (|| -> Result<_> {
        let ended = stop::end_instance(home, &record, vouch, options.grace)?;
        hooks::fail("restart:ended")?;
        if !process::port_is_free(&next.hostname, next.port) {
            return Err(port_taken(&next.hostname, next.port));
        }
        Ok(ended)
    })();
    let ended = match ended {
        Ok(ended) => ended,
        Err(err) => {
            held.failed(format!("the restart failed: {err:#}"), None)?;
            return Err(err);
        }
    };
    let exit = ended.signal.map(|signal| {
        let at = output::rfc3339_in(Duration::ZERO);
        // `watcher`: its watcher ended it (Windows), by a signal ocx cannot name.
        let signal = (signal != "watcher").then(|| format!("SIG{signal}"));
        Exit { code: None, signal, at, uptime_s, reason: "restart".into() }
    });
    if let Some(to) = to {
        held.reconfigure(to)?;
    }
    held.begin_start(exit)?;
    let deadline = Instant::now() + options.timeout;
    let mut launch = Launch::new(home, held, false, options.timeout);
    launch.spawn(deadline, true)?;
    match launch.wait_ready(deadline)? {
        Ok(version) => {
            launch.held.healthy(version)?;
            Ok(Some(Started { record: launch.finish(), took: began.elapsed() }))
        }
        Err(status) => Err(launch.exited_error(&status)),
    }
}

/// Wait until the server has no busy session, for at most `limit`.
fn wait_until_idle(record: &Record, limit: Duration) -> Result<()> {
    let client = super::client(record, Duration::from_secs(5));
    let deadline = Instant::now() + limit;
    loop {
        match client.busy_sessions() {
            Ok(busy) if busy.is_empty() => return Ok(()),
            // A server that does not answer has nothing to finish.
            Err(_) => return Ok(()),
            Ok(busy) if Instant::now() >= deadline => {
                return Err(anyhow!(
                    Failure::new(
                        code::TIMED_OUT,
                        format!(
                            "instance {} still has {} busy session(s) after {}s; not restarted",
                            record.label(),
                            busy.len(),
                            limit.as_secs()
                        )
                    )
                    .hint("--force restarts it at once, aborting what it is doing")
                ));
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(250)),
        }
        if process::interrupted() {
            return Err(error::interrupted("interrupted; nothing was restarted"));
        }
    }
}
