//! Unix, the watcher's side: the child subreaper, shedding code pages, stop requests (SIGTERM
//! through a pipe), reaping children, and naming the signal a process died of.

use std::io::{self, Read};
use std::os::fd::IntoRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc;

use super::super::Proc;

/// Make this process an instance's watcher: on Linux the child subreaper, so what its server
/// leaves behind (the agent's commands, in sessions of their own) is re-parented to it, not to
/// init; SIGHUP ignored.
pub fn become_watcher() -> io::Result<()> {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer flag.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: ignoring a signal has no preconditions.
    unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
    Ok(())
}

/// Let go of the code pages this process has mapped so far (Linux): a watcher touches much
/// of the binary while it starts and little afterwards. Executable mappings are never written,
/// so dropping them is safe: what is used again is faulted back in from the page cache.
pub fn shed_code_pages() {
    #[cfg(target_os = "linux")]
    {
        let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else { return };
        for line in maps.lines() {
            let mut fields = line.split_whitespace();
            let (Some(range), Some(perms)) = (fields.next(), fields.next()) else { continue };
            // Private, executable, file-backed code: `r-xp` with a path (not [vdso] and the like).
            if perms != "r-xp" || !line.contains('/') {
                continue;
            }
            let Some((start, end)) = range.split_once('-') else { continue };
            let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16)) else {
                continue;
            };
            // SAFETY: the range is a whole mapping of this process, read-only code.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        }
    }
}

/// The write end of the pipe that turns SIGTERM/SIGINT into a stop request (-1: none yet).
static STOP_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_stop_signal(_: libc::c_int) {
    let fd = STOP_PIPE.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; a full pipe already holds a request.
        unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) };
    }
}

/// Stop requests to a watcher: SIGTERM or SIGINT (`ocx stop` sends TERM after vouching for
/// the watcher), each delivered through a pipe to whoever waits.
pub struct StopRequests {
    pipe: std::io::PipeReader,
}

pub fn stop_requests(_home: &Path, _id: &str) -> io::Result<StopRequests> {
    let (pipe, write) = std::io::pipe()?;
    STOP_PIPE.store(write.into_raw_fd(), Ordering::SeqCst);
    // SAFETY: the handler only writes to a pipe.
    unsafe {
        libc::signal(libc::SIGTERM, on_stop_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_stop_signal as *const () as libc::sighandler_t);
    }
    Ok(StopRequests { pipe })
}

impl StopRequests {
    /// Block until the next stop request.
    pub fn wait(&mut self) -> io::Result<()> {
        let mut byte = [0u8];
        loop {
            match self.pipe.read(&mut byte) {
                Ok(1) => return Ok(()),
                Ok(_) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Ask instance `id`'s watcher, vouched for by the caller, to stop its server and exit: TERM.
pub fn request_stop(_home: &Path, _id: &str, watcher: &Proc) -> io::Result<bool> {
    super::super::signal(watcher, super::super::Signal::Term).map_err(io::Error::other)
}

/// Reaps this process's children (the server, and on Linux what was re-parented to the
/// subreaper) and reports each exit. One thread blocked in `waitpid(-1)`; asleep while there is
/// no child at all.
pub struct Reaper {
    wake: mpsc::Sender<()>,
}

impl Reaper {
    pub fn start(on_exit: impl Fn(u32, ExitStatus) + Send + 'static) -> io::Result<Reaper> {
        let (wake, woken) = mpsc::channel::<()>();
        std::thread::Builder::new().name("reaper".into()).stack_size(64 * 1024).spawn(move || {
            loop {
                let mut status = 0;
                // SAFETY: waitpid writes the status of a reaped child into `status`.
                let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
                if pid > 0 {
                    on_exit(pid as u32, ExitStatus::from_raw(status));
                    continue;
                }
                match io::Error::last_os_error().raw_os_error() {
                    Some(libc::EINTR) => {}
                    // No child at all: sleep until one is spawned.
                    Some(libc::ECHILD) if woken.recv().is_ok() => {}
                    _ => return,
                }
            }
        })?;
        Ok(Reaper { wake })
    }

    /// A child was spawned: its exit comes through `waitpid(-1)`.
    pub fn watch(&self, child: Child) {
        drop(child);
        let _ = self.wake.send(());
    }
}

/// A server's process tree, for ending it as a whole. On Unix that is its process group (it
/// leads one) and the marker; nothing to hold.
pub struct Tree;

pub fn contain(_child: &Child) -> Tree {
    Tree
}

impl Tree {
    pub fn end(&self) {}
}

/// The signal that ended a process, by name: `SIGKILL`.
pub fn exit_signal(status: &ExitStatus) -> Option<String> {
    let sig = status.signal()?;
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        _ => return Some(format!("signal {sig}")),
    };
    Some(name.to_string())
}
