//! Driving agents headlessly against real opencode: permission requests and questions are
//! always answered, `run --detach` and `wait`, `sessions`, ACTIVITY in `ls`, and `events`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::proxy::Proxy;
use crate::support::{Guard, TestEnv, session_of, wait_for};

fn model_saw(env: &TestEnv, needle: &str) -> bool {
    env.model.requests().iter().any(|r| r.to_string().contains(needle))
}

#[test]
fn permission_requests_are_rejected_by_default_and_allowed_when_asked_to() {
    let env = TestEnv::new();
    env.ask_permission_for_bash();
    let id = env.start(&["--name", "careful"])["id"].as_str().unwrap().to_string();
    // Inside the project: a path outside it asks for an `external_directory` permission first.
    let marker = env.project.join("ran");
    let prompt = format!("RUN:touch {}", marker.display());

    // As `opencode run`: rejected, said on stderr, the turn completes (exit 0), nothing ran.
    let run = env.run(&["run", "careful", &prompt]);
    run.success().stderr_has(&format!("permission bash (touch {}): rejected", marker.display()));
    assert!(!marker.exists(), "a rejected command ran");
    assert_eq!(crate::lifecycle::busy_count(&env.secrets(&id)), 0, "the session is idle, not waiting");

    // In JSON, a line for the request and the answer.
    let run = env.run(&["run", "careful", &prompt, "--format", "json"]);
    let lines: Vec<Value> = run.success().stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let answered = lines.iter().find(|l| l["type"] == "permission").unwrap_or_else(|| panic!("{}", run.stdout));
    assert_eq!(answered["reply"], "reject");
    assert_eq!(answered["permission"]["permission"], "bash");
    assert!(!marker.exists());

    // allow: said once as a warning, and the command runs.
    let run = env.run(&["run", "careful", &prompt, "--permission", "allow"]);
    run.success().stderr_has("warning: --permission allow").stderr_has("allowed once");
    assert!(marker.exists(), "an allowed command did not run");

    // ask without a terminal: a usage error before anything is sent.
    env.run(&["run", "careful", "RUN:true", "--permission", "ask"]).code(2).stderr_has("needs a terminal");
}

#[test]
fn the_agents_questions_are_dismissed_not_left_hanging() {
    let env = TestEnv::new();
    env.start(&["--name", "curious"]);
    let run = env.run(&["run", "curious", "ASK: which one?"]);
    run.success().stderr_has("question \"Pick one?\": dismissed");
    let run = env.run(&["run", "curious", "ASK: which one, in json", "--format", "json"]);
    let lines: Vec<Value> = run.success().stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.iter().any(|l| l["type"] == "question" && l["answers"].is_null()), "{}", run.stdout);
}

