//! The opencode server's HTTP API, with the instance's credentials on every request.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use ureq::Agent;

use crate::base64;
use crate::record::Record;

/// An HTTP client for one server.
pub struct Client {
    agent: Agent,
    base: String,
    auth: Option<String>,
}

/// What `/global/health` answers.
#[derive(Debug, Clone, Deserialize)]
pub struct Health {
    pub healthy: bool,
    #[serde(default)]
    pub version: Option<String>,
}

impl Client {
    /// `timeout` bounds each whole request, from connecting to reading the body.
    pub fn new(base: &str, username: &str, password: Option<&str>, timeout: Duration) -> Client {
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            // The server is local or named explicitly: never route it through a proxy.
            .proxy(None)
            .timeout_global(Some(timeout))
            .build()
            .into();
        Client {
            agent,
            base: base.trim_end_matches('/').to_string(),
            auth: password.map(|p| format!("Basic {}", base64::encode(format!("{username}:{p}").as_bytes()))),
        }
    }

    pub fn for_record(record: &Record, timeout: Duration) -> Client {
        Client::new(&record.url, &record.username, record.password.as_deref(), timeout)
    }

    fn get(&self, path: &str) -> Result<ureq::http::Response<ureq::Body>> {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        if let Some(auth) = &self.auth {
            req = req.header("Authorization", auth);
        }
        req.call().with_context(|| format!("GET {}{path}", self.base))
    }

    /// `GET /global/health`, or `/api/health` on servers that only have that.
    pub fn health(&self) -> Result<Health> {
        let mut resp = self.get("/global/health")?;
        if resp.status() == 404 {
            resp = self.get("/api/health")?;
        }
        match resp.status().as_u16() {
            200 => resp.into_body().read_json().context("the health answer is not the expected JSON"),
            401 => bail!("the server refused ocx's credentials (401)"),
            status => bail!("the health check answered {status}"),
        }
    }
}
