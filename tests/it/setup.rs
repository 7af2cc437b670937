//! From a fresh machine to a first answer: opencode installed on demand (`ocx start
//! --install-opencode`, `ocx install-opencode`) and `ocx doctor`.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::support::{Run, TestEnv, finish};

/// Where ocx installs opencode in this test's world (`XDG_CACHE_HOME` is the test's).
fn install_root(env: &TestEnv) -> PathBuf {
    env.user_home.join(".cache/ocx/opencode")
}

/// What is in a directory (nothing when it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(d) => d.map(|e| e.unwrap().file_name().into_string().unwrap()).collect(),
        Err(_) => Vec::new(),
    }
}

/// A PATH with only what npm needs (node, npm, sh): no opencode anywhere.
fn npm_only_path(env: &TestEnv) -> PathBuf {
    let bin = env.root.path().join("npm-bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["node", "npm", "sh"] {
        let found = which(tool).unwrap_or_else(|| panic!("{tool} is not on PATH (scripts/test installs it)"));
        let _ = std::os::unix::fs::symlink(found, bin.join(tool));
    }
    bin
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(tool)).find(|p| p.is_file())
}

/// `ocx ARGS` with no opencode anywhere (no OCX_OPENCODE, `path` as PATH, nothing in
/// ~/.opencode/bin), npm pointed at the npm cache `scripts/test` filled when it installed the
/// pinned opencode (the real user's `~/.npm`), preferring it to the registry.
fn bare(env: &TestEnv, path: &Path, args: &[&str], npm: &[(&str, &str)]) -> Run {
    let real_cache = PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".npm");
    let mut cmd = env.ocx();
    cmd.args(args)
        .env_remove("OCX_OPENCODE")
        .env("PATH", path)
        .env("npm_config_cache", &real_cache)
        .env("npm_config_prefer_offline", "true")
        .env("npm_config_update_notifier", "false")
        .env("npm_config_logs_dir", env.root.path().join("npm-logs"));
    // What reaching the registry takes on this machine (a CA of its own, a proxy) goes through.
    for var in ["NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "https_proxy", "HTTPS_PROXY", "http_proxy", "no_proxy"] {
        if let Some(value) = std::env::var_os(var) {
            cmd.env(var, value);
        }
    }
    for (k, v) in npm {
        cmd.env(k, v);
    }
    finish(cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(), "ocx")
}

