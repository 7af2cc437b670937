//! ocx measured side by side with what people use today, on real opencode servers and the
//! fake model. Run it with `scripts/bench [SECTION…]`; every server it starts is stopped at the
//! end, also on Ctrl-C.
//!
//! Sections: `prompt` (ocx run vs opencode run --attach), `ls` (ocx ls vs ps | grep + curl, with
//! 1, 5 and 10 servers), `scale` (ocx ls with 100 and 1,000 records on stand-in servers), `start`
//! (ocx start vs bare opencode serve), `stop` (ocx stop --all, 1 vs 8 servers), `self` (ocx
//! --version and ocx's peak RSS).

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Read, Write};
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

/// Stand-in servers, killed when dropped.
struct StandIns(Vec<Child>);

impl StandIns {
    /// Start one more stand-in and record it in `env`'s home as instance `id`. With `port`, the
    /// record points there instead of at the stand-in's own port (the stand-in is still its PID).
    fn add(&mut self, env: &TestEnv, id: &str, port: Option<u16>) {
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
        let dir = env.ocx_home.join("instances");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{id}.json"));
        std::fs::write(&path, record.to_string()).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        self.0.push(child);
    }
}

impl Drop for StandIns {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// 3. `ocx ls` with 100 and 1,000 records, each with a live stand-in server of its own.
fn scale() {
    const N: usize = 10;
    let env = TestEnv::new();
    header(&format!("Listing at scale ({N} runs each; stand-in servers, one process per record)"));
    let mut stand_ins = StandIns(Vec::new());
    let mut rss_rows = Vec::new();
    for target in [100, 1000] {
        while stand_ins.0.len() < target {
            if interrupted() {
                return;
            }
            let id = format!("s{:05}", stand_ins.0.len());
            stand_ins.add(&env, &id, None);
        }
        let listed = env.run(&["ls", "--json"]).success().json();
        let running = listed.as_array().unwrap().iter().filter(|r| r["status"] == "running").count();
        assert_eq!(running, target, "every stand-in answers its health check");
        let mut times = Vec::new();
        let mut rss = 0;
        for _ in 0..N {
            let (took, kib) = measure(env.ocx().arg("ls"));
            times.push(took);
            rss = rss.max(kib);
        }
        row(&format!("ocx ls, {target} records"), &stats(&times));
        rss_rows.push((target, rss));
    }
    for (target, rss) in rss_rows {
        println!("ocx ls peak RSS with {target} records: {:.1} MiB", mib(rss));
    }
    hung();
}

/// `ocx ls` with 20 instances, one of them hung (its port accepts connections, never answers).
fn hung() {
    const N: usize = 10;
    let env = TestEnv::new();
    let mut stand_ins = StandIns(Vec::new());
    let hung = TcpListener::bind("127.0.0.1:0").unwrap();
    for i in 0..20 {
        let port = (i == 0).then(|| hung.local_addr().unwrap().port());
        stand_ins.add(&env, &format!("h{i:05}"), port);
    }
    let times: Vec<Duration> = (0..N).map(|_| time(env.ocx().arg("ls"))).collect();
    row("ocx ls, 20 instances, 1 of them hung", &stats(&times));
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
