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

/// Sends `parts` on one connection (each written on its own, a pause between them: a client
/// on a slow link), and reads the whole answer: its status and JSON body.
fn send_in_parts(addr: SocketAddr, parts: &[&[u8]]) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            // The workload: the next piece comes later, so the daemon reads them apart.
            std::thread::sleep(Duration::from_millis(30));
        }
        if stream.write_all(part).is_err() {
            // The daemon answered (and closed) before taking it all: read its answer.
            break;
        }
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
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
