//! `ocx batch`: read and check the tasks, resolve or plan the pool, run it (`batch`), and show
//! it: a progress line on a terminal's stderr, one JSON line per finished task or a table at the
//! end, `--results` appended as tasks finish.

use std::io::{IsTerminal, Read};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::batch::{self, Outcome, Pool, Progress, Results, Status};
use crate::cli::{BatchArgs, PermissionPolicy, StartLine};
use crate::error::{self, Failure, code};
use crate::home::Home;
use crate::record::{self, Record};
use crate::{output, process, token};

/// How much of an answer the table shows.
const ANSWER_WIDTH: usize = 40;

pub fn run(home: &Home, args: BatchArgs) -> Result<()> {
    if args.permission == PermissionPolicy::Ask {
        return Err(anyhow!(
            Failure::new(code::USAGE, "--permission ask is refused: many agents at once cannot share one terminal")
                .hint("use --permission reject or allow; `ocx run --permission ask` asks for one prompt")
        ));
    }
    if args.on.is_empty() && args.parallel.is_none() {
        return Err(anyhow!(
            Failure::new(code::USAGE, "say where the tasks run")
                .hint("--on NAME,… runs them on instances you started; --parallel N starts N for the batch")
        ));
    }
    let (text, origin) = read_tasks(&args)?;
    let tasks = batch::parse(&text, &origin, args.worktree)?;
    let (results, done) = match &args.results {
        Some(path) => {
            let (results, done) = Results::open(path)?;
            (Some(results), done)
        }
        None => (None, Default::default()),
    };
    let (skipped, tasks): (Vec<_>, Vec<_>) = tasks.into_iter().partition(|t| batch::is_done(&done, t));
    if !skipped.is_empty() {
        output::note(format_args!(
            "skipping {} task(s) that succeeded in an earlier run ({})",
            skipped.len(),
            args.results.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
        ));
    }
    if tasks.is_empty() {
        output::note(if skipped.is_empty() { "no tasks in the file" } else { "nothing left to do" });
        return Ok(());
    }
    let pool = pool(home, &args)?;
    let permissions = super::permission_policy(args.permission)?;
    let options = batch::Options { timeout: args.timeout, retries: args.retries, permissions };

    process::install_interrupt_handler();
    let shown = Shown::new(tasks.len(), args.json, results);
    let summary = batch::run(home, &tasks, &pool, options, &|progress| shown.tell(progress));
    let Shown { bar, state, .. } = shown;
    bar.finish_and_clear();
    let state = state.into_inner().unwrap_or_else(|e| e.into_inner());

    // A closed stdout (`| head`) must not hide the exit code below.
    if !args.json {
        let _ = print_table(&summary.outcomes, matches!(pool, Pool::Worktree { .. }));
    }
    for o in &summary.outcomes {
        if let Some(summary) = o.worktree.as_ref().and_then(|w| w.summary()) {
            output::note(format_args!("{}: {summary}", o.name));
        }
    }
    for failure in &summary.stop_failures {
        output::note(format_args!("error: could not stop instance {failure}"));
    }
    let failed = summary.outcomes.iter().filter(|o| o.status != Status::Ok).count();
    let tally = format!(
        "{} of {} task(s) ok, {failed} failed{}, in {}",
        summary.outcomes.len() - failed,
        tasks.len(),
        match summary.not_started {
            0 => String::new(),
            n => format!(", {n} not started"),
        },
        output::elapsed(summary.took)
    );
    if let Some(err) = state.write_error {
        return Err(err.context(tally));
    }
    if process::interrupted() {
        return Err(error::interrupted(format!("interrupted; aborted the running tasks on their servers ({tally})")));
    }
    if failed > 0 || summary.not_started > 0 || !summary.stop_failures.is_empty() {
        return Err(anyhow!(Failure::new(code::FAILED, tally)));
    }
    if std::io::stderr().is_terminal() {
        output::note(tally);
    }
    Ok(())
}

/// The tasks file's text, and how errors name it.
fn read_tasks(args: &BatchArgs) -> Result<(String, String)> {
    let mut text = String::new();
    if args.file.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text).context("cannot read the tasks from stdin")?;
        return Ok((text, "stdin".into()));
    }
    let file = &args.file;
    std::fs::File::open(file).and_then(|mut f| f.read_to_string(&mut text)).map_err(|e| {
        anyhow!(Failure::new(code::USAGE, format!("cannot read the tasks file {}: {e}", file.display())))
    })?;
    Ok((text, file.display().to_string()))
}

