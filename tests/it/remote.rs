//! Instances on other hosts over ssh: two real sshd on 127.0.0.1, each a host with its own ocx
//! home, reached through the system's ssh with a shared connection per host.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::support::sshd::{SshHosts, all_command_lines};
use crate::support::{Guard, TestEnv, wait_for};

/// `env` with hosts `a` and `b`, added under those names.
fn two_hosts() -> (TestEnv, SshHosts) {
    let env = TestEnv::new();
    let hosts = SshHosts::start(&env, &["a", "b"]);
    (env, hosts)
}

fn ocx(env: &TestEnv, hosts: &SshHosts, args: &[&str]) -> crate::support::Run {
    let child = env
        .ocx()
        .env("OCX_SSH", &hosts.ssh)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    crate::support::finish(child, &format!("ocx {}", args.join(" ")))
}

fn add_hosts(env: &TestEnv, hosts: &SshHosts) {
    for h in ["a", "b"] {
        ocx(env, hosts, &["host", "add", h, &format!("ssh://{h}"), "--ocx", hosts.ocx.to_str().unwrap()]).success();
    }
}

/// Is anything of ocx's a close match for `what` in a process's command line, anywhere?
fn on_a_command_line(what: &str) -> Option<String> {
    all_command_lines().into_iter().find(|c| c.contains(what))
}

