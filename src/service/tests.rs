use std::path::Path;

use super::*;

#[test]
fn the_launch_agent_is_a_plist_launchd_reads() {
    let exe = Path::new("/Users/me/bin/o c&x");
    let home = Path::new("/Users/me/Library/Application Support/ocx");
    let text = launch_agent(exe, home, "dev.ocx.resurrect");
    let plist: plist::Value = plist::from_bytes(text.as_bytes()).expect("a valid plist");
    let dict = plist.as_dictionary().unwrap();
    assert_eq!(dict["Label"].as_string(), Some("dev.ocx.resurrect"));
    let args: Vec<&str> = dict["ProgramArguments"].as_array().unwrap().iter().map(|v| v.as_string().unwrap()).collect();
    assert_eq!(args, ["/Users/me/bin/o c&x", "--home", "/Users/me/Library/Application Support/ocx", "resurrect"]);
    assert_eq!(dict["RunAtLoad"].as_boolean(), Some(true));
    assert_eq!(dict["AbandonProcessGroup"].as_boolean(), Some(true));
}

#[test]
fn the_windows_task_runs_this_ocx_for_this_home_at_logon() {
    let exe = Path::new(r"C:\Program Files\ocx\ocx.exe");
    let home = Path::new(r"C:\Users\Me Too\AppData\Local\ocx");
    let line = task_command_line(exe, home);
    assert_eq!(line, r#""C:\Program Files\ocx\ocx.exe" --home "C:\Users\Me Too\AppData\Local\ocx" resurrect"#);
    assert!(line.len() <= 261, "schtasks /TR takes at most 261 characters");
    let args = schtasks_create("ocx resurrect", &line);
    assert_eq!(args, ["/Create", "/F", "/SC", "ONLOGON", "/RL", "LIMITED", "/TN", "ocx resurrect", "/TR", &line]);
}

#[test]
fn the_systemd_unit_quotes_what_systemd_would_split_or_expand() {
    let unit = systemd_unit(Path::new("/opt/my tools/ocx"), Path::new("/home/u/100%/$state"));
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).unwrap();
    assert_eq!(exec, r#""/opt/my tools/ocx" --home "/home/u/100%%/$$state" resurrect"#);
    assert!(
        unit.contains("Type=oneshot") && unit.contains("KillMode=process") && unit.contains("WantedBy=default.target")
    );
    assert_eq!(systemd_quote("/usr/bin/ocx"), "/usr/bin/ocx");
    assert_eq!(systemd_quote(r#"a"b\c"#), r#""a\"b\\c""#);
}

#[test]
fn the_crontab_line_is_one_shell_line_at_reboot() {
    let line = crontab_line(Path::new("/usr/local/bin/ocx"), Path::new("/home/u/my state%"));
    assert_eq!(line, r"@reboot /usr/local/bin/ocx --home '/home/u/my state\%' resurrect");
}

#[test]
fn each_home_has_a_unit_of_its_own() {
    let (a, b) = (suffix(Path::new("/tmp/a")), suffix(Path::new("/tmp/b")));
    assert!(a.starts_with('-') && a.len() == 9 && a != b, "{a} {b}");
    assert_eq!(a, suffix(Path::new("/tmp/a")));
}
