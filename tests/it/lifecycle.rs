//! `start`, `ls`, `stop`, `logs`, `attach`, `url` against real opencode servers.

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::basics::{save_record, write_record};
use crate::support::{
    Guard, TestEnv, basic_auth, busy, cmdline, finish, get_json, http, is_gone, start_time, wait_for,
};

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn pid_of(record: &Value) -> u32 {
    record["pid"].as_u64().unwrap() as u32
}

/// Start a prompt on the instance without waiting for the answer; returns the session id.
pub fn prompt_async(record: &Value, text: &str) -> String {
    let agent = http(Duration::from_secs(30));
    let url = record["url"].as_str().unwrap();
    let auth = basic_auth(record);
    let session: Value = agent
        .post(format!("{url}/session"))
        .header("Authorization", &auth)
        .send_json(json!({"title": "test"}))
        .unwrap()
        .into_body()
        .read_json()
        .unwrap();
    let id = session["id"].as_str().unwrap().to_string();
    let resp = agent
        .post(format!("{url}/session/{id}/prompt_async"))
        .header("Authorization", &auth)
        .send_json(json!({"parts": [{"type": "text", "text": text}]}))
        .unwrap();
    assert!(resp.status().is_success(), "prompt_async answered {}", resp.status());
    id
}

/// Every message of a session with its parts (`GET /session/{id}/message`).
pub fn messages(record: &Value, session: &str) -> Value {
    get_json(record, &format!("/session/{session}/message"))
}

/// How many sessions the server works on (`GET /session/status`).
pub fn busy_count(record: &Value) -> usize {
    busy(record).len()
}

/// How many permission requests wait for an answer (`GET /permission`).
pub fn pending_permissions(record: &Value) -> usize {
    get_json(record, "/permission").as_array().map_or(0, |a| a.len())
}

#[test]
fn start_ls_auth_stop() {
    let env = TestEnv::new();
    let started = env.start(&["--name", "api"]);
    let id = started["id"].as_str().unwrap();
    let port = started["port"].as_u64().unwrap() as u16;
    assert!(started.get("password").is_none(), "start --json hides the password");
    assert_eq!(started["url"], format!("http://127.0.0.1:{port}"));

    let listed = env.ls();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], id);
    assert_eq!(listed[0]["status"], "running");
    assert_eq!(listed[0]["healthy"], true);
    assert_eq!(listed[0]["port"], port);
    assert_eq!(listed[0]["version"], crate::support::OPENCODE_VERSION);
    assert!(listed[0]["rss_bytes"].as_u64().unwrap() > 0);

    // The record is private; the server wants the password ocx generated, and nothing else.
    let record_path = env.ocx_home.join(format!("instances/{id}.json"));
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&record_path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let record = env.secrets(id);
    let agent = http(Duration::from_secs(10));
    let health = format!("http://127.0.0.1:{port}/global/health");
    assert_eq!(agent.get(&health).header("Authorization", basic_auth(&record)).call().unwrap().status(), 200);
    assert_eq!(agent.get(&health).call().unwrap().status(), 401);
    let url = env.run(&["url", "api", "--with-credentials"]).success().stdout.trim().to_string();
    assert!(url.contains(record["password"].as_str().unwrap()), "{url}");
    assert_eq!(env.run(&["url"]).success().stdout.trim(), format!("http://127.0.0.1:{port}"));
    assert_eq!(env.run(&["ls", "-q"]).success().stdout, format!("{id}\n"));
    let logs = env.run(&["logs", "api"]).success().stdout.clone();
    assert!(logs.contains("server listening on"), "{logs}");
    assert!(!logs.contains(record["password"].as_str().unwrap()), "the log never shows the password");

    let stopped = env.run(&["stop", "api", "--json"]).success().json();
    assert_eq!(stopped[0]["result"], "stopped");
    assert_eq!(stopped[0]["signal"], "TERM");
    assert_eq!(stopped[0]["port_free"], true);
    assert_eq!(env.ls(), Vec::<Value>::new());
    assert!(port_is_free(port));
    assert!(is_gone(pid_of(&started)));
    assert_eq!(env.marked(), vec![], "no process of the instance is left");
    assert!(env.ocx_home.join(format!("logs/{id}.log")).exists(), "the log is kept");
    // A stopped instance's log is still there by id.
    env.run(&["logs", id, "-n", "1"]).success();
}

