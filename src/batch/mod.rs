//! `ocx batch`'s engine: a pool of instances (given, started for the batch, or one per task in
//! a worktree of its own), each running one task at a time, tasks handed out in file order to
//! whichever is free; what each task came to, reported as it finishes. Ctrl-C and SIGTERM end
//! it: every running task is aborted on its server, the instances the batch started are stopped.
//!
//! Here the pool and its workers; `tasks` reads the tasks file, `work` runs one task on one
//! instance (sending it again when its server crashed and came back), `results` is `--results`.

mod results;
mod tasks;
mod work;

use std::cmp::Reverse;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::home::Home;
use crate::instance::launch;
use crate::instance::spawn::Plan;
use crate::instance::stop;
use crate::instance::workspace::Released;
use crate::process;
use crate::record::Record;
use crate::turn;

pub use results::{Results, is_done};
pub use tasks::{Task, parse};

/// How long the servers the batch started get between TERM and KILL when they are done.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Where the tasks run.
pub enum Pool {
    /// Instances the user started: each runs one task at a time.
    On(Vec<Record>),
    /// `count` instances started for the batch from `plan`, named `batch-ID-N`, stopped at the end.
    Started { plan: Plan, count: u32, id: String },
    /// An instance per task, in a worktree of its own (`plan` has the worktree), at most
    /// `count` at once, named `batch-ID-INDEX`; each stopped when its task ends, keeping the
    /// worktree if it has changes.
    Worktree { plan: Plan, count: u32, id: String },
}

/// How every task is run.
#[derive(Clone, Copy)]
pub struct Options {
    pub timeout: Option<Duration>,
    pub retries: Option<u32>,
    pub permissions: turn::Permissions,
}

/// What a task came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// The model failed, or the instance could not come back.
    Failed,
    /// `--timeout` passed: the prompt was aborted on the server.
    Timeout,
    /// Ctrl-C or SIGTERM: the prompt was aborted on the server.
    Aborted,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Failed => "failed",
            Status::Timeout => "timeout",
            Status::Aborted => "aborted",
        }
    }
}

/// Tokens the task's answer took, summed over its replies.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    pub reasoning: u64,
    pub cache_read: u64,
    pub cache_write: u64,
}

impl Tokens {
    pub fn total(&self) -> u64 {
        self.input + self.output + self.reasoning + self.cache_read + self.cache_write
    }
}

/// One finished task.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub index: usize,
    pub name: String,
    pub prompt: String,
    /// The instance it ran on (its name, or id), if it got one.
    pub instance: Option<String>,
    pub session: Option<String>,
    pub status: Status,
    /// What `ocx run` would have exited with.
    pub exit_code: u8,
    pub duration: Duration,
    pub tokens: Tokens,
    /// The answer's text.
    pub answer: String,
    pub error: Option<String>,
    /// How many times the prompt was sent again after its server crashed and came back.
    pub resent: u32,
    /// With `--worktree`: what became of its worktree and branch.
    pub worktree: Option<Released>,
}

impl Outcome {
    /// A task just handed to instance `on`: failed until it succeeds, nothing measured yet.
    fn begun(task: &Task, on: Option<&str>) -> Outcome {
        Outcome {
            index: task.index,
            name: task.name.clone(),
            prompt: task.prompt.text.clone(),
            instance: on.map(str::to_string),
            session: task.session.clone(),
            status: Status::Failed,
            exit_code: crate::error::code::FAILED,
            duration: Duration::ZERO,
            tokens: Tokens::default(),
            answer: String::new(),
            error: None,
            resent: 0,
            worktree: None,
        }
    }

    /// The result line of `--json` and `--results`.
    pub fn to_json(&self) -> Value {
        let t = &self.tokens;
        let mut doc = json!({
            "index": self.index,
            "name": self.name,
            "instance": self.instance,
            "session": self.session,
            "status": self.status.as_str(),
            "exit_code": self.exit_code,
            "duration_ms": self.duration.as_millis() as u64,
            "tokens": {"input": t.input, "output": t.output, "reasoning": t.reasoning,
                       "cache": {"read": t.cache_read, "write": t.cache_write}, "total": t.total()},
            "answer": self.answer,
            "error": self.error,
            "resent": self.resent,
            "prompt": self.prompt,
        });
        if let Some(w) = &self.worktree {
            doc["worktree"] = json!({
                "branch": w.branch,
                "path": w.path,
                "changed_files": w.changed_files,
                "commits": w.commits,
                "kept": w.worktree == "kept" || w.branch_result == "kept",
            });
        }
        doc
    }
}

/// What the batch tells its caller as it goes (from its workers' threads).
pub enum Progress<'a> {
    /// A task went to an instance.
    Began,
    Finished(&'a Outcome),
    /// The instance a task began on is not serving and will not be back (stopped, dead, failed):
    /// the task goes back to the queue and the instance takes no more.
    Unavailable {
        instance: &'a str,
        why: String,
    },
    /// Something the user should know that is no task's result (an instance that would not start).
    Note(String),
}

