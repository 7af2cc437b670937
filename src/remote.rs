//! Other hosts over ssh: named hosts, the `ssh` command ocx runs, the `ocx __remote` envelope
//! (arguments on stdin, a hello line back), and port forwards on the shared connection.
//!
//! ocx on this machine runs the system's `ssh` (so `~/.ssh/config`, agents, ProxyJump and keys
//! work as for any ssh command), in batch mode, sharing one connection per host (ControlMaster
//! with a private control path), and runs `ocx __remote` there. The command line on both
//! machines carries only that: the arguments, prompts and values travel on stdin.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Failure, code};
use crate::home::{self, Home};
use crate::record::{self, Record};
use crate::{output, process};

/// The version of the envelope: both sides must speak the same one.
pub const PROTOCOL: u32 = 1;
/// How long ssh may take to connect (`ConnectTimeout`).
const CONNECT_TIMEOUT_S: u32 = 10;
/// How long an idle shared connection stays open after its last command.
const PERSIST_S: u32 = 60;
/// ssh's own exit code for its own failures (connection, authentication, forwarding).
const SSH_FAILED: i32 = 255;

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

    /// `ssh` with ocx's options and the destination, ready for a remote command or `-O`;
    /// on the host's shared connection unless `own` (ssh takes the first value of an option).
    fn ssh(&self, home: &Home, own: bool) -> Result<Command> {
        let address = Address::parse(&self.url)?;
        let words = match std::env::var("OCX_SSH").ok().filter(|s| !s.trim().is_empty()) {
            // A path, also one with spaces or backslashes (Windows): as it is.
            Some(s) if std::path::Path::new(&s).is_file() => vec![s],
            Some(s) => shlex::split(&s)
                .filter(|w| !w.is_empty())
                .ok_or_else(|| anyhow!(Failure::new(code::USAGE, format!("cannot split OCX_SSH={s:?} into words"))))?,
            None => vec!["ssh".to_string()],
        };
        let mut cmd = Command::new(&words[0]);
        cmd.args(&words[1..]);
        cmd.args(["-o", "BatchMode=yes", "-o", &format!("ConnectTimeout={CONNECT_TIMEOUT_S}")]);
        if own {
            cmd.args(["-o", "ControlMaster=no", "-o", "ControlPath=none"]);
        } else if process::ssh_shares_connections() {
            let path = control_dir(home)?.join("%C").display().to_string().replace('%', "%%").replace("%%C", "%C");
            cmd.args(["-o", "ControlMaster=auto", "-o", &format!("ControlPersist={PERSIST_S}")]);
            cmd.arg("-o").arg(format!("ControlPath=\"{path}\""));
        }
        if let Some(port) = address.port {
            cmd.args(["-p", &port.to_string()]);
        }
        if let Some(user) = &address.user {
            cmd.args(["-l", user]);
        }
        cmd.arg(&address.host);
        Ok(cmd)
    }

    /// The remote command: the host's ocx, quoted for its shell, and `__remote`.
    fn remote_command(&self) -> Result<String> {
        let ocx = self.ocx.as_deref().unwrap_or("ocx");
        // `~/…` is the remote user's home: the shell expands the `~/` left unquoted.
        let (tilde, rest) = match ocx.strip_prefix("~/") {
            Some(rest) => ("~/", rest),
            None => ("", ocx),
        };
        let quoted = shlex::try_quote(rest).map_err(|_| anyhow!("cannot quote the ocx path {ocx:?} for a shell"))?;
        Ok(format!("{tilde}{quoted} __remote"))
    }

    /// Start `ocx __remote` on the host with `args`, the envelope sent; its stdout piped.
    fn spawn(&self, home: &Home, args: &[String], strip_host: bool, stderr: Stdio) -> Result<Call> {
        let mut cmd = self.ssh(home, false)?;
        cmd.arg("--").arg(self.remote_command()?);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(stderr);
        // Ctrl-C is ocx's to pass on (by closing stdin), so that the remote command can clean
        // up and its exit code comes back.
        process::own_process_group(&mut cmd);
        let mut child = cmd.spawn().with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
        let me = hello();
        let envelope = Envelope {
            protocol: me.protocol,
            version: me.ocx,
            schema: me.schema,
            args: args.to_vec(),
            strip_host: self.name.clone().filter(|_| strip_host),
        };
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

/// A running `ocx __remote`: its stdin stays open while it runs (closing it tells the remote
/// side that this ocx is gone, and it stops as on Ctrl-C).
struct Call {
    child: Child,
    stdin: Option<ChildStdin>,
}

fn read_hello(out: &mut impl BufRead) -> Result<()> {
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

/// The control sockets of shared connections: private, under the home.
fn control_dir(home: &Home) -> Result<PathBuf> {
    let mut dir = home.root().join("ssh");
    // A socket path has at most ~104 bytes (macOS); ssh adds `%C` (40) and, while it creates
    // the socket, 17 more. A long home gets a short private directory in /tmp instead.
    if dir.as_os_str().len() + 1 + 40 + 17 > 100 {
        let hash = home
            .root()
            .to_string_lossy()
            .bytes()
            .fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3));
        dir = PathBuf::from("/tmp").join(format!("ocx-ssh-{:012x}", hash & 0xffff_ffff_ffff));
    }
    process::create_private_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
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

/// The named hosts, in `<config dir>/ocx/hosts.json` (0600).
pub struct Hosts {
    path: PathBuf,
    pub hosts: BTreeMap<String, Host>,
}

impl Hosts {
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

    pub fn save(&self) -> Result<()> {
        let dir = self.path.parent().expect("hosts.json has a directory");
        process::create_private_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        home::write_atomic(&self.path, format!("{}\n", serde_json::to_string_pretty(&self.hosts)?).as_bytes())
    }

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

/// The records a command chooses from: this machine's, or the live ones of `host`.
pub fn records(home: &Home, host: Option<&Host>) -> Result<Vec<Record>> {
    match host {
        Some(host) => host.records(home),
        None => Ok(record::valid(&record::list(home)?)),
    }
}

/// Make `record` reachable from here: for an instance of a host, forward a local port to it
/// and point the record's URL there, for as long as the returned forward lives.
pub fn reach(home: &Home, host: Option<&Host>, record: &mut Record, own: bool) -> Result<Option<Forward>> {
    let Some(host) = host else { return Ok(None) };
    let forward = host.forward(home, record.port, own)?;
    record.url = forward.url();
    Ok(Some(forward))
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

    #[test]
    fn the_remote_command_is_quoted() {
        let host = Host { name: None, url: "box".into(), ocx: Some("/opt/my ocx/$(x)".into()) };
        assert_eq!(host.remote_command().unwrap(), "'/opt/my ocx/$(x)' __remote");
        let home = Host { ocx: Some("~/.cargo/bin/ocx".into()), ..host };
        assert_eq!(home.remote_command().unwrap(), "~/.cargo/bin/ocx __remote");
    }
}