/// A tmux server of the test's own, ended when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// A server of its own for each run (never one that is still shutting down).
    fn new(env: &TestEnv, run: &str) -> Tmux {
        let socket = format!("ocx-{}-{run}", env.root.path().file_name().unwrap().to_string_lossy());
        Tmux { socket }
    }

    fn cmd(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").arg("-L").arg(&self.socket).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run `script` in a new window of 200 × 50 characters: a real terminal.
    fn run(&self, script: &Path) {
        self.cmd(&["new-session", "-d", "-x", "200", "-y", "50", "sh", script.to_str().unwrap()]);
    }

    fn screen(&self) -> String {
        self.cmd(&["capture-pane", "-p"])
    }

    /// Wait until the screen shows `text`; on a timeout, fail with what it shows.
    fn wait_for_text(&self, text: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !self.screen().contains(text) {
            assert!(
                std::time::Instant::now() < deadline,
                "no {text:?} on the screen within a minute:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.cmd(&["kill-server"]);
    }
}

/// A shell script that runs `ocx ARGS` with the test's environment, stdout to `out`, its exit
/// code to `code`.
fn script(env: &TestEnv, name: &str, args: &str) -> (PathBuf, PathBuf, PathBuf) {
    let dir = env.root.path();
    let (out, code) = (dir.join(format!("{name}.out")), dir.join(format!("{name}.code")));
    let exports = env.shell_exports();
    let text = format!(
        // The exit code is written aside and renamed: a reader never sees the file empty.
        "{exports}cd '{}'\n'{}' {args} > '{}'\necho $? > '{code}.tmp' && mv '{code}.tmp' '{code}'\nsleep 600\n",
        env.project.display(),
        env!("CARGO_BIN_EXE_ocx"),
        out.display(),
        code = code.display()
    );
    let path = dir.join(format!("{name}.sh"));
    std::fs::write(&path, text).unwrap();
    (path, out, code)
}

#[test]
fn ask_asks_at_the_terminal_and_both_answers_work() {
    let env = TestEnv::new();
    env.ask_permission_for_bash();
    env.start(&["--name", "tty"]);
    let marker = env.project.join("allowed");
    for (key, runs) in [("r", false), ("o", true)] {
        let (script, _, code) =
            script(&env, key, &format!("run tty 'RUN:touch {}' --permission ask", marker.display()));
        let tmux = Tmux::new(&env, key);
        tmux.run(&script);
        tmux.wait_for_text("allow [o]nce, [a]lways, or [r]eject?");
        tmux.cmd(&["send-keys", key, "Enter"]);
        let exit = wait_for("ocx run to finish", Duration::from_secs(60), || std::fs::read_to_string(&code).ok());
        assert_eq!(exit.trim(), "0", "{}", tmux.screen());
        let shown = if runs { "allowed once" } else { "rejected" };
        assert!(
            tmux.screen().contains(&format!("permission bash (touch {}): {shown}", marker.display())),
            "{}",
            tmux.screen()
        );
        assert_eq!(marker.exists(), runs, "answered {key}");
    }

    // The agent's question, answered at the terminal by its option's number.
    let (script, _, code) = script(&env, "question", "run tty 'ASK: pick' --permission ask");
    let tmux = Tmux::new(&env, "question");
    tmux.run(&script);
    tmux.wait_for_text("Pick one?");
    tmux.cmd(&["send-keys", "2", "Enter"]);
    let exit = wait_for("ocx run to finish", Duration::from_secs(60), || std::fs::read_to_string(&code).ok());
    assert_eq!(exit.trim(), "0", "{}", tmux.screen());
    assert!(tmux.screen().contains("answered B"), "{}", tmux.screen());
    assert!(model_saw(&env, "=\\\"B\\\""), "the model got the answer");
}

/// `--timeout` holds while ocx waits at the terminal: the question is left, the prompt aborted.
#[test]
fn ask_gives_up_at_the_deadline() {
    let env = TestEnv::new();
    env.ask_permission_for_bash();
    let id = env.start(&["--name", "late"])["id"].as_str().unwrap().to_string();
    let (script, _, code) = script(&env, "late", "run late 'RUN:true' --permission ask --timeout 30");
    let tmux = Tmux::new(&env, "late");
    tmux.run(&script);
    tmux.wait_for_text("allow [o]nce, [a]lways, or [r]eject?");
    let exit = wait_for("ocx run to give up", Duration::from_secs(60), || std::fs::read_to_string(&code).ok());
    assert_eq!(exit.trim(), "4", "{}", tmux.screen());
    assert!(tmux.screen().contains("timed out; aborted the prompt on the server"), "{}", tmux.screen());
    wait_for("the session to be idle", Duration::from_secs(10), || {
        (crate::lifecycle::busy_count(&env.secrets(&id)) == 0).then_some(())
    });
}

#[test]
fn detach_then_wait_on_several_instances() {
    let env = TestEnv::new();
    let docs = env.run(&["start", "--count", "2", "--name", "w", "--json"]).success().json();
    assert_eq!(docs.as_array().unwrap().len(), 2);
    let a = env.run(&["run", "--detach", "w-1", "SLOW answer from one"]).success().stdout.trim().to_string();
    let b = env.run(&["run", "--detach", "w-2", "hello from two"]).success().stdout.trim().to_string();
    assert!(a.starts_with("ses_") && b.starts_with("ses_"), "{a} {b}");
    let waited = env.run(&["wait", &b]);
    assert_eq!(waited.success().stdout, "echo: hello from two\n", "{}", waited.stderr);
    let waited = env.run(&["wait", &a]);
    let ticks: String = (0..40).map(|i| format!("tick {i} ")).collect();
    assert_eq!(waited.success().stdout, format!("{ticks}\n"), "the whole answer, as run prints it: {}", waited.stderr);
    // Every instance of a user knows every session (one shared database); `wait` must follow
    // the one that works on it, also right after --detach returned. Many rounds: a race.
    for round in 0..6 {
        let text = format!("round {round} on the second instance");
        let s = env.run(&["run", "--detach", "w-2", &text]).success().stdout.trim().to_string();
        assert_eq!(env.run(&["wait", &s]).success().stdout, format!("echo: {text}\n"), "round {round}");
    }
    // An idle session: its last answer at once; in JSON lines as `run` prints them.
    let json = env.run(&["wait", &b, "--format", "json"]);
    let lines: Vec<Value> = json.success().stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let types: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["step_start", "text", "step_finish"], "{}", json.stdout);
    assert_eq!(lines[1]["part"]["text"], "echo: hello from two");
    // Exit codes as run's.
    let slow = env.run(&["run", "--detach", "w-1", "SLOW answer to time out"]).success().stdout.trim().to_string();
    env.run(&["wait", &slow, "--timeout", "1"]).code(4).stderr_has("timed out");
    env.run(&["wait", "ses_nosuchsession"]).code(3).stderr_has("no running instance has session");
    let json = env.run(&["run", "--detach", "w-2", "x", "--format", "json"]).success().json();
    assert_eq!(json["instance"], docs[1]["id"]);
}

#[test]
fn wait_answers_what_a_detached_prompt_asked_before() {
    let env = TestEnv::new();
    env.ask_permission_for_bash();
    let id = env.start(&["--name", "later"])["id"].as_str().unwrap().to_string();
    let marker = env.project.join("never");
    let session = env
        .run(&["run", "--detach", "later", &format!("RUN:touch {}", marker.display())])
        .success()
        .stdout
        .trim()
        .to_string();
    wait_for("the permission request", Duration::from_secs(60), || {
        (crate::lifecycle::pending_permissions(&env.secrets(&id)) > 0).then_some(())
    });
    let waited = env.run(&["wait", &session]);
    waited.success().stderr_has("rejected");
    assert!(!marker.exists());
    assert_eq!(crate::lifecycle::busy_count(&env.secrets(&id)), 0);
}

#[test]
fn ls_shows_activity_and_sessions_lists_them() {
    let env = TestEnv::new();
    env.ask_permission_for_bash();
    let id = env.start(&["--name", "act"])["id"].as_str().unwrap().to_string();
    let activity = || env.listed(&id)["activity"].as_str().unwrap_or("").to_string();
    // Right after a start the server's first session request sets up the project, which on a
    // loaded machine outlasts ls's health budget (ACTIVITY `-`, null): idle soon after.
    wait_for("idle", Duration::from_secs(30), || (activity() == "idle").then_some(()));
    let first = session_of(env.run(&["run", "act", "first words"]).success());
    let slow = crate::lifecycle::prompt_async(&env.secrets(&id), "SLOW busy for a while");
    wait_for("busy 1", Duration::from_secs(30), || (activity() == "busy 1").then_some(()));
    let asking = crate::lifecycle::prompt_async(&env.secrets(&id), "RUN:true");
    wait_for("asking", Duration::from_secs(60), || activity().starts_with("asking").then_some(()));
    assert!(env.run(&["ls"]).success().stdout.contains("asking"));

    let listed = env.run(&["sessions", "act", "--json"]).success().json();
    let ids: Vec<&str> = listed.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [asking.as_str(), slow.as_str(), first.as_str()], "newest first");
    let by_id = |id: &str| listed.as_array().unwrap().iter().find(|s| s["id"] == id).unwrap().clone();
    assert_eq!(by_id(&asking)["status"], "asking");
    assert_eq!(by_id(&slow)["status"], "busy");
    assert_eq!(by_id(&first)["status"], "idle");
    assert_eq!(by_id(&first)["messages"], 2, "the prompt and its answer");
    assert_eq!(by_id(&first)["title"], "first words");
    let table = env.run(&["sessions", "act"]).success().stdout.clone();
    assert!(table.starts_with("ID") && table.contains("first words"), "{table}");
}