/// The batch, once it ended.
pub struct Summary {
    pub outcomes: Vec<Outcome>,
    /// Tasks never handed out (interrupted, or no instance left to run them).
    pub not_started: usize,
    /// Instances the batch started and could not stop.
    pub stop_failures: Vec<String>,
    pub took: Duration,
}

/// Run `tasks` on `pool`. `report` hears of every task as it begins and ends; returning false
/// from it (its output is gone) stops handing out tasks.
pub fn run(
    home: &Home,
    tasks: &[Task],
    pool: &Pool,
    options: Options,
    report: &(dyn Fn(Progress) -> bool + Sync),
) -> Summary {
    let began = Instant::now();
    let queue =
        Queue { tasks, next: AtomicUsize::new(0), returned: Mutex::new(Vec::new()), halted: AtomicBool::new(false) };
    let outcomes = Mutex::new(Vec::new());
    let stop_failures = Mutex::new(Vec::new());
    let finished = |outcome: Outcome| {
        if !report(Progress::Finished(&outcome)) {
            queue.halt();
        }
        outcomes.lock().unwrap_or_else(|e| e.into_inner()).push(outcome);
    };
    let slots = match pool {
        Pool::On(records) => records.len(),
        Pool::Started { count, .. } | Pool::Worktree { count, .. } => *count as usize,
    };
    std::thread::scope(|scope| {
        for slot in 0..slots.min(tasks.len()) {
            let (queue, finished, stop_failures) = (&queue, &finished, &stop_failures);
            scope.spawn(move || match pool {
                Pool::On(records) => serve(home, &records[slot], queue, options, report, finished),
                Pool::Started { plan, id, .. } => {
                    let name = format!("batch-{id}-{}", slot + 1);
                    let record = match launch::start(home, plan, Some(name.clone()), None) {
                        Ok(started) => started.record,
                        Err(err) => {
                            report(Progress::Note(format!("instance {name} did not start: {err:#}")));
                            return;
                        }
                    };
                    serve(home, &record, queue, options, report, finished);
                    let outcome = stop::stop(home, &record, STOP_GRACE, false);
                    if outcome.result == "failed" {
                        let why = outcome.error.unwrap_or_default();
                        stop_failures.lock().unwrap_or_else(|e| e.into_inner()).push(format!("{name}: {why}"));
                    }
                }
                Pool::Worktree { plan, id, .. } => {
                    while let Some(task) = queue.take() {
                        let (outcome, stop_failure) = work::in_worktree(home, plan, id, task, options, report);
                        if let Some(failure) = stop_failure {
                            stop_failures.lock().unwrap_or_else(|e| e.into_inner()).push(failure);
                        }
                        finished(outcome);
                    }
                }
            });
        }
    });
    let mut outcomes = outcomes.into_inner().unwrap_or_else(|e| e.into_inner());
    outcomes.sort_by_key(|o| o.index);
    Summary {
        not_started: tasks.len() - outcomes.len(),
        outcomes,
        stop_failures: stop_failures.into_inner().unwrap_or_else(|e| e.into_inner()),
        took: began.elapsed(),
    }
}

/// Run tasks on `record` one after the other while there are any.
fn serve(
    home: &Home,
    record: &Record,
    queue: &Queue,
    options: Options,
    report: &(dyn Fn(Progress) -> bool + Sync),
    finished: &(dyn Fn(Outcome) + Sync),
) {
    while let Some(task) = queue.take() {
        report(Progress::Began);
        match work::run(home, record, task, options) {
            work::Ran::Done(outcome) => finished(*outcome),
            work::Ran::Unavailable(why) => {
                queue.give_back(task);
                report(Progress::Unavailable { instance: record.label(), why: format!("{why:#}") });
                return;
            }
        }
    }
}

/// The tasks, handed out in file order.
struct Queue<'a> {
    tasks: &'a [Task],
    next: AtomicUsize,
    /// Tasks given back by an instance that could not run them, the first in file order last.
    returned: Mutex<Vec<&'a Task>>,
    halted: AtomicBool,
}

impl<'a> Queue<'a> {
    /// The next task, unless Ctrl-C came or the batch was halted: one given back first (it
    /// comes before every task not handed out yet).
    fn take(&self) -> Option<&'a Task> {
        if process::interrupted() || self.halted.load(Ordering::SeqCst) {
            return None;
        }
        if let Some(task) = self.returned.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Some(task);
        }
        self.tasks.get(self.next.fetch_add(1, Ordering::SeqCst))
    }

    fn give_back(&self, task: &'a Task) {
        let mut returned = self.returned.lock().unwrap_or_else(|e| e.into_inner());
        returned.push(task);
        returned.sort_by_key(|t| Reverse(t.index));
    }

    fn halt(&self) {
        self.halted.store(true, Ordering::SeqCst);
    }
}
