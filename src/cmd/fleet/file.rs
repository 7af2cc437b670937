//! The fleet file, `ocx.toml`: finding it (the current directory or its nearest parent, as
//! Cargo finds Cargo.toml) and reading it into one `ocx start` command line per instance.
//!
//! A key is an `ocx start` long flag, and its value goes through `start`'s own clap parser:
//! every flag `start` has (and every one added later) is a key, with exactly `start`'s
//! checks, and nothing here lists them. Each key is parsed alone first, so that a bad value's
//! error names the file, the line and the key.

use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use clap::{CommandFactory, Parser};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::cli::{StartArgs, StartLine as Start};
use crate::error::{Failure, code};

/// The fleet file's name.
pub const FILE_NAME: &str = "ocx.toml";
/// `start` flags that are no key: the name is the table's, and `up` prints for itself.
const NOT_KEYS: [&str; 3] = ["name", "json", "help"];
/// The key for what `ocx start -- ARGS` passes to `opencode serve`.
const ARGS_KEY: &str = "args";

/// A fleet file, read and checked.
pub struct Fleet {
    /// The file, absolute and canonical: the project its instances record.
    pub path: PathBuf,
    pub tables: Vec<Table>,
}

/// One `[instances.NAME]` table.
pub struct Table {
    pub name: String,
    /// What `ocx start` would get for it (with `--dir` absolute).
    pub args: StartArgs,
}

impl Table {
    /// The names of its instances: the table's, or with `count = N` NAME-1 … NAME-N (as
    /// `ocx start --name NAME --count N` names them).
    pub fn names(&self) -> Vec<String> {
        match self.args.count {
            1 => vec![self.name.clone()],
            n => (1..=n).map(|i| format!("{}-{i}", self.name)).collect(),
        }
    }
}

/// The fleet file `explicit` names (a file, or a directory that has one), else the nearest
/// `ocx.toml` from the current directory up.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf> {
    let path = match explicit {
        Some(p) if p.is_dir() => p.join(FILE_NAME),
        Some(p) => p.to_path_buf(),
        None => {
            let cwd = std::env::current_dir().context("cannot read the current directory")?;
            match cwd.ancestors().map(|d| d.join(FILE_NAME)).find(|f| f.is_file()) {
                Some(found) => found,
                None => {
                    return Err(anyhow!(
                        Failure::new(
                            code::USAGE,
                            format!("no {FILE_NAME} in {} or any parent directory", cwd.display())
                        )
                        .hint("write one (see `ocx up --help`), or name it with -f FILE")
                    ));
                }
            }
        }
    };
    if !path.is_file() {
        return Err(anyhow!(Failure::new(code::USAGE, format!("the fleet file {} does not exist", path.display()))));
    }
    dunce::canonicalize(&path).with_context(|| format!("cannot resolve {}", path.display()))
}

/// Find and read the fleet file.
pub fn load(explicit: Option<&Path>) -> Result<Fleet> {
    let path = locate(explicit)?;
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let tables = parse(&path, &text)?;
    Ok(Fleet { path, tables })
}

