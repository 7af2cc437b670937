//! Printing a turn: the answer's text on stdout as it streams (or `opencode run --format json`'s
//! lines), notes on stderr, and what it takes to print each piece of the answer exactly once
//! whether it came live or from the stored messages.

use std::collections::{HashMap, HashSet};
use std::io::IsTerminal;

use anyhow::Result;
use serde_json::{Value, json};

use super::{Format, now_ms, short_input};
use crate::events::{Part, PartKind};
use crate::output;

/// What a turn printed so far, and where its output stands.
pub struct Printer {
    format: Format,
    /// The session, as the JSON lines name it.
    session: String,
    /// The text of each text part printed so far.
    printed: HashMap<String, String>,
    /// Text parts followed from their start on the live stream: their deltas can be printed.
    in_sync: HashSet<String>,
    /// Parts already reported (tool lines, JSON lines).
    reported: HashSet<String>,
    last_text_part: Option<String>,
    at_line_start: bool,
    stdout_is_terminal: bool,
}

impl Printer {
    pub fn new(format: Format, session: &str) -> Self {
        Printer {
            format,
            session: session.to_string(),
            printed: HashMap::new(),
            in_sync: HashSet::new(),
            reported: HashSet::new(),
            last_text_part: None,
            at_line_start: true,
            stdout_is_terminal: std::io::stdout().is_terminal(),
        }
    }

    /// The stream dropped: deltas that arrive from now on may not follow the ones printed.
    pub fn lose_sync(&mut self) {
        self.in_sync.clear();
    }

    /// A piece of a text part's text, live: printed if every piece before it was.
    pub fn delta(&mut self, part: &str, delta: &str) -> Result<()> {
        if self.in_sync.contains(part) {
            self.print_text(part, delta)?;
        }
        Ok(())
    }

    /// A part of the answer changed (`live`), or was read from the messages after the stream
    /// dropped.
    pub fn part(&mut self, part: &Part, raw: &Value, live: bool) -> Result<()> {
        let id = part.ids.id.clone();
        match &part.kind {
            PartKind::Text { text, time } => {
                let printed = self.printed.get(&id).map_or(0, String::len);
                if text.is_empty() && printed == 0 && live {
                    // The part starts on the live stream: its deltas follow, none missed. (Read
                    // from the messages, a part's text is empty until it ends: deltas were missed.)
                    self.in_sync.insert(id.clone());
                }
                // Print only what extends what was printed.
                let rest = self.printed.get(&id).map_or(Some(text.as_str()), |p| text.strip_prefix(p.as_str()));
                if let Some(rest) = rest.filter(|r| !r.is_empty()) {
                    let rest = rest.to_string();
                    self.print_text(&id, &rest)?;
                }
                if time.end.is_some() && self.reported.insert(id) {
                    self.json_line("text", json!({"part": raw}))?;
                }
            }
            PartKind::Tool { tool, state }
                if matches!(state.status.as_str(), "completed" | "error") && self.reported.insert(id.clone()) =>
            {
                self.note(&format!("tool {tool}: {} ({})", short_input(&state.input), state.status));
                self.json_line("tool_use", json!({"part": raw}))?;
            }
            PartKind::StepStart {} | PartKind::StepFinish { .. } if self.reported.insert(id.clone()) => {
                let kind = if matches!(part.kind, PartKind::StepStart {}) { "step_start" } else { "step_finish" };
                self.json_line(kind, json!({"part": raw}))?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Text of the answer to stdout (text format only), a newline between separate parts.
    fn print_text(&mut self, part: &str, text: &str) -> Result<()> {
        self.printed.entry(part.to_string()).or_default().push_str(text);
        if self.format != Format::Text || text.is_empty() {
            return Ok(());
        }
        if self.last_text_part.as_deref() != Some(part) {
            if !self.at_line_start {
                output::write(b"\n")?;
            }
            self.last_text_part = Some(part.to_string());
        }
        output::write(text.as_bytes())?;
        self.at_line_start = text.ends_with('\n');
        Ok(())
    }

    /// One line in `opencode run --format json`'s shape (json format only).
    pub fn json_line(&self, kind: &str, fields: Value) -> Result<()> {
        if self.format != Format::Json {
            return Ok(());
        }
        let mut line = json!({"type": kind, "timestamp": now_ms(), "sessionID": self.session});
        if let (Some(line), Some(fields)) = (line.as_object_mut(), fields.as_object()) {
            line.extend(fields.clone());
        }
        output::line(line)?;
        Ok(())
    }

    /// A line on stderr; on a shared terminal, first end the answer's line.
    pub fn note(&mut self, line: &str) {
        if self.format == Format::Silent {
            return;
        }
        if self.stdout_is_terminal {
            let _ = self.end_line();
        }
        output::note(line);
    }

    /// End the answer's line (text format only), if it is not ended.
    pub fn end_line(&mut self) -> std::io::Result<()> {
        if self.format == Format::Text && !self.at_line_start {
            self.at_line_start = true;
            output::write(b"\n")?;
        }
        Ok(())
    }
}
