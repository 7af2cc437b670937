//! `ocx logs`: the end of an instance's log (across its rotated files), `--since`, and `-f` to
//! follow it across rotations and restarts.

use std::fs::File;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};

use crate::cli::LogsArgs;
use crate::error::{Failure, code};
use crate::home::Home;
use crate::instance::log::{self, Follower, Show};
use crate::{instance, output, process, record};

/// Lines shown when neither -n nor --since says otherwise.
const DEFAULT_LINES: usize = 50;

pub fn run(home: &Home, args: LogsArgs) -> Result<()> {
    if args.follow {
        // From the start: a signal while the tail is printed ends the command as one later does.
        process::install_interrupt_handler();
    }
    let since = match &args.since {
        Some(text) => Some(log::parse_since(text).map_err(|e| anyhow!(Failure::new(code::USAGE, e)))?),
        None => None,
    };
    let path = log_of(home, args.instance.as_deref())?;
    let show = Show { timestamps: args.timestamps, since };
    // The current file stays open from here on: a rotation meanwhile is seen by the follower.
    let mut current = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    let files = log::files(&path);
    let cannot_read = || format!("cannot read {}", path.display());
    let (mut shown, mut after) = (Vec::new(), false);
    let offset = match (since, args.lines) {
        (Some(since), None) => {
            // Streamed a block at a time: what --since covers can be the whole log.
            let mut reader = log::since(&mut current, &files, since).with_context(cannot_read)?;
            let mut block = Vec::new();
            while reader.next_block(&mut block).with_context(cannot_read)? {
                shown.clear();
                show.render(&block, &mut shown, &mut after);
                output::write(&shown)?;
            }
            reader.offset().with_context(cannot_read)?
        }
        // With --since too, the last N of the lines since then: the lines are in order of time,
        // so those are the last N lines, less the ones before that time.
        (_, lines) => {
            let (stored, offset) =
                log::tail(&mut current, &files, lines.unwrap_or(DEFAULT_LINES)).with_context(cannot_read)?;
            show.render(&stored, &mut shown, &mut after);
            output::write(&shown)?;
            offset
        }
    };
    if !args.follow {
        return Ok(());
    }
    // Follow from where the tail ended, so a line written meanwhile is not skipped; until
    // Ctrl-C, SIGTERM or SIGHUP, after which what was read is printed and ocx exits 0.
    let mut follower = Follower::new(&path, current, offset);
    let mut buf = Vec::new();
    loop {
        // While lines flow, read on at once: a fast writer must not rotate past a file before
        // it was read. When nothing came, wait a little.
        if buf.is_empty() {
            if process::interrupted() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        buf.clear();
        let whole = follower.poll(&mut buf).with_context(|| format!("cannot read {}", path.display()))?;
        if !whole {
            output::note(
                "ocx: some lines were rotated away before they could be read (--log-max-size, --log-max-files)",
            );
        }
        shown.clear();
        show.render(&buf, &mut shown, &mut after);
        output::write(&shown)?;
    }
}

/// The log of the named instance (or the only running one). A stopped instance's record is
/// gone but its log stays, so an exact id with a log file is accepted too.
fn log_of(home: &Home, query: Option<&str>) -> Result<PathBuf> {
    let records = record::valid(&record::list(home)?);
    match instance::resolve::resolve_default(&records, query) {
        Ok(r) => Ok(r.log.clone()),
        Err(err) => match query.map(|id| home.log_path(id)) {
            Some(path) if record::is_valid_id(query.unwrap_or_default()) && path.is_file() => Ok(path),
            _ => Err(err),
        },
    }
}
