//! The command that looks into an instance's git worktree (`ocx start --worktree`): diff.

use clap::Args;

/// Show what an instance's agent changed in its worktree, against the branch's base
///
/// The commits on the instance's branch plus its uncommitted and untracked changes, as `git
/// diff` prints them (colour on a terminal, paged where git pages). For instances started
/// with `ocx start --worktree`. Nothing in the worktree changes: untracked files are added to
/// a throw-away copy of git's index, never to the real one.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ocx diff api               the whole diff
  ocx diff api --stat        files and lines changed
  ocx diff api --name-only   just the files")]
pub struct DiffArgs {
    /// The instance [default: the only running one]
    pub instance: Option<String>,

    /// Only how many lines changed in each file
    #[arg(long, conflicts_with = "name_only")]
    pub stat: bool,

    /// Only the names of the files changed
    #[arg(long)]
    pub name_only: bool,
}
