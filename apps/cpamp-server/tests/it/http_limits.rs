//! What one client can hold open: a stalled request head or body is dropped after its
//! timeout, a keep-alive connection closes after its last allowed request, and one
//! address cannot open more than its cap of connections.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::support::{ADMIN_KEY, ServerProcess};

/// The server with small limits; `head_timeout` and `keep_alive` in seconds.
fn start(head_timeout: &str, keep_alive: &str) -> (tempfile::TempDir, ServerProcess) {
    let data = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(
        data.path(),
        &[
            ("CPA_MANAGER_ADMIN_KEY", ADMIN_KEY),
            ("HTTP_READ_HEADER_TIMEOUT_SECS", head_timeout),
            ("HTTP_BODY_READ_TIMEOUT_SECS", "1"),
            ("HTTP_KEEP_ALIVE_SECS", keep_alive),
            ("HTTP_MAX_REQUESTS_PER_CONNECTION", "2"),
            ("HTTP_MAX_CONNECTIONS_PER_ADDRESS", "3"),
        ],
    );
    (data, server)
}

/// A TCP connection to `server` from the loopback address `source`.
fn connect_from(source: [u8; 4], server: SocketAddr) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::from((source, 0)))
            .expect("bind source address");
        socket.connect(server).await.expect("connect")
    });
    let stream = stream.into_std().expect("std stream");
    stream.set_nonblocking(false).expect("blocking");
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    stream
}

/// Everything the server sends until it closes the connection (or 15 s pass).
fn read_until_closed(stream: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let _ = stream.read_to_end(&mut received);
    (
        String::from_utf8_lossy(&received).into_owned(),
        started.elapsed(),
    )
}

#[test]
fn a_stalled_body_or_head_is_dropped_after_its_timeout() {
    let (_data, server) = start("1", "2");
    // Complete headers, then a body that stops after 9 of its 100 bytes.
    let mut stream = connect_from([127, 0, 0, 41], server.addr);
    write!(
        stream,
        "PUT /usage-service/config HTTP/1.1\r\nHost: cpamp\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"config\""
    )
    .expect("send");
    let (answer, waited) = read_until_closed(&mut stream);
    assert!(waited < Duration::from_secs(10), "held for {waited:?}");
    let status = answer.split_whitespace().nth(1).unwrap_or_default();
    assert!(status.starts_with('4'), "{answer:?}");

    // The same stall through the CPA proxy path (the body is streamed, not buffered).
    let mut stream = connect_from([127, 0, 0, 41], server.addr);
    write!(
        stream,
        "POST /v0/management/api-call HTTP/1.1\r\nHost: cpamp\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\
         Content-Length: 100\r\n\r\n{{"
    )
    .expect("send");
    let (_, waited) = read_until_closed(&mut stream);
    assert!(waited < Duration::from_secs(10), "held for {waited:?}");

    // A head that never ends.
    let mut stream = connect_from([127, 0, 0, 41], server.addr);
    write!(stream, "GET /health HTTP/1.1\r\nHost: cpamp\r\n").expect("send");
    let (_, waited) = read_until_closed(&mut stream);
    assert!(waited < Duration::from_secs(10), "held for {waited:?}");
}

#[test]
fn a_keep_alive_connection_closes_after_its_last_request_and_when_idle() {
    let (_data, server) = start("1", "2");
    let mut stream = connect_from([127, 0, 0, 42], server.addr);
    let request = "GET /health HTTP/1.1\r\nHost: cpamp\r\n\r\n";
    stream.write_all(request.as_bytes()).expect("first");
    let mut first = [0u8; 512];
    let read = stream.read(&mut first).expect("first answer");
    let first = String::from_utf8_lossy(&first[..read]).to_ascii_lowercase();
    assert!(first.starts_with("http/1.1 200"), "{first}");
    assert!(!first.contains("connection: close"), "{first}");
    stream.write_all(request.as_bytes()).expect("second");
    let (second, _) = read_until_closed(&mut stream);
    let second = second.to_ascii_lowercase();
    assert!(second.starts_with("http/1.1 200"), "{second}");
    assert!(second.contains("connection: close"), "{second}");

    // An idle keep-alive connection is closed after the keep-alive time.
    let mut stream = connect_from([127, 0, 0, 42], server.addr);
    stream.write_all(request.as_bytes()).expect("request");
    let (_, waited) = read_until_closed(&mut stream);
    assert!(waited < Duration::from_secs(10), "held for {waited:?}");
}

#[test]
fn one_address_cannot_hold_more_than_its_cap_of_connections() {
    // Idle connections must stay open for the length of the test, even on a busy machine.
    let (_data, server) = start("60", "60");
    // Each held connection has been served once, so the server has surely counted it
    // (a connection is counted when a worker takes it, which may lag the TCP accept).
    let held: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut stream = connect_from([127, 0, 0, 43], server.addr);
            stream
                .write_all(b"GET /health HTTP/1.1\r\nHost: cpamp\r\n\r\n")
                .expect("send");
            let mut answer = [0u8; 512];
            let read = stream.read(&mut answer).expect("answer");
            assert!(answer[..read].starts_with(b"HTTP/1.1 200"));
            stream
        })
        .collect();
    // The fourth connection is answered 503 and closed.
    let mut fourth = connect_from([127, 0, 0, 43], server.addr);
    fourth
        .write_all(b"GET /health HTTP/1.1\r\nHost: cpamp\r\n\r\n")
        .expect("send");
    let (answer, _) = read_until_closed(&mut fourth);
    let lower = answer.to_ascii_lowercase();
    assert!(lower.starts_with("http/1.1 503"), "{answer}");
    assert!(lower.contains("retry-after: 1"), "{answer}");
    assert!(answer.contains("server_busy"), "{answer}");
    // Another address is not affected.
    let mut other = connect_from([127, 0, 0, 44], server.addr);
    other
        .write_all(b"GET /health HTTP/1.1\r\nHost: cpamp\r\nConnection: close\r\n\r\n")
        .expect("send");
    let (answer, _) = read_until_closed(&mut other);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Once the held connections close, the address gets in again.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut again = connect_from([127, 0, 0, 43], server.addr);
        again
            .write_all(b"GET /health HTTP/1.1\r\nHost: cpamp\r\nConnection: close\r\n\r\n")
            .expect("send");
        let (answer, _) = read_until_closed(&mut again);
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "still refused: {answer}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
