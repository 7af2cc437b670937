//! The integration tests: one binary, driving the built `ocx` against real opencode servers.

#[path = "../support/mod.rs"]
mod support;

mod basics;
mod batch;
mod completions;
mod edges;
mod eyes;
mod fleet;
mod gc;
mod headless;
mod lifecycle;
mod logs;
mod remote;
mod run;
mod setup;
mod smoke;
mod supervise;
mod sweep;
mod top;
mod windows;
mod worktrees;
