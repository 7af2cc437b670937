//! What `ocx doctor` asks the operating system: whether a file is private to this user, and
//! which service manager `ocx service install` would hand an instance to (a systemd user
//! manager and lingering, launchd, or the Task Scheduler).

use std::fs::Metadata;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Why a file or directory of ocx's is not private to this user (another user's, or open to
/// group or others), or None when it is. Windows: None (its ACLs are not looked at).
pub fn not_private(meta: &Metadata) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid cannot fail.
        let me = unsafe { libc::geteuid() };
        let mode = meta.mode() & 0o7777;
        if meta.uid() != me {
            return Some(format!("belongs to another user (uid {})", meta.uid()));
        }
        if mode & 0o077 != 0 {
            let what = if mode & 0o022 != 0 { "writable" } else { "readable" };
            return Some(format!("has mode {mode:04o} ({what} by group or others)"));
        }
        None
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

/// The service manager found, or what is missing.
#[derive(Debug)]
pub struct ServiceManager {
    pub ok: bool,
    pub detail: String,
    pub hint: Option<String>,
}

/// The service manager of this platform, as `ocx service install` would use it.
pub fn service_manager() -> ServiceManager {
    #[cfg(target_os = "linux")]
    {
        systemd()
    }
    #[cfg(target_os = "macos")]
    {
        match which::which("launchctl") {
            Ok(path) => ServiceManager { ok: true, detail: format!("launchd ({})", path.display()), hint: None },
            Err(_) => ServiceManager {
                ok: false,
                detail: "launchctl is not on PATH".into(),
                hint: Some("launchctl lives in /bin on macOS: put /bin on PATH".into()),
            },
        }
    }
    #[cfg(windows)]
    {
        match which::which("schtasks") {
            Ok(path) => ServiceManager { ok: true, detail: format!("Task Scheduler ({})", path.display()), hint: None },
            Err(_) => ServiceManager {
                ok: false,
                detail: "schtasks is not on PATH".into(),
                hint: Some("schtasks.exe is in %SystemRoot%\\System32: put it on PATH".into()),
            },
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
    {
        ServiceManager { ok: false, detail: "no service manager ocx knows on this system".into(), hint: None }
    }
}

/// A systemd user manager (`systemctl --user is-system-running`), and whether this user lingers
/// (`loginctl show-user`): without lingering, the user manager and every service end with the
/// user's last session.
#[cfg(target_os = "linux")]
fn systemd() -> ServiceManager {
    let Some((_, state)) = output_within(Command::new("systemctl").args(["--user", "is-system-running"]), WAIT) else {
        return ServiceManager {
            ok: false,
            detail: "systemctl is not installed or did not answer".into(),
            hint: Some("`ocx service install` needs a systemd user manager (systemd as init)".into()),
        };
    };
    let state = state.trim().to_string();
    // `degraded` (a unit failed) and `starting` still have a manager that takes services.
    if !matches!(state.as_str(), "running" | "degraded" | "starting" | "initializing") {
        let said = if state.is_empty() { "no answer".to_string() } else { state };
        return ServiceManager {
            ok: false,
            detail: format!("no systemd user manager ({said})"),
            hint: Some(
                "log in through a session that starts one (ssh or a console login with systemd-logind), \
                 or `loginctl enable-linger $USER`"
                    .into(),
            ),
        };
    }
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    let linger = output_within(
        Command::new("loginctl").args(["show-user", &uid.to_string(), "--property=Linger", "--value"]),
        WAIT,
    )
    .map(|(_, out)| out.trim() == "yes");
    match linger {
        Some(true) => {
            ServiceManager { ok: true, detail: format!("systemd user manager ({state}), lingering"), hint: None }
        }
        _ => ServiceManager {
            ok: false,
            detail: format!("systemd user manager ({state}), but this user does not linger"),
            hint: Some("`loginctl enable-linger $USER`, or services end when your last session does".into()),
        },
    }
}

/// How long a question to the system may take.
#[cfg(target_os = "linux")]
const WAIT: Duration = Duration::from_secs(3);

/// Run `cmd` with no input, up to `timeout`; its exit status and stdout (up to 64 KiB), or None
/// when it cannot start or takes too long (then it is killed).
pub fn output_within(cmd: &mut Command, timeout: Duration) -> Option<(std::process::ExitStatus, String)> {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().ok()?;
    let (mut out, mut err) = (child.stdout.take()?, child.stderr.take()?);
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = (&mut out).take(64 * 1024).read_to_string(&mut text);
        text
    });
    // Some tools answer on stderr (`ssh -V`): drained, and appended when stdout is empty.
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = (&mut err).take(64 * 1024).read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    };
    let (out, err) = (reader.join().ok()?, errors.join().ok()?);
    Some((status, if out.trim().is_empty() { err } else { out }))
}
