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
            with_file(&format!("/proc/{pid}/environ"), |env| env.split(|&b| b == 0).any(|v| v == var.as_bytes()))
                .unwrap_or(false)
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
    with_file(&format!("/proc/{pid}/stat"), |stat| {
        // The name may be any bytes; what follows it is ASCII.
        let after = stat.windows(2).rposition(|w| w == b") ")? + 2;
        let mut fields = std::str::from_utf8(&stat[after..]).ok()?.split_ascii_whitespace();
        let state = fields.next()?.chars().next()?;
        let ticks = fields.nth(18)?.parse().ok()?;
        let rss = fields.nth(1)?.parse().ok()?;
        Some((state, ticks, rss))
    })?
}

/// The marker variables of a process's environment (`NAME=value` each, all a marker check
/// reads: the instance's and an alert's); empty if it cannot be read (another user's). The
/// rest is not kept: a watcher's environment is the whole of its user's, and 1,000 of them
/// were 50,000 strings.
#[cfg(target_os = "linux")]
fn environ_of(pid: u32) -> Vec<OsString> {
    use super::super::{MARKER_ALERT, MARKER_HOME, MARKER_ID};
    use std::os::unix::ffi::OsStrExt;
    let marker = |v: &[u8]| {
        v.iter()
            .position(|&b| b == b'=')
            .is_some_and(|at| [MARKER_ID, MARKER_HOME, MARKER_ALERT].iter().any(|m| &v[..at] == m.as_bytes()))
    };
    with_file(&format!("/proc/{pid}/environ"), |bytes| {
        bytes.split(|&b| b == 0).filter(|v| marker(v)).map(|v| std::ffi::OsStr::from_bytes(v).to_os_string()).collect()
    })
    .unwrap_or_default()
}

/// `f` of a file of `/proc` read whole into this thread's buffer, which grows as needed and is
/// kept: with no size to ask for, `fs::read` spends a `statx`, an `lseek` and a 32-byte probe
/// on each (and each read of `environ` walks the other process's memory again), and a fresh
/// buffer per file was thousands of allocations at 1,000 instances.
#[cfg(target_os = "linux")]
fn with_file<T>(path: &str, f: impl FnOnce(&[u8]) -> T) -> Option<T> {
    use std::io::Read;
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 8192]);
    }
    let mut file = std::fs::File::open(path).ok()?;
    BUF.with_borrow_mut(|buf| {
        let mut len = 0;
        loop {
            if len == buf.len() {
                buf.resize(len * 2, 0);
            }
            match file.read(&mut buf[len..]) {
                Ok(0) => break,
                // `/proc` hands over what there is in one read when there is room for it: a
                // short read is the end, and a read more to hear so is a syscall at each file.
                Ok(n) if len + n < buf.len() => {
                    len += n;
                    break;
                }
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        let done = f(&buf[..len]);
        // A watcher scans every process: one huge environment must not stay resident in it.
        if buf.len() > 64 * 1024 {
            buf.truncate(8192);
            buf.shrink_to_fit();
        }
        Some(done)
    })
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_child_is_read_as_sysinfo_reads_it_and_a_reaped_one_is_gone() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env(crate::process::MARKER_ID, "lean-test")
            .env_remove(crate::process::MARKER_HOME)
            .env("OCX_LEAN_TEST", "1")
            .spawn()
            .unwrap();
        let pid = child.id();
        past_exec(pid);
        let lean = lean(&[pid, std::process::id()], |p| p == pid).unwrap();
        let (proc, env) = &lean[&pid];
        let sys = crate::process::Processes::all().unwrap();
        let seen = sys.get(pid).unwrap();
        assert_eq!((proc.start_time, proc.start_key), (seen.start_time, seen.start_key));
        // A child just past its exec may not have touched a page yet: this process has.
        assert!(lean[&std::process::id()].0.rss > 0);
        // Only the markers are kept.
        assert_eq!(env, &[OsString::from(format!("{}=lean-test", crate::process::MARKER_ID))]);
        // Asked without its environment: none read.
        assert!(lean[&std::process::id()].1.is_empty());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!lean_has(pid));
    }

    #[test]
    fn a_scan_finds_the_processes_holding_a_variable_and_no_other() {
        let home = format!("/nonexistent/ocx-lean-scan-{}", std::process::id());
        let var = format!("{}={home}", crate::process::MARKER_HOME);
        let mut marked =
            std::process::Command::new("sleep").arg("30").env(crate::process::MARKER_HOME, &home).spawn().unwrap();
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
        while with_file(&format!("/proc/{pid}/environ"), <[u8]>::is_empty).unwrap_or(true) {
            assert!(std::time::Instant::now() < deadline, "PID {pid} never showed an environment");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    fn lean_has(pid: u32) -> bool {
        lean(&[pid], |_| false).unwrap().contains_key(&pid)
    }
}
