//! A batch's tasks file: one prompt per line, or JSON lines; every line checked before anything
//! is sent, so a typo on line 40 costs nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use serde::Deserialize;

use crate::error::{Failure, code};
use crate::record;
use crate::turn::{self, Prompt};

/// One task, checked.
#[derive(Debug, Clone)]
pub struct Task {
    /// Its place among the tasks, from 1.
    pub index: usize,
    /// As given, or `task-INDEX`.
    pub name: String,
    pub prompt: Prompt,
    /// The project directory on the server (`ocx run --dir`), absolute.
    pub dir: Option<PathBuf>,
    /// A session to continue (`ocx run --session`).
    pub session: Option<String>,
}

/// A JSON task line, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    prompt: String,
    name: Option<String>,
    dir: Option<PathBuf>,
    model: Option<String>,
    agent: Option<String>,
    #[serde(default)]
    files: Vec<PathBuf>,
    session: Option<String>,
}

/// Parse the tasks of `text` (read from `origin`, which errors name). Relative `dir` and
/// `files` are taken from the current directory. `worktree`: each task works in a worktree of
/// its own, so a `dir` of its own is refused.
pub fn parse(text: &str, origin: &str, worktree: bool) -> Result<Vec<Task>> {
    let mut tasks: Vec<Task> = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    // A byte order mark (some editors write one) is no part of the first task.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (number, raw) in text.lines().enumerate() {
        let number = number + 1;
        let bad = |why: String| anyhow!(Failure::new(code::USAGE, format!("{origin} line {number}: {why}")));
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let line = if trimmed.starts_with('{') {
            serde_json::from_str::<Line>(trimmed).map_err(|e| bad(format!("not a task: {e}")))?
        } else {
            Line {
                prompt: trimmed.to_string(),
                name: None,
                dir: None,
                model: None,
                agent: None,
                files: Vec::new(),
                session: None,
            }
        };
        if line.prompt.trim().is_empty() {
            return Err(bad("the prompt is empty".into()));
        }
        let index = tasks.len() + 1;
        let name = match line.name {
            Some(name) => {
                record::check_name(&name).map_err(|e| bad(format!("{e:#}")))?;
                name
            }
            None => format!("task-{index}"),
        };
        if let Some(first) = names.insert(name.clone(), number) {
            return Err(bad(format!("the name {name:?} is taken by line {first} already")));
        }
        if let Some(model) = &line.model {
            turn::split_model(model).map_err(|e| bad(format!("{e:#}")))?;
        }
        let dir = match line.dir {
            Some(_) if worktree => {
                return Err(bad("\"dir\" is not taken with --worktree: each task works in its own worktree".into()));
            }
            Some(dir) => Some(existing(&dir, true).map_err(|why| bad(format!("\"dir\" {why}")))?),
            None => None,
        };
        let mut files = Vec::new();
        for file in &line.files {
            files.push(existing(file, false).map_err(|why| bad(format!("\"files\" {why}")))?);
        }
        tasks.push(Task {
            index,
            name,
            prompt: Prompt { text: line.prompt, files, model: line.model, agent: line.agent },
            dir,
            session: line.session,
        });
    }
    Ok(tasks)
}

/// `path` made absolute, if it exists (as a directory when `dir`).
fn existing(path: &Path, dir: bool) -> std::result::Result<PathBuf, String> {
    match dunce::canonicalize(path) {
        Ok(full) if dir && !full.is_dir() => Err(format!("{} is not a directory", path.display())),
        Ok(full) => Ok(full),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(text: &str) -> String {
        let err = parse(text, "t", false).unwrap_err();
        assert_eq!(crate::error::code_of(&err), code::USAGE);
        format!("{err:#}")
    }

    #[test]
    fn plain_and_json_lines() {
        let text =
            "# a comment\n\nfix the bug\n  {\"prompt\": \"write docs\", \"name\": \"docs\", \"model\": \"p/m\"}\n";
        let tasks = parse(text, "t", false).unwrap();
        assert_eq!(tasks.len(), 2);
        assert_eq!((tasks[0].index, tasks[0].name.as_str()), (1, "task-1"));
        assert_eq!(tasks[0].prompt.text, "fix the bug");
        assert_eq!((tasks[1].index, tasks[1].name.as_str()), (2, "docs"));
        assert_eq!(tasks[1].prompt.model.as_deref(), Some("p/m"));
        assert!(parse("", "t", false).unwrap().is_empty());
        let bom = parse("\u{feff}{\"prompt\": \"p\", \"name\": \"n\"}", "t", false).unwrap();
        assert_eq!((bom[0].name.as_str(), bom[0].prompt.text.as_str()), ("n", "p"));
    }

    #[test]
    fn malformed_lines_name_their_line() {
        assert!(usage("ok\n{\"prompt\": \"x\"\n").starts_with("t line 2: not a task"));
        assert!(usage("{\"prompt\": \"x\", \"promt\": 1}").contains("unknown field `promt`"));
        assert!(usage("{\"name\": \"x\"}").contains("missing field `prompt`"));
        assert!(usage("{\"prompt\": \"  \"}").contains("line 1: the prompt is empty"));
        assert!(usage("{\"prompt\": \"x\", \"name\": \"a b\"}").contains("invalid name"));
        assert!(
            usage("{\"prompt\": \"x\", \"name\": \"a\"}\n{\"prompt\": \"y\", \"name\": \"a\"}")
                .contains("line 2: the name \"a\" is taken by line 1")
        );
        assert!(usage("{\"prompt\": \"x\", \"model\": \"gpt\"}").contains("not PROVIDER/MODEL"));
        assert!(usage("{\"prompt\": \"x\", \"dir\": \"/no/such/dir\"}").contains("\"dir\" /no/such/dir"));
        assert!(usage("{\"prompt\": \"x\", \"files\": [\"/no/such/file\"]}").contains("\"files\" /no/such/file"));
        let dir = std::env::temp_dir().display().to_string();
        let err = parse(&format!("{{\"prompt\": \"x\", \"dir\": {dir:?}}}"), "t", true).unwrap_err();
        assert!(format!("{err:#}").contains("not taken with --worktree"));
    }
}
