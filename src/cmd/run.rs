//! `ocx run`: send a prompt over HTTP and stream the answer (`turn`), or with `--detach` only
//! send it and print the session id.

use std::io::{IsTerminal, Read};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use serde_json::{Value, json};

use crate::cli::{Format, RunArgs};
use crate::error::{Failure, code};
use crate::home::Home;
use crate::instance;
use crate::record::{self, Record};
use crate::remote::{self, Host};
use crate::server::Client;
use crate::turn::{self, Turn};
use crate::{output, process};

/// Every request but the event stream gets this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// With `host`, the instance is one of that host's, reached through a forwarded port.
pub fn run(home: &Home, args: RunArgs, host: Option<&Host>) -> Result<()> {
    if let Some(host) = host
        && !args.files.is_empty()
    {
        return Err(anyhow!(
            Failure::new(code::USAGE, format!("--file is read by the server, which runs on host {}", host.label()))
                .hint("copy the file to that host and mention its path in the prompt")
        ));
    }
    let records = remote::records(home, host)?;
    let words: Vec<String> = args.instance.iter().chain(&args.prompt).cloned().collect();
    let (record, words) = split_instance(&records, &words)?;
    let prompt = read_prompt(&words)?;
    let mut record = record.clone();
    let _forward = remote::reach(home, host, &mut record, false)?;
    let directory = match &args.dir {
        // A directory on the host: its server resolves it.
        Some(dir) if host.is_some() => Some(dir.to_string_lossy().into_owned()),
        Some(dir) => Some(
            dunce::canonicalize(dir)
                .with_context(|| format!("the directory {} does not exist", dir.display()))?
                .to_string_lossy()
                .into_owned(),
        ),
        None => None,
    };
    let permissions = super::permission_policy(args.permission)?;
    // An instance its watcher is bringing back (2–5 s after a crash) is waited for, not failed.
    // One deadline for waiting for the server and for the answer: `--timeout` is all of it.
    let deadline = args.timeout.map(|t| Instant::now() + t);
    let record = instance::serving::wait_serving(home, &record, deadline)?;
    let client = instance::client(&record, REQUEST_TIMEOUT).in_directory(directory);
    ensure_running(&record, &client)?;
    let body = turn::Prompt {
        text: prompt.clone(),
        files: args.files.clone(),
        model: args.model.clone(),
        agent: args.agent.clone(),
    }
    .body()?;
    let session = choose_session(&client, &record, &args, &prompt)?;
    if args.detach {
        // The session's last message so far: the prompt's turn is what comes after it. A new
        // session has none; of an old one only the last message is read.
        let before = if args.session.is_some() || args.continue_ {
            client.message_page(&session, 1, None)?.0.pop()
        } else {
            None
        };
        let before = before.as_ref().and_then(|m| m["info"]["id"].as_str());
        client.prompt_async(&session, &body)?;
        wait_taken(&client, &session, before)?;
        match args.format {
            Format::Text => output::line(&session)?,
            Format::Json => output::line(json!({"sessionID": session, "instance": record.id}))?,
        }
        return Ok(());
    }

    process::install_interrupt_handler();
    let options =
        turn::Options { format: super::turn_format(args.format), retries: args.retries, deadline, permissions };
    let server = instance::serving::Watched { home, record: &record };
    let mut turn = Turn::new(&client, session, options, &server);
    let result = turn.prompt(&body).and_then(|()| Ok(turn.finish_output()?));
    output::note(format_args!("session: {}", turn.session));
    // Dropping the turn aborts the prompt on the server if it did not finish (a closed pipe,
    // an error, a panic): no agent goes on working after ocx is gone.
    drop(turn);
    result
}

