//! A TCP proxy on loopback that can break the server's event stream once, mid-answer, to test
//! that `ocx run` and `ocx events` get it back and still print the whole answer: it either cuts
//! the stream (closes the connection) or stalls it (keeps it open, silent, as a half-open
//! connection would).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

pub struct Proxy {
    pub port: u16,
    /// Set once the proxy has cut (or stalled) an event stream.
    pub cut: Arc<AtomicBool>,
    /// When it did.
    pub cut_at: Arc<OnceLock<Instant>>,
}

/// What the proxy does to the first event stream that carries its trigger.
#[derive(Clone, Copy)]
enum Break {
    /// Close the connection.
    Cut,
    /// Forward nothing more, and never close the connection.
    Stall,
}

impl Proxy {
    /// Forward every connection to `target`. The first `GET /event` response in which `trigger`
    /// appears is cut off right there; every later connection passes through untouched.
    pub fn start(target: u16, trigger: &'static str) -> Proxy {
        Proxy::with(target, trigger, Break::Cut)
    }

    /// As `start`, but the first event stream carrying `trigger` stalls there instead: its
    /// connection stays open and nothing more comes through it, heartbeats included.
    pub fn stall(target: u16, trigger: &'static str) -> Proxy {
        Proxy::with(target, trigger, Break::Stall)
    }

    fn with(target: u16, trigger: &'static str, how: Break) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = Proxy { port, cut: Arc::new(AtomicBool::new(false)), cut_at: Arc::new(OnceLock::new()) };
        let (cut, cut_at) = (Arc::clone(&proxy.cut), Arc::clone(&proxy.cut_at));
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else { continue };
                let (cut, cut_at) = (Arc::clone(&cut), Arc::clone(&cut_at));
                std::thread::spawn(move || relay(client, server, trigger, how, &cut, &cut_at));
            }
        });
        proxy
    }
}

fn relay(client: TcpStream, server: TcpStream, trigger: &str, how: Break, cut: &AtomicBool, at: &OnceLock<Instant>) {
    let (mut client_in, mut server_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    // Client → server, watching for the event-stream request.
    let is_events = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&is_events);
    std::thread::spawn(move || {
        let mut buf = [0; 8192];
        while let Ok(n) = client_in.read(&mut buf) {
            if n == 0 {
                break;
            }
            if buf[..n].starts_with(b"GET /event") {
                seen.store(true, Ordering::SeqCst);
            }
            if server_out.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = server_out.shutdown(Shutdown::Write);
    });
    // Server → client, breaking the first event stream that carries `trigger`.
    let (mut server_in, mut client_out) = (server, client);
    let mut buf = [0; 8192];
    while let Ok(n) = server_in.read(&mut buf) {
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        if is_events.load(Ordering::SeqCst)
            && String::from_utf8_lossy(chunk).contains(trigger)
            && !cut.swap(true, Ordering::SeqCst)
        {
            let _ = at.set(Instant::now());
            match how {
                Break::Cut => {
                    let _ = client_out.shutdown(Shutdown::Both);
                    let _ = server_in.shutdown(Shutdown::Both);
                }
                Break::Stall => {
                    // What the server still says is swallowed, so it never blocks on a full
                    // socket; the client's end is never closed (the socket lives as long as the
                    // test process), so only its own idea of silence can end the wait.
                    while server_in.read(&mut buf).is_ok_and(|n| n > 0) {}
                    std::mem::forget(client_out);
                }
            }
            return;
        }
        if client_out.write_all(chunk).is_err() {
            break;
        }
    }
    let _ = client_out.shutdown(Shutdown::Write);
}
