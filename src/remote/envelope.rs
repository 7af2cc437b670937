//! The `ocx __remote` envelope, both ends: the request the calling ocx writes on the remote
//! command's stdin, and the hello the remote ocx answers with first; each side refuses an ocx
//! of another version.

use std::io::{BufRead, Read};

use anyhow::{Context, Result, anyhow};
use serde::{Deserialize, Serialize};

use crate::error::{Failure, code};
use crate::{output, process, record};

/// The version of the envelope: both sides must speak the same one.
pub const PROTOCOL: u32 = 1;

/// What `ocx __remote` reads on stdin: one JSON line.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    pub protocol: u32,
    pub version: String,
    pub schema: u32,
    /// The command line after `ocx`, as the user typed it here, without `--host`.
    pub args: Vec<String>,
    /// The host name to strip from `NAME:instance` arguments.
    #[serde(default)]
    pub strip_host: Option<String>,
}

/// What `ocx __remote` writes first on stdout, before the command's own output; also what
/// each side compares of the other (the envelope carries the same three).
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Hello {
    ocx: String,
    protocol: u32,
    schema: u32,
}

fn hello() -> Hello {
    Hello { ocx: env!("CARGO_PKG_VERSION").to_string(), protocol: PROTOCOL, schema: record::SCHEMA }
}

impl Envelope {
    /// The request for `ocx ARGS` there, from this ocx.
    pub(super) fn new(args: &[String], strip_host: Option<String>) -> Envelope {
        let me = hello();
        Envelope { protocol: me.protocol, version: me.ocx, schema: me.schema, args: args.to_vec(), strip_host }
    }
}

/// Read the remote ocx's hello, and refuse another version of ocx (or none).
pub(super) fn read_hello(out: &mut impl BufRead) -> Result<()> {
    let mut line = String::new();
    out.read_line(&mut line)?;
    let hello: Hello = serde_json::from_str(line.trim())
        .map_err(|_| anyhow!("its ocx does not speak ocx's remote protocol (missing, or older than this one)"))?;
    let mine = self::hello();
    if hello != mine {
        return Err(anyhow!(
            "its ocx is {} (records schema {}), this one is {} (schema {}): refusing to mix versions",
            hello.ocx,
            hello.schema,
            mine.ocx,
            mine.schema
        ));
    }
    Ok(())
}

/// `ocx __remote`: read the envelope, answer with a hello, and refuse a different version.
/// From then on, the end of stdin (the calling ocx or its ssh is gone) counts as Ctrl-C.
pub fn accept() -> Result<Envelope> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("cannot read the request")?;
    let envelope: Envelope = serde_json::from_str(line.trim())
        .map_err(|e| anyhow!(Failure::new(code::USAGE, format!("`ocx __remote` reads a request on stdin: {e}"))))?;
    let mine = hello();
    output::line(serde_json::to_string(&mine)?)?;
    let theirs = Hello { ocx: envelope.version.clone(), protocol: envelope.protocol, schema: envelope.schema };
    if theirs != mine {
        return Err(anyhow!(Failure::new(
            code::USAGE,
            format!("this host runs ocx {}, the caller ocx {}: refusing to mix versions", mine.ocx, envelope.version)
        )));
    }
    std::thread::spawn(|| {
        let mut rest = Vec::new();
        let _ = std::io::stdin().lock().read_to_end(&mut rest);
        process::interrupt_self();
    });
    Ok(envelope)
}