#[test]
fn a_killed_server_shows_dead_and_stop_removes_its_record() {
    let env = TestEnv::new();
    let started = env.start(&["--restart", "no"]);
    let pid = pid_of(&started);
    Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
    wait_for("the server to die", Duration::from_secs(10), || is_gone(pid).then_some(()));
    let listed = env.ls();
    assert_eq!(listed[0]["status"], "dead");
    let stopped = env.run(&["stop", "--all", "--json"]).success().json();
    assert_eq!(stopped[0]["result"], "already gone");
    assert_eq!(stopped[0]["signal"], Value::Null);
    assert!(env.record_files().is_empty());
}

#[test]
fn a_pid_now_owned_by_another_process_is_never_signalled() {
    let env = TestEnv::new();
    let sleeper = Guard(Command::new("sleep").arg("300").spawn().unwrap());
    let pid = sleeper.0.id();

    // Same PID, different start time: another process. `ls` says dead, `stop` drops the record.
    let mut record = write_record(&env, "reuse1", None);
    record["pid"] = pid.into();
    record["pid_started_at"] = (start_time(pid) - 1000).into();
    save_record(&env, &record);
    assert_eq!(env.ls()[0]["status"], "dead");
    let stopped = env.run(&["stop", "reuse1", "--json"]).success().json();
    assert_eq!(stopped[0]["result"], "already gone");
    assert!(!is_gone(pid), "the stranger is still alive");
    assert!(env.record_files().is_empty());

    // Same PID and start time but no marker: ocx cannot vouch for it, so it refuses.
    record["id"] = "reuse2".into();
    record["pid_started_at"] = start_time(pid).into();
    save_record(&env, &record);
    env.run(&["stop", "reuse2"]).code(1).stderr_has("does not carry this instance's marker");
    assert!(!is_gone(pid), "the stranger is still alive");
}

#[test]
fn stop_ends_the_agents_shell_commands_too() {
    let env = TestEnv::new();
    let started = env.start(&[]);
    let id = started["id"].as_str().unwrap();
    prompt_async(&env.secrets(id), "RUN:sleep 777");
    let sleeper = wait_for("the agent's `sleep 777`", Duration::from_secs(60), || {
        env.marked().into_iter().find(|(pid, i)| i == id && cmdline(*pid).contains("sleep 777")).map(|(pid, _)| pid)
    });
    let stopped = env.run(&["stop", id, "--json"]).success().json();
    assert!(stopped[0]["orphans_ended"].as_u64().unwrap() >= 1, "{stopped}");
    assert!(is_gone(sleeper), "the agent's command was ended");
    assert_eq!(env.marked(), vec![]);
}

#[test]
fn an_explicit_port_that_is_taken_is_a_clear_error() {
    let env = TestEnv::new();
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port().to_string();
    env.run(&["start", "--port", &port]).code(1).stderr_has(&format!("port {port} on 127.0.0.1 is already in use"));
    assert!(env.record_files().is_empty());
    assert_eq!(env.marked(), vec![]);
}

