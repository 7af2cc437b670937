//! A fleet in a file (`ocx.toml`, `ocx up`, `ocx down`), back after a reboot (`ocx resurrect`,
//! and how gc meets it), and the boot unit (`ocx service`), against real opencode servers.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

fn write_fleet(env: &TestEnv, text: &str) {
    std::fs::write(env.project.join("ocx.toml"), text).unwrap();
}

/// `ocx up --json ARGS` → its rows by name: (action, id, pid).
#[track_caller]
fn up(env: &TestEnv, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["up", "--json"];
    all.extend_from_slice(args);
    env.run(&all).success().json().as_array().unwrap().clone()
}

fn row<'a>(rows: &'a [Value], name: &str) -> &'a Value {
    rows.iter().find(|r| r["name"] == name).unwrap_or_else(|| panic!("no row {name}: {rows:?}"))
}

fn actions(rows: &[Value]) -> Vec<(String, String)> {
    let mut a: Vec<(String, String)> =
        rows.iter().map(|r| (r["name"].as_str().unwrap().into(), r["action"].as_str().unwrap().into())).collect();
    a.sort();
    a
}

fn pair(name: &str, action: &str) -> (String, String) {
    (name.to_string(), action.to_string())
}

#[test]
fn up_creates_then_leaves_alone_restarts_what_changed_and_down_stops_it() {
    let env = TestEnv::new();
    let fleet = "[defaults]\nrestart = \"on-failure\"\n\n[instances.api]\ndir = \".\"\nenv = { OPENCODE_LOG_LEVEL = \"INFO\" }\n\n[instances.worker]\ncount = 2\nmax-memory = \"2G\"\n";
    write_fleet(&env, fleet);
    let first = up(&env, &[]);
    assert_eq!(actions(&first), [pair("api", "created"), pair("worker-1", "created"), pair("worker-2", "created")]);
    let file = env.project.join("ocx.toml").canonicalize().unwrap();
    for r in env.ls() {
        assert_eq!(r["status"], "running", "{r}");
        assert_eq!(r["project"], file.to_str().unwrap(), "the record carries the file's project");
    }
    assert_eq!(env.record(row(&first, "worker-1")["id"].as_str().unwrap())["supervision"]["max_memory"], 2u64 << 30);

    // Again, from a subdirectory (the file is found in a parent): nothing changes.
    std::fs::create_dir_all(env.project.join("sub")).unwrap();
    let again = {
        let mut cmd = env.ocx();
        cmd.args(["up", "--json"]).current_dir(env.project.join("sub"));
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap().as_array().unwrap().clone()
    };
    assert_eq!(
        actions(&again),
        [pair("api", "unchanged"), pair("worker-1", "unchanged"), pair("worker-2", "unchanged")]
    );
    for name in ["api", "worker-1", "worker-2"] {
        assert_eq!(row(&again, name)["pid"], row(&first, name)["pid"], "{name} kept its PID");
    }

    // A changed setting restarts only what it changes, with the same id and port.
    write_fleet(&env, &fleet.replace("2G", "3G"));
    let changed = up(&env, &[]);
    assert_eq!(
        actions(&changed),
        [pair("api", "unchanged"), pair("worker-1", "restarted"), pair("worker-2", "restarted")]
    );
    assert_eq!(row(&changed, "worker-1")["why"], "changed: max-memory");
    assert_eq!(row(&changed, "api")["pid"], row(&first, "api")["pid"]);
    let w1 = row(&first, "worker-1");
    let now = env.listed(w1["id"].as_str().unwrap());
    assert_eq!((now["url"].clone(), now["status"].clone()), (w1["url"].clone(), "running".into()));
    assert_ne!(now["pid"], w1["pid"]);
    assert_eq!(now["supervision"]["max_memory"], 3u64 << 30);

    // `ls --project` selects the file's instances; an `ocx start` one is not.
    let other = env.start(&[]);
    let listed = env.run(&["ls", "--json", "--project", file.to_str().unwrap()]).success().json();
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");
    assert!(listed.as_array().unwrap().iter().all(|r| r["id"] != other["id"]));

    // A table taken out: its instances are reported, and stopped with --remove-orphans.
    write_fleet(&env, "[instances.api]\nenv = { OPENCODE_LOG_LEVEL = \"INFO\" }\nrestart = \"on-failure\"\n");
    let reported = up(&env, &[]);
    assert_eq!(actions(&reported), [pair("api", "unchanged"), pair("worker-1", "orphan"), pair("worker-2", "orphan")]);
    assert_eq!(env.ls().len(), 4, "an orphan is only reported");
    let removed = up(&env, &["--remove-orphans"]);
    assert_eq!(actions(&removed), [pair("api", "unchanged"), pair("worker-1", "removed"), pair("worker-2", "removed")]);

    // down stops the file's instances only.
    let down = env.run(&["down", "--json"]).success().json();
    assert_eq!(down.as_array().unwrap().len(), 1, "{down}");
    assert_eq!(down[0]["result"], "stopped");
    let left = env.ls();
    assert_eq!((left.len(), left[0]["id"].clone()), (1, other["id"].clone()));
    assert!(!env.marked().iter().any(|(_, id)| *id == row(&first, "api")["id"]));
}

