//! Supervision: the watcher restarts crashed servers (same port, password, sessions), backs
//! off and gives up on crash loops, never restarts after a stop, and is not needed for the
//! server to keep serving. Real opencode, except where a stand-in crashes on cue.

use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::support::{TestEnv, cmdline, cpu_time, finish, is_gone, session_of, wait_for};

fn pid_of(record: &Value) -> u32 {
    record["pid"].as_u64().unwrap() as u32
}

fn watcher_of(record: &Value) -> u32 {
    record["watcher"]["pid"].as_u64().unwrap_or_else(|| panic!("no watcher in {record}")) as u32
}

fn kill(signal: &str, pid: u32) {
    assert!(Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status().unwrap().success());
}

fn time_of(value: &Value) -> SystemTime {
    humantime::parse_rfc3339(value.as_str().unwrap_or_else(|| panic!("not a time: {value}"))).unwrap()
}

/// Start a stand-in, then make it crash and crash again at once on every restart.
fn crash_loop(env: &TestEnv) -> String {
    let id = env.start_stand_in(&[])["id"].as_str().unwrap().to_string();
    env.control("crash", "");
    env.control("exit", "1");
    id
}

#[test]
fn a_killed_server_comes_back_on_the_same_port_with_the_same_password_and_sessions() {
    let env = TestEnv::new();
    let started = env.start(&["--name", "phoenix"]);
    let id = started["id"].as_str().unwrap();
    let password = env.secrets(id)["password"].clone();
    let session = session_of(env.run(&["run", "phoenix", "remember the word zebra-7"]).success());

    kill("KILL", pid_of(&started));
    let back = wait_for("the server to be back and healthy", Duration::from_secs(60), || {
        Some(env.listed(id)).filter(|r| r["status"] == "running" && r["pid"] != started["pid"])
    });
    assert_eq!(back["port"], started["port"], "same port");
    assert_eq!(back["restarts"], 1);
    assert_eq!(back["last_exit"]["signal"], "SIGKILL");
    assert_eq!(back["last_exit"]["reason"], "crashed");
    assert_eq!(back["supervised"], true);
    assert_eq!(env.secrets(id)["password"], password, "same password");
    assert_eq!(watcher_of(&back), watcher_of(&started), "the same watcher");
    let table = env.run(&["ls"]).success().stdout.clone();
    assert!(table.contains("1 (SIGKILL, "), "{table}");

    let again = env.run(&["run", "phoenix", "which word was it?", "--session", &session]);
    assert_eq!(session_of(again.success()), session, "the old session continues");
    let last = env.model.requests().into_iter().rev().find(|r| r.to_string().contains("which word")).unwrap();
    assert!(last["messages"].to_string().contains("zebra-7"), "the model sees the turn from before the crash");
    let log = env.run(&["logs", id, "-n", "200"]).success().stdout.clone();
    assert!(log.contains("--- ocx: restart 1 after SIGKILL"), "{log}");
}

#[test]
fn restart_no_leaves_it_dead_and_a_clean_exit_is_not_a_failure() {
    let env = TestEnv::new();
    let started = env.start(&["--restart", "no"]);
    let id = started["id"].as_str().unwrap();
    kill("KILL", pid_of(&started));
    // `dead` as soon as the server is gone (its watcher will not restart it); the exit is in the
    // record once the watcher recorded it, a moment later on a loaded machine.
    let dead = wait_for("it to be dead, its exit recorded", Duration::from_secs(30), || {
        Some(env.listed(id)).filter(|r| r["status"] == "dead" && !r["last_exit"].is_null())
    });
    assert_eq!(dead["last_exit"]["signal"], "SIGKILL");
    assert_eq!(dead["restarts"], 0);
    wait_for("its watcher to exit", Duration::from_secs(10), || is_gone(watcher_of(&started)).then_some(()));
    assert_eq!(env.listed(id)["supervised"], false);
    assert!(env.run(&["ls"]).success().stdout.contains("dead (SIGKILL)"));

    // Exit 0 under on-failure: recorded, not restarted.
    let clean = env.start_stand_in(&[]);
    let clean_id = clean["id"].as_str().unwrap();
    env.control("exit", "0");
    let dead = wait_for("the clean exit", Duration::from_secs(30), || {
        Some(env.listed(clean_id)).filter(|r| r["status"] == "dead" && !r["last_exit"].is_null())
    });
    assert_eq!((dead["last_exit"]["code"].clone(), dead["last_exit"]["reason"].clone()), (0.into(), "exited".into()));
    assert_eq!(dead["restarts"], 0);
    wait_for("its watcher to exit", Duration::from_secs(10), || is_gone(watcher_of(&clean)).then_some(()));

    // gc removes such records, as it removes any whose server and watcher are gone.
    env.run(&["gc"]).success();
    assert!(env.record_files().is_empty(), "{:?}", env.record_files());
}