#[test]
fn bad_starts_fail_clearly_and_leave_nothing_behind() {
    let env = TestEnv::new();
    let missing = env.root.path().join("missing");
    env.run(&["start", "--dir", missing.to_str().unwrap()]).code(1).stderr_has("does not exist");
    env.run(&["start", "--opencode", missing.to_str().unwrap()]).code(1).stderr_has("ocx install-opencode");
    // No OCX_OPENCODE, nothing on PATH, nothing in ~/.opencode/bin.
    let run = finish(
        env.ocx()
            .arg("start")
            .env_remove("OCX_OPENCODE")
            .env("PATH", env.root.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        "ocx start without opencode",
    );
    run.code(1).stderr_has("cannot find opencode").stderr_has("ocx start --install-opencode");
    env.run(&["start", "--no-auth", "--hostname", "0.0.0.0"]).code(2).stderr_has("--no-auth is refused");
    env.run(&["start", "--name", "bad name"]).code(2).stderr_has("invalid name");

    let crasher = env.fake_binary("crasher", "echo 'boom: no config'; exit 3");
    env.run(&["start", "--opencode", crasher.to_str().unwrap()])
        .code(1)
        .stderr_has("exited (exit 3) before it became healthy")
        .stderr_has("boom: no config");

    let sleeper = env.fake_binary("sleeper", "exec sleep 300");
    env.run(&["start", "--opencode", sleeper.to_str().unwrap(), "--timeout", "2"])
        .code(4)
        .stderr_has("did not become healthy within 2s");

    assert!(env.record_files().is_empty(), "{:?}", env.record_files());
    assert_eq!(env.marked(), vec![], "nothing left running");
}

#[test]
fn ctrl_c_during_start_stops_the_server_and_exits_130() {
    let env = TestEnv::new();
    let sleeper = env.fake_binary("sleeper", "exec sleep 300");
    let child = env
        .ocx()
        .args(["start", "--opencode", sleeper.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the server to be spawned", Duration::from_secs(10), || (!env.marked().is_empty()).then_some(()));
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    finish(child, "ocx start").code(130).stderr_has("interrupted");
    assert!(env.record_files().is_empty());
    assert_eq!(env.marked(), vec![]);
}

#[test]
fn count_starts_distinct_healthy_instances_in_parallel() {
    let env = TestEnv::new();
    let docs = env.run(&["start", "--count", "3", "--name", "w", "--json"]).success().json();
    let docs = docs.as_array().unwrap();
    assert_eq!(docs.len(), 3);
    let mut ports: Vec<u64> = docs.iter().map(|d| d["port"].as_u64().unwrap()).collect();
    ports.dedup();
    assert_eq!(ports.len(), 3, "distinct ports: {docs:?}");
    let names: Vec<&str> = docs.iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["w-1", "w-2", "w-3"]);
    let listed = env.ls();
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|r| r["status"] == "running"), "{listed:?}");
    // The documented fields, in every `ls --json` entry.
    for field in [
        "schema",
        "id",
        "name",
        "pid",
        "pid_started_at",
        "hostname",
        "port",
        "url",
        "username",
        "dir",
        "opencode",
        "args",
        "env",
        "log",
        "started_at",
        "state",
        "status",
        "healthy",
        "version",
        "uptime_s",
        "rss_bytes",
    ] {
        assert!(listed[0].get(field).is_some(), "ls --json lacks {field}");
    }
    let stopped = env.run(&["stop", "--all", "--json"]).success().json();
    assert_eq!(stopped.as_array().unwrap().len(), 3);
    assert!(env.ls().is_empty());
    assert_eq!(env.marked(), vec![]);
}

#[test]
fn the_server_survives_the_shell_that_started_it() {
    let env = TestEnv::new();
    let ocx = env!("CARGO_BIN_EXE_ocx");
    let mut sh = Command::new("sh");
    env.apply_env(&mut sh);
    sh.env("OCX_HOME", &env.ocx_home)
        .env("OCX_OPENCODE", &env.opencode)
        .args(["-c", &format!("'{ocx}' start --name survivor >/dev/null 2>&1; exec sleep 300")])
        .process_group(0);
    let shell = Guard(sh.spawn().unwrap());
    // Until `ocx start` returned (the record says so): a SIGHUP during the start ends the start
    // as Ctrl-C does, which stops the server it was starting.
    let record = wait_for("the instance to run", Duration::from_secs(90), || {
        env.ls().into_iter().find(|r| r["status"] == "running" && r["state"] == "running")
    });
    // The terminal closes: its whole process group gets SIGHUP.
    // SAFETY: signals the group of the shell this test started.
    unsafe { libc::killpg(shell.0.id() as i32, libc::SIGHUP) };
    wait_for("the shell to exit", Duration::from_secs(10), || is_gone(shell.0.id()).then_some(()));
    assert_eq!(env.ls()[0]["status"], "running", "the server outlived its shell");
    assert!(!is_gone(pid_of(&record)));
}

