//! Reaching the price sources through the proxy CPA itself uses (`proxy-url` in CPA's
//! config), as the Go server did: `http://` and `https://` proxies by `CONNECT`
//! tunnel (with `user:password@` sent as Basic proxy authorization), `socks5://` and
//! `socks5h://` by a SOCKS5 `CONNECT` (with username/password authentication when the
//! URL carries them). The source's own TLS then runs inside the tunnel, so the proxy
//! never sees the answer.

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cpa_http::{Io, Target, dial, tls};

/// How to reach a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// No proxy.
    Direct,
    /// An HTTP(S) proxy: `CONNECT host:port`.
    Http {
        /// The proxy's address.
        proxy: Target,
        /// `Basic …` when the proxy URL carried credentials.
        authorization: Option<String>,
    },
    /// A SOCKS5 proxy; the source's host name is resolved by the proxy.
    Socks5 {
        /// The proxy's host.
        host: String,
        /// The proxy's port.
        port: u16,
        /// User name and password when the proxy URL carried them.
        credentials: Option<(String, String)>,
    },
}

impl Route {
    /// The route of a proxy URL; an empty URL means no proxy.
    pub fn parse(url: &str) -> Result<Route, String> {
        let url = url.trim();
        if url.is_empty() {
            return Ok(Route::Direct);
        }
        let invalid = || format!("invalid proxy URL in CPA's proxy-url: {:?}", redact(url));
        let (scheme, rest) = url.split_once("://").ok_or_else(invalid)?;
        let authority = rest.split('/').next().unwrap_or("");
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => (Some(userinfo), host_port),
            None => (None, authority),
        };
        let credentials = userinfo.map(|userinfo| {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            (percent_decode(user), percent_decode(password))
        });
        match scheme.to_ascii_lowercase().as_str() {
            scheme @ ("http" | "https") => {
                let proxy =
                    Target::parse(&format!("{scheme}://{host_port}")).map_err(|_| invalid())?;
                Ok(Route::Http {
                    proxy,
                    authorization: credentials.map(|(user, password)| {
                        let token = base64::engine::general_purpose::STANDARD
                            .encode(format!("{user}:{password}"));
                        format!("Basic {token}")
                    }),
                })
            }
            "socks5" | "socks5h" => {
                let parsed =
                    Target::parse(&format!("http://{host_port}")).map_err(|_| invalid())?;
                let port = if host_port
                    .rsplit_once(':')
                    .is_some_and(|(_, port)| port.parse::<u16>().is_ok())
                {
                    parsed.port
                } else {
                    1080
                };
                Ok(Route::Socks5 {
                    host: parsed.host,
                    port,
                    credentials,
                })
            }
            _ => Err(invalid()),
        }
    }

    /// No proxy is used.
    pub fn is_direct(&self) -> bool {
        *self == Route::Direct
    }

    /// A connection to `target` (TLS included when the target wants it).
    pub async fn open(&self, target: &Target) -> Result<Box<dyn Io>, String> {
        let plain = Target {
            tls: false,
            ..target.clone()
        };
        let stream = match self {
            Route::Direct => return dial(target).await,
            Route::Http {
                proxy,
                authorization,
            } => {
                let mut stream = dial(proxy)
                    .await
                    .map_err(|error| format!("proxy: {error}"))?;
                http_connect(&mut stream, &plain, authorization.as_deref()).await?;
                stream
            }
            Route::Socks5 {
                host,
                port,
                credentials,
            } => {
                let proxy = Target {
                    tls: false,
                    host: host.clone(),
                    port: *port,
                    path: String::new(),
                };
                let mut stream = dial(&proxy)
                    .await
                    .map_err(|error| format!("proxy: {error}"))?;
                socks5_connect(&mut stream, &plain, credentials.as_ref()).await?;
                stream
            }
        };
        if target.tls {
            tls(stream, &target.host).await
        } else {
            Ok(stream)
        }
    }
}

/// `host:port` for `CONNECT` (IPv6 hosts in brackets, the port always given).
fn authority(target: &Target) -> String {
    if target.host.contains(':') {
        format!("[{}]:{}", target.host, target.port)
    } else {
        format!("{}:{}", target.host, target.port)
    }
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(_)) => {
            let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            format!("{scheme}://***@{host}")
        }
        _ => url.to_string(),
    }
}

fn percent_decode(text: &str) -> String {
    String::from_utf8_lossy(&crate::percent::decode(text)).into_owned()
}

async fn http_connect(
    stream: &mut Box<dyn Io>,
    target: &Target,
    authorization: Option<&str>,
) -> Result<(), String> {
    let authority = authority(target);
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(authorization) = authorization {
        request.push_str(&format!("Proxy-Authorization: {authorization}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|error| format!("proxy CONNECT {authority}: {error}"))?;
    // Read the answer's head byte by byte: nothing of the tunnel may be consumed.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return Err(format!("proxy CONNECT {authority}: answer head too long"));
        }
        let byte = stream
            .read_u8()
            .await
            .map_err(|error| format!("proxy CONNECT {authority}: {error}"))?;
        head.push(byte);
    }
    let status_line = String::from_utf8_lossy(&head);
    let status = status_line.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        let first = status_line.lines().next().unwrap_or("").trim();
        return Err(format!("proxy refused CONNECT {authority}: {first}"));
    }
    Ok(())
}

