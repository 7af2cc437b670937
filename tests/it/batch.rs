//! `ocx batch` against real opencode servers and the fake model: a pool it starts, a pool of
//! instances the user started, a worktree per task, a failing task, a server SIGKILLed
//! mid-task, Ctrl-C and SIGTERM mid-batch, resuming with `--results`, and bad input.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::lifecycle::busy_count;
use crate::support::{TestEnv, finish, wait_for};

/// The SLOW answer of the fake model, as the batch reports it.
fn ticks() -> String {
    (0..40).map(|i| format!("tick {i} ")).collect()
}

/// A tasks file of `lines` in the test's root.
fn tasks(env: &TestEnv, name: &str, lines: &[&str]) -> PathBuf {
    let path = env.root.path().join(name);
    std::fs::write(&path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    path
}

fn spawn(env: &TestEnv, args: &[&str]) -> Child {
    env.ocx().args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

fn signal(name: &str, pid: u32) {
    assert!(Command::new("kill").args([&format!("-{name}"), &pid.to_string()]).status().unwrap().success());
}

/// The result lines of `--json` output, by task name.
fn results(stdout: &str) -> Vec<Value> {
    stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

fn by_name<'a>(results: &'a [Value], name: &str) -> &'a Value {
    results.iter().find(|r| r["name"] == name).unwrap_or_else(|| panic!("no result for {name}: {results:?}"))
}

fn str_of(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn six_tasks_over_three_instances_it_starts() {
    let env = TestEnv::new();
    let lines: Vec<String> = (1..=6).map(|i| format!("SLOW task {i}")).collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let file = tasks(&env, "six.txt", &lines);
    let run = env.run(&["batch", str_of(&file), "--parallel", "3", "--json"]);
    let out = results(&run.success().stdout);
    assert_eq!(out.len(), 6, "{}", run.stderr);
    for i in 1..=6 {
        let r = by_name(&out, &format!("task-{i}"));
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(r["exit_code"], 0);
        assert_eq!(r["index"], i);
        assert_eq!(r["answer"], ticks().as_str(), "{r}");
        assert!(r["session"].as_str().unwrap().starts_with("ses_"), "{r}");
        assert!(r["instance"].as_str().unwrap().starts_with("batch-"), "{r}");
        assert!(r["tokens"]["total"].as_u64().unwrap() > 0, "{r}");
        assert!(env.model.requests().iter().any(|q| q.to_string().contains(&format!("SLOW task {i}"))));
    }
    let instances: std::collections::HashSet<&str> = out.iter().map(|r| r["instance"].as_str().unwrap()).collect();
    assert!(instances.len() <= 3, "{instances:?}");
    let most = env.model.most_at_once();
    assert!((2..=3).contains(&most), "{most} agent calls at once");
    // Not a terminal: no progress, no table decoration on stderr.
    assert!(!run.stderr.contains("running"), "{}", run.stderr);
    // The instances it started are stopped, and nothing of theirs runs.
    assert_eq!(env.ls(), Vec::<Value>::new());
    assert_eq!(env.marked(), vec![]);
}

#[test]
fn on_named_instances_a_failing_task_resume_and_bad_input() {
    let env = TestEnv::new();
    env.run(&["start", "--count", "2", "--name", "w", "--json"]).success();
    let before = env.model.requests().len();

    // Bad input: exit 2 naming the line, before anything is sent.
    let bad = tasks(&env, "bad.jsonl", &["# tasks", "hello", "{\"prompt\": \"x\", \"nmae\": \"typo\"}"]);
    env.run(&["batch", str_of(&bad), "--on", "w-1"]).code(2).stderr_has("line 3: not a task").stderr_has("nmae");
    let bad = tasks(&env, "bad2.jsonl", &["{\"prompt\": \"x\"", "hello"]);
    env.run(&["batch", str_of(&bad), "--on", "w-1"]).code(2).stderr_has("bad2.jsonl line 1");
    let empty =
        tasks(&env, "dup.jsonl", &["{\"prompt\": \"a\", \"name\": \"n\"}", "{\"prompt\": \"b\", \"name\": \"n\"}"]);
    env.run(&["batch", str_of(&empty), "--on", "w-1"]).code(2).stderr_has("line 2: the name \"n\" is taken by line 1");
    let good = tasks(&env, "good.txt", &["hello one"]);
    env.run(&["batch", str_of(&good), "--on", "nosuch"]).code(3);
    env.run(&["batch", str_of(&good)]).code(2).stderr_has("--parallel");
    env.run(&["batch", str_of(&good), "--on", "w-1", "--permission", "ask"]).code(2).stderr_has("one terminal");
    env.run(&["batch", "/no/such/tasks", "--on", "w-1"]).code(2).stderr_has("cannot read the tasks file");
    assert_eq!(env.model.requests().len(), before, "nothing was sent");
    let sessions = env.run(&["sessions", "w-1", "--json"]).success().json();
    assert_eq!(sessions.as_array().unwrap().len(), 0, "no session was made: {sessions}");

    // A dead instance in the pool takes no task from the living: every task runs on w-1.
    let dead = env.start(&["--name", "gone", "--restart", "no"]);
    signal("KILL", dead["pid"].as_u64().unwrap() as u32);
    wait_for("the instance to be dead", Duration::from_secs(20), || {
        (env.listed(dead["id"].as_str().unwrap())["status"] == "dead").then_some(())
    });
    let three = tasks(&env, "three.txt", &["hello a", "hello b", "hello c"]);
    let run = env.run(&["batch", str_of(&three), "--on", "gone,w-1", "--json"]);
    run.success().stderr_has("instance gone takes no more tasks");
    let out = results(&run.stdout);
    assert_eq!(out.len(), 3, "{}", run.stderr);
    assert!(out.iter().all(|r| r["status"] == "ok" && r["instance"] == "w-1"), "{out:?}");
    env.run(&["stop", "gone"]).success();

    // Four tasks on two instances, one of them failing; results appended as they finish.
    let file = tasks(
        &env,
        "tasks.jsonl",
        &[
            "hello one",
            "{\"prompt\": \"hello two\", \"name\": \"two\"}",
            "",
            "{\"prompt\": \"FAIL on purpose\", \"name\": \"bad\"}",
            "hello four",
        ],
    );
    let saved = env.root.path().join("results.jsonl");
    let args = ["batch", str_of(&file), "--on", "w-1,w-2", "--retries", "0", "--results", str_of(&saved)];
    let run = env.run(&args);
    run.code(1);
    // The table: every task with its status and answer.
    let table = &run.stdout;
    assert!(table.lines().next().unwrap().contains("STATUS"), "{table}");
    assert!(table.contains("echo: hello two") && table.contains("failed"), "{table}");
    let saved_lines = results(&std::fs::read_to_string(&saved).unwrap());
    assert_eq!(saved_lines.len(), 4);
    assert_eq!(by_name(&saved_lines, "task-1")["answer"], "echo: hello one");
    assert_eq!(by_name(&saved_lines, "two")["answer"], "echo: hello two");
    assert_eq!(by_name(&saved_lines, "task-4")["status"], "ok");
    let bad = by_name(&saved_lines, "bad");
    assert_eq!((&bad["status"], &bad["exit_code"]), (&"failed".into(), &1.into()), "{bad}");
    assert!(bad["error"].as_str().unwrap().contains("the model failed"), "{bad}");
    for r in &saved_lines {
        assert!(["w-1", "w-2"].contains(&r["instance"].as_str().unwrap()), "{r}");
    }
    // The instances are the user's: still running, nothing busy.
    assert_eq!(env.ls().len(), 2);

    // A rerun with the same --results runs only what did not succeed.
    let asked = env.model.requests().len();
    let rerun = env.run(&args);
    rerun.code(1).stderr_has("skipping 3 task(s) that succeeded");
    let again = results(&std::fs::read_to_string(&saved).unwrap());
    assert_eq!(again.len(), 5);
    assert_eq!(again[4]["name"], "bad");
    let prompts: Vec<String> = env.model.requests()[asked..].iter().map(|r| r.to_string()).collect();
    assert!(prompts.iter().all(|p| !p.contains("hello one") && !p.contains("hello four")), "{prompts:?}");

    // From stdin, as JSON lines out.
    let mut child = env
        .ocx()
        .args(["batch", "-", "--on", "w-2", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hello from stdin\n").unwrap();
    let run = finish(child, "ocx batch -");
    let out = results(&run.success().stdout);
    assert_eq!(
        (out.len(), &out[0]["answer"], &out[0]["instance"]),
        (1, &"echo: hello from stdin".into(), &"w-2".into())
    );
}

/// A server SIGKILLed mid-task: its watcher brings it back and the task is sent again in the
/// same session; it still ends `ok`.
#[test]
fn a_task_whose_server_is_killed_is_sent_again_and_succeeds() {
    let env = TestEnv::new();
    let started = env.start(&["--name", "k"]);
    let pid = started["pid"].as_u64().unwrap() as u32;
    let file = tasks(&env, "one.txt", &["SLOW task killed midway"]);
    let child = spawn(&env, &["batch", str_of(&file), "--on", "k", "--json"]);
    wait_for("the model to be asked", Duration::from_secs(30), || {
        env.model.requests().iter().any(|r| r.to_string().contains("SLOW task killed midway")).then_some(())
    });
    signal("KILL", pid);
    let run = finish(child, "ocx batch");
    let out = results(&run.success().stdout);
    assert_eq!(out.len(), 1, "{}", run.stderr);
    assert_eq!(out[0]["status"], "ok", "{}", out[0]);
    assert_eq!(out[0]["resent"], 1, "{}", out[0]);
    assert_eq!(out[0]["answer"], ticks().as_str());
    let now = env.listed(started["id"].as_str().unwrap());
    assert_ne!(now["pid"].as_u64().unwrap() as u32, pid, "the watcher restarted it");
}

/// Ctrl-C mid-batch: the running sessions are aborted, the instances the batch started are
/// stopped, exit 130. SIGTERM on a pool of the user's: aborted, exit 143, the instances left
/// running with nothing busy.
#[test]
fn interrupted_batches_abort_their_tasks_and_stop_what_they_started() {
    let env = TestEnv::new();
    // Answers that end only when aborted: whatever finishes did so because ocx aborted it.
    let lines: Vec<String> = (1..=5).map(|i| format!("ENDLESS interrupted {i}")).collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let file = tasks(&env, "five.txt", &lines);
    let child = spawn(&env, &["batch", str_of(&file), "--parallel", "2", "--json"]);
    wait_for("two tasks to be running", Duration::from_secs(60), || (env.model.most_at_once() == 2).then_some(()));
    signal("INT", child.id());
    let run = finish(child, "ocx batch");
    run.code(130).stderr_has("interrupted");
    let out = results(&run.stdout);
    assert!(out.iter().all(|r| r["status"] == "aborted"), "{out:?}");
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(env.ls(), Vec::<Value>::new());
    assert_eq!(env.marked(), vec![]);

    let started = env.start(&["--name", "mine"]);
    let record = env.secrets(started["id"].as_str().unwrap());
    let child = spawn(&env, &["batch", str_of(&file), "--on", "mine"]);
    wait_for("the task to be busy", Duration::from_secs(30), || (busy_count(&record) == 1).then_some(()));
    signal("TERM", child.id());
    let run = finish(child, "ocx batch");
    run.code(143);
    assert!(run.stdout.contains("aborted"), "{}", run.stdout);
    wait_for("the session to be idle", Duration::from_secs(10), || (busy_count(&record) == 0).then_some(()));
    assert_eq!(env.ls().len(), 1, "the user's instance runs on");
    assert_eq!(env.ls()[0]["status"], "running");
}

/// `--worktree`: every task in an instance, worktree and branch of its own; its work kept.
#[test]
fn worktree_tasks_each_leave_their_file_on_their_own_branch() {
    let env = TestEnv::new();
    let repo = env.project.clone();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "init"]);
    let file = tasks(&env, "wt.txt", &["RUN:echo one > one.txt", "RUN:echo two > two.txt", "hello, no change"]);
    let run = env.run(&["batch", str_of(&file), "--parallel", "2", "--worktree", "--json"]);
    let out = results(&run.success().stdout);
    assert_eq!(out.len(), 3, "{}", run.stderr);
    for (name, written) in [("task-1", Some("one")), ("task-2", Some("two")), ("task-3", None)] {
        let r = by_name(&out, name);
        assert_eq!(r["status"], "ok", "{r}");
        let branch = r["worktree"]["branch"].as_str().unwrap();
        assert!(branch.starts_with("ocx/batch-"), "{r}");
        match written {
            Some(word) => {
                assert_eq!((&r["worktree"]["kept"], &r["worktree"]["changed_files"]), (&true.into(), &1.into()), "{r}");
                let path = PathBuf::from(r["worktree"]["path"].as_str().unwrap());
                assert_eq!(std::fs::read_to_string(path.join(format!("{word}.txt"))).unwrap(), format!("{word}\n"));
                assert!(git(&["branch", "--list", branch]).contains(branch), "{branch} kept");
            }
            // Nothing changed: the worktree and its branch are gone.
            None => {
                assert_eq!(r["worktree"]["kept"], false, "{r}");
                assert_eq!(git(&["branch", "--list", branch]), "");
            }
        }
    }
    run.stderr_has("kept worktree");
    assert_eq!(git(&["status", "--porcelain"]), "", "the main checkout is untouched");
    assert_eq!(env.ls(), Vec::<Value>::new());
    assert_eq!(env.marked(), vec![]);
}