#[test]
fn two_hosts_started_listed_prompted_and_stopped_over_ssh() {
    let (env, mut hosts) = two_hosts();
    add_hosts(&env, &hosts);
    let listed = ocx(&env, &hosts, &["host", "ls", "--json"]).success().json();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    let project = env.project.to_str().unwrap();

    // A remote start returns (nothing of the server holds the ssh session), as its JSON.
    let token = "envsecret-7f3a9";
    let started = ocx(
        &env,
        &hosts,
        &["--host", "a", "start", "--name", "api", "--dir", project, "--json", "--env", &format!("TOKEN={token}")],
    );
    let started = started.success().json();
    assert_eq!(started[0]["name"], "api", "{started}");
    let b = ocx(&env, &hosts, &["start", "--host", "ssh://b", "--name", "web", "--dir", project]);
    b.success();
    assert!(b.stdout.contains("web") || b.stderr.contains("web"), "rendered as a local start: {b:?}");
    // Each host keeps its own state.
    let on_a = hosts.host("a").ocx().args(["ls", "--json"]).output().unwrap();
    let on_a: Value = serde_json::from_slice(&on_a.stdout).unwrap();
    assert_eq!(on_a.as_array().unwrap().len(), 1);
    assert_eq!(on_a[0]["name"], "api");

    // One listing for both, with a HOST column.
    let table = ocx(&env, &hosts, &["ls", "--all-hosts"]);
    let lines: Vec<&str> = table.success().stdout.lines().collect();
    assert!(lines[0].starts_with("HOST") && lines[0].contains("STATUS"), "{}", table.stdout);
    let row =
        |host: &str, name: &str| lines.iter().any(|l| l.starts_with(host) && l.contains(name) && l.contains("running"));
    assert!(row("a ", "api") && row("b ", "web"), "{}", table.stdout);
    let json = ocx(&env, &hosts, &["ls", "--hosts", "a,b", "--json"]).success().json();
    let names: Vec<(String, String)> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["host"].as_str().unwrap().to_string(), d["name"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(names, [("a".to_string(), "api".to_string()), ("b".to_string(), "web".to_string())]);

    // A prompt through the forward: quotes and a command substitution arrive verbatim, and
    // nothing runs them on either side.
    let prompt = "it's \"quoted\" $(touch pwned) `touch pwned2` ; touch pwned3";
    let run = ocx(&env, &hosts, &["run", "a:api", prompt]);
    assert_eq!(run.success().stdout, format!("echo: {prompt}\n"), "{}", run.stderr);
    for dir in [&env.project, &env.user_home, &hosts.dir, &std::env::current_dir().unwrap()] {
        for f in ["pwned", "pwned2", "pwned3"] {
            assert!(!dir.join(f).exists(), "{} was created", dir.join(f).display());
        }
    }

    // Nothing secret on any command line: not ssh's, not on the host.
    let password = hosts.host("a").ocx().args(["ls", "--json", "--show-secrets"]).output().unwrap();
    let password: Value = serde_json::from_slice(&password.stdout).unwrap();
    let password = password[0]["password"].as_str().unwrap().to_string();
    let argv = hosts.argv();
    for secret in [password.as_str(), token, "pwned"] {
        assert!(!argv.contains(secret), "{secret} on an ssh command line:\n{argv}");
        assert_eq!(on_a_command_line(secret), None, "{secret} on a command line");
    }
    // On the hosts, every ocx ran for this one had only `__remote` on its command line.
    let remote = hosts.remote_argv();
    assert!(remote.lines().count() >= 4 && remote.lines().all(|l| l == "__remote"), "{remote}");
    // Every command to a host shared one connection: one handshake for all of them.
    assert_eq!(hosts.host("a").logins(), 1, "ssh logins on host a");

    // The other control commands, as locally: the log, the sessions.
    let logs = ocx(&env, &hosts, &["logs", "a:api", "-n", "50"]);
    assert!(logs.success().stdout.contains("listening"), "{}", logs.stdout);
    let sessions = ocx(&env, &hosts, &["sessions", "a:api", "--json"]).success().json();
    assert!(!sessions.as_array().unwrap().is_empty(), "{sessions}");

    // Stop, remotely.
    ocx(&env, &hosts, &["stop", "a:api"]).success();
    let after = ocx(&env, &hosts, &["--host", "a", "ls", "--json"]).success().json();
    assert_eq!(after, Value::Array(vec![]), "{after}");

    // A host that goes away is a row that says so; the other still lists.
    hosts.host_mut("a").kill();
    let table = ocx(&env, &hosts, &["ls", "--all-hosts"]);
    let out = &table.success().stdout;
    assert!(out.lines().any(|l| l.starts_with("a ") && l.contains("unreachable")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("b ") && l.contains("web") && l.contains("running")), "{out}");
    // Only that host asked: it failed, and so does ls.
    let alone = ocx(&env, &hosts, &["ls", "--hosts", "a"]);
    assert_eq!(alone.code, Some(1), "{alone:?}");
    assert!(alone.stdout.contains("unreachable"), "{alone:?}");
    hosts.close_connections(&env.ocx_home.join("ssh"));
}

#[test]
fn tunnel_and_url_of_a_remote_instance() {
    let (env, hosts) = two_hosts();
    add_hosts(&env, &hosts);
    let project = env.project.to_str().unwrap();
    ocx(&env, &hosts, &["--host", "b", "start", "--name", "web", "--dir", project]).success();
    // No tunnel: no URL on this machine, and a hint.
    let none = ocx(&env, &hosts, &["url", "b:web"]);
    assert_eq!(none.code, Some(3), "{none:?}");
    assert!(none.stderr.contains("ocx tunnel b:web"), "{}", none.stderr);

    let mut tunnel = env
        .ocx()
        .env("OCX_SSH", &hosts.ssh)
        .args(["tunnel", "b:web"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(tunnel.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert_eq!(ocx(&env, &hosts, &["url", "b:web"]).success().stdout.trim(), url);
    let with = ocx(&env, &hosts, &["url", "b:web", "--with-credentials"]).success().stdout.trim().to_string();
    // The server on host b answers through the forward, with the credentials `url` gave.
    let userinfo = with.trim_start_matches("http://").split('@').next().unwrap().to_string();
    let (user, password) = userinfo.split_once(':').unwrap();
    let auth = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("{user}:{password}"));
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET /global/health HTTP/1.0\r\nAuthorization: Basic {auth}\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("\"healthy\":true"), "{answer}");

    // Events of a host's instance come through; Ctrl-C here ends the follower there too,
    // with its own exit code (0, as locally).
    let mut events = env
        .ocx()
        .env("OCX_SSH", &hosts.ssh)
        .args(["events", "b:web", "--json"])
        // A group of its own, to send Ctrl-C to the whole group as a terminal does.
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = crate::support::stdout_lines(&mut events);
    let first: Value = serde_json::from_str(&rx.recv_timeout(Duration::from_secs(30)).unwrap()).unwrap();
    assert!(first["instance"].is_string() && first["type"].is_string(), "{first}");
    assert_eq!(hosts.host("b").remote_commands(), 1, "the follower runs on host b");
    std::process::Command::new("kill").args(["-INT", "--", &format!("-{}", events.id())]).status().unwrap();
    let status = wait_for("events to end", Duration::from_secs(20), || events.try_wait().unwrap());
    assert_eq!(status.code(), Some(0));
    wait_for("the remote follower to end", Duration::from_secs(20), || {
        (hosts.host("b").remote_commands() == 0).then_some(())
    });

    // Ctrl-C ends the tunnel (130), its forward, and `url` says there is none again.
    unsafe_interrupt(tunnel.id());
    let status = wait_for("the tunnel to end", Duration::from_secs(20), || tunnel.try_wait().unwrap());
    assert_eq!(status.code(), Some(130));
    assert_eq!(ocx(&env, &hosts, &["url", "b:web"]).code, Some(3));
    wait_for("the forward to be cancelled", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err().then_some(())
    });
    hosts.close_connections(&env.ocx_home.join("ssh"));
}

fn unsafe_interrupt(pid: u32) {
    std::process::Command::new("kill").args(["-INT", &pid.to_string()]).status().unwrap();
}

#[test]
fn bad_hosts_and_other_versions_are_refused_clearly() {
    let (env, hosts) = two_hosts();
    add_hosts(&env, &hosts);
    // Bad input: exact codes, and nothing written.
    for (args, code) in [
        (&["host", "add", "x", "ftp://box"][..], 2),
        (&["host", "add", "x", "ssh://-oProxyCommand=touch%20pwned"][..], 2),
        (&["host", "add", "with:colon", "ssh://box"][..], 2),
        (&["host", "rm", "a", "nosuch"][..], 3),
        (&["--host", "nosuch", "ls"][..], 3),
    ] {
        let out = ocx(&env, &hosts, args);
        assert_eq!(out.code, Some(code), "{args:?}: {out:?}");
    }
    let listed = ocx(&env, &hosts, &["host", "ls", "--json"]).success().json();
    assert_eq!(listed.as_array().unwrap().len(), 2, "nothing added or removed: {listed}");

    // An ocx of another version on the host: refused, saying both versions.
    let fake = hosts.dir.join("old-ocx");
    std::fs::write(&fake, "#!/bin/sh\nread line\necho '{\"ocx\":\"0.0.1\",\"protocol\":1,\"schema\":1}'\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    ocx(&env, &hosts, &["host", "add", "old", "ssh://a", "--ocx", fake.to_str().unwrap()]).success();
    let old = ocx(&env, &hosts, &["--host", "old", "ls"]);
    assert_eq!(old.code, Some(1), "{old:?}");
    assert!(old.stderr.contains("0.0.1") && old.stderr.contains("refusing to mix versions"), "{}", old.stderr);
    // No ocx there at all.
    ocx(&env, &hosts, &["host", "add", "bare", "ssh://a", "--ocx", "/nonexistent/ocx"]).success();
    let bare = ocx(&env, &hosts, &["--host", "bare", "ls"]);
    assert_eq!(bare.code, Some(1), "{bare:?}");
    assert!(bare.stderr.contains("does not speak ocx's remote protocol"), "{}", bare.stderr);
    // A file for the prompt would be read on the host: refused before anything is sent.
    let project = env.project.to_str().unwrap();
    ocx(&env, &hosts, &["--host", "a", "start", "--name", "api", "--dir", project]).success();
    std::fs::write(env.project.join("notes.txt"), "x").unwrap();
    let file =
        ocx(&env, &hosts, &["run", "a:api", "read it", "--file", env.project.join("notes.txt").to_str().unwrap()]);
    assert_eq!(file.code, Some(2), "{file:?}");
    hosts.close_connections(&env.ocx_home.join("ssh"));
}

/// A link that stops answering mid-command (TCP stays open, nothing replies: the host's sshd
/// is stopped) ends a remote `logs -f` by itself through ssh's keepalives, saying so, instead
/// of hanging; the follower on the host ends once its connection does.
#[test]
fn a_follow_on_a_host_whose_link_stops_answering_ends_by_itself() {
    let env = TestEnv::new();
    let hosts = SshHosts::start(&env, &["a"]);
    ocx(&env, &hosts, &["host", "add", "a", "ssh://a", "--ocx", hosts.ocx.to_str().unwrap()]).success();
    let project = env.project.to_str().unwrap();
    ocx(&env, &hosts, &["--host", "a", "start", "--name", "api", "--dir", project]).success();
    let argv = hosts.argv();
    assert!(
        argv.lines().all(|l| l.contains("-o ServerAliveInterval=15 -o ServerAliveCountMax=3")),
        "every ssh has keepalives:\n{argv}"
    );

    let mut follow = Guard(
        env.ocx()
            .env("OCX_SSH", &hosts.ssh)
            .args(["--host", "a", "logs", "-f", "api"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let lines = crate::support::stdout_lines(&mut follow.0);
    lines.recv_timeout(Duration::from_secs(30)).expect("the log's lines come through");
    wait_for("the follower to run on host a", Duration::from_secs(10), || {
        (hosts.host("a").remote_commands() == 1).then_some(())
    });

    let frozen = hosts.host("a").freeze();
    // ssh gives up after 3 unanswered keepalives 15 s apart (about 45-60 s); some slack.
    let status = wait_for("ocx to notice the link is dead", Duration::from_secs(90), || follow.0.try_wait().unwrap());
    let mut stderr = String::new();
    follow.0.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("lost the connection to host a"), "{stderr}");

    // Once the host answers again, its sshd finds the connection closed and the follower ends.
    drop(frozen);
    wait_for("the follower on host a to end", Duration::from_secs(20), || {
        (hosts.host("a").remote_commands() == 0).then_some(())
    });
}
