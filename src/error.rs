//! The errors that carry their own exit code or hint, and the one place that reports them.

use std::fmt;
use std::io;
use std::process::ExitCode;

use crate::output::note;
use crate::process;

/// Exit codes, as documented in the README and man page.
pub mod code {
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const NOT_FOUND: u8 = 3;
    pub const TIMED_OUT: u8 = 4;
    /// Ctrl-C; reported as 143 after SIGTERM and 129 after SIGHUP (`code_of`).
    pub const INTERRUPTED: u8 = 130;
}

/// An error with an exit code other than 1 and/or a hint for the user.
///
/// Commands return it inside `anyhow::Error`; `report` finds it anywhere in the chain.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    /// Empty when the command already told the user what went wrong.
    pub message: String,
    pub hint: Option<String>,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Failure { code, message: message.into(), hint: None }
    }

    /// Only an exit code: the details were already printed.
    pub fn silent(code: u8) -> Self {
        Self::new(code, "")
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// The error of a command ended by Ctrl-C, SIGTERM or SIGHUP (after it cleaned up): exit
/// 130, 143 or 129, as a shell reports a command killed by that signal (see `code_of`).
pub fn interrupted(message: impl Into<String>) -> anyhow::Error {
    anyhow::anyhow!(Failure::new(code::INTERRUPTED, message))
}

/// The exit code an error stands for.
pub fn code_of(err: &anyhow::Error) -> u8 {
    match err.chain().find_map(|e| e.downcast_ref::<Failure>()).map_or(code::FAILED, |f| f.code) {
        // Ended by a signal: Ctrl-C's 130, or SIGTERM's 143, SIGHUP's 129.
        code::INTERRUPTED => process::interrupt_code(),
        code => code,
    }
}

/// Print `error: …` (with the cause chain) and `hint: …` on stderr, and pick the exit code.
pub fn report(err: &anyhow::Error) -> ExitCode {
    // `ocx ls | head -1`: the reader went away; that is not an error worth a message.
    if err.chain().filter_map(|e| e.downcast_ref::<io::Error>()).any(process::is_closed_pipe) {
        return ExitCode::SUCCESS;
    }
    let failure = err.chain().find_map(|e| e.downcast_ref::<Failure>());
    let code = code_of(err);
    let silent = failure.is_some_and(|f| f.message.is_empty()) && err.chain().count() == 1;
    if !silent {
        note(format_args!("error: {err:#}"));
    }
    if let Some(hint) = failure.and_then(|f| f.hint.as_deref()) {
        note(format_args!("hint: {hint}"));
    }
    ExitCode::from(code)
}
