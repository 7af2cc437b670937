//! What an instance works in besides its directory: a git worktree of its own (`--worktree`)
//! and a database of its own (`--isolate`). Creating them for a start, and the one rule for
//! removing a worktree, shared by `stop` and `gc`: never lose work. A worktree goes only when it
//! has no uncommitted or untracked changes, its branch only when it has no commits beyond its
//! base and ocx created it; `discard` says otherwise, explicitly.
//!
//! Worktrees live under the home, `<home>/worktrees/<id>/<repo name>`, not beside the
//! repository: ocx never writes into a directory the user did not give it, gc finds every
//! worktree it made without knowing the repositories, and the home outlives reboots (unlike
//! `/tmp`). Before `git worktree add`, ocx writes `<home>/worktrees/<id>.json` (the marker): a
//! worktree without one is not ocx's, and gc never touches it; a crash at any step leaves the
//! marker, from which gc finishes the job by the same rule.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

use super::log;
use super::spawn::Plan;
use crate::error::{Failure, code};
use crate::home::{self, Home};
use crate::process::{self, MARKER_HOME, MARKER_ID};
use crate::record::Worktree;
use crate::{hooks, worktree as git};

mod release;
pub use release::{Released, delete_databases, release, sweep};

/// How many lines of a failed `--setup` the error shows.
const SETUP_TAIL: usize = 15;

/// `--worktree`, checked before anything is created.
#[derive(Debug, Clone)]
pub struct WorktreePlan {
    /// The repository's top level.
    pub repo: PathBuf,
    /// Where the served directory is below the top level (served at the same place in the worktree).
    pub prefix: PathBuf,
    /// `--worktree BRANCH` (with `--count`, suffixed `-1..-N`); None: `ocx/<name or id>`.
    pub branch: Option<String>,
    /// `--base`, resolved to a commit.
    pub base: String,
}

impl WorktreePlan {
    /// Check `--worktree [BRANCH] --base REF` against the repository `dir` is in: a clear
    /// error, and nothing created, for anything git would refuse.
    pub fn check(dir: &Path, branch: Option<String>, base: Option<&str>, count: u32) -> Result<WorktreePlan> {
        let (repo, prefix) = git::toplevel(dir)?;
        if !git::has_commits(&repo) {
            return Err(anyhow!(
                Failure::new(code::FAILED, format!("the repository {} has no commits yet", repo.display()))
                    .hint("a worktree starts from a commit: commit something first (git commit --allow-empty -m init)")
            ));
        }
        let base_ref = base.unwrap_or("HEAD");
        let Some(base_commit) = git::commit_of(&repo, base_ref) else {
            return Err(anyhow!(
                Failure::new(code::FAILED, format!("--base {base_ref:?} names no commit in {}", repo.display()))
                    .hint("give a branch, tag or commit that exists: git branch -a; git log --oneline")
            ));
        };
        if let Some(name) = &branch {
            if !git::is_valid_branch(&repo, name) {
                return Err(anyhow!(
                    Failure::new(code::USAGE, format!("{name:?} is not a valid branch name"))
                        .hint("see git check-ref-format")
                ));
            }
            if count > 1 && git::branch_exists(&repo, name) {
                return Err(anyhow!(Failure::new(
                    code::USAGE,
                    format!("--count {count} needs a branch per instance; {name:?} exists and can be checked out once")
                )));
            }
            if count == 1 && git::branch_exists(&repo, name) {
                if base.is_some() {
                    return Err(anyhow!(
                        Failure::new(code::USAGE, format!("--base is for a new branch; {name:?} exists already"))
                            .hint("leave --base out to work on that branch, or name a new branch")
                    ));
                }
                if let Some(at) = git::checked_out_at(&repo, name) {
                    return Err(anyhow!(
                        Failure::new(
                            code::FAILED,
                            format!("branch {name:?} is checked out at {} already", at.display())
                        )
                        .hint("git checks a branch out in one worktree at a time: name another branch")
                    ));
                }
            }
        }
        Ok(WorktreePlan { repo, prefix, branch, base: base_commit })
    }
}

fn dir(home: &Home) -> PathBuf {
    home.root().join("worktrees")
}

fn marker_path(home: &Home, id: &str) -> PathBuf {
    dir(home).join(format!("{id}.json"))
}

/// Where an isolated instance's database lives: `<home>/data/<id>/opencode.db` (with its
/// `-wal` and `-shm` files beside it).
pub fn db_path(home: &Home, id: &str) -> PathBuf {
    home.root().join("data").join(id).join("opencode.db")
}

/// What a start made for an instance. Until `finish`, dropping it removes the worktree and
/// the branch it created (nothing of anyone's is in them yet: the server never served them).
pub struct Prepared<'a> {
    home: &'a Home,
    id: String,
    pub worktree: Option<Worktree>,
    /// Where the server serves: the worktree (at the served directory's place in it), or the plan's.
    pub dir: PathBuf,
    pub db: Option<PathBuf>,
    finished: bool,
}

