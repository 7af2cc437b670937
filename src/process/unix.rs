//! Unix: setsid, pinned signals, Ctrl-C/SIGTERM/SIGHUP, process start times, ports; the
//! watcher's side in `unix_watcher.rs`, private files and directories in `unix_files.rs`.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};

use super::PortOwner;

#[path = "unix_files.rs"]
mod files;
#[path = "unix_proc.rs"]
mod procfs;
#[path = "unix_watcher.rs"]
mod watcher;

pub use files::*;
pub use procfs::{lean, lean_with_var};
pub use watcher::*;

/// Run the child in a session of its own, so it survives the terminal that started it and
/// a Ctrl-C in that terminal does not reach it.
pub fn detach(cmd: &mut Command) {
    own_session(cmd);
}

/// The server under its watcher: a session (and process group) of its own, so a signal to the
/// group reaches what it started in it; and SIGPIPE ignored (Rust resets it to the default in
/// children), so that if the watcher, its log pipe's only reader, dies, the server's next log
/// write fails with EPIPE instead of killing it. (opencode 1.18.33 ignores SIGPIPE itself and
/// survives such writes; this keeps that true for any server.)
pub fn new_session(cmd: &mut Command) {
    // SAFETY: signal(2) is async-signal-safe, as pre_exec requires; SIG_IGN survives exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
            Ok(())
        });
    }
    own_session(cmd);
}

/// A command line run by the user's shell (`sh -c`): `--notify` commands.
pub fn shell(command: &str) -> Command {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(command);
    cmd
}

/// A child that Ctrl-C at the terminal must not reach directly (ssh for a remote command):
/// ocx hears the Ctrl-C and passes it on in its own way.
pub fn own_process_group(cmd: &mut Command) {
    cmd.process_group(0);
}

fn own_session(cmd: &mut Command) {
    // SAFETY: setsid is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A PID held so that it cannot turn into another process while ocx decides to signal it:
/// on Linux a pidfd (signals through it never reach a process that reused the PID); elsewhere,
/// or on kernels without pidfds, just the PID.
pub struct Pinned {
    pid: libc::pid_t,
    fd: Option<OwnedFd>,
}

/// Pin a PID; None if there is no such process.
pub fn pin(pid: u32) -> Option<Pinned> {
    let pid = libc::pid_t::try_from(pid).ok().filter(|&p| p > 1)?;
    #[cfg(target_os = "linux")]
    {
        // SAFETY: pidfd_open takes a PID and flags and returns a new file descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd >= 0 {
            // SAFETY: the descriptor was just returned to us and is owned by nobody else.
            let fd = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd as std::os::fd::RawFd) };
            return Some(Pinned { pid, fd: Some(fd) });
        }
        if io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
            return None;
        }
    }
    Some(Pinned { pid, fd: None })
}

impl Pinned {
    /// Ask the process to exit: SIGTERM, then SIGCONT so that a stopped process (SIGSTOP, a
    /// debugger) gets to handle it.
    pub fn terminate(&self) -> io::Result<()> {
        self.send(libc::SIGTERM)?;
        self.send(libc::SIGCONT)
    }

    /// End the process: SIGKILL.
    pub fn kill(&self) -> io::Result<()> {
        self.send(libc::SIGKILL)
    }

    fn send(&self, sig: libc::c_int) -> io::Result<()> {
        // Only the pinned process: the members of its process group are not signalled as a
        // group (one without the marker would be hit too); what the server leaves behind is
        // ended one vouched-for process at a time (`stop::end_marked`).
        // SAFETY: plain syscalls on a PID the caller has pinned and vouched for.
        let rc = unsafe {
            match &self.fd {
                #[cfg(target_os = "linux")]
                Some(fd) => libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    std::os::fd::AsRawFd::as_raw_fd(fd),
                    sig,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                ) as libc::c_int,
                _ => libc::kill(self.pid, sig),
            }
        };
        if rc == -1 {
            let err = io::Error::last_os_error();
            // Gone meanwhile: nothing to signal, and nobody else was.
            if err.raw_os_error() != Some(libc::ESRCH) {
                return Err(err);
            }
        }
        Ok(())
    }
}

