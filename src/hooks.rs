//! Test-only fault hooks, compiled in only with the `testing` feature (`scripts/test` turns it
//! on): a shipped binary ignores `OCX_TEST_PAUSE_AT` and `OCX_TEST_FAIL_AT`.

use anyhow::Result;

/// With `OCX_TEST_PAUSE_AT=<point>`, ocx stops here (after saying `ocx: paused at <point>` on
/// stderr), so a test can SIGKILL it at exactly this point and check what a crash there leaves
/// behind; for good, unless `OCX_TEST_RESUME=<file>` is set: then it also writes `<file>.at`
/// and goes on once `<file>` exists, so a test can pin the order of two things (a stop and a
/// crash), also in a watcher, whose stderr nobody reads.
pub fn pause(point: &str) {
    if cfg!(feature = "testing") && std::env::var_os("OCX_TEST_PAUSE_AT").is_some_and(|p| p == point) {
        crate::output::note(format_args!("ocx: paused at {point}"));
        let resume = std::env::var_os("OCX_TEST_RESUME").map(std::path::PathBuf::from);
        if let Some(resume) = &resume {
            let mut at = resume.clone().into_os_string();
            at.push(".at");
            let _ = std::fs::write(at, point);
        }
        loop {
            match &resume {
                Some(resume) if resume.exists() => return,
                Some(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                None => std::thread::sleep(std::time::Duration::from_secs(3600)),
            }
        }
    }
}

/// With `OCX_TEST_FAIL_AT=<point>`, an error here, as if the step had failed: a test checks that
/// every error path cleans up after itself.
pub fn fail(point: &str) -> Result<()> {
    if cfg!(feature = "testing") && std::env::var_os("OCX_TEST_FAIL_AT").is_some_and(|p| p == point) {
        anyhow::bail!("injected failure at {point}");
    }
    Ok(())
}
