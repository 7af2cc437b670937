//! Where ocx keeps its state: the home directory, its locks, and atomic file writes.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use fs4::{FileExt, TryLockError};

use crate::error::{Failure, code};
use crate::process;

/// How long a short critical section over all records may keep others waiting.
const STORE_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// The state directory: `instances/<id>.json`, `logs/<id>.log`, `locks/`.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// Open (creating, mode 0700) the home: `explicit` (from `--home` or `$OCX_HOME`), else
    /// the platform's state directory + `ocx`.
    pub fn open(explicit: Option<&Path>) -> Result<Home> {
        let root = root_path(explicit)?;
        for dir in [root.clone(), root.join("instances"), root.join("logs"), root.join("locks")] {
            process::create_private_dir_all(&dir)
                .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
        }
        // One spelling of the path, so the OCX_HOME marker compares equal across invocations.
        let root = dunce::canonicalize(&root).with_context(|| format!("cannot resolve {}", root.display()))?;
        Ok(Home { root })
    }

    /// The home if it exists, without creating anything (for shell completion).
    pub fn existing(explicit: Option<&Path>) -> Option<Home> {
        let root = dunce::canonicalize(root_path(explicit).ok()?).ok()?;
        root.join("instances").is_dir().then_some(Home { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn instances_dir(&self) -> PathBuf {
        self.root.join("instances")
    }

    pub fn record_path(&self, id: &str) -> PathBuf {
        self.instances_dir().join(format!("{id}.json"))
    }

    pub fn log_path(&self, id: &str) -> PathBuf {
        self.logs_dir().join(format!("{id}.log"))
    }

    /// The store-wide lock, for short sections that must see all records at once: choosing a
    /// unique id, name and port and creating the record; gc's survey and moving files aside.
    /// Updating or deleting an existing record needs only that instance's lock.
    pub fn lock_store(&self) -> Result<Lock> {
        Lock::acquire(&self.locks_dir().join("store.lock"), "the instance store", STORE_LOCK_TIMEOUT)
    }

    /// The lock held while an instance is being started or stopped, and for any write to its
    /// record after it was created.
    pub fn lock_instance(&self, id: &str, timeout: Duration) -> Result<Lock> {
        Lock::acquire(&self.instance_lock_path(id), &format!("instance {id}"), timeout)
    }

    /// Held around each `git worktree add`/`remove` and branch deletion of ocx: git takes
    /// locks of its own in the repository (`.git/config`, refs), and several starts or stops at
    /// once (`--count`, `stop --all`) would otherwise fail on them.
    pub fn lock_git(&self) -> Result<Lock> {
        Lock::acquire(&self.locks_dir().join("git.lock"), "git worktrees", Duration::from_secs(60))
    }

    /// The instance's lock if no other ocx holds it right now, else None.
    pub fn try_lock_instance(&self, id: &str) -> Result<Option<Lock>> {
        match self.lock_instance(id, Duration::ZERO) {
            Ok(lock) => Ok(Some(lock)),
            Err(err) if err.downcast_ref::<Failure>().is_some_and(|f| f.code == code::TIMED_OUT) => Ok(None),
            Err(err) => Err(err),
        }
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    pub fn locks_dir(&self) -> PathBuf {
        self.root.join("locks")
    }

    /// Remove an instance's lock file once its record is gone. Whoever still waits on the old
    /// file gets the lock, finds no record, and reports the instance gone.
    pub fn remove_instance_lock(&self, id: &str) {
        let _ = std::fs::remove_file(self.instance_lock_path(id));
    }

    fn instance_lock_path(&self, id: &str) -> PathBuf {
        self.locks_dir().join(format!("{id}.lock"))
    }
}

/// `explicit` if given and not empty, else the platform's state directory + `ocx`; absolute.
pub fn root_path(explicit: Option<&Path>) -> Result<PathBuf> {
    let root = match explicit.filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => p.to_path_buf(),
        None => dirs::state_dir()
            .or_else(dirs::data_local_dir)
            .context("cannot tell where to keep state on this system; set OCX_HOME")?
            .join("ocx"),
    };
    std::path::absolute(&root).with_context(|| format!("invalid home {}", root.display()))
}

/// An exclusive advisory lock, released when dropped (or when the process dies).
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl Lock {
    fn acquire(path: &Path, what: &str, timeout: Duration) -> Result<Lock> {
        let file =
            process::open_lock_file(path).with_context(|| format!("cannot open lock file {}", path.display()))?;
        let deadline = Instant::now() + timeout;
        loop {
            match FileExt::try_lock(&file) {
                Ok(()) => return Ok(Lock { _file: file }),
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(anyhow!(
                        Failure::new(
                            code::TIMED_OUT,
                            format!("timed out after {}s waiting for the lock on {what}", timeout.as_secs_f64())
                        )
                        .hint(format!("another ocx is working on it; the lock file is {}", path.display()))
                    ));
                }
                Err(TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("cannot lock {}", path.display()));
                }
            }
        }
    }
}

