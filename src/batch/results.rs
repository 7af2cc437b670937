//! `--results FILE`: each finished task's JSON line appended (and flushed) as it finishes, and
//! what an earlier run with the same file finished, so a rerun skips it.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

use super::tasks::Task;

/// The results file, open for appending.
pub struct Results {
    path: PathBuf,
    file: File,
}

/// What identifies a task across runs: its name and its prompt (an edited prompt is a new task).
fn key(name: &str, prompt: &str) -> String {
    format!("{name}\n{prompt}")
}

impl Results {
    /// Open (or create) the file; the keys of the tasks it records as `ok`. A line that is no
    /// result (a run killed mid-write) is passed over, and the file is never rewritten.
    pub fn open(path: &Path) -> Result<(Results, HashSet<String>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .with_context(|| format!("cannot open --results {}", path.display()))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).with_context(|| format!("cannot read --results {}", path.display()))?;
        // A line cut mid-character by a killed run is passed over like any other cut line.
        let text = String::from_utf8_lossy(&bytes);
        let done = text
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|result| result["status"] == "ok")
            .filter_map(|result| Some(key(result["name"].as_str()?, result["prompt"].as_str()?)))
            .collect();
        // A last line cut short gets its end, so the next result starts a line of its own.
        if !text.is_empty() && !text.ends_with('\n') {
            file.seek(SeekFrom::End(0))?;
            file.write_all(b"\n")?;
        }
        Ok((Results { path: path.to_path_buf(), file }, done))
    }

    /// Append one result line, flushed to the OS before the next task's.
    pub fn append(&mut self, result: &Value) -> Result<()> {
        let mut line = result.to_string();
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.flush())
            .with_context(|| format!("cannot write --results {}", self.path.display()))
    }
}

/// Whether `task` is among the `done` keys of an earlier run.
pub fn is_done(done: &HashSet<String>, task: &Task) -> bool {
    done.contains(&key(&task.name, &task.prompt.text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_tasks_are_found_and_a_cut_line_is_passed_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        std::fs::write(
            &path,
            b"{\"name\":\"a\",\"prompt\":\"x\",\"status\":\"ok\"}\n{\"name\":\"b\",\"prompt\":\"y\",\"status\":\"failed\"}\n{\"name\":\"c\",\"pro\xc3",
        )
        .unwrap();
        let (mut results, done) = Results::open(&path).unwrap();
        assert_eq!(done, HashSet::from([key("a", "x")]));
        results.append(&serde_json::json!({"name": "c", "prompt": "z", "status": "ok"})).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let end: &[u8] = b"{\"name\":\"c\",\"pro\xc3\n{\"name\":\"c\",\"prompt\":\"z\",\"status\":\"ok\"}\n";
        assert!(bytes.ends_with(end), "{}", String::from_utf8_lossy(&bytes));
        let (_, done) = Results::open(&path).unwrap();
        assert_eq!(done.len(), 2);
    }
}
