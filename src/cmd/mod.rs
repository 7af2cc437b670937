//! One module per subcommand, and the dispatch between them.

mod attach;
pub mod completions;
mod gc;
mod logs;
mod ls;
mod man;
mod run;
mod start;
mod stop;
mod url;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Result;

use crate::cli::{Cli, Command};
use crate::home::Home;

pub fn run(cli: Cli) -> Result<()> {
    let home = || Home::open(cli.home.as_deref());
    match cli.command {
        Command::Start(args) => start::run(&home()?, args),
        Command::Ls(args) => ls::run(&home()?, args),
        Command::Run(args) => run::run(&home()?, args),
        Command::Stop(args) => stop::run(&home()?, args),
        Command::Logs(args) => logs::run(&home()?, args),
        Command::Attach(args) => attach::run(&home()?, args),
        Command::Url(args) => url::run(&home()?, args),
        Command::Gc(args) => gc::run(&home()?, args),
        Command::Completions(args) => completions::run(args),
        Command::Man(args) => man::run(args),
    }
}

/// A test hook: with `OCX_TEST_PAUSE_AT=<point>` in the environment, ocx stops here for good
/// (after saying `ocx: paused at <point>` on stderr), so a test can SIGKILL it at exactly this
/// point and check what a crash there leaves behind.
pub fn pause_point(point: &str) {
    if std::env::var_os("OCX_TEST_PAUSE_AT").is_some_and(|p| p == point) {
        eprintln!("ocx: paused at {point}");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

/// `f` over every item on at most `limit` threads, results in the items' order.
pub fn parallel_map<T: Sync, R: Send>(items: &[T], limit: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    if items.len() <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let mut results: Vec<(usize, R)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..limit.clamp(1, items.len()))
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break done };
                        done.push((i, f(item)));
                    }
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("a worker thread panicked")).collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn parallel_map_keeps_order() {
        let items: Vec<u32> = (0..100).collect();
        assert_eq!(super::parallel_map(&items, 7, |x| x * 2), items.iter().map(|x| x * 2).collect::<Vec<_>>());
    }
}
