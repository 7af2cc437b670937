//! `ocx-stand-in`: a tiny stand-in for `opencode serve`, for the tests and benchmarks that the
//! issues allow one in (a server that crashes on cue, a chatty logger, memory that grows,
//! cheap servers for scale, a Windows server under Wine). Built only with the `testing`
//! feature. The real opencode is what every other test runs against.
//!
//! It takes opencode's arguments (`[--print-logs] [--log-level L] serve --hostname H --port P`),
//! prints opencode's ready line, and answers `GET /global/health` and `GET /session/status`
//! with HTTP basic auth when `OPENCODE_SERVER_PASSWORD` is set. What else it does is read
//! from files in the directory `$STAND_IN_DIR`, each time it looks:
//! - `crash`: exists at start → exit 1 at once (a crash loop);
//! - `silent`: exists at start → listen, but never print the ready line and answer health with
//!   503 (a start that never gets healthy, where no shell script can stand in: Windows);
//! - `noready`: exists at start → never print the ready line, but answer health (a future
//!   opencode that words its ready line differently);
//! - `v2`: exists → `/global/health` is 404 and only `/api/health` answers (newer builds);
//! - `version`: holds V → `--version` prints V (else `stand-in`); `health-version`: holds V →
//!   the health answer's version (else `stand-in`);
//! - `child`: exists at start → start a `sleep 300` that inherits the server's output (a
//!   marked child holding the log pipe, as an agent's command does);
//! - `stranger`: exists at start → start a `sleep 300` in the server's process group without
//!   the instance's marker (printed as `stand-in: stranger PID N`);
//! - `exit`: holds a code → exit with it (looked at every 20 ms);
//! - `busy`: exists → `/session/status` reports one busy session;
//! - `hang`: exists → every request is accepted and never answered (a hung server);
//! - `grow`: holds N → add N MiB of touched memory every 100 ms;
//! - `chatty`: holds N → print N numbered lines (`line 1` …) as fast as it can, once;
//! - `rate`: holds B → print numbered 100-byte lines at B bytes a second, until removed.
//!
//! `STAND_IN_GRANDCHILD=1`: start a copy of itself that inherits the listening socket and
//! sleeps (the "ghost port" a child can hold after its server died).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--hold") {
        // The grandchild: keep the inherited socket open until killed.
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let dir = std::env::var_os("STAND_IN_DIR").map(PathBuf::from);
    let control = |name: &str| dir.as_ref().and_then(|d| std::fs::read_to_string(d.join(name)).ok());
    if args.get(1).map(String::as_str) == Some("--version") {
        println!("{}", control("version").map_or("stand-in".to_string(), |v| v.trim().to_string()));
        return;
    }
    if control("crash").is_some() {
        eprintln!("stand-in: crashing at start, as asked");
        std::process::exit(1);
    }
    let host = flag("--hostname").unwrap_or_else(|| "127.0.0.1".into());
    let port: u16 = flag("--port").and_then(|p| p.parse().ok()).unwrap_or(0);
    let listener = match TcpListener::bind((host.as_str(), port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("Error: Unexpected error\nstand-in: cannot listen on {host}:{port}: {e}");
            std::process::exit(1);
        }
    };
    if std::env::var_os("STAND_IN_GRANDCHILD").is_some() {
        hold_socket_in_a_child(&listener);
    }
    console_events();
    let port = listener.local_addr().unwrap().port();
    if control("child").is_some() {
        // Inherits stdout and stderr (the watcher's log pipe) and the marker.
        #[allow(clippy::zombie_processes)]
        let child = std::process::Command::new("sleep").arg("300").spawn().expect("spawn a child");
        println!("stand-in: child {} holds the log pipe", child.id());
    }
    if control("stranger").is_some() {
        #[allow(clippy::zombie_processes)]
        let child = std::process::Command::new("sleep")
            .arg("300")
            .env_remove("OCX_INSTANCE_ID")
            .env_remove("OCX_HOME")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn a stranger");
        println!("stand-in: stranger PID {}", child.id());
    }
    let silent = control("silent").is_some();
    if silent || control("noready").is_some() {
        println!("stand-in: listening on port {port} without saying so, as asked");
    } else {
        println!("opencode server listening on http://{host}:{port}");
    }
    let _ = std::io::stdout().flush();

    let auth = std::env::var("OPENCODE_SERVER_PASSWORD").ok().map(|password| {
        let user = std::env::var("OPENCODE_SERVER_USERNAME").unwrap_or_else(|_| "opencode".into());
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
    });
    let control_dir = dir.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (auth, dir) = (auth.clone(), control_dir.clone());
            std::thread::spawn(move || answer(conn, auth.as_deref(), dir, silent));
        }
    });

    let mut grown: Vec<Vec<u8>> = Vec::new();
    let mut chatted = false;
    let mut tick = 0u64;
    let mut paced = 0u64;
    let mut rate_since: Option<(std::time::Instant, u64)> = None;
    loop {
        std::thread::sleep(Duration::from_millis(20));
        tick += 1;
        if let Some(code) = control("exit") {
            println!("stand-in: exiting with {}, as asked", code.trim());
            std::process::exit(code.trim().parse().unwrap_or(0));
        }
        if !chatted && let Some(n) = control("chatty").and_then(|n| n.trim().parse::<u64>().ok()) {
            chatted = true;
            let mut out = std::io::stdout().lock();
            for i in 1..=n {
                if writeln!(out, "line {i}").is_err() {
                    break;
                }
            }
            let _ = out.flush();
        }
        match control("rate").and_then(|b| b.trim().parse::<u64>().ok()) {
            Some(rate) => {
                // Lines due since the rate was set, 100 bytes each.
                let (since, first) = *rate_since.get_or_insert((std::time::Instant::now(), paced));
                let due = first + (since.elapsed().as_secs_f64() * rate as f64 / 100.0) as u64;
                let mut out = std::io::stdout().lock();
                while paced < due {
                    paced += 1;
                    let _ = writeln!(out, "paced {paced:>12} {}", "x".repeat(79));
                }
                let _ = out.flush();
            }
            None => rate_since = None,
        }
        if tick.is_multiple_of(5)
            && let Some(mb) = control("grow").and_then(|n| n.trim().parse::<usize>().ok())
        {
            grown.push(vec![1u8; mb << 20]);
        }
    }
}

