//! Everything that differs between operating systems: detached spawns, process identity
//! (PID + start time + marker), signals, ports, private files and Ctrl-C.
//!
//! `unix.rs` and `windows.rs` export the same free functions; no other module of ocx uses
//! `cfg(unix)` or `cfg(windows)`.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sysinfo::{Pid, ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, System, UpdateKind};

mod boot;
pub use boot::{BootManager, boot_time, native as boot_manager};

#[cfg_attr(unix, path = "unix.rs")]
#[cfg_attr(windows, path = "windows.rs")]
mod imp;
mod setup;
mod spawn;

#[cfg(test)]
pub use imp::make_executable;
pub use imp::{
    Reaper, Tree, become_watcher, contain, create_private_dir_all, create_private_file, detach, ephemeral_ports,
    exit_signal, forget_ctrl_c, install_interrupt_handler, interrupt_code, interrupt_self, interrupted, new_session,
    open_lock_file, open_private_log, own_process_group, port_owner, read_trusted, request_stop, shed_code_pages,
    shell, ssh_shares_connections, stop_requests, sync_dir,
};

pub use setup::{not_private, output_within, service_manager};
pub use spawn::spawn;

/// The longest socket path ocx makes: macOS' `sun_path` holds 104 bytes, its NUL included
/// (Linux' 108), and a little room is kept.
const SOCKET_PATH_MAX: usize = 100;

/// The environment variables every process of an instance inherits. Both must match for a
/// process to count as the instance's: ids are only unique within one home.
pub const MARKER_ID: &str = "OCX_INSTANCE_ID";
pub const MARKER_HOME: &str = "OCX_HOME";
/// The variable every process of one `--notify` command inherits (`<id>/<watcher>/<n>`), so
/// that what the command started is ended with it.
pub const MARKER_ALERT: &str = "OCX_ALERT";

/// What ocx needs to know about a live process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    /// Seconds since the Unix epoch, as the OS reports it: for display.
    pub start_time: u64,
    /// The start time in the platform's own exact units (see `ProcId::start_key`).
    pub start_key: u64,
    pub rss: u64,
}

impl Proc {
    /// How a record names this process.
    pub fn id(&self) -> ProcId {
        ProcId { pid: self.pid, started_at: self.start_time, start_key: Some(self.start_key) }
    }
}

/// A process as a record names it: a PID and when that PID started. A live process with the
/// same PID but another start is a different process (the PID was reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcId {
    pub pid: u32,
    /// Seconds since the Unix epoch. On Linux this is derived from the boot time and the wall
    /// clock, so it can be a second off (or more after a clock step): shown, not compared,
    /// whenever `start_key` is known.
    pub started_at: u64,
    /// The start time exactly as the OS keeps it: clock ticks since boot on Linux (field 22 of
    /// `/proc/PID/stat`), the creation FILETIME on Windows, seconds elsewhere. Absent in records
    /// written before it existed; those are matched on `started_at` within a second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_key: Option<u64>,
}

impl ProcId {
    /// Whether the live process `p` is this one.
    pub fn matches(&self, p: &Proc) -> bool {
        p.pid == self.pid
            && match self.start_key {
                Some(key) => p.start_key == key,
                None => p.start_time.abs_diff(self.started_at) <= 1,
            }
    }
}

/// A process carrying an ocx marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marked {
    pub proc: Proc,
    pub instance: String,
}

/// Who holds a port, as far as the OS tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortOwner {
    /// None when the socket is listed but no live process holds it (a "ghost port").
    pub pid: Option<u32>,
    pub name: Option<String>,
}

impl std::fmt::Display for PortOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.pid, &self.name) {
            (Some(pid), Some(name)) => write!(f, "PID {pid} ({name})"),
            (Some(pid), None) => write!(f, "PID {pid}"),
            (None, _) => f.write_str("no live process (a ghost port)"),
        }
    }
}

/// A snapshot of (part of) the process table.
pub struct Processes {
    table: Table,
}

enum Table {
    /// sysinfo's: the whole table, and the PIDs asked for where `/proc` cannot say (systems
    /// other than Linux).
    Sys(Box<System>),
    /// Linux, the PIDs asked for, read straight from `/proc` (`imp::lean`): each live one with
    /// its environment where it was asked for.
    Lean(HashMap<u32, (Proc, Vec<OsString>)>),
}

impl Processes {
    /// Facts about just these PIDs, from one targeted refresh.
    pub fn of(pids: &[u32]) -> Result<Self> {
        Self::targeted(pids, |_| false, ProcessRefreshKind::nothing().without_tasks().with_memory())
    }

