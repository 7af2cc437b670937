//! The harness itself: the pinned opencode, offline, answers a prompt from the fake model.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Guard, TestEnv, basic_auth, http, wait_for};

#[test]
fn real_opencode_answers_a_prompt_from_the_fake_model() {
    let env = TestEnv::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cmd = Command::new(&env.opencode);
    env.apply_env(&mut cmd);
    cmd.args(["serve", "--hostname", "127.0.0.1", "--port", &port.to_string()])
        .env("OPENCODE_SERVER_PASSWORD", "smoke-secret")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut server = Guard(cmd.spawn().unwrap());
    let base = format!("http://127.0.0.1:{port}");
    let auth = basic_auth(&json!({"username": "opencode", "password": "smoke-secret"}));
    let agent = http(Duration::from_secs(60));
    let poll = http(Duration::from_secs(2));

    let health: Value = wait_for("the server's health check", Duration::from_secs(60), || {
        // Short: a connection accepted while the server is still starting may never be answered.
        let resp = poll.get(format!("{base}/global/health")).header("Authorization", &auth).call().ok()?;
        (resp.status() == 200).then(|| resp.into_body().read_json().ok())?
    });
    assert_eq!(health["healthy"], true);
    assert_eq!(health["version"], crate::support::OPENCODE_VERSION);

    let session: Value = agent
        .post(format!("{base}/session"))
        .header("Authorization", &auth)
        .send_json(json!({"title": "smoke"}))
        .unwrap()
        .into_body()
        .read_json()
        .unwrap();
    let id = session["id"].as_str().unwrap();
    let answer: Value = agent
        .post(format!("{base}/session/{id}/message"))
        .header("Authorization", &auth)
        .send_json(json!({"parts": [{"type": "text", "text": "hello smoke 4711"}]}))
        .unwrap()
        .into_body()
        .read_json()
        .unwrap();
    let text: String = answer["parts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] == "text")
        .filter_map(|p| p["text"].as_str())
        .collect();
    assert!(text.contains("echo: ") && text.contains("hello smoke 4711"), "answer: {answer}");
    assert!(!env.model.requests().is_empty());

    // SIGTERM ends it (opencode-facts.md); the guard would KILL it otherwise.
    Command::new("kill").args(["-TERM", &server.0.id().to_string()]).status().unwrap();
    let status = wait_for("the server to exit", Duration::from_secs(30), || server.0.try_wait().unwrap());
    assert!(status.code().is_some() || status.signal_is_term());
}

trait TermStatus {
    fn signal_is_term(&self) -> bool;
}

impl TermStatus for std::process::ExitStatus {
    fn signal_is_term(&self) -> bool {
        std::os::unix::process::ExitStatusExt::signal(self) == Some(15)
    }
}