/// `ocx events ARGS` in the background, its lines on a channel.
fn events(env: &TestEnv, args: &[&str]) -> (Guard, std::sync::mpsc::Receiver<String>) {
    let mut child: Child = env
        .ocx()
        .arg("events")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = crate::support::stdout_lines(&mut child);
    (Guard(child), rx)
}

/// Lines from `rx` until one satisfies `want` (within a minute); all of them.
fn until(rx: &std::sync::mpsc::Receiver<String>, what: &str, mut want: impl FnMut(&str) -> bool) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx.recv_timeout(left).unwrap_or_else(|_| panic!("no {what} within a minute in {seen:#?}"));
        let done = want(&line);
        seen.push(line);
        if done {
            return seen;
        }
    }
}

#[test]
fn events_follow_every_instance_as_json_and_as_lines() {
    let env = TestEnv::new();
    let (_json, json) = events(&env, &["--all", "--json"]);
    // Started after `events`: --all picks them up.
    let a = env.start(&["--name", "ea"])["id"].as_str().unwrap().to_string();
    let b = env.start(&["--name", "eb"])["id"].as_str().unwrap().to_string();
    let (mut human, lines) = events(&env, &["ea", "--text"]);
    until(&lines, "connected", |l| l.ends_with("ea  connected"));
    let sa = session_of(env.run(&["run", "ea", "RUN:echo from-ea"]).success());
    let sb = session_of(env.run(&["run", "eb", "hello eb"]).success());

    let mut idle = std::collections::HashSet::new();
    let stderr = std::fs::read_to_string(env.root.path().join("events2.err")).unwrap_or_default();
    assert!(stderr.is_empty(), "ocx events --all --json said: {stderr}");
    until(&json, "both sessions idle", |l| {
        let event: Value = serde_json::from_str(l).unwrap();
        if event["type"] == "session.idle" {
            idle.insert((
                event["instance"].as_str().unwrap().to_string(),
                event["properties"]["sessionID"].as_str().unwrap().to_string(),
            ));
        }
        idle.contains(&(a.clone(), sa.clone())) && idle.contains(&(b.clone(), sb.clone()))
    });

    let seen = until(&lines, "the session going idle", |l| l.contains(&sa) && l.ends_with("idle"));
    let text = seen.join("\n");
    assert!(text.contains(&format!("ea  {sa}  busy")), "{text}");
    assert!(text.contains("tool bash: echo from-ea (completed)"), "{text}");
    assert!(text.contains("message finished"), "{text}");
    assert!(text.contains("text: tool finished"), "{text}");
    // (By the instance column: a random session id may contain "eb".)
    assert!(!seen.iter().any(|l| l.contains("  eb  ")), "only the instance named: {text}");

    // The server is killed and restarted by its watcher: the stream comes back, the gap marked.
    let pid = env.listed(&a)["pid"].as_u64().unwrap().to_string();
    Command::new("kill").args(["-KILL", &pid]).status().unwrap();
    let seen = until(&lines, "the reconnection", |l| l.contains("reconnected after"));
    assert!(seen.iter().any(|l| l.ends_with("disconnected; reconnecting")), "{seen:#?}");

    // Stopped: `events` on named instances ends, with 1.
    env.run(&["stop", "ea"]).success();
    let status = wait_for("events to exit", Duration::from_secs(30), || human.0.try_wait().unwrap());
    assert_eq!(status.code(), Some(1));
    // With --all it keeps waiting; Ctrl-C ends it with 0.
    let mut json_child = _json;
    Command::new("kill").args(["-INT", &json_child.0.id().to_string()]).status().unwrap();
    let status = wait_for("events --all to exit", Duration::from_secs(10), || json_child.0.try_wait().unwrap());
    assert_eq!(status.code(), Some(0));
}

