//! `ocx attach`: hand the terminal to `opencode attach` on an instance.

use std::process::Command;

use anyhow::{Context, Result, anyhow};

use crate::cli::AttachArgs;
use crate::error::{Failure, code};
use crate::home::Home;
use crate::instance::{self, launch};
use crate::process;
use crate::remote::{self, Host};

/// With `host`, the instance is one of that host's, reached through a forwarded port, and the
/// opencode that attaches is this machine's.
pub fn run(home: &Home, args: AttachArgs, host: Option<&Host>) -> Result<()> {
    let records = remote::records(home, host)?;
    let mut r = instance::resolve::resolve_default(&records, args.instance.as_deref())?.clone();
    let _forward = remote::reach(home, host, &mut r, false)?;
    let binary = match (&args.opencode, host) {
        (Some(binary), _) => binary.clone(),
        (None, Some(_)) => launch::find_opencode(None)?,
        (None, None) => {
            instance::require_server(&r)?;
            r.opencode.path.clone()
        }
    };
    let mut cmd = Command::new(&binary);
    cmd.arg("attach").arg(&r.url).args(&args.extra);
    // Through the environment, never the command line, where `ps` shows it to every user.
    cmd.env(launch::USERNAME_VAR, &r.username);
    match &r.password {
        Some(password) => cmd.env(launch::PASSWORD_VAR, password),
        None => cmd.env_remove(launch::PASSWORD_VAR),
    };
    // Ctrl-C belongs to opencode now; ocx just waits for it.
    process::install_interrupt_handler();
    let status = cmd.status().with_context(|| format!("cannot run {}", binary.display()))?;
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(anyhow!(Failure::silent(u8::try_from(code).unwrap_or(code::FAILED)))),
        None => Err(anyhow!(Failure::silent(code::INTERRUPTED))),
    }
}
