//! The selected instance's detail, followed off the draw path: its live events (as `ocx
//! events` prints them, through `feed`) or its log (as `ocx logs -f`), and what it waits for
//! (permissions and questions). Each follower ends when the selection or the view changes.

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use crate::feed::{self, Item, Printer};
use crate::home::Home;
use crate::instance;
use crate::instance::log::{self, Follower, Show};
use crate::record::Record;

/// Lines of the log shown when the view opens.
const LOG_TAIL: usize = 200;
/// How often the log and the pending requests are looked at.
const LOG_POLL: Duration = Duration::from_millis(200);
const PENDING_POLL: Duration = Duration::from_secs(1);

/// What the detail shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Events,
    Log,
}

/// A permission or question a session waits on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub id: String,
    /// `permission bash (rm x)`, `question "Pick one?"`.
    pub what: String,
}

/// What a follower sends.
pub enum Update {
    Lines(Vec<String>),
    Pending(Vec<Pending>),
}

/// The followers of one instance in one view; they end when this is dropped.
pub struct Detail {
    quit: Arc<AtomicBool>,
    rx: Receiver<Update>,
    events: Option<Events>,
}

/// The events view's stream, and the printer that makes lines of it.
struct Events {
    rx: Receiver<(String, Item)>,
    printer: Printer,
    label: String,
}

impl Detail {
    /// Follow `record` in `view`.
    pub fn start(home: &Home, record: &Record, view: View) -> Detail {
        let quit = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let events = match view {
            View::Events => {
                let (etx, erx) = mpsc::channel();
                feed::follow(home, &record.id, &etx, quit.clone());
                Some(Events { rx: erx, printer: Printer::new(false, false, None), label: record.label().to_string() })
            }
            View::Log => {
                follow_log(record, tx.clone(), quit.clone());
                None
            }
        };
        watch_pending(record, tx, quit.clone());
        Detail { quit, rx, events }
    }

    /// What came since the last call.
    pub fn drain(&mut self) -> Vec<Update> {
        let mut updates: Vec<Update> = self.rx.try_iter().collect();
        if let Some(Events { rx, printer, label }) = &mut self.events {
            let lines: Vec<String> = rx.try_iter().flat_map(|(id, item)| printer.lines(&id, label, item)).collect();
            if !lines.is_empty() {
                updates.push(Update::Lines(lines));
            }
        }
        updates
    }
}

impl Drop for Detail {
    fn drop(&mut self) {
        self.quit.store(true, Ordering::SeqCst);
    }
}

/// The log's last lines, then what is written to it, across rotations and restarts.
fn follow_log(record: &Record, tx: Sender<Update>, quit: Arc<AtomicBool>) {
    let path = record.log.clone();
    std::thread::spawn(move || {
        let show = Show { timestamps: false, since: None };
        let send = |bytes: &[u8]| {
            let (mut shown, mut after) = (Vec::new(), false);
            show.render(bytes, &mut shown, &mut after);
            let lines: Vec<String> = String::from_utf8_lossy(&shown).lines().map(str::to_string).collect();
            lines.is_empty() || tx.send(Update::Lines(lines)).is_ok()
        };
        let mut current = match File::open(&path) {
            Ok(file) => file,
            Err(err) => {
                let _ = tx.send(Update::Lines(vec![format!("cannot open {}: {err}", path.display())]));
                return;
            }
        };
        let Ok((tail, offset)) = log::tail(&mut current, &log::files(&path), LOG_TAIL) else { return };
        if !send(&tail) {
            return;
        }
        let mut follower = Follower::new(&path, current, offset);
        let mut buf = Vec::new();
        while !quit.load(Ordering::SeqCst) {
            buf.clear();
            if follower.poll(&mut buf).is_err() || !send(&buf) {
                return;
            }
            if buf.is_empty() {
                std::thread::sleep(LOG_POLL);
            }
        }
    });
}

/// The permissions and questions the server waits on, asked every second while it serves.
fn watch_pending(record: &Record, tx: Sender<Update>, quit: Arc<AtomicBool>) {
    let record = record.clone();
    std::thread::spawn(move || {
        let client = instance::client(&record, Duration::from_secs(2));
        while !quit.load(Ordering::SeqCst) {
            let mut pending = Vec::new();
            if instance::server(&record).ok().flatten().is_some() {
                for p in client.permissions().unwrap_or_default() {
                    let patterns: Vec<&str> =
                        p["patterns"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
                    let what =
                        format!("permission {} ({})", p["permission"].as_str().unwrap_or("?"), patterns.join(", "));
                    pending.push(Pending { id: p["id"].as_str().unwrap_or_default().to_string(), what });
                }
                for q in client.questions().unwrap_or_default() {
                    let asked: Vec<&str> = q["questions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|q| q["question"].as_str())
                        .collect();
                    let what = format!("question \"{}\"", asked.join(" / "));
                    pending.push(Pending { id: q["id"].as_str().unwrap_or_default().to_string(), what });
                }
            }
            if tx.send(Update::Pending(pending)).is_err() {
                return;
            }
            std::thread::sleep(PENDING_POLL);
        }
    });
}
