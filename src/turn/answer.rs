//! Answering what the server asks during a turn (permission to run a tool, the agent's
//! questions) as `--permission` says, so that it never waits forever; with `ask`, the user
//! answers at the terminal.

use std::collections::HashSet;
use std::io::BufRead;
use std::io::Write;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Instant;

use anyhow::Result;
use serde_json::{Value, json};

use super::print::Printer;
use super::{POLL, Permissions, interruption};
use crate::events::{Permission, Question};
use crate::server::Client;

/// The policy, and what it answered.
pub struct Answerer {
    permissions: Permissions,
    /// The turn's `--timeout`, which waiting at the terminal must not outlast.
    deadline: Option<Instant>,
    /// Permission and question requests already answered.
    answered: HashSet<String>,
    /// Lines typed at the terminal, for `--permission ask` (read on a thread of its own).
    typed: Option<Receiver<String>>,
}

impl Answerer {
    pub fn new(permissions: Permissions, deadline: Option<Instant>) -> Self {
        Answerer { permissions, deadline, answered: HashSet::new(), typed: None }
    }

    /// Answer a permission request of this turn's sessions, as `--permission` says. Left
    /// unanswered when Ctrl-C or the deadline came while asking: the turn aborts the prompt.
    pub fn permission(
        &mut self,
        client: &Client,
        printer: &mut Printer,
        request: &Permission,
        raw: &Value,
    ) -> Result<()> {
        if !self.answered.insert(request.id.clone()) {
            return Ok(());
        }
        let what = format!("{} ({})", request.permission, request.patterns.join(", "));
        let reply = match self.permissions {
            Permissions::Reject => "reject",
            Permissions::Allow => "once",
            Permissions::Ask => {
                let prompt = format!("permission: {what} — allow [o]nce, [a]lways, or [r]eject? ");
                let Some(typed) = self.ask(printer, &prompt, &["o", "a", "r"]) else { return Ok(()) };
                match typed.as_str() {
                    "o" => "once",
                    "a" => "always",
                    _ => "reject",
                }
            }
        };
        client.reply_permission(&request.id, reply)?;
        let shown = match reply {
            "once" => "allowed once",
            "always" => "allowed always",
            _ => "rejected",
        };
        printer.note(&format!("permission {what}: {shown}"));
        printer.json_line("permission", json!({"permission": raw, "reply": reply}))
    }

    /// Answer the agent's question: dismissed, unless `--permission ask` lets the user answer
    /// (left unanswered when Ctrl-C or the deadline came while asking, as a permission).
    pub fn question(&mut self, client: &Client, printer: &mut Printer, question: &Question, raw: &Value) -> Result<()> {
        if !self.answered.insert(question.id.clone()) {
            return Ok(());
        }
        let mut answers: Vec<Vec<String>> = Vec::new();
        if self.permissions == Permissions::Ask {
            for q in &question.questions {
                let options: Vec<String> = q
                    .options
                    .iter()
                    .enumerate()
                    .map(|(i, o)| format!("  {}. {} {}", i + 1, o.label, o.description))
                    .collect();
                let prompt = format!(
                    "question: {}\n{}\nanswer (a number, or text; empty dismisses): ",
                    q.question,
                    options.join("\n")
                );
                let Some(typed) = self.ask(printer, &prompt, &[]) else { return Ok(()) };
                if typed.is_empty() {
                    answers.clear();
                    break;
                }
                let picked = typed.parse::<usize>().ok().and_then(|n| q.options.get(n.wrapping_sub(1)));
                answers.push(vec![picked.map_or(typed.clone(), |o| o.label.clone())]);
            }
        }
        let asked = question.questions.iter().map(|q| q.question.as_str()).collect::<Vec<_>>().join(" / ");
        if answers.is_empty() {
            client.dismiss_question(&question.id)?;
            printer.note(&format!("question \"{asked}\": dismissed"));
            printer.json_line("question", json!({"question": raw, "answers": null}))
        } else {
            client.answer_question(&question.id, &answers)?;
            let given = answers.iter().map(|a| a.join(", ")).collect::<Vec<_>>().join(" / ");
            printer.note(&format!("question \"{asked}\": answered {given}"));
            printer.json_line("question", json!({"question": raw, "answers": answers}))
        }
    }

    /// Requests of `sessions` that wait for an answer already (asked before ocx was listening,
    /// or while its stream was down).
    pub fn pending(&mut self, client: &Client, printer: &mut Printer, sessions: &HashSet<String>) -> Result<()> {
        for raw in client.permissions()? {
            if let Ok(request) = serde_json::from_value::<Permission>(raw.clone())
                && sessions.contains(&request.session)
            {
                self.permission(client, printer, &request, &raw)?;
            }
        }
        for raw in client.questions()? {
            if let Ok(question) = serde_json::from_value::<Question>(raw.clone())
                && sessions.contains(&question.session)
            {
                self.question(client, printer, &question, &raw)?;
            }
        }
        Ok(())
    }

    /// Ask the user at the terminal; one line (lowercase, trimmed). With `choices`, until it is
    /// one of them. None when Ctrl-C or the deadline came first.
    fn ask(&mut self, printer: &mut Printer, prompt: &str, choices: &[&str]) -> Option<String> {
        let typed = self.typed.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in std::io::stdin().lock().lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        });
        loop {
            if interruption(self.deadline).is_some() {
                return None;
            }
            let _ = printer.end_line();
            let _ = write!(std::io::stderr(), "{prompt}");
            let line = loop {
                match typed.recv_timeout(POLL) {
                    Ok(line) => break line.trim().to_lowercase(),
                    Err(RecvTimeoutError::Disconnected) => break String::new(),
                    Err(RecvTimeoutError::Timeout) => {}
                }
                if interruption(self.deadline).is_some() {
                    // The question stays on the screen; what ocx says next goes below it.
                    let _ = writeln!(std::io::stderr());
                    return None;
                }
            };
            if choices.is_empty() || choices.contains(&line.as_str()) || line.is_empty() {
                return Some(line);
            }
        }
    }
}