#[test]
fn ls_all_shows_servers_ocx_does_not_manage() {
    let env = TestEnv::new();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cmd = Command::new(&env.opencode);
    env.apply_env(&mut cmd);
    cmd.args(["serve", "--port", &port.to_string()]).stdout(Stdio::null()).stderr(Stdio::null());
    let server = Guard(cmd.spawn().unwrap());
    let docs = env.run(&["ls", "--all", "--json"]).success().json();
    let found = docs.as_array().unwrap().iter().find(|d| d["pid"] == server.0.id()).cloned();
    let found = found.unwrap_or_else(|| panic!("ls --all lacks PID {}: {docs}", server.0.id()));
    assert_eq!(found["status"], "unmanaged");
    assert_eq!(found["port"], port);
    // Without --all it is not listed.
    assert!(env.ls().is_empty());
}

#[test]
fn attach_passes_credentials_through_the_environment() {
    let env = TestEnv::new();
    let started = env.start(&["--name", "tui"]);
    let password = env.secrets(started["id"].as_str().unwrap())["password"].as_str().unwrap().to_string();
    let out = env.root.path().join("attach.out");
    let fake = env.fake_binary(
        "fake-opencode",
        &format!(
            "echo \"args: $*\" > '{}'; echo \"pw: $OPENCODE_SERVER_PASSWORD\" >> '{}'; exit 7",
            out.display(),
            out.display()
        ),
    );
    env.run(&["attach", "tui", "--opencode", fake.to_str().unwrap(), "--", "--continue"]).code(7);
    let seen = std::fs::read_to_string(&out).unwrap();
    assert!(seen.contains(&format!("args: attach {} --continue", started["url"].as_str().unwrap())), "{seen}");
    assert!(seen.contains(&format!("pw: {password}")), "{seen}");
    assert!(!seen.lines().next().unwrap().contains(&password), "never on the command line");
}

#[test]
fn a_hung_server_shows_unhealthy_and_does_not_hold_up_ls() {
    let env = TestEnv::new();
    // A live process whose port accepts connections but never answers (the listen backlog).
    let sleeper = Guard(Command::new("sleep").arg("300").spawn().unwrap());
    let hung = TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_port = hung.local_addr().unwrap().port();
    let closed_port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    for i in 0..20 {
        let mut record = write_record(&env, &format!("hung{i:02}"), None);
        let port = if i == 0 { hung_port } else { closed_port };
        record["pid"] = sleeper.0.id().into();
        record["pid_started_at"] = start_time(sleeper.0.id()).into();
        record["port"] = port.into();
        record["url"] = format!("http://127.0.0.1:{port}").into();
        save_record(&env, &record);
    }
    let listed = env.ls();
    assert_eq!(listed.len(), 20);
    assert!(listed.iter().all(|r| r["status"] == "unhealthy" && r["healthy"] == false), "{listed:?}");
    drop(hung);
}

#[test]
fn logs_follow_prints_new_lines_as_they_come() {
    let env = TestEnv::new();
    let log = env.root.path().join("server.log");
    std::fs::write(&log, "old 1\nold 2\n").unwrap();
    let mut record = write_record(&env, "logs01", Some("tail"));
    record["log"] = log.to_str().unwrap().into();
    save_record(&env, &record);
    assert_eq!(env.run(&["logs", "tail", "-n", "1"]).success().stdout, "old 2\n");

    let child = env.ocx().args(["logs", "tail", "-f", "-n", "1"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut child = Guard(child);
    // Lines arrive on a channel, so a missing one fails the test after a deadline, never hangs it.
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let _ = tx.send(line.unwrap());
        }
    });
    let next = || rx.recv_timeout(Duration::from_secs(30)).expect("a line from ocx logs -f within 30 s");
    assert_eq!(next(), "old 2");
    std::fs::OpenOptions::new().append(true).open(&log).unwrap().write_all(b"new 3\n").unwrap();
    assert_eq!(next(), "new 3", "-f shows what is appended");
}
