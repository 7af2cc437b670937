//! The watcher's restart policy: how long it waits between restarts, when it gives up, and how
//! it names the way a server ended.

use std::time::Duration;

/// A server healthy this long before it exits was stable: the next restart comes at once, and
/// the count of unstable exits starts over.
pub const STABLE: Duration = Duration::from_secs(60);
/// This many unstable exits in a row, and the watcher gives up: the instance is `failed`.
pub const GIVE_UP_AFTER: u32 = 5;
/// The longest wait between two restarts.
const MAX_DELAY: Duration = Duration::from_secs(60);
/// How often to ask a server that printed its ready line whether it is healthy yet.
pub const STARTUP_POLL: Duration = Duration::from_millis(50);
/// How often to ask a server that has not printed its ready line (yet, or ever: a future
/// opencode may word it differently) whether it is healthy.
pub const STARTUP_SLOW_POLL: Duration = Duration::from_millis(500);
/// A restarted server not healthy after this long is `unresponsive`.
pub const STARTUP_LIMIT: Duration = Duration::from_secs(120);
/// Between the polite signal and KILL, when the watcher ends its server.
pub const END_GRACE: Duration = Duration::from_secs(10);
/// How long an unresponsive server is given while its last known state was busy (a long tool
/// call can hold the event loop), before it is restarted anyway.
pub const BUSY_GRACE: Duration = Duration::from_secs(300);
/// How long one health probe of a running server may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long after the server's exit the rest of its output may take to arrive.
pub const DRAIN: Duration = Duration::from_secs(1);

/// Why a server ended on its own: `exited` (code 0), `terminated` (SIGTERM, which is how ocx,
/// and anyone else, asks a server to stop), or `crashed` (any other code or signal): a failure,
/// which `--restart on-failure` restarts.
pub fn exit_reason(code: Option<i32>, signal: Option<&str>) -> &'static str {
    match (code, signal) {
        (_, Some("SIGTERM")) => "terminated",
        (Some(0), None) => "exited",
        _ => "crashed",
    }
}

/// The wait before the restart that follows the `unstable`-th unstable exit in a row: at once
/// for the first, then 1 s, doubling, at most a minute.
pub fn backoff(unstable: u32) -> Duration {
    match unstable {
        0 | 1 => Duration::ZERO,
        n => Duration::from_secs(1u64 << (n - 2).min(6)).min(MAX_DELAY),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_at_once_then_doubles_up_to_a_minute() {
        let secs: Vec<u64> = (1..=10).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [0, 1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn failures_are_non_zero_exits_and_signals_but_term() {
        assert_eq!(exit_reason(Some(0), None), "exited");
        assert_eq!(exit_reason(Some(1), None), "crashed");
        assert_eq!(exit_reason(None, Some("SIGKILL")), "crashed");
        assert_eq!(exit_reason(None, Some("SIGSEGV")), "crashed");
        assert_eq!(exit_reason(None, Some("SIGTERM")), "terminated");
    }
}
