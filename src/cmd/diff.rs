//! `ocx diff`: what an instance's agent changed in its worktree, as git prints it.

use anyhow::{Result, anyhow};

use crate::cli::DiffArgs;
use crate::error::{Failure, code};
use crate::home::Home;
use crate::instance::resolve;
use crate::record;
use crate::worktree::{self, DiffStyle};

pub fn run(home: &Home, args: DiffArgs) -> Result<()> {
    let records = record::valid(&record::list(home)?);
    let record = resolve::resolve_default(&records, args.instance.as_deref())?;
    let Some(wt) = &record.worktree else {
        return Err(anyhow!(
            Failure::new(code::USAGE, format!("instance {} has no worktree of its own", record.label()))
                .hint("`ocx diff` is for instances started with `ocx start --worktree`; elsewhere use git diff")
        ));
    };
    if !wt.path.is_dir() {
        return Err(anyhow!(Failure::new(code::FAILED, format!("the worktree {} is gone", wt.path.display()))));
    }
    match worktree::diff(&wt.path, &wt.base, DiffStyle { stat: args.stat, name_only: args.name_only })? {
        0 => Ok(()),
        n => Err(anyhow!(Failure::silent(u8::try_from(n).unwrap_or(code::FAILED)))),
    }
}
