//! ocx measured side by side with what people use today, on real opencode servers and the
//! fake model. Run it with `scripts/bench [SECTION…]`; every server it starts is stopped at the
//! end, also on Ctrl-C.
//!
//! Sections: `prompt` (ocx run vs opencode run --attach), `ls` (ocx ls vs ps | grep + curl, with
//! 1, 5 and 10 servers), `scale` (ocx ls with 100 and 1,000 records on stand-in servers), `start`
//! (ocx start vs bare opencode serve), `stop` (ocx stop --all, 1 vs 8 servers), `self` (ocx
//! --version and ocx's peak RSS), `watch` (the watcher's memory and CPU while idle, and the time
//! from a SIGKILL to healthy again vs a `while true; do opencode serve; done` loop), `logs`
//! (the watcher copying a stand-in's log: throughput, and its CPU at 1 and 10 MB/s), `events`
//! (`ocx events --all` over 10 instances: the latency it adds to an event, against `curl -N`
//! on the one `/event` stream), `hosts` (a host over ssh, a second sshd on loopback: `ocx --host`
//! on a new and on the shared connection, against a plain `ssh HOST ocx …`), `batch` (20 short
//! tasks on 4 servers: `ocx batch --on …` against one `opencode run --attach … &` per task and
//! `wait`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Read, Seek, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::TestEnv;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn main() {
    if std::env::args().any(|a| a == "--stand-in") {
        stand_in();
    }
    // SAFETY: the handler only stores to an atomic; the loops below check it and return, so
    // the test environments' Drop stops every server.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
    let wanted: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let run = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    println!("machine: {}", machine());
    if run("prompt") {
        prompt();
    }
    if run("ls") {
        listing();
    }
    if run("scale") {
        scale();
    }
    if run("start") {
        start();
    }
    if run("stop") {
        stop();
    }
    if run("self") {
        itself();
    }
    if run("watch") {
        watcher();
    }
    if run("logs") {
        logs();
    }
    if run("events") {
        events();
    }
    if run("hosts") {
        hosts();
    }
    if run("batch") {
        batch();
    }
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Time one command to completion; it must succeed.
fn time(cmd: &mut Command) -> Duration {
    let began = Instant::now();
    let status = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status().unwrap();
    let took = began.elapsed();
    assert!(status.success(), "{cmd:?} failed");
    took
}

/// Median, 10th and 90th percentile, in milliseconds.
struct Stats {
    median: f64,
    p10: f64,
    p90: f64,
}

fn stats(samples: &[Duration]) -> Stats {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    Stats { median: at(0.5), p10: at(0.1), p90: at(0.9) }
}

fn row(what: &str, s: &Stats) {
    println!("| {what:<44} | {:>9.1} | {:>7.1} – {:<7.1} |", s.median, s.p10, s.p90);
}

fn header(title: &str) {
    println!("\n## {title}\n");
    println!("| {:<44} | {:>9} | {:^17} |", "command", "median ms", "p10 – p90 ms");
    println!("|{:-<46}|{:->11}|{:-^19}|", "", "", "");
}