impl<'a> Prepared<'a> {
    /// Create the worktree (and run `--setup` in it) and choose the database, for the
    /// instance `id` (whose lock the caller holds, so gc leaves the marker alone).
    pub fn create(home: &'a Home, plan: &Plan, id: &str, name: Option<&str>, index: Option<u32>) -> Result<Self> {
        let mut prepared = Prepared {
            home,
            id: id.to_string(),
            worktree: None,
            dir: plan.dir.clone(),
            db: plan.isolate.then(|| db_path(home, id)),
            finished: false,
        };
        if let Some(db) = &prepared.db {
            let parent = db.parent().expect("a db path has a directory");
            process::create_private_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let Some(wt) = &plan.worktree else { return Ok(prepared) };
        let branch = match (&wt.branch, index) {
            (Some(b), Some(i)) => format!("{b}-{i}"),
            (Some(b), None) => b.clone(),
            (None, _) => format!("ocx/{}", name.unwrap_or(id)),
        };
        let existing = git::branch_exists(&wt.repo, &branch);
        if existing && wt.branch.is_none() {
            return Err(anyhow!(
                Failure::new(code::FAILED, format!("branch {branch:?} exists already in {}", wt.repo.display()))
                    .hint("name the instance otherwise, or give --worktree BRANCH")
            ));
        }
        let base =
            if existing { git::commit_of(&wt.repo, &branch).unwrap_or(wt.base.clone()) } else { wt.base.clone() };
        let repo_name = wt.repo.file_name().map_or("repo".into(), |n| n.to_string_lossy().into_owned());
        let path = dir(home).join(id).join(repo_name);
        let record = Worktree { path: path.clone(), branch, base, repo: wt.repo.clone(), created_branch: !existing };
        process::create_private_dir_all(&dir(home).join(id))
            .with_context(|| format!("cannot create {}", dir(home).join(id).display()))?;
        home::write_atomic(&marker_path(home, id), &serde_json::to_vec_pretty(&record)?)?;
        prepared.worktree = Some(record.clone());
        hooks::pause("worktree:marked");
        hooks::fail("worktree:marked")?;
        let git_lock = home.lock_git()?;
        if existing {
            git::add_on_branch(&wt.repo, &path, &record.branch)
        } else {
            git::add_on_new_branch(&wt.repo, &path, &record.branch, &record.base)
        }
        .map_err(|e| {
            let checked_out = format!("{e:#}").contains("already");
            let failure = Failure::new(code::FAILED, format!("{e:#}"));
            anyhow!(if checked_out { failure.hint("name another branch with --worktree BRANCH") } else { failure })
        })?;
        drop(git_lock);
        hooks::pause("worktree:added");
        hooks::fail("worktree:added")?;
        // (An empty prefix would add a trailing `/`.)
        prepared.dir = if wt.prefix.as_os_str().is_empty() { path.clone() } else { path.join(&wt.prefix) };
        if let Some(script) = &plan.setup {
            run_setup(home, plan, id, &path, script)?;
        }
        Ok(prepared)
    }

    /// The start succeeded: the record now holds what was made.
    pub fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for Prepared<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Some(wt) = &self.worktree {
            let _ = release(self.home, &self.id, wt, true);
        }
        if let Some(db) = &self.db
            && let Some(parent) = db.parent()
        {
            let _ = std::fs::remove_dir_all(parent);
        }
    }
}

/// Run `--setup` in the new worktree, its output in the instance's log; a failure is an error
/// with its last lines.
fn run_setup(home: &Home, plan: &Plan, id: &str, path: &Path, script: &str) -> Result<()> {
    let mut log = log::Writer::open(&home.log_path(id), plan.supervision.log_max_size, plan.supervision.log_max_files)
        .with_context(|| format!("cannot open {}", home.log_path(id).display()))?;
    let _ = log.write_line(&format!("--- ocx: {id} setup in {}: {script}", path.display()));
    let (reader, writer) = std::io::pipe().context("cannot make a pipe for --setup")?;
    let mut cmd = process::shell(script);
    cmd.current_dir(path)
        .env(MARKER_ID, id)
        .env(MARKER_HOME, home.root())
        .stdin(Stdio::null())
        .stdout(writer.try_clone().context("cannot make a pipe for --setup")?)
        .stderr(writer);
    let mut child = cmd.spawn().with_context(|| format!("cannot run --setup {script:?}"))?;
    drop(cmd);
    // The output is read on a thread of its own, so that Ctrl-C (or SIGTERM) ends the setup at
    // once: its processes carry the instance's marker, and are ended by it.
    let tail = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let output = {
        let tail = std::sync::Arc::clone(&tail);
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { break };
                let _ = log.write_line(&line);
                let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                tail.push(line);
                if tail.len() > SETUP_TAIL {
                    tail.remove(0);
                }
            }
            log
        })
    };
    let status = loop {
        if process::interrupted() {
            process::signal_child(&child, process::Signal::Kill);
            let _ = child.wait();
            super::stop::end_marked(home, id);
            return Err(crate::error::interrupted("interrupted during --setup; removed the new worktree"));
        }
        match child.try_wait().context("cannot wait for --setup")? {
            Some(status) => break status,
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    // Something the setup started in the background may hold the pipe open (it carries the
    // marker: `ocx stop` ends it): its output is not waited for.
    let deadline = Instant::now() + Duration::from_secs(1);
    while !output.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if output.is_finished()
        && let Ok(mut log) = output.join()
    {
        let _ = log.write_line(&format!("--- ocx: setup ended: {status}"));
    }
    let tail = tail.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if !status.success() {
        let shown = if tail.is_empty() {
            "  (no output)".to_string()
        } else {
            tail.iter().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
        };
        return Err(anyhow!(
            Failure::new(code::FAILED, format!("--setup {script:?} failed ({status}); its last lines:\n{shown}"))
                .hint(format!("the worktree and its branch were removed; the whole output: ocx logs {id}"))
        ));
    }
    Ok(())
}
