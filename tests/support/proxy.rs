//! A TCP proxy on loopback that can cut the server's event stream once, mid-answer, to test
//! that `ocx run` reconnects and still prints the whole answer.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub struct Proxy {
    pub port: u16,
    /// Set once the proxy has cut an event stream.
    pub cut: Arc<AtomicBool>,
}

impl Proxy {
    /// Forward every connection to `target`. The first `GET /event` response in which `trigger`
    /// appears is cut off right there; every later connection passes through untouched.
    pub fn start(target: u16, trigger: &'static str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let cut_flag = Arc::clone(&cut);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else { continue };
                let cut = Arc::clone(&cut_flag);
                std::thread::spawn(move || relay(client, server, trigger, &cut));
            }
        });
        Proxy { port, cut }
    }
}

fn relay(client: TcpStream, server: TcpStream, trigger: &str, cut: &AtomicBool) {
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
    // Server → client, cutting the first event stream that carries `trigger`.
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
            let _ = client_out.shutdown(Shutdown::Both);
            let _ = server_in.shutdown(Shutdown::Both);
            return;
        }
        if client_out.write_all(chunk).is_err() {
            break;
        }
    }
    let _ = client_out.shutdown(Shutdown::Write);
}