/// Returns once this server has the session busy, or its reply to the prompt sent after message
/// `before` is finished already: then `ocx wait` started right after finds the instance that
/// works on it (every instance of a user knows every session; only that one has it busy).
/// The status is cheap and polled; the turn's messages are read only while the status says
/// idle (the prompt not taken yet, or answered already), less often the longer that lasts.
fn wait_taken(client: &Client, session: &str, before: Option<&str>) -> Result<()> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut next_read = Instant::now();
    let mut gap = Duration::from_millis(20);
    loop {
        if client.busy_sessions()?.contains_key(session) {
            return Ok(());
        }
        if Instant::now() >= next_read {
            let turn = client.messages_since(session, before)?;
            if turn.iter().any(|m| m["info"]["role"] == "user") && turn::last_reply_finished(&turn) {
                return Ok(());
            }
            // A server setting up its project takes a second or more to pick a prompt up.
            next_read = Instant::now() + gap;
            gap = (gap * 2).min(Duration::from_millis(500));
        }
        if Instant::now() >= deadline {
            return Err(anyhow!("the server did not take the prompt within {}s", REQUEST_TIMEOUT.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The instance and the prompt's words: the first word is the instance if it names one.
fn split_instance<'a>(records: &'a [Record], words: &[String]) -> Result<(&'a Record, Vec<String>)> {
    if let Some(first) = words.first()
        && names_instance(records, first)
    {
        return Ok((record::resolve(records, first)?, words[1..].to_vec()));
    }
    Ok((instance::resolve::resolve_default(records, None)?, words.to_vec()))
}

/// An exact id or name, or a unique id prefix long enough not to be an ordinary word.
fn names_instance(records: &[Record], word: &str) -> bool {
    records.iter().any(|r| r.id == word || r.name.as_deref() == Some(word))
        || (word.len() >= 3 && records.iter().filter(|r| r.id.starts_with(word)).count() == 1)
}

fn read_prompt(words: &[String]) -> Result<String> {
    let from_stdin = words == ["-"] || (words.is_empty() && !std::io::stdin().is_terminal());
    let prompt = if from_stdin {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("cannot read the prompt from stdin")?;
        text
    } else {
        words.join(" ")
    };
    if prompt.trim().is_empty() {
        return Err(anyhow!(
            Failure::new(code::USAGE, "no prompt").hint("give it as arguments, or `-` to read it from stdin")
        ));
    }
    Ok(prompt)
}

fn ensure_running(record: &Record, client: &Client) -> Result<()> {
    let label = record.label();
    if record.remote.is_none() {
        instance::require_server(record)?;
    }
    match client.health() {
        Ok(health) if health.healthy => Ok(()),
        Ok(_) => Err(anyhow!(Failure::new(code::FAILED, format!("instance {label} reports itself unhealthy")))),
        Err(err) => Err(anyhow!(
            Failure::new(code::FAILED, format!("instance {label} is not healthy: {err:#}"))
                .hint(format!("see its log: ocx logs {label}"))
        )),
    }
}

fn choose_session(client: &Client, record: &Record, args: &RunArgs, prompt: &str) -> Result<String> {
    let label = record.label();
    if let Some(id) = &args.session {
        return match client.session(id)? {
            Some(_) => Ok(id.clone()),
            None => Err(anyhow!(
                Failure::new(code::FAILED, format!("instance {label} has no session {id}"))
                    .hint(format!("`ocx run {label} --continue …` continues its latest session"))
            )),
        };
    }
    if args.continue_ {
        let latest = client
            .sessions()?
            .into_iter()
            .filter(|s| s.get("parentID").is_none_or(Value::is_null))
            .max_by_key(|s| s["time"]["updated"].as_u64().unwrap_or(0));
        return match latest.and_then(|s| s["id"].as_str().map(str::to_string)) {
            Some(id) => Ok(id),
            None => Err(anyhow!(
                Failure::new(code::FAILED, format!("instance {label} has no session to continue"))
                    .hint("leave out --continue to start a new one")
            )),
        };
    }
    let title = args.title.clone().unwrap_or_else(|| turn::default_title(prompt));
    client.create_session(&title)
}
