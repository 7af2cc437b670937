//! Many agents on one repository: `start --worktree` (a worktree and branch per instance),
//! `ocx diff`, the never-lose-work rule of `stop` and `gc`, crashes and faults at each step of
//! creating and removing a worktree, bad input, and `--isolate` (a database of its own).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::{TestEnv, session_of, wait_for};

/// `git -C dir ARGS` with an identity (the test's HOME has no git config); its stdout.
#[track_caller]
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"])
        .args(args)
        .env_remove("GIT_DIR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Make the test's project a repository with one commit (`shared.txt`, and opencode.json).
fn init_repo(env: &TestEnv) -> PathBuf {
    let repo = env.project.clone();
    git(&repo, &["init", "-q"]);
    std::fs::write(repo.join("shared.txt"), "original\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "init"]);
    repo
}

/// The worktree paths git lists for `repo`, the main one included.
fn listed(repo: &Path) -> Vec<PathBuf> {
    git(repo, &["worktree", "list", "--porcelain"])
        .lines()
        .filter_map(|l| l.strip_prefix("worktree ").map(PathBuf::from))
        .collect()
}

fn branches(repo: &Path) -> Vec<String> {
    git(repo, &["branch", "--format=%(refname:short)"]).lines().map(String::from).collect()
}

/// The worktree directories under the ocx home (`worktrees/<id>/<repo>`).
fn on_disk(env: &TestEnv) -> Vec<PathBuf> {
    let Ok(ids) = std::fs::read_dir(env.ocx_home.join("worktrees")) else { return Vec::new() };
    ids.flatten()
        .filter(|e| e.path().is_dir())
        .flat_map(|e| std::fs::read_dir(e.path()).unwrap().flatten().map(|w| w.path()).collect::<Vec<_>>())
        .collect()
}

/// `git worktree list` agrees with the disk: every listed worktree exists, and every worktree
/// directory ocx made is one git lists (none half-registered).
#[track_caller]
fn consistent(env: &TestEnv, repo: &Path) {
    let listed = listed(repo);
    for path in &listed {
        assert!(path.is_dir(), "git lists {} but it is not on disk", path.display());
    }
    for path in on_disk(env) {
        assert!(listed.contains(&path), "{} is on disk but git does not list it: {listed:?}", path.display());
    }
}

fn worktree_of(record: &Value) -> (PathBuf, String) {
    let wt = &record["worktree"];
    (PathBuf::from(wt["path"].as_str().unwrap()), wt["branch"].as_str().unwrap().to_string())
}

#[test]
fn two_worktree_agents_edit_the_same_files_apart() {
    let env = TestEnv::new();
    let repo = init_repo(&env);
    let a = env.start(&["--name", "a", "--worktree"]);
    let b = env.start(&["--name", "b", "--worktree"]);
    let ((path_a, branch_a), (path_b, branch_b)) = (worktree_of(&a), worktree_of(&b));
    assert_eq!((branch_a.as_str(), branch_b.as_str()), ("ocx/a", "ocx/b"));
    assert_eq!(a["worktree"]["repo"], repo.to_str().unwrap());
    assert_eq!(a["worktree"]["base"], git(&repo, &["rev-parse", "HEAD"]));
    assert!(path_a.starts_with(env.ocx_home.join("worktrees")) && path_a != path_b);
    assert_eq!(a["dir"], path_a.to_str().unwrap(), "the server serves its worktree");
    let table = env.run(&["ls"]).success().stdout.clone();
    assert!(table.contains("[ocx/a]") && table.contains("[ocx/b]"), "{table}");

    for (name, word) in [("a", "from-a"), ("b", "from-b")] {
        let prompt = format!("RUN:echo {word} > shared.txt && echo {word} > fresh.txt");
        let run = env.run(&["run", name, &prompt]);
        run.success();
    }
    for (path, word) in [(&path_a, "from-a"), (&path_b, "from-b")] {
        assert_eq!(std::fs::read_to_string(path.join("shared.txt")).unwrap(), format!("{word}\n"));
        assert_eq!(std::fs::read_to_string(path.join("fresh.txt")).unwrap(), format!("{word}\n"));
    }
    assert_eq!(std::fs::read_to_string(repo.join("shared.txt")).unwrap(), "original\n");
    assert!(!repo.join("fresh.txt").exists());
    assert_eq!(git(&repo, &["status", "--porcelain"]), "", "the main checkout is untouched");

    for (name, word, other) in [("a", "from-a", "from-b"), ("b", "from-b", "from-a")] {
        let names = env.run(&["diff", name, "--name-only"]).success().stdout.clone();
        assert_eq!(names.lines().collect::<Vec<_>>(), ["fresh.txt", "shared.txt"], "{names}");
        let diff = env.run(&["diff", name]).success().stdout.clone();
        assert!(diff.contains(&format!("+{word}")) && diff.contains("-original"), "{diff}");
        assert!(!diff.contains(other), "{diff}");
        assert!(env.run(&["diff", name, "--stat"]).success().stdout.contains("2 files changed"));
    }
    // The diff changed nothing: the untracked file is still untracked.
    assert!(git(&path_a, &["status", "--porcelain"]).contains("?? fresh.txt"));

    // A restart keeps the worktree.
    env.run(&["restart", "a"]).success();
    assert_eq!(env.listed(a["id"].as_str().unwrap())["worktree"], a["worktree"]);
    // Both hold work: stop keeps both, and says so.
    let stop = env.run(&["stop", "a", "b"]);
    stop.success().stderr_has("kept worktree").stderr_has("2 file(s) changed");
    assert!(path_a.is_dir() && path_b.is_dir());
    assert!(branches(&repo).contains(&branch_a));
    consistent(&env, &repo);
}

#[test]
fn stop_keeps_what_holds_work_and_discard_removes_it() {
    let env = TestEnv::new();
    let repo = init_repo(&env);
    let docs = env
        .run(&["start", "--json", "--count", "5", "--name", "w", "--worktree", "--timeout", "180s"])
        .success()
        .json();
    let by_name = |n: &str| docs.as_array().unwrap().iter().find(|d| d["name"] == n).unwrap().clone();
    let [clean, dirty, untracked, committed, discarded] = ["w-1", "w-2", "w-3", "w-4", "w-5"].map(by_name);
    let wt = |r: &Value| worktree_of(r);
    std::fs::write(wt(&dirty).0.join("shared.txt"), "changed\n").unwrap();
    std::fs::write(wt(&untracked).0.join("new.txt"), "new\n").unwrap();
    std::fs::write(wt(&committed).0.join("shared.txt"), "committed\n").unwrap();
    git(&wt(&committed).0, &["commit", "-qam", "work"]);
    std::fs::write(wt(&discarded).0.join("shared.txt"), "lost\n").unwrap();
    git(&wt(&discarded).0, &["commit", "-qam", "lost too"]);
    std::fs::write(wt(&discarded).0.join("more.txt"), "more\n").unwrap();

    let stop = |r: &Value, extra: &[&str]| {
        let mut args = vec!["stop", "--json", r["name"].as_str().unwrap()];
        args.extend_from_slice(extra);
        env.run(&args).success().json()[0]["worktree"].clone()
    };
    let out = stop(&clean, &[]);
    assert_eq!((out["worktree"].as_str(), out["branch_result"].as_str()), (Some("removed"), Some("deleted")), "{out}");
    assert!(!wt(&clean).0.exists() && !branches(&repo).contains(&wt(&clean).1));

    for (r, files) in [(&dirty, 1), (&untracked, 1)] {
        let out = stop(r, &[]);
        assert_eq!((out["worktree"].as_str(), out["branch_result"].as_str()), (Some("kept"), Some("kept")), "{out}");
        assert_eq!(out["changed_files"], files);
        assert!(wt(r).0.is_dir() && branches(&repo).contains(&wt(r).1));
    }
    assert_eq!(std::fs::read_to_string(wt(&dirty).0.join("shared.txt")).unwrap(), "changed\n");

    let out = stop(&committed, &[]);
    assert_eq!((out["worktree"].as_str(), out["branch_result"].as_str()), (Some("removed"), Some("kept")), "{out}");
    assert_eq!(out["commits"], 1);
    assert!(!wt(&committed).0.exists());
    assert_eq!(git(&repo, &["log", "-1", "--format=%s", &wt(&committed).1]), "work", "the commit is kept");

    let out = stop(&discarded, &["--discard"]);
    assert_eq!((out["worktree"].as_str(), out["branch_result"].as_str()), (Some("removed"), Some("deleted")), "{out}");
    assert!(!wt(&discarded).0.exists() && !branches(&repo).contains(&wt(&discarded).1));
    consistent(&env, &repo);

    // gc: the same rule for worktrees whose instance is gone; never one ocx did not make.
    let mine = env.root.path().join("my-own-worktree");
    git(&repo, &["worktree", "add", "-q", "-b", "mine", mine.to_str().unwrap()]);
    let gc = env.run(&["gc", "--json"]).success().json();
    assert_eq!(gc["worktrees"].as_array().unwrap().len(), 2, "{gc}");
    assert!(wt(&dirty).0.is_dir() && wt(&untracked).0.is_dir());
    std::fs::remove_file(wt(&untracked).0.join("new.txt")).unwrap();
    env.run(&["gc"]).success();
    assert!(!wt(&untracked).0.exists() && !branches(&repo).contains(&wt(&untracked).1));
    assert!(wt(&dirty).0.is_dir(), "still dirty: kept");
    assert!(mine.is_dir() && branches(&repo).contains(&"mine".to_string()), "not ocx's: untouched");
    consistent(&env, &repo);
}

#[test]
fn faults_and_crashes_while_creating_or_removing_leave_a_usable_worktree_or_none() {
    let env = TestEnv::new();
    let repo = init_repo(&env);
    let before = branches(&repo);
    // An injected failure at each step of creating: the start fails, nothing stays.
    for point in ["worktree:marked", "worktree:added"] {
        let run = env.ocx().args(["start", "--worktree"]).env("OCX_TEST_FAIL_AT", point).output().unwrap();
        assert_eq!(run.status.code(), Some(1), "{point}: {}", String::from_utf8_lossy(&run.stderr));
        assert_eq!(listed(&repo), std::slice::from_ref(&repo), "{point}");
        assert_eq!(branches(&repo), before, "{point}");
        assert!(on_disk(&env).is_empty() && env.record_files().is_empty(), "{point}");
    }
    // ocx killed at each step of creating: gc leaves none (a fresh worktree holds no work).
    for point in ["worktree:marked", "worktree:added"] {
        let mut child = env.paused_at(&["start", "--worktree"], point);
        child.kill().unwrap();
        child.wait().unwrap();
        consistent(&env, &repo);
        env.run(&["gc"]).success();
        assert_eq!(listed(&repo), std::slice::from_ref(&repo), "{point}");
        assert_eq!(branches(&repo), before, "{point}");
        assert!(on_disk(&env).is_empty(), "{point}");
    }
    // An injected failure, and a crash, at each step of removing: stop keeps the record's
    // worktree or none; a second look (gc) finishes the job, and git agrees with the disk.
    for point in ["worktree:removing", "worktree:deleting-branch", "worktree:unmarking"] {
        let r = env.start(&["--worktree"]);
        let id = r["id"].as_str().unwrap();
        let (path, branch) = worktree_of(&r);
        let run = env.ocx().args(["stop", id]).env("OCX_TEST_FAIL_AT", point).output().unwrap();
        assert_eq!(run.status.code(), Some(0), "{point}");
        consistent(&env, &repo);
        env.run(&["gc"]).success();
        assert!(!path.exists() && !branches(&repo).contains(&branch), "{point}");
        consistent(&env, &repo);
    }
    for point in ["worktree:removing", "worktree:deleting-branch"] {
        let r = env.start(&["--worktree"]);
        let id = r["id"].as_str().unwrap();
        let (path, branch) = worktree_of(&r);
        let mut child = env.paused_at(&["stop", id], point);
        child.kill().unwrap();
        child.wait().unwrap();
        consistent(&env, &repo);
        env.run(&["gc"]).success();
        assert!(!path.exists() && !branches(&repo).contains(&branch), "{point}");
        consistent(&env, &repo);
        assert!(env.record_files().is_empty(), "{point}");
    }
    // A dirty worktree survives a reboot (its server and watcher gone at once), gc after it
    // (which keeps the record for `ocx resurrect`), and the explicit stop that forgets it.
    let r = env.start(&["--worktree"]);
    let (path, branch) = worktree_of(&r);
    std::fs::write(path.join("work.txt"), "precious\n").unwrap();
    let pids = [r["watcher"]["pid"].as_u64().unwrap(), r["pid"].as_u64().unwrap()];
    for pid in pids {
        Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
    }
    wait_for("the instance dead", Duration::from_secs(20), || {
        pids.iter().all(|p| crate::support::is_gone(*p as u32)).then_some(())
    });
    let gc = env.run(&["gc", "--json"]).success().json();
    assert_eq!(gc["resurrectable"], serde_json::json!([r["id"]]), "{gc}");
    assert_eq!(std::fs::read_to_string(path.join("work.txt")).unwrap(), "precious\n");
    env.run(&["stop", r["id"].as_str().unwrap()]).success();
    assert!(env.record_files().is_empty());
    assert_eq!(std::fs::read_to_string(path.join("work.txt")).unwrap(), "precious\n");
    assert!(branches(&repo).contains(&branch));
    consistent(&env, &repo);
    // A dirty worktree survives a crash in the middle of its stop, and gc after it.
    let r = env.start(&["--worktree"]);
    let (path, _) = worktree_of(&r);
    std::fs::write(path.join("work.txt"), "precious\n").unwrap();
    let mut child = env.paused_at(&["stop", r["id"].as_str().unwrap()], "stop:stopping");
    child.kill().unwrap();
    child.wait().unwrap();
    env.run(&["gc"]).success();
    env.run(&["gc"]).success();
    assert_eq!(std::fs::read_to_string(path.join("work.txt")).unwrap(), "precious\n");
    consistent(&env, &repo);
}

#[test]
fn bad_worktree_input_is_a_clear_error_and_creates_nothing() {
    let env = TestEnv::new();
    let nothing_created = |what: &str| {
        assert!(env.record_files().is_empty(), "{what}: a record");
        assert!(on_disk(&env).is_empty(), "{what}: a worktree");
    };
    // Not a repository, and a repository without commits.
    env.run(&["start", "--worktree"]).code(1).stderr_has("is not in a git repository").stderr_has("hint:");
    nothing_created("not a repo");
    git(&env.project, &["init", "-q"]);
    env.run(&["start", "--worktree"]).code(1).stderr_has("has no commits yet");
    nothing_created("no commits");
    assert_eq!(branches(&env.project), Vec::<String>::new());

    std::fs::write(env.project.join("shared.txt"), "original\n").unwrap();
    git(&env.project, &["add", "-A"]);
    git(&env.project, &["commit", "-qm", "init"]);
    let repo = env.project.clone();
    let before = branches(&repo);
    for (args, code, says) in [
        (vec!["--worktree", "main"], 1, "is checked out at"),
        (vec!["--worktree", "--base", "no-such-ref"], 1, "names no commit"),
        (vec!["--worktree", "bad..name"], 2, "not a valid branch name"),
        (vec!["--base", "HEAD"], 2, "--worktree"),
        (vec!["--setup", "true"], 2, "--worktree"),
        (vec!["--worktree", "--setup", "echo setting up; echo it broke >&2; exit 3"], 1, "it broke"),
    ] {
        let mut all = vec!["start"];
        all.extend_from_slice(&args);
        env.run(&all).code(code).stderr_has(says);
        nothing_created(&format!("{args:?}"));
        assert_eq!(listed(&repo), std::slice::from_ref(&repo), "{args:?}");
        assert_eq!(branches(&repo), before, "{args:?}");
    }
    // `ocx diff` of an instance without a worktree: a usage error.
    let plain = env.start(&["--name", "plain"]);
    env.run(&["diff", "plain"]).code(2).stderr_has("has no worktree");
    env.run(&["diff", "nosuch"]).code(3);
    env.run(&["stop", plain["id"].as_str().unwrap()]).success();
}

#[test]
fn an_isolated_instance_keeps_its_sessions_to_itself() {
    let env = TestEnv::new();
    let a = env.start(&["--name", "a", "--isolate"]);
    let b = env.start(&["--name", "b"]);
    let id_a = a["id"].as_str().unwrap().to_string();
    let db = PathBuf::from(a["db"].as_str().unwrap());
    assert_eq!(db, env.ocx_home.join(format!("data/{id_a}/opencode.db")));
    assert!(b["db"].is_null());
    // A prompt works: the provider settings of ~/.config/opencode still apply.
    let run = env.run(&["run", "a", "hello isolated"]);
    assert!(run.success().stdout.contains("echo: hello isolated"), "{}", run.stdout);
    let session_a = session_of(&run);
    assert!(db.is_file(), "the database is where the record says");
    let session_b = session_of(env.run(&["run", "b", "hello shared"]).success());
    let ids = |name: &str| -> Vec<String> {
        let listed = env.run(&["sessions", name, "--json"]).success().json();
        listed.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(ids("a"), std::slice::from_ref(&session_a));
    assert!(!ids("b").contains(&session_a), "b lists a's session");
    assert!(ids("b").contains(&session_b));
    // `wait` finds a's session.
    let detached = env.run(&["run", "--detach", "a", "again"]).success().stdout.trim().to_string();
    let waited = env.run(&["wait", &detached]);
    assert!(waited.success().stdout.contains("echo: again"), "{}", waited.stdout);

    // The database outlives restart and stop; gc --logs deletes it once the instance is gone.
    env.run(&["restart", "a"]).success();
    assert_eq!(ids("a").len(), 2);
    env.run(&["stop", "a"]).success();
    assert!(db.is_file());
    env.run(&["gc"]).success();
    assert!(db.is_file(), "gc without --logs keeps it");
    let gc = env.run(&["gc", "--logs", "--json"]).success().json();
    assert_eq!(gc["databases_deleted"].as_array().unwrap().len(), 1, "{gc}");
    assert!(!db.exists());
    wait_for("b still answers", Duration::from_secs(30), || env.run(&["sessions", "b"]).code.filter(|c| *c == 0));
}

#[test]
fn a_worktree_agent_reaching_into_the_main_checkout_is_asked_and_answered_per_policy() {
    let env = TestEnv::new();
    let repo = init_repo(&env);
    env.start(&["--name", "a", "--worktree"]);
    // The main checkout is outside the directory the server serves: opencode asks for
    // `external_directory`, and `ocx run` answers it as it answers every request.
    let outside = repo.join("outside.txt");
    let prompt = format!("RUN:touch {}", outside.display());
    let run = env.run(&["run", "a", &prompt]);
    run.success().stderr_has("permission external_directory").stderr_has("rejected");
    assert!(!outside.exists(), "a rejected command ran");
    let run = env.run(&["run", "a", &prompt, "--permission", "allow"]);
    run.success().stderr_has("allowed once");
    assert!(outside.exists());
    // Inside its worktree (git's own files included: `git status` reads the main repository's
    // `.git`), nothing is asked.
    let run = env.run(&["run", "a", "RUN:git status --short && echo inside > in.txt"]);
    assert!(!run.success().stderr.contains("permission"), "{}", run.stderr);
}

#[test]
fn setup_runs_in_the_new_worktree_into_the_log_and_ctrl_c_removes_it() {
    let env = TestEnv::new();
    let repo = init_repo(&env);
    let r = env.start(&["--name", "s", "--worktree", "--setup", "echo hello-from-setup; pwd > .setup-ran"]);
    let (path, _) = worktree_of(&r);
    assert_eq!(std::fs::read_to_string(path.join(".setup-ran")).unwrap().trim(), path.to_str().unwrap());
    let logs = env.run(&["logs", "s", "-n", "500"]).success().stdout.clone();
    assert!(logs.contains("hello-from-setup"), "{logs}");
    env.run(&["stop", "s", "--discard"]).success();

    // Ctrl-C while the setup runs: exit 130, the setup's processes ended, nothing left.
    let before = branches(&repo);
    let child = env
        .ocx()
        .args(["start", "--worktree", "--setup", "sleep 600"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the setup running", Duration::from_secs(30), || {
        (!crate::support::marked_processes(&env.ocx_home).is_empty()).then_some(())
    });
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let run = crate::support::finish(child, "start interrupted during setup");
    run.code(130).stderr_has("interrupted during --setup");
    assert!(crate::support::marked_processes(&env.ocx_home).is_empty(), "the setup's sleep is left");
    assert_eq!(listed(&repo), std::slice::from_ref(&repo));
    assert_eq!(branches(&repo), before);
    assert!(on_disk(&env).is_empty() && env.record_files().is_empty());
}