#[test]
fn bad_fleet_files_are_refused_before_anything_starts() {
    let env = TestEnv::new();
    let refused = |text: &str, code: i32, needle: &str| {
        write_fleet(&env, text);
        env.run(&["up"]).code(code).stderr_has(needle);
        assert!(env.record_files().is_empty(), "{text:?} left a record");
        assert!(env.marked().is_empty(), "{text:?} left a process");
    };
    refused("[instances.api]\n\nmax-memroy = \"2G\"\n", 2, "ocx.toml:3: max-memroy: unknown key");
    refused("[instances.api]\nmax-memory = \"2X\"\n", 2, "ocx.toml:2: max-memory: ");
    refused("[defaults]\nrestart = \"sometimes\"\n[instances.api]\n", 2, "ocx.toml:2: restart: ");
    refused("[instances.api]\nport = 0\n", 2, "--port 0 is not a port");
    refused("[instances.api\n", 2, "ocx.toml:1: not valid TOML");
    // A good table with a bad one: neither starts.
    refused("[instances.ok]\n[instances.bad]\ndir = \"nope\"\n", 1, "does not exist");
    write_fleet(&env, "[instances.api]\n");
    env.run(&["up", "nosuch"]).code(3).stderr_has("declares no instance \"nosuch\"");
    std::fs::remove_file(env.project.join("ocx.toml")).unwrap();
    env.run(&["up"]).code(2).stderr_has("no ocx.toml in");
    env.run(&["down"]).code(2).stderr_has("no ocx.toml in");
    env.run(&["up", "-f", "missing.toml"]).code(2).stderr_has("does not exist");

    // A name an instance from elsewhere has: an error naming both, and nothing starts.
    let taken = env.start(&["--name", "api"]);
    write_fleet(&env, "[instances.web]\n[instances.api]\n");
    let run = env.run(&["up"]);
    run.code(1).stderr_has("declares the instance api, but instance api").stderr_has(taken["id"].as_str().unwrap());
    let ls = env.ls();
    assert_eq!((ls.len(), ls[0]["id"].clone()), (1, taken["id"].clone()), "web was not started either");
}

