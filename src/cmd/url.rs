//! `ocx url`: an instance's URL, optionally with its credentials, for curl and other clients.

use std::io::Write;

use anyhow::Result;

use crate::cli::UrlArgs;
use crate::home::Home;
use crate::record;

pub fn run(home: &Home, args: UrlArgs) -> Result<()> {
    let records = record::valid(&record::list(home)?);
    let r = record::resolve_default(&records, args.instance.as_deref())?;
    let url = match (&r.password, args.with_credentials) {
        (Some(password), true) => r.url.replacen("://", &format!("://{}:{password}@", r.username), 1),
        _ => r.url.clone(),
    };
    writeln!(std::io::stdout().lock(), "{url}")?;
    Ok(())
}
