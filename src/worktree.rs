//! Git worktrees over the system's `git` (what the user's repository already works with): small
//! functions, each named for what it does, that report facts. Whether to create, keep or remove
//! is decided by their callers (`instance::workspace`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, anyhow};

use crate::error::{Failure, code};

/// `git -C dir ARGS`, with git's environment variables that would point it at another
/// repository taken out (ocx may itself run from a git hook).
fn git(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.arg("-C").arg(dir);
    for var in ["GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR"] {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null());
    cmd
}

fn output(mut cmd: Command) -> Result<Output> {
    cmd.output().map_err(|e| {
        anyhow!(Failure::new(code::FAILED, format!("cannot run git: {e}")).hint("--worktree needs git on PATH"))
    })
}

/// Run git; its trimmed stdout, or an error with its stderr.
fn run(cmd: Command, what: &str) -> Result<String> {
    let out = output(cmd)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(anyhow!("{what}: {stderr}"));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The top of the working tree `dir` is in, and `dir`'s path below it; an error with a hint
/// when `dir` is in no git repository.
pub fn toplevel(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let mut cmd = git(dir);
    cmd.args(["rev-parse", "--show-toplevel", "--show-prefix"]);
    let out = output(cmd)?;
    if !out.status.success() {
        return Err(anyhow!(
            Failure::new(code::FAILED, format!("{} is not in a git repository", dir.display()))
                .hint("--worktree needs a git repository: run `git init` and commit, or give --dir of one")
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    let top = PathBuf::from(lines.next().unwrap_or_default());
    let prefix = PathBuf::from(lines.next().unwrap_or_default());
    Ok((top, prefix))
}

/// The commit `rev` names in `repo`, if it names one.
pub fn commit_of(repo: &Path, rev: &str) -> Option<String> {
    let mut cmd = git(repo);
    cmd.args(["rev-parse", "--verify", "--quiet", "--end-of-options", &format!("{rev}^{{commit}}")]);
    output(cmd).ok().filter(|o| o.status.success()).map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// Whether `repo` has any commit at all (a fresh `git init` has none).
pub fn has_commits(repo: &Path) -> bool {
    let mut cmd = git(repo);
    cmd.args(["rev-list", "-n", "1", "--all"]);
    output(cmd).is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
}

/// Whether `name` is a valid branch name.
pub fn is_valid_branch(repo: &Path, name: &str) -> bool {
    let mut cmd = git(repo);
    cmd.args(["check-ref-format", "--branch", name]).stdout(Stdio::null());
    output(cmd).is_ok_and(|o| o.status.success())
}

/// Whether the local branch `name` exists.
pub fn branch_exists(repo: &Path, name: &str) -> bool {
    let mut cmd = git(repo);
    cmd.args(["show-ref", "--verify", "--quiet", &format!("refs/heads/{name}")]);
    output(cmd).is_ok_and(|o| o.status.success())
}

/// Where the local branch `name` is checked out, if anywhere.
pub fn checked_out_at(repo: &Path, name: &str) -> Option<PathBuf> {
    let listing = list(repo).ok()?;
    listing.into_iter().find(|w| w.branch.as_deref() == Some(name)).map(|w| w.path)
}

/// A new worktree at `path` on a new branch `branch`, starting at `base` (a commit).
pub fn add_on_new_branch(repo: &Path, path: &Path, branch: &str, base: &str) -> Result<()> {
    let mut cmd = git(repo);
    cmd.args(["worktree", "add", "--quiet", "-b", branch]).arg(path).arg(base);
    run(cmd, "git worktree add").map(drop)
}

/// A new worktree at `path` on the existing branch `branch` (git refuses one checked out elsewhere).
pub fn add_on_branch(repo: &Path, path: &Path, branch: &str) -> Result<()> {
    let mut cmd = git(repo);
    cmd.args(["worktree", "add", "--quiet"]).arg(path).arg(branch);
    run(cmd, "git worktree add").map(drop)
}

/// How many files in the worktree at `path` are changed, staged or untracked (ignored files
/// do not count: they are build output, `node_modules`).
pub fn changed_files(path: &Path) -> Result<usize> {
    let mut cmd = git(path);
    cmd.args(["status", "--porcelain", "--untracked-files=all"]);
    Ok(run(cmd, "git status")?.lines().filter(|l| !l.is_empty()).count())
}

/// How many commits `branch` has that `base` does not.
pub fn commits_beyond(repo: &Path, branch: &str, base: &str) -> Result<usize> {
    let mut cmd = git(repo);
    cmd.args(["rev-list", "--count", &format!("{base}..refs/heads/{branch}")]);
    run(cmd, "git rev-list")?.parse().context("git rev-list --count printed no number")
}

/// Remove the worktree at `path` (`force`: also with changes, which are lost).
pub fn remove(repo: &Path, path: &Path, force: bool) -> Result<()> {
    let mut cmd = git(repo);
    cmd.args(["worktree", "remove"]);
    if force {
        // Twice: also a worktree git has locked.
        cmd.args(["--force", "--force"]);
    }
    cmd.arg(path);
    run(cmd, "git worktree remove").map(drop)
}

/// Delete the local branch `name`, whatever it holds (the caller checked).
pub fn delete_branch(repo: &Path, name: &str) -> Result<()> {
    let mut cmd = git(repo);
    cmd.args(["branch", "--quiet", "-D", name]);
    run(cmd, "git branch -D").map(drop)
}

/// Forget worktrees whose directory is gone.
pub fn prune(repo: &Path) -> Result<()> {
    let mut cmd = git(repo);
    cmd.args(["worktree", "prune"]);
    run(cmd, "git worktree prune").map(drop)
}

/// One entry of `git worktree list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub path: PathBuf,
    pub branch: Option<String>,
}

/// The worktrees git knows of for `repo` (the main one first).
pub fn list(repo: &Path) -> Result<Vec<Listed>> {
    let mut cmd = git(repo);
    cmd.args(["worktree", "list", "--porcelain"]);
    let text = run(cmd, "git worktree list")?;
    let mut listed = Vec::new();
    for line in text.lines() {
        if let Some(path) = line.strip_prefix("worktree ") {
            listed.push(Listed { path: PathBuf::from(path), branch: None });
        } else if let Some(branch) = line.strip_prefix("branch refs/heads/")
            && let Some(last) = listed.last_mut()
        {
            last.branch = Some(branch.to_string());
        }
    }
    Ok(listed)
}

/// Whether git has a worktree registered at `path`.
pub fn is_registered(repo: &Path, path: &Path) -> bool {
    let want = dunce::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    list(repo).is_ok_and(|l| l.iter().any(|w| w.path == path || w.path == want))
}

/// What `git diff` should show of a worktree.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiffStyle {
    pub stat: bool,
    pub name_only: bool,
}

/// Show what changed in the worktree at `path` since `base`: its commits, uncommitted and
/// untracked files, as `git diff` prints it (colour and pager as git decides, on ocx's own
/// stdout). Untracked files are added to a throw-away copy of the index, never to the real one,
/// so the diff changes nothing the agent or user sees. Returns git's exit code.
pub fn diff(path: &Path, base: &str, style: DiffStyle) -> Result<i32> {
    let git_index = run(
        {
            let mut cmd = git(path);
            cmd.args(["rev-parse", "--path-format=absolute", "--git-path", "index"]);
            cmd
        },
        "git rev-parse",
    )?;
    let scratch = tempfile_in_git_dir(Path::new(&git_index))?;
    if Path::new(&git_index).exists() {
        std::fs::copy(&git_index, &scratch).with_context(|| format!("cannot copy {git_index}"))?;
    }
    let result = (|| {
        let mut add = git(path);
        add.env("GIT_INDEX_FILE", &scratch).args(["add", "--all", "--", "."]);
        run(add, "git add (to a scratch index)")?;
        let mut show = git(path);
        show.env("GIT_INDEX_FILE", &scratch).args(["diff", "--cached"]);
        if style.stat {
            show.arg("--stat");
        }
        if style.name_only {
            show.arg("--name-only");
        }
        show.arg(base).arg("--").stdin(Stdio::inherit());
        let status = show.status().context("cannot run git diff")?;
        Ok(status.code().unwrap_or(1))
    })();
    let _ = std::fs::remove_file(&scratch);
    result
}

fn tempfile_in_git_dir(index: &Path) -> Result<PathBuf> {
    let dir = index.parent().context("the index has no directory")?;
    Ok(dir.join(format!("ocx-diff-index-{}", crate::token::random(8))))
}
