//! The Windows build under Wine: `ocx.exe` started by `wine64` against the Windows stand-in
//! server (`tests/support/stand_in.rs`, copied as `opencode.exe`), with Windows paths
//! (`Z:\…` is `/`). `scripts/test` (`scripts/wine.sh`) builds both, prepares a Wine prefix and
//! says where they are in `OCX_WINE`, `OCX_WINE_PREFIX`, `OCX_WIN_OCX`, `OCX_WIN_STAND_IN`.
//!
//! The tests share that prefix one at a time: each starts its own wineserver and kills it when
//! it ends (`wineserver -k`, which ends every process of the prefix), pass or fail. Wine hands
//! its stderr to every process it starts, so ocx's output goes to files, never to pipes.
//! What Wine cannot show is in docs/reliability.md ("Windows").

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::support::{Run, basic_auth, http, is_gone, wait_for};

/// Longest one ocx.exe invocation may take before it counts as hung.
const RUN_DEADLINE: Duration = Duration::from_secs(120);
/// A stop under Wine, where the polite step cannot be delivered, takes well under this; one
/// that waited out the 10 s grace takes more.
const PROMPT: Duration = Duration::from_secs(5);

/// One Wine test at a time: they share the prepared prefix and its wineserver.
static PREFIX: Mutex<()> = Mutex::new(());

fn var(name: &str) -> PathBuf {
    let value = std::env::var_os(name).filter(|v| !v.is_empty()).unwrap_or_else(|| {
        panic!(
            "{name} is not set: the Windows tests need ocx.exe and the stand-in built for \
             x86_64-pc-windows-gnu and a prepared Wine prefix; run `scripts/test`, which sets up \
             both (scripts/wine.sh) and sets OCX_WINE, OCX_WINE_PREFIX, OCX_WIN_OCX and OCX_WIN_STAND_IN"
        )
    });
    let path = PathBuf::from(value);
    assert!(path.exists(), "{name}={} does not exist: run `scripts/test`", path.display());
    path
}

