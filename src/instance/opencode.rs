//! The opencode binary: where it is found, and whether its version is one ocx speaks (1.x:
//! opencode 2 has a background service, `/api/*` routes and auth always on, and cannot be
//! tested here yet).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

use crate::error::{Failure, code};
use crate::home::{self, Home};

/// The major versions of opencode ocx speaks.
pub const SUPPORTED_MAJOR: u64 = 1;
/// The version the tests run against.
pub const TESTED: &str = "1.18.33";
/// How long `opencode --version` may take (about 0.9 s for 1.18.33 on an idle 2-core machine).
/// One that takes longer (a wrapper that ignores its arguments, a loaded machine) says nothing:
/// the server's health answer is checked too.
const VERSION_TIMEOUT: Duration = Duration::from_secs(3);
/// How long `ocx doctor` waits for `--version`.
const DIAGNOSIS_TIMEOUT: Duration = Duration::from_secs(10);
/// What `--version` said, by binary (path, size, modification time), so that only the first
/// start with a binary pays for asking it.
const CACHE_FILE: &str = "opencode-versions.json";

/// Where an opencode binary was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env,
    Path,
    HomeBin,
    /// ocx's own install (`instance::install`).
    Ocx,
}

impl Source {
    /// How `doctor` and errors say it.
    pub fn describe(self) -> &'static str {
        match self {
            Source::Flag => "from --opencode",
            Source::Env => "from OCX_OPENCODE",
            Source::Path => "on PATH",
            Source::HomeBin => "in ~/.opencode/bin",
            Source::Ocx => "ocx's own install",
        }
    }

    /// Named by the user (`--opencode`, `$OCX_OPENCODE`): used as it is, never replaced.
    pub fn explicit(self) -> bool {
        matches!(self, Source::Flag | Source::Env)
    }
}

/// What `ocx start` and `ocx install-opencode` say when no opencode is found.
pub const INSTALL_HINT: &str = "`ocx install-opencode` (or `ocx start --install-opencode`) installs the version ocx is \
     tested with into ocx's own cache directory; or name one with --opencode PATH or OCX_OPENCODE";

/// `--opencode`, else `$OCX_OPENCODE`, else `opencode` on PATH (with PATHEXT on Windows, where
/// npm installs `opencode.cmd`), else `~/.opencode/bin/opencode`, else ocx's own install.
pub fn find_opencode(explicit: Option<&Path>) -> Result<PathBuf> {
    locate(explicit)?.map(|(path, _)| path).ok_or_else(|| {
        anyhow!(
            Failure::new(
                code::FAILED,
                "cannot find opencode: OCX_OPENCODE is unset, it is not on PATH, not in ~/.opencode/bin, \
                 and ocx has not installed it"
            )
            .hint(INSTALL_HINT)
        )
    })
}

/// The binary `find_opencode` would use and where it was found; None when there is none. A
/// binary named explicitly that does not exist is an error.
pub fn locate(explicit: Option<&Path>) -> Result<Option<(PathBuf, Source)>> {
    let named = explicit
        .map(|p| (p.to_path_buf(), Source::Flag))
        .or_else(|| std::env::var_os("OCX_OPENCODE").filter(|v| !v.is_empty()).map(|p| (p.into(), Source::Env)));
    if let Some((path, from)) = named {
        let flag = if from == Source::Flag { "--opencode" } else { "OCX_OPENCODE" };
        return match path.is_file() {
            true => Ok(Some((
                std::path::absolute(&path).with_context(|| format!("cannot resolve {}", path.display()))?,
                from,
            ))),
            false => Err(anyhow!(
                Failure::new(
                    code::FAILED,
                    format!("the opencode binary {} (from {flag}) does not exist", path.display())
                )
                .hint(INSTALL_HINT)
            )),
        };
    }
    if let Some(found) = find_in(std::env::var_os("PATH"), None) {
        return Ok(Some((found, Source::Path)));
    }
    let fallback = dirs::home_dir().map(|home| home.join(".opencode").join("bin"));
    if let Some(found) = find_in(None, fallback) {
        return Ok(Some((found, Source::HomeBin)));
    }
    Ok(super::install::installed().map(|p| (p, Source::Ocx)))
}

/// `opencode` in the directories of `path_var`, else in `fallback`, as the platform finds
/// programs (executable bit on Unix; PATHEXT on Windows).
fn find_in(path_var: Option<std::ffi::OsString>, fallback: Option<PathBuf>) -> Option<PathBuf> {
    let cwd = std::env::current_dir().unwrap_or_default();
    let search = |paths: std::ffi::OsString| which::which_in("opencode", Some(paths), &cwd).ok();
    let found = path_var.and_then(search).or_else(|| fallback.and_then(|dir| search(dir.into_os_string())))?;
    Some(std::path::absolute(&found).unwrap_or(found))
}

/// What `binary --version` says (with `env` set, as the server will have it), if it says a
/// version at all; an error if it is of a major version ocx does not speak. Remembered in the
/// home for as long as the binary does not change.
pub fn check_version(home: &Home, binary: &Path, env: &BTreeMap<String, String>) -> Result<Option<String>> {
    let key = std::fs::metadata(binary).ok().map(|m| {
        let modified = m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        format!("{}|{}|{}", binary.display(), m.len(), modified.map_or(0, |d| d.as_nanos()))
    });
    let path = home.root().join(CACHE_FILE);
    let mut cache: BTreeMap<String, String> =
        std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    let known = key.as_ref().and_then(|k| cache.get(k)).cloned();
    let version = known.clone().or_else(|| version_of(binary, env));
    if let (Some(key), Some(version), None) = (key, &version, known) {
        cache.retain(|k, _| !k.starts_with(&format!("{}|", binary.display())));
        cache.insert(key, version.clone());
        // A cache that cannot be written costs the next start a second, nothing more.
        let _ = home::write_atomic(&path, &serde_json::to_vec_pretty(&cache)?);
    }
    if let Some(version) = &version {
        check_supported(version, &binary.display().to_string())?;
    }
    Ok(version)
}

