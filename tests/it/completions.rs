//! Shell completion in real shells, and the committed scripts and man pages being current.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::basics::write_record;
use crate::support::{TestEnv, finish, wait_for};

const SHELLS: [(&str, &str); 5] =
    [("bash", "ocx.bash"), ("zsh", "_ocx"), ("fish", "ocx.fish"), ("powershell", "_ocx.ps1"), ("elvish", "ocx.elv")];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A tool the test script installs; missing → fail and say how to get it.
fn tool(name: &str) -> Command {
    let found = std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()));
    assert!(found, "{name} is not installed: scripts/test installs it (apt-get install zsh fish mandoc)");
    Command::new(name)
}

/// A test home with two recorded instances (no server needed: completion reads records only).
fn two_instances() -> TestEnv {
    let env = TestEnv::new();
    write_record(&env, "k3f9a2", Some("api"));
    write_record(&env, "zz0001", None);
    env
}

/// Run a shell snippet with the test's environment and `ocx` on PATH; its stdout lines.
fn in_shell(env: &TestEnv, shell: &str, args: &[&str], script: &str) -> Vec<String> {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_ocx")).parent().unwrap();
    let path = std::env::join_paths(
        std::iter::once(bin_dir.to_path_buf()).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let mut cmd = tool(shell);
    env.apply_env(&mut cmd);
    cmd.env("PATH", path).env("OCX_HOME", &env.ocx_home).current_dir(repo()).args(args).arg(script);
    let run = finish(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(), shell);
    run.success();
    assert_eq!(run.stderr, "", "completion printed errors");
    run.stdout.lines().map(str::to_string).collect()
}

/// The values among completion lines (`value`, `value:help` or `value<TAB>help`).
fn values(lines: &[String]) -> Vec<String> {
    lines.iter().map(|l| l.split(['\t', ':']).next().unwrap().to_string()).collect()
}

#[track_caller]
fn assert_offers(lines: &[String], expected: &[&str]) {
    let got = values(lines);
    for want in expected {
        assert!(got.iter().any(|g| g == want), "{want:?} not offered; got {got:?}");
    }
}

fn bash(env: &TestEnv, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let script = format!(
        "source completions/ocx.bash; COMP_WORDS=({}); COMP_CWORD={}; _clap_complete_ocx ocx '{}' '{}'; \
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        quoted.join(" "),
        words.len() - 1,
        words[words.len() - 1],
        words[words.len() - 2],
    );
    in_shell(env, "bash", &["--norc", "-c"], &script)
}

/// zsh's own completion function from the script, with `_describe` (zsh's way to offer values)
/// printing what it is given.
fn zsh(env: &TestEnv, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let script = format!(
        "compdef() {{ : }}; _describe() {{ print -l -- \"${{(@P)3}}\" }}; source completions/_ocx; \
         words=({}); CURRENT={}; _clap_dynamic_completer_ocx",
        quoted.join(" "),
        words.len()
    );
    in_shell(env, "zsh", &["-f", "-c"], &script)
}

/// fish's completion engine itself (`complete -C`), with the script loaded.
fn fish(env: &TestEnv, line: &str) -> Vec<String> {
    in_shell(env, "fish", &["--no-config", "-c"], &format!("source completions/ocx.fish; complete -C '{line}'"))
}

#[test]
fn bash_completes_instances_subcommands_and_values() {
    let env = two_instances();
    assert_offers(&bash(&env, &["ocx", "stop", ""]), &["k3f9a2", "api", "zz0001"]);
    assert_eq!(values(&bash(&env, &["ocx", "st"])), ["start", "stop"]);
    assert_eq!(values(&bash(&env, &["ocx", "run", "--format", ""])), ["text", "json"]);
    assert_offers(&bash(&env, &["ocx", "logs", "k3"]), &["k3f9a2"]);
    assert_offers(&bash(&env, &["ocx", "restart", ""]), &["k3f9a2", "api", "zz0001"]);
    assert_offers(&bash(&env, &["ocx", "batch", "tasks.txt", "--on", ""]), &["k3f9a2", "api", "zz0001"]);
    assert_eq!(values(&bash(&env, &["ocx", "start", "--restart", ""])), ["no", "on-failure", "always"]);
}

#[test]
fn zsh_completes_instances_with_descriptions() {
    let env = two_instances();
    let lines = zsh(&env, &["ocx", "stop", ""]);
    assert_offers(&lines, &["k3f9a2", "api", "zz0001"]);
    assert!(lines.iter().any(|l| l.starts_with("api:k3f9a2, running, /home/u/proj")), "{lines:?}");
    assert_eq!(values(&zsh(&env, &["ocx", "st"])), ["start", "stop"]);
    assert_eq!(values(&zsh(&env, &["ocx", "run", "--format", ""])), ["text", "json"]);
    assert_offers(&zsh(&env, &["ocx", "restart", ""]), &["k3f9a2", "api", "zz0001"]);
    assert_eq!(values(&zsh(&env, &["ocx", "start", "--restart", ""])), ["no", "on-failure", "always"]);
}

#[test]
fn fish_completes_instances_with_descriptions() {
    let env = two_instances();
    let lines = fish(&env, "ocx stop ");
    assert_offers(&lines, &["k3f9a2", "api", "zz0001"]);
    assert!(lines.iter().any(|l| l == "k3f9a2\trunning, /home/u/proj"), "{lines:?}");
    assert_eq!(values(&fish(&env, "ocx st")), ["start", "stop"]);
    assert_eq!(values(&fish(&env, "ocx run --format ")), ["text", "json"]);
    assert_offers(&fish(&env, "ocx restart "), &["k3f9a2", "api", "zz0001"]);
    assert_eq!(values(&fish(&env, "ocx start --restart ")), ["no", "on-failure", "always"]);
    // Paths: directories for --dir, files for --file (the shell runs in the repository).
    assert_offers(&fish(&env, "ocx start --dir sr"), &["src/"]);
    assert_offers(&fish(&env, "ocx run api x --file Cargo.t"), &["Cargo.toml"]);
}

/// PowerShell is not installable here: check the candidates ocx gives its script (the script
/// itself is compared with the committed one below).
#[test]
fn powershell_candidates_come_from_ocx() {
    let env = two_instances();
    let ask = |words: &[&str]| {
        let run = env.ocx().env("COMPLETE", "powershell").arg("--").args(words).output().unwrap();
        assert!(run.status.success() && run.stderr.is_empty());
        String::from_utf8(run.stdout).unwrap().lines().map(str::to_string).collect::<Vec<_>>()
    };
    let lines = ask(&["ocx", "stop", ""]);
    assert_offers(&lines, &["k3f9a2", "api", "zz0001"]);
    assert!(lines.iter().any(|l| l == "api\tk3f9a2, running, /home/u/proj"), "{lines:?}");
    assert_eq!(values(&ask(&["ocx", "st"])), ["start", "stop"]);
    assert_offers(&ask(&["ocx", "restart", ""]), &["k3f9a2", "api", "zz0001"]);
    assert_eq!(values(&ask(&["ocx", "start", "--restart", ""])), ["no", "on-failure", "always"]);
    // Only the first word of `ocx run` can be an instance.
    assert_offers(&ask(&["ocx", "run", ""]), &["api"]);
    assert!(ask(&["ocx", "run", "api", ""]).iter().all(|l| l.starts_with('-')));
}

#[test]
fn a_broken_home_never_prints_into_the_prompt() {
    let env = TestEnv::new();
    std::fs::create_dir_all(env.ocx_home.join("instances")).unwrap();
    std::fs::write(env.ocx_home.join("instances/bad001.json"), "garbage").unwrap();
    for home in [env.ocx_home.clone(), env.root.path().join("missing")] {
        let run =
            env.ocx().env("OCX_HOME", &home).env("COMPLETE", "fish").args(["--", "ocx", "stop", ""]).output().unwrap();
        assert!(run.status.success());
        assert!(run.stderr.is_empty(), "{}", String::from_utf8_lossy(&run.stderr));
    }
    assert!(!env.root.path().join("missing").exists(), "completion creates nothing");
}

#[test]
fn committed_completion_scripts_are_current() {
    let env = TestEnv::new();
    for (shell, file) in SHELLS {
        let generated = env.run(&["completions", shell]).success().stdout.clone();
        let committed = std::fs::read_to_string(repo().join("completions").join(file)).unwrap_or_default();
        assert!(generated == committed, "completions/{file} is stale: run scripts/generate");
    }
}

#[test]
fn committed_man_pages_are_current_and_lint_clean() {
    let env = TestEnv::new();
    let out = env.root.path().join("man");
    env.run(&["man", out.to_str().unwrap()]).success();
    let list = |dir: &Path| {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    };
    let committed = repo().join("man");
    assert_eq!(list(&out), list(&committed), "man/ is stale: run scripts/generate");
    for name in list(&out) {
        let same = std::fs::read(out.join(&name)).unwrap() == std::fs::read(committed.join(&name)).unwrap();
        assert!(same, "man/{name} is stale: run scripts/generate");
    }
    let pages: Vec<PathBuf> = list(&committed).iter().map(|n| committed.join(n)).collect();
    let lint = tool("mandoc").args(["-Tlint", "-W", "warning"]).args(&pages).output().unwrap();
    let messages = String::from_utf8_lossy(&lint.stdout).into_owned() + &String::from_utf8_lossy(&lint.stderr);
    assert!(lint.status.success() && messages.is_empty(), "mandoc -Tlint:\n{messages}");
}

/// `--session` completes to the sessions of the running instances (asked live, briefly), and
/// to nothing once the server is down.
#[test]
fn sessions_complete_from_the_running_servers() {
    let env = TestEnv::new();
    env.start(&["--name", "chat"]);
    let session = crate::support::session_of(env.run(&["run", "chat", "a session to complete"]).success());
    // A server that does not list its sessions within a second gives nothing, by design (the
    // prompt must not hang): on a loaded machine the first ask may come back empty. Ask again.
    let offered = |lines: Vec<String>| values(&lines).contains(&session).then_some(lines);
    let lines = wait_for("fish to offer the session", Duration::from_secs(30), || offered(fish(&env, "ocx wait ")));
    assert!(lines.iter().any(|l| l == &format!("{session}\tchat: a session to complete")), "{lines:?}");
    wait_for("bash to offer the session", Duration::from_secs(30), || {
        offered(bash(&env, &["ocx", "run", "chat", "x", "--session", ""]))
    });
    wait_for("zsh to offer the session", Duration::from_secs(30), || {
        offered(zsh(&env, &["ocx", "events", "--session", ""]))
    });
    env.run(&["stop", "chat"]).success();
    let left = fish(&env, "ocx wait ");
    assert!(left.iter().all(|l| l.starts_with('-')), "no session when the server is down: {left:?}");
}