async fn socks5_connect(
    stream: &mut Box<dyn Io>,
    target: &Target,
    credentials: Option<&(String, String)>,
) -> Result<(), String> {
    let fail = |what: &str| format!("SOCKS5 proxy: {what}");
    let io = |error: std::io::Error| format!("SOCKS5 proxy: {error}");
    let methods: &[u8] = if credentials.is_some() {
        &[0x00, 0x02]
    } else {
        &[0x00]
    };
    let mut greeting = vec![0x05, methods.len() as u8];
    greeting.extend_from_slice(methods);
    stream.write_all(&greeting).await.map_err(io)?;
    let mut choice = [0u8; 2];
    stream.read_exact(&mut choice).await.map_err(io)?;
    match (choice, credentials) {
        ([0x05, 0x00], _) => {}
        ([0x05, 0x02], Some((user, password))) => {
            let (user, password) = (user.as_bytes(), password.as_bytes());
            if user.len() > 255 || password.len() > 255 {
                return Err(fail("username or password longer than 255 bytes"));
            }
            let mut auth = vec![0x01, user.len() as u8];
            auth.extend_from_slice(user);
            auth.push(password.len() as u8);
            auth.extend_from_slice(password);
            stream.write_all(&auth).await.map_err(io)?;
            let mut status = [0u8; 2];
            stream.read_exact(&mut status).await.map_err(io)?;
            if status[1] != 0x00 {
                return Err(fail("username or password refused"));
            }
        }
        _ => return Err(fail("no acceptable authentication method")),
    }
    let host = target.host.as_bytes();
    if host.len() > 255 {
        return Err(fail("host name too long"));
    }
    let mut request = vec![0x05, 0x01, 0x00, 0x03, host.len() as u8];
    request.extend_from_slice(host);
    request.extend_from_slice(&target.port.to_be_bytes());
    stream.write_all(&request).await.map_err(io)?;
    let mut reply = [0u8; 4];
    stream.read_exact(&mut reply).await.map_err(io)?;
    if reply[1] != 0x00 {
        return Err(fail(&format!(
            "CONNECT {}:{} refused (reply {})",
            target.host, target.port, reply[1]
        )));
    }
    let address_length = match reply[3] {
        0x01 => 4,
        0x04 => 16,
        0x03 => usize::from(stream.read_u8().await.map_err(io)?),
        other => return Err(fail(&format!("unknown address type {other}"))),
    };
    let mut rest = vec![0u8; address_length + 2];
    stream.read_exact(&mut rest).await.map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls_parse_into_routes() {
        assert_eq!(Route::parse("  ").expect("empty"), Route::Direct);
        let Route::Http {
            proxy,
            authorization,
        } = Route::parse("http://user:p%40ss@10.0.0.1:3128").expect("http")
        else {
            panic!("http route");
        };
        assert_eq!(
            (proxy.host.as_str(), proxy.port, proxy.tls),
            ("10.0.0.1", 3128, false)
        );
        assert_eq!(authorization.as_deref(), Some("Basic dXNlcjpwQHNz"));
        assert_eq!(
            Route::parse("socks5h://u:pw@proxy.lan").expect("socks"),
            Route::Socks5 {
                host: "proxy.lan".into(),
                port: 1080,
                credentials: Some(("u".into(), "pw".into()))
            }
        );
        let error = Route::parse("ftp://user:secret@x").expect_err("scheme");
        assert!(!error.contains("secret"), "{error}");
        assert!(Route::parse("not a url").is_err());
    }

    /// A one-connection SOCKS5 server that checks the handshake and then answers HTTP.
    async fn socks5_server() -> (u16, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut greeting = [0u8; 4];
            socket.read_exact(&mut greeting).await.expect("greeting");
            socket.write_all(&[0x05, 0x02]).await.expect("choice");
            let mut auth = [0u8; 7];
            socket.read_exact(&mut auth).await.expect("auth");
            socket.write_all(&[0x01, 0x00]).await.expect("auth ok");
            let mut head = [0u8; 5];
            socket.read_exact(&mut head).await.expect("request");
            let mut host = vec![0u8; usize::from(head[4]) + 2];
            socket.read_exact(&mut host).await.expect("host");
            socket
                .write_all(&[0x05, 0x00, 0x00, 0x01, 127, 0, 0, 1, 0, 80])
                .await
                .expect("reply");
            socket
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await
                .expect("answer");
            let mut seen = greeting.to_vec();
            seen.extend_from_slice(&auth);
            seen.extend_from_slice(&head);
            seen.extend_from_slice(&host);
            seen
        });
        (port, task)
    }

    #[tokio::test]
    async fn socks5_tunnels_with_username_and_password() {
        let (port, server) = socks5_server().await;
        let route = Route::parse(&format!("socks5://ab:cd@127.0.0.1:{port}")).expect("route");
        let target = Target::parse("http://prices.example:8080").expect("target");
        let mut stream = route.open(&target).await.expect("tunnel");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.expect("read");
        assert!(answer.ends_with(b"ok"));
        let seen = server.await.expect("server");
        assert_eq!(&seen[..4], &[0x05, 0x02, 0x00, 0x02]);
        assert_eq!(&seen[4..11], &[0x01, 2, b'a', b'b', 2, b'c', b'd']);
        assert_eq!(&seen[11..16], &[0x05, 0x01, 0x00, 0x03, 14]);
        assert_eq!(&seen[16..30], b"prices.example");
        assert_eq!(&seen[30..], &8080u16.to_be_bytes());
    }
}
