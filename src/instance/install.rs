//! opencode installed on demand: the version ocx is tested with, from the npm registry, into
//! ocx's own cache directory (`<cache dir>/ocx/opencode/<version>/`), never a global npm prefix
//! and never PATH. npm installs into a temp directory next to that place, which is renamed into
//! it only once the binary there answers `--version`: nothing half-installed is ever found.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow};

use crate::error::{Failure, code};
use crate::instance::opencode::{self, TESTED};
use crate::output;

/// The npm package opencode is published as.
const PACKAGE: &str = "opencode-ai";

/// Where ocx keeps its own installs: `<cache dir>/ocx/opencode` (`~/.cache/ocx/opencode` on
/// Linux, honouring `XDG_CACHE_HOME`). None when the platform names no cache directory.
pub fn root() -> Option<PathBuf> {
    Some(dirs::cache_dir()?.join("ocx").join("opencode"))
}

/// The directory `version` is (or would be) installed in.
pub fn dir(version: &str) -> Option<PathBuf> {
    Some(root()?.join(version))
}

/// The binary of an install in `prefix`, where npm links it (`node_modules/.bin/opencode`, or
/// `opencode.cmd` on Windows, found as the platform finds programs).
fn binary_in(prefix: &Path) -> Option<PathBuf> {
    let bin = prefix.join("node_modules").join(".bin");
    let found = which::which_in("opencode", Some(&bin), &bin).ok()?;
    Some(std::path::absolute(&found).unwrap_or(found))
}

/// ocx's own install of the tested version, if there is one.
pub fn installed() -> Option<PathBuf> {
    binary_in(&dir(TESTED)?)
}

/// What an install did.
#[derive(Debug)]
pub struct Installed {
    pub binary: PathBuf,
    pub version: String,
    /// False when it was already there (nothing was done).
    pub fresh: bool,
}

/// Install the tested version (unless it is there already) and return its binary. npm missing
/// or failing (no registry, no network, no space) → exit 1 with npm's own last words, and
/// nothing left behind.
pub fn install() -> Result<Installed> {
    if let Some(binary) = installed() {
        return Ok(Installed { binary, version: TESTED.to_string(), fresh: false });
    }
    let target = dir(TESTED).ok_or_else(|| anyhow!("this platform names no cache directory to install opencode in"))?;
    let parent = target.parent().expect("the install dir has a parent");
    let npm = which::which("npm").map_err(|_| {
        anyhow!(
            Failure::new(code::FAILED, format!("cannot install opencode {TESTED}: npm is not on PATH"))
                .hint(format!("install Node.js (it brings npm), or install {PACKAGE}@{TESTED} yourself and name it with --opencode PATH or OCX_OPENCODE"))
        )
    })?;
    std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    remove_stale_temp_dirs(parent);
    // In the same directory as its final place, so the rename is one step on one filesystem;
    // removed when dropped, whatever fails (or is interrupted) before the rename.
    let temp = tempfile::Builder::new()
        .prefix(&format!(".install-{TESTED}-"))
        .tempdir_in(parent)
        .with_context(|| format!("cannot create a temp directory in {}", parent.display()))?;
    let spinner = output::Spinner::start(format!("installing opencode {TESTED} with npm"));
    let result = run_npm(&npm, temp.path());
    drop(spinner);
    result?;
    let binary = binary_in(temp.path()).ok_or_else(|| {
        anyhow!(Failure::new(
            code::FAILED,
            format!("npm installed {PACKAGE}@{TESTED} but no opencode binary came with it")
        ))
    })?;
    match opencode::version(&binary) {
        Some(v) if v == TESTED => {}
        other => {
            return Err(anyhow!(Failure::new(
                code::FAILED,
                format!(
                    "the opencode npm installed does not say it is {TESTED} (it says {})",
                    other.as_deref().unwrap_or("nothing")
                )
            )));
        }
    }
    let temp_path = temp.keep();
    if let Err(err) = std::fs::rename(&temp_path, &target) {
        let _ = std::fs::remove_dir_all(&temp_path);
        // Another ocx finished the same install first: use its copy.
        if let Some(binary) = installed() {
            return Ok(Installed { binary, version: TESTED.to_string(), fresh: false });
        }
        return Err(err).with_context(|| format!("cannot rename {} to {}", temp_path.display(), target.display()));
    }
    let binary = installed().ok_or_else(|| anyhow!("the install at {} has no opencode binary", target.display()))?;
    Ok(Installed { binary, version: TESTED.to_string(), fresh: true })
}