/// 1. Prompt round trip on one warm server: `ocx run` vs `opencode run --attach`, alternating.
fn prompt() {
    const N: usize = 20;
    let env = TestEnv::new();
    let record = env.start(&[]);
    let id = record["id"].as_str().unwrap().to_string();
    let secrets = env.secrets(&id);
    let (url, password) = (secrets["url"].as_str().unwrap(), secrets["password"].as_str().unwrap());
    let ocx = |text: &str| {
        let mut cmd = env.ocx();
        cmd.args(["run", &id, text]);
        cmd
    };
    let attach = |text: &str| {
        let mut cmd = Command::new(&env.opencode);
        env.apply_env(&mut cmd);
        cmd.args(["run", "--attach", url, "-p", password, text]);
        cmd
    };
    // Warm both paths up (the first `opencode run` takes seconds longer).
    for i in 0..2 {
        time(&mut ocx(&format!("warm-up {i}")));
        time(&mut attach(&format!("warm-up {i}")));
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..N {
        if interrupted() {
            return;
        }
        a.push(time(&mut ocx(&format!("bench prompt {i}"))));
        b.push(time(&mut attach(&format!("bench prompt {i}"))));
    }
    let (sa, sb) = (stats(&a), stats(&b));
    header(&format!("Prompt round trip ({N} prompts each, alternating, one warm server)"));
    row("ocx run ID \"…\"", &sa);
    row("opencode run --attach URL -p PASSWORD \"…\"", &sb);
    println!("\nratio ocx / opencode (medians): {:.3}  (target ≤ 0.25)", sa.median / sb.median);
}

/// Run a command to completion; its wall time and peak RSS (KiB, from wait4).
fn measure(cmd: &mut Command) -> (Duration, u64) {
    let began = Instant::now();
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let mut status = 0;
    // SAFETY: waits for (and reaps) the child just spawned; `rusage` is plain data.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    assert_eq!(unsafe { libc::wait4(pid, &mut status, 0, &mut usage) }, pid);
    let took = began.elapsed();
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "{cmd:?} failed");
    std::mem::forget(child);
    (took, usage.ru_maxrss as u64)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// 2. `ocx ls` vs `ps aux | grep` plus a `curl /global/health` per server, with 1, 5, 10 servers.
fn listing() {
    const N: usize = 20;
    let env = TestEnv::new();
    header(&format!("Listing ({N} runs each, alternating)"));
    let mut running = 0;
    let mut rss = 0;
    for target in [1, 5, 10] {
        if interrupted() {
            return;
        }
        let count = (target - running).to_string();
        env.run(&["start", "--count", &count]).success();
        running = target;
        let records = env.run(&["ls", "--json", "--show-secrets"]).success().json();
        let curls: Vec<String> = records
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "curl -s -m 2 -u {}:{} {}/global/health",
                    r["username"].as_str().unwrap(),
                    r["password"].as_str().unwrap(),
                    r["url"].as_str().unwrap()
                )
            })
            .collect();
        let recipe = format!("ps aux | grep '[o]pencode.*serve'; {}", curls.join("; "));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..N {
            let (took, kib) = measure(env.ocx().arg("ls"));
            a.push(took);
            rss = rss.max(kib);
            b.push(measure(Command::new("sh").args(["-c", &recipe])).0);
        }
        let (sa, sb) = (stats(&a), stats(&b));
        row(&format!("ocx ls, {target} servers"), &sa);
        row(&format!("ps aux, grep, curl loop: {target} servers"), &sb);
        println!(
            "| {:<44} | {:>9.3} | {:^17} |",
            format!("ratio ocx / recipe, {target} servers"),
            sa.median / sb.median,
            ""
        );
    }
    println!(
        "
ocx ls peak RSS: {:.1} MiB  (target ≤ 20 MiB)",
        mib(rss)
    );
}

/// The bench binary run as a stand-in server: answers every request with a healthy
/// `/global/health` body. Prints its port, then serves until killed.
fn stand_in() -> ! {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    println!("{}", listener.local_addr().unwrap().port());
    std::io::stdout().flush().unwrap();
    for conn in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let mut conn = conn;
            let mut buf = [0; 4096];
            let _ = conn.read(&mut buf);
            let body = r#"{"healthy":true,"version":"stand-in"}"#;
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        });
    }
    std::process::exit(0)
}

/// Stand-in servers (and stand-in watchers), killed when dropped.
struct StandIns(Vec<Child>);

