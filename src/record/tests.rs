//! Unit tests of the record: parsing, the fixtures every later ocx must still read, the
//! store on disk, and resolving.

use std::collections::BTreeMap;

use super::*;
use crate::error::{Failure, code};
use crate::home::Home;
use crate::process::ProcId;

/// The schema-1 record kept in `tests/fixtures`: every later ocx must still read it.
const FIXTURE: &str = include_str!("../../tests/fixtures/record-v1.json");
/// A schema-1 record as the ocx of supervision writes it (a real one, its password replaced),
/// every field there: a watcher, a server it restarted after a SIGKILL, waiting to start it again.
const FIXTURE_FULL: &str = include_str!("../../tests/fixtures/record-v1-full.json");

/// The schema-1 fixture's record under another id and name, for other modules' tests too.
pub(crate) fn sample(id: &str, name: Option<&str>) -> Record {
    let mut r = parse(FIXTURE.as_bytes(), "k3f9a2").unwrap();
    r.id = id.to_string();
    r.name = name.map(str::to_string);
    r
}

#[test]
fn fixture_of_schema_1_loads() {
    let r = parse(FIXTURE.as_bytes(), "k3f9a2").unwrap();
    assert_eq!(r.schema, 1);
    assert_eq!(r.port, 40063);
    assert_eq!(r.state, State::Running);
    assert_eq!(r.opencode.version.as_deref(), Some("1.18.33"));
}

#[test]
fn fixture_of_a_full_schema_1_record_loads_with_every_field() {
    let r = parse(FIXTURE_FULL.as_bytes(), "jgr3fp").unwrap();
    let expected = Record {
        schema: 1,
        id: "jgr3fp".into(),
        name: Some("api".into()),
        pid: 26085,
        pid_started_at: 1796116316,
        pid_start_key: Some(59906),
        hostname: "127.0.0.1".into(),
        port: 28673,
        url: "http://127.0.0.1:28673".into(),
        username: "opencode".into(),
        password: Some("0123456789abcdefghijklmnopqrstuv".into()),
        dir: "/tmp/ocx-fixture/proj".into(),
        opencode: Binary {
            path: "/root/.cache/ocx-test/opencode-ai-1.18.33/node_modules/.bin/opencode".into(),
            version: Some("1.18.33".into()),
        },
        args: ["--print-logs", "--log-level", "INFO", "serve", "--hostname", "127.0.0.1", "--port", "28673"]
            .map(String::from)
            .to_vec(),
        env: BTreeMap::new(),
        log: "/tmp/ocx-fixture/ocx-home/logs/jgr3fp.log".into(),
        started_at: "2026-12-01T09:11:40Z".into(),
        state: State::Starting,
        watcher: Some(ProcId { pid: 24710, started_at: 1796116299, start_key: Some(58239) }),
        restart_policy: RestartPolicy::OnFailure,
        supervision: Supervision {
            log_max_size: 10_485_760,
            log_max_files: 3,
            health_interval_s: 10,
            health_failures: 3,
            max_memory: Some(2_147_483_648),
            ..Supervision::default()
        },
        restarts: 3,
        last_exit: Some(Exit {
            code: None,
            signal: Some("SIGKILL".into()),
            at: "2026-12-01T09:11:58.499Z".into(),
            uptime_s: 1,
            reason: "crashed".into(),
        }),
        next_restart_at: Some("2026-12-01T09:12:02.499Z".into()),
        failed: None,
        remote: None,
        project: None,
        worktree: None,
        db: None,
    };
    assert_eq!(r, expected);
}

#[test]
fn round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::open(Some(dir.path())).unwrap();
    let r = sample("abc123", Some("api"));
    save(&home, &r).unwrap();
    assert_eq!(load(&home, "abc123").unwrap(), Some(r.clone()));
    let entries = list(&home).unwrap();
    assert!(matches!(entries.as_slice(), [Entry::Valid(x)] if *x == r));
    delete(&home, "abc123").unwrap();
    assert_eq!(load(&home, "abc123").unwrap(), None);
}

