//! Resolving what the user typed (an id, a unique id prefix, or a name) to one record, and
//! checking ids and names.

use anyhow::{Result, anyhow};

use super::{ID_LEN, Record};
use crate::error::{Failure, code};
use crate::token;

/// Whether `id` has the shape of an id ocx makes (see `new_id`).
pub fn is_valid_id(id: &str) -> bool {
    id.len() == ID_LEN && id.bytes().all(|b| token::ALPHABET.contains(&b))
}

/// Names are for humans and shells: letters, digits, `-`, `_`, `.`, starting with a letter
/// or digit, at most 64 characters.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(anyhow!(Failure::new(code::USAGE, format!("invalid name {name:?}")).hint(
            "names use letters, digits, '-', '_' and '.', start with a letter or digit, and have at most 64 characters"
        )))
    }
}

/// Find the one record `query` means: an exact id, an exact name, or a unique id prefix.
pub fn resolve<'a>(records: &'a [Record], query: &str) -> Result<&'a Record> {
    if let Some(r) = records.iter().find(|r| r.id == query) {
        return Ok(r);
    }
    if let Some(r) = records.iter().find(|r| r.name.as_deref() == Some(query)) {
        return Ok(r);
    }
    let matches: Vec<&Record> = records.iter().filter(|r| !query.is_empty() && r.id.starts_with(query)).collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(anyhow!(Failure::new(code::NOT_FOUND, format!("no instance matches {query:?}")).hint(
            if records.is_empty() {
                "there are no instances; start one with `ocx start`".to_string()
            } else {
                format!("the instances are: {}", describe(records.iter()))
            }
        ))),
        many => Err(anyhow!(
            Failure::new(
                code::NOT_FOUND,
                format!("{query:?} matches several instances: {}", describe(many.iter().copied()))
            )
            .hint("type more of the id, or use the name")
        )),
    }
}

/// `k3f9a2 (api), k3aa11`: the records as a hint lists them.
pub fn describe<'a>(records: impl Iterator<Item = &'a Record>) -> String {
    records
        .map(|r| match &r.name {
            Some(name) => format!("{} ({name})", r.id),
            None => r.id.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}
