//! Named hosts: `Host`, the `ssh://[user@]host[:port]` address it is reached at, and
//! `hosts.json`, where `ocx host add` keeps them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use serde::{Deserialize, Serialize};

use crate::error::{Failure, code};
use crate::home;
use crate::process;

/// A host to reach over ssh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    /// The name it was added under (`ocx host add NAME …`), if any.
    #[serde(skip)]
    pub name: Option<String>,
    pub url: String,
    /// The ocx binary on that host [default: `ocx` on its non-interactive PATH].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ocx: Option<String>,
}

/// `ssh://[user@]host[:port]`, taken apart.
#[derive(Debug, PartialEq, Eq)]
pub struct Address {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

impl Address {
    /// Parse `ssh://[user@]host[:port]` (or the same without `ssh://`). A host or user that
    /// begins with `-` is refused: ssh would take it for an option.
    pub fn parse(url: &str) -> Result<Address> {
        let bad = |why: &str| {
            anyhow!(
                Failure::new(code::USAGE, format!("invalid host {url:?}: {why}"))
                    .hint("write it as ssh://[user@]host[:port], or add it with `ocx host add NAME URL`")
            )
        };
        let rest = match url.split_once("://") {
            Some(("ssh", rest)) => rest,
            Some((scheme, _)) => return Err(bad(&format!("only ssh:// is supported, not {scheme}://"))),
            None => url,
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (user, hostport) = match rest.rsplit_once('@') {
            Some((user, hostport)) => (Some(user.to_string()), hostport),
            None => (None, rest),
        };
        let (host, port) = match hostport.strip_prefix('[') {
            // [v6]:port
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
                (host.to_string(), after.strip_prefix(':'))
            }
            None => match hostport.rsplit_once(':') {
                Some((host, port)) => (host.to_string(), Some(port)),
                None => (hostport.to_string(), None),
            },
        };
        let port = port.map(|p| p.parse::<u16>().map_err(|_| bad(&format!("{p:?} is not a port")))).transpose()?;
        // Only what names a host or a user: ssh hands these to a shell in some configurations
        // (ProxyCommand's %h and %r before OpenSSH 9.6), and a leading `-` would be an option.
        let plain = |s: &str, extra: &[char]| {
            !s.is_empty()
                && !s.starts_with('-')
                && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c) || extra.contains(&c))
        };
        let v6 = hostport.starts_with('[');
        if !plain(&host, if v6 { &[':', '%'] } else { &[] }) {
            return Err(bad("no host name, or one with characters a host name does not have"));
        }
        if user.as_deref().is_some_and(|u| !plain(u, &[])) {
            return Err(bad("a user name with characters ocx does not pass to ssh (no password in the URL: use keys)"));
        }
        Ok(Address { user, host, port })
    }
}

impl Host {
    /// How the host is shown: its name, else its URL.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.url)
    }
}

/// The named hosts, in `<config dir>/ocx/hosts.json` (0600).
pub struct Hosts {
    path: PathBuf,
    pub hosts: BTreeMap<String, Host>,
}

impl Hosts {
    /// The named hosts (none when there is no `hosts.json` yet).
    pub fn load() -> Result<Hosts> {
        let path = dirs::config_dir()
            .context("cannot tell where this system keeps configuration; set XDG_CONFIG_HOME")?
            .join("ocx")
            .join("hosts.json");
        let hosts: BTreeMap<String, Host> = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("cannot read {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let hosts = hosts
            .into_iter()
            .map(|(name, mut host)| {
                host.name = Some(name.clone());
                (name, host)
            })
            .collect();
        Ok(Hosts { path, hosts })
    }

    /// Write `hosts.json` atomically, in a private directory.
    pub fn save(&self) -> Result<()> {
        let dir = self.path.parent().expect("hosts.json has a directory");
        process::create_private_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        home::write_atomic(&self.path, format!("{}\n", serde_json::to_string_pretty(&self.hosts)?).as_bytes())
    }

    /// Where the hosts are kept.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// A host by name, or a URL given in place of one.
    pub fn find(&self, name_or_url: &str) -> Result<Host> {
        if let Some(host) = self.hosts.get(name_or_url) {
            return Ok(host.clone());
        }
        if name_or_url.contains("://") || name_or_url.contains('@') {
            Address::parse(name_or_url)?;
            // A named host's URL: that host, with its --ocx.
            if let Some(host) = self.hosts.values().find(|h| h.url == name_or_url) {
                return Ok(host.clone());
            }
            return Ok(Host { name: None, url: name_or_url.to_string(), ocx: None });
        }
        Err(anyhow!(Failure::new(code::NOT_FOUND, format!("no host named {name_or_url:?}")).hint(
            if self.hosts.is_empty() {
                "add one with `ocx host add NAME ssh://[user@]box[:port]`, or give a URL".to_string()
            } else {
                format!("the hosts are: {}", self.hosts.keys().cloned().collect::<Vec<_>>().join(", "))
            }
        )))
    }

    /// `NAME:instance` → the host NAME and `instance`, when NAME is a host.
    pub fn split<'a>(&self, query: &'a str) -> Option<(Host, &'a str)> {
        let (name, instance) = query.split_once(':')?;
        self.hosts.get(name).map(|h| (h.clone(), instance))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let a = Address::parse("ssh://me@box.example:2222").unwrap();
        assert_eq!(a, Address { user: Some("me".into()), host: "box.example".into(), port: Some(2222) });
        assert_eq!(Address::parse("box").unwrap(), Address { user: None, host: "box".into(), port: None });
        assert_eq!(Address::parse("ssh://[::1]:22/").unwrap().host, "::1");
        for bad in [
            "ssh://-oProxyCommand=x",
            "http://box",
            "ssh://me@",
            "ssh://box:port",
            "ssh://-l@box",
            "a b",
            "ssh://me:secret@box",
            "ssh://box$(touch x)",
            "ssh://`x`@box",
        ] {
            let err = Address::parse(bad).unwrap_err();
            assert_eq!(crate::error::code_of(&err), code::USAGE, "{bad}");
        }
    }
}
