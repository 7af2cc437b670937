//! An instance's log: `logs/<id>.log`, rotated by rename to `<id>.log.1`, `.2`, … and capped.
//!
//! The watcher is the only writer. Every line is stored as `<UTC time> <line>` (the time it
//! reached the watcher, RFC 3339 with milliseconds), so `ocx logs --since` works for every line,
//! the server's own and ocx's markers alike; `ocx logs` strips the time unless asked for it.
//! Rotation renames files and starts a new one between two lines (never copy-then-truncate,
//! which loses what is written meanwhile), so the retained lines are contiguous and the files
//! of one instance never hold much more than `max_size × max_files`.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::process;

/// `2026-11-22T02:42:44.676Z ` is this long.
const STAMP_LEN: usize = 25;

/// The log's files, newest first: `<id>.log`, `<id>.log.1`, `<id>.log.2`, …
pub fn files(current: &Path) -> Vec<PathBuf> {
    let mut files = vec![current.to_path_buf()];
    for n in 1.. {
        let rotated = rotated(current, n);
        if !rotated.exists() {
            break;
        }
        files.push(rotated);
    }
    files
}

fn rotated(current: &Path, n: u32) -> PathBuf {
    let mut name = current.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Whether a file name in `logs/` belongs to instance `id`: its log or a rotated one.
pub fn belongs_to(file_name: &str, id: &str) -> bool {
    file_name.strip_prefix(id).and_then(|rest| rest.strip_prefix(".log")).is_some_and(|rest| {
        rest.is_empty()
            || rest.strip_prefix('.').is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// The watcher's end of the log: whole lines, each with its time, rotated before a line that
/// would take the file past `max_size`.
pub struct Writer {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    max_files: u32,
    /// The end of the last chunk when it did not end a line: written once the line is whole.
    partial: Vec<u8>,
    /// Scratch space for one chunk's lines with their times.
    out: Vec<u8>,
}

impl Writer {
    /// Append to the log at `path` (created private if missing).
    pub fn open(path: &Path, max_size: u64, max_files: u32) -> io::Result<Writer> {
        let file = process::open_private_log(path)?;
        let size = file.metadata()?.len();
        Ok(Writer {
            path: path.to_path_buf(),
            file,
            size,
            max_size: max_size.max(1),
            max_files: max_files.max(1),
            partial: Vec::new(),
            out: Vec::new(),
        })
    }

    /// Write what the server printed; a line without its end yet waits for the next chunk.
    pub fn write_chunk(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.partial.extend_from_slice(chunk);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            // A line without an end for this long is written as it is.
            return if self.partial.len() >= 64 * 1024 { self.flush_partial() } else { Ok(()) };
        };
        let rest = self.partial.split_off(end + 1);
        let lines = std::mem::replace(&mut self.partial, rest);
        self.write_lines(&lines)
    }

    /// Write a line of ocx's own (a marker such as a restart), after anything still partial.
    pub fn write_line(&mut self, line: &str) -> io::Result<()> {
        self.flush_partial()?;
        self.write_lines(format!("{line}\n").as_bytes())
    }

    /// Write a line that never got its end (the server exited mid-line).
    pub fn flush_partial(&mut self) -> io::Result<()> {
        if self.partial.is_empty() {
            return Ok(());
        }
        let mut line = std::mem::take(&mut self.partial);
        line.push(b'\n');
        self.write_lines(&line)
    }

    /// `lines` ends with a newline. Each gets the time now; the file is rotated between two
    /// lines whenever the next would take it past the maximum size.
    fn write_lines(&mut self, lines: &[u8]) -> io::Result<()> {
        let stamp = stamp(SystemTime::now());
        self.out.clear();
        for line in lines.split_inclusive(|&b| b == b'\n') {
            let len = (STAMP_LEN + line.len()) as u64;
            if self.size + self.out.len() as u64 + len > self.max_size && self.size + self.out.len() as u64 > 0 {
                let pending = std::mem::take(&mut self.out);
                self.file.write_all(&pending)?;
                self.size += pending.len() as u64;
                self.out = pending;
                self.out.clear();
                self.rotate()?;
            }
            self.out.extend_from_slice(stamp.as_bytes());
            self.out.extend_from_slice(line);
        }
        self.file.write_all(&self.out)?;
        self.size += self.out.len() as u64;
        Ok(())
    }

    /// `.N-1` → `.N` (the oldest falls off), …, the current file → `.1`, then a new current file.
    fn rotate(&mut self) -> io::Result<()> {
        if self.max_files == 1 {
            // No rotated files are kept: start the one file afresh (a new file, not a truncation,
            // so a reader that has it open still reads it whole). Renamed aside first: on
            // Windows a deleted file that is still open (this writer's own handle, a reader's)
            // keeps its name until the last handle is closed, and opening the name again would
            // append to it (Wine; Windows without POSIX delete semantics: FAT, network drives).
            let aside = rotated(&self.path, 1);
            std::fs::rename(&self.path, &aside)?;
            std::fs::remove_file(&aside)?;
        } else {
            for n in (1..self.max_files - 1).rev() {
                let from = rotated(&self.path, n);
                if from.exists() {
                    std::fs::rename(&from, rotated(&self.path, n + 1))?;
                }
            }
            std::fs::rename(&self.path, rotated(&self.path, 1))?;
        }
        self.file = process::open_private_log(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// `2026-11-22T02:42:44.676Z ` for a time.
fn stamp(at: SystemTime) -> String {
    format!("{} ", humantime::format_rfc3339_millis(at))
}

/// A stored line's time and text: the text alone for a line without a time (written by an ocx
/// before lines had one).
pub fn split_stamp(line: &[u8]) -> (Option<SystemTime>, &[u8]) {
    if line.len() >= STAMP_LEN
        && line[STAMP_LEN - 1] == b' '
        && let Ok(text) = std::str::from_utf8(&line[..STAMP_LEN - 1])
        && let Ok(at) = humantime::parse_rfc3339(text)
    {
        return (Some(at), &line[STAMP_LEN..]);
    }
    (None, line)
}

/// How `ocx logs` shows stored lines.
#[derive(Debug, Clone, Copy)]
pub struct Show {
    pub timestamps: bool,
    /// Only lines from this time on (lines without a time go with the line before them).
    pub since: Option<SystemTime>,
}

impl Show {
    /// The lines of `bytes` as shown, appended to `out`. `after` tells whether the line before
    /// `bytes` passed the `since` filter (for lines without a time of their own).
    pub fn render(&self, bytes: &[u8], out: &mut Vec<u8>, after: &mut bool) {
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            let (at, text) = split_stamp(line);
            if let (Some(since), Some(at)) = (self.since, at) {
                *after = at >= since;
            }
            if self.since.is_some() && !*after {
                continue;
            }
            out.extend_from_slice(if self.timestamps { line } else { text });
        }
    }
}

/// Logs are read in blocks of this size, forwards and backwards.
const BLOCK: u64 = 64 * 1024;

/// The last `n` lines across the log's files, oldest first: the current file (open as
/// `current`) and, when it holds fewer, the rotated ones (`files`, newest first, the current
/// one first). Also the offset in the current file they end at.
pub fn tail(current: &mut File, files: &[PathBuf], n: usize) -> io::Result<(Vec<u8>, u64)> {
    let (newest, offset) = tail_of(current, n)?;
    let mut want = n - newest.split_inclusive(|&b| b == b'\n').count().min(n);
    let mut chunks = vec![newest];
    for path in files.iter().skip(1) {
        if want == 0 {
            break;
        }
        let Ok(mut file) = File::open(path) else { continue };
        let (bytes, _) = tail_of(&mut file, want)?;
        want -= bytes.split_inclusive(|&b| b == b'\n').count().min(want);
        chunks.push(bytes);
    }
    Ok((chunks.into_iter().rev().collect::<Vec<_>>().concat(), offset))
}

/// The log from its first line stamped at or after `since` to the end of the current file (open
/// as `current`; `files` as for `tail`). Lines are in order of time: the rotated files that end
/// before `since` are skipped, the one it falls in is searched. The reader may start up to a
/// block early: the caller filters the lines by their times.
pub fn since<'a>(current: &'a mut File, files: &[PathBuf], since: SystemTime) -> io::Result<Reader<'a>> {
    let mut older = VecDeque::new();
    for path in files.iter().skip(1) {
        let Ok(mut file) = File::open(path) else { continue };
        if split_stamp(&tail_of(&mut file, 1)?.0).0.is_some_and(|at| at < since) {
            break;
        }
        older.push_front(file);
    }
    for file in older.iter_mut().skip(1).chain([&mut *current]) {
        file.seek(SeekFrom::Start(0))?;
    }
    seek_since(older.front_mut().unwrap_or(&mut *current), since)?;
    Ok(Reader { older, current, carry: Vec::new() })
}

/// The log from a point to the end of its current file, across its files, in blocks of lines.
pub struct Reader<'a> {
    /// Rotated files still to read, oldest first (the first one positioned), then `current`.
    older: VecDeque<File>,
    current: &'a mut File,
    /// What was read past the last line end.
    carry: Vec<u8>,
}

impl Reader<'_> {
    /// The next whole lines into `block`, replacing what it held (a last line without its end
    /// comes as it is); false at the end.
    pub fn next_block(&mut self, block: &mut Vec<u8>) -> io::Result<bool> {
        block.clear();
        loop {
            let file = self.older.front_mut().unwrap_or(&mut *self.current);
            if file.take(BLOCK).read_to_end(&mut self.carry)? == 0 {
                if self.older.pop_front().is_some() {
                    continue;
                }
                std::mem::swap(block, &mut self.carry);
                return Ok(!block.is_empty());
            }
            if let Some(end) = self.carry.iter().rposition(|&b| b == b'\n') {
                block.extend_from_slice(&self.carry[..=end]);
                self.carry.drain(..=end);
                return Ok(true);
            }
        }
    }

    /// The offset in the current file reading has reached.
    pub fn offset(&mut self) -> io::Result<u64> {
        self.current.stream_position()
    }
}

/// Put `file` at most a block before its first line stamped at or after `since`: a binary
/// search over byte offsets. `lo` stays 0 or the start of a line stamped before `since`.
fn seek_since(file: &mut (impl Read + Seek), since: SystemTime) -> io::Result<()> {
    let (mut lo, mut hi) = (0, file.seek(SeekFrom::End(0))?);
    while lo + BLOCK < hi {
        let mid = lo + (hi - lo) / 2;
        match next_stamp(file, mid)? {
            Some((start, at)) if at < since => lo = start,
            _ => hi = mid,
        }
    }
    file.seek(SeekFrom::Start(lo)).map(drop)
}

/// The start and time of the first stamped line that starts after `from`; None when there is
/// none within a block (lines without a time are from an ocx before they had one).
fn next_stamp(file: &mut (impl Read + Seek), from: u64) -> io::Result<Option<(u64, SystemTime)>> {
    file.seek(SeekFrom::Start(from))?;
    let mut reader = BufReader::new(file);
    let (mut at, mut line) = (from + reader.skip_until(b'\n')? as u64, Vec::new());
    while at < from + BLOCK && reader.read_until(b'\n', &mut line)? > 0 {
        if let (Some(time), _) = split_stamp(&line) {
            return Ok(Some((at, time)));
        }
        at += line.len() as u64;
        line.clear();
    }
    Ok(None)
}

/// The last `n` lines of a file and the offset they end at. Read backwards a block at a time
/// until the blocks hold `n` line ends, each block read once and joined once at the end: the
/// cost is that of the lines returned (plus a block), however large the file.
pub fn tail_of(file: &mut (impl Read + Seek), n: usize) -> io::Result<(Vec<u8>, u64)> {
    let len = file.seek(SeekFrom::End(0))?;
    // A trailing newline ends the last line; it does not start another.
    let (mut start, mut blocks, mut newlines, mut trailing) = (len, Vec::<Vec<u8>>::new(), 0, 0);
    while newlines - trailing < n && start > 0 {
        let read_from = start.saturating_sub(BLOCK);
        let mut block = vec![0; (start - read_from) as usize];
        file.seek(SeekFrom::Start(read_from))?;
        file.read_exact(&mut block)?;
        if blocks.is_empty() {
            trailing = usize::from(block.last() == Some(&b'\n'));
        }
        newlines += block.iter().filter(|&&b| b == b'\n').count();
        blocks.push(block);
        start = read_from;
    }
    // The blocks before the oldest held fewer than `n` line ends: the tail starts in it.
    if let Some(oldest) = blocks.last_mut()
        && newlines - trailing >= n
    {
        let skip = newlines - trailing - n;
        let from = oldest.iter().enumerate().filter(|(_, b)| **b == b'\n').nth(skip).map_or(0, |(i, _)| i + 1);
        oldest.drain(..from);
    }
    blocks.reverse();
    Ok((blocks.concat(), len))
}

/// Follows the current log file from an offset, across rotations: when the path names a new
/// file, the rest of the old one (still open) is read first, then any file rotated in between,
/// then the new one from its start.
pub struct Follower {
    path: PathBuf,
    file: File,
    offset: u64,
}

impl Follower {
    pub fn new(path: &Path, file: File, offset: u64) -> Follower {
        Follower { path: path.to_path_buf(), file, offset }
    }

    /// Append to `buf` what was written since the last call. False when some of it was
    /// rotated away (past the last kept file) before it could be read.
    pub fn poll(&mut self, buf: &mut Vec<u8>) -> io::Result<bool> {
        self.read_rest(buf)?;
        let open = same_file::Handle::from_file(self.file.try_clone()?)?;
        // NotFound: between a rotation's rename and the new file; the next poll sees it.
        let Ok(now) = same_file::Handle::from_path(&self.path) else { return Ok(true) };
        if now == open {
            return Ok(true);
        }
        // Rotated away: the open file is now `.k`, and `.k-1` … `.1` came after it, whole. If
        // it fell off the end, every kept file came after it (some in between are lost).
        let kept: Vec<PathBuf> = (1..).map(|n| rotated(&self.path, n)).take_while(|p| p.exists()).collect();
        let found = kept.iter().position(|p| same_file::Handle::from_path(p).is_ok_and(|h| h == open));
        for path in kept[..found.unwrap_or(kept.len())].iter().rev() {
            if let Ok(mut file) = File::open(path) {
                file.read_to_end(buf)?;
            }
        }
        self.file = File::open(&self.path)?;
        self.offset = 0;
        self.read_rest(buf)?;
        Ok(found.is_some())
    }

    fn read_rest(&mut self, buf: &mut Vec<u8>) -> io::Result<()> {
        let len = self.file.metadata()?.len();
        if len < self.offset {
            // Truncated in place by someone else: start over.
            self.offset = 0;
        }
        self.file.seek(SeekFrom::Start(self.offset))?;
        self.offset += self.file.read_to_end(buf)? as u64;
        Ok(())
    }
}

/// How long ago, as `ocx logs --since` takes it: `10m`, `2h`, `1h30m`, `45s`; or an RFC 3339 time.
pub fn parse_since(text: &str) -> Result<SystemTime, String> {
    if let Ok(at) = humantime::parse_rfc3339_weak(text) {
        return Ok(at);
    }
    let ago: Duration = humantime::parse_duration(text).map_err(|e| {
        format!("{text:?} is neither a duration such as 10m nor a time such as 2026-11-22T10:00:00Z ({e})")
    })?;
    Ok(SystemTime::now() - ago)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }

    fn numbers(text: &str) -> Vec<u64> {
        text.lines().map(|l| l[STAMP_LEN..].trim().parse().unwrap()).collect()
    }

    #[test]
    fn lines_get_times_and_partial_lines_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut w = Writer::open(&path, 1 << 20, 3).unwrap();
        w.write_chunk(b"one\ntw").unwrap();
        w.write_chunk(b"o\nthr").unwrap();
        w.write_line("--- ocx: marker").unwrap();
        let text = read(&path);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        let texts: Vec<&[u8]> = lines.iter().map(|l| split_stamp(l.as_bytes()).1).collect();
        assert_eq!(texts, [&b"one"[..], b"two", b"thr", b"--- ocx: marker"]);
        assert!(split_stamp(lines[0].as_bytes()).0.is_some());
        assert_eq!(split_stamp(b"no time here").0, None);
    }

    #[test]
    fn rotation_keeps_every_line_and_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.log");
        let (max_size, max_files) = (2000, 3);
        let mut w = Writer::open(&path, max_size, max_files).unwrap();
        let mut chunk = Vec::new();
        for i in 0..5000u64 {
            chunk.extend_from_slice(format!("{i}\n").as_bytes());
            if i % 37 == 0 {
                // Chunks that end mid-line, as a pipe delivers them.
                let cut = chunk.len() - 1;
                w.write_chunk(&chunk[..cut]).unwrap();
                chunk.drain(..cut);
            }
        }
        w.write_chunk(&chunk).unwrap();
        let files = files(&path);
        assert_eq!(files.len(), 3, "{files:?}");
        let longest_line = (STAMP_LEN + 5) as u64;
        let total: u64 = files.iter().map(|f| std::fs::metadata(f).unwrap().len()).sum();
        assert!(total <= max_size * u64::from(max_files) + longest_line, "{total}");
        // Oldest file first, the numbers run on without a gap, up to the last one written.
        let all: Vec<u64> = files.iter().rev().flat_map(|f| numbers(&read(f))).collect();
        assert!(all.windows(2).all(|w| w[1] == w[0] + 1), "a line was lost at a rotation");
        assert_eq!(*all.last().unwrap(), 4999);
        // The tail spans files when the current one is short.
        let n = numbers(&read(&path)).len() + 5;
        let (tail, _) = tail(&mut File::open(&path).unwrap(), &files, n).unwrap();
        let tail = String::from_utf8(tail).unwrap();
        assert_eq!(numbers(&tail), (5000 - n as u64..5000).collect::<Vec<_>>());
    }

    #[test]
    fn one_file_only_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut w = Writer::open(&path, 100, 1).unwrap();
        for i in 0..100 {
            w.write_line(&format!("line {i}")).unwrap();
        }
        assert_eq!(files(&path).len(), 1);
        assert!(std::fs::metadata(&path).unwrap().len() <= 100);
    }

    #[test]
    fn since_and_timestamps_filter_what_is_shown() {
        let now = SystemTime::now();
        let old = stamp(now - Duration::from_secs(3600));
        let new = stamp(now);
        let stored = format!("{old}old\nno time, goes with old\n{new}new\nno time, goes with new\n");
        let show = Show { timestamps: false, since: Some(now - Duration::from_secs(60)) };
        let (mut out, mut after) = (Vec::new(), false);
        show.render(stored.as_bytes(), &mut out, &mut after);
        assert_eq!(String::from_utf8(out).unwrap(), "new\nno time, goes with new\n");
        let all = Show { timestamps: true, since: None };
        let (mut out, mut after) = (Vec::new(), false);
        all.render(stored.as_bytes(), &mut out, &mut after);
        assert_eq!(String::from_utf8(out).unwrap(), stored);
        assert!(parse_since("10m").unwrap() < now);
        assert!(parse_since("ten minutes").is_err());
    }

    #[test]
    fn a_follower_sees_every_line_across_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.log");
        let mut w = Writer::open(&path, 300, 5).unwrap();
        let mut follower = Follower::new(&path, File::open(&path).unwrap(), 0);
        let mut seen = Vec::new();
        for i in 0..2000 {
            w.write_line(&i.to_string()).unwrap();
            // About nine lines fit a file: two or three rotations between two polls.
            if i % 20 == 0 {
                follower.poll(&mut seen).unwrap();
            }
        }
        follower.poll(&mut seen).unwrap();
        assert_eq!(numbers(&String::from_utf8(seen).unwrap()), (0..2000).collect::<Vec<_>>());
    }

    #[test]
    fn log_file_names() {
        assert!(belongs_to("abc123.log", "abc123") && belongs_to("abc123.log.2", "abc123"));
        assert!(!belongs_to("abc123.log.", "abc123") && !belongs_to("abc123.logx", "abc123"));
        assert!(!belongs_to("abc1234.log", "abc123") && !belongs_to("abc123.log.x", "abc123"));
    }

    #[test]
    fn tails() {
        let dir = tempfile::tempdir().unwrap();
        let tail_of_text = |text: &str, n: usize| {
            let path = dir.path().join("t");
            std::fs::write(&path, text).unwrap();
            String::from_utf8(tail_of(&mut File::open(&path).unwrap(), n).unwrap().0).unwrap()
        };
        assert_eq!(tail_of_text("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail_of_text("a\nb\nc", 2), "b\nc");
        assert_eq!(tail_of_text("a\nb\nc\n", 5), "a\nb\nc\n");
        assert_eq!(tail_of_text("", 3), "");
        assert_eq!(tail_of_text("a\nb\n", 0), "");
        let big: String = (0..50_000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(tail_of_text(&big, 3), "line 49997\nline 49998\nline 49999\n");
    }

    /// Everything `since` yields for a time, as shown (times stripped); checks that what it
    /// read before its first line is less than a block.
    fn shown_since(path: &Path, at: SystemTime) -> String {
        let mut current = File::open(path).unwrap();
        let mut reader = since(&mut current, &files(path), at).unwrap();
        let show = Show { timestamps: true, since: Some(at) };
        let (mut block, mut out, mut after, mut read) = (Vec::new(), Vec::new(), false, 0);
        while reader.next_block(&mut block).unwrap() {
            assert!(block.ends_with(b"\n"), "a block ends at a line's end");
            read += block.len();
            show.render(&block, &mut out, &mut after);
        }
        assert!(read - out.len() < BLOCK as usize + 100, "read {read} bytes to show {}", out.len());
        assert_eq!(reader.offset().unwrap(), std::fs::metadata(path).unwrap().len());
        out.split_inclusive(|&b| b == b'\n').map(|l| String::from_utf8_lossy(split_stamp(l).1)).collect()
    }

    #[test]
    fn since_finds_its_line_across_rotated_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.log");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        // Three files of 6000 lines (about 230 KiB, several blocks each), one line a second,
        // oldest first; every 100th line is followed by one without a time of its own.
        let line = |i: u64| format!("{}{i} {}\n", stamp(t0 + Duration::from_secs(i)), "x".repeat(i as usize % 17));
        for (n, file) in [(2, ".2"), (1, ".1"), (0, "")] {
            let text: String = (6000 * (2 - n)..6000 * (3 - n))
                .map(|i| if i % 100 == 0 { format!("{}{i} untimed\n", line(i)) } else { line(i) })
                .collect();
            std::fs::write(format!("{}{file}", path.display()), text).unwrap();
        }
        let expected = |from: u64| -> String {
            (from..18_000)
                .map(|i| {
                    let text = format!("{i} {}\n", "x".repeat(i as usize % 17));
                    if i % 100 == 0 { format!("{text}{i} untimed\n") } else { text }
                })
                .collect()
        };
        let check = |at: SystemTime, from: u64| {
            let shown = shown_since(&path, at);
            let first = shown.lines().next();
            assert!(shown == expected(from), "since line {from}: {} lines from {first:?}", shown.lines().count());
        };
        for from in [0, 1, 100, 101, 3333, 5999, 6000, 6001, 9000, 12_000, 15_555, 17_999] {
            check(t0 + Duration::from_secs(from), from);
        }
        // Between two lines' times: from the later one.
        check(t0 + Duration::from_millis(7_000_500), 7001);
        check(t0 - Duration::from_secs(60), 0);
        check(t0 + Duration::from_secs(20_000), 18_000);
    }

    /// Counts the bytes read through it.
    struct Counted {
        file: File,
        read: u64,
    }

    impl Read for Counted {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.file.read(buf)?;
            self.read += n as u64;
            Ok(n)
        }
    }

    impl Seek for Counted {
        fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
            self.file.seek(pos)
        }
    }

    #[test]
    fn a_long_tail_reads_each_block_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("long");
        // About 2.4 MiB: 37 blocks.
        let text: String = (0..200_000).map(|i| format!("line {i:06}\n")).collect();
        std::fs::write(&path, &text).unwrap();
        for n in [1, 5000, 120_000, 199_999, 200_000, 300_000] {
            let mut file = Counted { file: File::open(&path).unwrap(), read: 0 };
            let (tail, end) = tail_of(&mut file, n).unwrap();
            let want: String = (200_000usize.saturating_sub(n)..200_000).map(|i| format!("line {i:06}\n")).collect();
            assert!(tail == want.as_bytes(), "the last {n} lines");
            assert_eq!(end, text.len() as u64);
            // What the tail holds, rounded up to whole blocks: nothing twice.
            let blocks = (tail.len() as u64 + 1).div_ceil(BLOCK);
            assert!(file.read <= (blocks * BLOCK).min(text.len() as u64), "{n} lines: read {} bytes", file.read);
        }
    }
}