/// A Linux path as Wine's Windows programs see it.
fn win(path: &Path) -> String {
    format!("Z:{}", path.display()).replace('/', "\\")
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn pid_of(record: &Value) -> u32 {
    record["pid"].as_u64().unwrap() as u32
}

fn id_of(record: &Value) -> &str {
    record["id"].as_str().unwrap()
}

fn port_of(record: &Value) -> u16 {
    record["port"].as_u64().unwrap() as u16
}

/// One test's Wine world: the shared prefix with a wineserver of this test's, and a temp dir
/// with `OCX_HOME`, the stand-in as `opencode.exe` and its control directory.
struct Wine {
    root: TempDir,
    wine: PathBuf,
    wineserver: PathBuf,
    prefix: PathBuf,
    ocx: PathBuf,
    opencode: PathBuf,
    /// Processes this test started directly (ocx.exe in the background, an unmanaged server).
    children: Vec<Child>,
    runs: usize,
    /// Held until everything of this test has ended.
    _turn: MutexGuard<'static, ()>,
}

impl Wine {
    fn new() -> Wine {
        let turn = PREFIX.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (wine, prefix) = (var("OCX_WINE"), var("OCX_WINE_PREFIX"));
        let (ocx, stand_in) = (var("OCX_WIN_OCX"), var("OCX_WIN_STAND_IN"));
        let wineserver = wine.with_file_name("wineserver");
        let root = tempfile::Builder::new().prefix("ocx-wine-").tempdir().unwrap();
        for dir in ["bin", "control", "out"] {
            std::fs::create_dir(root.path().join(dir)).unwrap();
        }
        let opencode = root.path().join("bin/opencode.exe");
        std::fs::copy(&stand_in, &opencode).unwrap();
        let wine = Wine { root, wine, wineserver, prefix, ocx, opencode, children: Vec::new(), runs: 0, _turn: turn };
        // The server first, its output nowhere: started by a Wine program, it would keep that
        // program's output open.
        wine.end_everything();
        let status = wine.server_command().arg("-p").status().unwrap();
        assert!(status.success(), "wineserver -p: {status}");
        wine
    }

    fn server_command(&self) -> Command {
        let mut cmd = Command::new(&self.wineserver);
        cmd.env("WINEPREFIX", &self.prefix).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        cmd
    }

    /// Kill the prefix's wineserver and with it every process of the prefix; then end by PID
    /// whatever still runs from it.
    fn end_everything(&self) {
        let _ = self.server_command().arg("-k").status();
        for _ in 0..100 {
            let left = self.processes();
            if left.is_empty() {
                return;
            }
            for (pid, _) in left {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("processes of the Wine prefix survive: {:?}", self.processes());
    }

    fn home(&self) -> PathBuf {
        self.root.path().join("home")
    }

    fn control_dir(&self) -> PathBuf {
        self.root.path().join("control")
    }

    /// Tell the stand-in something (see `tests/support/stand_in.rs`).
    fn control(&self, name: &str, content: &str) {
        std::fs::write(self.control_dir().join(name), content).unwrap();
    }

    /// A Windows program (`exe`, a Linux path or a name Wine finds) under wine64, in the test's
    /// directory, with nothing of the real user's environment.
    fn command(&self, exe: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.wine);
        cmd.arg(exe)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.root.path())
            .env("WINEPREFIX", &self.prefix)
            .env("WINEDEBUG", "-all")
            .env("OCX_HOME", win(&self.home()))
            .env("NO_COLOR", "1")
            .current_dir(self.root.path())
            .stdin(Stdio::null());
        cmd
    }

    /// Files for one program's stdout and stderr.
    fn output_files(&mut self) -> (PathBuf, PathBuf) {
        self.runs += 1;
        let out = self.root.path().join(format!("out/{}.out", self.runs));
        (out.clone(), out.with_extension("err"))
    }

    /// `ocx.exe ARGS` in the background, its output going to the files returned.
    fn spawn_ocx(&mut self, args: &[&str]) -> (Child, PathBuf, PathBuf) {
        let (out, err) = self.output_files();
        let child = self
            .command(&self.ocx.clone(), args)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        (child, out, err)
    }

    /// `ocx.exe ARGS` to completion (with a deadline).
    fn run(&mut self, args: &[&str]) -> Run {
        let (child, out, err) = self.spawn_ocx(args);
        let code = wait_with_deadline(child, &format!("ocx.exe {}", args.join(" ")));
        Run { code, stdout: std::fs::read_to_string(out).unwrap(), stderr: std::fs::read_to_string(err).unwrap() }
    }

    /// `ocx.exe start --json ARGS` of the stand-in → the started records.
    #[track_caller]
    fn start_all(&mut self, args: &[&str]) -> Vec<Value> {
        let (opencode, control) = (win(&self.opencode), format!("STAND_IN_DIR={}", win(&self.control_dir())));
        let mut all = vec!["start", "--json", "--opencode", &opencode, "--env", &control];
        all.extend_from_slice(args);
        self.run(&all).success().json().as_array().unwrap().clone()
    }

    #[track_caller]
    fn start(&mut self, args: &[&str]) -> Value {
        let started = self.start_all(args);
        assert_eq!(started.len(), 1, "{started:?}");
        started[0].clone()
    }

    #[track_caller]
    fn ls(&mut self) -> Vec<Value> {
        self.run(&["ls", "--json"]).success().json().as_array().unwrap().clone()
    }

    #[track_caller]
    fn listed(&mut self, id: &str) -> Value {
        self.ls().into_iter().find(|r| r["id"] == id).unwrap_or_else(|| panic!("ls does not list {id}"))
    }

    /// The instance's record file, read from Linux (no Wine process needed).
    fn record(&self, id: &str) -> Option<Value> {
        let text = std::fs::read_to_string(self.home().join(format!("instances/{id}.json"))).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn record_files(&self) -> Vec<String> {
        match std::fs::read_dir(self.home().join("instances")) {
            Ok(dir) => dir.map(|e| e.unwrap().file_name().into_string().unwrap()).collect(),
            Err(_) => Vec::new(),
        }
    }

    fn log(&self, id: &str) -> String {
        std::fs::read_to_string(self.home().join(format!("logs/{id}.log"))).unwrap_or_default()
    }

    /// End a Windows process from outside, as Task Manager does (TerminateProcess).
    fn taskkill(&mut self, pid: u32) {
        let (out, err) = self.output_files();
        let child = self
            .command(Path::new("taskkill"), &["/F", "/PID", &pid.to_string()])
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        let code = wait_with_deadline(child, "taskkill");
        assert_eq!(code, Some(0), "taskkill /F /PID {pid}: {}", std::fs::read_to_string(out).unwrap());
    }

    /// The live processes of this prefix, as (Linux PID, command line): Wine's and the Windows
    /// programs', whose Linux environment is the one the first of them was started with.
    fn processes(&self) -> Vec<(u32, String)> {
        let wanted = format!("WINEPREFIX={}", self.prefix.display());
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
            if pid == std::process::id() || !environ.split(|&b| b == 0).any(|v| v == wanted.as_bytes()) {
                continue;
            }
            let cmd = crate::support::cmdline(pid);
            if (cmd.contains(".exe") || cmd.contains("wineserver")) && !is_gone(pid) {
                found.push((pid, cmd));
            }
        }
        found
    }

    /// The processes of this prefix whose command line contains `needle`.
    fn processes_with(&self, needle: &str) -> Vec<(u32, String)> {
        self.processes().into_iter().filter(|(_, cmd)| cmd.contains(needle)).collect()
    }

    /// No process of ocx's (watcher, server, grandchild) runs any more.
    #[track_caller]
    fn assert_nothing_of_ocx_runs(&self) {
        self.assert_none_runs(&["__watch", "opencode.exe"]);
    }

    /// No process of the prefix whose command line contains one of `needles` runs any more, or
    /// within a few seconds: a watcher told to stop may still be exiting when `stop` returns,
    /// and a process ended through its Job Object a moment after the job.
    #[track_caller]
    fn assert_none_runs(&self, needles: &[&str]) {
        let left = || -> Vec<(u32, String)> {
            let all = self.processes().into_iter();
            all.filter(|(_, cmd)| needles.iter().any(|n| cmd.contains(n))).collect()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !left().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(left(), vec![], "still running");
    }

    /// The server's health over TCP from Linux, with the instance's credentials (`secrets`
    /// from `ls --json --show-secrets`), or with none.
    fn health(&self, secrets: &Value, with_auth: bool) -> (u16, String) {
        let url = format!("{}/global/health", secrets["url"].as_str().unwrap());
        let request = http(Duration::from_secs(10)).get(&url);
        let request = if with_auth { request.header("Authorization", basic_auth(secrets)) } else { request };
        let mut response = request.call().unwrap();
        (response.status().as_u16(), response.body_mut().read_to_string().unwrap())
    }

    #[track_caller]
    fn secrets(&mut self, id: &str) -> Value {
        let all = self.run(&["ls", "--json", "--show-secrets"]).success().json();
        all.as_array().unwrap().iter().find(|r| r["id"] == id).cloned().unwrap_or_else(|| panic!("no record {id}"))
    }
}

impl Drop for Wine {
    /// Leave nothing running, whatever the test did.
    fn drop(&mut self) {
        self.end_everything();
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Wait for a Wine program with a deadline; kill it and panic if it hangs.
fn wait_with_deadline(mut child: Child, what: &str) -> Option<i32> {
    let deadline = Instant::now() + RUN_DEADLINE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {RUN_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// start, ls (+ --json, -q, --all), url, health over TCP, logs, paths as users write them,
/// stop: the polite step cannot be delivered under Wine, and the forceful one comes at once.
#[test]
fn wine_start_ls_url_logs_stop() {
    let mut wine = Wine::new();
    let started = wine.start(&["--name", "api"]);
    let (id, port) = (id_of(&started).to_string(), port_of(&started));
    assert_eq!(started["url"], format!("http://127.0.0.1:{port}"));
    assert!(started.get("password").is_none(), "start --json hides the password");

    // Paths as Windows users write them, never `\\?\Z:\…`.
    let record = wine.record(&id).unwrap();
    assert!(!record.to_string().contains(r"\\\\?\\"), "{record}");
    assert_eq!(record["dir"], win(wine.root.path()));
    assert_eq!(record["log"], format!("{}\\logs\\{id}.log", win(&wine.home())));
    assert_eq!(record["opencode"]["path"], win(&wine.opencode));

    let listed = wine.listed(&id);
    assert_eq!(listed["status"], "running");
    assert_eq!((listed["healthy"].clone(), listed["supervised"].clone()), (true.into(), true.into()));
    assert_eq!(listed["version"], "stand-in");
    assert!(listed["rss_bytes"].as_u64().unwrap() > 0, "memory is read: {listed}");
    assert_eq!(listed["dir"], win(wine.root.path()));
    let table = wine.run(&["ls"]).success().stdout.clone();
    assert!(table.contains("api") && table.contains("running"), "{table}");
    assert!(table.contains(&win(wine.root.path())) && !table.contains(r"\\?\"), "{table}");
    assert_eq!(wine.run(&["ls", "-q"]).success().stdout, format!("{id}\n"));

    // Health over TCP, as clients reach it: the password ocx made, and nothing else.
    let secrets = wine.secrets(&id);
    let (status, body) = wine.health(&secrets, true);
    assert_eq!(status, 200);
    assert!(body.contains(r#""healthy":true"#), "{body}");
    assert_eq!(wine.health(&secrets, false).0, 401);
    assert_eq!(wine.run(&["url", "api"]).success().stdout.trim(), format!("http://127.0.0.1:{port}"));
    let with = wine.run(&["url", "--with-credentials"]).success().stdout.clone();
    assert!(with.contains(secrets["password"].as_str().unwrap()), "{with}");
    let logs = wine.run(&["logs", "api"]).success().stdout.clone();
    assert!(logs.contains("server listening on"), "{logs}");

    // --all: an `opencode serve` that ocx did not start is unmanaged; ocx's own is not.
    let other_port = free_port();
    let (out, err) = wine.output_files();
    let opencode = wine.opencode.clone();
    let other = wine
        .command(&opencode, &["serve", "--hostname", "127.0.0.1", "--port", &other_port.to_string()])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(err).unwrap())
        .spawn()
        .unwrap();
    wine.children.push(other);
    wait_for("the unmanaged server", Duration::from_secs(30), || {
        std::fs::read_to_string(&out).unwrap().contains("listening on").then_some(())
    });
    let all = wine.run(&["ls", "--all", "--json"]).success().json();
    let unmanaged: Vec<&Value> = all.as_array().unwrap().iter().filter(|r| r["status"] == "unmanaged").collect();
    assert_eq!(unmanaged.len(), 1, "{all}");
    assert_eq!(unmanaged[0]["port"], other_port);
    assert!(all.as_array().unwrap().iter().any(|r| r["id"] == id.as_str() && r["status"] == "running"), "{all}");

    let stopped = wine.run(&["stop", "api", "--json"]).success().json();
    assert_eq!(stopped[0]["result"], "stopped", "{stopped}");
    assert_eq!(stopped[0]["port_free"], true, "{stopped}");
    let took = Duration::from_millis(stopped[0]["duration_ms"].as_u64().unwrap());
    assert!(took < PROMPT, "the stop waited out the grace ({took:?}) although nothing could be delivered");
    let log = wine.log(&id);
    assert!(
        log.contains("cannot deliver the polite signal"),
        "the watcher says why it ended the server at once:\n{log}"
    );
    assert!(port_is_free(port));
    assert!(wine.record_files().is_empty(), "{:?}", wine.record_files());
    wine.assert_none_runs(&[&format!("__watch {id}"), &format!("--port {port}")]);
    wine.run(&["logs", &id, "-n", "1"]).success();
}

/// start --count 3 of servers that each leave a grandchild holding their listening socket;
/// stop --all ends every one, grandchildren included, and frees every port.
#[test]
fn wine_count_and_stop_all_end_the_grandchildren_and_free_the_ports() {
    let mut wine = Wine::new();
    let started = wine.start_all(&["--count", "3", "--env", "STAND_IN_GRANDCHILD=1"]);
    assert_eq!(started.len(), 3, "{started:?}");
    let mut ports: Vec<u16> = started.iter().map(port_of).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 3, "distinct ports: {started:?}");
    let listed = wine.ls();
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|r| r["status"] == "running" && r["healthy"] == true), "{listed:?}");
    assert_eq!(wine.processes_with("opencode.exe --hold").len(), 3, "{:?}", wine.processes());

    let stopped = wine.run(&["stop", "--all", "--json"]).success().json();
    let stopped = stopped.as_array().unwrap();
    assert_eq!(stopped.len(), 3);
    for outcome in stopped {
        assert_eq!((outcome["result"].as_str(), outcome["port_free"].as_bool()), (Some("stopped"), Some(true)));
        assert!(outcome["duration_ms"].as_u64().unwrap() < PROMPT.as_millis() as u64, "{outcome}");
    }
    wine.assert_none_runs(&["--hold"]);
    assert!(ports.iter().all(|&p| port_is_free(p)), "a port is still bound");
    assert_eq!(wine.ls(), Vec::<Value>::new());
    wine.assert_nothing_of_ocx_runs();
}

/// A server ended from outside (TerminateProcess): its watcher ends the rest of its tree
/// through the Job Object, which frees the port its grandchild held, before any ocx command;
/// `ls` says dead, `gc` removes the record.
#[test]
fn wine_the_job_object_ends_a_killed_servers_tree_and_gc_removes_it() {
    let mut wine = Wine::new();
    let started = wine.start(&["--restart", "no", "--env", "STAND_IN_GRANDCHILD=1"]);
    let (id, port) = (id_of(&started).to_string(), port_of(&started));
    assert_eq!(wine.processes_with("--hold").len(), 1);
    assert!(!port_is_free(port));

    wine.taskkill(pid_of(&started));
    wait_for("the watcher to record the exit", Duration::from_secs(30), || {
        wine.record(&id).filter(|r| !r["last_exit"].is_null())
    });
    wait_for("the grandchild to be ended and the port freed", Duration::from_secs(30), || {
        (wine.processes_with("--hold").is_empty() && port_is_free(port)).then_some(())
    });
    wait_for("the watcher to exit", Duration::from_secs(30), || {
        wine.processes_with(&format!("__watch {id}")).is_empty().then_some(())
    });
    let dead = wine.listed(&id);
    assert_eq!((dead["status"].as_str(), dead["supervised"].as_bool()), (Some("dead"), Some(false)), "{dead}");
    wine.run(&["gc"]).success();
    assert!(wine.record_files().is_empty(), "{:?}", wine.record_files());
    assert_eq!(wine.ls(), Vec::<Value>::new());
    wine.assert_nothing_of_ocx_runs();
}

/// A crashed server comes back on the same port with the same password; with its watcher
/// gone, `stop` ends it at once with a note, since the polite step cannot be delivered.
#[test]
fn wine_a_crashed_server_is_restarted_and_an_unsupervised_one_is_ended_at_once() {
    let mut wine = Wine::new();
    let started = wine.start(&[]);
    let (id, port) = (id_of(&started).to_string(), port_of(&started));
    let password = wine.secrets(&id)["password"].clone();

    wine.control("exit", "3");
    wait_for("the crash to be recorded", Duration::from_secs(30), || {
        wine.record(&id).filter(|r| r["last_exit"]["code"] == 3)
    });
    // Only once: the restarted server must stay up (one more crash, if it was quick, is fine).
    std::fs::remove_file(wine.control_dir().join("exit")).unwrap();
    let back = wait_for("the server to be back and healthy", Duration::from_secs(60), || {
        Some(wine.listed(&id)).filter(|r| r["status"] == "running" && r["pid"] != started["pid"])
    });
    assert_eq!(back["port"], port, "same port");
    assert!(back["restarts"].as_u64().unwrap() >= 1, "{back}");
    assert_eq!((back["last_exit"]["code"].clone(), back["last_exit"]["reason"].clone()), (3.into(), "crashed".into()));
    let secrets = wine.secrets(&id);
    assert_eq!(secrets["password"], password, "same password");
    assert_eq!(wine.health(&secrets, true).0, 200);
    assert!(wine.log(&id).contains("--- ocx: restart 1 after exit 3"), "{}", wine.log(&id));

    // Without its watcher, nothing shares the server's console: the polite step cannot be
    // delivered, and stop ends the server at once instead of waiting out the grace.
    let watcher = back["watcher"]["pid"].as_u64().unwrap() as u32;
    wine.taskkill(watcher);
    wait_for("the instance to be unsupervised", Duration::from_secs(30), || {
        Some(wine.listed(&id)).filter(|r| r["status"] == "unsupervised")
    });
    let stopped = wine.run(&["stop", &id, "--json"]).success().json();
    let outcome = &stopped[0];
    assert_eq!((outcome["result"].as_str(), outcome["signal"].as_str()), (Some("stopped"), Some("KILL")), "{outcome}");
    assert!(outcome["note"].as_str().unwrap().contains("could not be delivered"), "{outcome}");
    assert!(outcome["duration_ms"].as_u64().unwrap() < PROMPT.as_millis() as u64, "{outcome}");
    assert_eq!(outcome["port_free"], true);
    assert!(wine.record_files().is_empty());
    wine.assert_nothing_of_ocx_runs();
}

/// A start that never gets healthy times out (exit 4), Ctrl-C during a start exits 130, and
/// neither leaves a record or a process; every command exits quietly into a closed pipe.
#[test]
fn wine_failed_starts_leave_nothing_and_a_closed_pipe_is_quiet() {
    let mut wine = Wine::new();
    wine.control("silent", "");
    let (opencode, control) = (win(&wine.opencode), format!("STAND_IN_DIR={}", win(&wine.control_dir())));
    let start = ["start", "--opencode", &opencode, "--env", &control];

    let mut args = start.to_vec();
    args.extend(["--timeout", "3"]);
    wine.run(&args).code(4).stderr_has("did not become healthy within 3s");
    assert!(wine.record_files().is_empty(), "{:?}", wine.record_files());
    wine.assert_nothing_of_ocx_runs();

    // Ctrl-C: Wine turns SIGINT into CTRL_C_EVENT for the console handler.
    let mut args = start.to_vec();
    args.extend(["--timeout", "60"]);
    let (child, _, err) = wine.spawn_ocx(&args);
    let pid = child.id();
    wine.children.push(child);
    let id = wait_for("the start to record its server", Duration::from_secs(30), || {
        wine.record_files()
            .iter()
            .find_map(|f| f.strip_suffix(".json").filter(|id| !id.starts_with('.')).map(String::from))
    });
    wait_for("the server to be up, not yet healthy", Duration::from_secs(30), || {
        wine.log(&id).contains("without saying so").then_some(())
    });
    assert!(Command::new("kill").args(["-INT", &pid.to_string()]).status().unwrap().success());
    let child = wine.children.pop().unwrap();
    assert_eq!(wait_with_deadline(child, "ocx.exe start, interrupted"), Some(130));
    let stderr = std::fs::read_to_string(err).unwrap();
    assert!(stderr.contains("interrupted; stopped the server being started"), "{stderr}");
    assert!(wine.record_files().is_empty(), "{:?}", wine.record_files());
    wine.assert_nothing_of_ocx_runs();

    // A closed stdout: Wine reports it as os error 233, which ocx takes as a closed pipe.
    std::fs::remove_file(wine.control_dir().join("silent")).unwrap();
    wine.start(&["--name", "pipe"]);
    for args in [vec!["ls"], vec!["ls", "--json"], vec!["url", "pipe"], vec!["logs", "pipe"], vec!["--help"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let (_, err) = wine.output_files();
        let child = wine
            .command(&wine.ocx.clone(), &args)
            .stdout(writer)
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        let code = wait_with_deadline(child, &format!("ocx.exe {}", args.join(" ")));
        let stderr = std::fs::read_to_string(&err).unwrap();
        assert_eq!(code, Some(0), "ocx {args:?}: {stderr}");
        assert!(stderr.lines().all(|l| l.starts_with("hint:")), "ocx {args:?} said: {stderr}");
    }
    assert_eq!(wine.ls()[0]["status"], "running");
}
