//! `ocx events`: the live event streams of one or many instances in one output, until Ctrl-C.
//! Each instance is followed on a thread of its own (`feed::follow`), reconnected with backoff when its stream
//! drops (a restart, a crash) or goes silent (`server::EVENTS_SILENCE`: a half-open connection);
//! with `--all` (or no instance named) new instances are picked up.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

use crate::cli::EventsArgs;
use crate::error::{Failure, code};
use crate::feed::{self, Item, Printer, WatcherAnswers};
use crate::home::Home;
use crate::process;
use crate::record::{self, Record};

/// How often `--all` looks for instances started since.
const RESCAN: Duration = Duration::from_secs(2);

pub fn run(home: &Home, args: EventsArgs) -> Result<()> {
    let records = record::valid(&record::list(home)?);
    let mut named: Vec<Record> = Vec::new();
    for query in &args.instances {
        let found = record::resolve(&records, query)?;
        if !named.iter().any(|r| r.id == found.id) {
            named.push(found.clone());
        }
    }
    let follow_new = named.is_empty();
    process::install_interrupt_handler();
    let (tx, rx) = mpsc::channel::<(String, Item)>();
    let mut followed: HashSet<String> = HashSet::new();
    let mut labels: HashMap<String, String> = HashMap::new();
    let mut printer = Printer::new(args.json, args.text, args.session.clone());
    let mut next_scan = Instant::now();
    let (mut answers, mut next_answers) = (WatcherAnswers::default(), Instant::now());
    let mut live = 0usize;
    for r in &named {
        follow(home, r, &tx, &mut followed, &mut labels);
        live += 1;
    }
    loop {
        if process::interrupted() {
            return Ok(());
        }
        if follow_new && Instant::now() >= next_scan {
            for r in record::valid(&record::list(home)?) {
                if !followed.contains(&r.id) {
                    follow(home, &r, &tx, &mut followed, &mut labels);
                    live += 1;
                }
            }
            next_scan = Instant::now() + RESCAN;
        }
        if Instant::now() >= next_answers {
            for id in &followed {
                for answer in answers.new_ones(home, id) {
                    let _ = tx.send((id.clone(), Item::Answered(answer)));
                }
            }
            next_answers = Instant::now() + Duration::from_secs(1);
        }
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok((id, item)) => {
                if matches!(item, Item::Gone) {
                    live -= 1;
                    // A new instance may take the name later: follow it then, afresh.
                    followed.remove(&id);
                }
                printer.print(&id, labels.get(&id).map_or(id.as_str(), String::as_str), item)?;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        }
        if !follow_new && live == 0 {
            return Err(anyhow!(Failure::new(code::FAILED, "every instance followed is gone (stopped)")));
        }
    }
}

/// Follow instance `r` (`feed::follow`), remembering that it is followed and its label.
fn follow(
    home: &Home,
    r: &Record,
    tx: &Sender<(String, Item)>,
    followed: &mut HashSet<String>,
    labels: &mut HashMap<String, String>,
) {
    followed.insert(r.id.clone());
    labels.insert(r.id.clone(), r.label().to_string());
    // Followed until `events` ends.
    feed::follow(home, &r.id, tx, Default::default());
}
