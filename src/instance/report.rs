//! What the watcher tells the ocx that spawned it (`start`, `restart`): one JSON line each on
//! its stdout, until the server is healthy or has failed. Both ends import it from here.

use serde::{Deserialize, Serialize};

use crate::process::ProcId;

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Report {
    /// The server runs, as this process.
    Spawned(ProcId),
    /// It answered its health check.
    Ready { version: Option<String> },
    /// It exited before it was healthy; the watcher exits too.
    Exited { status: String },
    /// It could not be started at all; the watcher exits.
    Failed { error: String },
}