impl StandIns {
    /// Start one more stand-in and record it in `env`'s home as instance `id`. With `port`, the
    /// record points there instead of at the stand-in's own port (the stand-in is still its PID).
    /// `watched`: with a stand-in watcher too (a process carrying the instance's marker) and the
    /// observation a watcher writes (`status/<id>.json`), so that `ls` reads it as it does for
    /// real instances.
    fn add(&mut self, env: &TestEnv, id: &str, port: Option<u16>, watched: bool) {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .arg("--stand-in")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut own_port = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut own_port).unwrap();
        let port = port.unwrap_or_else(|| own_port.trim().parse().unwrap());
        let mut record: serde_json::Value =
            serde_json::from_str(include_str!("../tests/fixtures/record-v1.json")).unwrap();
        record["id"] = id.into();
        record["name"] = id.into();
        record["pid"] = child.id().into();
        record["pid_started_at"] = support::start_time(child.id()).into();
        record["port"] = port.into();
        record["url"] = format!("http://127.0.0.1:{port}").into();
        if watched {
            std::fs::create_dir_all(&env.ocx_home).unwrap();
            let home = env.ocx_home.canonicalize().unwrap();
            let watcher =
                Command::new("sleep").arg("3600").env("OCX_INSTANCE_ID", id).env("OCX_HOME", &home).spawn().unwrap();
            record["watcher"] =
                serde_json::json!({"pid": watcher.id(), "started_at": support::start_time(watcher.id())});
            self.0.push(watcher);
            observe(env, id, child.id());
        }
        let dir = env.ocx_home.join("instances");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{id}.json"));
        std::fs::write(&path, record.to_string()).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        self.0.push(child);
    }
}

/// Write the observation a healthy, idle instance's watcher writes, dated now.
fn observe(env: &TestEnv, id: &str, pid: u32) {
    let dir = env.ocx_home.join("status");
    std::fs::create_dir_all(&dir).unwrap();
    let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let status = serde_json::json!({"schema": 1, "pid": pid, "healthy": true, "version": "stand-in", "busy": {},
        "pending": [], "stream": true, "updated_at": now});
    std::fs::write(dir.join(format!("{id}.json")), status.to_string()).unwrap();
}

