//! `ocx gc` and crash safety: no lost records, no stray processes, no killed strangers.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::basics::{save_record, write_record};
use crate::support::{Guard, TestEnv, cmdline, finish, is_gone, wait_for};

fn paused_at(env: &TestEnv, args: &[&str], point: &str) -> Child {
    env.paused_at(args, point)
}

pub fn sigkill(child: &mut Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Every record file parses (none is half-written).
fn assert_records_whole(env: &TestEnv) {
    for name in env.record_files() {
        let text = std::fs::read_to_string(env.ocx_home.join("instances").join(&name)).unwrap();
        let record: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not whole ({e}): {text}"));
        assert_eq!(record["schema"], 1, "{name}");
    }
}

#[test]
fn twelve_concurrent_starts_give_twelve_healthy_instances() {
    let env = TestEnv::new();
    let children: Vec<Child> = (0..12)
        .map(|_| env.ocx().args(["start", "--json"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap())
        .collect();
    for child in children {
        finish(child, "ocx start").success();
    }
    // Twelve fresh servers load two cores: a health check can take longer than ls waits.
    let listed = wait_for("all twelve to answer ls's health check", Duration::from_secs(60), || {
        Some(env.ls()).filter(|l| l.iter().all(|r| r["status"] == "running"))
    });
    assert_eq!(listed.len(), 12);
    let mut ids: Vec<&str> = listed.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let mut ports: Vec<u64> = listed.iter().map(|r| r["port"].as_u64().unwrap()).collect();
    ids.sort();
    ids.dedup();
    ports.sort();
    ports.dedup();
    assert_eq!((ids.len(), ports.len()), (12, 12), "distinct ids and ports");
    assert!(listed.iter().all(|r| r["status"] == "running"), "{listed:?}");
    assert_records_whole(&env);
    env.run(&["stop", "--all"]).success();
    assert!(env.ls().is_empty());
    assert_eq!(env.marked(), vec![]);
}

#[test]
fn ocx_killed_anywhere_in_start_leaves_whole_records_and_gc_cleans_up() {
    let env = TestEnv::new();
    // A server that never gets healthy: gc ends an abandoned start unless it is healthy (a
    // healthy one is kept; see `sweep::gc_keeps_an_abandoned_start_whose_server_is_healthy`).
    let sleeper = env.fake_binary("sleeper", "exec sleep 300");
    for point in ["start:before-spawn", "start:after-spawn", "start:waiting"] {
        let mut child = paused_at(&env, &["start", "--opencode", sleeper.to_str().unwrap()], point);
        sigkill(&mut child);
        assert_records_whole(&env);
        let expected_records = usize::from(point == "start:waiting");
        assert_eq!(env.record_files().len(), expected_records, "after a kill at {point}");
        env.run(&["gc"]).success();
        assert!(env.record_files().is_empty(), "gc left a record after a kill at {point}");
        wait_for("no marked process", Duration::from_secs(10), || env.marked().is_empty().then_some(()));
    }
    // The store lock a killed ocx held is free again.
    env.run(&["ls"]).success();
}

#[test]
fn ocx_killed_in_the_middle_of_stop_is_finished_by_stop_or_gc() {
    let env = TestEnv::new();
    for finisher in [vec!["stop", "--all"], vec!["gc"]] {
        let started = env.start(&[]);
        let id = started["id"].as_str().unwrap();
        let mut child = paused_at(&env, &["stop", id], "stop:stopping");
        sigkill(&mut child);
        assert_eq!(env.ls()[0]["status"], "stopping");
        env.run(&finisher).success();
        assert!(env.record_files().is_empty(), "{finisher:?} finished the stop");
        assert!(is_gone(started["pid"].as_u64().unwrap() as u32));
        assert_eq!(env.marked(), vec![]);
    }
}

#[test]
fn two_stops_at_once_one_stops_the_other_finds_it_gone() {
    let env = TestEnv::new();
    let id = env.start(&[])["id"].as_str().unwrap().to_string();
    let spawn =
        || env.ocx().args(["stop", &id, "--json"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let (a, b) = (spawn(), spawn());
    let (a, b) = (finish(a, "stop a"), finish(b, "stop b"));
    let mut results = vec![a.success().json()[0]["result"].clone(), b.success().json()[0]["result"].clone()];
    results.sort_by_key(|r| r.to_string());
    assert_eq!(results, ["already gone", "stopped"]);
    assert!(env.record_files().is_empty());
}

#[test]
fn gc_never_signals_a_process_that_reused_a_pid() {
    let env = TestEnv::new();
    let stranger = Guard(Command::new("sleep").arg("300").spawn().unwrap());
    let mut record = write_record(&env, "reuse1", None);
    record["pid"] = stranger.0.id().into();
    record["pid_started_at"] = 1.into();
    save_record(&env, &record);
    assert_eq!(env.ls()[0]["status"], "dead");
    let report = env.run(&["gc", "--json"]).success().json();
    assert_eq!(report["records"][0]["reason"], "PID reused");
    assert_eq!(report["records"][0]["result"], "removed");
    assert_eq!(report["records"][0]["signal"], Value::Null);
    assert!(env.record_files().is_empty());
    assert!(!is_gone(stranger.0.id()), "the stranger is still alive");
}

#[test]
fn gc_ends_the_agents_command_when_the_server_was_killed() {
    let env = TestEnv::new();
    // Not restarted: then its watcher ends what it left behind (`supervise::…_before_the_restart`).
    let started = env.start(&["--restart", "no"]);
    let id = started["id"].as_str().unwrap().to_string();
    crate::lifecycle::prompt_async(&env.secrets(&id), "RUN:sleep 778");
    let sleeper = wait_for("the agent's `sleep 778`", Duration::from_secs(60), || {
        env.marked().into_iter().find(|(pid, i)| *i == id && cmdline(*pid).contains("sleep 778")).map(|(pid, _)| pid)
    });
    let server = started["pid"].as_u64().unwrap() as u32;
    let watcher = env.record(&id)["watcher"]["pid"].as_u64().unwrap() as u32;
    Command::new("kill").args(["-KILL", &server.to_string()]).status().unwrap();
    // Until its watcher has recorded the exit and gone, gc finds the instance locked (busy).
    wait_for("the watcher to record the exit and end", Duration::from_secs(10), || {
        (is_gone(server) && is_gone(watcher) && !env.record(&id)["last_exit"].is_null()).then_some(())
    });
    assert!(!is_gone(sleeper), "the agent's command outlived its server");

    let dry = env.run(&["gc", "--dry-run", "--json"]).success().json();
    assert_eq!(dry["records"][0]["result"], "would remove");
    assert!(!is_gone(sleeper) && env.record_files().len() == 1, "--dry-run changes nothing");

    let report = env.run(&["gc", "--json"]).success().json();
    assert_eq!(report["records"][0]["reason"], "process gone");
    assert!(report["records"][0]["orphans_ended"].as_u64().unwrap() >= 1, "{report}");
    assert!(is_gone(sleeper));
    assert!(env.record_files().is_empty());
    assert_eq!(env.marked(), vec![]);
}

#[test]
fn gc_ends_marked_processes_without_a_record_and_nothing_else() {
    let env = TestEnv::new();
    let home = env.ocx_home.canonicalize().unwrap_or(env.ocx_home.clone());
    std::fs::create_dir_all(&home).unwrap();
    let home = home.canonicalize().unwrap();
    let mut marked = Command::new("sleep");
    marked.arg("301").env("OCX_HOME", &home).env("OCX_INSTANCE_ID", "lost01");
    let marked = Guard(marked.spawn().unwrap());
    // The same id under another home is another ocx's: never touched.
    let mut foreign = Command::new("sleep");
    foreign.arg("302").env("OCX_HOME", env.root.path()).env("OCX_INSTANCE_ID", "lost01");
    let foreign = Guard(foreign.spawn().unwrap());
    let unmarked = Guard(Command::new("sleep").arg("303").spawn().unwrap());
    wait_for("the marked sleep", Duration::from_secs(5), || (!env.marked().is_empty()).then_some(()));

    let report = env.run(&["gc", "--json"]).success().json();
    assert_eq!(report["orphans"][0]["pid"], marked.0.id());
    assert_eq!(report["orphans"][0]["instance"], "lost01");
    wait_for("the orphan to end", Duration::from_secs(10), || is_gone(marked.0.id()).then_some(()));
    assert!(!is_gone(foreign.0.id()) && !is_gone(unmarked.0.id()), "only the marked process was ended");
}

#[test]
fn bad_records_are_moved_aside_and_others_keep_working() {
    let env = TestEnv::new();
    let live = env.start(&["--name", "live"]);
    let dir = env.ocx_home.join("instances");
    let mut wrong_port = write_record(&env, "port99", None);
    wrong_port["port"] = 70000.into();
    save_record(&env, &wrong_port);
    let mut future = write_record(&env, "newer1", None);
    future["schema"] = 2.into();
    save_record(&env, &future);
    let bad = [
        ("empty1", String::new()),
        ("trunc1", "{\"schema\": 1, \"id\": \"tru".to_string()),
        ("shape1", "{\"schema\": 1, \"hello\": true}".to_string()),
    ];
    for (id, text) in &bad {
        std::fs::write(dir.join(format!("{id}.json")), text).unwrap();
    }
    std::fs::write(dir.join(".live.json.123.abcd.tmp"), "{\"half").unwrap();

    let listed = env.ls();
    assert_eq!(listed.len(), 6);
    assert_eq!(listed[0]["status"], "running", "the live instance is unaffected");
    let status = |id: &str| listed.iter().find(|r| r["id"] == id).unwrap()["status"].clone();
    assert_eq!(status("newer1"), "newer");
    for id in ["empty1", "port99", "shape1", "trunc1"] {
        assert_eq!(status(id), "corrupt", "{listed:?}");
    }
    env.run(&["ls"]).success().stderr_has("ocx gc");
    env.run(&["url", "live"]).success();

    let dry = env.run(&["gc", "--dry-run", "--json"]).success().json();
    assert_eq!(dry["corrupt"].as_array().unwrap().len(), 4);
    assert_eq!(env.record_files().len(), 7, "--dry-run moved nothing");

    let report = env.run(&["gc", "--json"]).success().json();
    assert_eq!(report["corrupt"].as_array().unwrap().len(), 4);
    assert_eq!(report["newer"].as_array().unwrap().len(), 1, "a newer schema's record is left alone");
    assert_eq!(report["temp_files"].as_array().unwrap().len(), 1);
    let mut names = env.record_files();
    names.sort();
    let live_file = format!("{}.json", live["id"].as_str().unwrap());
    let mut expected: Vec<String> = ["empty1", "port99", "shape1", "trunc1"]
        .iter()
        .map(|id| format!("{id}.json.corrupt"))
        .chain([live_file, "newer1.json".to_string()])
        .collect();
    expected.sort();
    assert_eq!(names, expected, "moved aside, never deleted");
    assert_eq!(env.ls().len(), 2);
    let again = env.run(&["gc"]).success().stdout.clone();
    assert!(again.starts_with("left alone") && again.lines().count() == 1, "{again}");
}

#[test]
fn gc_logs_deletes_only_logs_of_gone_instances() {
    let env = TestEnv::new();
    let kept = env.start(&[])["id"].as_str().unwrap().to_string();
    let gone = env.start(&[])["id"].as_str().unwrap().to_string();
    env.run(&["stop", &gone]).success();
    let report = env.run(&["gc", "--logs", "--json"]).success().json();
    let deleted: Vec<&str> = report["logs_deleted"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert_eq!(deleted.len(), 1);
    assert!(deleted[0].ends_with(&format!("{gone}.log")));
    assert!(env.ocx_home.join(format!("logs/{kept}.log")).exists());
}

#[test]
fn unwritable_state_is_a_clear_error_and_nothing_is_half_written() {
    let env = TestEnv::new();
    // A home on a read-only file system (also for root).
    let run = env.ocx().arg("ls").env("OCX_HOME", "/proc/ocx-test-home").output().unwrap();
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).starts_with("error: cannot create the state directory"));

    // A full disk: no file may grow past 1 KiB (`ulimit -f 1`), so the log's first line fits but
    // the record, with a long --env value, does not. (SIGXFSZ ignored: writes fail with EFBIG.)
    env.run(&["ls"]).success();
    let ocx = env!("CARGO_BIN_EXE_ocx");
    let mut sh = Command::new("bash");
    env.apply_env(&mut sh);
    sh.env("OCX_HOME", &env.ocx_home)
        .env("OCX_OPENCODE", &env.opencode)
        .args(["-c", &format!("trap '' XFSZ; ulimit -f 1; exec '{ocx}' start --env BIG={}", "x".repeat(2000))])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let run = finish(sh.spawn().unwrap(), "ocx start on a full disk");
    run.code(1).stderr_has("cannot write");
    assert!(std::fs::read_dir(env.ocx_home.join("instances")).unwrap().next().is_none(), "no record, no temp file");
    assert_eq!(env.marked(), vec![], "the server it spawned was stopped");
}

#[test]
fn secrets_stay_out_of_listings_logs_and_process_arguments() {
    let env = TestEnv::new();
    let started = env.start(&[]);
    let id = started["id"].as_str().unwrap();
    let password = env.secrets(id)["password"].as_str().unwrap().to_string();
    assert!(password.len() >= 32);
    for args in [vec!["ls"], vec!["ls", "--json"], vec!["ls", "--all"], vec!["logs", id]] {
        let run = env.run(&args);
        assert!(!run.success().stdout.contains(&password), "{args:?} shows the password");
    }
    let pid = started["pid"].as_u64().unwrap() as u32;
    assert!(!cmdline(pid).contains(&password), "the password is not on the server's command line");

    // A record others could have written is refused, with a warning, never trusted.
    let path = env.ocx_home.join(format!("instances/{id}.json"));
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let listed = env.ls();
    assert_eq!(listed[0]["status"], "refused");
    env.run(&["ls"]).success().stderr_has("refus");
    env.run(&["stop", id]).code(3);
    assert!(!is_gone(pid), "a refused record's PID is never signalled");
}
