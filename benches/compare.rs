//! ocx measured side by side with what people use today, on real opencode servers and the
//! fake model. Run it with `scripts/bench [SECTION…]`; every server it starts is stopped at the
//! end, also on Ctrl-C.
//!
//! Sections: `prompt` (ocx run vs opencode run --attach).

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::TestEnv;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn main() {
    // SAFETY: the handler only stores to an atomic; the loops below check it and return, so
    // the test environments' Drop stops every server.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
    let wanted: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let run = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    println!("machine: {}", machine());
    if run("prompt") {
        prompt();
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
