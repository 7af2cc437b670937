//! `ocx doctor`: run every check of the setup (`crate::doctor`), print one line each (✓, or ✗
//! and what to do), and exit 1 when one the basics need failed.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use serde_json::json;

use crate::cli::DoctorArgs;
use crate::doctor::{self, Options};
use crate::error::{Failure, code};
use crate::output;

pub fn run(home: Option<&Path>, args: DoctorArgs) -> Result<()> {
    let dir = std::env::current_dir().context("cannot read the current directory")?;
    let checks = doctor::run(&Options { home: home.map(Path::to_path_buf), dir, hosts: args.hosts });
    let ok = checks.iter().all(|c| c.ok || !c.basic);
    if args.json {
        output::print_json(&json!({ "ok": ok, "checks": checks }))?;
    } else {
        let width = checks.iter().map(|c| c.check.len()).max().unwrap_or(0);
        for check in &checks {
            let mark = if check.ok { "✓" } else { "✗" };
            output::line(format_args!("{mark} {:width$}  {}", check.check, check.detail))?;
            if let Some(hint) = &check.hint {
                output::line(format_args!("  {:width$}  → {hint}", ""))?;
            }
        }
        let failed = checks.iter().filter(|c| !c.ok).count();
        let summary = match (ok, failed) {
            (true, 0) => "everything is fine".to_string(),
            (true, n) => format!("the basics are fine; {n} check(s) failed that only some commands need"),
            (false, _) => "something the basics need is wrong: see ✗ above".to_string(),
        };
        output::line(summary)?;
    }
    if ok { Ok(()) } else { Err(anyhow!(Failure::silent(code::FAILED))) }
}
