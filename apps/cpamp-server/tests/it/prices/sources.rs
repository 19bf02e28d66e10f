//! A local stand-in for the three price sources: serves fixed JSON bodies per path
//! over HTTP/1.1, honours `If-None-Match`, and can be told to fail. No test needs the
//! internet.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

#[derive(Clone)]
struct Route {
    status: u16,
    body: String,
    etag: Option<String>,
}

/// What one request asked.
#[derive(Debug, Clone)]
pub struct Hit {
    pub path: String,
    pub if_none_match: Option<String>,
}

#[derive(Default)]
struct State {
    routes: HashMap<String, Route>,
    hits: Vec<Hit>,
}

pub struct SourceServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl SourceServer {
    pub fn start() -> SourceServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).is_err() {
                        return;
                    }
                    let path = request_line
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or("/")
                        .to_string();
                    let mut if_none_match = None;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':')
                            && name.trim().eq_ignore_ascii_case("if-none-match")
                        {
                            if_none_match = Some(value.trim().to_string());
                        }
                    }
                    let route = {
                        let mut state = shared.lock().expect("state");
                        state.hits.push(Hit {
                            path: path.clone(),
                            if_none_match: if_none_match.clone(),
                        });
                        state.routes.get(&path).cloned()
                    };
                    let (status, body, etag) = match route {
                        None => (404, "not found".to_string(), None),
                        Some(route) => match (&route.etag, &if_none_match) {
                            (Some(etag), Some(asked)) if etag == asked => {
                                (304, String::new(), route.etag.clone())
                            }
                            _ => (route.status, route.body.clone(), route.etag.clone()),
                        },
                    };
                    let mut head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
                        body.len()
                    );
                    if let Some(etag) = etag {
                        head.push_str(&format!("ETag: {etag}\r\n"));
                    }
                    head.push_str("\r\n");
                    let _ = stream.write_all(head.as_bytes());
                    let _ = stream.write_all(body.as_bytes());
                });
            }
        });
        SourceServer { addr, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Serves `body` at `path` with status 200 and an optional ETag.
    pub fn serve(&self, path: &str, body: &str, etag: Option<&str>) {
        self.set(path, 200, body, etag);
    }

    /// Makes `path` answer `status` with an error body.
    pub fn fail(&self, path: &str, status: u16) {
        self.set(path, status, "{\"error\":\"down\"}", None);
    }

    fn set(&self, path: &str, status: u16, body: &str, etag: Option<&str>) {
        self.state.lock().expect("state").routes.insert(
            path.to_string(),
            Route {
                status,
                body: body.to_string(),
                etag: etag.map(str::to_string),
            },
        );
    }

    pub fn hits(&self, path: &str) -> Vec<Hit> {
        self.state
            .lock()
            .expect("state")
            .hits
            .iter()
            .filter(|hit| hit.path == path)
            .cloned()
            .collect()
    }
}

/// A local HTTP proxy that accepts `CONNECT host:port` and tunnels to it, recording
/// every target it was asked for.
pub struct ConnectProxy {
    addr: SocketAddr,
    targets: Arc<Mutex<Vec<String>>>,
}

impl ConnectProxy {
    pub fn start() -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let targets = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&targets);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(client) = stream else { continue };
                let seen = Arc::clone(&seen);
                std::thread::spawn(move || tunnel(client, &seen));
            }
        });
        ConnectProxy { addr, targets }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn targets(&self) -> Vec<String> {
        self.targets.lock().expect("targets").clone()
    }
}

fn tunnel(mut client: std::net::TcpStream, seen: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(client.try_clone().expect("clone"));
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (Some("CONNECT"), Some(target)) = (parts.next(), parts.next()) else {
        let _ = client.write_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n");
        return;
    };
    seen.lock().expect("targets").push(target.to_string());
    let Ok(upstream) = std::net::TcpStream::connect(target) else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
        return;
    };
    let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
    let (mut upstream_read, mut client_write) = (
        upstream.try_clone().expect("clone"),
        client.try_clone().expect("clone"),
    );
    let forward = std::thread::spawn(move || {
        let _ = std::io::copy(&mut reader, &mut { upstream });
    });
    let _ = std::io::copy(&mut upstream_read, &mut client_write);
    let _ = forward.join();
}