/// Read a fleet file's text (`path`: the file, for errors and for `dir`).
pub fn parse(path: &Path, text: &str) -> Result<Vec<Table>> {
    let bad = |span: Option<Range<usize>>, what: String| -> anyhow::Error {
        let line = span.map_or(1, |s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        anyhow!(Failure::new(code::USAGE, format!("{}:{line}: {what}", path.display())).hint(
            "keys are `ocx start`'s long flags (`ocx start --help`), plus args = [\"…\"] for `opencode serve`; nothing was started"
        ))
    };
    let doc = DeTable::parse(text).map_err(|e| bad(e.span(), format!("not valid TOML: {}", e.message())))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut defaults: Option<&DeTable> = None;
    let mut instances: Option<(&DeTable, Range<usize>)> = None;
    for (key, value) in doc.get_ref() {
        let table = value.get_ref().as_table();
        match (key.get_ref().as_ref(), table) {
            ("defaults", Some(t)) => defaults = Some(t),
            ("instances", Some(t)) => instances = Some((t, key.span())),
            ("defaults" | "instances", None) => {
                return Err(bad(Some(key.span()), format!("{}: must be a table", key.get_ref())));
            }
            (other, _) => {
                return Err(bad(
                    Some(key.span()),
                    format!("{other}: unknown key (the file has [defaults] and [instances.NAME] tables)"),
                ));
            }
        }
    }
    let Some((instances, _)) = instances.filter(|(t, _)| !t.is_empty()) else {
        return Err(bad(None, "declares no instances: add an [instances.NAME] table".to_string()));
    };
    let defaults = match defaults {
        Some(d) => Some(words_of(d, base, &bad)?),
        None => None,
    };
    let mut tables = Vec::new();
    for (name, value) in instances {
        let Some(table) = value.get_ref().as_table() else {
            return Err(bad(Some(name.span()), format!("instances.{}: must be a table", name.get_ref())));
        };
        let name_str = name.get_ref().to_string();
        crate::record::check_name(&name_str)
            .map_err(|e| bad(Some(name.span()), format!("instances.{name_str}: {}", root_message(&e))))?;
        let mut keys = defaults.clone().unwrap_or_default();
        for (key, words) in words_of(table, base, &bad)? {
            keys.retain(|(k, _)| *k != key || key == "env");
            keys.push((key, words));
        }
        let mut line = vec!["start".to_string()];
        let mut extra = Vec::new();
        if !keys.iter().any(|(k, _)| k == "dir") {
            line.extend(["--dir".to_string(), base.display().to_string()]);
        }
        for (key, words) in keys {
            if key == ARGS_KEY { extra = words } else { line.extend(words) }
        }
        line.push("--".into());
        line.extend(extra);
        let args = Start::try_parse_from(&line)
            .map_err(|e| bad(Some(name.span()), format!("instances.{name_str}: {}", clap_message(&e))))?
            .args;
        tables.push(Table { name: name_str, args });
    }
    Ok(tables)
}

/// Each key of `table` as the words of `ocx start`'s command line, each checked alone.
fn words_of(
    table: &DeTable,
    base: &Path,
    bad: &impl Fn(Option<Range<usize>>, String) -> anyhow::Error,
) -> Result<Vec<(String, Vec<String>)>> {
    let command = Start::command();
    let mut out = Vec::new();
    for (key, value) in table {
        let k = key.get_ref().as_ref();
        let at = |what: String| bad(Some(key.span()), format!("{k}: {what}"));
        let arg = command.get_arguments().find(|a| a.get_long() == Some(k) && !NOT_KEYS.contains(&k));
        let words = match (k, arg) {
            (ARGS_KEY, _) => scalars(value).map_err(at)?,
            (_, None) => return Err(at("unknown key (`ocx start --help` lists the keys)".to_string())),
            (_, Some(arg)) => {
                let flag = !arg.get_action().takes_values();
                let long = format!("--{k}");
                let mut words = Vec::new();
                match value.get_ref() {
                    DeValue::Boolean(b) if flag => words.extend(b.then(|| long.clone())),
                    _ if flag => return Err(at("is true or false".to_string())),
                    DeValue::Table(env) if k == "env" => {
                        for (var, v) in env {
                            let v =
                                scalar(v).map_err(|w| bad(Some(var.span()), format!("env.{}: {w}", var.get_ref())))?;
                            words.extend([long.clone(), format!("{}={v}", var.get_ref())]);
                        }
                    }
                    _ => {
                        for v in scalars(value).map_err(at)? {
                            let v = if k == "dir" { base.join(v).display().to_string() } else { v };
                            words.extend([long.clone(), v]);
                        }
                    }
                }
                // Alone, so that an error is this key's.
                let mut alone = vec!["start".to_string()];
                alone.extend(words.iter().cloned());
                if let Err(e) = Start::try_parse_from(&alone) {
                    return Err(at(clap_message(&e)));
                }
                words
            }
        };
        out.push((k.to_string(), words));
    }
    Ok(out)
}

/// A string, number or boolean as the word it stands for; an array as one word per element.
fn scalars(value: &Spanned<DeValue>) -> Result<Vec<String>, String> {
    match value.get_ref() {
        DeValue::Array(items) => items.iter().map(scalar).collect(),
        _ => Ok(vec![scalar(value)?]),
    }
}

fn scalar(value: &Spanned<DeValue>) -> Result<String, String> {
    match value.get_ref() {
        DeValue::String(s) => Ok(s.to_string()),
        DeValue::Integer(i) if i.radix() == 10 => Ok(i.as_str().replace('_', "")),
        DeValue::Float(f) => Ok(f.as_str().replace('_', "")),
        DeValue::Boolean(b) => Ok(b.to_string()),
        other => Err(format!("a {} is not a value here", other.type_str())),
    }
}

/// A clap error's first line, without `error: `.
fn clap_message(err: &clap::Error) -> String {
    let text = err.to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

fn root_message(err: &anyhow::Error) -> String {
    err.to_string()
}

#[cfg(test)]
mod tests;
