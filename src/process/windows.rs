//! Windows: detached process groups, CTRL_BREAK and TerminateProcess, Ctrl-C.
//!
//! Private files rely on the ACLs of the user's profile directory that holds the home.

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::windows::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use windows_sys::Win32::Foundation::{CloseHandle, FALSE, HANDLE, TRUE};
use windows_sys::Win32::System::Console::{CTRL_BREAK_EVENT, GenerateConsoleCtrlEvent, SetConsoleCtrlHandler};
use windows_sys::Win32::System::Threading::{
    CREATE_NEW_PROCESS_GROUP, CREATE_NO_WINDOW, DETACHED_PROCESS, OpenProcess, PROCESS_TERMINATE, TerminateProcess,
};

use super::PortOwner;

/// Run the child detached from this console, in a process group of its own.
pub fn detach(cmd: &mut Command) {
    cmd.creation_flags(DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW);
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

pub fn create_private_dir_all(path: &Path) -> io::Result<()> {
    std::fs::create_dir_all(path)
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

/// Windows has no zombies that still run threads.
pub fn still_exiting(_pid: u32) -> bool {
    false
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

/// Not looked up on Windows yet.
pub fn port_owner(_port: u16) -> Option<PortOwner> {
    None
}