fn answer(conn: TcpStream, auth: Option<&str>, dir: Option<PathBuf>, silent: bool) {
    let control = |name: &str| dir.as_ref().and_then(|d| std::fs::read_to_string(d.join(name)).ok());
    if control("hang").is_some() {
        std::thread::sleep(Duration::from_secs(3600));
        drop(conn);
        return;
    }
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    let mut authorized = auth.is_none();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let (Some((name, value)), Some(auth)) = (line.split_once(':'), auth)
            && name.eq_ignore_ascii_case("authorization")
            && value.trim() == auth
        {
            authorized = true;
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("");
    let (status, body) = if !authorized {
        ("401 Unauthorized", "{}".to_string())
    } else if silent && path.contains("health") {
        ("503 Service Unavailable", "{}".to_string())
    } else if path.starts_with("/global/health") && control("v2").is_some() {
        ("404 Not Found", "{}".to_string())
    } else if path.starts_with("/global/health") || path.starts_with("/api/health") {
        let version = control("health-version").map_or("stand-in".to_string(), |v| v.trim().to_string());
        ("200 OK", format!(r#"{{"healthy":true,"version":"{version}"}}"#))
    } else if path.starts_with("/session/status") {
        let busy = control("busy").is_some();
        ("200 OK", if busy { r#"{"ses_standin":{"type":"busy"}}"#.into() } else { "{}".into() })
    } else {
        ("404 Not Found", "{}".to_string())
    };
    let mut conn = conn;
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Start a copy of this program that inherits the listening socket and holds it.
fn hold_socket_in_a_child(listener: &TcpListener) {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        let fd = listener.as_raw_fd();
        // SAFETY: clearing FD_CLOEXEC on a socket this process owns, so the child inherits it.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    }
    #[cfg(windows)]
    {
        use std::os::windows::io::AsRawSocket;
        use windows_sys::Win32::Foundation::{HANDLE, HANDLE_FLAG_INHERIT, SetHandleInformation};
        // SAFETY: marking a socket this process owns as inheritable.
        unsafe { SetHandleInformation(listener.as_raw_socket() as HANDLE, HANDLE_FLAG_INHERIT, HANDLE_FLAG_INHERIT) };
    }
    let exe = std::env::current_exe().expect("own path");
    // Never waited for: it is meant to outlive this server, as the agent's commands do.
    #[allow(clippy::zombie_processes)]
    let child = std::process::Command::new(exe).arg("--hold").spawn().expect("spawn the grandchild");
    println!("stand-in: grandchild {} holds the socket", child.id());
}

/// On Windows, say which console control events arrive (CTRL_BREAK from the watcher).
fn console_events() {
    #[cfg(windows)]
    {
        unsafe extern "system" fn on_event(kind: u32) -> i32 {
            println!("stand-in: console control event {kind}");
            let _ = std::io::stdout().flush();
            std::process::exit(0);
        }
        // SAFETY: installs a handler that prints and exits.
        unsafe { windows_sys::Win32::System::Console::SetConsoleCtrlHandler(Some(on_event), 1) };
    }
}
