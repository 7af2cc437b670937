//! The dashboard's state, one plain struct, and what each key does to it. No I/O here: a key
//! that needs some (an action, another detail view) comes back as an `Effect` for the loop.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::data::{Row, Snapshot};
use super::detail::{Pending, Update, View};

/// Detail lines kept: more than any terminal shows.
const KEPT_LINES: usize = 1000;

/// An action that asks y/n first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Restart,
    Stop,
}

impl Action {
    pub fn verb(self) -> &'static str {
        match self {
            Action::Restart => "restart",
            Action::Stop => "stop",
        }
    }

    pub fn done(self) -> &'static str {
        match self {
            Action::Restart => "restarted",
            Action::Stop => "stopped",
        }
    }

    pub fn doing(self) -> &'static str {
        match self {
            Action::Restart => "restarting",
            Action::Stop => "stopping",
        }
    }
}

/// What the loop must do after a key.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    None,
    Quit,
    /// Follow the selected instance anew (the selection or the view changed).
    Follow,
    Act(Action, Row),
    Attach(Row),
}

/// Everything the screen shows.
#[derive(Default)]
pub struct App {
    /// Each source's rows (None: this machine), as last gathered.
    pub sources: Vec<(Option<String>, Vec<Row>)>,
    /// The selected instance, by host and id: it stays selected as rows come and go.
    pub selected: Option<(Option<String>, String)>,
    pub view: Option<View>,
    pub lines: VecDeque<String>,
    /// What the selected instance waits on, with when top first saw each.
    pub pending: Vec<(Pending, Instant)>,
    /// Typing a filter (after `/`).
    pub filtering: bool,
    pub filter: String,
    pub confirm: Option<(Action, Row)>,
    pub help: bool,
    /// The last action's outcome, or what is going on.
    pub message: Option<String>,
    /// Whether other hosts are shown (a HOST column).
    pub hosts: bool,
    pub color: bool,
}

impl App {
    pub fn new(color: bool, hosts: bool) -> App {
        App { view: Some(View::Events), color, hosts, ..App::default() }
    }

    /// The rows shown: every source's, filtered, in a stable order (host, start, id).
    pub fn rows(&self) -> Vec<&Row> {
        let needle = self.filter.to_lowercase();
        let mut rows: Vec<&Row> = self
            .sources
            .iter()
            .flat_map(|(_, rows)| rows)
            .filter(|r| needle.is_empty() || r.label().to_lowercase().contains(&needle) || r.id.contains(&needle))
            .collect();
        rows.sort_by(|a, b| (&a.host, &a.started_at, &a.id).cmp(&(&b.host, &b.started_at, &b.id)));
        rows
    }

    /// The selected row's index in `rows()`.
    pub fn selected_index(&self) -> Option<usize> {
        let (host, id) = self.selected.as_ref()?;
        self.rows().iter().position(|r| &r.host == host && &r.id == id)
    }

    pub fn selected_row(&self) -> Option<&Row> {
        self.selected_index().map(|i| self.rows()[i])
    }

    /// A source's new rows. True when the selection changed (the selected one is gone, or there
    /// was none), so its detail must be followed anew.
    pub fn update(&mut self, snapshot: Snapshot) -> bool {
        match self.sources.iter_mut().find(|(host, _)| *host == snapshot.host) {
            Some(source) => source.1 = snapshot.rows,
            None => self.sources.push((snapshot.host, snapshot.rows)),
        }
        self.keep_selection()
    }

    /// Select the first row when the selected one is not shown. True when that changed it.
    fn keep_selection(&mut self) -> bool {
        if self.selected_index().is_some() {
            return false;
        }
        let first = self.rows().first().map(|r| (r.host.clone(), r.id.clone()));
        let changed = first != self.selected;
        self.selected = first;
        if changed {
            self.lines.clear();
            self.pending.clear();
        }
        changed
    }

    /// What the detail's followers sent.
    pub fn detail(&mut self, update: Update) {
        match update {
            Update::Lines(lines) => {
                self.lines.extend(lines);
                while self.lines.len() > KEPT_LINES {
                    self.lines.pop_front();
                }
            }
            Update::Pending(now) => {
                let seen: HashMap<String, Instant> = self.pending.drain(..).map(|(p, at)| (p.id, at)).collect();
                self.pending = now
                    .into_iter()
                    .map(|p| {
                        let at = seen.get(&p.id).copied().unwrap_or_else(Instant::now);
                        (p, at)
                    })
                    .collect();
            }
        }
    }

    fn select(&mut self, index: usize) -> Effect {
        let rows = self.rows();
        let Some(row) = rows.get(index) else { return Effect::None };
        let wanted = Some((row.host.clone(), row.id.clone()));
        if wanted == self.selected {
            return Effect::None;
        }
        self.selected = wanted;
        self.lines.clear();
        self.pending.clear();
        Effect::Follow
    }

    fn show(&mut self, view: View) -> Effect {
        if self.view == Some(view) {
            return Effect::None;
        }
        self.view = Some(view);
        self.lines.clear();
        Effect::Follow
    }

    /// What `key` does.
    pub fn key(&mut self, key: KeyEvent) -> Effect {
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            return Effect::Quit;
        }
        if let Some((action, row)) = self.confirm.take() {
            if matches!(key.code, KeyCode::Char('y' | 'Y')) {
                self.message = Some(format!("{} {}…", action.doing(), row.label()));
                return Effect::Act(action, row);
            }
            self.message = Some(format!("{} cancelled", action.verb()));
            return Effect::None;
        }
        if self.filtering {
            match key.code {
                KeyCode::Enter => self.filtering = false,
                KeyCode::Esc => {
                    self.filtering = false;
                    self.filter.clear();
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) => self.filter.push(c),
                _ => {}
            }
            return if self.keep_selection() { Effect::Follow } else { Effect::None };
        }
        if self.help {
            self.help = false;
            return if matches!(key.code, KeyCode::Char('q')) { Effect::Quit } else { Effect::None };
        }
        let at = self.selected_index();
        let count = self.rows().len();
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => Effect::Quit,
            KeyCode::Down | KeyCode::Char('j') => self.select(at.map_or(0, |i| (i + 1).min(count.saturating_sub(1)))),
            KeyCode::Up | KeyCode::Char('k') => self.select(at.map_or(0, |i| i.saturating_sub(1))),
            KeyCode::Home | KeyCode::Char('g') => self.select(0),
            KeyCode::End | KeyCode::Char('G') => self.select(count.saturating_sub(1)),
            KeyCode::Enter | KeyCode::Char('e') => self.show(View::Events),
            KeyCode::Char('l') => self.show(View::Log),
            KeyCode::Char('/') => {
                self.filtering = true;
                Effect::None
            }
            KeyCode::Char('?') => {
                self.help = true;
                Effect::None
            }
            KeyCode::Char(c @ ('r' | 's')) => {
                let action = if c == 'r' { Action::Restart } else { Action::Stop };
                // Only an instance's row: not a corrupt record's, not a host's that did not answer.
                if let Some(row) = self.selected_row().filter(|r| r.record.is_some()).cloned() {
                    self.confirm = Some((action, row));
                }
                Effect::None
            }
            KeyCode::Char('a') => match self.selected_row() {
                Some(row) if row.record.is_some() => Effect::Attach(row.clone()),
                _ => Effect::None,
            },
            _ => Effect::None,
        }
    }
}
