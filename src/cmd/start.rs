//! `ocx start`: spawn detached servers, record them, wait until they are healthy.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

use crate::cli::StartArgs;
use crate::cmd::{parallel_map, pause_point, stop};
use crate::error::{self, Failure, code};
use crate::home::Home;
use crate::output;
use crate::process::{self, MARKER_HOME, MARKER_ID, Processes, Signal};
use crate::record::{self, Binary, Record, State};
use crate::server::Client;

/// How often to ask the server "is it ready?": short, so ocx adds little to start-up time.
const POLL: Duration = Duration::from_millis(25);
/// How many times to spawn a server whose start failed in a way known to be transient.
const START_TRIES: u32 = 3;
const LOG_TAIL_LINES: usize = 15;
const PASSWORD_VAR: &str = "OPENCODE_SERVER_PASSWORD";
const USERNAME_VAR: &str = "OPENCODE_SERVER_USERNAME";
const READY_MARK: &str = "server listening on http";
/// What opencode prints when it lost the race to migrate a fresh database (see `Transient`).
const DATABASE_RACE_SIGNS: [&str; 2] = ["Failed query", "database is locked"];

/// What is the same for every instance of one `ocx start`.
struct Plan {
    binary: PathBuf,
    dir: PathBuf,
    hostname: String,
    port: Option<u16>,
    auth: bool,
    timeout: Duration,
    env: BTreeMap<String, String>,
    extra: Vec<String>,
}

/// A server that started and answered its health check.
struct Started {
    record: Record,
    took: Duration,
}

pub fn run(home: &Home, args: StartArgs) -> Result<()> {
    let plan = Plan::new(&args)?;
    let names: Vec<Option<String>> = match &args.name {
        Some(name) if args.count == 1 => vec![Some(name.clone())],
        Some(name) => (1..=args.count).map(|i| Some(format!("{name}-{i}"))).collect(),
        None => vec![None; args.count as usize],
    };
    for name in names.iter().flatten() {
        record::check_name(name)?;
    }
    process::install_interrupt_handler();
    let spinner = output::Spinner::start(match names.len() {
        1 => "starting opencode".to_string(),
        n => format!("starting {n} opencode servers"),
    });
    let results = parallel_map(&names, names.len(), |name| start_one(home, &plan, name.clone()));
    drop(spinner);

    let mut started: Vec<Started> = Vec::new();
    let mut errors: Vec<anyhow::Error> = Vec::new();
    for result in results {
        match result {
            Ok(s) => started.push(s),
            Err(e) => errors.push(e),
        }
    }
    if args.json {
        let docs = started
            .iter()
            .map(|s| {
                let mut doc = s.record.public_json(false);
                doc["startup_ms"] = (s.took.as_millis() as u64).into();
                doc
            })
            .collect();
        output::print_json(&serde_json::Value::Array(docs))?;
    } else if !started.is_empty() {
        let mut table = output::table(["ID", "NAME", "URL", "PID", "HEALTHY IN"]);
        for s in &started {
            let r = &s.record;
            table.add_row([
                &r.id,
                r.name.as_deref().unwrap_or("-"),
                &r.url,
                &r.pid.to_string(),
                &output::elapsed(s.took),
            ]);
        }
        output::print_table(&mut table)?;
    }
    let mut errors = errors.into_iter();
    match (errors.next(), started.is_empty()) {
        (None, _) => Ok(()),
        // One failure and nothing else to say: let main report it.
        (Some(first), true) if names.len() == 1 => Err(first),
        (Some(first), _) => {
            let code = error::code_of(&first);
            for err in std::iter::once(first).chain(errors) {
                error::report(&err);
            }
            Err(anyhow!(Failure::silent(code)))
        }
    }
}

impl Plan {
    fn new(args: &StartArgs) -> Result<Plan> {
        let binary = find_opencode(args.opencode.as_deref())?;
        let dir = match &args.dir {
            Some(dir) => dir.clone(),
            None => std::env::current_dir().context("cannot read the current directory")?,
        };
        if !dir.is_dir() {
            return Err(anyhow!(
                Failure::new(code::FAILED, format!("the directory {} does not exist", dir.display()))
                    .hint("--dir names the directory the server serves; create it first")
            ));
        }
        let dir = dir.canonicalize().with_context(|| format!("cannot resolve {}", dir.display()))?;
        let env: BTreeMap<String, String> = args.env.iter().cloned().collect();
        let auth = !args.no_auth;
        if !auth && !is_loopback(&args.hostname) {
            return Err(anyhow!(
                Failure::new(
                    code::USAGE,
                    format!("--no-auth is refused with the non-loopback --hostname {}", args.hostname)
                )
                .hint("anyone who can reach that address could drive an agent that runs shell commands as you")
            ));
        }
        if !auth && env.contains_key(PASSWORD_VAR) {
            return Err(anyhow!(Failure::new(code::USAGE, format!("--no-auth conflicts with --env {PASSWORD_VAR}"))));
        }
        match args.port {
            Some(0) => {
                return Err(anyhow!(
                    Failure::new(code::USAGE, "--port 0 is not a port")
                        .hint("leave --port out and ocx picks a free one")
                ));
            }
            Some(_) if args.count > 1 => {
                return Err(anyhow!(Failure::new(code::USAGE, "--port names one port; it cannot go with --count")));
            }
            _ => {}
        }
        Ok(Plan {
            binary,
            dir,
            hostname: args.hostname.clone(),
            port: args.port,
            auth,
            timeout: args.timeout,
            env,
            extra: args.extra.clone(),
        })
    }
}

