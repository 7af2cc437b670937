//! The watcher's log capture: a thread per spawn that copies the server's output into the
//! capped log (`log::Writer`), looking out for the ready line.

use std::io::Read;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;

use super::Event;
use crate::instance::log;
use crate::instance::spawn::READY_MARK;

/// How long the log copier lets a busy server's lines gather before the next read.
const COALESCE: Duration = Duration::from_millis(5);

/// A thread that copies the output of spawn number `spawn` into the log, telling the watcher
/// when it carried the ready line and when it ended.
pub fn copy_output(
    mut pipe: std::io::PipeReader,
    spawn: u64,
    log: Arc<Mutex<log::Writer>>,
    tx: Sender<Event>,
) -> Result<()> {
    std::thread::Builder::new().stack_size(128 * 1024).spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        // The ready line may straddle two reads: look at the end of the last one too.
        let mut seen = false;
        let mut tail: Vec<u8> = Vec::new();
        loop {
            let n = match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            if let Ok(mut log) = log.lock() {
                let _ = log.write_chunk(&buf[..n]);
            }
            // A server writes a line at a time: let a busy one's lines gather in the pipe for
            // a moment (it holds 64 KiB; 5 ms of 10 MB/s is 50 KB), so that one read and one
            // write carry many lines. An idle server's line waits 5 ms at most.
            if n < buf.len() {
                std::thread::sleep(COALESCE);
            }
            if !seen {
                tail.extend_from_slice(&buf[..n]);
                if tail.windows(READY_MARK.len()).any(|w| w == READY_MARK.as_bytes()) {
                    seen = true;
                    let _ = tx.send(Event::ReadyLine(spawn));
                }
                tail.drain(..tail.len().saturating_sub(READY_MARK.len()));
            }
        }
        if let Ok(mut log) = log.lock() {
            let _ = log.flush_partial();
        }
        let _ = tx.send(Event::OutputClosed(spawn));
    })?;
    Ok(())
}
