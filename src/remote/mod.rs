//! Other hosts over ssh: named hosts, the `ssh` command ocx runs, the `ocx __remote` envelope
//! (arguments on stdin, a hello line back), and port forwards on the shared connection.
//!
//! ocx on this machine runs the system's `ssh` (so `~/.ssh/config`, agents, ProxyJump and keys
//! work as for any ssh command), in batch mode, sharing one connection per host (ControlMaster
//! with a private control path), and runs `ocx __remote` there. The command line on both
//! machines carries only that: the arguments, prompts and values travel on stdin.
//!
//! `hosts` names hosts, `ssh` builds the command line, `envelope` is the hello both ends
//! exchange, `call` runs a command there, `forward` reaches an instance's port.

mod call;
mod envelope;
mod forward;
mod hosts;
mod ssh;

use anyhow::Result;

use crate::home::Home;
use crate::record::{self, Record};

pub use envelope::accept;
pub use forward::{Endpoint, Forward, Tunnel, tunneled};
pub use hosts::{Address, Host, Hosts};

/// The records a command chooses from: this machine's, or the live ones of `host`.
pub fn records(home: &Home, host: Option<&Host>) -> Result<Vec<Record>> {
    match host {
        Some(host) => host.records(home),
        None => Ok(record::valid(&record::list(home)?)),
    }
}

/// Make `record` reachable from here: for an instance of a host, forward a local port to it
/// and point the record's URL there, for as long as the returned forward lives.
pub fn reach(home: &Home, host: Option<&Host>, record: &mut Record, own: bool) -> Result<Option<Forward>> {
    let Some(host) = host else { return Ok(None) };
    let forward = host.forward(home, record.port, own)?;
    record.url = forward.url();
    Ok(Some(forward))
}
