//! Reaching a host's instance from here: port forwards over ssh (`Forward`), and the files of
//! running `ocx tunnel`s that let `ocx url HOST:INSTANCE` find theirs (`Tunnel`, `tunneled`).

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use serde::{Deserialize, Serialize};

use super::hosts::Host;
use super::ssh::CONNECT_TIMEOUT_S;
use crate::error::{Failure, code};
use crate::home::{self, Home};
use crate::process;
use crate::record::Record;

impl Host {
    /// Forward a free port on this machine's loopback to `remote_port` on the host's loopback,
    /// on the shared connection, until the `Forward` is dropped.
    ///
    /// `own`: on a connection of its own, which lives exactly as long as the forward (for
    /// `tunnel`: a shared connection closes 60 s after its last command even while a forward
    /// on it listens).
    pub fn forward(&self, home: &Home, remote_port: u16, own: bool) -> Result<Forward> {
        let mut last = None;
        for _ in 0..5 {
            let local_port = process::free_port("127.0.0.1", process::instance_ports(), &[])?;
            let spec = format!("127.0.0.1:{local_port}:127.0.0.1:{remote_port}");
            let mut cmd = self.ssh(home, own)?;
            if process::ssh_shares_connections() && !own {
                // Through the shared connection: the forward lives in it, until cancelled.
                cmd.args(["-O", "forward", "-L", &spec]);
                let out = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).output()?;
                if out.status.success() {
                    return Ok(Forward { host: self.clone(), home: home.clone(), spec, local_port, child: None });
                }
                last = Some(String::from_utf8_lossy(&out.stderr).trim().to_string());
            } else {
                cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-L", &spec]);
                let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
                let mut forward =
                    Forward { host: self.clone(), home: home.clone(), spec, local_port, child: Some(child) };
                if forward.wait_listening()? {
                    return Ok(forward);
                }
                last = Some("ssh could not open the forward".into());
            }
        }
        Err(anyhow!(
            Failure::new(
                code::FAILED,
                format!("cannot forward a port to host {}: {}", self.label(), last.unwrap_or_default())
            )
            .hint("the shared ssh connection must allow port forwarding (AllowTcpForwarding on the host)")
        ))
    }
}

/// A local port forwarded to an instance's port on a host. Cancelled when dropped.
pub struct Forward {
    host: Host,
    home: Home,
    spec: String,
    local_port: u16,
    child: Option<Child>,
}

impl Forward {
    /// The local URL that reaches the instance.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.local_port)
    }

    /// Whether the forward still stands (its own ssh still runs).
    pub fn alive(&mut self) -> bool {
        self.child.as_mut().is_none_or(|c| c.try_wait().is_ok_and(|s| s.is_none()))
    }

    fn wait_listening(&mut self) -> Result<bool> {
        let deadline = Instant::now() + Duration::from_secs(u64::from(CONNECT_TIMEOUT_S) + 5);
        let child = self.child.as_mut().expect("a forward of its own");
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                return Ok(false);
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.local_port)).is_ok() {
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(false)
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        match self.child.as_mut() {
            Some(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            None => {
                if let Ok(mut cmd) = self.host.ssh(&self.home, false) {
                    cmd.args(["-O", "cancel", "-L", &self.spec]);
                    let _ = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status();
                }
            }
        }
    }
}

/// While `ocx tunnel` runs: a file under the home that says where the forward is, so that
/// `ocx url HOST:INSTANCE` can print it. Removed when dropped.
pub struct Tunnel {
    path: PathBuf,
}

/// What a tunnel file holds.
#[derive(Serialize, Deserialize)]
struct TunnelFile {
    host: String,
    id: String,
    name: Option<String>,
    url: String,
    username: String,
    password: Option<String>,
    /// The `ocx tunnel` process: the file counts only while it lives.
    tunnel: process::ProcId,
}

fn tunnels_dir(home: &Home) -> PathBuf {
    home.root().join("tunnels")
}

impl Tunnel {
    pub fn open(home: &Home, host: &Host, record: &Record) -> Result<Tunnel> {
        let dir = tunnels_dir(home);
        process::create_private_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let me = process::Processes::of(&[std::process::id()])?
            .get(std::process::id())
            .context("cannot read this process's start time")?
            .id();
        let file = TunnelFile {
            host: host.url.clone(),
            id: record.id.clone(),
            name: record.name.clone(),
            url: record.url.clone(),
            username: record.username.clone(),
            password: record.password.clone(),
            tunnel: me,
        };
        let path = dir.join(format!("{}.{}.json", record.id, std::process::id()));
        home::write_atomic(&path, serde_json::to_string(&file)?.as_bytes())?;
        Ok(Tunnel { path })
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Where an open tunnel reaches an instance, and its credentials.
pub struct Endpoint {
    pub url: String,
    pub username: String,
    pub password: Option<String>,
}

/// Where `query` on `host` is reached through an `ocx tunnel` that is running, if one is.
/// Files of tunnels that are gone are removed.
pub fn tunneled(home: &Home, host: &Host, query: Option<&str>) -> Result<Option<Endpoint>> {
    let Ok(entries) = std::fs::read_dir(tunnels_dir(home)) else { return Ok(None) };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Ok(file) = std::fs::read(entry.path())
            .map_err(anyhow::Error::from)
            .and_then(|b| serde_json::from_slice::<TunnelFile>(&b).map_err(anyhow::Error::from))
        else {
            continue;
        };
        if process::Processes::of(&[file.tunnel.pid])?.find(&file.tunnel).is_none() {
            let _ = std::fs::remove_file(entry.path());
            continue;
        }
        if file.host == host.url {
            found.push(file);
        }
    }
    // As instances are named: the id, the name, or a unique id prefix; none → the only one.
    let exact = found.iter().position(|f| query.is_some_and(|q| f.id == q || f.name.as_deref() == Some(q)));
    let prefixed: Vec<usize> = (0..found.len()).filter(|&i| query.is_none_or(|q| found[i].id.starts_with(q))).collect();
    let chosen = exact.or(match prefixed.as_slice() {
        [one] => Some(*one),
        _ => None,
    });
    Ok(chosen.map(|i| found.swap_remove(i)).map(|f| Endpoint {
        url: f.url,
        username: f.username,
        password: f.password,
    }))
}
