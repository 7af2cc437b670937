//! One task on one instance: wait until it serves, open (or continue) the task's session, send
//! the prompt and follow the turn silently, then read the answer and its tokens from what the
//! server stored. When the server's process went away mid-task and its watcher brings it back,
//! the prompt is sent again, in the same session (opencode does not resume a turn its server
//! died in; the session keeps what the agent did before the crash, so the agent sees it).

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use serde_json::Value;

use super::{Options, Outcome, Progress, STOP_GRACE, Status, Task, Tokens};
use crate::error::{self, Failure, code};
use crate::home::Home;
use crate::instance::serving::{self, Watched};
use crate::instance::spawn::Plan;
use crate::instance::{self, launch, stop};
use crate::process;
use crate::record::Record;
use crate::turn::{self, Turn};

/// Every request but the event stream gets this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times a task is sent again after its server crashed and came back.
const RESENDS: u32 = 3;

/// What became of a task on an instance.
pub enum Ran {
    Done(Box<Outcome>),
    /// The instance was not serving when the task came and will not be back (stopped, dead,
    /// failed): nothing was sent; the task is for another instance.
    Unavailable(anyhow::Error),
}

/// Run `task` on the instance `record`.
pub fn run(home: &Home, record: &Record, task: &Task, options: Options) -> Ran {
    let began = Instant::now();
    let deadline = options.timeout.map(|t| began + t);
    let mut outcome = Outcome::begun(task, Some(record.label()));
    let result = loop {
        match attempt(home, record, task, options, deadline, &mut outcome) {
            Ok(()) => break Ok(()),
            Err(Unavailable(err)) if outcome.resent == 0 => return Ran::Unavailable(err),
            Err(Lost(_)) if outcome.resent < RESENDS && !process::interrupted() => outcome.resent += 1,
            // Lost and interrupted: the prompt is not sent again, the task is aborted.
            Err(Lost(_)) if process::interrupted() => {
                break Err(error::interrupted("interrupted while its server was coming back"));
            }
            Err(Lost(err) | Final(err) | Unavailable(err)) => break Err(err),
        }
    };
    if let Err(err) = result {
        let code = error::code_of(&err);
        outcome.exit_code = code;
        outcome.status = status_of(code, options.timeout.is_some());
        outcome.error = Some(format!("{err:#}"));
    }
    outcome.duration = began.elapsed();
    Ran::Done(Box::new(outcome))
}

/// How an attempt failed: `Lost`, its server's process went away (send it again once it is
/// back); `Unavailable`, the instance was not serving and will not be (nothing sent); `Final`,
/// for good.
enum Failed {
    Lost(anyhow::Error),
    Unavailable(anyhow::Error),
    Final(anyhow::Error),
}
use Failed::{Final, Lost, Unavailable};

/// Send the task once and follow it to its end; on success the answer is in `outcome`.
fn attempt(
    home: &Home,
    record: &Record,
    task: &Task,
    options: Options,
    deadline: Option<Instant>,
    outcome: &mut Outcome,
) -> Result<(), Failed> {
    // An instance that cannot come back: not this task's fault, unless the deadline or Ctrl-C
    // came while waiting for it.
    let now = serving::wait_serving_saying(home, record, deadline, false).map_err(|err| {
        if process::interrupted() || error::code_of(&err) == code::TIMED_OUT { Final(err) } else { Unavailable(err) }
    })?;
    if process::interrupted() {
        return Err(Final(error::interrupted("interrupted before the prompt was sent")));
    }
    let directory = task.dir.as_ref().map(|d| d.to_string_lossy().into_owned());
    let client = instance::client(&now, REQUEST_TIMEOUT).in_directory(directory);
    // Anything that fails from here on may be the server dying under it.
    let lost_or_final = |err: anyhow::Error| {
        if server_gone(&now) { Lost(err) } else { Final(err) }
    };
    let session = match &outcome.session {
        Some(id) => {
            if client.session(id).map_err(lost_or_final)?.is_none() {
                return Err(Final(anyhow!(Failure::new(
                    code::FAILED,
                    format!("instance {} has no session {id}", now.label())
                ))));
            }
            id.clone()
        }
        None => client.create_session(&turn::default_title(&task.prompt.text)).map_err(lost_or_final)?,
    };
    outcome.session = Some(session.clone());
    let body = task.prompt.body().map_err(Final)?;
    let turn_options = turn::Options {
        format: turn::Format::Silent,
        retries: options.retries,
        deadline,
        permissions: options.permissions,
    };
    let server = Watched { home, record: &now };
    let mut turn = Turn::new(&client, session.clone(), turn_options, &server);
    let result = turn.prompt(&body);
    let lost = turn.server_lost();
    // Dropped before anything else: a turn left unfinished is aborted on the server.
    drop(turn);
    match result {
        Ok(()) => {}
        Err(err) if lost || (error::code_of(&err) == code::FAILED && server_gone(&now)) => return Err(Lost(err)),
        Err(err) => return Err(Final(err)),
    }
    // The turn is over: never sent again from here. Stored messages outlive a crash, so a server
    // that died just now is waited for and asked again.
    let messages = match client.last_turn(&session) {
        Ok(messages) => messages,
        Err(_) => serving::wait_serving_saying(home, record, deadline, false)
            .and_then(|again| instance::client(&again, REQUEST_TIMEOUT).last_turn(&session))
            .map_err(Final)?,
    };
    (outcome.answer, outcome.tokens) = answer_of(&messages);
    outcome.status = Status::Ok;
    outcome.exit_code = 0;
    Ok(())
}