/// `--opencode`, else `$OCX_OPENCODE`, else `opencode` on PATH, else `~/.opencode/bin/opencode`.
fn find_opencode(explicit: Option<&Path>) -> Result<PathBuf> {
    let hint = "install it with `npm i -g opencode-ai`, or name it with --opencode PATH or OCX_OPENCODE";
    let named = explicit
        .map(|p| (p.to_path_buf(), "--opencode"))
        .or_else(|| std::env::var_os("OCX_OPENCODE").filter(|v| !v.is_empty()).map(|p| (p.into(), "OCX_OPENCODE")));
    if let Some((path, from)) = named {
        return match path.is_file() {
            true => std::path::absolute(&path).with_context(|| format!("cannot resolve {}", path.display())),
            false => Err(anyhow!(
                Failure::new(
                    code::FAILED,
                    format!("the opencode binary {} (from {from}) does not exist", path.display())
                )
                .hint(hint)
            )),
        };
    }
    let name = format!("opencode{}", std::env::consts::EXE_SUFFIX);
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|dir| dir.join(&name)).collect::<Vec<_>>())
        .unwrap_or_default();
    let fallback = dirs::home_dir().map(|home| home.join(".opencode").join("bin").join(&name));
    on_path
        .into_iter()
        .chain(fallback)
        .find(|candidate| candidate.is_file())
        .map(|found| std::path::absolute(&found).unwrap_or(found))
        .ok_or_else(|| {
            anyhow!(
                Failure::new(
                    code::FAILED,
                    "cannot find opencode: OCX_OPENCODE is unset, it is not on PATH, and not in ~/.opencode/bin"
                )
                .hint(hint)
            )
        })
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The URL clients use: an unspecified listen address is reached on loopback.
fn client_url(host: &str, port: u16) -> String {
    let host = host.trim_matches(['[', ']']);
    match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_unspecified() && ip.is_ipv4() => format!("http://127.0.0.1:{port}"),
        Ok(ip) if ip.is_unspecified() => format!("http://[::1]:{port}"),
        Ok(IpAddr::V6(ip)) => format!("http://[{ip}]:{port}"),
        _ => format!("http://{host}:{port}"),
    }
}

