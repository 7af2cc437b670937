//! Spawning through the transient refusals of a loaded machine: `fork` out of processes for a
//! moment (EAGAIN), or Wine's CreateProcess failing with `ERROR_INTERNAL_ERROR` (1359).

use std::io;
use std::process::{Child, Command};
use std::time::Duration;

/// How many times a spawn refused for a transient reason is tried, and the first pause.
const TRIES: u32 = 5;
const FIRST_PAUSE: Duration = Duration::from_millis(100);

/// `cmd.spawn()`, tried again (up to 5 times in all, about 1.5 s) while the OS refuses for a
/// reason that passes. Any other error, a missing binary for one, is returned at once.
///
/// A refused spawn leaves no child on Unix. Should Wine ever report 1359 for a process it did
/// start, that stray would be found: a watcher's plan pipe belongs to the failed attempt (it
/// reads no plan and exits), and a server carries the instance's marker, which `stop` and
/// `gc` look for.
pub fn spawn(cmd: &mut Command) -> io::Result<Child> {
    let mut pause = FIRST_PAUSE;
    for _ in 1..TRIES {
        match cmd.spawn() {
            Err(err) if is_transient(&err) => std::thread::sleep(pause),
            done => return done,
        }
        pause *= 2;
    }
    cmd.spawn()
}

/// Whether a spawn failed for a reason that passes: EAGAIN (Rust's `WouldBlock`) from fork,
/// or on Windows error 1359, which Wine 8 returns when a new process fails to start under load
/// (seen once in CI, starting a watcher while many Wine processes ran).
pub fn is_transient(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::WouldBlock || (cfg!(windows) && err.raw_os_error() == Some(1359))
}
