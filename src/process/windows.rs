//! Windows: the watcher's hidden console and Job Object, named stop events, CTRL_BREAK and
//! TerminateProcess, Ctrl-C.
//!
//! Private files rely on the ACLs of the user's profile directory that holds the home.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::windows::io::AsRawHandle;
use std::os::windows::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use windows_sys::Win32::Foundation::{CloseHandle, FALSE, HANDLE, TRUE, WAIT_OBJECT_0};
use windows_sys::Win32::System::Console::{CTRL_BREAK_EVENT, GenerateConsoleCtrlEvent, SetConsoleCtrlHandler};
use windows_sys::Win32::System::JobObjects::{AssignProcessToJobObject, CreateJobObjectW, TerminateJobObject};
use windows_sys::Win32::System::Threading::{
    CREATE_NEW_PROCESS_GROUP, CREATE_NO_WINDOW, CreateEventW, EVENT_MODIFY_STATE, INFINITE, OpenEventW, OpenProcess,
    PROCESS_TERMINATE, SetEvent, TerminateProcess, WaitForSingleObject,
};

use super::{PortOwner, Proc};

/// Run the child (the watcher) in a process group of its own with a console of its own that
/// has no window: detached from this console, yet able to send its server a CTRL_BREAK, which
/// reaches only processes that share the sender's console.
pub fn detach(cmd: &mut Command) {
    cmd.creation_flags(CREATE_NO_WINDOW | CREATE_NEW_PROCESS_GROUP);
}

/// A command line run by the system's shell (`cmd /C`): `--notify` commands.
pub fn shell(command: &str) -> Command {
    let mut cmd = Command::new("cmd");
    cmd.arg("/C").raw_arg(command);
    cmd
}

/// A child that Ctrl-C at the console must not reach directly (ssh for a remote command).
pub fn own_process_group(cmd: &mut Command) {
    cmd.creation_flags(CREATE_NEW_PROCESS_GROUP);
}

/// The server under its watcher: its own process group, on the watcher's console.
pub fn new_session(cmd: &mut Command) {
    cmd.creation_flags(CREATE_NEW_PROCESS_GROUP);
}

/// A PID held open so that it cannot be reused while ocx decides to signal it (Windows keeps
/// a PID while any handle to the process is open).
pub struct Pinned {
    pid: u32,
    handle: HANDLE,
}

/// Pin a PID; None if there is no such process (or it cannot be ended by this user).
pub fn pin(pid: u32) -> Option<Pinned> {
    // SAFETY: the handle is checked here and closed on drop.
    let handle = unsafe { OpenProcess(PROCESS_TERMINATE, FALSE, pid) };
    (!handle.is_null()).then_some(Pinned { pid, handle })
}