fn start_one(home: &Home, plan: &Plan, name: Option<String>) -> Result<Started> {
    let began = Instant::now();
    let deadline = began + plan.timeout;
    // Choosing the id, name and port, spawning, and writing the record happen under the store
    // lock, so concurrent starts never pick the same ones and no record is ever half there.
    let (mut launch, _instance_lock) = {
        let _store = home.lock_store()?;
        let entries = record::list(home)?;
        let records = record::valid(&entries);
        if let Some(name) = &name
            && records.iter().any(|r| r.name.as_deref() == Some(name) || r.id == *name)
        {
            return Err(anyhow!(
                Failure::new(code::FAILED, format!("an instance named {name:?} exists already"))
                    .hint(format!("choose another --name, or stop that one first: ocx stop {name}"))
            ));
        }
        let mut taken: Vec<&str> = records.iter().filter_map(|r| r.name.as_deref()).collect();
        taken.extend(entries.iter().map(|e| match e {
            record::Entry::Valid(r) => r.id.as_str(),
            record::Entry::Invalid(i) => i.id.as_str(),
        }));
        let id = record::new_id(&taken);
        let lock = home.lock_instance(&id, Duration::from_secs(1))?;
        let port = match plan.port {
            Some(port) if !process::port_is_free(&plan.hostname, port) => return Err(port_taken(&plan.hostname, port)),
            Some(port) => port,
            None => pick_port(&plan.hostname, &records)?,
        };
        (Launch::spawn(home, plan, &id, name.clone(), port)?, lock)
    };
    pause_point("start:waiting");

    let mut tries = 1;
    loop {
        let outcome = launch.wait_ready(deadline);
        match outcome {
            Wait::Ready(version) => {
                launch.record.state = State::Running;
                launch.record.opencode.version = version;
                record::save(home, &launch.record)?;
                return Ok(Started { record: launch.record, took: began.elapsed() });
            }
            Wait::Exited(status) => {
                if let Some(failure) = (tries < START_TRIES).then(|| launch.transient_failure(plan)).flatten() {
                    tries += 1;
                    if failure == Transient::DatabaseRace {
                        // Let the winner finish migrating before trying again.
                        std::thread::sleep(Duration::from_millis(100 + u64::from(getrandom::u32().unwrap_or(0) % 500)));
                    }
                    let _store = home.lock_store()?;
                    let port = match failure {
                        Transient::PortTaken => pick_port(&plan.hostname, &record::valid(&record::list(home)?))?,
                        Transient::DatabaseRace => launch.record.port,
                    };
                    let id = launch.record.id.clone();
                    launch = Launch::spawn(home, plan, &id, name.clone(), port)?;
                    continue;
                }
                let err = if plan.port.is_some() && !process::port_is_free(&plan.hostname, launch.record.port) {
                    port_taken(&plan.hostname, launch.record.port)
                } else {
                    let tail = launch.log_tail();
                    anyhow!(
                        Failure::new(
                            code::FAILED,
                            format!("opencode exited ({status}) before it became healthy; the end of its log:\n{tail}")
                        )
                        .hint(format!("the whole log: ocx logs {}", launch.record.id))
                    )
                };
                launch.abandon(home);
                return Err(err);
            }
            Wait::TimedOut => {
                let id = launch.record.id.clone();
                launch.abandon(home);
                return Err(anyhow!(
                    Failure::new(
                        code::TIMED_OUT,
                        format!("opencode did not become healthy within {}s; stopped it", plan.timeout.as_secs_f64())
                    )
                    .hint(format!("start-up can take 20 s with many plugins: raise --timeout; the log: ocx logs {id}"))
                ));
            }
            Wait::Interrupted => {
                launch.abandon(home);
                return Err(anyhow!(Failure::new(code::INTERRUPTED, "interrupted; stopped the server being started")));
            }
        }
    }
}

/// A free port that no record claims (a server that is still starting may not have bound its
/// port yet).
fn pick_port(host: &str, records: &[Record]) -> Result<u16> {
    for _ in 0..20 {
        let port = process::free_port(host)?;
        if !records.iter().any(|r| r.port == port) {
            return Ok(port);
        }
    }
    Err(anyhow!("cannot find a free port on {host}"))
}

fn port_taken(host: &str, port: u16) -> anyhow::Error {
    let by = process::port_owner(port).map(|owner| format!(" by {owner}")).unwrap_or_default();
    anyhow!(
        Failure::new(code::FAILED, format!("port {port} on {host} is already in use{by}"))
            .hint("choose another --port, or leave it out and ocx picks a free one")
    )
}

/// Ways a start can fail that another try fixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transient {
    /// The port ocx picked was taken between choosing it and the server binding it.
    PortTaken,
    /// opencode's first start in a fresh data directory migrates its SQLite database; servers
    /// starting at the same moment race on it and the losers exit (`DATABASE_RACE_SIGNS`).
    DatabaseRace,
}

enum Wait {
    Ready(Option<String>),
    Exited(ExitStatus),
    TimedOut,
    Interrupted,
}

/// One spawned server, not yet known to be healthy.
struct Launch {
    record: Record,
    child: Child,
    /// Where this spawn's output starts in the (appended) log.
    log_offset: u64,
    ready_line_seen: bool,
}

