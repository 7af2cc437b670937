//! Test-only fault hooks, compiled in only with the `testing` feature (`scripts/test` turns it
//! on): a shipped binary ignores `OCX_TEST_PAUSE_AT` and `OCX_TEST_FAIL_AT`.

use anyhow::Result;

/// With `OCX_TEST_PAUSE_AT=<point>`, ocx stops here for good (after saying
/// `ocx: paused at <point>` on stderr), so a test can SIGKILL it at exactly this point and check
/// what a crash there leaves behind.
pub fn pause(point: &str) {
    if cfg!(feature = "testing") && std::env::var_os("OCX_TEST_PAUSE_AT").is_some_and(|p| p == point) {
        crate::output::note(format_args!("ocx: paused at {point}"));
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
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