/// The signal that asked this ocx to stop (SIGINT, SIGTERM or SIGHUP), 0 for none yet.
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_interrupt(sig: libc::c_int) {
    INTERRUPTED.store(sig, Ordering::SeqCst);
}

/// From now on Ctrl-C, SIGTERM (`timeout 60 ocx …`, a service manager) and SIGHUP (the
/// terminal went away) set a flag (see `interrupted`) instead of ending ocx, so a command can
/// clean up (abort its prompt, stop what it was starting) before it exits.
pub fn install_interrupt_handler() {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::signal(sig, on_interrupt as *const () as libc::sighandler_t);
        }
    }
}

/// Whether Ctrl-C (or SIGTERM, SIGHUP) came since `install_interrupt_handler`.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst) != 0
}

/// The exit code for the interruption: 128 + the signal, as a shell shows a command killed by
/// it (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP); 130 when none came.
pub fn interrupt_code() -> u8 {
    match INTERRUPTED.load(Ordering::SeqCst) {
        0 => 130,
        sig => u8::try_from(128 + sig).unwrap_or(130),
    }
}

/// Forget a Ctrl-C that came meanwhile: `ocx top` hands the terminal to `ocx attach`, whose
/// Ctrl-C (the whole foreground group gets it) was the child's, not a request to quit. A
/// SIGTERM or SIGHUP is kept.
pub fn forget_ctrl_c() {
    let _ = INTERRUPTED.compare_exchange(libc::SIGINT, 0, Ordering::SeqCst, Ordering::SeqCst);
}

/// Act as if Ctrl-C was pressed: a command that installed the handler cleans up and exits 130;
/// one that did not ends at once (for `ocx __remote`, whose caller went away).
pub fn interrupt_self() {
    // SAFETY: raise only sends a signal to this process.
    unsafe {
        libc::raise(libc::SIGINT);
    }
}

/// Whether the system's ssh can share one connection between commands (ControlMaster).
pub fn ssh_shares_connections() -> bool {
    true
}

/// Whether a zombie's process is still exiting: on Linux the leader of a multi-threaded process
/// shows as a zombie as soon as its main thread exits, while its other threads may go on for
/// seconds (opencode's graceful shutdown). Elsewhere a zombie has exited.
pub fn still_exiting(pid: u32) -> bool {
    #[cfg(target_os = "linux")]
    {
        std::fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|tasks| tasks.count() > 1)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        false
    }
}

/// A process's start time in the OS's exact units: on Linux the clock ticks since boot at
/// which it started (field 22 of `/proc/PID/stat`; immune to clock steps); elsewhere the
/// seconds the OS reports. None if the process is gone.
pub fn start_key(pid: u32, start_time: u64) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let _ = start_time;
        procfs::stat(pid).map(|(_, ticks, _)| ticks)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        Some(start_time)
    }
}

/// The ports the OS hands out for outgoing connections (and for binding port 0): on Linux
/// `/proc/sys/net/ipv4/ip_local_port_range`; elsewhere the IANA range macOS and BSDs use.
pub fn ephemeral_ports() -> (u16, u16) {
    #[cfg(target_os = "linux")]
    if let Ok(text) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range") {
        let mut ports = text.split_whitespace().filter_map(|p| p.parse::<u16>().ok());
        if let (Some(low), Some(high)) = (ports.next(), ports.next()) {
            return (low, high);
        }
    }
    (49152, 65535)
}

/// Who listens on a TCP port: read from /proc on Linux; unknown elsewhere.
pub fn port_owner(port: u16) -> Option<PortOwner> {
    #[cfg(target_os = "linux")]
    {
        linux_port_owner(port)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = port;
        None
    }
}

