//! `ocx logs`: the end of a server's log, and `-f` to follow it.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::cli::LogsArgs;
use crate::home::Home;
use crate::{output, record};

pub fn run(home: &Home, args: LogsArgs) -> Result<()> {
    let path = log_of(home, args.instance.as_deref())?;
    let mut file = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    let (tail, mut offset) = tail(&mut file, args.lines).with_context(|| format!("cannot read {}", path.display()))?;
    output::write(&tail)?;
    if !args.follow {
        return Ok(());
    }
    // Follow from where the tail ended, so a line written meanwhile is not skipped.
    let mut buf = Vec::new();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let len = std::fs::metadata(&path).map_or(0, |m| m.len());
        if len < offset {
            // Truncated or replaced: start over from its beginning.
            file = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
            offset = 0;
        }
        file.seek(SeekFrom::Start(offset))?;
        buf.clear();
        offset += file.read_to_end(&mut buf)? as u64;
        output::write(&buf)?;
    }
}

/// The log of the named instance (or the only running one). A stopped instance's record is
/// gone but its log stays, so an exact id with a log file is accepted too.
fn log_of(home: &Home, query: Option<&str>) -> Result<PathBuf> {
    let records = record::valid(&record::list(home)?);
    match record::resolve_default(&records, query) {
        Ok(r) => Ok(r.log.clone()),
        Err(err) => match query.map(|id| home.log_path(id)) {
            Some(path) if record::is_valid_id(query.unwrap_or_default()) && path.is_file() => Ok(path),
            _ => Err(err),
        },
    }
}

/// The last `n` lines of a file, read backwards in blocks so a large log costs little; and the
/// offset they end at.
fn tail(file: &mut File, n: usize) -> std::io::Result<(Vec<u8>, u64)> {
    const BLOCK: u64 = 64 * 1024;
    let len = file.seek(SeekFrom::End(0))?;
    let mut start = len;
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // A trailing newline ends the last line; it does not start another.
        let newlines = buf.iter().filter(|&&b| b == b'\n').count() - usize::from(buf.last() == Some(&b'\n'));
        if newlines >= n || start == 0 {
            let skip = newlines.saturating_sub(n);
            let from = if newlines >= n {
                buf.iter().enumerate().filter(|(_, b)| **b == b'\n').nth(skip).map_or(0, |(i, _)| i + 1)
            } else {
                0
            };
            return Ok((buf.split_off(from), len));
        }
        let read_from = start.saturating_sub(BLOCK);
        let mut block = vec![0; (start - read_from) as usize];
        file.seek(SeekFrom::Start(read_from))?;
        file.read_exact(&mut block)?;
        block.extend_from_slice(&buf);
        buf = block;
        start = read_from;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail_of(text: &str, n: usize) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, text).unwrap();
        String::from_utf8(tail(&mut File::open(&path).unwrap(), n).unwrap().0).unwrap()
    }

    #[test]
    fn tails() {
        assert_eq!(tail_of("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail_of("a\nb\nc", 2), "b\nc");
        assert_eq!(tail_of("a\nb\nc\n", 5), "a\nb\nc\n");
        assert_eq!(tail_of("", 3), "");
        assert_eq!(tail_of("a\nb\n", 0), "");
        let big: String = (0..50_000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(tail_of(&big, 3), "line 49997\nline 49998\nline 49999\n");
    }
}
