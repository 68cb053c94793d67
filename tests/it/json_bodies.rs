//! JSON bodies as clients really send them, over a raw connection to the real daemon: in one
//! piece with the head (the token hot path, read without a copy), in pieces, chunked, over
//! the limit, not JSON. Each must get the answer the API promises, and a cache hit must be
//! counted once whichever way its body came (issue 23's hot path).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::harness::Harness;

const ACQUIRE: &str = "/api/v1/automation/tokens/acquire";

/// Sends `parts` on one connection, each in a write (and a TCP segment) of its own, and reads
/// the whole answer: its status and JSON body. Whether the daemon reads separate writes apart
/// is up to timing; a chunked body reaches the extractor chunk by chunk whatever the timing
/// (actix's decoder hands over each chunk), so the chunked case always tests a body in pieces.
fn send_in_parts(addr: SocketAddr, parts: &[&[u8]]) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    for part in parts {
        if stream.write_all(part).is_err() {
            // The daemon answered (and closed) before taking it all: read its answer.
            break;
        }
    }
    let text = read_answer(&mut stream);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// One HTTP answer: read until its head and `Content-Length` bytes of body are in (a daemon
/// that refused a body early may keep the connection open while the rest arrives), or the
/// connection ends.
fn read_answer(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&answer).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            });
            if length.is_some_and(|length| body.len() >= length) {
                return text;
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return text,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
}

fn head(extra: &str) -> String {
    format!(
        "POST {ACQUIRE} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Connection: close\r\n{extra}\r\n"
    )
}

async fn in_parts(addr: SocketAddr, parts: Vec<Vec<u8>>) -> (u16, Value) {
    tokio::task::spawn_blocking(move || {
        let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        send_in_parts(addr, &parts)
    })
    .await
    .unwrap()
}

#[actix_rt::test]
async fn a_body_in_one_piece_in_pieces_or_chunked_gets_the_same_token() {
    let h = Harness::start(None, "").await;
    h.add_account("alice", "pw-alice", false);
    let (status, first) = h.acquire(json!({"site_name": "court_zxfw"})).await;
    assert_eq!(status, 200, "{first}");
    let token = first["data"]["token"].as_str().unwrap().to_string();
    let addr = h.tokend.addr;
    let body = br#"{"site_name":"court_zxfw"}"#;
    let length = format!("Content-Length: {}\r\n", body.len());

    let whole = [head(&length).as_bytes(), body].concat();
    let split = vec![
        head(&length).into_bytes(),
        body[..9].to_vec(),
        body[9..].to_vec(),
    ];
    let chunked = vec![
        head("Transfer-Encoding: chunked\r\n").into_bytes(),
        format!("9\r\n{}\r\n", std::str::from_utf8(&body[..9]).unwrap()).into_bytes(),
        format!(
            "{:x}\r\n{}\r\n0\r\n\r\n",
            body.len() - 9,
            std::str::from_utf8(&body[9..]).unwrap()
        )
        .into_bytes(),
    ];
    for (how, parts) in [
        ("in one piece", vec![whole]),
        ("in pieces", split),
        ("chunked", chunked),
    ] {
        let (status, answer) = in_parts(addr, parts).await;
        assert_eq!(status, 200, "{how}: {answer}");
        assert_eq!(answer["data"]["token"], token.as_str(), "{how}: {answer}");
        assert_eq!(answer["data"]["source"], "cache", "{how}: {answer}");
    }
    assert_eq!(h.portal.state.issued(), 1, "every body was a cache hit");
    let (_, metrics) = h.api_get("/api/v1/automation/performance/metrics").await;
    // The first acquire missed; the three raw ones hit, each counted once.
    assert_eq!(metrics["data"]["cache"]["token"]["hits"], 3, "{metrics}");
    assert_eq!(metrics["data"]["cache"]["token"]["misses"], 1, "{metrics}");
}

#[actix_rt::test]
async fn bodies_over_the_limit_or_not_json_are_refused_by_name() {
    let h = Harness::start(None, "").await;
    let addr = h.tokend.addr;
    let limit = 64 * 1024;

    // Announced too long: refused from the head.
    let (status, answer) = in_parts(
        addr,
        vec![head(&format!("Content-Length: {}\r\n", limit + 1)).into_bytes()],
    )
    .await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["code"], "PAYLOAD_TOO_LARGE", "{answer}");

    // Chunked, no length said: refused once the chunks pass the limit.
    let chunk = format!("{:x}\r\n{}\r\n", 40 * 1024, " ".repeat(40 * 1024));
    let (status, answer) = in_parts(
        addr,
        vec![
            head("Transfer-Encoding: chunked\r\n").into_bytes(),
            chunk.clone().into_bytes(),
            chunk.into_bytes(),
        ],
    )
    .await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["code"], "PAYLOAD_TOO_LARGE", "{answer}");

    // Not JSON, in pieces: 400 naming the body.
    let text = b"{\"site_name\": court";
    let (status, answer) = in_parts(
        addr,
        vec![
            head(&format!("Content-Length: {}\r\n", text.len())).into_bytes(),
            text[..5].to_vec(),
            text[5..].to_vec(),
        ],
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["code"], "INVALID_INPUT", "{answer}");
    assert!(answer["errors"]["body"].is_string(), "{answer}");

    // A JSON body of the wrong shape: the field is named.
    let wrong = br#"{"site_name": 7}"#;
    let (status, answer) = in_parts(
        addr,
        vec![[
            head(&format!("Content-Length: {}\r\n", wrong.len())).as_bytes(),
            wrong,
        ]
        .concat()],
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["errors"]["body"]
            .as_str()
            .is_some_and(|m| m.contains("expected a string")),
        "{answer}"
    );
}