impl Launch {
    /// Spawn the server detached and write its record (`state: starting`). The caller holds
    /// the store lock.
    fn spawn(home: &Home, plan: &Plan, id: &str, name: Option<String>, port: u16) -> Result<Launch> {
        let log_path = home.log_path(id);
        let mut log = process::open_private_log(&log_path)
            .with_context(|| format!("cannot open the log {}", log_path.display()))?;
        let password = plan.auth.then(|| plan.env.get(PASSWORD_VAR).cloned().unwrap_or_else(record::new_password));
        let username = plan.env.get(USERNAME_VAR).cloned().unwrap_or_else(|| "opencode".to_string());
        let mut args: Vec<String> =
            ["serve", "--hostname", &plan.hostname, "--port", &port.to_string()].map(String::from).to_vec();
        args.extend(plan.extra.iter().cloned());
        let now = output::now_secs();
        writeln!(
            log,
            "--- ocx: {id} started at {}: {} {}",
            output::rfc3339(now),
            plan.binary.display(),
            args.join(" ")
        )
        .with_context(|| format!("cannot write the log {}", log_path.display()))?;
        let log_offset = log.metadata().map_or(0, |m| m.len());

        let mut cmd = Command::new(&plan.binary);
        cmd.args(&args)
            .current_dir(&plan.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .envs(&plan.env)
            .env(MARKER_ID, id)
            .env(MARKER_HOME, home.root())
            .env(USERNAME_VAR, &username);
        match &password {
            Some(password) => cmd.env(PASSWORD_VAR, password),
            None => cmd.env_remove(PASSWORD_VAR),
        };
        process::detach(&mut cmd);
        pause_point("start:before-spawn");
        let mut child = cmd.spawn().with_context(|| format!("cannot run {}", plan.binary.display()))?;
        let pid = child.id();
        // A server that already exited has no start time; the wait below reports its exit.
        let pid_started_at = Processes::of(&[pid])?.get(pid).map_or(0, |p| p.start_time);
        pause_point("start:after-spawn");
        let record = Record {
            schema: record::SCHEMA,
            id: id.to_string(),
            name,
            pid,
            pid_started_at,
            hostname: plan.hostname.clone(),
            port,
            url: client_url(&plan.hostname, port),
            username,
            password,
            dir: plan.dir.clone(),
            opencode: Binary { path: plan.binary.clone(), version: None },
            args,
            env: plan.env.clone(),
            log: log_path,
            started_at: output::rfc3339(now),
            state: State::Starting,
        };
        if let Err(err) = record::save(home, &record) {
            end_child(&mut child);
            stop::end_marked(home, id);
            return Err(err);
        }
        Ok(Launch { record, child, log_offset, ready_line_seen: false })
    }

    /// Poll until the ready line is in the log and the health check passes, or the server
    /// exits, or `deadline` passes, or the user presses Ctrl-C.
    fn wait_ready(&mut self, deadline: Instant) -> Wait {
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Wait::Exited(status);
            }
            if process::interrupted() {
                return Wait::Interrupted;
            }
            let now = Instant::now();
            if now >= deadline {
                return Wait::TimedOut;
            }
            if !self.ready_line_seen {
                self.ready_line_seen = self.new_log().contains(READY_MARK);
            }
            if self.ready_line_seen {
                let client = Client::for_record(&self.record, (deadline - now).min(Duration::from_secs(2)));
                if let Ok(health) = client.health()
                    && health.healthy
                {
                    return Wait::Ready(health.version);
                }
            }
            std::thread::sleep(POLL);
        }
    }

    /// Why the exited server failed, if another try would fix it.
    fn transient_failure(&self, plan: &Plan) -> Option<Transient> {
        if plan.port.is_none() && !process::port_is_free(&plan.hostname, self.record.port) {
            return Some(Transient::PortTaken);
        }
        let log = self.new_log();
        DATABASE_RACE_SIGNS.iter().any(|sign| log.contains(sign)).then_some(Transient::DatabaseRace)
    }

    /// What this spawn wrote to the log so far.
    fn new_log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.record.log)
            && file.seek(SeekFrom::Start(self.log_offset)).is_ok()
        {
            let mut bytes = Vec::new();
            let _ = file.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    }

    /// The last lines of this spawn's output, without terminal colour codes, indented.
    fn log_tail(&self) -> String {
        let text = strip_ansi(&self.new_log());
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        if lines.is_empty() {
            return "  (nothing)".to_string();
        }
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..]
            .iter()
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stop the server and everything it started, and delete its record. The log stays.
    fn abandon(mut self, home: &Home) {
        end_child(&mut self.child);
        stop::end_marked(home, &self.record.id);
        let _ = record::delete(home, &self.record.id);
        home.remove_instance_lock(&self.record.id);
    }
}

/// End a server this ocx spawned and still holds: TERM, a short grace, KILL; then reap it.
/// Its PID cannot be reused while ocx has not reaped it, so it needs no further vouching.
fn end_child(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        process::signal_child(child, Signal::Term);
        let deadline = Instant::now() + Duration::from_secs(3);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        process::signal_child(child, Signal::Kill);
    }
    let _ = child.wait();
}

/// Remove terminal escape sequences (`ESC [ … letter`) such as colours.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_client_urls() {
        assert!(is_loopback("127.0.0.1") && is_loopback("localhost") && is_loopback("::1") && is_loopback("[::1]"));
        assert!(!is_loopback("0.0.0.0") && !is_loopback("192.168.1.2") && !is_loopback("example.com"));
        assert_eq!(client_url("0.0.0.0", 5), "http://127.0.0.1:5");
        assert_eq!(client_url("::", 5), "http://[::1]:5");
        assert_eq!(client_url("::1", 5), "http://[::1]:5");
        assert_eq!(client_url("localhost", 5), "http://localhost:5");
    }

    #[test]
    fn ansi_codes_are_stripped() {
        assert_eq!(strip_ansi("\u{1b}[31mError\u{1b}[0m: x"), "Error: x");
    }
}
