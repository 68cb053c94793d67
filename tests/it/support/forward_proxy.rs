//! A real HTTP forward proxy for the tests: takes absolute-form requests
//! (`POST http://host:port/path HTTP/1.1`), forwards each to its origin with
//! `Connection: close`, relays the answer, and keeps what it carried.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

pub struct ForwardProxy {
    pub addr: SocketAddr,
    /// Every request it carried, head and body, as text.
    pub carried: Arc<Mutex<Vec<String>>>,
}

impl ForwardProxy {
    pub fn start() -> ForwardProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let carried: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = carried.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let log = log.clone();
                std::thread::spawn(move || {
                    let _ = relay(client, &log);
                });
            }
        });
        ForwardProxy { addr, carried }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many carried requests name `account` in their body.
    pub fn requests_of(&self, account: &str) -> usize {
        let needle = format!("\"{account}\"");
        self.carried
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.contains(&needle))
            .count()
    }
}

fn relay(mut client: TcpStream, log: &Mutex<Vec<String>>) -> std::io::Result<()> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        let n = client.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while raw.len() < head_end + length {
        let n = client.read(&mut buf)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let rest = target.strip_prefix("http://").unwrap_or(target);
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut origin = TcpStream::connect(authority)?;
    let mut forwarded = format!(
        "{method} {} HTTP/1.1\r\n",
        if path.is_empty() { "/" } else { path }
    );
    for line in lines.filter(|l| !l.is_empty()) {
        let name = line.split(':').next().unwrap_or("").to_ascii_lowercase();
        if name != "connection" && !name.starts_with("proxy-") {
            forwarded.push_str(line);
            forwarded.push_str("\r\n");
        }
    }
    forwarded.push_str("Connection: close\r\n\r\n");
    origin.write_all(forwarded.as_bytes())?;
    origin.write_all(&raw[head_end..])?;
    log.lock().unwrap().push(format!(
        "{head}{}",
        String::from_utf8_lossy(&raw[head_end..])
    ));
    let mut answer = Vec::new();
    origin.read_to_end(&mut answer)?;
    client.write_all(&answer)?;
    client.shutdown(std::net::Shutdown::Both)
}
