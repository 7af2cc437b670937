//! `ocx top` in a real terminal (tmux, read back with `capture-pane`) against real opencode:
//! the table, a crash and its restart, a busy prompt, stop from the keyboard, the log, and
//! the terminal handed back as it was after q and after SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{TestEnv, wait_for};

/// A tmux server of the test's own, ended when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(env: &TestEnv, run: &str) -> Tmux {
        Tmux { socket: format!("ocx-{}-{run}", env.root.path().file_name().unwrap().to_string_lossy()) }
    }

    fn cmd(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").arg("-L").arg(&self.socket).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run `script` in a terminal of 80 × 24 characters, the smallest top is made for.
    fn run(&self, script: &Path) {
        self.cmd(&["new-session", "-d", "-x", "80", "-y", "24", "sh", script.to_str().unwrap()]);
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys"];
        args.extend(keys);
        self.cmd(&args);
    }

    fn screen(&self) -> String {
        self.cmd(&["capture-pane", "-p"])
    }

    /// Wait until a line of the screen satisfies `check`; on a timeout, fail with the screen.
    fn wait_for_line(&self, what: &str, timeout: Duration, check: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if screen.lines().any(&check) {
                return;
            }
            assert!(Instant::now() < deadline, "no {what} on the screen within {timeout:?}:\n{screen}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_for_text(&self, text: &str) {
        self.wait_for_line(text, Duration::from_secs(60), |l| l.contains(text));
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.cmd(&["kill-server"]);
    }
}

/// A script that records `stty -a`, runs `ocx top` (its PID in `pid`), records its exit code
/// and `stty -a` again, then proves the shell still takes commands.
fn script(env: &TestEnv, name: &str) -> PathBuf {
    let dir = env.root.path();
    let file = |what: &str| dir.join(format!("{name}.{what}")).display().to_string();
    let exports = env.shell_exports();
    let text = format!(
        "{exports}cd '{project}'\nstty -a > '{before}'\nsh -c 'echo $$ > {pid}; exec {ocx} top'\necho $? > '{code}'\n\
         stty -a > '{after}'\necho shell-is-back\nsleep 600\n",
        project = env.project.display(),
        before = file("before"),
        pid = file("pid"),
        ocx = env!("CARGO_BIN_EXE_ocx"),
        code = file("code"),
        after = file("after"),
    );
    let path = dir.join(format!("{name}.sh"));
    std::fs::write(&path, text).unwrap();
    path
}

/// After top ended: exit 0, the terminal's settings as before, the shell running on.
fn left_the_terminal_as_it_was(env: &TestEnv, tmux: &Tmux, name: &str) {
    let read = |what: &str| std::fs::read_to_string(env.root.path().join(format!("{name}.{what}"))).ok();
    let code = wait_for("top to exit", Duration::from_secs(10), || read("code").filter(|c| c.ends_with('\n')));
    assert_eq!(code.trim(), "0", "{}", tmux.screen());
    tmux.wait_for_text("shell-is-back");
    let after = wait_for("stty -a after", Duration::from_secs(10), || read("after").filter(|a| !a.is_empty()));
    assert_eq!(read("before").unwrap(), after, "stty -a changed");
    // The alternate screen was left: the table is gone from the visible screen.
    assert!(!tmux.screen().contains("ACTIVITY"), "{}", tmux.screen());
}

/// The row of instance `name`: its first word after the selection mark.
fn row_of<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    (line.trim_start_matches("> ").split_whitespace().next() == Some(name)).then_some(line)
}

#[test]
fn top_shows_restarts_activity_stops_and_leaves_the_terminal_as_it_was() {
    let env = TestEnv::new();
    // Without a terminal: refused, with the hint, nothing started.
    env.run(&["top"]).code(2).stderr_has("needs a terminal").stderr_has("ocx ls");

    env.start(&["--name", "alpha"]);
    let beta = env.start(&["--name", "beta"]);
    let tmux = Tmux::new(&env, "top");
    tmux.run(&script(&env, "q"));
    let both = Duration::from_secs(30);
    tmux.wait_for_line("both instances running", both, |l| row_of(l, "alpha").is_some_and(|l| l.contains("running")));
    tmux.wait_for_line("beta running", both, |l| row_of(l, "beta").is_some_and(|l| l.contains("running")));

    // A busy prompt shows as `busy 1`.
    let mut run = env.ocx().args(["run", "alpha", "SLOW"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    tmux.wait_for_line("alpha busy 1", Duration::from_secs(30), |l| {
        row_of(l, "alpha").is_some_and(|l| l.contains("busy 1"))
    });
    assert!(run.wait().unwrap().success());

    // A SIGKILLed server: `restarting` (or `unhealthy` first), then `running` with one restart.
    let pid = beta["pid"].as_u64().unwrap() as i32;
    Command::new("kill").arg("-9").arg(pid.to_string()).status().unwrap();
    tmux.wait_for_line("beta restarting", both, |l| row_of(l, "beta").is_some_and(|l| l.contains("restarting")));
    tmux.wait_for_line("beta running again", both, |l| {
        row_of(l, "beta").is_some_and(|l| l.contains("running") && l.split_whitespace().nth(3) == Some("1"))
    });

    // The log of the selected one (alpha, first), then events again.
    tmux.keys(&["l"]);
    tmux.wait_for_text("log · alpha");
    // The server's own log lines (its ready line may have scrolled off by now).
    tmux.wait_for_text("level=INFO");

    // s, y: the selected one (beta, after j) is stopped, and its row goes.
    tmux.keys(&["j"]);
    tmux.wait_for_text("log · beta");
    tmux.keys(&["s"]);
    tmux.wait_for_text("stop beta? y/n");
    tmux.keys(&["y"]);
    tmux.wait_for_text("beta: stopped");
    tmux.wait_for_text("1 instance");
    assert!(env.ls().iter().all(|r| r["name"] != "beta"), "beta's record is gone");

    tmux.keys(&["q"]);
    left_the_terminal_as_it_was(&env, &tmux, "q");
    drop(tmux);

    // SIGTERM: the same.
    let tmux = Tmux::new(&env, "term");
    tmux.run(&script(&env, "term"));
    tmux.wait_for_line("alpha", both, |l| row_of(l, "alpha").is_some());
    let pid = std::fs::read_to_string(env.root.path().join("term.pid")).unwrap();
    Command::new("kill").arg("-TERM").arg(pid.trim()).status().unwrap();
    left_the_terminal_as_it_was(&env, &tmux, "term");
}