/// How old a temp dir of an install must be to count as left behind (an ocx SIGKILLed mid-install
/// cannot remove its own); a real install takes well under a minute.
const STALE_AFTER: Duration = Duration::from_secs(3600);

/// Remove the temp dirs of installs that were killed before they could clean up.
fn remove_stale_temp_dirs(parent: &Path) {
    let now = SystemTime::now();
    for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > STALE_AFTER);
        if old && entry.file_name().to_string_lossy().starts_with(".install-") {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// `npm install --prefix PREFIX opencode-ai@TESTED`, quietly; npm's last lines are the error.
fn run_npm(npm: &Path, prefix: &Path) -> Result<()> {
    let mut child = Command::new(npm)
        .args(["install", "--prefix"])
        .arg(prefix)
        .args(["--no-audit", "--no-fund", "--no-save", "--loglevel=error", &format!("{PACKAGE}@{TESTED}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", npm.display()))?;
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let reader = std::thread::spawn(move || {
        let mut said = String::new();
        let _ = (&mut stderr).take(1 << 20).read_to_string(&mut said);
        said
    });
    // Polled, so that Ctrl-C or a TERM to ocx alone also ends npm before the temp dir goes.
    let status = loop {
        if crate::process::interrupted() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(crate::error::interrupted("the install of opencode was interrupted; nothing was installed"));
        }
        match child.try_wait().with_context(|| format!("cannot wait for {}", npm.display()))? {
            Some(status) => break status,
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let said = reader.join().unwrap_or_default();
    if status.success() {
        return Ok(());
    }
    let tail = npm_error(&said);
    Err(anyhow!(Failure::new(code::FAILED, format!("npm could not install {PACKAGE}@{TESTED}: {tail}")).hint(
        "check that the npm registry can be reached (npm's `registry` and `proxy` settings); nothing was installed"
    )))
}

/// The telling line of npm's error output: the first `npm error` line that is not a stack
/// frame or a log pointer, else the last line.
fn npm_error(said: &str) -> String {
    let lines: Vec<&str> = said.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let telling = lines.iter().find_map(|l| {
        let rest = l.strip_prefix("npm error")?.trim();
        let boring = rest.is_empty()
            || rest.starts_with("A complete log")
            || rest.starts_with("at ")
            || rest.starts_with('{')
            || rest.starts_with('}')
            || rest.contains(": '")
            || ["code ", "syscall ", "errno ", "path ", "dest "].iter().any(|w| rest.starts_with(w));
        (!boring).then(|| rest.to_string())
    });
    telling.or_else(|| lines.last().map(|l| l.to_string())).unwrap_or_else(|| "it failed and said nothing".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npm_errors_are_boiled_down_to_their_telling_line() {
        let said = "npm error code ECONNREFUSED\nnpm error syscall connect\nnpm error errno ECONNREFUSED\n\
                    npm error FetchError: request to http://127.0.0.1:9/opencode-ai failed, reason: connect ECONNREFUSED\n\
                    npm error A complete log of this run can be found in: /x.log\n";
        assert_eq!(
            npm_error(said),
            "FetchError: request to http://127.0.0.1:9/opencode-ai failed, reason: connect ECONNREFUSED"
        );
        assert_eq!(npm_error(""), "it failed and said nothing");
        assert_eq!(npm_error("something odd\n"), "something odd");
    }
}
