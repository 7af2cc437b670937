//! Test helpers: a temp `OCX_HOME` and `HOME` per test, the fake model, the pinned opencode
//! binary, running ocx with a deadline, polling for conditions, and cleaning up.

#![allow(dead_code)]

pub mod fake_model;
pub mod proxy;
#[cfg(unix)]
pub mod sshd;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;
use tempfile::TempDir;

pub use fake_model::FakeModel;

/// The opencode version the tests run against; `scripts/test` installs it.
pub const OPENCODE_VERSION: &str = "1.18.33";

/// Longest any single ocx invocation may take in a test before it counts as hung.
const RUN_DEADLINE: Duration = Duration::from_secs(180);

/// The real opencode binary: `$OCX_OPENCODE`, else the copy `scripts/test` installs.
/// Missing → the test fails and says how to install it; it never skips.
pub fn opencode_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("OCX_OPENCODE").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "OCX_OPENCODE={} does not exist", path.display());
        return path;
    }
    let path = test_deps_dir().join(format!("opencode-ai-{OPENCODE_VERSION}/node_modules/.bin/opencode"));
    assert!(
        path.is_file(),
        "the pinned opencode {OPENCODE_VERSION} is not installed at {}: run `scripts/test` (it installs it \
         with npm), or point OCX_OPENCODE at an opencode binary",
        path.display()
    );
    path
}

/// Where `scripts/test` keeps what the tests need (must match the script).
fn test_deps_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("OCX_TEST_DEPS").filter(|p| !p.is_empty()) {
        return dir.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache"));
    cache.join("ocx-test")
}

