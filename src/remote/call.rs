//! Calls to a host's ocx: `passthrough` (its output and exit code become this ocx's), `json`
//! (a `--json` command's answer, parsed), and the host's live records built on it.

use std::io::{BufReader, Read, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use serde_json::Value;

use super::envelope::{Envelope, read_hello};
use super::hosts::Host;
use super::ssh::SSH_FAILED;
use crate::error::{Failure, code};
use crate::home::Home;
use crate::record::Record;
use crate::{output, process};

impl Host {
    /// Start `ocx __remote` on the host with `args`, the envelope sent; its stdout piped.
    fn spawn(&self, home: &Home, args: &[String], strip_host: bool, stderr: Stdio) -> Result<Call> {
        let mut cmd = self.ssh(home, false)?;
        cmd.arg("--").arg(self.remote_command()?);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(stderr);
        // Ctrl-C is ocx's to pass on (by closing stdin), so that the remote command can clean
        // up and its exit code comes back.
        process::own_process_group(&mut cmd);
        let mut child = cmd.spawn().with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
        let envelope = Envelope::new(args, self.name.clone().filter(|_| strip_host));
        let mut stdin = child.stdin.take().expect("stdin is piped");
        // A host that refuses at once closes stdin: what it said is in the exit code and stderr.
        let _ = writeln!(stdin, "{}", serde_json::to_string(&envelope)?).and_then(|()| stdin.flush());
        Ok(Call { child, stdin: Some(stdin) })
    }

    /// Run `ocx ARGS` on the host, its output passed through as if it ran here; its exit code
    /// becomes ocx's.
    pub fn passthrough(&self, home: &Home, args: &[String]) -> Result<()> {
        process::install_interrupt_handler();
        let mut call = self.spawn(home, args, true, Stdio::inherit())?;
        // Ctrl-C (here, or a signal to ocx alone): close the remote command's stdin, which it
        // takes as its own Ctrl-C; it cleans up and exits with its own code.
        let stdin = call.stdin.take();
        let done = Arc::new(AtomicBool::new(false));
        let watching = {
            let done = done.clone();
            std::thread::spawn(move || {
                let mut stdin = stdin;
                while !done.load(Ordering::SeqCst) {
                    if process::interrupted() {
                        stdin.take();
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        let mut out = BufReader::new(call.child.stdout.take().expect("stdout is piped"));
        let greeted = read_hello(&mut out);
        let copied = match &greeted {
            Ok(()) => copy_out(&mut out),
            Err(_) => Ok(()),
        };
        if copied.is_err() || greeted.is_err() {
            // Nobody reads what ocx prints, or the other side is not an ocx of this version:
            // end the remote command (its stdin closes).
            let _ = call.child.kill();
        }
        let status = call.child.wait()?;
        done.store(true, Ordering::SeqCst);
        let _ = watching.join();
        copied?;
        if let Err(err) = greeted {
            return Err(self.failed(status.code(), err));
        }
        match status.code() {
            Some(0) => Ok(()),
            _ if process::interrupted() && status.code().is_none_or(|c| c == SSH_FAILED) => {
                Err(anyhow!(Failure::silent(code::INTERRUPTED)))
            }
            Some(SSH_FAILED) => Err(anyhow!(
                Failure::new(code::FAILED, format!("lost the connection to host {}", self.label()))
                    .hint("what the command did there so far stays; `ocx ls --hosts HOST` shows it")
            )),
            Some(code) => Err(anyhow!(Failure::silent(u8::try_from(code).unwrap_or(code::FAILED)))),
            None => Err(anyhow!(Failure::silent(code::FAILED))),
        }
    }

    /// Run `ocx ARGS` on the host (a command with `--json`) and parse what it printed, within
    /// `timeout`. The error is the host's or ssh's own message.
    pub fn json(&self, home: &Home, args: &[&str], timeout: Duration) -> Result<Value> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut call = self.spawn(home, &args, false, Stdio::piped())?;
        let (stdout, stderr) = (call.child.stdout.take().expect("piped"), call.child.stderr.take().expect("piped"));
        let reader = std::thread::spawn(move || {
            let mut out = BufReader::new(stdout);
            let greeted = read_hello(&mut out);
            let mut text = String::new();
            let read = out.read_to_string(&mut text);
            (greeted, read.map(|_| text))
        });
        let errors = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(stderr).take(64 * 1024).read_to_string(&mut text);
            text
        });
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = call.child.try_wait()? {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let _ = call.child.kill();
                let _ = call.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let (greeted, text) = reader.join().expect("the reader does not panic");
        let errors = errors.join().expect("the reader does not panic");
        let Some(status) = status else {
            return Err(anyhow!("no answer within {}s", timeout.as_secs()));
        };
        if let Err(err) = greeted {
            let said = last_line(&errors);
            return Err(match said {
                Some(said) if status.code() == Some(SSH_FAILED) => anyhow!("{said}"),
                _ => self.failed(status.code(), err),
            });
        }
        if !status.success() {
            return Err(anyhow!("{}", last_line(&errors).unwrap_or("the remote ocx failed")));
        }
        serde_json::from_str(&text?).context("the remote ocx printed something other than JSON")
    }

    /// The host's instances that are alive, with their credentials, for a forward.
    pub fn records(&self, home: &Home) -> Result<Vec<Record>> {
        let docs = self
            .json(home, &["ls", "--json", "--show-secrets"], Duration::from_secs(30))
            .map_err(|err| anyhow!(Failure::new(code::FAILED, format!("host {}: {err:#}", self.label()))))?;
        Ok(docs
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| !d["uptime_s"].is_null() && d["pid"].is_u64())
            .filter_map(|d| serde_json::from_value::<Record>(d.clone()).ok())
            .map(|mut r| {
                r.remote = Some(self.label().to_string());
                r
            })
            .collect())
    }

    /// Why talking to the host failed, said plainly (ssh printed its own reason on stderr).
    fn failed(&self, status: Option<i32>, err: anyhow::Error) -> anyhow::Error {
        let label = self.label();
        match status {
            Some(SSH_FAILED) => anyhow!(
                Failure::new(code::FAILED, format!("cannot reach host {label} over ssh"))
                    .hint(format!("check that `ssh {}` works without a password prompt", self.url))
            ),
            _ => anyhow!(Failure::new(code::FAILED, format!("host {label}: {err:#}")).hint(format!(
                "install the same ocx ({}) there, and give its path with `ocx host add {} {} --ocx PATH`",
                env!("CARGO_PKG_VERSION"),
                self.name.as_deref().unwrap_or("NAME"),
                self.url
            ))),
        }
    }
}

/// A running `ocx __remote`: its stdin stays open while it runs (closing it tells the remote
/// side that this ocx is gone, and it stops as on Ctrl-C).
struct Call {
    child: Child,
    stdin: Option<ChildStdin>,
}

/// Copy the remote command's output to ours as it comes (a closed pipe ends the copy).
fn copy_out(out: &mut impl Read) -> Result<()> {
    let mut buf = [0u8; 8192];
    loop {
        match out.read(&mut buf)? {
            0 => return Ok(()),
            n => output::write(&buf[..n])?,
        }
    }
}

fn last_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).rfind(|l| !l.is_empty())
}