    /// Just these PIDs with their environment: enough to check their markers.
    pub fn of_with_environ(pids: &[u32]) -> Result<Self> {
        let kind = ProcessRefreshKind::nothing().without_tasks().with_environ(UpdateKind::Always);
        Self::targeted(pids, |_| true, kind)
    }

    /// For the classifier: `servers` with their memory, `watchers` with their environment
    /// too (to check their markers), from one refresh.
    pub fn of_servers_and_watchers(servers: &[u32], watchers: &[u32]) -> Result<Self> {
        let kind = ProcessRefreshKind::nothing().without_tasks().with_memory().with_environ(UpdateKind::Always);
        let pids: Vec<u32> = servers.iter().chain(watchers).copied().collect();
        let watchers: std::collections::HashSet<u32> = watchers.iter().copied().collect();
        Self::targeted(&pids, |pid| watchers.contains(&pid), kind)
    }

    /// Every process carrying `home`'s marker, with its environment: for marker scans
    /// (`marked`). On Linux only each process's environment is read, and more only of those
    /// that carry it: a watcher scans after every exit of its server, on machines with
    /// thousands of processes.
    pub fn marked_in(home: &Path) -> Result<Self> {
        Self::with_var(&format!("{MARKER_HOME}={}", home.display()))
    }

    /// Every live process whose environment holds `var` (`NAME=value`), never ocx itself: read
    /// as `marked_in` reads them.
    pub fn holding(var: &str) -> Result<Vec<Proc>> {
        let table = Self::with_var(var)?;
        let me = std::process::id();
        Ok(table
            .environs()
            .into_iter()
            .filter(|&(pid, env)| pid != me && env.iter().any(|v| v.to_str() == Some(var)))
            .filter_map(|(pid, _)| table.get(pid))
            .collect())
    }

    /// The processes holding `var` with their environment: on Linux only those (`lean_with_var`),
    /// elsewhere every process.
    fn with_var(var: &str) -> Result<Self> {
        match imp::lean_with_var(var) {
            Some(found) => Ok(Processes { table: Table::Lean(found) }),
            None => Self::refresh(None, ProcessRefreshKind::nothing().without_tasks().with_environ(UpdateKind::Always)),
        }
    }

    /// Every process with its environment, command line, user and memory: for `ls --all`.
    pub fn all() -> Result<Self> {
        let kind = ProcessRefreshKind::nothing()
            .without_tasks()
            .with_memory()
            .with_environ(UpdateKind::Always)
            .with_cmd(UpdateKind::Always)
            .with_user(UpdateKind::Always);
        Self::refresh(None, kind)
    }

    /// These PIDs, straight from `/proc` where it can say (`environ`: whose environment to
    /// read), else from sysinfo (`kind`).
    fn targeted(pids: &[u32], environ: impl Fn(u32) -> bool + Sync, kind: ProcessRefreshKind) -> Result<Self> {
        match imp::lean(pids, environ) {
            Some(found) => Ok(Processes { table: Table::Lean(found) }),
            None => Self::refresh(Some(pids), kind),
        }
    }

    /// Refresh these PIDs (None: every process) through sysinfo.
    fn refresh(pids: Option<&[u32]>, kind: ProcessRefreshKind) -> Result<Self> {
        let mut sys = System::new().map_err(|e| anyhow::anyhow!("{e}")).context("cannot read the process table")?;
        match pids {
            Some(pids) => {
                // sysinfo loses a PID listed twice (two records can name one PID after reuse).
                let mut pids: Vec<Pid> = pids.iter().map(|&p| Pid::from_u32(p)).collect();
                pids.sort_unstable();
                pids.dedup();
                sys.refresh_processes_specifics(ProcessesToUpdate::Some(&pids), true, kind)
            }
            None => sys.refresh_processes_specifics(ProcessesToUpdate::All, true, kind),
        };
        Ok(Processes { table: Table::Sys(Box::new(sys)) })
    }

    /// The live process with this PID. A zombie counts as gone once all its threads are.
    pub fn get(&self, pid: u32) -> Option<Proc> {
        let sys = match &self.table {
            Table::Lean(found) => return found.get(&pid).map(|(p, _)| *p),
            Table::Sys(sys) => sys,
        };
        let p = sys.process(Pid::from_u32(pid))?;
        let exited = match p.status() {
            ProcessStatus::Dead => true,
            ProcessStatus::Zombie => !imp::still_exiting(pid),
            _ => false,
        };
        if exited {
            return None;
        }
        // Read after the snapshot: a process that exited meanwhile has no start key, and is gone.
        let start_key = imp::start_key(pid, p.start_time())?;
        Some(Proc { pid, start_time: p.start_time(), start_key, rss: p.memory() })
    }