#[cfg(target_os = "linux")]
fn linux_port_owner(port: u16) -> Option<PortOwner> {
    const LISTEN: &str = "0A";
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|line| {
                    let cols: Vec<&str> = line.split_whitespace().collect();
                    let local_port = cols.get(1)?.rsplit(':').next()?;
                    let listening = *cols.get(3)? == LISTEN;
                    (listening && u16::from_str_radix(local_port, 16).ok()? == port)
                        .then(|| cols.get(9).map(|s| s.to_string()))?
                })
                .collect::<Vec<_>>()
        })
        .collect();
    if inodes.is_empty() {
        return None;
    }
    let targets: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else { continue };
            if targets.iter().any(|t| link.as_os_str() == t.as_str()) {
                let name = std::fs::read_to_string(entry.path().join("comm")).ok().map(|s| s.trim().to_string());
                return Some(PortOwner { pid: Some(pid), name });
            }
        }
    }
    Some(PortOwner { pid: None, name: None })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use std::fs::DirBuilder;
    use std::os::unix::fs::DirBuilderExt;
    use std::path::{Path, PathBuf};

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_pin_signals_its_process_and_nothing_once_it_is_gone() {
        // Above the kernel's pid_max (4,194,304 at most), no process can have the PID.
        let above_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|m| m.trim().parse::<u32>().ok())
            .map_or(99_999_999, |m| m + 1);
        if cfg!(target_os = "linux") {
            assert!(pin(above_max).is_none(), "no such PID: nothing to pin");
        }
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pinned = pin(child.id()).expect("a live child can be pinned");
        pinned.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL));
        // Reaped now: the PID is free for anyone, and the old pin reaches nobody.
        pinned.terminate().unwrap();
    }

    #[test]
    fn private_dirs_are_0700_and_files_0600_from_creation() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a").join("b");
        create_private_dir_all(&nested).unwrap();
        assert_eq!(mode(&nested), 0o700);
        let file = nested.join("f");
        create_private_file(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
        assert!(create_private_file(&file).is_err(), "create_private_file never reuses a file");
        let log = nested.join("log");
        open_private_log(&log).unwrap();
        assert_eq!(mode(&log), 0o600);
        assert!(is_trusted(&std::fs::metadata(&file).unwrap()));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(!is_trusted(&std::fs::metadata(&file).unwrap()));
    }

    #[test]
    fn only_a_trusted_regular_file_is_read_and_nothing_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        create_private_file(&file).unwrap();
        std::fs::write(&file, "content").unwrap();
        assert_eq!(read_trusted(&file).unwrap().as_deref(), Some(&b"content"[..]));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(read_trusted(&link).unwrap(), None, "a link is never followed");
        assert_eq!(read_trusted(dir.path()).unwrap(), None, "a directory");
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(read_trusted(&fifo).unwrap(), None, "a FIFO, without waiting for a writer");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o622)).unwrap();
        assert_eq!(read_trusted(&file).unwrap(), None, "writable by others");
        assert!(read_trusted(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn a_short_socket_dir_is_made_private_or_refused_unless_it_is_a_private_dir_of_this_user() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ocx-ssh-1");
        create_own_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        create_own_private_dir(&dir).expect("its own private directory is taken again");

        let refused = |path: &Path, why: &str| {
            let err = create_own_private_dir(path).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
            assert!(err.to_string().contains(why), "{err}");
        };
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        refused(&link, "is a symbolic link");
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        refused(&open, "has mode 0755, not 0700");
        let file = tmp.path().join("file");
        std::fs::write(&file, "").unwrap();
        refused(&file, "is not a directory");
        // Another user's: only root can make one.
        let theirs = tmp.path().join("theirs");
        DirBuilder::new().mode(0o700).create(&theirs).unwrap();
        match std::os::unix::fs::chown(&theirs, Some(65534), None) {
            Ok(()) => refused(&theirs, "belongs to another user (uid 65534)"),
            Err(e) => eprintln!("skipped the case of another user's directory: cannot chown as this user: {e}"),
        }
    }

    #[test]
    fn sockets_go_to_an_absolute_runtime_dir_else_tmp() {
        let tmp = tempfile::tempdir().unwrap();
        let runtime = tmp.path().to_path_buf();
        assert_eq!(socket_roots(Some(runtime.clone().into())), [runtime.clone(), PathBuf::from("/tmp")]);
        assert_eq!(socket_roots(None), [PathBuf::from("/tmp")]);
        assert_eq!(socket_roots(Some("relative/dir".into())), [PathBuf::from("/tmp")]);
        assert_eq!(socket_roots(Some(runtime.join("missing").into())), [PathBuf::from("/tmp")]);
    }
}