impl Drop for StandIns {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Section 3: `ocx ls` with 100 and 1,000 records, each with a live stand-in server of its own
/// and a stand-in watcher with its observation; and the same asked live (`--probe`, as `ls`
/// did before the watcher observed).
fn scale() {
    const N: usize = 10;
    let env = TestEnv::new();
    header(&format!("Listing at scale ({N} runs each; stand-in servers and watchers, processes per record)"));
    let mut stand_ins = StandIns(Vec::new());
    let mut rss_rows = Vec::new();
    let mut records = 0;
    for target in [100, 1000] {
        while records < target {
            if interrupted() {
                return;
            }
            stand_ins.add(&env, &format!("s{records:05}"), None, true);
            records += 1;
        }
        refresh_observations(&env);
        let listed = env.run(&["ls", "--json"]).success().json();
        let healthy = listed.as_array().unwrap().iter().filter(|r| r["healthy"] == true).count();
        assert_eq!(healthy, target, "every stand-in is healthy");
        for probe in [false, true] {
            let mut times = Vec::new();
            let mut rss = 0;
            for _ in 0..N {
                refresh_observations(&env);
                let mut cmd = env.ocx();
                cmd.arg("ls");
                if probe {
                    cmd.arg("--probe");
                }
                let (took, kib) = measure(&mut cmd);
                times.push(took);
                rss = rss.max(kib);
            }
            let how = if probe { " (--probe: asking each server)" } else { "" };
            row(&format!("ocx ls, {target} records{how}"), &stats(&times));
            if !probe {
                rss_rows.push((target, rss));
            }
        }
    }
    for (target, rss) in rss_rows {
        println!("ocx ls peak RSS with {target} records: {:.1} MiB", mib(rss));
    }
    hung();
}

/// Date every observation now (a watcher writes it at every probe).
fn refresh_observations(env: &TestEnv) {
    for entry in std::fs::read_dir(env.ocx_home.join("instances")).unwrap().flatten() {
        let record: serde_json::Value = serde_json::from_slice(&std::fs::read(entry.path()).unwrap()).unwrap();
        if record["watcher"].is_object() {
            observe(env, record["id"].as_str().unwrap(), record["pid"].as_u64().unwrap() as u32);
        }
    }
}

/// `ocx ls` with 20 instances, one of them hung (its port accepts connections, never answers):
/// from the watchers' observations, and asked live.
fn hung() {
    const N: usize = 10;
    let env = TestEnv::new();
    let mut stand_ins = StandIns(Vec::new());
    let hung = TcpListener::bind("127.0.0.1:0").unwrap();
    for i in 0..20 {
        let port = (i == 0).then(|| hung.local_addr().unwrap().port());
        stand_ins.add(&env, &format!("h{i:05}"), port, true);
    }
    let mut watched = Vec::new();
    for _ in 0..N {
        refresh_observations(&env);
        watched.push(time(env.ocx().arg("ls")));
    }
    row("ocx ls, 20 instances, 1 of them hung", &stats(&watched));
    let probed: Vec<Duration> = (0..N).map(|_| time(env.ocx().args(["ls", "--probe"]))).collect();
    row("ocx ls --probe, 20 instances, 1 of them hung", &stats(&probed));
}

/// 4. `ocx start` to healthy vs bare `opencode serve` to its ready line.
fn start() {
    const N: usize = 10;
    let env = TestEnv::new();
    // One start first, so neither side pays for opencode's first-run database migration.
    env.run(&["start"]).success();
    env.run(&["stop", "--all", "--force"]).success();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..N {
        if interrupted() {
            return;
        }
        a.push(time(env.ocx().arg("start")));
        env.run(&["stop", "--all", "--force"]).success();

        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
        let mut cmd = Command::new(&env.opencode);
        env.apply_env(&mut cmd);
        cmd.args(["serve", "--hostname", "127.0.0.1", "--port", &port]).env("OPENCODE_SERVER_PASSWORD", "x");
        let began = Instant::now();
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains("server listening on") {
            line.clear();
            assert!(reader.read_line(&mut line).unwrap() > 0, "opencode exited before its ready line");
        }
        b.push(began.elapsed());
        let _ = child.kill();
        let _ = child.wait();
    }
    let (sa, sb) = (stats(&a), stats(&b));
    header(&format!("Start ({N} starts each, alternating, one at a time)"));
    row("ocx start (to healthy)", &sa);
    row("opencode serve (to its ready line)", &sb);
    println!(
        "
ocx adds (medians): {:.0} ms  (target ≤ 100 ms)",
        sa.median - sb.median
    );
}

/// 5. `ocx stop --all` with 1 and with 8 servers; and, as the floor, the servers' own time to
///    exit when the bench itself sends TERM to their process groups and polls until every
///    thread has exited (`is_gone`; reaping by PID 1 is not waited for).
fn stop() {
    const ROUNDS: usize = 5;
    let env = TestEnv::new();
    let mut rows = Vec::new();
    for count in [1, 8] {
        let (mut ocx, mut floor) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            if interrupted() {
                return;
            }
            env.run(&["start", "--count", &count.to_string()]).success();
            ocx.push(time(env.ocx().args(["stop", "--all"])));

            env.run(&["start", "--count", &count.to_string()]).success();
            let pids: Vec<i32> = env.ls().iter().map(|r| r["pid"].as_i64().unwrap() as i32).collect();
            let began = Instant::now();
            for &pid in &pids {
                // SAFETY: signals the process groups of servers this bench started.
                unsafe { libc::killpg(pid, libc::SIGTERM) };
            }
            while !pids.iter().all(|&pid| support::is_gone(pid as u32)) {
                std::thread::sleep(Duration::from_millis(2));
            }
            floor.push(began.elapsed());
            env.run(&["gc"]).success();
        }
        rows.push((count, stats(&ocx), stats(&floor)));
    }
    header(&format!("Stop ({ROUNDS} rounds each, fresh servers every round)"));
    for (count, ocx, floor) in &rows {
        row(&format!("ocx stop --all, {count} server(s)"), ocx);
        row(&format!("floor: TERM to the groups, {count} server(s)"), floor);
    }
    println!(
        "\nratio 8 / 1 (medians): ocx {:.2}, floor {:.2}  (target ≤ 1.5)",
        rows[1].1.median / rows[0].1.median,
        rows[1].2.median / rows[0].2.median
    );
}

