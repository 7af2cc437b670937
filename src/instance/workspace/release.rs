//! Removing what a start made, by the one rule (never lose work): for `stop`, for `gc` (the
//! worktrees of instances that are gone), and for a start that failed.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use serde::Serialize;

use super::{dir, marker_path};
use crate::home::Home;
use crate::record::Worktree;
use crate::{hooks, worktree as git};

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
            ("kept", kept) => {
                let branch_too =
                    if kept == "kept" { format!(" && git -C {repo} branch -D {branch}") } else { String::new() };
                Some(format!(
                    "kept worktree {path} (branch {branch}): {} file(s) changed; to throw them away: git -C {repo} worktree remove --force {path}{branch_too}",
                    self.changed_files
                ))
            }
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
                let _git = home.lock_git()?;
                git::remove(&wt.repo, &wt.path, discard)?;
            }
        }
    } else {
        // Its directory went (by hand, or a crash of `git worktree remove`): forget it in git too.
        let _git = home.lock_git()?;
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
                let _git = home.lock_git()?;
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