/// Refuse a version whose major number is not one ocx speaks (one without numbers passes:
/// a wrapper or a development build; the server's health check says it again).
pub fn check_supported(version: &str, what: &str) -> Result<()> {
    match major(version) {
        Some(major) if major != SUPPORTED_MAJOR => Err(anyhow!(
            Failure::new(
                code::FAILED,
                format!(
                    "opencode {version} ({what}) is not supported: ocx speaks opencode {SUPPORTED_MAJOR}.x \
                     (tested with {TESTED})"
                )
            )
            .hint(format!(
                "`ocx install-opencode` installs {TESTED} for ocx alone (or `ocx start --install-opencode`); \
                 or name another with --opencode PATH or OCX_OPENCODE"
            ))
        )),
        _ => Ok(()),
    }
}

/// The major number of `1.18.33`, `v2.0.0`, `opencode 2.1.0-beta`.
fn major(version: &str) -> Option<u64> {
    let word = version.split_whitespace().find(|w| w.trim_start_matches('v').contains('.'))?;
    let word = word.trim_start_matches('v');
    let mut parts = word.split('.');
    let major = parts.next()?.parse().ok()?;
    parts.next()?.chars().next()?.is_ascii_digit().then_some(major)
}

/// What `binary --version` says, as `check_version` would see it, without writing anything:
/// the remembered answer if the home has one for this very binary, else the binary's own.
pub fn known_version(home: Option<&Home>, binary: &Path) -> Option<String> {
    let remembered = home.and_then(|home| {
        let m = std::fs::metadata(binary).ok()?;
        let modified = m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        let key = format!("{}|{}|{}", binary.display(), m.len(), modified.map_or(0, |d| d.as_nanos()));
        let cache: BTreeMap<String, String> =
            serde_json::from_slice(&std::fs::read(home.root().join(CACHE_FILE)).ok()?).ok()?;
        cache.get(&key).cloned()
    });
    // A diagnosis can wait longer than a start: the first run in a fresh home is slow.
    remembered.or_else(|| version(binary))
}

/// What `binary --version` says, with ocx's own environment, waiting as long as a diagnosis
/// may (a fresh install's first run is slow).
pub fn version(binary: &Path) -> Option<String> {
    version_within(binary, &BTreeMap::new(), DIAGNOSIS_TIMEOUT)
}

/// Whether `version` is of a major version ocx speaks (one without numbers counts as yes).
pub fn is_supported(version: &str) -> bool {
    major(version).is_none_or(|m| m == SUPPORTED_MAJOR)
}

/// The version `binary --version` prints within a bounded time, if it prints one.
fn version_of(binary: &Path, env: &BTreeMap<String, String>) -> Option<String> {
    version_within(binary, env, VERSION_TIMEOUT)
}

/// The version `binary --version` prints within `timeout`, if it prints one.
fn version_within(binary: &Path, env: &BTreeMap<String, String>, timeout: Duration) -> Option<String> {
    let mut child = Command::new(binary)
        .arg("--version")
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut out = child.stdout.take()?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = (&mut out).take(4096).read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => break,
            Ok(Some(_)) | Err(_) => return None,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    let text = reader.join().ok()?;
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    major(line).is_some().then(|| line.trim_start_matches("opencode ").trim_start_matches('v').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majors_are_read_and_only_1_is_spoken() {
        assert_eq!(major("1.18.33"), Some(1));
        assert_eq!(major("v2.0.0"), Some(2));
        assert_eq!(major("opencode 2.1.0-beta"), Some(2));
        assert_eq!(major("stand-in"), None);
        assert_eq!(major("local"), None);
        assert!(check_supported("1.18.33", "x").is_ok());
        assert!(check_supported("stand-in", "x").is_ok());
        let err = check_supported("2.0.0", "/bin/opencode").unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains("opencode 2.0.0") && message.contains("1.x"), "{message}");
        assert_eq!(crate::error::code_of(&err), code::FAILED);
    }

    /// `opencode` is found on PATH as the platform finds programs, and in the fallback directory.
    #[test]
    fn opencode_is_found_on_path_and_in_the_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let (on_path, fallback, empty) = (dir.path().join("bin"), dir.path().join("fallback"), dir.path().join("e"));
        for d in [&on_path, &fallback, &empty] {
            std::fs::create_dir(d).unwrap();
        }
        let name = format!("opencode{}", std::env::consts::EXE_SUFFIX);
        for d in [&on_path, &fallback] {
            std::fs::write(d.join(&name), "#!/bin/sh\n").unwrap();
            crate::process::make_executable(&d.join(&name)).unwrap();
        }
        let path_var = std::env::join_paths([&empty, &on_path]).unwrap();
        assert_eq!(find_in(Some(path_var), Some(fallback.clone())), Some(on_path.join(&name)));
        assert_eq!(find_in(Some(empty.clone().into_os_string()), Some(fallback.clone())), Some(fallback.join(&name)));
        assert_eq!(find_in(None, Some(empty)), None);
    }
}
