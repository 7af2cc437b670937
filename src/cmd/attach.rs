//! `ocx attach`: hand the terminal to `opencode attach` on an instance.

use std::process::Command;

use anyhow::{Context, Result, anyhow};

use crate::cli::AttachArgs;
use crate::error::{Failure, code};
use crate::home::Home;
use crate::instance::{self, opencode, spawn};
use crate::process::{self, Signal};
use crate::remote::{self, Host};

/// With `host`, the instance is one of that host's, reached through a forwarded port, and the
/// opencode that attaches is this machine's.
pub fn run(home: &Home, args: AttachArgs, host: Option<&Host>) -> Result<()> {
    let records = remote::records(home, host)?;
    let mut r = instance::resolve::resolve_default(&records, args.instance.as_deref())?.clone();
    let _forward = remote::reach(home, host, &mut r, false)?;
    let binary = match (&args.opencode, host) {
        (Some(binary), _) => binary.clone(),
        (None, Some(_)) => opencode::find_opencode(None)?,
        (None, None) => {
            r = instance::serving::wait_serving(home, &r, None)?;
            r.opencode.path.clone()
        }
    };
    let mut cmd = Command::new(&binary);
    cmd.arg("attach").arg(&r.url).args(&args.extra);
    // Through the environment, never the command line, where `ps` shows it to every user.
    cmd.env(spawn::USERNAME_VAR, &r.username);
    match &r.password {
        Some(password) => cmd.env(spawn::PASSWORD_VAR, password),
        None => cmd.env_remove(spawn::PASSWORD_VAR),
    };
    // Ctrl-C belongs to opencode now (it shares the terminal); a SIGTERM or SIGHUP to ocx alone
    // is passed on, so the TUI never outlives the ocx that started it.
    process::install_interrupt_handler();
    let mut child = cmd.spawn().with_context(|| format!("cannot run {}", binary.display()))?;
    let mut passed_on = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        // 130 is Ctrl-C, which the TUI got itself (and may use).
        if process::interrupted() && process::interrupt_code() != 130 && !std::mem::replace(&mut passed_on, true) {
            process::signal_child(&child, Signal::Term);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    match status.code() {
        // Ended because ocx was (SIGTERM, SIGHUP passed on): 143, 129.
        _ if passed_on => Err(anyhow!(Failure::silent(code::INTERRUPTED))),
        Some(0) => Ok(()),
        Some(code) => Err(anyhow!(Failure::silent(u8::try_from(code).unwrap_or(code::FAILED)))),
        // Killed by the same Ctrl-C as ocx: 130.
        None if process::interrupted() => Err(anyhow!(Failure::silent(code::INTERRUPTED))),
        // Killed by a signal from elsewhere.
        None => Err(anyhow!(Failure::new(code::FAILED, "opencode attach was killed by a signal"))),
    }
}
