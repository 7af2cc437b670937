//! Alerts (`ocx start --notify CMD`): the watcher runs CMD through the shell when something a
//! person should know happens, detached, with the facts in its environment, and never waits for
//! it: a CMD still running after a while is ended, and one failing or hanging never holds up the
//! next alert or a restart.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::process::{self, MARKER_ALERT, MARKER_HOME, MARKER_ID, ProcId, Processes, Reaper, Signal};
use crate::record::Record;

/// How long one alert's command may run before it is ended.
const ALERT_TIMEOUT: Duration = Duration::from_secs(30);

/// What happened: `OCX_EVENT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alert {
    /// A session started waiting for an answer (a permission request or a question).
    Asking,
    /// A session finished its turn.
    Idle,
    /// A session failed.
    Error,
    /// The server was restarted (the detail says why).
    Restarted,
    /// The watcher gave up restarting it (`failed`).
    Failed,
}

impl Alert {
    fn as_str(self) -> &'static str {
        match self {
            Alert::Asking => "asking",
            Alert::Idle => "idle",
            Alert::Error => "error",
            Alert::Restarted => "restarted",
            Alert::Failed => "failed",
        }
    }
}

/// The alerts' commands still running.
#[derive(Default)]
pub struct Alerts {
    running: Vec<Running>,
    /// How many were fired (for each one's own marker).
    fired: u64,
}

/// One alert's command.
struct Running {
    id: ProcId,
    /// When it is ended.
    until: Instant,
    /// Its `MARKER_ALERT` value, which what it starts inherits.
    tag: String,
    /// The `failed` alert's: the watcher's last word, which it waits for as it exits.
    last_word: bool,
}

impl Alerts {
    /// Run the instance's `--notify` command, if it has one, for `alert`.
    pub fn fire(&mut self, reaper: &Reaper, record: &Record, alert: Alert, session: &str, title: &str, detail: &str) {
        let Some(command) = record.supervision.notify.as_deref() else { return };
        self.fired += 1;
        let tag = format!("{}/{}/{}", record.id, std::process::id(), self.fired);
        let mut cmd = process::shell(command);
        cmd.current_dir(&record.dir)
            .env("OCX_EVENT", alert.as_str())
            .env("OCX_INSTANCE", &record.id)
            .env("OCX_NAME", record.name.as_deref().unwrap_or(""))
            .env("OCX_SESSION", session)
            .env("OCX_TITLE", title)
            .env("OCX_DETAIL", detail)
            .env("OCX_URL", &record.url)
            .env("OCX_DIR", &record.dir)
            // Not the instance's: a stop's or a restart's sweep leaves a running alert alone.
            .env_remove(MARKER_ID)
            .env_remove(MARKER_HOME)
            .env(MARKER_ALERT, &tag)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        process::detach(&mut cmd);
        let Ok(child) = cmd.spawn() else { return };
        let pid = child.id();
        if let Some(id) = Processes::of(&[pid]).ok().and_then(|t| t.get(pid)).map(|p| p.id()) {
            let last_word = alert == Alert::Failed;
            self.running.push(Running { id, until: Instant::now() + ALERT_TIMEOUT, tag, last_word });
        }
        reaper.watch(child);
    }

    /// When the next command is due to be ended.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.running.iter().map(|r| r.until).min()
    }

    /// When the `failed` alert's command is due to be ended, while it runs.
    pub fn last_word_due(&self) -> Option<Instant> {
        self.running.iter().find(|r| r.last_word).map(|r| r.until)
    }

    /// End the commands past their time, and what each started (found by its marker: the
    /// shell's children outlive it, re-parented); forget those that are gone.
    pub fn end_overdue(&mut self) {
        let now = Instant::now();
        self.running.retain(|r| {
            let Some(proc) = Processes::of(&[r.id.pid]).ok().and_then(|t| t.find(&r.id)) else { return false };
            if r.until > now {
                return true;
            }
            let _ = process::signal(&proc, Signal::Kill);
            for started in Processes::holding(&format!("{MARKER_ALERT}={}", r.tag)).unwrap_or_default() {
                let _ = process::signal(&started, Signal::Kill);
            }
            false
        });
    }

    /// A child was reaped: if it was an alert's, forget it.
    pub fn reaped(&mut self, pid: u32) {
        self.running.retain(|r| r.id.pid != pid);
    }

    /// The watcher exits: end what still runs.
    pub fn end_all(&mut self) {
        for r in &mut self.running {
            r.until = Instant::now();
        }
        self.end_overdue();
    }
}