#[test]
fn a_crash_loop_backs_off_then_gives_up_without_burning_cpu() {
    let env = TestEnv::new();
    let id = crash_loop(&env);
    let watcher = watcher_of(&env.record(&id));
    // Every (exit time, restart time) the record goes through, and the watcher's CPU time.
    let mut seen: Vec<(Value, Value)> = Vec::new();
    let mut cpu = Duration::ZERO;
    let failed = wait_for("the watcher to give up", Duration::from_secs(60), || {
        cpu = cpu.max(cpu_time(watcher).unwrap_or_default());
        let record = env.record(&id);
        let pair = (record["last_exit"]["at"].clone(), record["next_restart_at"].clone());
        if !pair.0.is_null() && seen.last() != Some(&pair) {
            seen.push(pair);
        }
        record["failed"].as_str().map(str::to_string)
    });
    assert!(failed.contains("gave up after 5 unstable exits in a row"), "{failed}");
    assert!(failed.contains("exit 1"), "{failed}");
    // The first restart at once (recorded as due now, for a moment, so that nobody takes the
    // instance for abandoned meanwhile: the poll may or may not see it), then 1 s, 2 s, 4 s.
    let delays: Vec<u128> = seen
        .iter()
        .filter(|(_, next)| !next.is_null())
        .map(|(at, next)| time_of(next).duration_since(time_of(at)).unwrap().as_millis())
        .filter(|&delay| delay >= 100)
        .collect();
    let expected = [1000, 2000, 4000];
    assert_eq!(delays.len(), expected.len(), "{seen:?}");
    for (delay, want) in delays.iter().zip(expected) {
        assert!(delay.abs_diff(want) < 100, "a delay of {delay} ms, expected {want}: {seen:?}");
    }
    let record = env.record(&id);
    assert_eq!(record["restarts"], 4);
    assert_eq!(record["last_exit"]["code"], 1);
    wait_for("nothing left running", Duration::from_secs(10), || env.marked().is_empty().then_some(()));
    assert!(cpu < Duration::from_millis(500), "the watcher used {cpu:?} of CPU over the loop");
    assert_eq!(env.listed(&id)["status"], "failed");
    assert!(env.run(&["ls"]).success().stdout.contains("failed (exit 1)"));

    // gc reports a failed instance and keeps it: it is the user's to restart or stop.
    let report = env.run(&["gc", "--json"]).success().json();
    assert_eq!(report["failed"], serde_json::json!([id]), "{report}");
    assert_eq!(env.record_files().len(), 1);
    // Restarting it clears the failure once the server starts again.
    std::fs::remove_file(env.control_dir().join("crash")).unwrap();
    std::fs::remove_file(env.control_dir().join("exit")).unwrap();
    env.run(&["restart", &id]).success();
    let back = env.listed(&id);
    assert_eq!((back["status"].clone(), back["failed"].clone()), ("running".into(), Value::Null));
    env.run(&["stop", &id]).success();
}