/// Whether the server `record` names is no longer running (vouched by PID, start time, marker).
fn server_gone(record: &Record) -> bool {
    instance::server(record).is_ok_and(|proc| proc.is_none())
}

/// The text of the latest prompt's replies (their text parts, a newline between parts) and the
/// tokens they took, from a session's stored last turn.
fn answer_of(messages: &[Value]) -> (String, Tokens) {
    let prompt = messages.iter().rev().find(|m| m["info"]["role"] == "user").and_then(|m| m["info"]["id"].as_str());
    let mut texts: Vec<&str> = Vec::new();
    let mut tokens = Tokens::default();
    for message in messages {
        let info = &message["info"];
        if info["role"] != "assistant" || info["parentID"].as_str() != prompt {
            continue;
        }
        let t = &info["tokens"];
        let n = |v: &Value| v.as_u64().unwrap_or(0);
        tokens.input += n(&t["input"]);
        tokens.output += n(&t["output"]);
        tokens.reasoning += n(&t["reasoning"]);
        tokens.cache_read += n(&t["cache"]["read"]);
        tokens.cache_write += n(&t["cache"]["write"]);
        for part in message["parts"].as_array().into_iter().flatten() {
            if part["type"] == "text"
                && part["synthetic"] != true
                && let Some(text) = part["text"].as_str().filter(|t| !t.is_empty())
            {
                texts.push(text);
            }
        }
    }
    (texts.join("\n"), tokens)
}

/// Run `task` on an instance of its own, in a worktree and branch of its own (`batch-ID-INDEX`),
/// stopped once the task ends; the worktree is kept if it has changes.
pub fn in_worktree(
    home: &Home,
    plan: &Plan,
    id: &str,
    task: &Task,
    options: Options,
    report: &(dyn Fn(Progress) -> bool + Sync),
) -> (Outcome, Option<String>) {
    let name = format!("batch-{id}-{}", task.index);
    let began = Instant::now();
    let record = match launch::start(home, plan, Some(name.clone()), None) {
        Ok(started) => started.record,
        Err(err) => {
            let mut outcome = not_run(task, None, err.context(format!("instance {name} did not start")));
            outcome.duration = began.elapsed();
            return (outcome, None);
        }
    };
    report(Progress::Began);
    // `--timeout` is the task's, counted from when its instance serves.
    let mut outcome = match run(home, &record, task, options) {
        Ran::Done(outcome) => *outcome,
        Ran::Unavailable(err) => not_run(task, Some(&name), err),
    };
    outcome.duration = began.elapsed();
    let stopped = stop::stop(home, &record, STOP_GRACE, false);
    let stop_failure = (stopped.result == "failed").then(|| format!("{name}: {}", stopped.error.unwrap_or_default()));
    outcome.worktree = stopped.worktree;
    (outcome, stop_failure)
}

/// The outcome of a task that never got a serving instance (`on`: the one it was meant for).
fn not_run(task: &Task, on: Option<&str>, err: anyhow::Error) -> Outcome {
    let code = error::code_of(&err);
    Outcome {
        session: None,
        status: status_of(code, false),
        exit_code: code,
        error: Some(format!("{err:#}")),
        ..Outcome::begun(task, on)
    }
}

/// What a task that failed with exit `code` came to: aborted by Ctrl-C or SIGTERM, out of its
/// `--timeout` (when it has one: `timed`), or failed.
fn status_of(code: u8, timed: bool) -> Status {
    if code == process::interrupt_code() && process::interrupted() {
        Status::Aborted
    } else if code == code::TIMED_OUT && timed {
        Status::Timeout
    } else {
        Status::Failed
    }
}
