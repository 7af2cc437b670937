//! Linux: the processes a command asks about by PID, read straight from `/proc`: one read of
//! `/proc/PID/stat` each (state, start, resident memory), and `/proc/PID/environ` where the
//! marker is wanted. sysinfo opens four or five for each (the directory, `stat`, `statm`,
//! `status`, and `environ` when asked) and ocx read `stat` again for the exact start: at 1,000
//! instances that was most of `ls`. The whole table (`ls --all`, marker scans) still comes from
//! sysinfo.

use std::collections::HashMap;
use std::ffi::OsString;

use super::super::Proc;

/// These PIDs as the OS has them now, each live one with its environment when `environ` says
/// so; a PID that is gone (or a zombie whose threads are all gone) is left out. None where
/// `/proc` cannot say (not Linux): the caller asks sysinfo.
pub fn lean(pids: &[u32], environ: impl Fn(u32) -> bool + Sync) -> Option<HashMap<u32, (Proc, Vec<OsString>)>> {
    #[cfg(target_os = "linux")]
    {
        let boot = super::super::boot_time();
        // SAFETY: sysconf has no preconditions.
        let (tick, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
        let (tick, page) = (u64::try_from(tick).ok().filter(|&t| t > 0)?, u64::try_from(page).unwrap_or(4096));
        // Each read is the kernel's work, not a wait: a thread per core.
        let read = crate::parallel::map(pids, crate::parallel::cores_for(pids.len()), |&pid| {
            let (state, ticks, rss_pages) = stat(pid)?;
            if matches!(state, 'X' | 'x') || (state == 'Z' && !super::still_exiting(pid)) {
                return None;
            }
            let proc = Proc { pid, start_time: boot + ticks / tick, start_key: ticks, rss: rss_pages * page };
            Some((pid, (proc, if environ(pid) { environ_of(pid) } else { Vec::new() })))
        });
        Some(read.into_iter().flatten().collect())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (pids, environ);
        None
    }
}

/// Every process whose environment holds `var` (`NAME=value`), read as `lean` reads them: the
/// environment of each process first (another user's cannot be read and is passed over), then
/// the state and start of those that hold it, then their environment again (a PID reused in
/// between is judged by what runs now). None where `/proc` cannot say (not Linux).
pub fn lean_with_var(var: &str) -> Option<HashMap<u32, (Proc, Vec<OsString>)>> {
    #[cfg(target_os = "linux")]
    {
        let pids: Vec<u32> = std::fs::read_dir("/proc")
            .ok()?
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
            .collect();
        let holds = |pid: &u32| {
            read(&format!("/proc/{pid}/environ"), 8192)
                .is_some_and(|env| env.split(|&b| b == 0).any(|v| v == var.as_bytes()))
        };
        let held =
            crate::parallel::map(&pids, crate::parallel::cores_for(pids.len()), |pid| holds(pid).then_some(*pid));
        lean(&held.into_iter().flatten().collect::<Vec<_>>(), |_| true)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = var;
        None
    }
}

/// Fields 3 (state), 22 (start, clock ticks since boot) and 24 (resident pages) of
/// `/proc/PID/stat`. The command name (field 2) may hold spaces and parentheses: fields are
/// counted from the last `)`.
#[cfg(target_os = "linux")]
pub(super) fn stat(pid: u32) -> Option<(char, u64, u64)> {
    let stat = String::from_utf8(read(&format!("/proc/{pid}/stat"), 1024)?).ok()?;
    let mut fields = stat.rsplit_once(") ")?.1.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let ticks = fields.nth(18)?.parse().ok()?;
    let rss = fields.nth(1)?.parse().ok()?;
    Some((state, ticks, rss))
}

/// A process's environment, `NAME=value` each; empty if it cannot be read (another user's).
#[cfg(target_os = "linux")]
fn environ_of(pid: u32) -> Vec<OsString> {
    use std::os::unix::ffi::OsStringExt;
    let Some(bytes) = read(&format!("/proc/{pid}/environ"), 8192) else { return Vec::new() };
    bytes.split(|&b| b == 0).filter(|v| !v.is_empty()).map(|v| OsString::from_vec(v.to_vec())).collect()
}

/// A file of `/proc` whole, read into a buffer of `first` bytes that grows as needed: with no
/// size to ask for, `fs::read` spends a `statx`, an `lseek` and a 32-byte probe on each, and
/// each read of `environ` walks the other process's memory again.
#[cfg(target_os = "linux")]
fn read(path: &str, first: usize) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).ok()?;
    let (mut buf, mut len) = (vec![0; first], 0);
    loop {
        if len == buf.len() {
            buf.resize(len * 2, 0);
        }
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    buf.truncate(len);
    Some(buf)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_child_is_read_as_sysinfo_reads_it_and_a_reaped_one_is_gone() {
        let mut child = std::process::Command::new("sleep").arg("30").env("OCX_LEAN_TEST", "1").spawn().unwrap();
        let pid = child.id();
        past_exec(pid);
        let lean = lean(&[pid, std::process::id()], |p| p == pid).unwrap();
        let (proc, env) = &lean[&pid];
        let sys = crate::process::Processes::all().unwrap();
        let seen = sys.get(pid).unwrap();
        assert_eq!((proc.start_time, proc.start_key), (seen.start_time, seen.start_key));
        // A child just past its exec may not have touched a page yet: this process has.
        assert!(lean[&std::process::id()].0.rss > 0);
        assert!(env.iter().any(|v| v == "OCX_LEAN_TEST=1"), "{env:?}");
        // Asked without its environment: none read.
        assert!(lean[&std::process::id()].1.is_empty());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!lean_has(pid));
    }

    #[test]
    fn a_scan_finds_the_processes_holding_a_variable_and_no_other() {
        let var = format!("OCX_LEAN_SCAN={}", std::process::id());
        let mut marked = std::process::Command::new("sleep")
            .arg("30")
            .env("OCX_LEAN_SCAN", std::process::id().to_string())
            .spawn()
            .unwrap();
        let mut other = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        past_exec(marked.id());
        past_exec(other.id());
        let found = lean_with_var(&var).unwrap();
        assert!(found.contains_key(&marked.id()), "{:?}", found.keys());
        assert!(!found.contains_key(&other.id()));
        assert!(found[&marked.id()].1.iter().any(|v| v.to_str() == Some(var.as_str())));
        for child in [&mut marked, &mut other] {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Wait until a child just spawned has its new environment: `spawn` returns once exec has
    /// closed the close-on-exec pipe, before the kernel has set up the new environment, and a
    /// read of `environ` in that moment finds it empty.
    fn past_exec(pid: u32) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while environ_of(pid).is_empty() {
            assert!(std::time::Instant::now() < deadline, "PID {pid} never showed an environment");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    fn lean_has(pid: u32) -> bool {
        lean(&[pid], |_| false).unwrap().contains_key(&pid)
    }
}