/// 6. ocx's own cost: `ocx --version`, and its peak RSS for `ls`.
fn itself() {
    const N: usize = 50;
    let env = TestEnv::new();
    let times: Vec<Duration> = (0..N).map(|_| measure(env.ocx().arg("--version")).0).collect();
    let (_, rss) = measure(env.ocx().arg("ls"));
    header(&format!("ocx itself ({N} runs)"));
    row("ocx --version", &stats(&times));
    println!(
        "
ocx ls peak RSS (no instances): {:.1} MiB",
        mib(rss)
    );
}

/// A live process's resident memory (total, private), from `/proc/PID/status`, in KiB.
fn rss_of(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)?.split_whitespace().next()?.parse::<u64>().ok()).unwrap_or(0)
    };
    (field("VmRSS:"), field("RssAnon:"))
}

/// Poll `url`'s health every 5 ms until it answers healthy; how long that took.
fn until_healthy(url: &str, auth: &str, began: Instant) -> Duration {
    let agent = support::http(Duration::from_millis(500));
    loop {
        let ok = agent
            .get(format!("{url}/global/health"))
            .header("Authorization", auth)
            .call()
            .is_ok_and(|r| r.status() == 200);
        if ok {
            return began.elapsed();
        }
        assert!(began.elapsed() < Duration::from_secs(60), "{url} never came back");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// 7. The watcher: its memory and CPU while its server idles (three health checks in), and the
///    time from a SIGKILL of the server to healthy again on the same port, against a bare
///    `while true; do opencode serve --port P; done` loop. Each ocx round kills a different
///    instance, so each is a first crash (restarted at once, as the loop does every time).
fn watcher() {
    const ROUNDS: usize = 5;
    const IDLE: Duration = Duration::from_secs(60);
    let env = TestEnv::new();
    let docs = env.run(&["start", "--count", &ROUNDS.to_string(), "--json"]).success().json();
    let ids: Vec<String> = docs.as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().to_string()).collect();
    let first = env.secrets(&ids[0]);
    let watcher = first["watcher"]["pid"].as_u64().unwrap() as u32;
    std::thread::sleep(Duration::from_secs(31));
    let cpu_before = support::cpu_time(watcher).unwrap();
    std::thread::sleep(IDLE);
    let cpu = support::cpu_time(watcher).unwrap() - cpu_before;
    let (rss, private) = rss_of(watcher);

    let (mut ocx, mut bare) = (Vec::new(), Vec::new());
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut sh = Command::new("sh");
    env.apply_env(&mut sh);
    sh.args([
        "-c",
        &format!("while true; do '{}' serve --hostname 127.0.0.1 --port {port}; done", env.opencode.display()),
    ])
    .env("OPENCODE_SERVER_PASSWORD", "loop")
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let mut shell = sh.spawn().unwrap();
    let loop_url = format!("http://127.0.0.1:{port}");
    let loop_auth = support::basic_auth(&serde_json::json!({"username": "opencode", "password": "loop"}));
    until_healthy(&loop_url, &loop_auth, Instant::now());
    for id in &ids {
        if interrupted() {
            break;
        }
        let record = env.secrets(id);
        let (url, auth) = (record["url"].as_str().unwrap(), support::basic_auth(&record));
        let began = Instant::now();
        // SAFETY: SIGKILL to a server this bench started.
        unsafe { libc::kill(record["pid"].as_i64().unwrap() as i32, libc::SIGKILL) };
        ocx.push(until_healthy(url, &auth, began));

        let server = std::fs::read_to_string(format!("/proc/{}/task/{}/children", shell.id(), shell.id())).unwrap();
        let server: i32 = server.split_whitespace().next().unwrap().parse().unwrap();
        let began = Instant::now();
        // SAFETY: SIGKILL to the loop's opencode, which this bench started.
        unsafe { libc::kill(server, libc::SIGKILL) };
        // Wait until the port is no longer answered by the dead one, then for the new one.
        while std::fs::metadata(format!("/proc/{server}")).is_ok() && !support::is_gone(server as u32) {
            std::thread::sleep(Duration::from_millis(1));
        }
        bare.push(until_healthy(&loop_url, &loop_auth, began));
    }
    // Killing the loop leaves its current opencode running (reparented): end the loop first,
    // so that it starts no other, then the server it ran.
    let children = std::fs::read_to_string(format!("/proc/{}/task/{}/children", shell.id(), shell.id()));
    let _ = shell.kill();
    let _ = shell.wait();
    for server in children.unwrap_or_default().split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
        // SAFETY: SIGKILL to the loop's opencode, which this bench started.
        unsafe { libc::kill(server, libc::SIGKILL) };
    }
    header(&format!("The watcher ({ROUNDS} crashes each, alternating)"));
    let (so, sb) = (stats(&ocx), stats(&bare));
    row("ocx: SIGKILL to healthy again (same port)", &so);
    row("while true; do opencode serve; done", &sb);
    println!("\nocx minus the loop (medians): {:.0} ms  (target ≤ 150 ms)", so.median - sb.median);
    println!(
        "watcher resident memory: {:.2} MiB, of which private {:.2} MiB  (target ≤ 2 MiB)",
        mib(rss),
        mib(private)
    );
    println!(
        "watcher CPU over {} s of an idle server: {} ms ({:.3} % of a core)",
        IDLE.as_secs(),
        cpu.as_millis(),
        cpu.as_secs_f64() * 100.0 / IDLE.as_secs_f64()
    );
    env.run(&["stop", "--all", "--force"]).success();
}

