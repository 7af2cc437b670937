//! `ocx top`: a live dashboard of every instance. The state is one struct (`app`), drawing a
//! function of it (`ui`), the data gathered on threads (`data`, `detail`), and this loop turns
//! keys, ticks and what the threads send into state changes, and state into frames.

mod app;
mod data;
mod detail;
mod terminal;
mod ui;

use std::io::IsTerminal;
use std::process::Command;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use ratatui::crossterm::event::{self, Event, KeyEventKind};

use self::app::{Action, App, Effect};
use self::data::{Row, Snapshot};
use self::detail::{Detail, View};
use self::terminal::Screen;
use crate::cli::TopArgs;
use crate::error::{Failure, code};
use crate::home::Home;
use crate::instance::restart::{self, RestartOptions};
use crate::instance::stop;
use crate::remote::{Host, Hosts};
use crate::{output, process};

/// The longest the loop waits for a key before it looks at everything else.
const TICK: Duration = Duration::from_millis(100);
/// What `s` gives a server between TERM and KILL, as `ocx stop` does.
const GRACE: Duration = Duration::from_secs(10);
/// How long another host's `ocx stop` / `ocx restart` may take.
const REMOTE_ACTION: Duration = Duration::from_secs(180);

pub fn run(home: &Home, args: TopArgs) -> Result<()> {
    if !std::io::stdout().is_terminal() {
        return Err(anyhow!(
            Failure::new(code::USAGE, "ocx top needs a terminal on stdout")
                .hint("in scripts use `ocx ls` (or `ocx ls --json`) and `ocx events --all`")
        ));
    }
    let hosts = hosts(&args)?;
    let interval = args.interval.max(Duration::from_millis(100));
    let (tx, rx) = mpsc::channel();
    let here = args.host.is_none();
    if here {
        data::gather_here(home, interval, tx.clone());
    }
    for host in &hosts {
        data::gather_host(home, host.clone(), tx.clone());
    }
    drop(tx);
    process::install_interrupt_handler();
    // Colour as `ls` has it (none under NO_COLOR or TERM=dumb).
    let mut app = App::new(output::use_color(), !hosts.is_empty());
    let mut screen = Screen::enter()?;
    dashboard(home, &hosts, &mut screen, &mut app, &rx)
}

/// The hosts whose instances are shown: `--host`'s, or with `--all-hosts` every named one.
fn hosts(args: &TopArgs) -> Result<Vec<Host>> {
    if args.host.is_none() && !args.all_hosts {
        return Ok(Vec::new());
    }
    let hosts = Hosts::load()?;
    let mut found = Vec::new();
    if let Some(host) = &args.host {
        found.push(hosts.find(host)?);
    }
    if args.all_hosts {
        found.extend(
            hosts.hosts.values().filter(|h| !found.iter().any(|f: &Host| f.url == h.url)).cloned().collect::<Vec<_>>(),
        );
    }
    Ok(found)
}

/// The loop, until q, Ctrl-C, SIGTERM or SIGHUP: each ends the dashboard with exit 0 (as
/// `ocx logs -f` does), the terminal restored by the screen's guard.
fn dashboard(home: &Home, hosts: &[Host], screen: &mut Screen, app: &mut App, rx: &Receiver<Snapshot>) -> Result<()> {
    let (done_tx, done_rx) = mpsc::channel::<String>();
    let mut detail: Option<Detail> = None;
    let mut following: Option<(Option<String>, String, View)> = None;
    loop {
        if process::interrupted() {
            return Ok(());
        }
        let mut refollow = false;
        for snapshot in rx.try_iter() {
            refollow |= app.update(snapshot);
        }
        for message in done_rx.try_iter() {
            app.message = Some(message);
        }
        // The detail follows the selection and the view.
        let wanted = app.selected_row().map(|r| (r.host.clone(), r.id.clone(), app.view.unwrap_or(View::Events)));
        if refollow || wanted != following {
            detail = app
                .selected_row()
                .and_then(|r| r.record.as_ref().filter(|_| r.host.is_none()))
                .map(|record| Detail::start(home, record, app.view.unwrap_or(View::Events)));
            following = wanted;
        }
        if let Some(detail) = &mut detail {
            for update in detail.drain() {
                app.detail(update);
            }
        }
        screen.terminal.draw(|frame| ui::draw(frame, app)).context("cannot draw")?;
        if !event::poll(TICK).context("cannot read the terminal")? {
            continue;
        }
        // A resize is redrawn by the next `draw` at the new size.
        let Event::Key(key) = event::read().context("cannot read the terminal")? else { continue };
        if key.kind == KeyEventKind::Release {
            continue;
        }
        match app.key(key) {
            Effect::None | Effect::Follow => {}
            Effect::Quit => return Ok(()),
            Effect::Act(action, row) => act(home, hosts, action, row, done_tx.clone()),
            Effect::Attach(row) => {
                screen.suspend();
                let outcome = attach(home, &row);
                // The Ctrl-C that ended opencode's TUI reached ocx too (one foreground group).
                process::forget_ctrl_c();
                screen.resume()?;
                app.message = Some(outcome);
            }
        }
    }
}

/// Restart or stop `row`'s instance on a thread (the screen keeps refreshing meanwhile);
/// the outcome comes back as a message.
fn act(home: &Home, hosts: &[Host], action: Action, row: Row, done: Sender<String>) {
    let home = home.clone();
    let host = row.host.as_ref().and_then(|label| hosts.iter().find(|h| h.label() == label)).cloned();
    std::thread::spawn(move || {
        let label = row.label().to_string();
        let said = match (&host, action, &row.record) {
            (Some(host), _, _) => match host.json(&home, &[action.verb(), "--json", &row.id], REMOTE_ACTION) {
                Ok(_) => format!("{label}: {} on {}", action.done(), host.label()),
                Err(err) => format!("{label}: {} failed: {err:#}", action.verb()),
            },
            (None, Action::Stop, Some(record)) => {
                let o = stop::stop(&home, record, GRACE, false);
                match &o.error {
                    Some(error) => format!("{label}: stop failed: {error}"),
                    None => format!(
                        "{label}: {} ({}, {})",
                        o.result,
                        o.signal.unwrap_or("no signal"),
                        output::elapsed(Duration::from_millis(o.duration_ms))
                    ),
                }
            }
            (None, Action::Restart, Some(_)) => {
                let options = RestartOptions {
                    force: false,
                    wait: Duration::from_secs(300),
                    timeout: Duration::from_secs(60),
                    grace: GRACE,
                };
                match restart::restart(&home, &row.id, &options) {
                    Ok(s) => format!("{label}: restarted in {}", output::elapsed(s.took)),
                    Err(err) => format!("{label}: restart failed: {err:#}"),
                }
            }
            (None, _, None) => return,
        };
        let _ = done.send(said);
    });
}

/// `ocx attach` on `row`'s instance, in the terminal handed back to it; what came of it.
fn attach(home: &Home, row: &Row) -> String {
    let Ok(exe) = std::env::current_exe() else { return "cannot find ocx itself to run `ocx attach`".into() };
    let mut cmd = Command::new(exe);
    cmd.arg("--home").arg(home.root());
    if let Some(host) = &row.host {
        cmd.arg("--host").arg(host);
    }
    cmd.arg("attach").arg(&row.id);
    match cmd.status() {
        Ok(status) if status.success() => format!("back from attaching to {}", row.label()),
        Ok(status) => format!("ocx attach {} ended with {status}", row.label()),
        Err(err) => format!("cannot run ocx attach: {err}"),
    }
}
