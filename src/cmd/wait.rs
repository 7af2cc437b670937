//! `ocx wait`: find the instance that has a session, and follow its turn (`turn`) until the
//! session is idle, printing the answer as `ocx run` would have.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

use crate::cli::WaitArgs;
use crate::error::{Failure, code};
use crate::home::Home;
use crate::record::{self, Record};
use crate::turn::{self, Turn};
use crate::{instance, output, parallel, process};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Asking each instance whether it has the session.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a stored prompt may take to be taken up by its server.
const PICKUP: Duration = Duration::from_secs(30);

pub fn run(home: &Home, args: WaitArgs) -> Result<()> {
    let permissions = super::permission_policy(args.permission)?;
    let records = record::valid(&record::list(home)?);
    let record = match &args.instance {
        Some(query) => record::resolve(&records, query)?.clone(),
        None => owner(&records, &args.session)?,
    };
    // One deadline for waiting for the server and for the answer: `--timeout` is all of it.
    let deadline = args.timeout.map(|t| Instant::now() + t);
    let record = instance::serving::wait_serving(home, &record, deadline)?;
    let client = instance::client(&record, REQUEST_TIMEOUT);
    if client.session(&args.session)?.is_none() {
        return Err(anyhow!(Failure::new(
            code::NOT_FOUND,
            format!("instance {} has no session {}", record.label(), args.session)
        )));
    }
    process::install_interrupt_handler();
    let options = turn::Options { format: super::turn_format(args.format), retries: None, deadline, permissions };
    let server = instance::serving::Watched { home, record: &record };
    let mut turn = Turn::new(&client, args.session.clone(), options, &server);
    let result = turn.follow(true).and_then(|()| Ok(turn.finish_output()?));
    // As `run`: leaving early (a closed pipe, an error) aborts what the session is doing.
    drop(turn);
    result.inspect(|()| output::note(format_args!("session: {}", args.session)))
}

/// The running instance that works on `session`. Servers of one user share opencode's
/// database, so every one of them knows every session; only the one that took the prompt has
/// it busy. A finished turn any of them can show. A prompt whose reply is neither busy
/// anywhere nor finished is still being picked up: look again, briefly.
fn owner(records: &[Record], session: &str) -> Result<Record> {
    let deadline = Instant::now() + PICKUP;
    loop {
        let found = parallel::map(records, 16, |r| {
            instance::server(r).ok().flatten()?;
            let client = instance::client(r, LOOKUP_TIMEOUT);
            client.session(session).ok().flatten()?;
            let busy = client.busy_sessions().is_ok_and(|b| b.contains_key(session));
            Some((busy, r.clone()))
        });
        let found: Vec<(bool, Record)> = found.into_iter().flatten().collect();
        if let Some((_, r)) = found.iter().find(|(busy, _)| *busy) {
            return Ok(r.clone());
        }
        let Some((_, first)) = found.first() else { break };
        let finished =
            instance::client(first, LOOKUP_TIMEOUT).last_turn(session).is_ok_and(|m| turn::last_reply_finished(&m));
        if finished || Instant::now() >= deadline {
            return Ok(first.clone());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(anyhow!(
        Failure::new(code::NOT_FOUND, format!("no running instance has session {session}"))
            .hint("name the instance with --instance; `ocx sessions INSTANCE` lists its sessions")
    ))
}
