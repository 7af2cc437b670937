//! The edge cases that lose work in long runs (issue 18): gc racing a restart, SIGTERM and
//! SIGHUP, a restarting instance, signals only to what ocx can vouch for, failed restarts kept,
//! half-failed spawns, readiness without the ready line, opencode 2.x. Real opencode where a
//! prompt is involved; the stand-in where a server must crash or answer on cue.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{TestEnv, finish, is_gone, session_of, wait_for};

fn pid_of(record: &Value) -> u32 {
    record["pid"].as_u64().unwrap() as u32
}

fn watcher_of(record: &Value) -> u32 {
    record["watcher"]["pid"].as_u64().unwrap_or_else(|| panic!("no watcher in {record}")) as u32
}

fn signal(name: &str, pid: u32) {
    assert!(Command::new("kill").args([&format!("-{name}"), &pid.to_string()]).status().unwrap().success());
}

fn spawn(env: &TestEnv, args: &[&str]) -> Child {
    env.ocx().args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

/// `ocx ARGS` with test hooks (`OCX_TEST_*`) in its environment, spawned.
fn spawn_with(env: &TestEnv, args: &[&str], vars: &[(&str, &std::ffi::OsStr)]) -> Child {
    let mut cmd = env.ocx();
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (key, value) in vars {
        cmd.env(key, value);
    }
    cmd.spawn().unwrap()
}

/// `ocx ARGS` with test hooks in its environment, to completion.
fn run_with(env: &TestEnv, args: &[&str], vars: &[(&str, &std::ffi::OsStr)]) -> crate::support::Run {
    finish(spawn_with(env, args, vars), &format!("ocx {}", args.join(" ")))
}

/// A pause pinned at `point` (`OCX_TEST_PAUSE_AT`) that goes on once resumed
/// (`OCX_TEST_RESUME`), for an ocx or a watcher.
struct Pin {
    point: &'static str,
    resume: std::path::PathBuf,
}

impl Pin {
    fn new(env: &TestEnv, point: &'static str, round: usize) -> Pin {
        Pin { point, resume: env.root.path().join(format!("resume-{}-{round}", point.replace(':', "-"))) }
    }

    fn vars(&self) -> [(&'static str, &std::ffi::OsStr); 2] {
        [("OCX_TEST_PAUSE_AT", self.point.as_ref()), ("OCX_TEST_RESUME", self.resume.as_os_str())]
    }

    fn wait_paused(&self) {
        let mut at = self.resume.clone().into_os_string();
        at.push(".at");
        wait_for(&format!("the pause at {}", self.point), Duration::from_secs(10), || {
            std::path::Path::new(&at).exists().then_some(())
        });
    }

    fn resume(&self) {
        std::fs::write(&self.resume, "").unwrap();
    }
}

/// The PID a stand-in printed into its log after `what` (`child`, `stranger PID`).
fn printed_pid(env: &TestEnv, id: &str, what: &str) -> u32 {
    wait_for(&format!("the stand-in's {what}"), Duration::from_secs(10), || {
        let log = std::fs::read_to_string(env.ocx_home.join(format!("logs/{id}.log"))).ok()?;
        let rest =
            log.lines().rev().find_map(|l| l.split_once(&format!("stand-in: {what} ")).map(|(_, r)| r.to_string()))?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Defect 1: a crashed server whose watcher is restarting it (at once, while a marked child
/// still holds the log pipe) is never removed by a gc in the gap, whatever the timing.
#[test]
fn gc_never_removes_an_instance_its_watcher_is_restarting() {
    let env = TestEnv::new();
    env.control("child", "");
    // A fresh instance each round: a crash is restarted at once only the first time (then
    // the watcher backs off, and gives up after five).
    for round in 0..8 {
        let before = env.start_stand_in(&[]);
        let id = before["id"].as_str().unwrap().to_string();
        signal("KILL", pid_of(&before));
        let report = env.run(&["gc", "--json"]).success().json();
        assert_eq!(report["records"], Value::Array(vec![]), "round {round}: gc removed a restarting instance");
        assert!(env.record_files().contains(&format!("{id}.json")), "round {round}");
        let back = wait_for("the restarted server", Duration::from_secs(30), || {
            Some(env.listed(&id)).filter(|r| r["status"] == "running" && r["pid"] != before["pid"])
        });
        assert_eq!(back["restarts"], 1, "round {round}");
        env.run(&["stop", &id]).success();
    }
}

/// Defect 2: gc's decision is checked again under the instance's lock, right before acting:
/// a dead instance gc decided to remove, restarted meanwhile, is left running. The order
/// pinned (gc paused between its survey and acting), then unpinned, many rounds.
#[test]
fn gc_never_stops_an_instance_restarted_after_it_decided() {
    let env = TestEnv::new();
    let dead_instance = || {
        let started = env.start_stand_in(&["--restart", "no"]);
        let id = started["id"].as_str().unwrap().to_string();
        signal("KILL", pid_of(&started));
        wait_for("the instance to be dead", Duration::from_secs(10), || {
            Some(env.listed(&id)).filter(|r| r["status"] == "dead" && r["supervised"] == false)
        });
        id
    };
    for round in 0..3 {
        let id = dead_instance();
        let pin = Pin::new(&env, "gc:decided", round);
        let gc = spawn_with(&env, &["gc", "--json"], &pin.vars());
        pin.wait_paused();
        env.run(&["restart", &id]).success();
        pin.resume();
        let report = finish(gc, "ocx gc").success().json();
        assert_eq!(report["records"], Value::Array(vec![]), "round {round}: {report}");
        assert_eq!(report["busy"], serde_json::json!([id]), "round {round}: {report}");
        let listed = env.listed(&id);
        assert_eq!(listed["status"], "running", "round {round}");
        env.run(&["stop", &id]).success();
    }
    for round in 0..6 {
        let id = dead_instance();
        let restart = spawn(&env, &["restart", &id]);
        let gc = env.run(&["gc", "--json"]).success().json();
        let restarted = finish(restart, "ocx restart");
        if restarted.code == Some(0) {
            // The restart won: gc must not have stopped it afterwards.
            let listed = env.listed(&id);
            assert_eq!(listed["status"], "running", "round {round}: {gc}");
            assert!(!is_gone(pid_of(&listed)), "round {round}");
            env.run(&["stop", &id]).success();
        } else {
            // gc removed the dead record first: the restart says the instance is gone.
            assert!(restarted.stderr.contains("gone"), "round {round}: {}", restarted.stderr);
            assert!(env.record_files().is_empty(), "round {round}");
        }
        assert_eq!(env.marked(), vec![], "round {round}");
    }
}

/// Defect 3: SIGTERM (`timeout 60 ocx run …`) and SIGHUP end `run` as Ctrl-C does: the prompt
/// is aborted on the server, exit 143 and 129.
#[test]
fn sigterm_and_sighup_abort_the_prompt_like_ctrl_c() {
    let env = TestEnv::new();
    let started = env.start(&[]);
    let id = started["id"].as_str().unwrap().to_string();
    let record = env.secrets(&id);
    for (sig, code) in [("TERM", 143), ("HUP", 129)] {
        let prompt = format!("SLOW answer ended by SIG{sig}");
        let child = spawn(&env, &["run", &id, &prompt]);
        wait_for("the model to be asked", Duration::from_secs(30), || {
            env.model.requests().iter().any(|r| r.to_string().contains(&prompt)).then_some(())
        });
        signal(sig, child.id());
        let run = finish(child, "ocx run");
        run.code(code).stderr_has("aborted the prompt on the server");
        wait_for("the session to be idle on the server", Duration::from_secs(10), || {
            (crate::lifecycle::busy_count(&record) == 0).then_some(())
        });
        // Aborted, not finished on its own: the SLOW answer's last tick never came.
        let session = crate::support::session_of(&run);
        let answer = crate::lifecycle::messages(&record, &session).to_string();
        assert!(!answer.contains("tick 39"), "SIG{sig}: the prompt ran to its end: {answer}");
    }
}

/// Defect 3: an `ocx start` ended by SIGTERM stops what it was starting and leaves no record.
#[test]
fn sigterm_during_start_leaves_no_starting_record() {
    let env = TestEnv::new();
    env.control("silent", "");
    let stand_in = env.stand_in();
    let dir = format!("STAND_IN_DIR={}", env.control_dir().display());
    let child = spawn(&env, &["start", "--opencode", stand_in.to_str().unwrap(), "--env", &dir]);
    wait_for("the record of the start", Duration::from_secs(10), || (!env.record_files().is_empty()).then_some(()));
    signal("TERM", child.id());
    finish(child, "ocx start").code(143);
    assert!(env.record_files().is_empty(), "{:?}", env.record_files());
    assert_eq!(env.marked(), vec![]);
}

/// Defect 4: `run` on an instance its watcher is bringing back waits for it (saying so)
/// instead of failing; a dead one fails at once with the `ocx restart` hint.
#[test]
fn run_waits_for_an_instance_that_is_restarting() {
    let env = TestEnv::new();
    let started = env.start(&["--name", "phoenix"]);
    signal("KILL", pid_of(&started));
    let run = env.run(&["run", "phoenix", "are you back?"]);
    run.success();
    assert!(run.stdout.contains("echo: are you back?"), "{}", run.stdout);
    // Whether it caught the restart depends on timing; a second crash is caught for sure by
    // asking before the watcher could even record it.
    let back = env.listed(started["id"].as_str().unwrap());
    signal("KILL", pid_of(&back));
    let run = env.run(&["run", "phoenix", "and again?"]);
    run.success().stderr_has("waiting until it is healthy");
    session_of(&run);
}

/// Defect 5: the polite signal goes to the vouched-for server only, not to its process group:
/// a group member without the instance's marker is never signalled.
#[test]
fn a_group_member_without_the_marker_is_not_signalled() {
    let env = TestEnv::new();
    env.control("stranger", "");
    let id = env.start_stand_in(&[])["id"].as_str().unwrap().to_string();
    let stranger = printed_pid(&env, &id, "stranger PID");
    env.run(&["stop", &id]).success();
    assert!(!is_gone(stranger), "the stop signalled a process without the marker");
    signal("KILL", stranger);
}

/// Defect 8: a restart that fails after the old server was ended keeps the record, says
/// `failed`, and gc keeps it; the next restart brings it back.
#[test]
fn a_failed_restart_keeps_the_record() {
    let env = TestEnv::new();
    let id = env.start_stand_in(&[])["id"].as_str().unwrap().to_string();
    let run = run_with(&env, &["restart", &id], &[("OCX_TEST_FAIL_AT", "restart:ended".as_ref())]);
    run.code(1).stderr_has("injected failure at restart:ended");
    let record = env.record(&id);
    assert!(record["failed"].as_str().unwrap().contains("the restart failed"), "{record}");
    assert_eq!(env.listed(&id)["status"], "failed");
    let report = env.run(&["gc", "--json"]).success().json();
    assert_eq!(report["failed"], serde_json::json!([id]), "{report}");
    assert!(env.record_files().contains(&format!("{id}.json")));
    env.run(&["restart", &id]).success();
    assert_eq!(env.listed(&id)["status"], "running");
}

/// Defect 9: a spawn that half-fails in the watcher (after the process started) ends that
/// process: at the first start nothing is left, on a restart the record says `failed` and no
/// unrecorded server holds the port.
#[test]
fn a_half_failed_spawn_in_the_watcher_leaves_no_server() {
    let env = TestEnv::new();
    let stand_in = env.stand_in();
    let dir = format!("STAND_IN_DIR={}", env.control_dir().display());
    let start = |point: &str| {
        let args = ["start", "--json", "--opencode", stand_in.to_str().unwrap(), "--env", &dir];
        run_with(&env, &args, &[("OCX_TEST_FAIL_AT", point.as_ref())])
    };
    start("watch:spawned").code(1).stderr_has("injected failure at watch:spawned");
    assert!(env.record_files().is_empty());
    assert_eq!(env.marked(), vec![]);

    let started = start("watch:respawned").success().json()[0].clone();
    let id = started["id"].as_str().unwrap();
    signal("KILL", pid_of(&started));
    let record = wait_for("the failed restart", Duration::from_secs(30), || {
        Some(env.record(id)).filter(|r| r["failed"].is_string())
    });
    assert!(record["failed"].as_str().unwrap().contains("injected failure"), "{record}");
    wait_for("the watcher to exit", Duration::from_secs(10), || is_gone(watcher_of(&started)).then_some(()));
    assert_eq!(env.marked(), vec![], "a server without a record");
    let port = started["port"].as_u64().unwrap() as u16;
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(), "the port is free");
}

/// Defect 10: readiness does not hang on one log line: a server that never prints it, and one
/// that only answers the newer `/api/health`, are both started (the watcher probes health on
/// a timer from the spawn on, with one list of health paths).
#[test]
fn readiness_needs_no_ready_line_and_knows_both_health_paths() {
    let env = TestEnv::new();
    env.control("noready", "");
    let quiet = env.start_stand_in(&["--timeout", "20"]);
    assert_eq!(env.listed(quiet["id"].as_str().unwrap())["status"], "running");
    std::fs::remove_file(env.control_dir().join("noready")).unwrap();
    env.control("v2", "");
    let newer = env.start_stand_in(&["--timeout", "20"]);
    assert_eq!(env.listed(newer["id"].as_str().unwrap())["status"], "running");
}

/// Defect 11: a watcher that has not reported within `--timeout` is a timeout (exit 4), and
/// leaves nothing.
#[test]
fn a_watcher_silent_past_the_timeout_is_a_timeout() {
    let env = TestEnv::new();
    let stand_in = env.stand_in();
    let args = ["start", "--timeout", "2", "--opencode", stand_in.to_str().unwrap()];
    let run = run_with(&env, &args, &[("OCX_TEST_PAUSE_AT", "watch:before-spawn".as_ref())]);
    run.code(4).stderr_has("did not become healthy within 2s");
    assert!(env.record_files().is_empty());
    assert_eq!(env.marked(), vec![]);
}

/// Defect 13: a record naming another instance's watcher (or any process without this
/// instance's marker) is not supervised: `ls` says dead, not restarting, and gc removes it
/// without touching that watcher.
#[test]
fn a_watcher_is_vouched_for_by_its_marker() {
    let env = TestEnv::new();
    let other = env.start_stand_in(&[]);
    let dead = env.start_stand_in(&["--restart", "no"]);
    let id = dead["id"].as_str().unwrap();
    signal("KILL", pid_of(&dead));
    wait_for("its watcher to exit", Duration::from_secs(10), || is_gone(watcher_of(&dead)).then_some(()));
    let borrowed = env.record(other["id"].as_str().unwrap())["watcher"].clone();
    env.edit_record(id, |r| r["watcher"] = borrowed);
    let listed = env.listed(id);
    assert_eq!((listed["status"].clone(), listed["supervised"].clone()), ("dead".into(), false.into()));
    env.run(&["gc"]).success();
    assert!(!env.record_files().contains(&format!("{id}.json")));
    assert!(!is_gone(watcher_of(&other)), "gc ended another instance's watcher");
    assert_eq!(env.listed(other["id"].as_str().unwrap())["status"], "running");
}

/// Defect 14: an opencode of an unsupported major version is refused with the versions named,
/// exit 1, nothing left: by `--version` before anything starts, and by its health check.
#[test]
fn opencode_2_is_refused_clearly() {
    let env = TestEnv::new();
    // A copy of its own: ocx remembers what a binary's `--version` said while it is unchanged.
    let two = env.root.path().join("opencode-2");
    std::fs::copy(env.stand_in(), &two).unwrap();
    env.control("version", "2.0.0");
    let dir = format!("STAND_IN_DIR={}", env.control_dir().display());
    let start = |binary: &std::path::Path| env.run(&["start", "--opencode", binary.to_str().unwrap(), "--env", &dir]);
    start(&two).code(1).stderr_has("opencode 2.0.0").stderr_has("ocx speaks opencode 1.x").stderr_has("1.18.33");
    assert!(env.record_files().is_empty());
    assert_eq!(env.marked(), vec![]);
    // One whose `--version` says nothing but whose health answer says 2.x.
    std::fs::remove_file(env.control_dir().join("version")).unwrap();
    env.control("health-version", "2.0.0");
    start(&env.stand_in()).code(1).stderr_has("opencode 2.0.0");
    assert!(env.record_files().is_empty());
    assert_eq!(env.marked(), vec![]);
    // A server that says 2.x once it runs (upgraded in place) is shown with its version.
    std::fs::remove_file(env.control_dir().join("health-version")).unwrap();
    let id = env.start_stand_in(&["--health-interval", "1"])["id"].as_str().unwrap().to_string();
    env.control("health-version", "2.0.0");
    wait_for("ls to show the version its watcher's next probe sees", Duration::from_secs(30), || {
        (env.listed(&id)["version"] == "2.0.0").then_some(())
    });
}

/// Smaller (15): the watcher does not keep `ocx start`'s directory busy for its whole life.
#[test]
fn the_watcher_lives_in_the_root_directory() {
    let env = TestEnv::new();
    let started = env.start_stand_in(&[]);
    let cwd = std::fs::read_link(format!("/proc/{}/cwd", watcher_of(&started))).unwrap();
    assert_eq!(cwd, std::path::Path::new("/"));
}

/// A stop racing a crash, with the order pinned (paused between the recorded intent and the
/// signals, the server SIGKILLed there): nothing restarts, nothing is left, and the outcome
/// says nothing was sent. Many rounds.
#[test]
fn a_stop_that_finds_the_server_crashed_says_already_gone_and_nothing_restarts() {
    let env = TestEnv::new();
    for round in 0..5 {
        let started = env.start_stand_in(&[]);
        let id = started["id"].as_str().unwrap();
        let pin = Pin::new(&env, "stop:stopping", round);
        let stop = spawn_with(&env, &["stop", id, "--json"], &pin.vars());
        pin.wait_paused();
        signal("KILL", pid_of(&started));
        wait_for("the server to be gone", Duration::from_secs(10), || is_gone(pid_of(&started)).then_some(()));
        // Its watcher sees the stop's intent and exits without restarting it.
        wait_for("the watcher to exit by itself", Duration::from_secs(10), || {
            is_gone(watcher_of(&started)).then_some(())
        });
        pin.resume();
        let outcome = finish(stop, "ocx stop").success().json();
        assert_eq!(outcome[0]["result"], "already gone", "round {round}: {outcome}");
        assert_eq!(outcome[0]["signal"], Value::Null, "round {round}: nothing was sent: {outcome}");
        assert!(is_gone(watcher_of(&started)), "round {round}: the watcher outlived the stop");
        assert!(env.record_files().is_empty(), "round {round}");
        assert_eq!(env.marked(), vec![], "round {round}: something restarted");
    }
}

/// The other order pinned: the crash recorded and the restart due (the watcher paused just
/// before it respawns), then the stop: the stop wins, nothing comes back. Many rounds.
#[test]
fn a_stop_after_a_recorded_crash_wins_over_the_restart() {
    let env = TestEnv::new();
    let stand_in = env.stand_in();
    let dir = format!("STAND_IN_DIR={}", env.control_dir().display());
    for round in 0..5 {
        // The watcher inherits the pause from the start's environment.
        let pin = Pin::new(&env, "watch:restart", round);
        let args = ["start", "--json", "--opencode", stand_in.to_str().unwrap(), "--env", &dir];
        let started = run_with(&env, &args, &pin.vars()).success().json()[0].clone();
        let id = started["id"].as_str().unwrap();
        signal("KILL", pid_of(&started));
        pin.wait_paused();
        assert_eq!(env.listed(id)["status"], "restarting", "round {round}");
        let began = Instant::now();
        let stop = env.run(&["stop", id, "--json"]).success().json();
        pin.resume();
        assert_eq!(stop[0]["result"], "already gone", "round {round}: {stop}");
        assert!(began.elapsed() < Duration::from_secs(20), "round {round}");
        assert!(is_gone(watcher_of(&started)), "round {round}: the watcher outlived the stop");
        assert!(env.record_files().is_empty(), "round {round}");
        assert_eq!(env.marked(), vec![], "round {round}: the server came back");
    }
}

/// Defect 3, the followers: `logs -f` ends with 0 on SIGTERM and SIGHUP, as on Ctrl-C (it
/// was asked to follow until then; nothing is lost).
#[test]
fn sigterm_and_sighup_end_logs_follow_with_0() {
    let env = TestEnv::new();
    let id = env.start_stand_in(&[])["id"].as_str().unwrap().to_string();
    for sig in ["TERM", "HUP", "INT"] {
        let mut child = spawn(&env, &["logs", "-f", &id]);
        let lines = crate::support::stdout_lines(&mut child);
        lines.recv_timeout(Duration::from_secs(10)).expect("the log's first line");
        signal(sig, child.id());
        finish(child, "ocx logs -f").code(0);
    }
}

/// Defect 1, the order pinned: the watcher recorded the crash and the restart it plans (paused
/// just before it respawns): gc neither removes the instance nor waits on it.
#[test]
fn gc_leaves_a_watcher_that_recorded_its_restart_alone() {
    let env = TestEnv::new();
    let stand_in = env.stand_in();
    let dir = format!("STAND_IN_DIR={}", env.control_dir().display());
    let pin = Pin::new(&env, "watch:restart", 0);
    let args = ["start", "--json", "--opencode", stand_in.to_str().unwrap(), "--env", &dir];
    let started = run_with(&env, &args, &pin.vars()).success().json()[0].clone();
    let id = started["id"].as_str().unwrap().to_string();
    signal("KILL", pid_of(&started));
    pin.wait_paused();
    let report = env.run(&["gc", "--json"]).success().json();
    assert_eq!(report["records"], Value::Array(vec![]), "{report}");
    assert_eq!(report["busy"], Value::Array(vec![]), "gc took it for busy, not restarting: {report}");
    assert_eq!(env.listed(&id)["status"], "restarting");
    pin.resume();
    wait_for("the restart", Duration::from_secs(30), || {
        Some(env.listed(&id)).filter(|r| r["status"] == "running" && r["pid"] != started["pid"])
    });
}

/// README's promises: `--restart always` restarts after a clean exit too; `restart --all`
/// restarts every instance; `--no-auth` serves without a password.
#[test]
fn restart_always_restart_all_and_no_auth() {
    let env = TestEnv::new();
    let always = env.start_stand_in(&["--restart", "always"]);
    let id = always["id"].as_str().unwrap().to_string();
    env.control("exit", "0");
    wait_for("the clean exit to be restarted", Duration::from_secs(30), || {
        Some(env.record(&id)).filter(|r| r["restarts"] == 1 && r["last_exit"]["reason"] == "exited")
    });
    std::fs::remove_file(env.control_dir().join("exit")).unwrap();
    wait_for("it to run again", Duration::from_secs(30), || {
        Some(env.listed(&id)).filter(|r| r["status"] == "running" && r["pid"] != always["pid"])
    });

    let open = env.start_stand_in(&["--no-auth"]);
    let url = format!("{}/global/health", open["url"].as_str().unwrap());
    let answer = crate::support::http(Duration::from_secs(5)).get(&url).call().unwrap();
    assert_eq!(answer.status(), 200, "--no-auth serves without a password");
    assert!(env.secrets(open["id"].as_str().unwrap())["password"].is_null());

    let before: Vec<Value> = env.ls();
    let restarted = env.run(&["restart", "--all", "--json"]).success().json();
    assert_eq!(restarted.as_array().unwrap().len(), 2, "{restarted}");
    for r in before {
        let now = env.listed(r["id"].as_str().unwrap());
        assert_eq!(now["status"], "running");
        assert_ne!(now["pid"], r["pid"], "restarted");
        assert_eq!(now["port"], r["port"], "on the same port");
    }
}