    /// The live process `id` names, if it is still that process.
    pub fn find(&self, id: &ProcId) -> Option<Proc> {
        self.get(id.pid).filter(|p| id.matches(p))
    }

    /// Each process of the snapshot with its environment (empty where none was read).
    fn environs(&self) -> Vec<(u32, &[OsString])> {
        match &self.table {
            Table::Sys(sys) => sys.processes().values().map(|p| (p.pid().as_u32(), p.environ())).collect(),
            Table::Lean(found) => found.iter().map(|(&pid, (_, env))| (pid, env.as_slice())).collect(),
        }
    }

    /// Every live process carrying the marker of `home` (all instances), never ocx itself.
    /// Needs a snapshot with environments (`marked_in`, `of_with_environ`, `all`; of
    /// `of_servers_and_watchers` only the watchers').
    pub fn marked(&self, home: &Path) -> Vec<Marked> {
        let me = std::process::id();
        let home_var = format!("{MARKER_HOME}={}", home.display());
        let id_prefix = format!("{MARKER_ID}=");
        let mut found: Vec<Marked> = self
            .environs()
            .into_iter()
            .filter(|&(pid, _)| pid != me)
            .filter(|(_, env)| env.iter().any(|v| v.to_str() == Some(home_var.as_str())))
            .filter_map(|(pid, env)| {
                let instance = env.iter().find_map(|v| v.to_str()?.strip_prefix(id_prefix.as_str()))?.to_string();
                let proc = self.get(pid)?;
                Some(Marked { proc, instance })
            })
            .collect();
        found.sort_by_key(|m| m.proc.pid);
        found
    }

    /// `opencode serve` processes of the current user, as (process, command line).
    /// Needs a snapshot from `all()`.
    pub fn opencode_servers(&self) -> Vec<(Proc, Vec<String>)> {
        let Table::Sys(sys) = &self.table else { return Vec::new() };
        let me = sysinfo::get_current_pid().ok().and_then(|pid| sys.process(pid));
        let my_user = me.and_then(|p| p.user_id());
        let mut found: Vec<(Proc, Vec<String>)> = sys
            .processes()
            .values()
            .filter(|p| my_user.is_none() || p.user_id() == my_user)
            .filter_map(|p| {
                let cmd: Vec<String> = p.cmd().iter().map(|a| a.to_string_lossy().into_owned()).collect();
                let is_opencode = cmd.first().is_some_and(|a| {
                    Path::new(a).file_stem().is_some_and(|s| s.to_string_lossy().starts_with("opencode"))
                });
                let serves = cmd.iter().skip(1).any(|a| a == "serve");
                (is_opencode && serves).then(|| Some((self.get(p.pid().as_u32())?, cmd)))?
            })
            .collect();
        found.sort_by_key(|(p, _)| p.pid);
        found
    }
}

/// How much CPU processes use, measured between two looks (`ocx top`'s CPU column): the
/// process table is kept from one sample to the next, which is what the measure needs.
pub struct CpuMeter {
    sys: System,
}

impl CpuMeter {
    pub fn new() -> Result<CpuMeter> {
        let sys = System::new().map_err(|e| anyhow::anyhow!("{e}")).context("cannot read the process table")?;
        Ok(CpuMeter { sys })
    }

    /// Percent of one core each of these PIDs used since the previous sample (0 the first time
    /// a PID is seen); a PID that is gone is left out.
    pub fn sample(&mut self, pids: &[u32]) -> std::collections::HashMap<u32, f32> {
        let mut wanted: Vec<Pid> = pids.iter().map(|&p| Pid::from_u32(p)).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let kind = ProcessRefreshKind::nothing().without_tasks().with_cpu();
        // `true`: forget the PIDs that are gone, so a reused one starts afresh.
        self.sys.refresh_processes_specifics(ProcessesToUpdate::Some(&wanted), true, kind);
        wanted.iter().filter_map(|&pid| self.sys.process(pid).map(|p| (pid.as_u32(), p.cpu_usage()))).collect()
    }
}

/// The polite signal (TERM; CTRL_BREAK on Windows) or the forceful one (KILL; TerminateProcess).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    Kill,
}

/// Signal `proc` (and the process group it leads) only while it is provably that process: pin
/// the PID, check its start time again, then signal through the pin. Returns false, sending
/// nothing, if it is gone or has become another process.
pub fn signal(proc: &Proc, signal: Signal) -> Result<bool> {
    let Some(pinned) = imp::pin(proc.pid) else { return Ok(false) };
    if !is_alive(proc) {
        return Ok(false);
    }
    send(&pinned, signal).with_context(|| format!("cannot signal PID {}", proc.pid))?;
    Ok(true)
}