impl Pinned {
    /// Ask the process group to exit: CTRL_BREAK.
    pub fn terminate(&self) -> io::Result<()> {
        // SAFETY: plain API call on a process the caller has pinned and vouched for.
        if unsafe { GenerateConsoleCtrlEvent(CTRL_BREAK_EVENT, self.pid) } == FALSE {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// End the process: TerminateProcess.
    pub fn kill(&self) -> io::Result<()> {
        // SAFETY: the handle is open for the life of `self`.
        if unsafe { TerminateProcess(self.handle, 1) } == FALSE {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // SAFETY: the handle was opened by `pin` and is closed once.
        unsafe { CloseHandle(self.handle) };
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

unsafe extern "system" fn on_ctrl(_: u32) -> i32 {
    INTERRUPTED.store(true, Ordering::SeqCst);
    TRUE
}

/// From now on Ctrl-C sets a flag (see `interrupted`) instead of ending ocx.
pub fn install_interrupt_handler() {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        SetConsoleCtrlHandler(Some(on_ctrl), TRUE);
    }
}

/// Whether Ctrl-C was pressed since `install_interrupt_handler`.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// The exit code for an interruption: 130, as for Ctrl-C (Windows has no SIGTERM; a console
/// close or logoff event also comes through the same handler).
pub fn interrupt_code() -> u8 {
    130
}

/// Forget a Ctrl-C that came meanwhile: `ocx top` hands the console to `ocx attach`, whose
/// Ctrl-C was the child's, not a request to quit.
pub fn forget_ctrl_c() {
    INTERRUPTED.store(false, Ordering::SeqCst);
}

/// Act as if Ctrl-C was pressed: commands that watch for it clean up and exit 130. (ocx on
/// Windows is not a remote host: `ocx __remote` runs under a POSIX shell.)
pub fn interrupt_self() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Win32-OpenSSH has no ControlMaster: each command and forward has its own connection.
pub fn ssh_shares_connections() -> bool {
    false
}

/// Nothing to set up for a watcher on Windows: there is no subreaper, and the Job Object of
/// each server (`contain`) holds its tree.
pub fn become_watcher() -> io::Result<()> {
    Ok(())
}

/// Nothing to shed on Windows (its working set is trimmed by the OS).
pub fn shed_code_pages() {}

/// The name of instance `id`'s stop event: unique per home and id, in this session's namespace.
fn stop_event_name(home: &Path, id: &str) -> Vec<u16> {
    // A hash of the home's path: event names cannot hold backslashes.
    let hash = super::path_hash(home);
    format!("Local\\ocx-{hash:016x}-{id}").encode_utf16().chain(Some(0)).collect()
}

/// Stop requests to a watcher: a named event that `ocx stop` sets.
pub struct StopRequests {
    event: HANDLE,
}

// SAFETY: an event handle may be waited on from any thread.
unsafe impl Send for StopRequests {}

pub fn stop_requests(home: &Path, id: &str) -> io::Result<StopRequests> {
    let name = stop_event_name(home, id);
    // SAFETY: a new auto-reset event with a NUL-terminated name; checked below.
    let event = unsafe { CreateEventW(std::ptr::null(), FALSE, FALSE, name.as_ptr()) };
    if event.is_null() {
        return Err(io::Error::last_os_error());
    }
    Ok(StopRequests { event })
}

impl StopRequests {
    /// Block until the next stop request.
    pub fn wait(&mut self) -> io::Result<()> {
        // SAFETY: the handle is open for the life of `self`.
        match unsafe { WaitForSingleObject(self.event, INFINITE) } {
            WAIT_OBJECT_0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    }
}

/// Ask instance `id`'s watcher to stop its server and exit: set its stop event. False if there
/// is no such event (no watcher listens).
pub fn request_stop(home: &Path, id: &str, _watcher: &Proc) -> io::Result<bool> {
    let name = stop_event_name(home, id);
    // SAFETY: the handle is checked, used once and closed.
    unsafe {
        let event = OpenEventW(EVENT_MODIFY_STATE, FALSE, name.as_ptr());
        if event.is_null() {
            return Ok(false);
        }
        let ok = SetEvent(event);
        CloseHandle(event);
        if ok == FALSE {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(true)
}

/// Waits for each child on a thread of its own and reports its exit.
pub struct Reaper {
    on_exit: Arc<dyn Fn(u32, ExitStatus) + Send + Sync>,
}

impl Reaper {
    pub fn start(on_exit: impl Fn(u32, ExitStatus) + Send + Sync + 'static) -> io::Result<Reaper> {
        Ok(Reaper { on_exit: Arc::new(on_exit) })
    }

    pub fn watch(&self, mut child: Child) {
        let on_exit = Arc::clone(&self.on_exit);
        let _ = std::thread::Builder::new().stack_size(64 * 1024).spawn(move || {
            if let Ok(status) = child.wait() {
                on_exit(child.id(), status);
            }
        });
    }
}

/// A server's process tree: a Job Object holding the server and everything it starts, so the
/// whole tree, and with it every handle to the listening socket, ends at once (no "ghost port"
/// held by a child that inherited it).
pub struct Tree {
    job: HANDLE,
}

// SAFETY: a job handle may be used from any thread.
unsafe impl Send for Tree {}

/// Put a just-spawned server in a Job Object of its own. (What it started before this call,
/// in its first instants, is not in it; the marker sweep still finds that.)
pub fn contain(child: &Child) -> Tree {
    // SAFETY: an anonymous job; the child's handle is valid while `child` lives.
    unsafe {
        let job = CreateJobObjectW(std::ptr::null(), std::ptr::null());
        if !job.is_null() {
            AssignProcessToJobObject(job, child.as_raw_handle() as HANDLE);
        }
        Tree { job }
    }
}

impl Tree {
    /// End every process in the tree.
    pub fn end(&self) {
        if !self.job.is_null() {
            // SAFETY: the handle is open for the life of `self`.
            unsafe { TerminateJobObject(self.job, 1) };
        }
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        if !self.job.is_null() {
            // SAFETY: opened by `contain`, closed once. Without KILL_ON_JOB_CLOSE the processes
            // live on: a watcher that dies leaves its server serving.
            unsafe { CloseHandle(self.job) };
        }
    }
}

/// Windows reports no signals: an exit code says it all.
pub fn exit_signal(_status: &ExitStatus) -> Option<String> {
    None
}

pub fn create_private_dir_all(path: &Path) -> io::Result<()> {
    std::fs::create_dir_all(path)
}

/// Where a short directory for sockets may go: the user's temp directory.
pub fn socket_roots(_runtime: Option<std::ffi::OsString>) -> Vec<std::path::PathBuf> {
    vec![std::env::temp_dir()]
}

/// Create `dir` (private through the ACLs of the user's temp directory).
pub fn create_own_private_dir(dir: &Path) -> io::Result<()> {
    create_private_dir_all(dir)
}

pub fn create_private_file(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).open(path)
}

pub fn open_lock_file(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)
}

pub fn open_private_log(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).create(true).open(path)
}

/// Windows runs files by their extension; nothing to set.
#[cfg(test)]
pub fn make_executable(_path: &Path) -> io::Result<()> {
    Ok(())
}

/// Directories cannot be opened for syncing on Windows; the rename itself is atomic.
pub fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// Ownership checks would need ACL reads; the home under the user's profile is private already.
pub fn is_trusted(_meta: &Metadata) -> bool {
    true
}

/// A file's content if it is a regular file (not a link or a directory); None if it is not.
pub fn read_trusted(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.is_file() || !is_trusted(&meta) {
        return Ok(None);
    }
    std::fs::read(path).map(Some)
}

/// Windows has no zombies that still run threads.
pub fn still_exiting(_pid: u32) -> bool {
    false
}

/// `/proc` is Linux's: sysinfo reads the PIDs asked for.
pub fn lean(_pids: &[u32], _environ: impl Fn(u32) -> bool + Sync) -> Option<HashMap<u32, (Proc, Vec<OsString>)>> {
    None
}

/// `/proc` is Linux's: sysinfo scans the table.
pub fn lean_with_var(_var: &str) -> Option<HashMap<u32, (Proc, Vec<OsString>)>> {
    None
}

/// A process's creation time as a FILETIME (100 ns since 1601): exact, unlike the seconds
/// sysinfo reports. None if the process is gone or cannot be opened.
pub fn start_key(pid: u32, _start_time: u64) -> Option<u64> {
    use windows_sys::Win32::Foundation::FILETIME;
    use windows_sys::Win32::System::Threading::{GetProcessTimes, PROCESS_QUERY_LIMITED_INFORMATION};
    // SAFETY: the handle is checked, used once and closed.
    unsafe {
        let handle = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, FALSE, pid);
        if handle.is_null() {
            return None;
        }
        let zero = FILETIME { dwLowDateTime: 0, dwHighDateTime: 0 };
        let (mut created, mut exited, mut kernel, mut user) = (zero, zero, zero, zero);
        let ok = GetProcessTimes(handle, &mut created, &mut exited, &mut kernel, &mut user);
        CloseHandle(handle);
        (ok != FALSE).then(|| u64::from(created.dwHighDateTime) << 32 | u64::from(created.dwLowDateTime))
    }
}

/// The ports Windows hands out for outgoing connections (its default dynamic range).
pub fn ephemeral_ports() -> (u16, u16) {
    (49152, 65535)
}

/// Not looked up on Windows yet.
pub fn port_owner(_port: u16) -> Option<PortOwner> {
    None
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::process::{Command, Stdio};

    use super::*;

    /// A process that waits until its stdin closes (or it is ended), on Windows and under Wine.
    fn waiter() -> Child {
        Command::new("findstr.exe").arg("never").stdin(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap()
    }

    #[test]
    fn a_pin_ends_its_process() {
        assert!(pin(0x7fff_fff0).is_none(), "no such PID: nothing to pin");
        let mut child = waiter();
        let pinned = pin(child.id()).expect("a live child can be pinned");
        pinned.kill().unwrap();
        assert_eq!(child.wait().unwrap().code(), Some(1), "TerminateProcess's exit code");
    }

    #[test]
    fn a_tree_ends_what_is_in_it() {
        let mut child = waiter();
        let tree = contain(&child);
        tree.end();
        assert_eq!(child.wait().unwrap().code(), Some(1), "TerminateJobObject's exit code");
    }

    #[test]
    fn start_keys_are_exact_and_only_for_live_processes() {
        let mut child = waiter();
        let key = start_key(child.id(), 0).expect("a live process has a creation time");
        assert_eq!(start_key(child.id(), 0), Some(key), "the same every time");
        assert_ne!(start_key(std::process::id(), 0), Some(key), "another process started at another time");
        let pid = child.id();
        assert!(crate::process::Processes::of(&[pid]).unwrap().get(pid).is_some_and(|p| p.start_key == key));
        drop(child.stdin.take());
        child.wait().unwrap();
        // Exited, though our handle still holds its process object: gone for ocx.
        assert_eq!(crate::process::Processes::of(&[pid]).unwrap().get(pid), None);
        drop(child);
        assert_eq!(crate::process::Processes::of(&[pid]).unwrap().get(pid), None);
    }

    #[test]
    fn stop_requests_reach_the_watcher_of_that_home_and_id_only() {
        let home = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let me = Proc { pid: std::process::id(), start_time: 0, start_key: 0, rss: 0 };
        let mut requests = stop_requests(home.path(), "abc123").unwrap();
        assert!(!request_stop(home.path(), "zzz999", &me).unwrap(), "no watcher listens for that id");
        assert!(!request_stop(other.path(), "abc123", &me).unwrap(), "nor in that home");
        assert!(request_stop(home.path(), "abc123", &me).unwrap());
        requests.wait().unwrap();
    }

    /// Wine reports a write into a pipe whose reader is gone as `ERROR_PIPE_NOT_CONNECTED`
    /// (233), Windows as `ERROR_NO_DATA` (232, BrokenPipe): both are a closed pipe.
    #[test]
    fn a_pipe_whose_reader_is_gone_is_a_closed_pipe() {
        let (reader, mut writer) = std::io::pipe().unwrap();
        drop(reader);
        let err = writer.write_all(b"x").unwrap_err();
        assert!(crate::process::is_closed_pipe(&err), "{err:?}");
    }
}
