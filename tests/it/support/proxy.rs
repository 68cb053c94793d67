//! A TCP proxy the tests can break on command, like a database or Redis that went away:
//! - [`Proxy::cut`]: every connection is reset and new ones are closed at once;
//! - [`Proxy::blackhole`]: connections stay open but nothing gets through either way, and
//!   new ones are accepted and never answered (a half-open network, a dead host);
//! - [`Proxy::restore`]: traffic flows again; connections that lived through a blackhole are
//!   closed (their bytes were lost, so the client must start over, as after a real timeout);
//! - [`Proxy::stall`]: nothing gets through, but what was sent is kept and delivered on
//!   [`Proxy::restore`] (a partition that heals: a request that timed out at the client
//!   still runs on the server, late), in order, before anything sent after it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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
    /// Bytes a stall holds now, over every connection.
    held: AtomicUsize,
}

fn pump(from: TcpStream, to: TcpStream, state: Arc<State>, born: u64) {
    // What was sent during a stall, delivered when it ends (or lost with the connection).
    let mut held: Vec<u8> = Vec::new();
    pass_on(from, to, &state, born, &mut held);
    state.held.fetch_sub(held.len(), Ordering::SeqCst);
}

/// Passes bytes on until the connection ends, keeping them in `held` during a stall.
fn pass_on(mut from: TcpStream, mut to: TcpStream, state: &State, born: u64, held: &mut Vec<u8>) {
    from.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 16384];
    loop {
        if !state.up.load(Ordering::SeqCst) || state.generation.load(Ordering::SeqCst) != born {
            let _ = from.shutdown(std::net::Shutdown::Both);
            let _ = to.shutdown(std::net::Shutdown::Both);
            return;
        }
        if !held.is_empty() && !state.stalled.load(Ordering::SeqCst) {
            if to.write_all(held).is_err() {
                return;
            }
            state.held.fetch_sub(held.len(), Ordering::SeqCst);
            held.clear();
        }
        match from.read(&mut buf) {
            Ok(0) => {
                // The sender closed: what it sent before still arrives, late.
                while !held.is_empty() && state.stalled.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = to.write_all(held);
                let _ = to.shutdown(std::net::Shutdown::Write);
                return;
            }
            // Swallowed while blackholed.
            Ok(_) if state.blackholed.load(Ordering::SeqCst) => {}
            Ok(n) if state.stalled.load(Ordering::SeqCst) => {
                held.extend_from_slice(&buf[..n]);
                state.held.fetch_add(n, Ordering::SeqCst);
            }
            Ok(n) => {
                // What a stall held goes first: bytes read while the stall ended must not
                // overtake it (a TCP stream never reorders; a client pairs answers with its
                // requests by their order).
                let earlier = held.len();
                held.extend_from_slice(&buf[..n]);
                if to.write_all(held).is_err() {
                    held.truncate(earlier);
                    return;
                }
                state.held.fetch_sub(earlier, Ordering::SeqCst);
                held.clear();
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

    /// Bytes a stall holds now (sent, not yet delivered).
    pub fn held(&self) -> usize {
        self.state.held.load(Ordering::SeqCst)
    }

    pub fn restore(&self) {
        self.state.stalled.store(false, Ordering::SeqCst);
        if self.state.blackholed.swap(false, Ordering::SeqCst) {
            self.state.generation.fetch_add(1, Ordering::SeqCst);
        }
        self.state.up.store(true, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// A stall that ends delivers what it held before anything sent after it, as the one
    /// TCP stream it stands for would: a client pairs answers with requests by their order.
    #[test]
    fn a_stall_delivers_what_it_held_before_what_came_after() {
        let target = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = Proxy::start(target.local_addr().unwrap());
        let mut client = TcpStream::connect(proxy.addr).unwrap();
        let (mut server, _) = target.accept().unwrap();
        proxy.stall();
        client.write_all(b"first;").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while proxy.held() < b"first;".len() {
            assert!(Instant::now() < deadline, "the stall never held the bytes");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Sent at once after the stall ends, while the proxy still waits for bytes.
        proxy.restore();
        client.write_all(b"second;").unwrap();
        let mut got = vec![0u8; b"first;second;".len()];
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        server.read_exact(&mut got).unwrap();
        assert_eq!(String::from_utf8_lossy(&got), "first;second;");
    }
}