/// Write `bytes` to `path` so that a reader sees the old file or the new one, never a part:
/// a private temp file in the same directory, written, synced, renamed over `path`.
/// The temp file is removed if any step fails.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().context("a file to write needs a parent directory")?;
    let name = path.file_name().context("a file to write needs a name")?.to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.{}.tmp", std::process::id(), crate::token::random(4)));
    let result = (|| -> std::io::Result<()> {
        let mut file = process::create_private_file(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        rename_over(&tmp, path)?;
        process::sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

/// How long `rename_over` keeps trying while a file is held open elsewhere.
const RENAME_RETRY: Duration = Duration::from_millis(250);

/// Rename `from` over `to`. Where a rename cannot replace a file that someone has open (Wine;
/// Windows on FAT, exFAT and network drives), or a virus scanner still holds the new file, it
/// fails with access denied or a sharing violation until the other handle is closed, which for
/// ocx's own readers of a record is a moment: try again every millisecond for a bounded while.
/// Where those errors are permanent (Unix, a read-only target) the last one is returned.
fn rename_over(from: &Path, to: &Path) -> std::io::Result<()> {
    let deadline = Instant::now() + RENAME_RETRY;
    loop {
        match std::fs::rename(from, to) {
            Err(e) if process::is_held_open(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1))
            }
            result => return result,
        }
    }
}

/// Whether a file name is one of `write_atomic`'s temp files.
pub fn is_temp_file(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

/// The PID of the process that created a temp file of `write_atomic` (it is in the name).
pub fn temp_file_writer(name: &str) -> Option<u32> {
    name.strip_suffix(".tmp")?.rsplit('.').nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.json")]);
    }

    /// Wine's rename (and Windows' on FAT and network drives) refuses to replace a file that is
    /// open; a reader holds a record open only for a moment, and the write waits it out.
    #[test]
    fn atomic_write_replaces_a_file_a_reader_holds_open_for_a_moment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_atomic(&path, b"one").unwrap();
        let reader = File::open(&path).unwrap();
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            drop(reader);
        });
        write_atomic(&path, b"two").unwrap();
        closer.join().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
    }

    #[test]
    fn temp_files_name_their_writer() {
        assert_eq!(temp_file_writer(".abc123.json.4242.x7k2.tmp"), Some(4242));
        assert_eq!(temp_file_writer(".abc123.json.tmp"), None);
        assert_eq!(temp_file_writer("abc123.json"), None);
    }

    #[test]
    fn failed_atomic_write_removes_its_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // Renaming a file over a non-empty directory fails after the temp file was written.
        let target = dir.path().join("busy");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("x"), b"x").unwrap();
        assert!(write_atomic(&target, b"data").is_err());
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("busy")]);
    }

    #[test]
    fn store_lock_times_out_with_exit_code_4() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(Some(dir.path())).unwrap();
        let _held = home.lock_instance("abc123", Duration::from_secs(1)).unwrap();
        let err = home.lock_instance("abc123", Duration::from_millis(50)).unwrap_err();
        let failure = err.downcast_ref::<Failure>().unwrap();
        assert_eq!(failure.code, code::TIMED_OUT);
        assert!(failure.message.contains("instance abc123"), "{}", failure.message);
    }
}
