use std::path::Path;

use super::*;

fn parse_at(text: &str) -> Result<Vec<Table>> {
    parse(Path::new("/p/ocx.toml"), text)
}

fn error_of(text: &str) -> String {
    match parse_at(text) {
        Ok(_) => panic!("{text:?} was taken"),
        Err(e) => {
            assert_eq!(crate::error::code_of(&e), code::USAGE, "{e:#}");
            e.to_string()
        }
    }
}

#[test]
fn a_fleet_file_is_one_start_command_line_per_table() {
    let tables = parse_at(
        r#"
[defaults]
restart = "always"
env = { A = "1", B = "2" }

[instances.api]
dir = "sub"
env = { B = "3" }
no-auth = true
args = ["--cors", "https://x.io"]

[instances.worker]
count = 2
max-memory = "2G"
restart = "no"
"#,
    )
    .unwrap();
    let api = &tables[0].args;
    assert_eq!(tables[0].name, "api");
    assert_eq!(api.dir.as_deref(), Some(Path::new("/p/sub")));
    assert!(api.no_auth);
    assert_eq!(api.restart, crate::cli::RestartPolicy::Always);
    let env: std::collections::BTreeMap<_, _> = api.env.iter().cloned().collect();
    assert_eq!((env["A"].as_str(), env["B"].as_str()), ("1", "3"), "an instance's env adds to the defaults'");
    assert_eq!(api.extra, ["--cors", "https://x.io"]);
    let worker = &tables[1];
    assert_eq!(worker.names(), ["worker-1", "worker-2"]);
    assert_eq!(worker.args.max_memory, Some(2 << 30));
    assert_eq!(worker.args.restart, crate::cli::RestartPolicy::No, "an instance's key wins over the default");
    assert_eq!(worker.args.dir.as_deref(), Some(Path::new("/p")), "dir: the file's directory by default");
}

#[test]
fn bad_keys_and_values_name_the_file_line_and_key() {
    let e = error_of("[instances.api]\ndir = \".\"\nmax-memroy = \"2G\"\n");
    assert!(e.starts_with("/p/ocx.toml:3: max-memroy: unknown key"), "{e}");
    let e = error_of("[instances.api]\n\nmax-memory = \"2X\"\n");
    assert!(e.starts_with("/p/ocx.toml:3: max-memory: "), "{e}");
    let e = error_of("[defaults]\nrestart = \"sometimes\"\n[instances.api]\n");
    assert!(e.starts_with("/p/ocx.toml:2: restart: "), "{e}");
    let e = error_of("[instances.api]\nno-auth = \"yes\"\n");
    assert!(e.starts_with("/p/ocx.toml:2: no-auth: "), "{e}");
    let e = error_of("[instances.api]\ncount = 0\n");
    assert!(e.starts_with("/p/ocx.toml:2: count: "), "{e}");
    let e = error_of("[instances.api]\nname = \"x\"\n");
    assert!(e.starts_with("/p/ocx.toml:2: name: unknown key"), "{e}");
    let e = error_of("[instances.api]\nenv = { K = [1] }\n");
    assert!(e.starts_with("/p/ocx.toml:2: env.K: "), "{e}");
    let e = error_of("[instances.\"bad name\"]\n");
    assert!(e.starts_with("/p/ocx.toml:1: instances.bad name: invalid name"), "{e}");
    let e = error_of("[instance.api]\n");
    assert!(e.starts_with("/p/ocx.toml:1: instance: unknown key"), "{e}");
    let e = error_of("[instances.api\n");
    assert!(e.starts_with("/p/ocx.toml:1: not valid TOML"), "{e}");
    let e = error_of("[defaults]\n");
    assert!(e.contains("declares no instances"), "{e}");
}
