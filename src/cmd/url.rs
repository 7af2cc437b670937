//! `ocx url`: an instance's URL, optionally with its credentials, for curl and other clients.

use anyhow::Result;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use anyhow::anyhow;

use crate::cli::UrlArgs;
use crate::error::{Failure, code};
use crate::home::Home;
use crate::remote::{self, Host};
use crate::{instance, output, record};

/// What must be escaped in a URL's user info: everything but RFC 3986's unreserved characters
/// (a password with `@`, `:` or `/` would otherwise change where the URL points).
const USERINFO: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// An instance on another host has a URL here only while `ocx tunnel` forwards a port to it.
pub fn run(home: &Home, args: UrlArgs, host: Option<&Host>) -> Result<()> {
    let r = match host {
        Some(host) => remote::tunneled(home, host, args.instance.as_deref())?.ok_or_else(|| {
            let instance = args.instance.as_deref().unwrap_or("INSTANCE");
            anyhow!(
                Failure::new(code::NOT_FOUND, format!("no tunnel to {instance} on host {} is open", host.label()))
                    .hint(format!("open one with `ocx tunnel {}:{instance}` (it runs until Ctrl-C)", host.label()))
            )
        })?,
        None => {
            let records = record::valid(&record::list(home)?);
            let r = instance::resolve::resolve_default(&records, args.instance.as_deref())?;
            remote::Endpoint { url: r.url.clone(), username: r.username.clone(), password: r.password.clone() }
        }
    };
    let url = match (&r.password, args.with_credentials) {
        (Some(password), true) => with_credentials(&r.url, &r.username, password),
        _ => r.url.clone(),
    };
    output::line(url)?;
    Ok(())
}

fn with_credentials(url: &str, username: &str, password: &str) -> String {
    let userinfo = format!("{}:{}@", utf8_percent_encode(username, USERINFO), utf8_percent_encode(password, USERINFO));
    url.replacen("://", &format!("://{userinfo}"), 1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn credentials_are_percent_encoded() {
        assert_eq!(
            super::with_credentials("http://127.0.0.1:5", "opencode", "abc123"),
            "http://opencode:abc123@127.0.0.1:5"
        );
        assert_eq!(
            super::with_credentials("http://127.0.0.1:5", "a:b", "p@ss:w/rd?#%é"),
            "http://a%3Ab:p%40ss%3Aw%2Frd%3F%23%25%C3%A9@127.0.0.1:5"
        );
    }
}
