//! The correctness sweep: each defect of issue 10 reproduced, against real opencode servers.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::basics::{save_record, write_record};
use crate::gc::sigkill;
use crate::support::{Guard, TestEnv, busy, finish, is_gone, wait_for};

fn pid_of(record: &Value) -> u32 {
    record["pid"].as_u64().unwrap() as u32
}

/// `ocx run … | head -c 5`: ocx exits quietly (no panic, exit 0), and the prompt it started is
/// aborted on the server, so no agent goes on working after ocx is gone.
#[test]
fn a_closed_pipe_ends_run_quietly_and_aborts_the_prompt() {
    let env = TestEnv::new();
    let started = env.start(&[]);
    let id = started["id"].as_str().unwrap();
    let mut child = env
        .ocx()
        .args(["run", id, "SLOW answer for a short pipe"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 5];
    child.stdout.as_mut().unwrap().read_exact(&mut first).unwrap();
    assert_eq!(&first, b"tick ");
    drop(child.stdout.take()); // the reader goes away, as `head -c 5` does
    let record = env.secrets(id);
    let run = finish(child, "ocx run into a closed pipe");
    run.code(0);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    wait_for("the aborted session to be idle", Duration::from_secs(10), || busy(&record).is_empty().then_some(()));
}

/// Every command that prints, with its stdout already closed: exit 0, nothing on stderr.
#[test]
fn every_command_exits_quietly_into_a_closed_pipe() {
    let env = TestEnv::new();
    let started = env.start(&["--name", "pipe"]);
    write_record(&env, "dead01", None);
    for args in [
        vec!["ls"],
        vec!["ls", "--json"],
        vec!["ls", "-q"],
        vec!["ls", "--all"],
        vec!["url", "pipe"],
        vec!["logs", "pipe"],
        vec!["gc", "--dry-run"],
        vec!["gc", "--dry-run", "--json"],
        vec!["run", "pipe", "hello closed pipe"],
        vec!["run", "pipe", "hello closed pipe", "--format", "json"],
        vec!["completions", "bash"],
        vec!["--help"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let child = env.ocx().args(&args).stdin(Stdio::null()).stdout(writer).stderr(Stdio::piped()).spawn().unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stderr: Vec<&str> = stderr.lines().filter(|l| !l.starts_with("session: ")).collect();
        assert_eq!(out.status.code(), Some(0), "ocx {args:?}: {stderr:?}");
        assert!(stderr.iter().all(|l| l.starts_with("hint:")), "ocx {args:?} said: {stderr:?}");
    }
    let listed = env.ls();
    assert_eq!(listed.iter().find(|r| r["id"] == started["id"]).unwrap()["status"], "running");
}

/// gc never ends the processes of a record it cannot read: a newer schema's (left where it
/// is), a refused one's, a corrupt one's (moved aside, and still protecting them after).
#[test]
fn gc_never_ends_the_servers_of_records_it_cannot_read() {
    let env = TestEnv::new();
    let newer = env.start(&["--name", "newer"]);
    let refused = env.start(&["--name", "refused"]);
    let corrupt = env.start(&["--name", "corrupt"]);
    let path = |r: &Value| env.ocx_home.join(format!("instances/{}.json", r["id"].as_str().unwrap()));
    env.edit_record(newer["id"].as_str().unwrap(), |r| r["schema"] = 2.into());
    std::fs::set_permissions(path(&refused), std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    std::fs::write(path(&corrupt), "{ half a rec").unwrap();

    let listed = env.ls();
    let status = |r: &Value| listed.iter().find(|l| l["id"] == r["id"]).unwrap()["status"].clone();
    assert_eq!(
        (status(&newer), status(&refused), status(&corrupt)),
        ("newer".into(), "refused".into(), "corrupt".into())
    );
    env.run(&["ls"]).success().stderr_has("written by a newer ocx");

    for round in 0..2 {
        let report = env.run(&["gc", "--json"]).success().json();
        assert_eq!(report["orphans"], Value::Array(vec![]), "round {round}: {report}");
        if round == 0 {
            assert_eq!(report["newer"].as_array().unwrap().len(), 1, "{report}");
            assert_eq!(report["corrupt"].as_array().unwrap().len(), 2, "{report}");
        }
    }
    assert!(path(&newer).exists(), "a newer schema's record is left where it is");
    for r in [&newer, &refused, &corrupt] {
        assert!(!is_gone(pid_of(r)), "gc ended the server of {}", r["name"]);
    }
    let again = env.run(&["gc"]).success().stdout.clone();
    assert!(again.contains("left alone"), "{again}");
}

/// A failure at any step after the spawn ends what was spawned and removes the record.
#[test]
fn a_start_that_fails_after_the_spawn_leaves_nothing() {
    let env = TestEnv::new();
    let sleeper = env.fake_binary("sleeper", "exec sleep 300");
    // A database race that never clears: every spawn is retried, until the injected failure.
    let racer = env.fake_binary("racer", "echo 'Error: database is locked'; exit 1");
    let real = env.opencode.to_str().unwrap();
    for (point, binary) in [
        ("start:spawned", sleeper.to_str().unwrap()),
        ("start:record", sleeper.to_str().unwrap()),
        ("start:retry", racer.to_str().unwrap()),
        ("start:healthy", real),
    ] {
        let run = finish(
            env.ocx()
                .args(["start", "--opencode", binary])
                .env("OCX_TEST_FAIL_AT", point)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
            point,
        );
        run.code(1).stderr_has(&format!("injected failure at {point}"));
        assert!(env.record_files().is_empty(), "a record is left after a failure at {point}");
        assert_eq!(env.marked(), vec![], "a process is left after a failure at {point}");
    }
    // Without the injected failure the racer is tried 3 times, then reported.
    env.run(&["start", "--opencode", racer.to_str().unwrap()]).code(1).stderr_has("database is locked");
    assert!(env.record_files().is_empty());
}

/// `gc --logs` decides and deletes under the store lock: a start running meanwhile never loses
/// its new log.
#[test]
fn gc_logs_never_deletes_the_log_of_a_start_in_progress() {
    let env = TestEnv::new();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let gc = s.spawn(|| {
            let mut rounds = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                env.run(&["gc", "--logs"]).success();
                rounds += 1;
            }
            rounds
        });
        for _ in 0..4 {
            let started = env.start(&[]);
            let log = env.ocx_home.join(format!("logs/{}.log", started["id"].as_str().unwrap()));
            let text = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
            assert!(text.contains("server listening on"), "{text}");
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(gc.join().unwrap() >= 4, "gc ran alongside the starts");
    });
}

/// The start time is compared exactly (clock ticks since boot on Linux), not as wall-clock
/// seconds: a record whose seconds are a second off still names its live server.
#[test]
fn a_start_time_a_second_off_never_makes_a_live_server_dead() {
    let env = TestEnv::new();
    let started = env.start(&[]);
    let id = started["id"].as_str().unwrap();
    let record = env.record(id);
    assert!(record["pid_start_key"].as_u64().is_some(), "{record}");
    env.edit_record(id, |r| r["pid_started_at"] = (r["pid_started_at"].as_u64().unwrap() + 1).into());
    assert_eq!(env.ls()[0]["status"], "running");
    assert_eq!(env.run(&["gc"]).success().stdout, "nothing to clean up\n");
    assert!(!is_gone(pid_of(&started)));

    // A record from before the exact key: seconds within one of the OS's still match.
    env.edit_record(id, |r| {
        r.as_object_mut().unwrap().remove("pid_start_key");
    });
    assert_eq!(env.ls()[0]["status"], "running");
    // A wrong exact key is another process, whatever the seconds say: the server is not seen.
    env.edit_record(id, |r| {
        r["pid_started_at"] = (r["pid_started_at"].as_u64().unwrap() - 1).into();
        r["pid_start_key"] = 1.into();
    });
    let listed = env.ls();
    assert!(listed[0]["uptime_s"].is_null() && listed[0]["status"] != "running", "{listed:?}");
    env.edit_record(id, |r| r["pid_start_key"] = record["pid_start_key"].clone());
    let stopped = env.run(&["stop", id, "--json"]).success().json();
    assert_eq!(stopped[0]["result"], "stopped");
    assert!(is_gone(pid_of(&started)));
}

/// A stop that cannot vouch for the PID leaves the record as it was, not stuck in `stopping`.
#[test]
fn a_stop_that_cannot_vouch_changes_nothing() {
    let env = TestEnv::new();
    let stranger = Guard(Command::new("sleep").arg("300").spawn().unwrap());
    let pid = stranger.0.id();
    let mut record = write_record(&env, "unprv1", None);
    record["pid"] = pid.into();
    record["pid_started_at"] = crate::support::start_time(pid).into();
    save_record(&env, &record);
    let before = std::fs::read_to_string(env.ocx_home.join("instances/unprv1.json")).unwrap();
    env.run(&["stop", "unprv1"]).code(1).stderr_has("does not carry this instance's marker");
    assert_eq!(std::fs::read_to_string(env.ocx_home.join("instances/unprv1.json")).unwrap(), before);
    assert_eq!(env.ls()[0]["state"], "running");
    for _ in 0..2 {
        env.run(&["gc"]).success();
    }
    assert!(!is_gone(pid), "the stranger is alive");
}

/// An abandoned start (its ocx was killed) whose server is healthy is kept and recorded as
/// running; `ls` agreed already.
#[test]
fn gc_keeps_an_abandoned_start_whose_server_is_healthy() {
    let env = TestEnv::new();
    // Its watcher records the start itself once the ocx that waited for it is gone.
    let mut child = env.paused_at(&["start", "--name", "orphaned"], "start:waiting");
    sigkill(&mut child);
    let id = env.record_files()[0].trim_end_matches(".json").to_string();
    wait_for("its watcher to record it running", Duration::from_secs(60), || {
        (env.record(&id)["state"] == "running").then_some(())
    });
    assert_eq!(env.listed(&id)["status"], "running");
    assert_eq!(env.run(&["gc", "--json"]).success().json()["records"], serde_json::json!([]));
    env.run(&["stop", &id]).success();

    // With its watcher gone too, gc records it: a healthy server is kept, not ended.
    let mut child = env.paused_at(&["start", "--name", "orphaned"], "start:waiting");
    let id = env.record_files()[0].trim_end_matches(".json").to_string();
    crate::gc::sigkill(&mut child);
    let watcher = env.record(&id)["watcher"]["pid"].as_u64().unwrap();
    Command::new("kill").args(["-KILL", &watcher.to_string()]).status().unwrap();
    wait_for("the abandoned server to be healthy", Duration::from_secs(60), || {
        env.ls().into_iter().find(|r| r["status"] == "unsupervised")
    });
    assert_eq!(env.record(&id)["state"], "starting");
    let dry = env.run(&["gc", "--dry-run", "--json"]).success().json();
    assert_eq!(dry["promoted"], serde_json::json!([id]));
    assert_eq!(env.record(&id)["state"], "starting", "--dry-run changes nothing");
    let report = env.run(&["gc", "--json"]).success().json();
    assert_eq!(report["promoted"], serde_json::json!([id]), "{report}");
    assert_eq!(report["records"], serde_json::json!([]));
    assert_eq!(env.record(&id)["state"], "running");
    let listed = env.ls();
    assert_eq!(listed[0]["status"], "unsupervised");
    assert!(!is_gone(pid_of(&listed[0])));
}

/// `ls --all` knows a server started through a wrapper script (whose PID the record does not
/// name) by its marker: it is not listed as unmanaged.
#[test]
fn ls_all_does_not_call_a_wrapped_server_unmanaged() {
    let env = TestEnv::new();
    let wrapper = env.fake_binary("opencode-wrapper", &format!("'{}' \"$@\"", env.opencode.display()));
    let started = env.start(&["--opencode", wrapper.to_str().unwrap()]);
    let docs = env.run(&["ls", "--all", "--json"]).success().json();
    // Other tests' servers run alongside: only this one's port counts.
    let unmanaged: Vec<&Value> = docs
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["status"] == "unmanaged" && d["port"] == started["port"])
        .collect();
    assert!(unmanaged.is_empty(), "{unmanaged:?}");
    assert_eq!(docs[0]["id"], started["id"]);
    assert_eq!(docs[0]["status"], "running");
}

/// A password with `@`, `:` and `/` is percent-encoded in the URL, which then works with curl.
#[test]
fn url_with_credentials_encodes_the_password() {
    let env = TestEnv::new();
    env.start(&["--name", "enc", "--env", "OPENCODE_SERVER_PASSWORD=p@ss:w/rd?#%"]);
    let url = env.run(&["url", "enc", "--with-credentials"]).success().stdout.trim().to_string();
    assert!(url.contains("p%40ss%3Aw%2Frd%3F%23%25@127.0.0.1:"), "{url}");
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--noproxy", "*", &format!("{url}/global/health")])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
}
