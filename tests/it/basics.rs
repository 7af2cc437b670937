//! What needs no server: help, version, the home directory, exit codes for bad input.

use std::os::unix::fs::PermissionsExt;

use crate::support::TestEnv;

#[test]
fn version_and_help() {
    let env = TestEnv::new();
    let run = env.run(&["--version"]);
    run.success();
    assert_eq!(run.stdout.trim(), format!("ocx {}", env!("CARGO_PKG_VERSION")));
    let help = env.run(&["--help"]);
    help.success();
    for command in ["start", "ls", "stop", "logs", "attach", "url"] {
        assert!(help.stdout.contains(command), "--help lacks {command}:\n{}", help.stdout);
    }
    env.run(&["start", "--help"]).success();
    env.run(&["frobnicate"]).code(2);
}

#[test]
fn home_is_created_private_and_empty_ls_succeeds() {
    let env = TestEnv::new();
    let run = env.run(&["ls"]);
    run.success();
    assert!(run.stdout.starts_with("ID"), "{}", run.stdout);
    assert_eq!(run.stdout.lines().count(), 1, "{}", run.stdout);
    assert_eq!(env.run(&["ls", "--json"]).success().json(), serde_json::json!([]));
    assert_eq!(env.run(&["ls", "-q"]).success().stdout, "");
    assert_eq!(env.run(&["stop", "--all", "--json"]).success().json(), serde_json::json!([]));
    for dir in ["", "instances", "logs", "locks"] {
        let mode = std::fs::metadata(env.ocx_home.join(dir)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{dir}");
    }
}

#[test]
fn a_home_that_is_a_file_is_a_clear_error() {
    let env = TestEnv::new();
    let file = env.root.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let run = env.ocx().args(["ls"]).env("OCX_HOME", &file).output().unwrap();
    assert_eq!(run.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.starts_with("error: cannot create the state directory"), "{stderr}");
}

#[test]
fn unknown_and_ambiguous_instances_exit_3() {
    let env = TestEnv::new();
    env.run(&["stop", "nope"]).code(3).stderr_has("no instance matches \"nope\"").stderr_has("ocx start");
    env.run(&["url", "nope"]).code(3);
    env.run(&["logs", "nope"]).code(3);
    env.run(&["url"]).code(3).stderr_has("no instance is running");
    // Two records whose ids share a prefix (their PIDs are long gone: dead instances).
    write_record(&env, "k3f9a2", Some("api"));
    write_record(&env, "k3aa11", None);
    env.run(&["stop", "k3"]).code(3).stderr_has("k3f9a2 (api)").stderr_has("k3aa11");
    assert_eq!(env.record_files().len(), 2, "an ambiguous stop removes nothing");
    // A usage error is 2, from clap.
    env.run(&["stop"]).code(2);
    env.run(&["start", "--port", "notaport"]).code(2);
    env.run(&["start", "--env", "NOEQUALS"]).code(2);
    env.run(&["start", "--timeout", "-1"]).code(2);
}

#[test]
fn ls_shows_dead_and_corrupt_records_and_keeps_going() {
    let env = TestEnv::new();
    write_record(&env, "dead01", Some("gone"));
    std::fs::write(env.ocx_home.join("instances/bad001.json"), "{ not json").unwrap();
    let docs = env.run(&["ls", "--json"]).success().json();
    let docs = docs.as_array().unwrap();
    assert_eq!(docs.len(), 2, "{docs:?}");
    assert_eq!(docs[0]["id"], "dead01");
    assert_eq!(docs[0]["status"], "dead");
    assert!(docs[0].get("password").is_none(), "no password without --show-secrets");
    assert_eq!(docs[1]["id"], "bad001");
    assert_eq!(docs[1]["status"], "corrupt");
    assert!(docs[1]["error"].as_str().unwrap().contains("not valid JSON"));
    let table = env.run(&["ls"]).success().stdout.clone();
    assert!(table.contains("dead") && table.contains("corrupt"), "{table}");
    // The corrupt file is reported, never touched.
    assert_eq!(std::fs::read_to_string(env.ocx_home.join("instances/bad001.json")).unwrap(), "{ not json");
    let shown = env.run(&["ls", "--json", "--show-secrets"]).success().json();
    assert_eq!(shown[0]["password"], "0123456789abcdefghijklmnopqrstuv");
}

/// A record from the schema-1 fixture, for a PID that does not exist.
pub fn write_record(env: &TestEnv, id: &str, name: Option<&str>) -> serde_json::Value {
    let mut record: serde_json::Value = serde_json::from_str(include_str!("../fixtures/record-v1.json")).unwrap();
    record["id"] = id.into();
    record["name"] = name.into();
    record["pid"] = above_pid_max().into(); // never a live process
    save_record(env, &record);
    record
}

/// A PID no process can have: one above the kernel's `pid_max` (4,194,304 at most on Linux).
pub fn above_pid_max() -> u32 {
    let max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap().trim().parse().unwrap();
    max + 1
}

pub fn save_record(env: &TestEnv, record: &serde_json::Value) {
    let dir = env.ocx_home.join("instances");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&env.ocx_home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let path = dir.join(format!("{}.json", record["id"].as_str().unwrap()));
    std::fs::write(&path, record.to_string()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
}