#[test]
fn two_ups_at_once_start_each_instance_once() {
    let env = TestEnv::new();
    write_fleet(&env, "[instances.a]\n[instances.b]\n");
    for round in 0..3 {
        let spawn_up = || {
            env.ocx()
                .args(["up", "--json"])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (one, two) = (spawn_up(), spawn_up());
        let (one, two) = (finish(one, "up one"), finish(two, "up two"));
        let mut all: Vec<(String, String)> = actions(one.success().json().as_array().unwrap());
        all.extend(actions(two.success().json().as_array().unwrap()));
        all.sort();
        assert_eq!(
            all,
            [pair("a", "created"), pair("a", "unchanged"), pair("b", "created"), pair("b", "unchanged")],
            "round {round}"
        );
        let ls = env.ls();
        assert_eq!(ls.len(), 2, "round {round}: {ls:?}");
        env.run(&["down"]).success();
        assert!(env.record_files().is_empty(), "round {round}");
    }
}

/// SIGKILL every watcher and server of the home at once, as a power loss does.
fn power_loss(env: &TestEnv) {
    let mut pids = Vec::new();
    for r in env.ls() {
        pids.push(r["pid"].as_u64().unwrap() as u32);
        pids.extend(env.record(r["id"].as_str().unwrap())["watcher"]["pid"].as_u64().map(|p| p as u32));
    }
    let mut kill = Command::new("kill");
    kill.arg("-KILL");
    kill.args(pids.iter().map(u32::to_string));
    assert!(kill.status().unwrap().success());
    wait_for("every process to be gone", Duration::from_secs(10), || pids.iter().all(|p| is_gone(*p)).then_some(()));
}

#[test]
fn a_simulated_reboot_is_brought_back_by_resurrect() {
    let env = TestEnv::new();
    write_fleet(&env, "[instances.api]\n");
    let api = row(&up(&env, &[]), "api")["id"].as_str().unwrap().to_string();
    let chat = env.start(&["--name", "chat"]);
    let session = session_of(env.run(&["run", "chat", "remember the word zebra-9"]).success());
    env.start(&["--name", "stopped"]);
    env.run(&["stop", "stopped"]).success();
    let no = env.start(&["--name", "no", "--restart", "no"]);
    let before: Vec<Value> = [api.as_str(), chat["id"].as_str().unwrap()].iter().map(|id| env.secrets(id)).collect();

    power_loss(&env);
    let dead = env.ls();
    assert!(dead.iter().all(|r| r["status"] == "dead"), "{dead:?}");
    // gc keeps what resurrect would bring back; a `--restart no` instance is gc's.
    let gc = env.run(&["gc", "--json"]).success().json();
    let mut kept: Vec<&str> = gc["resurrectable"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    kept.sort();
    let mut want = vec![before[0]["id"].as_str().unwrap(), before[1]["id"].as_str().unwrap()];
    want.sort();
    assert_eq!(kept, want, "{gc}");
    assert_eq!(gc["records"][0]["id"], no["id"], "{gc}");

    let back = env.run(&["resurrect", "--json"]).success().json();
    let back = back.as_array().unwrap();
    assert_eq!(back.len(), 2, "{back:?}");
    assert!(back.iter().all(|r| r["action"] == "resurrected"), "{back:?}");
    for was in &before {
        let now = env.secrets(was["id"].as_str().unwrap());
        assert_eq!(now["status"], "running", "{now}");
        assert_eq!((now["url"].clone(), now["password"].clone()), (was["url"].clone(), was["password"].clone()));
        assert_eq!(now["name"], was["name"]);
        assert_ne!(now["pid"], was["pid"]);
        // Healthy on its port, with its password.
        assert_eq!(get_json(&now, "/global/health")["healthy"], true);
    }
    // The conversation carries on.
    let again = env.run(&["run", "chat", "which word was it?", "--session", &session]);
    assert_eq!(session_of(again.success()), session, "the old session continues");
    let last = env.model.requests().into_iter().rev().find(|r| r.to_string().contains("which word")).unwrap();
    assert!(last["messages"].to_string().contains("zebra-9"), "the model sees the turns from before the reboot");
    // What the user stopped stays stopped; a second run does nothing.
    assert!(env.ls().iter().all(|r| r["name"] != "stopped"));
    assert_eq!(env.run(&["resurrect", "--json"]).success().json(), serde_json::json!([]));
}

#[test]
fn the_systemd_unit_verifies_and_its_exec_start_runs() {
    let env = TestEnv::new();
    let unit = env.run(&["service", "install", "--print", "--manager", "systemd"]).success().stdout.clone();
    assert!(unit.contains("[Service]") && unit.contains("resurrect"), "{unit}");
    let dir = env.root.path().join("units");
    let runtime = env.root.path().join("runtime");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&runtime).unwrap();
    let path = dir.join("ocx-resurrect-test.service");
    std::fs::write(&path, &unit).unwrap();
    let mut verify = Command::new("systemd-analyze");
    env.apply_env(&mut verify);
    let out = verify.args(["verify", "--user"]).arg(&path).env("XDG_RUNTIME_DIR", &runtime).output().unwrap();
    assert!(out.status.success(), "systemd-analyze verify: {}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "systemd-analyze has remarks: {}", String::from_utf8_lossy(&out.stderr));

    // Its ExecStart runs `ocx resurrect` for this home: it brings back what a kill took away.
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).unwrap();
    let words = shlex::split(exec).unwrap();
    assert_eq!(words[1..3], ["--home".to_string(), std::path::absolute(&env.ocx_home).unwrap().display().to_string()]);
    let started = env.start(&["--name", "svc"]);
    power_loss(&env);
    let mut exec_start = Command::new(&words[0]);
    env.apply_env(&mut exec_start);
    exec_start.env("OCX_OPENCODE", &env.opencode);
    let out = exec_start.args(&words[1..]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("resurrected"));
    assert_eq!(env.listed(started["id"].as_str().unwrap())["status"], "running");
}

#[test]
fn without_a_service_manager_install_prints_the_crontab_line_and_installs_nothing() {
    if Path::new("/run/systemd/system").is_dir() {
        return; // A machine booted with systemd has a manager: this is for containers.
    }
    let env = TestEnv::new();
    let run = env.run(&["service", "install"]);
    run.code(1).stderr_has("no per-user service manager").stderr_has("crontab -e");
    let line = run.stdout.trim();
    assert!(line.starts_with("@reboot /") && line.ends_with(" resurrect"), "{line}");
    assert!(!env.user_home.join(".config/systemd").exists(), "nothing was installed");
    env.run(&["service", "status"]).success();
    env.run(&["service", "uninstall", "--manager", "systemd"]).success();
    let print = env.run(&["service", "install", "--print", "--manager", "launchd"]).success().stdout.clone();
    assert!(print.contains("<key>ProgramArguments</key>"), "{print}");
}

#[test]
fn two_resurrects_at_once_bring_each_instance_back_once() {
    let env = TestEnv::new();
    let id = env.start(&["--name", "twice"])["id"].as_str().unwrap().to_string();
    for round in 0..3 {
        power_loss(&env);
        let spawn_resurrect = || {
            env.ocx()
                .args(["resurrect", "--json"])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (one, two) = (spawn_resurrect(), spawn_resurrect());
        let (one, two) = (finish(one, "resurrect one"), finish(two, "resurrect two"));
        let mut rows = one.success().json().as_array().unwrap().clone();
        rows.extend(two.success().json().as_array().unwrap().iter().cloned());
        let resurrected = rows.iter().filter(|r| r["action"] == "resurrected").count();
        assert_eq!(resurrected, 1, "round {round}: {rows:?}");
        assert!(
            rows.iter().all(|r| r["action"] == "resurrected" || r["action"] == "skipped"),
            "round {round}: {rows:?}"
        );
        let listed = env.listed(&id);
        assert_eq!(listed["status"], "running", "round {round}");
        let servers = env.marked().into_iter().filter(|(pid, i)| *i == id && cmdline(*pid).contains("serve")).count();
        assert_eq!(servers, 1, "round {round}: one server, not two");
    }
}
