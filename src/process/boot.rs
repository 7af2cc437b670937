//! What runs programs at boot or login on this system (for `ocx service`), and when this
//! system booted (for `resurrect`: a TERM from before the boot was the shutdown's).

use std::path::Path;

/// The per-user service manager of this system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootManager {
    /// systemd, with user units (Linux booted with systemd).
    Systemd,
    /// launchd's LaunchAgents (macOS).
    Launchd,
    /// The Task Scheduler (Windows).
    TaskScheduler,
    /// None ocx knows: a container without systemd, a BSD, a Linux without systemd.
    None,
}

/// This system's manager. Linux counts as systemd's only when it was booted by systemd
/// (`/run/systemd/system` exists, as `sd_booted()` checks): a container that merely has the
/// package installed has none.
pub fn native() -> BootManager {
    if cfg!(target_os = "macos") {
        BootManager::Launchd
    } else if cfg!(windows) {
        BootManager::TaskScheduler
    } else if cfg!(target_os = "linux") && Path::new("/run/systemd/system").is_dir() {
        BootManager::Systemd
    } else {
        BootManager::None
    }
}

/// When this system booted, in seconds since the epoch (0 where the system does not say).
pub fn boot_time() -> u64 {
    sysinfo::System::boot_time().unwrap_or(0)
}
