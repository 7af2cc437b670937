//! The `ssh` command line ocx runs: its options, the shared connection's control socket, and
//! the remote command (`ocx __remote`, quoted for the host's shell).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Result, anyhow};

use super::hosts::{Address, Host};
use crate::error::{Failure, code};
use crate::home::Home;
use crate::process;

/// How long ssh may take to connect (`ConnectTimeout`).
pub(super) const CONNECT_TIMEOUT_S: u32 = 10;
/// How often ssh asks the host whether it is still there on a quiet connection
/// (`ServerAliveInterval`), and after how many unanswered asks it gives up
/// (`ServerAliveCountMax`): a dead link ends `logs -f` and `events` in about a minute.
const ALIVE_INTERVAL_S: u32 = 15;
const ALIVE_COUNT: u32 = 3;
/// How long an idle shared connection stays open after its last command.
const PERSIST_S: u32 = 60;
/// ssh's own exit code for its own failures (connection, authentication, forwarding).
pub(super) const SSH_FAILED: i32 = 255;

impl Host {
    /// `ssh` with ocx's options and the destination, ready for a remote command or `-O`;
    /// on the host's shared connection unless `own` (ssh takes the first value of an option).
    pub(super) fn ssh(&self, home: &Home, own: bool) -> Result<Command> {
        let address = Address::parse(&self.url)?;
        let words = match std::env::var("OCX_SSH").ok().filter(|s| !s.trim().is_empty()) {
            // A path, also one with spaces or backslashes (Windows): as it is.
            Some(s) if std::path::Path::new(&s).is_file() => vec![s],
            Some(s) => shlex::split(&s)
                .filter(|w| !w.is_empty())
                .ok_or_else(|| anyhow!(Failure::new(code::USAGE, format!("cannot split OCX_SSH={s:?} into words"))))?,
            None => vec!["ssh".to_string()],
        };
        let mut cmd = Command::new(&words[0]);
        cmd.args(&words[1..]);
        cmd.args(["-o", "BatchMode=yes", "-o", &format!("ConnectTimeout={CONNECT_TIMEOUT_S}")]);
        cmd.args(["-o", &format!("ServerAliveInterval={ALIVE_INTERVAL_S}")]);
        cmd.args(["-o", &format!("ServerAliveCountMax={ALIVE_COUNT}")]);
        if own {
            cmd.args(["-o", "ControlMaster=no", "-o", "ControlPath=none"]);
        } else if process::ssh_shares_connections() {
            let path = control_dir(home)?.join("%C").display().to_string().replace('%', "%%").replace("%%C", "%C");
            cmd.args(["-o", "ControlMaster=auto", "-o", &format!("ControlPersist={PERSIST_S}")]);
            cmd.arg("-o").arg(format!("ControlPath=\"{path}\""));
        }
        if let Some(port) = address.port {
            cmd.args(["-p", &port.to_string()]);
        }
        if let Some(user) = &address.user {
            cmd.args(["-l", user]);
        }
        cmd.arg(&address.host);
        Ok(cmd)
    }

    /// The remote command: the host's ocx, quoted for its shell, and `__remote`.
    pub(super) fn remote_command(&self) -> Result<String> {
        let ocx = self.ocx.as_deref().unwrap_or("ocx");
        // `~/…` is the remote user's home: the shell expands the `~/` left unquoted.
        let (tilde, rest) = match ocx.strip_prefix("~/") {
            Some(rest) => ("~/", rest),
            None => ("", ocx),
        };
        let quoted = shlex::try_quote(rest).map_err(|_| anyhow!("cannot quote the ocx path {ocx:?} for a shell"))?;
        Ok(format!("{tilde}{quoted} __remote"))
    }
}

/// The control sockets of shared connections: private, under the home, or in a short
/// directory of the user's when the home's path is too long for a socket's.
fn control_dir(home: &Home) -> Result<PathBuf> {
    // ssh names a socket `%C` (40 bytes) and, while it creates it, adds 17 more.
    process::socket_dir(&home.root().join("ssh"), "ssh", 40 + 17).map_err(|e| {
        anyhow!(Failure::new(code::FAILED, format!("no private directory for ssh's control sockets: {e}")).hint(
            "ocx makes that directory itself, for you alone: remove what is there (another user may have put \
             it there), or use a shorter OCX_HOME"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_remote_command_is_quoted() {
        let host = Host { name: None, url: "box".into(), ocx: Some("/opt/my ocx/$(x)".into()) };
        assert_eq!(host.remote_command().unwrap(), "'/opt/my ocx/$(x)' __remote");
        let home = Host { ocx: Some("~/.cargo/bin/ocx".into()), ..host };
        assert_eq!(home.remote_command().unwrap(), "~/.cargo/bin/ocx __remote");
    }

    #[test]
    fn every_ssh_has_keepalives_and_a_shared_one_a_control_socket() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(Some(dir.path())).unwrap();
        let host = Host { name: None, url: "ssh://me@box:2222".into(), ocx: None };
        for own in [false, true] {
            let cmd = host.ssh(&home, own).unwrap();
            let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
            let line = args.join(" ");
            assert!(line.contains("-o ServerAliveInterval=15 -o ServerAliveCountMax=3"), "{line}");
            let socket = args.iter().any(|a| a.starts_with("ControlPath=\"") && a.ends_with("/%C\""));
            assert_eq!(socket, !own && process::ssh_shares_connections(), "{line}");
        }
    }
}
