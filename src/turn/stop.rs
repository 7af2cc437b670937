//! Ending a turn early: Ctrl-C or the deadline (checked wherever the turn waits), the abort
//! that follows, seen through until the server really stopped, and the abort of a turn dropped
//! unfinished (a closed pipe, an error, a panic).

use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

use super::stream::Stream;
use super::{POLL, Turn, last_reply_finished};
use crate::error::{Failure, code};
use crate::process;

/// How long an abort may take to be seen through (see `Turn::abort`).
const ABORT_SETTLE: Duration = Duration::from_secs(15);

impl Turn<'_> {
    /// Ctrl-C or the deadline: abort the prompt on the server, and fail with 130 or 4.
    pub(super) fn check_interruptions(&mut self, events: Option<&Stream>) -> Result<()> {
        let Some(failure) = interruption(self.options.deadline) else { return Ok(()) };
        self.abort(events);
        Err(anyhow!(failure))
    }

    /// Sleep for `pause`, unless Ctrl-C or the deadline comes first (then abort and fail).
    pub(super) fn pause(&mut self, pause: Duration) -> Result<()> {
        let until = Instant::now() + pause;
        loop {
            self.check_interruptions(None)?;
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            std::thread::sleep(left.min(POLL));
        }
    }

    /// Ask the server to stop the prompt, and wait (up to `ABORT_SETTLE`) until it is over. A
    /// prompt the server has stored but not begun to answer (which takes seconds on a loaded
    /// machine) is not stopped by an abort: the session is not busy yet, and the answer would
    /// begin after ocx is gone. So the abort is sent again whenever the session is seen busy,
    /// until it is idle with its reply ended (aborted, failed or done). Events that arrive
    /// meanwhile are handled as usual (printed, answered).
    pub(super) fn abort(&mut self, events: Option<&Stream>) {
        self.aborting = true;
        self.in_flight = false;
        let _ = self.client.abort(&self.session);
        let deadline = Instant::now() + ABORT_SETTLE;
        while Instant::now() < deadline {
            match events.map(|e| e.recv_timeout(POLL)) {
                Some(Ok(Some(event))) => {
                    let _ = self.handle(&event);
                    continue;
                }
                Some(Err(RecvTimeoutError::Timeout)) => {}
                // No stream (or it ended): look at the server at this pace.
                _ => std::thread::sleep(POLL),
            }
            let Ok(busy) = self.client.busy_sessions() else { return };
            if busy.contains_key(&self.session) {
                let _ = self.client.abort(&self.session);
            } else if self.client.last_turn(&self.session).is_ok_and(|m| last_reply_finished(&m)) {
                return;
            }
        }
    }
}

impl Drop for Turn<'_> {
    /// A turn left before the server finished it (a closed pipe, an error, a panic): abort it,
    /// so no agent goes on working after ocx is gone.
    fn drop(&mut self) {
        if self.in_flight {
            self.abort(None);
        }
    }
}

/// Ctrl-C or the deadline, whichever came, as the failure the turn ends with.
pub(super) fn interruption(deadline: Option<Instant>) -> Option<Failure> {
    if process::interrupted() {
        Some(Failure::new(code::INTERRUPTED, "interrupted; aborted the prompt on the server"))
    } else if deadline.is_some_and(|d| Instant::now() >= d) {
        Some(Failure::new(code::TIMED_OUT, "timed out; aborted the prompt on the server"))
    } else {
        None
    }
}