/// 8. The watcher copying a server's output into the rotated log: its throughput with a
///    stand-in that writes as fast as it can, and its CPU at 1 MB/s and at 10 MB/s.
fn logs() {
    const LINES: u64 = 2_000_000;
    let env = TestEnv::new();
    let record = env.start_stand_in(&["--log-max-size", "64M", "--log-max-files", "4"]);
    let id = record["id"].as_str().unwrap().to_string();
    let watcher = record["watcher"]["pid"].as_u64().unwrap() as u32;
    let log = env.ocx_home.join(format!("logs/{id}.log"));
    let cpu_before = support::cpu_time(watcher).unwrap();
    let began = Instant::now();
    env.control("chatty", &LINES.to_string());
    let last = format!(" line {LINES}\n");
    loop {
        let mut file = std::fs::File::open(&log).unwrap();
        let len = file.seek(std::io::SeekFrom::End(0)).unwrap();
        let mut tail = vec![0; 64.min(len as usize)];
        file.seek(std::io::SeekFrom::End(-(tail.len() as i64))).unwrap();
        file.read_exact(&mut tail).unwrap();
        if String::from_utf8_lossy(&tail).ends_with(&last) {
            break;
        }
        assert!(began.elapsed() < Duration::from_secs(120), "the log never got the last line");
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = began.elapsed();
    let cpu_burst = support::cpu_time(watcher).unwrap() - cpu_before;
    let bytes: u64 = (1..=LINES).map(|i| format!("line {i}\n").len() as u64).sum();
    header("Log copy (a stand-in writing to its watcher)");
    println!(
        "burst: {LINES} lines, {:.1} MB in {:.2} s: {:.1} MB/s; the watcher used {} ms of CPU",
        bytes as f64 / 1e6,
        took.as_secs_f64(),
        bytes as f64 / 1e6 / took.as_secs_f64(),
        cpu_burst.as_millis()
    );
    for rate in [1_000_000u64, 10_000_000] {
        env.control("rate", &rate.to_string());
        std::thread::sleep(Duration::from_secs(2));
        let before = support::cpu_time(watcher).unwrap();
        let window = Duration::from_secs(10);
        std::thread::sleep(window);
        let used = support::cpu_time(watcher).unwrap() - before;
        std::fs::remove_file(env.control_dir().join("rate")).unwrap();
        println!(
            "at {} MB/s: the watcher used {:.2} % of one core  (target at 10 MB/s ≤ 5 %)",
            rate / 1_000_000,
            used.as_secs_f64() * 100.0 / window.as_secs_f64()
        );
    }
    env.run(&["stop", "--all", "--force"]).success();
}

/// Lines of a child's stdout on a channel, each with the moment it arrived.
fn lines_of(child: &mut Child) -> std::sync::mpsc::Receiver<(Instant, String)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    rx
}

