//! Connections from untrusted clients: a client that sends its headers slowly, or never, is cut
//! off; many idle connections do not keep others out.

#![allow(clippy::unwrap_used)] // tests: a failed step should fail loudly

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use veil_tests::TestServer;

/// The server's address, from its URL.
fn addr(s: &TestServer) -> String {
    s.url.trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn a_slow_or_silent_client_is_cut_off_and_idle_connections_do_not_keep_others_out() {
    let s = TestServer::start().await;
    // Half a request's headers, then nothing (slowloris).
    let mut slow = TcpStream::connect(addr(&s)).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: veil\r\n").await.unwrap();
    // Idle connections that never send a request.
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(TcpStream::connect(addr(&s)).await.unwrap());
    }
    // The slow client's connection is closed (after an error answer, or none) within the header
    // timeout and a margin, not left open.
    let mut buffer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), slow.read_to_end(&mut buffer)).await;
    assert!(read.is_ok(), "a half-sent request is still open after 20 s");
    assert!(!String::from_utf8_lossy(&buffer).contains("200 OK"), "{}", String::from_utf8_lossy(&buffer));
    // So is every idle one: they give their place back (at most 512 are served at once, and
    // more wait in the backlog), so idle clients cannot keep others out for long.
    let started = Instant::now();
    for mut connection in idle {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(20), connection.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "an idle connection is still open after 20 s");
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    let (status, _) = s.send(s.request(reqwest::Method::GET, "/healthz", None)).await;
    assert!(status.is_success());
}
