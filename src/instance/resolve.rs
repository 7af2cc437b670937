//! Resolving an instance the user may leave out: that needs to know which servers are alive,
//! so it lives here, above `record`'s resolving of what the user typed.

use anyhow::{Result, anyhow};

use crate::error::{Failure, code};
use crate::process::Processes;
use crate::record::{self, Record};

/// The record a command means when the user may leave the instance out: the named one, or
/// else the only one whose server is alive.
pub fn resolve_default<'a>(records: &'a [Record], query: Option<&str>) -> Result<&'a Record> {
    if let Some(query) = query {
        return record::resolve(records, query);
    }
    let table = Processes::of(&records.iter().map(|r| r.pid).collect::<Vec<_>>())?;
    // A remote host's records are the ones its ocx saw alive.
    let alive: Vec<&Record> =
        records.iter().filter(|r| r.remote.is_some() || table.find(&r.server()).is_some()).collect();
    match alive.as_slice() {
        [one] => Ok(one),
        [] => Err(anyhow!(Failure::new(code::NOT_FOUND, "no instance is running").hint("start one with `ocx start`"))),
        many => Err(anyhow!(
            Failure::new(code::NOT_FOUND, format!("{} instances are running; say which one", many.len()))
                .hint(format!("the instances are: {}", record::describe(many.iter().copied())))
        )),
    }
}