/// The arrival of the first line containing `needle`.
fn arrival(rx: &std::sync::mpsc::Receiver<(Instant, String)>, needle: &str) -> Instant {
    loop {
        let (at, line) = rx.recv_timeout(Duration::from_secs(30)).expect("the event arrives");
        if line.contains(needle) {
            return at;
        }
    }
}

/// 9. `ocx events --all --json` over 10 instances next to `curl -N` on one of their `/event`
///    streams: each round creates a session on that server (a `session.created` event, titled
///    uniquely) and takes when each consumer printed it.
fn events() {
    const ROUNDS: usize = 30;
    let env = TestEnv::new();
    env.run(&["start", "--count", "10", "--json"]).success();
    let target = env.secrets(env.ls()[0]["id"].as_str().unwrap());
    let (url, auth) = (target["url"].as_str().unwrap().to_string(), support::basic_auth(&target));
    let mut ocx =
        env.ocx().args(["events", "--all", "--json"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut curl = Command::new("curl")
        .args(["-sN", "--noproxy", "*", "-H", &format!("Authorization: {auth}"), &format!("{url}/event")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (from_ocx, from_curl) = (lines_of(&mut ocx), lines_of(&mut curl));
    // Both connected: every instance's `ocx.connected`, and curl's `server.connected`.
    for _ in 0..10 {
        arrival(&from_ocx, "ocx.connected");
    }
    arrival(&from_curl, "server.connected");
    let agent = support::http(Duration::from_secs(10));
    let mut added = Vec::new();
    for round in 0..ROUNDS {
        if interrupted() {
            break;
        }
        let title = format!("bench-event-{round}");
        agent
            .post(format!("{url}/session"))
            .header("Authorization", &auth)
            .send_json(serde_json::json!({"title": title}))
            .unwrap();
        let (a, b) = (arrival(&from_ocx, &title), arrival(&from_curl, &title));
        added.push(a.saturating_duration_since(b));
    }
    let _ = ocx.kill();
    let _ = curl.kill();
    let _ = (ocx.wait(), curl.wait());
    header(&format!("Events ({ROUNDS} events, one of 10 instances)"));
    row("ocx events --all: later than curl -N by", &stats(&added));
    println!("\n(target: ≤ 5 ms added, median)");
    env.run(&["stop", "--all", "--force"]).success();
}

/// 10. One instance on a host over ssh (an sshd on loopback, as in the tests): `ocx --host a ls
///     --json` on a new connection (the shared one closed first) and again on the shared one,
///     against `ssh a ocx ls --json`, which logs in anew every time.
fn hosts() {
    const ROUNDS: usize = 10;
    let env = TestEnv::new();
    let hosts = support::sshd::SshHosts::start(&env, &["a"]);
    let remote_ocx = hosts.ocx.to_str().unwrap().to_string();
    let ocx = |args: &[&str]| {
        let mut cmd = env.ocx();
        cmd.env("OCX_SSH", &hosts.ssh).args(args);
        cmd
    };
    let project = env.project.to_str().unwrap().to_string();
    assert!(ocx(&["host", "add", "a", "ssh://a", "--ocx", &remote_ocx]).status().unwrap().success());
    assert!(ocx(&["--host", "a", "start", "--dir", &project]).stdout(Stdio::null()).status().unwrap().success());
    let control = env.ocx_home.join("ssh");
    let (mut cold, mut warm, mut plain) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        if interrupted() {
            break;
        }
        hosts.close_connections(&control);
        cold.push(time(&mut ocx(&["--host", "a", "ls", "--json"])));
        warm.push(time(&mut ocx(&["--host", "a", "ls", "--json"])));
        plain.push(time(Command::new(&hosts.ssh).args(["a", &remote_ocx, "ls", "--json"])));
    }
    hosts.close_connections(&control);
    header(&format!("A host over ssh ({ROUNDS} rounds, one instance there)"));
    row("ocx --host a ls, new connection", &stats(&cold));
    row("ocx --host a ls, shared connection", &stats(&warm));
    row("ssh a ocx ls --json (new connection)", &stats(&plain));
    println!("\nlogins to the host's sshd: {} for {} commands", hosts.host("a").logins(), ROUNDS * 3);
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find_map(|l| l.strip_prefix("model name\t: ").map(str::to_string)))
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map_or(0.0, |kb| kb / 1_048_576.0);
    let opencode = support::OPENCODE_VERSION;
    format!("{cpu}, {cores} cores, {mem_gib:.0} GiB, {}, opencode {opencode}", std::env::consts::OS)
}

/// Section 12, twenty short tasks on four warm servers: `ocx batch --on` against the usual recipe (an
/// `opencode run --attach URL -p PASSWORD "…" &` for each task, task i on server i mod 4, and a
/// `wait` for all of them); alternating, the same servers.
fn batch() {
    const TASKS: usize = 20;
    const SERVERS: usize = 4;
    const ROUNDS: usize = 3;
    let env = TestEnv::new();
    let started = env.run(&["start", "--count", &SERVERS.to_string(), "--name", "b", "--json"]).json();
    let servers: Vec<(String, String)> = started
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let s = env.secrets(r["id"].as_str().unwrap());
            (s["url"].as_str().unwrap().to_string(), s["password"].as_str().unwrap().to_string())
        })
        .collect();
    let names: Vec<String> = (1..=SERVERS).map(|i| format!("b-{i}")).collect();
    let on = names.join(",");
    let file = env.root.path().join("tasks.txt");
    let recipe = |round: usize| {
        let began = Instant::now();
        let children: Vec<Child> = (0..TASKS)
            .map(|i| {
                let (url, password) = &servers[i % SERVERS];
                let mut cmd = Command::new(&env.opencode);
                env.apply_env(&mut cmd);
                cmd.args(["run", "--attach", url, "-p", password, &format!("recipe {round} task {i}")]);
                cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
            })
            .collect();
        for mut child in children {
            assert!(child.wait().unwrap().success(), "opencode run --attach failed");
        }
        began.elapsed()
    };
    let ocx = |round: usize| {
        let text: String = (0..TASKS).map(|i| format!("batch {round} task {i}\n")).collect();
        std::fs::write(&file, text).unwrap();
        time(env.ocx().args(["batch", file.to_str().unwrap(), "--on", &on]))
    };
    // Warm both paths up (the first `opencode run` takes seconds longer).
    recipe(99);
    ocx(99);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        if interrupted() {
            return;
        }
        a.push(ocx(round));
        b.push(recipe(round));
    }
    let (sa, sb) = (stats(&a), stats(&b));
    header(&format!("Batch: {TASKS} short tasks on {SERVERS} warm servers ({ROUNDS} rounds each, alternating)"));
    row(&format!("ocx batch tasks.txt --on {on}"), &sa);
    row("opencode run --attach … & (one per task); wait", &sb);
    println!("\nratio ocx / recipe (medians): {:.3}  (target ≤ 0.5)", sa.median / sb.median);
}
