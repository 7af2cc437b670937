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

use anyhow::{Context, Result, anyhow};
use serde::Serialize;

use super::log;
use super::spawn::Plan;
use crate::error::{Failure, code};
use crate::home::{self, Home};
use crate::process::{self, MARKER_HOME, MARKER_ID};
use crate::record::Worktree;
use crate::{hooks, worktree as git};

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
    let mut tail: Vec<String> = Vec::new();
    for line in BufReader::new(reader).lines() {
        let Ok(line) = line else { break };
        let _ = log.write_line(&line);
        tail.push(line);
        if tail.len() > SETUP_TAIL {
            tail.remove(0);
        }
    }
    let status = child.wait().context("cannot wait for --setup")?;
    let _ = log.write_line(&format!("--- ocx: setup ended: {status}"));
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

/// What became of an instance's worktree and branch.
#[derive(Debug, Clone, Serialize)]
pub struct Released {
    pub id: String,
    pub path: PathBuf,
    pub branch: String,
    pub repo: PathBuf,
    /// `removed`, `kept` (it has changes), `gone` (its directory was gone already), `failed`.
    pub worktree: &'static str,
    /// `deleted`, `kept` (commits beyond its base), `not ocx's` (it existed before), `gone`.
    pub branch_result: &'static str,
    /// Uncommitted and untracked files in the worktree.
    pub changed_files: usize,
    /// Commits on the branch beyond its base.
    pub commits: usize,
    pub error: Option<String>,
}

impl Released {
    /// One line for people: what was kept, and the command that removes it.
    pub fn summary(&self) -> Option<String> {
        let (path, repo, branch) = (self.path.display(), self.repo.display(), &self.branch);
        if let Some(error) = &self.error {
            return Some(format!("worktree {path}: {error}"));
        }
        match (self.worktree, self.branch_result) {
            ("kept", _) => Some(format!(
                "kept worktree {path} (branch {branch}): {} file(s) changed; to throw them away: git -C {repo} worktree remove --force {path}",
                self.changed_files
            )),
            (_, "kept") => Some(format!(
                "kept branch {branch}: {} commit(s) beyond its base; to delete it: git -C {repo} branch -D {branch}",
                self.commits
            )),
            _ => None,
        }
    }
}

/// Remove an instance's worktree and branch by the rule (`discard`: also with work in them);
/// the marker goes once the worktree is gone.
pub fn release(home: &Home, id: &str, wt: &Worktree, discard: bool) -> Released {
    let mut released = Released {
        id: id.to_string(),
        path: wt.path.clone(),
        branch: wt.branch.clone(),
        repo: wt.repo.clone(),
        worktree: "failed",
        branch_result: "kept",
        changed_files: 0,
        commits: 0,
        error: None,
    };
    if let Err(err) = release_into(home, id, wt, discard, &mut released) {
        released.error = Some(format!("{err:#}"));
    }
    released
}

fn release_into(home: &Home, id: &str, wt: &Worktree, discard: bool, out: &mut Released) -> Result<()> {
    if wt.path.exists() {
        if !git::is_registered(&wt.repo, &wt.path) {
            // git never registered it (a crash inside `git worktree add`): only an empty directory is safe to take.
            if std::fs::read_dir(&wt.path).is_ok_and(|mut d| d.next().is_none()) {
                std::fs::remove_dir(&wt.path).with_context(|| format!("cannot remove {}", wt.path.display()))?;
            } else {
                out.worktree = "kept";
                return Err(anyhow!("{} is not a worktree git knows of; left as it is", wt.path.display()));
            }
        } else {
            out.changed_files = git::changed_files(&wt.path)?;
            if out.changed_files > 0 && !discard {
                out.worktree = "kept";
            } else {
                hooks::pause("worktree:removing");
                hooks::fail("worktree:removing")?;
                git::remove(&wt.repo, &wt.path, discard)?;
            }
        }
    } else {
        // Its directory went (by hand, or a crash of `git worktree remove`): forget it in git too.
        git::prune(&wt.repo)?;
    }
    if out.worktree != "kept" {
        out.worktree = if wt.path.exists() { "failed" } else { "removed" };
    }
    if git::branch_exists(&wt.repo, &wt.branch) {
        out.commits = git::commits_beyond(&wt.repo, &wt.branch, &wt.base)?;
        out.branch_result = match () {
            _ if !wt.created_branch => "not ocx's",
            _ if out.worktree == "kept" => "kept",
            _ if out.commits > 0 && !discard => "kept",
            _ => {
                hooks::pause("worktree:deleting-branch");
                hooks::fail("worktree:deleting-branch")?;
                git::delete_branch(&wt.repo, &wt.branch)?;
                "deleted"
            }
        };
    } else {
        out.branch_result = "gone";
    }
    if out.worktree == "removed" {
        hooks::fail("worktree:unmarking")?;
        let _ = std::fs::remove_file(marker_path(home, id));
        let _ = std::fs::remove_dir(dir(home).join(id));
    }
    Ok(())
}

/// The worktrees ocx made whose instance has no record (`live`: the ids that have one):
/// released by the rule, unless a start holds the instance's lock (it is being made).
pub fn sweep(home: &Home, live: &std::collections::HashSet<String>, dry_run: bool) -> Result<Vec<Released>> {
    let Ok(entries) = std::fs::read_dir(dir(home)) else { return Ok(Vec::new()) };
    let mut released = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_suffix(".json").filter(|id| crate::record::is_valid_id(id)) else { continue };
        if live.contains(id) {
            continue;
        }
        let Some(_lock) = home.try_lock_instance(id)? else { continue };
        let Ok(wt) = std::fs::read(entry.path())
            .map_err(anyhow::Error::from)
            .and_then(|b| Ok(serde_json::from_slice::<Worktree>(&b)?))
        else {
            continue;
        };
        if dry_run {
            let changed = git::changed_files(&wt.path).unwrap_or(0);
            let commits = git::commits_beyond(&wt.repo, &wt.branch, &wt.base).unwrap_or(0);
            released.push(Released {
                id: id.to_string(),
                path: wt.path.clone(),
                branch: wt.branch.clone(),
                repo: wt.repo.clone(),
                worktree: if changed > 0 { "kept" } else { "would remove" },
                branch_result: if commits > 0 || changed > 0 || !wt.created_branch { "kept" } else { "would delete" },
                changed_files: changed,
                commits,
                error: None,
            });
        } else {
            released.push(release(home, id, &wt, false));
        }
    }
    Ok(released)
}

/// Delete the databases of instances that no longer exist (`live`: the ids that have a
/// record); never one whose instance exists.
pub fn delete_databases(home: &Home, live: &std::collections::HashSet<String>, dry_run: bool) -> Result<Vec<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(home.root().join("data")) else { return Ok(Vec::new()) };
    let mut deleted = Vec::new();
    for entry in entries.flatten() {
        let id = entry.file_name().to_string_lossy().into_owned();
        if live.contains(&id) || !crate::record::is_valid_id(&id) {
            continue;
        }
        if !dry_run {
            std::fs::remove_dir_all(entry.path())
                .with_context(|| format!("cannot delete {}", entry.path().display()))?;
        }
        deleted.push(entry.path());
    }
    Ok(deleted)
}
