//! `ocx doctor`'s checks of the whole setup: each a small function that returns one `Check`
//! (✓, or ✗ with what to do), and none of them changes anything — no home is created, no
//! version remembered, no record moved.

mod model;
mod state;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde::Serialize;

use crate::home::Home;
use crate::instance::{install, opencode};
use crate::process;

/// The outcome of one check.
#[derive(Debug, Serialize)]
pub struct Check {
    /// What was checked: `opencode`, `model`, `home`, `records`, `ports`, `ssh`, `hosts`,
    /// `service`, `git`.
    pub check: &'static str,
    pub ok: bool,
    /// Needed for the basics (start an instance, send it a prompt): a failed one makes
    /// `doctor` exit 1. The others are needed only by the commands they name.
    pub basic: bool,
    /// What was found, in one line.
    pub detail: String,
    /// For a failed check: what to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Check {
    fn pass(check: &'static str, basic: bool, detail: impl Into<String>) -> Check {
        Check { check, ok: true, basic, detail: detail.into(), hint: None }
    }

    fn fail(check: &'static str, basic: bool, detail: impl Into<String>, hint: impl Into<String>) -> Check {
        Check { check, ok: false, basic, detail: detail.into(), hint: Some(hint.into()) }
    }
}

/// What to check.
pub struct Options {
    /// `--home` / `$OCX_HOME`.
    pub home: Option<PathBuf>,
    /// The directory whose model is checked.
    pub dir: PathBuf,
    /// Also reach every named host.
    pub hosts: bool,
}

/// Every check, in the order they are shown.
pub fn run(options: &Options) -> Vec<Check> {
    let home = Home::existing(options.home.as_deref());
    let mut checks = vec![opencode(home.as_ref()), model::check(home.as_ref(), &options.dir)];
    checks.extend(state::home(options.home.as_deref()));
    if let Some(home) = &home {
        checks.push(state::records(home));
        checks.push(state::ports(home));
    }
    checks.push(ssh());
    if options.hosts {
        checks.extend(state::hosts(options.home.as_deref()));
    }
    checks.push(service());
    checks.push(git());
    checks
}

/// opencode found (where, which version), and of a major version ocx speaks.
fn opencode(home: Option<&Home>) -> Check {
    let basic = true;
    let found = match opencode::locate(None) {
        Ok(Some(found)) => found,
        Ok(None) => {
            return Check::fail(
                "opencode",
                basic,
                "not found: OCX_OPENCODE is unset, none on PATH, none in ~/.opencode/bin, none installed by ocx",
                format!(
                    "`ocx install-opencode` installs {} into {} (or `ocx start` offers it)",
                    opencode::TESTED,
                    install::dir(opencode::TESTED).map_or("ocx's cache directory".into(), |d| d.display().to_string())
                ),
            );
        }
        Err(err) => return Check::fail("opencode", basic, format!("{err:#}"), opencode::INSTALL_HINT),
    };
    let (binary, source) = found;
    let at = format!("{} ({})", binary.display(), source.describe());
    match opencode::known_version(home, &binary) {
        Some(v) if opencode::is_supported(&v) => Check::pass("opencode", basic, format!("opencode {v} at {at}")),
        Some(v) => {
            let own = install::installed().filter(|_| !source.explicit());
            match own {
                // `ocx start` uses ocx's own install instead of one on PATH it cannot speak to.
                Some(own) => Check::pass(
                    "opencode",
                    basic,
                    format!(
                        "opencode {v} at {at} is not supported; ocx uses its own {} at {}",
                        opencode::TESTED,
                        own.display()
                    ),
                ),
                None => Check::fail(
                    "opencode",
                    basic,
                    format!(
                        "opencode {v} at {at} is not supported: ocx speaks opencode {}.x (tested with {})",
                        opencode::SUPPORTED_MAJOR,
                        opencode::TESTED
                    ),
                    match install::installed() {
                        Some(own) => format!(
                            "unset OCX_OPENCODE: ocx then uses its own {} at {}",
                            opencode::TESTED,
                            own.display()
                        ),
                        None => format!(
                            "`ocx install-opencode` installs {} for ocx alone{}",
                            opencode::TESTED,
                            if source.explicit() { ", then unset OCX_OPENCODE" } else { "" }
                        ),
                    },
                ),
            }
        }
        None => Check::pass("opencode", basic, format!("{at}, version unknown (`--version` said none within 10 s)")),
    }
}

/// The first word of `$OCX_SSH`, else `ssh`, and what `ssh -V` says.
fn ssh() -> Check {
    let program = std::env::var("OCX_SSH")
        .ok()
        .and_then(|s| shlex::split(&s))
        .and_then(|w| w.into_iter().next())
        .unwrap_or_else(|| "ssh".into());
    match which::which(&program) {
        Ok(path) => {
            let said = process::output_within(Command::new(&path).arg("-V"), Duration::from_secs(3))
                .map(|(_, out)| out.lines().next().unwrap_or("").trim().to_string())
                .filter(|s| !s.is_empty());
            Check::pass("ssh", false, format!("{} ({})", path.display(), said.as_deref().unwrap_or("for --host")))
        }
        Err(_) => Check::fail(
            "ssh",
            false,
            format!("{program} is not on PATH: --host and `ocx host` cannot reach other machines"),
            "install an OpenSSH client (Debian: `apt-get install openssh-client`), or set OCX_SSH",
        ),
    }
}

/// What `ocx service install` would hand instances to.
fn service() -> Check {
    let found = process::service_manager();
    match found.hint {
        Some(hint) if !found.ok => {
            Check::fail("service", false, format!("{} (for `ocx service install`)", found.detail), hint)
        }
        _ => Check::pass("service", false, found.detail),
    }
}

/// git, for `--worktree`.
fn git() -> Check {
    match which::which("git") {
        Ok(path) => {
            let said = process::output_within(Command::new(&path).arg("--version"), Duration::from_secs(3))
                .map(|(_, out)| out.trim().to_string())
                .unwrap_or_default();
            Check::pass("git", false, format!("{said} at {}", path.display()))
        }
        Err(_) => Check::fail(
            "git",
            false,
            "git is not on PATH (for --worktree)",
            "install git (Debian: `apt-get install git`)",
        ),
    }
}