/// A stream that stalls (open, silent) counts as dropped after 30 s: `events` says so, and says
/// when it is back.
#[test]
fn events_get_a_stalled_stream_back() {
    let env = TestEnv::new();
    let started = env.start(&["--name", "quiet"]);
    let id = started["id"].as_str().unwrap().to_string();
    let proxy = Proxy::stall(started["port"].as_u64().unwrap() as u16, "session.status");
    env.edit_record(&id, |r| r["url"] = format!("http://127.0.0.1:{}", proxy.port).into());
    let (_events, lines) = events(&env, &["quiet"]);
    until(&lines, "connected", |l| l.ends_with("quiet  connected"));
    // Plain requests (through the proxy too): the only event stream is `events`'.
    crate::lifecycle::prompt_async(&env.secrets(&id), "hello through a stalled stream");
    let seen = until(&lines, "the disconnection", |l| l.ends_with("quiet  disconnected; reconnecting"));
    let stalled = proxy.cut_at.get().expect("the proxy stalled the event stream").elapsed();
    assert!(stalled > Duration::from_secs(29), "silent for {stalled:?} only: {seen:#?}");
    until(&lines, "the reconnection", |l| l.contains("quiet  reconnected after"));
    let stalled = proxy.cut_at.get().unwrap().elapsed();
    assert!(stalled < Duration::from_secs(45), "back {stalled:?} after the stall");
}