#[test]
fn public_json_hides_secrets() {
    let mut r = sample("abc123", None);
    r.env.insert("API_KEY".into(), "sk-secret".into());
    let shown = r.public_json(false).to_string();
    assert!(!shown.contains(r.password.as_deref().unwrap()) && !shown.contains("sk-secret"), "{shown}");
    assert!(shown.contains("API_KEY"));
    let all = r.public_json(true).to_string();
    assert!(all.contains(r.password.as_deref().unwrap()) && all.contains("sk-secret"));
}

#[test]
fn corrupt_files_are_reported_and_others_still_listed() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::open(Some(dir.path())).unwrap();
    save(&home, &sample("good01", None)).unwrap();
    let mut wrong_port = serde_json::to_value(sample("port99", None)).unwrap();
    wrong_port["port"] = 70000.into();
    let mut future = serde_json::to_value(sample("newer1", None)).unwrap();
    future["schema"] = 2.into();
    let bad: [(&str, Vec<u8>); 6] = [
        ("empty1", vec![]),
        ("trunc1", FIXTURE.as_bytes()[..40].to_vec()),
        ("shape1", br#"{"schema":1,"id":"shape1"}"#.to_vec()),
        ("array1", b"[1,2,3]".to_vec()),
        ("port99", wrong_port.to_string().into_bytes()),
        ("newer1", future.to_string().into_bytes()),
    ];
    for (id, bytes) in &bad {
        std::fs::write(home.record_path(id), bytes).unwrap();
    }
    let entries = list(&home).unwrap();
    assert_eq!(valid(&entries).len(), 1);
    let invalid = invalid(&entries);
    assert_eq!(invalid.len(), bad.len());
    let newer = invalid.iter().find(|i| i.id == "newer1").unwrap();
    assert_eq!(newer.kind, InvalidKind::Newer);
    assert!(newer.reason.contains("newer ocx (schema 2"), "{}", newer.reason);
    assert!(invalid.iter().filter(|i| i.id != "newer1").all(|i| i.kind == InvalidKind::Corrupt));
    // Nothing was deleted or rewritten.
    for (id, bytes) in &bad {
        assert_eq!(&std::fs::read(home.record_path(id)).unwrap(), bytes);
    }
}

#[test]
fn concurrent_writers_never_leave_a_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::open(Some(dir.path())).unwrap();
    save(&home, &sample("race01", None)).unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let home = &home;
            s.spawn(move || {
                for i in 0..200 {
                    let mut r = sample("race01", Some(&format!("writer-{t}-{i}")));
                    r.args = vec!["x".repeat(i * 7); t + 1];
                    // As every writer of an existing record does (see `save`).
                    let _lock = home.lock_instance("race01", std::time::Duration::from_secs(10)).unwrap();
                    save(home, &r).unwrap();
                }
            });
        }
        for _ in 0..4 {
            let home = &home;
            s.spawn(move || {
                for _ in 0..400 {
                    let r = load(home, "race01").expect("a reader sees a whole record").unwrap();
                    assert_eq!(r.id, "race01");
                    // Wine's rename cannot replace a file that is open at all (NTFS can), and
                    // `write_atomic` waits for that only so long: readers that never pause
                    // would starve the writer there. ocx's readers read a record once per
                    // command.
                    if cfg!(windows) {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                }
            });
        }
    });
    let names: Vec<String> = std::fs::read_dir(home.instances_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["race01.json".to_string()]);
}