#[test]
fn start_installs_opencode_on_demand_once_and_answers_a_prompt() {
    let env = TestEnv::new();
    let path = npm_only_path(&env);
    assert!(!path.join("opencode").exists() && !env.user_home.join(".opencode").exists());

    let first = bare(&env, &path, &["start", "--install-opencode", "--json", "--name", "a"], &[]);
    first.success().stderr_has("installed opencode 1.18.33 at");
    let binary = install_root(&env).join("1.18.33/node_modules/.bin/opencode");
    assert!(binary.is_file(), "{} is not there", binary.display());
    assert!(first.stderr.contains(&binary.display().to_string()), "{}", first.stderr);
    let record = &first.json()[0];
    assert_eq!(record["opencode"]["path"], binary.display().to_string(), "{record}");
    assert_eq!(record["opencode"]["version"], "1.18.33", "{record}");
    // Only the install, no temp directory left beside it.
    assert_eq!(entries(&install_root(&env)), vec!["1.18.33".to_string()]);

    let answer = bare(&env, &path, &["run", "a", "hello from a fresh machine"], &[]);
    answer.success();
    assert!(answer.stdout.contains("echo: hello from a fresh machine"), "{}", answer.stdout);

    // The second start finds ocx's own install: nothing is installed again.
    let second = bare(&env, &path, &["start", "--install-opencode", "--json", "--name", "b"], &[]);
    second.success();
    assert!(!second.stderr.contains("install"), "{}", second.stderr);
    assert_eq!(second.json()[0]["opencode"]["path"], binary.display().to_string());
    // Without the flag too, and `install-opencode` says it is there.
    let third = bare(&env, &path, &["start", "--json", "--name", "c"], &[]);
    third.success();
    let again = bare(&env, &path, &["install-opencode", "--json"], &[]);
    let doc = again.success().json();
    assert_eq!((doc["installed"].as_bool(), doc["version"].as_str()), (Some(false), Some("1.18.33")), "{doc}");
    // An opencode 2 on PATH: ocx's own install is used instead, and says so.
    std::fs::write(path.join("opencode"), "#!/bin/sh\necho 2.0.0\n").unwrap();
    std::fs::set_permissions(path.join("opencode"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let fourth = bare(&env, &path, &["start", "--json", "--name", "d"], &[]);
    fourth.success().stderr_has("using ocx's own opencode 1.18.33");
    assert_eq!(fourth.json()[0]["opencode"]["path"], binary.display().to_string());
    env.run(&["stop", "--all"]).success();
}

#[test]
fn no_npm_no_registry_or_no_terminal_installs_nothing() {
    let env = TestEnv::new();
    let nothing = env.root.path().join("empty-bin");
    std::fs::create_dir_all(&nothing).unwrap();

    // npm missing from PATH.
    let run = bare(&env, &nothing, &["start", "--install-opencode"], &[]);
    run.code(1).stderr_has("npm is not on PATH").stderr_has("install Node.js");
    assert!(entries(&install_root(&env).join("1.18.33")).is_empty());
    assert!(env.record_files().is_empty());
    assert_eq!(env.marked(), vec![]);

    // The registry cannot be reached (and nothing is in npm's cache): npm's own reason, exit 1.
    let path = npm_only_path(&env);
    let empty_cache = env.root.path().join("empty-npm-cache");
    let offline = [
        ("npm_config_registry", "http://127.0.0.1:9/"),
        ("npm_config_cache", empty_cache.to_str().unwrap()),
        ("npm_config_prefer_offline", "false"),
        ("npm_config_fetch_retries", "0"),
    ];
    let run = bare(&env, &path, &["install-opencode"], &offline);
    run.code(1).stderr_has("npm could not install opencode-ai@1.18.33").stderr_has("ECONNREFUSED");
    assert_eq!(entries(&install_root(&env)), Vec::<String>::new(), "a partial install was left");
    let run = bare(&env, &path, &["start", "--install-opencode", "--name", "x"], &offline);
    run.code(1).stderr_has("npm could not install");
    assert_eq!(entries(&install_root(&env)), Vec::<String>::new(), "a partial install was left");
    assert!(env.record_files().is_empty());
    assert_eq!(env.marked(), vec![]);

    // No terminal to ask at, no flag: refused with the way to do it, nothing installed.
    let run = bare(&env, &path, &["start"], &[]);
    run.code(1).stderr_has("cannot find opencode").stderr_has("--install-opencode");
    assert_eq!(entries(&install_root(&env)), Vec::<String>::new());
}

/// The line of `doctor`'s output for `check`, and its hint (the next line, if it is one).
fn line_of(out: &str, check: &str) -> (String, String) {
    let lines: Vec<&str> = out.lines().collect();
    let i = lines
        .iter()
        .position(|l| l.chars().skip(2).collect::<String>().starts_with(&format!("{check} ")))
        .unwrap_or_else(|| panic!("no {check} line in:\n{out}"));
    let hint = lines.get(i + 1).filter(|l| l.trim_start().starts_with('→')).map_or("", |l| l.trim()).to_string();
    (lines[i].to_string(), hint)
}

#[test]
fn doctor_passes_a_good_setup_and_says_which_way_it_found_the_model() {
    let env = TestEnv::new();
    let run = env.run(&["doctor"]);
    run.success();
    let (opencode, _) = line_of(&run.stdout, "opencode");
    assert!(opencode.starts_with("✓") && opencode.contains("opencode 1.18.33 at"), "{}", run.stdout);
    let (model, _) = line_of(&run.stdout, "model");
    let config = env.project.join("opencode.json");
    assert!(model.starts_with("✓") && model.contains(&format!("fake/fake for {}", env.project.display())), "{model}");
    assert!(model.contains(&format!("from {}", config.display())), "{model}");
    assert!(line_of(&run.stdout, "home").0.starts_with("✓"), "{}", run.stdout);
    // It changed nothing: no home was created.
    assert!(!env.ocx_home.exists(), "doctor created the home");

    // With an instance serving the directory, the server itself is asked.
    env.start(&["--name", "api"]);
    let run = env.run(&["doctor", "--json"]);
    let doc = run.success().json();
    assert_eq!(doc["ok"], true, "{doc}");
    let model = doc["checks"].as_array().unwrap().iter().find(|c| c["check"] == "model").unwrap();
    assert!(
        model["detail"].as_str().unwrap().contains("fake/fake")
            && model["detail"].as_str().unwrap().contains("asked instance api"),
        "{model}"
    );
    env.run(&["stop", "api"]).success();
}

#[test]
fn doctor_names_each_problem_with_its_fix_and_changes_nothing() {
    let env = TestEnv::new();
    env.run(&["ls"]).success();
    // opencode 2 on OCX_OPENCODE (the stand-in says so), a group-writable home, a corrupt record.
    env.control("version", "2.0.0");
    let home = env.ocx_home.clone();
    let mode =
        |p: &Path| std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions()) & 0o7777;
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o770)).unwrap();
    let corrupt = home.join("instances/abc123.json");
    std::fs::write(&corrupt, "{ not a record").unwrap();
    std::fs::set_permissions(&corrupt, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let before = entries(&home);

    let doctor = |json: bool| {
        let mut cmd = env.ocx();
        cmd.arg("doctor")
            .env("OCX_OPENCODE", env.stand_in())
            .env("STAND_IN_DIR", env.control_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if json {
            cmd.arg("--json");
        }
        finish(cmd.spawn().unwrap(), "ocx doctor")
    };
    let run = doctor(false);
    run.code(1);
    let (opencode, hint) = line_of(&run.stdout, "opencode");
    assert!(
        opencode.starts_with("✗") && opencode.contains("opencode 2.0.0") && opencode.contains("not supported"),
        "{}",
        run.stdout
    );
    assert!(hint.contains("ocx install-opencode"), "{hint}");
    let (home_line, hint) = line_of(&run.stdout, "home");
    assert!(home_line.starts_with("✗") && home_line.contains("mode 0770"), "{}", run.stdout);
    assert!(hint.contains(&format!("chmod 700 {}", home.display())), "{hint}");
    let (records, hint) = line_of(&run.stdout, "records");
    assert!(records.starts_with("✗") && records.contains("abc123 (corrupt)"), "{}", run.stdout);
    assert!(hint.contains("ocx gc"), "{hint}");
    // The model is still found: the checks are independent.
    assert!(line_of(&run.stdout, "model").0.starts_with("✓"), "{}", run.stdout);

    let doc = doctor(true);
    doc.code(1);
    let doc = doc.json();
    assert_eq!(doc["ok"], false);
    let failed: Vec<&str> = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false && c["basic"] == true)
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    assert_eq!(failed, vec!["opencode", "home", "records"], "{doc}");

    // Nothing changed: the mode, the corrupt record where it was, no version remembered.
    assert_eq!(mode(&home), 0o770);
    assert_eq!(std::fs::read_to_string(&corrupt).unwrap(), "{ not a record");
    assert_eq!(entries(&home), before);
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
}

/// `doctor` needs no opencode to run, and says how to get one.
#[test]
fn doctor_without_opencode_says_how_to_install_it() {
    let env = TestEnv::new();
    let nothing = env.root.path().join("empty-bin");
    std::fs::create_dir_all(&nothing).unwrap();
    let run = bare(&env, &nothing, &["doctor"], &[]);
    run.code(1);
    let (line, hint) = line_of(&run.stdout, "opencode");
    assert!(line.starts_with("✗") && line.contains("not found"), "{}", run.stdout);
    assert!(hint.contains("ocx install-opencode"), "{hint}");
}
