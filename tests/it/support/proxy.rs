//! A TCP proxy the tests can break on command, like a database or Redis that went away:
//! - [`Proxy::cut`]: every connection is reset and new ones are closed at once;
//! - [`Proxy::blackhole`]: connections stay open but nothing gets through either way, and
//!   new ones are accepted and never answered (a half-open network, a dead host);
//! - [`Proxy::restore`]: traffic flows again; connections that lived through a blackhole are
//!   closed (their bytes were lost, so the client must start over, as after a real timeout);
//! - [`Proxy::stall`]: nothing gets through, but what was sent is kept and delivered on
//!   [`Proxy::restore`] (a partition that heals: a request that timed out at the client
//!   still runs on the server, late).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct Proxy {
    pub addr: SocketAddr,
    state: Arc<State>,
}

#[derive(Default)]
struct State {
    up: AtomicBool,
    blackholed: AtomicBool,
    stalled: AtomicBool,
    /// Bumped on every cut (and when a blackhole ends), so that pumps of older connections stop.
    generation: AtomicU64,
}

fn pump(mut from: TcpStream, mut to: TcpStream, state: Arc<State>, born: u64) {
    from.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 16384];
    // What was sent during a stall, delivered when it ends.
    let mut held: Vec<u8> = Vec::new();
    loop {
        if !state.up.load(Ordering::SeqCst) || state.generation.load(Ordering::SeqCst) != born {
            let _ = from.shutdown(std::net::Shutdown::Both);
            let _ = to.shutdown(std::net::Shutdown::Both);
            return;
        }
        if !held.is_empty() && !state.stalled.load(Ordering::SeqCst) {
            if to.write_all(&held).is_err() {
                return;
            }
            held.clear();
        }
        match from.read(&mut buf) {
            Ok(0) => {
                // The sender closed: what it sent before still arrives, late.
                while !held.is_empty() && state.stalled.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = to.write_all(&held);
                let _ = to.shutdown(std::net::Shutdown::Write);
                return;
            }
            // Swallowed while blackholed.
            Ok(_) if state.blackholed.load(Ordering::SeqCst) => {}
            Ok(n) if state.stalled.load(Ordering::SeqCst) => held.extend_from_slice(&buf[..n]),
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// Reads and drops what a client sends on a connection accepted during a blackhole, until
/// the blackhole ends (then the connection is closed).
fn swallow(mut client: TcpStream, state: Arc<State>) {
    client
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 16384];
    while state.blackholed.load(Ordering::SeqCst) {
        match client.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
    let _ = client.shutdown(std::net::Shutdown::Both);
}

impl Proxy {
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        state.up.store(true, Ordering::SeqCst);
        let shared = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                if !shared.up.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                if shared.blackholed.load(Ordering::SeqCst) {
                    let state = shared.clone();
                    std::thread::spawn(move || swallow(client, state));
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let born = shared.generation.load(Ordering::SeqCst);
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (s1, s3) = (shared.clone(), shared.clone());
                std::thread::spawn(move || pump(client, server, s1, born));
                std::thread::spawn(move || pump(s2, c2, s3, born));
            }
        });
        Proxy { addr, state }
    }

    /// A proxy in front of a `redis://host:port/db` URL, and the URL that goes through it.
    pub fn for_url(url: &str) -> (Proxy, String) {
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let hostport = rest.split('/').next().unwrap();
        let target: SocketAddr = hostport.replace("localhost", "127.0.0.1").parse().unwrap();
        let proxy = Proxy::start(target);
        let through = url.replacen(hostport, &proxy.addr.to_string(), 1);
        (proxy, through)
    }

    pub fn cut(&self) {
        self.state.up.store(false, Ordering::SeqCst);
        self.state.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub fn blackhole(&self) {
        self.state.blackholed.store(true, Ordering::SeqCst);
    }

    pub fn stall(&self) {
        self.state.stalled.store(true, Ordering::SeqCst);
    }

    pub fn restore(&self) {
        self.state.stalled.store(false, Ordering::SeqCst);
        if self.state.blackholed.swap(false, Ordering::SeqCst) {
            self.state.generation.fetch_add(1, Ordering::SeqCst);
        }
        self.state.up.store(true, Ordering::SeqCst);
    }
}