/// A bounded fuzz of the parser: random bytes, and the fixture with bytes flipped, cut,
/// duplicated or spliced with JSON tokens. Parsing may fail; it must never panic.
#[test]
fn parser_never_panics_on_arbitrary_input() {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let tokens: [&[u8]; 12] =
        [b"{", b"}", b"[", b"]", b"\"", b":", b",", b"null", b"-1", b"1e999", b"\"\\u0000\"", b"18446744073709551616"];
    let fixture = FIXTURE.as_bytes();
    for round in 0..20_000 {
        let input: Vec<u8> = if round % 4 == 0 {
            (0..next() % 256).map(|_| next() as u8).collect()
        } else {
            let mut bytes = fixture.to_vec();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % (bytes.len() + 1);
                match next() % 4 {
                    0 if at < bytes.len() => bytes[at] = next() as u8,
                    1 => bytes.truncate(at),
                    2 => bytes.splice(at..at, tokens[(next() % 12) as usize].iter().copied()).for_each(drop),
                    _ => {
                        let end = (at + (next() as usize) % 32).min(bytes.len());
                        let copy = bytes[at..end].to_vec();
                        bytes.splice(at..at, copy).for_each(drop);
                    }
                }
            }
            bytes
        };
        let _ = parse(&input, "k3f9a2");
    }
}

#[test]
fn ids_are_six_characters_and_avoid_taken_ones() {
    for _ in 0..1000 {
        let id = new_id(&["aaaaaa"]);
        assert!(is_valid_id(&id), "{id}");
    }
}

#[test]
fn names_are_checked() {
    for good in ["api", "my-app.2", "A_b"] {
        check_name(good).unwrap();
    }
    for bad in ["", "-x", "a b", "x/y", &"n".repeat(65)] {
        let err = check_name(bad).unwrap_err();
        assert_eq!(err.downcast_ref::<Failure>().unwrap().code, code::USAGE);
    }
}

#[test]
fn resolve_by_id_name_and_prefix() {
    let records = vec![sample("k3f9a2", Some("api")), sample("k3aa11", None), sample("zz0000", Some("k3"))];
    assert_eq!(resolve(&records, "k3f9a2").unwrap().id, "k3f9a2");
    assert_eq!(resolve(&records, "api").unwrap().id, "k3f9a2");
    assert_eq!(resolve(&records, "k3f").unwrap().id, "k3f9a2");
    // An exact name wins over an ambiguous prefix.
    assert_eq!(resolve(&records, "k3").unwrap().id, "zz0000");
}

#[test]
fn resolve_errors_name_the_candidates() {
    let records = vec![sample("k3f9a2", Some("api")), sample("k3aa11", None)];
    let err = resolve(&records, "k3").unwrap_err();
    let f = err.downcast_ref::<Failure>().unwrap();
    assert_eq!(f.code, code::NOT_FOUND);
    assert!(f.message.contains("k3f9a2 (api)") && f.message.contains("k3aa11"), "{}", f.message);

    let err = resolve(&records, "nope").unwrap_err();
    let f = err.downcast_ref::<Failure>().unwrap();
    assert_eq!(f.code, code::NOT_FOUND);
    assert!(f.hint.as_deref().unwrap().contains("k3f9a2 (api), k3aa11"));

    let err = resolve(&[], "x").unwrap_err();
    assert!(err.downcast_ref::<Failure>().unwrap().hint.as_deref().unwrap().contains("ocx start"));
}

/// A record of `ocx start --worktree --isolate` (issue 20) loads, with both; one without them
/// (every record before) loads with neither.
#[test]
fn fixture_of_a_worktree_and_isolated_record_loads() {
    let r = parse(include_str!("../../tests/fixtures/record-v1-worktree.json").as_bytes(), "jgr3fp").unwrap();
    let wt = r.worktree.expect("a worktree");
    assert_eq!((wt.branch.as_str(), wt.created_branch), ("ocx/api", true));
    assert_eq!(wt.repo, std::path::Path::new("/home/u/src/proj"));
    assert_eq!(r.dir, wt.path);
    assert_eq!(r.db.as_deref(), Some(std::path::Path::new("/home/u/.local/state/ocx/data/jgr3fp/opencode.db")));
    let old = parse(FIXTURE_FULL.as_bytes(), "jgr3fp").unwrap();
    assert!(old.worktree.is_none() && old.db.is_none());
    let json = serde_json::to_value(&old).unwrap();
    assert!(json.get("worktree").is_none() && json.get("db").is_none(), "absent, not null: {json}");
}