/// Signal a child this ocx spawned and has not reaped: its PID cannot be reused meanwhile.
pub fn signal_child(child: &std::process::Child, signal: Signal) {
    if let Some(pinned) = imp::pin(child.id()) {
        let _ = send(&pinned, signal);
    }
}

fn send(pinned: &imp::Pinned, signal: Signal) -> std::io::Result<()> {
    match signal {
        Signal::Term => pinned.terminate(),
        Signal::Kill => pinned.kill(),
    }
}

/// Whether a process is still the same live process, refreshing just that PID.
pub fn is_alive(proc: &Proc) -> bool {
    Processes::of(&[proc.pid]).is_ok_and(|t| t.find(&proc.id()).is_some())
}

/// Poll until the process is gone or `timeout` passes; true if it is gone.
pub fn wait_gone(proc: &Proc, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !is_alive(proc) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Whether a write failed because the reader went away: EPIPE, or on Windows also
/// `ERROR_PIPE_NOT_CONNECTED` (233), which Rust does not map to `BrokenPipe` (Wine reports a
/// closed pipe that way, and real Windows can for named pipes).
pub fn is_closed_pipe(err: &std::io::Error) -> bool {
    err.kind() == std::io::ErrorKind::BrokenPipe || (cfg!(windows) && err.raw_os_error() == Some(233))
}

/// Where ocx picks ports for new instances: below the ephemeral range, so that no outgoing
/// connection can take an instance's port while its watcher restarts the server.
pub fn instance_ports() -> std::ops::Range<u16> {
    let (low, _) = ephemeral_ports();
    10_000..low.max(10_001)
}

/// Whether a failed rename may succeed once another handle to one of the files is closed:
/// access denied (`ERROR_ACCESS_DENIED`), a sharing or lock violation (Windows' errors 32 and
/// 33, which Rust maps to no kind), busy.
pub fn is_held_open(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::{PermissionDenied, ResourceBusy};
    matches!(err.kind(), PermissionDenied | ResourceBusy)
        || (cfg!(windows) && matches!(err.raw_os_error(), Some(32 | 33)))
}

/// A random port of `range` that is free on `host` (bound and closed again) and not in
/// `claimed`; after some tries, any port the OS gives for port 0.
pub fn free_port(host: &str, range: std::ops::Range<u16>, claimed: &[u16]) -> Result<u16> {
    let span = u32::from(range.end - range.start);
    for _ in 0..50 {
        let port = range.start + (getrandom::u32().unwrap_or(0) % span) as u16;
        if !claimed.contains(&port) && port_is_free(host, port) {
            return Ok(port);
        }
    }
    let listener = TcpListener::bind((host, 0)).with_context(|| format!("cannot bind a port on {host}"))?;
    Ok(listener.local_addr()?.port())
}

/// Whether `port` on `host` can be bound right now.
pub fn port_is_free(host: &str, port: u16) -> bool {
    TcpListener::bind((host, port)).is_ok()
}

/// A short, stable name for a path, where the path itself cannot go (an event name, a
/// directory name): FNV-1a (64 bits) of its text.
pub fn path_hash(path: &Path) -> u64 {
    path.to_string_lossy().bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// A private directory for sockets named up to `name_len` bytes: `preferred` (created 0700)
/// when a socket path in it fits, else a short directory of this user's named for `tag` and
/// `preferred` (on Unix in `$XDG_RUNTIME_DIR` or `/tmp`), refused unless it is a real
/// directory, this user's, mode 0700: anyone can make that name first in a shared directory.
pub fn socket_dir(preferred: &Path, tag: &str, name_len: usize) -> io::Result<PathBuf> {
    let name = format!("ocx-{tag}-{:012x}", path_hash(preferred) & 0xffff_ffff_ffff);
    let roots = imp::socket_roots(std::env::var_os("XDG_RUNTIME_DIR"));
    match pick_socket_dir(preferred, &name, name_len, &roots) {
        None => {
            create_private_dir_all(preferred)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot create {}: {e}", preferred.display())))?;
            Ok(preferred.to_path_buf())
        }
        Some(dir) => {
            imp::create_own_private_dir(&dir)?;
            Ok(dir)
        }
    }
}

/// None when `preferred` is short enough, else `name` in the first of `roots` where it fits
/// (the last one if none does).
fn pick_socket_dir(preferred: &Path, name: &str, name_len: usize, roots: &[PathBuf]) -> Option<PathBuf> {
    let fits = |dir: &Path| dir.as_os_str().len() + 1 + name_len <= SOCKET_PATH_MAX;
    if fits(preferred) {
        return None;
    }
    let mut dirs = roots.iter().map(|root| root.join(name));
    dirs.clone().find(|dir| fits(dir)).or_else(|| dirs.next_back())
}

#[cfg(test)]
mod tests;