/// Poll `check` every 50 ms until it returns Some, or panic after `timeout` naming `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The lines a child prints on stdout, on a channel (read on a thread of its own).
pub fn stdout_lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().expect("stdout is piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The outcome of one ocx run.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn success(&self) -> &Run {
        assert_eq!(self.code, Some(0), "ocx failed\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    #[track_caller]
    pub fn code(&self, expected: i32) -> &Run {
        assert_eq!(
            self.code,
            Some(expected),
            "unexpected exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Run {
        assert!(self.stderr.contains(needle), "stderr lacks {needle:?}:\n{}", self.stderr);
        self
    }

    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// Wait for a child with a deadline, collecting what is piped of its output; kill it and panic
/// if it hangs.
pub fn finish(mut child: Child, what: &str) -> Run {
    // Whatever of stdout and stderr is still piped (a test may have taken one).
    let read_all = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut s);
            }
            s
        })
    };
    let out_reader = read_all(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err_reader = read_all(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + RUN_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {RUN_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run { code: status.code(), stdout: out_reader.join().unwrap(), stderr: err_reader.join().unwrap() }
}

/// A child process the test started, killed when the test ends (pass or fail).
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One test's world: its own `OCX_HOME`, its own `HOME` and XDG dirs for the servers, a
/// project directory configured for its own fake model.
pub struct TestEnv {
    pub root: TempDir,
    pub ocx_home: PathBuf,
    pub user_home: PathBuf,
    pub project: PathBuf,
    pub model: FakeModel,
    pub opencode: PathBuf,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        let opencode = opencode_bin();
        let root = tempfile::Builder::new().prefix("ocx-test-").tempdir().unwrap();
        let ocx_home = root.path().join("ocx-home");
        let user_home = root.path().join("home");
        let project = root.path().join("project");
        std::fs::create_dir_all(&project).unwrap();
        std::fs::create_dir_all(user_home.join(".config/opencode")).unwrap();
        let model = FakeModel::start();
        write_opencode_config(&project, &model);
        write_opencode_config(&user_home.join(".config/opencode"), &model);
        TestEnv { root, ocx_home, user_home, project, model, opencode }
    }

    /// The environment every process of the test gets: nothing from the real user.
    pub fn apply_env(&self, cmd: &mut Command) {
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.user_home)
            .env("XDG_CONFIG_HOME", self.user_home.join(".config"))
            .env("XDG_DATA_HOME", self.user_home.join(".local/share"))
            .env("XDG_CACHE_HOME", self.user_home.join(".cache"))
            .env("XDG_STATE_HOME", self.user_home.join(".local/state"))
            .env("TMPDIR", self.root.path())
            .env("NO_COLOR", "1")
            .current_dir(&self.project);
    }

    /// `export` lines giving a shell script this test's environment (for scripts run in tmux).
    pub fn shell_exports(&self) -> String {
        let vars = [
            ("PATH", std::env::var("PATH").unwrap()),
            ("HOME", self.user_home.display().to_string()),
            ("XDG_CONFIG_HOME", self.user_home.join(".config").display().to_string()),
            ("XDG_DATA_HOME", self.user_home.join(".local/share").display().to_string()),
            ("XDG_CACHE_HOME", self.user_home.join(".cache").display().to_string()),
            ("XDG_STATE_HOME", self.user_home.join(".local/state").display().to_string()),
            ("OCX_HOME", self.ocx_home.display().to_string()),
            ("OCX_OPENCODE", self.opencode.display().to_string()),
            ("NO_COLOR", "1".into()),
        ];
        vars.iter().map(|(k, v)| format!("export {k}='{v}'\n")).collect()
    }

    /// `ocx` with this test's environment (OCX_HOME and OCX_OPENCODE set).
    pub fn ocx(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ocx"));
        self.apply_env(&mut cmd);
        cmd.env("OCX_HOME", &self.ocx_home).env("OCX_OPENCODE", &self.opencode);
        cmd
    }

    /// Run `ocx ARGS` to completion (with a deadline).
    pub fn run(&self, args: &[&str]) -> Run {
        let child =
            self.ocx().args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        finish(child, &format!("ocx {}", args.join(" ")))
    }

    /// Start `ocx ARGS` paused at `point` (see `src/hooks.rs`) and return it once it got there,
    /// ready to be SIGKILLed.
    pub fn paused_at(&self, args: &[&str], point: &str) -> Child {
        let mut child = self
            .ocx()
            .args(args)
            .env("OCX_TEST_PAUSE_AT", point)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), format!("ocx: paused at {point}"));
        child
    }

    /// The stand-in server (`tests/support/stand_in.rs`), for the tests the issues allow it in.
    pub fn stand_in(&self) -> PathBuf {
        // Built only with the `testing` feature (scripts/test and scripts/bench turn it on).
        PathBuf::from(env!("CARGO_BIN_EXE_ocx-stand-in"))
    }

    /// The stand-in's control directory (`STAND_IN_DIR`), created on first use.
    pub fn control_dir(&self) -> PathBuf {
        let dir = self.root.path().join("control");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Tell the stand-in something: write a control file (see `tests/support/stand_in.rs`).
    pub fn control(&self, name: &str, content: &str) {
        std::fs::write(self.control_dir().join(name), content).unwrap();
    }

    /// `ocx start ARGS` of a stand-in server under this test's control directory.
    #[track_caller]
    pub fn start_stand_in(&self, args: &[&str]) -> Value {
        let dir = format!("STAND_IN_DIR={}", self.control_dir().display());
        let stand_in = self.stand_in();
        let mut all = vec!["--opencode", stand_in.to_str().unwrap(), "--env", &dir];
        all.extend_from_slice(args);
        self.start(&all)
    }

    /// The instance as `ls --json` shows it now.
    #[track_caller]
    pub fn listed(&self, id: &str) -> Value {
        self.ls().into_iter().find(|r| r["id"] == id).unwrap_or_else(|| panic!("ls does not list {id}"))
    }

    /// The instance's record file as JSON.
    pub fn record(&self, id: &str) -> Value {
        let path = self.ocx_home.join(format!("instances/{id}.json"));
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    /// `ocx start --json ARGS` → the one started record.
    #[track_caller]
    pub fn start(&self, args: &[&str]) -> Value {
        let mut all = vec!["start", "--json"];
        all.extend_from_slice(args);
        let docs = self.run(&all).success().json();
        assert_eq!(docs.as_array().map(Vec::len), Some(1), "{docs}");
        docs[0].clone()
    }

    /// `ocx ls --json`.
    #[track_caller]
    pub fn ls(&self) -> Vec<Value> {
        self.run(&["ls", "--json"]).success().json().as_array().unwrap().clone()
    }

    /// The instance's record as `ls --json --show-secrets` shows it (with the password).
    #[track_caller]
    pub fn secrets(&self, id: &str) -> Value {
        let all = self.run(&["ls", "--json", "--show-secrets"]).success().json();
        all.as_array().unwrap().iter().find(|r| r["id"] == id).cloned().unwrap_or_else(|| panic!("no record {id}"))
    }

    /// Rewrite an instance's record (keeping it private), e.g. to point its URL elsewhere.
    pub fn edit_record(&self, id: &str, edit: impl FnOnce(&mut Value)) {
        let path = self.ocx_home.join(format!("instances/{id}.json"));
        let mut record: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        edit(&mut record);
        std::fs::write(&path, record.to_string()).unwrap();
    }

    /// Live processes carrying this test's home marker (any instance), as (pid, instance id).
    pub fn marked(&self) -> Vec<(u32, String)> {
        let home = self.ocx_home.canonicalize().unwrap_or(self.ocx_home.clone());
        marked_processes(&home)
    }

    pub fn record_files(&self) -> Vec<String> {
        match std::fs::read_dir(self.ocx_home.join("instances")) {
            Ok(dir) => dir.map(|e| e.unwrap().file_name().into_string().unwrap()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// A script standing in for opencode (a server that never gets healthy, one that exits).
    pub fn fake_binary(&self, name: &str, script: &str) -> PathBuf {
        let path = self.root.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        let mut perms = std::fs::metadata(&path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&path, perms).unwrap();
        path
    }
}

impl Drop for TestEnv {
    /// Leave nothing running, whatever the test did: stop through ocx, then KILL anything that
    /// still carries this test's marker.
    fn drop(&mut self) {
        if self.ocx_home.exists() {
            let _ = self.ocx().args(["stop", "--all", "--force"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
        for _ in 0..50 {
            let left = self.marked();
            if left.is_empty() {
                break;
            }
            for (pid, _) in left {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Point opencode (serving `dir`, or with `dir` as its config dir) at the fake model.
pub fn write_opencode_config(dir: &Path, model: &FakeModel) {
    std::fs::write(dir.join("opencode.json"), serde_json::to_string_pretty(&opencode_config(model)).unwrap()).unwrap();
}

impl TestEnv {
    /// Make the servers started from now on ask before every bash command, as a project's
    /// `"permission": {"bash": "ask"}` does.
    pub fn ask_permission_for_bash(&self) {
        let mut config = opencode_config(&self.model);
        config["permission"] = serde_json::json!({"bash": "ask"});
        let text = serde_json::to_string_pretty(&config).unwrap();
        for dir in [self.project.clone(), self.user_home.join(".config/opencode")] {
            std::fs::write(dir.join("opencode.json"), &text).unwrap();
        }
    }
}

fn opencode_config(model: &FakeModel) -> Value {
    serde_json::json!({
        "$schema": "https://opencode.ai/config.json",
        "provider": {"fake": {
            "npm": "@ai-sdk/openai-compatible",
            "name": "Fake",
            "options": {"baseURL": model.base_url(), "apiKey": "x"},
            "models": {"fake": {"name": "Fake"}}
        }},
        "model": "fake/fake",
        "share": "disabled",
        "autoupdate": false
    })
}

/// Live processes carrying the marker of `home` (`OCX_HOME` and `OCX_INSTANCE_ID`), as (pid, id).
pub fn marked_processes(home: &Path) -> Vec<(u32, String)> {
    let home_var = format!("OCX_HOME={}", home.display());
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
        let vars: Vec<&[u8]> = environ.split(|&b| b == 0).collect();
        if !vars.contains(&home_var.as_bytes()) || is_zombie(pid) {
            continue;
        }
        // ocx itself runs with OCX_HOME set too: only processes of an instance carry the id.
        if let Some(id) = vars.iter().find_map(|v| v.strip_prefix(b"OCX_INSTANCE_ID=")) {
            found.push((pid, String::from_utf8_lossy(id).into_owned()));
        }
    }
    found
}

/// A process's command line, arguments joined by spaces ("" once it is gone).
pub fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// The start time of a PID as the OS reports it and ocx records it (seconds since the epoch).
pub fn start_time(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let ticks: u64 = stat.rsplit_once(") ").unwrap().1.split_whitespace().nth(19).unwrap().parse().unwrap();
    let btime: u64 = std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: sysconf has no preconditions.
    btime + ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64
}

/// Whether a process has exited: its PID is gone, or it is a zombie none of whose threads
/// still run (the leader of a multi-threaded process is a zombie while its threads exit).
pub fn is_gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid)
}

fn is_zombie(pid: u32) -> bool {
    let zombie_leader = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
        .unwrap_or(false);
    zombie_leader && std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |t| t.count()) <= 1
}

/// The session id `ocx run` reports on stderr.
pub fn session_of(run: &Run) -> String {
    run.stderr
        .lines()
        .find_map(|l| l.strip_prefix("session: "))
        .unwrap_or_else(|| panic!("no session line in stderr:\n{}", run.stderr))
        .to_string()
}

/// CPU time a live process has used so far (user + system), from `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Some(Duration::from_millis(ticks * 1000 / per_second))
}

/// A plain HTTP client for asserting on a server directly; `timeout` bounds each request.
pub fn http(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).proxy(None).timeout_global(Some(timeout)).build().into()
}

/// `Authorization: Basic …` for the record's credentials.
pub fn basic_auth(record: &Value) -> String {
    let user = record["username"].as_str().unwrap();
    let password = record["password"].as_str().expect("the record needs --show-secrets for its password");
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// `GET path` of the instance's API with its credentials, as JSON.
pub fn get_json(record: &Value, path: &str) -> Value {
    let url = format!("{}{path}", record["url"].as_str().unwrap());
    http(Duration::from_secs(30))
        .get(&url)
        .header("Authorization", basic_auth(record))
        .call()
        .unwrap()
        .into_body()
        .read_json()
        .unwrap()
}

/// The sessions the server works on, by id (`GET /session/status`).
pub fn busy(record: &Value) -> serde_json::Map<String, Value> {
    match get_json(record, "/session/status") {
        Value::Object(sessions) => sessions,
        _ => serde_json::Map::new(),
    }
}

/// Whether the server still works on `session`.
pub fn is_busy(record: &Value, session: &str) -> bool {
    busy(record).contains_key(session)
}
