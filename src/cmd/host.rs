//! `ocx host`: the named hosts that `--host NAME` and `NAME:instance` reach over ssh.

use anyhow::{Result, anyhow};
use serde_json::json;

use crate::cli::{HostArgs, HostCommand};
use crate::error::{Failure, code};
use crate::output;
use crate::remote::{Address, Host, Hosts};

pub fn run(args: HostArgs) -> Result<()> {
    let mut hosts = Hosts::load()?;
    match args.command {
        HostCommand::Add { name, url, ocx } => {
            if name.is_empty() || name.contains([':', '/', '@']) || name.starts_with('-') || name == "local" {
                return Err(anyhow!(
                    Failure::new(code::USAGE, format!("invalid host name {name:?}"))
                        .hint("a name has no `:`, `/` or `@`, does not begin with `-`, and is not `local`")
                ));
            }
            Address::parse(&url)?;
            let url = if url.contains("://") { url } else { format!("ssh://{url}") };
            hosts.hosts.insert(name.clone(), Host { name: Some(name.clone()), url: url.clone(), ocx });
            hosts.save()?;
            output::note(format_args!("added host {name} ({url}); try `ocx --host {name} ls`"));
        }
        HostCommand::Ls { json } => {
            if json {
                let docs: Vec<_> =
                    hosts.hosts.values().map(|h| json!({"name": h.name, "url": h.url, "ocx": h.ocx})).collect();
                output::print_json(&serde_json::Value::Array(docs))?;
            } else {
                let mut table = output::table(["NAME", "URL", "OCX"]);
                for h in hosts.hosts.values() {
                    table.add_row(vec![h.label(), &h.url, h.ocx.as_deref().unwrap_or("ocx")]);
                }
                output::print_table(&mut table)?;
            }
        }
        HostCommand::Rm { names } => {
            let missing: Vec<&String> = names.iter().filter(|n| !hosts.hosts.contains_key(*n)).collect();
            if !missing.is_empty() {
                // Nothing is removed unless every name is known.
                return Err(anyhow!(
                    Failure::new(code::NOT_FOUND, format!("no host named {}", missing[0]))
                        .hint(format!("the hosts are listed in {}", hosts.path().display()))
                ));
            }
            for name in &names {
                hosts.hosts.remove(name);
            }
            hosts.save()?;
        }
    }
    Ok(())
}