#[test]
fn a_stop_during_a_backoff_wait_stops_at_once_and_nothing_comes_back() {
    let env = TestEnv::new();
    let id = crash_loop(&env);
    let record = wait_for("a wait of seconds before a restart", Duration::from_secs(30), || {
        Some(env.record(&id)).filter(|r| {
            r["next_restart_at"].as_str().is_some_and(|_| {
                time_of(&r["next_restart_at"])
                    .duration_since(SystemTime::now())
                    .is_ok_and(|d| d > Duration::from_secs(1))
            })
        })
    });
    let watcher = watcher_of(&record);
    let stopped = env.run(&["stop", &id, "--json"]).success().json();
    assert_eq!(stopped[0]["result"], "already gone", "{stopped}");
    assert!(is_gone(watcher), "the watcher is gone: nothing can restart the server");
    assert!(env.record_files().is_empty());
    assert_eq!(env.marked(), vec![]);
}

#[test]
fn a_stop_racing_a_crash_never_leaves_a_server_or_restarts_one() {
    let env = TestEnv::new();
    for round in 0..6 {
        let started = env.start(&[]);
        let id = started["id"].as_str().unwrap();
        // The server dies just as the stop begins: TERM or KILL, the stop must win.
        let stop =
            env.ocx().args(["stop", id, "--json"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        kill(if round % 2 == 0 { "KILL" } else { "SEGV" }, pid_of(&started));
        let outcome = finish(stop, "ocx stop").success().json();
        assert!(["stopped", "already gone"].contains(&outcome[0]["result"].as_str().unwrap()), "{outcome}");
        assert!(is_gone(watcher_of(&started)), "round {round}: the watcher outlived the stop");
        assert!(env.record_files().is_empty(), "round {round}");
        assert_eq!(env.marked(), vec![], "round {round}: a process outlived the stop");
    }
}

#[test]
fn the_server_serves_on_without_its_watcher_and_restart_supervises_it_again() {
    let env = TestEnv::new();
    let orphan = env.start(&["--name", "orphan"]);
    let kept = env.start(&["--name", "kept"]);
    for r in [&orphan, &kept] {
        kill("KILL", watcher_of(r));
    }
    for r in [&orphan, &kept] {
        let id = r["id"].as_str().unwrap();
        wait_for("unsupervised", Duration::from_secs(10), || {
            Some(env.listed(id)).filter(|l| l["status"] == "unsupervised" && l["supervised"] == false)
        });
    }
    // The server's log pipe lost its only reader: it must survive writing to it.
    env.run(&["run", "orphan", "say something into a pipe nobody reads"]).success();
    env.run(&["run", "orphan", "and once more"]).success();
    assert_eq!(env.listed(orphan["id"].as_str().unwrap())["status"], "unsupervised");

    // stop works without a watcher.
    let stopped = env.run(&["stop", "kept", "--json"]).success().json();
    assert_eq!(stopped[0]["result"], "stopped");
    assert!(is_gone(pid_of(&kept)));

    // restart puts a new watcher under it: same port and password, supervised again.
    let id = orphan["id"].as_str().unwrap();
    let password = env.secrets(id)["password"].clone();
    let restarted = env.run(&["restart", "orphan", "--json"]).success().json();
    assert_eq!(restarted[0]["port"], orphan["port"]);
    let back = env.listed(id);
    assert_eq!((back["status"].clone(), back["supervised"].clone()), ("running".into(), true.into()));
    assert_ne!(watcher_of(&back), watcher_of(&orphan));
    assert!(!is_gone(watcher_of(&back)));
    assert_eq!(env.secrets(id)["password"], password);
    assert_eq!(back["last_exit"]["reason"], "restart");
    // And the new watcher restarts it.
    kill("KILL", pid_of(&back));
    wait_for("the new watcher to restart it", Duration::from_secs(60), || {
        Some(env.listed(id)).filter(|r| r["status"] == "running" && r["pid"] != back["pid"])
    });
    env.run(&["stop", "orphan"]).success();
    assert_eq!(env.marked(), vec![]);
}

#[test]
fn the_agents_command_is_ended_before_the_restart() {
    let env = TestEnv::new();
    let started = env.start(&[]);
    let id = started["id"].as_str().unwrap().to_string();
    crate::lifecycle::prompt_async(&env.secrets(&id), "RUN:sleep 779");
    let sleeper = wait_for("the agent's `sleep 779`", Duration::from_secs(60), || {
        env.marked().into_iter().find(|(pid, i)| *i == id && cmdline(*pid).contains("sleep 779")).map(|(pid, _)| pid)
    });
    kill("KILL", pid_of(&started));
    let back =
        wait_for("the restart", Duration::from_secs(60), || Some(env.record(&id)).filter(|r| r["restarts"] == 1));
    assert!(is_gone(sleeper), "the dead server's command still ran when the new server was started");
    assert!(!is_gone(pid_of(&back)));
}

#[test]
fn restart_waits_for_a_busy_session_unless_forced() {
    let env = TestEnv::new();
    let started = env.start(&["--name", "busy"]);
    let id = started["id"].as_str().unwrap();
    let record = env.secrets(id);

    let session = crate::lifecycle::prompt_async(&record, "SLOW answer before the restart");
    wait_for("the model to be asked", Duration::from_secs(30), || {
        env.model.requests().iter().any(|r| r.to_string().contains("SLOW answer before")).then_some(())
    });
    env.run(&["restart", "busy"]).success();
    let answer = crate::lifecycle::messages(&env.secrets(id), &session).to_string();
    assert!(answer.contains("tick 39"), "the restart waited for the whole answer: {answer}");

    let session = crate::lifecycle::prompt_async(&env.secrets(id), "SLOW answer cut by a forced restart");
    wait_for("the model to be asked", Duration::from_secs(30), || {
        env.model.requests().iter().any(|r| r.to_string().contains("cut by a forced")).then_some(())
    });
    env.run(&["restart", "busy", "--force"]).success();
    let answer = crate::lifecycle::messages(&env.secrets(id), &session).to_string();
    assert!(!answer.contains("tick 39"), "--force did not wait: {answer}");
    assert_eq!(env.listed(id)["restarts"], 2);

    // A restart that cannot wait long enough says so and changes nothing.
    crate::lifecycle::prompt_async(&env.secrets(id), "SLOW answer too long to wait for");
    wait_for("the model to be asked", Duration::from_secs(30), || {
        env.model.requests().iter().any(|r| r.to_string().contains("too long to wait")).then_some(())
    });
    let before = env.listed(id);
    env.run(&["restart", "busy", "--wait", "0.5"]).code(4).stderr_has("--force");
    assert_eq!(env.listed(id)["pid"], before["pid"]);
}

#[test]
fn new_instances_get_ports_below_the_ephemeral_range() {
    let env = TestEnv::new();
    let started = env.start(&[]);
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let low: u64 = range.split_whitespace().next().unwrap().parse().unwrap();
    let port = started["port"].as_u64().unwrap();
    assert!((10_000..low).contains(&port), "port {port}, ephemeral from {low}");
}

#[test]
fn gc_ends_a_watcher_left_without_a_server() {
    let env = TestEnv::new();
    let started = env.start(&[]);
    let watcher = watcher_of(&started);
    // A watcher that cannot react (frozen) while its server dies: nothing will restart it.
    kill("STOP", watcher);
    kill("KILL", pid_of(&started));
    wait_for("the server to be gone", Duration::from_secs(10), || is_gone(pid_of(&started)).then_some(()));
    let report = env.run(&["gc", "--json"]).success().json();
    assert_eq!(report["records"][0]["reason"], "watcher without server", "{report}");
    assert_eq!(report["records"][0]["result"], "removed", "{report}");
    wait_for("the watcher to be ended", Duration::from_secs(10), || is_gone(watcher).then_some(()));
    assert!(env.record_files().is_empty());
    assert_eq!(env.marked(), vec![]);
}
