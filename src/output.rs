//! How ocx prints: tables, JSON, colour, and human-friendly durations, sizes and times.
//!
//! Everything for stdout goes through `line`, `write`, `print_table` or `print_json`, never
//! `println!`, which panics when the reader went away (`ocx ls | head -1`). Here a closed pipe
//! is an error like any other, which `error::report` turns into a quiet exit.

use std::fmt::Display;
use std::io::{self, IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use comfy_table::{Cell, Color, Table, presets};

/// Colour only on a terminal, when `NO_COLOR` is unset or empty and `TERM` is not `dumb`.
pub fn use_color() -> bool {
    // Asked once: a table of 1,000 rows asks for each status cell.
    static COLOR: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *COLOR.get_or_init(|| {
        io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
    })
}

/// A borderless table with a header row, like `docker ps`.
pub fn table<'a>(header: impl IntoIterator<Item = &'a str>) -> Table {
    let mut table = Table::new();
    table.load_style(presets::NOTHING).set_header(header.into_iter().collect::<Vec<_>>());
    table
}

/// A cell in the given colour when colour is on.
pub fn colored(text: impl ToString, color: Color) -> Cell {
    let cell = Cell::new(text);
    if use_color() { cell.fg(color) } else { cell }
}

/// Print a table; an empty one still shows its header.
pub fn print_table(table: &mut Table) -> io::Result<()> {
    // Columns two spaces apart and flush left, as `docker ps` prints them.
    table.column_iter_mut().for_each(|c| {
        c.set_padding((0, 2));
    });
    // Stdout is line-buffered: a write per row would make 1,000 rows 1,000 writes.
    let mut out = io::BufWriter::with_capacity(64 * 1024, io::stdout().lock());
    for line in table.lines() {
        writeln!(out, "{}", line.trim_end())?;
    }
    out.flush()
}

/// Print one line on stdout.
pub fn line(text: impl Display) -> io::Result<()> {
    writeln!(io::stdout().lock(), "{text}")
}

/// Write bytes to stdout and flush them at once (streamed answers, followed logs).
pub fn write(bytes: &[u8]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()
}

/// One line on stderr (notes, warnings, errors). Never fails and never panics: with stderr
/// closed there is nobody left to tell.
pub fn note(text: impl Display) {
    let _ = writeln!(io::stderr().lock(), "{text}");
}

/// Ask a yes-or-no question on stderr and read the answer from stdin; Enter alone means yes.
/// Only for a terminal: the caller checks `is_interactive` first.
pub fn confirm(question: &str) -> io::Result<bool> {
    let mut err = io::stderr().lock();
    write!(err, "{question} [Y/n] ")?;
    err.flush()?;
    drop(err);
    let mut answer = String::new();
    io::stdin().read_line(&mut answer)?;
    let answer = answer.trim().to_ascii_lowercase();
    Ok(answer.is_empty() || answer == "y" || answer == "yes")
}

/// Whether someone is at a terminal to answer a question: stdin and stderr are terminals.
pub fn is_interactive() -> bool {
    io::stdin().is_terminal() && io::stderr().is_terminal()
}

/// Print one JSON document on stdout.
pub fn print_json(value: &serde_json::Value) -> io::Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)
}

/// A one-line spinner on stderr, only when stderr is a terminal; it clears itself when dropped.
pub struct Spinner {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Spinner {
    pub fn start(message: String) -> Spinner {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = io::stderr().is_terminal().then(|| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let began = Instant::now();
                for frame in ['|', '/', '-', '\\'].iter().cycle() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let _ = write!(io::stderr(), "\r{frame} {message}… {}", elapsed(began.elapsed()));
                    std::thread::sleep(Duration::from_millis(100));
                }
                let _ = write!(io::stderr(), "\r\x1b[2K");
            })
        });
        Spinner { stop, thread }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `42s`, `3m12s`, `5h03m`, `2d04h`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// `1.2s` or `850ms`: for how long an action took.
pub fn elapsed(d: Duration) -> String {
    if d < Duration::from_secs(1) { format!("{}ms", d.as_millis()) } else { format!("{:.1}s", d.as_secs_f64()) }
}

/// `text` in at most `width` characters: as is when it fits, else its first `width - 1` and `…`.
pub fn cut(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// `512K`, `318M`, `1.2G`.
pub fn bytes(n: u64) -> String {
    const K: u64 = 1024;
    match n {
        0..K => format!("{n}B"),
        K..1_048_576 => format!("{}K", n / K),
        1_048_576..1_073_741_824 => format!("{}M", n / 1_048_576),
        _ => format!("{:.1}G", n as f64 / 1_073_741_824.0),
    }
}

/// The time `delay` from now, RFC 3339 with milliseconds (records' times).
pub fn rfc3339_in(delay: Duration) -> String {
    humantime::format_rfc3339_millis(SystemTime::now() + delay).to_string()
}

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `2026-11-21T05:08:00Z` for a time given in seconds since the Unix epoch (up to the year 9999).
pub fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_keeps_what_fits_and_marks_what_it_cuts() {
        assert_eq!(cut("short", 5), "short");
        assert_eq!(cut("longer", 5), "long…");
        assert_eq!(cut("ééééé€", 5).chars().count(), 5);
        assert_eq!(cut("", 0), "");
    }

    #[test]
    fn formats() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_237_819), "2026-11-21T05:10:19Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(duration(Duration::from_secs(192)), "3m12s");
        assert_eq!(duration(Duration::from_secs(90_061)), "1d01h");
        assert_eq!(bytes(350 * 1_048_576), "350M");
        assert_eq!(elapsed(Duration::from_millis(1530)), "1.5s");
    }
}