/// The pool the arguments ask for: every `--on` instance resolved (each once) before anything
/// is sent; or the plan of the instances to start, checked as `ocx start` checks it.
fn pool(home: &Home, args: &BatchArgs) -> Result<Pool> {
    let Some(count) = args.parallel else {
        let records = record::valid(&record::list(home)?);
        let mut on: Vec<Record> = Vec::new();
        for query in &args.on {
            let found = record::resolve(&records, query)?;
            if !on.iter().any(|r| r.id == found.id) {
                on.push(found.clone());
            }
        }
        return Ok(Pool::On(on));
    };
    let mut line = vec!["start".to_string()];
    if args.worktree {
        line.push("--worktree".into());
    }
    for (flag, value) in [("--base", &args.base), ("--setup", &args.setup)] {
        if let Some(value) = value {
            line.extend([flag.to_string(), value.clone()]);
        }
    }
    let start = StartLine::try_parse_from(&line).map_err(|e| anyhow!(Failure::new(code::USAGE, e.to_string())))?;
    let plan = super::start_plan(home, &start.args)?;
    let id = token::random(4);
    Ok(if args.worktree { Pool::Worktree { plan, count, id } } else { Pool::Started { plan, count, id } })
}

/// What the user sees while the batch runs.
struct Shown {
    bar: ProgressBar,
    json: bool,
    state: Mutex<State>,
}

struct State {
    total: usize,
    running: usize,
    done: usize,
    failed: usize,
    results: Option<Results>,
    /// Writing `--results` failed: no more tasks are handed out.
    write_error: Option<anyhow::Error>,
}

impl Shown {
    fn new(total: usize, json: bool, results: Option<Results>) -> Shown {
        // Hidden unless stderr is a terminal: nothing decorative in a log.
        let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{bar:24} {pos}/{len} done · {msg} · {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(Duration::from_millis(250));
        let state = State { total, running: 0, done: 0, failed: 0, results, write_error: None };
        let shown = Shown { bar, json, state: Mutex::new(state) };
        shown.bar.set_message(shown.message(&shown.state.lock().unwrap_or_else(|e| e.into_inner())));
        shown
    }

    /// A line on stderr, above the progress line: also when stderr is no terminal (then there
    /// is no progress line).
    fn note(&self, line: &str) {
        self.bar.suspend(|| output::note(line));
    }

    fn message(&self, s: &State) -> String {
        format!("{} running · {} failed · {} queued", s.running, s.failed, s.total - s.done - s.running)
    }

    /// Show one step; false once nothing more should be handed out (stdout or --results is gone).
    fn tell(&self, progress: Progress) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut go_on = true;
        match progress {
            Progress::Began => state.running += 1,
            Progress::Finished(outcome) => {
                // A worktree task that never got its instance never began.
                if outcome.instance.is_some() || outcome.session.is_some() {
                    state.running = state.running.saturating_sub(1);
                }
                state.done += 1;
                if outcome.status != Status::Ok {
                    state.failed += 1;
                }
                self.bar.println(finished_line(outcome));
                self.bar.inc(1);
                let line = outcome.to_json();
                // Printed with the progress line out of the way, so neither breaks into the other.
                if self.json && self.bar.suspend(|| output::line(&line)).is_err() {
                    go_on = false;
                }
                if let Some(results) = &mut state.results
                    && let Err(err) = results.append(&line)
                {
                    state.write_error.get_or_insert(err);
                    go_on = false;
                }
            }
            Progress::Unavailable { instance, why } => {
                state.running = state.running.saturating_sub(1);
                self.note(&format!("warning: instance {instance} takes no more tasks: {why}"));
            }
            Progress::Note(note) => self.note(&format!("warning: {note}")),
        }
        self.bar.set_message(self.message(&state));
        go_on
    }
}

/// A finished task, one line above the progress line.
fn finished_line(o: &Outcome) -> String {
    let on = o.instance.as_deref().map(|i| format!(" on {i}")).unwrap_or_default();
    let why = o.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
    format!("{:<7} {}{on} in {}{why}", o.status.as_str(), o.name, output::elapsed(o.duration))
}

/// The summary table: one row per finished task, in file order.
fn print_table(outcomes: &[Outcome], worktrees: bool) -> Result<()> {
    if outcomes.is_empty() {
        return Ok(());
    }
    let mut header = vec!["#", "NAME", "STATUS", "INSTANCE", "TOOK", "TOKENS", "SESSION", "ANSWER"];
    if worktrees {
        header.insert(7, "BRANCH");
    }
    let mut table = output::table(header);
    for o in outcomes {
        let answer = match &o.error {
            Some(error) => error.clone(),
            None => o.answer.lines().find(|l| !l.trim().is_empty()).unwrap_or("").to_string(),
        };
        let answer = output::cut(&answer, ANSWER_WIDTH);
        let mut row = vec![
            o.index.to_string(),
            o.name.clone(),
            o.status.as_str().to_string(),
            o.instance.clone().unwrap_or_else(|| "-".into()),
            output::elapsed(o.duration),
            o.tokens.total().to_string(),
            o.session.clone().unwrap_or_else(|| "-".into()),
            answer,
        ];
        if worktrees {
            let branch = o.worktree.as_ref().map_or("-".to_string(), |w| match (w.worktree, w.branch_result) {
                ("kept", _) => format!("{} ({} changed)", w.branch, w.changed_files),
                (_, "kept") => format!("{} ({} commits)", w.branch, w.commits),
                _ => "-".into(),
            });
            row.insert(7, branch);
        }
        table.add_row(row);
    }
    output::print_table(&mut table)?;
    Ok(())
}
