//! A restore's ranged reads on the fetcher's own thread: plain HTTP/1.1
//! GETs over kept-alive connections (rustls, or TCP with --insecure-http)
//! that the fetchers take from a small pool, beside reqwest's blocking
//! client. That client hands every request to its one runtime thread,
//! which decrypts and parses the answers of all its connections and passes
//! each body over in pieces to the waiting thread, which copies it once
//! more; in a profile of a served restore that thread was a fifth of the
//! client's samples, with wake-ups and switches between the threads on
//! top. Here each fetcher decrypts its own answer and copies it once, into
//! the buffer the chunks are taken from.
//!
//! Only the expected answer is read here: `206 Partial Content` with a
//! `Content-Length` and a `Content-Range`. Anything else (an error status,
//! a token to renew, a cut connection, a proxy set in the environment) is
//! left to reqwest's path: the caller sends the request again there, and
//! it retries, renews and reports as every other call does.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::ServerName;

/// Idle connections kept (a restore keeps 8 reads in flight).
const KEPT: usize = 16;
/// The longest header block read; a longer one is left to reqwest.
const MAX_HEAD: usize = 64 << 10;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const IO_TIMEOUT: Duration = Duration::from_secs(600);

/// How much of the socket one read takes, under TLS. rustls reads the
/// socket 4 KiB at a time (its record buffer grows by that much), which
/// made a read system call, and often a wake-up, per 4 KiB of a restore;
/// it reads from this buffer instead.
const SOCKET_READ: usize = 256 << 10;

/// A socket read through a buffer, written directly.
struct Buffered(std::io::BufReader<TcpStream>);

impl Read for Buffered {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Buffered {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.get_mut().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.get_mut().flush()
    }
}

enum Stream {
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, Buffered>>),
    Plain(TcpStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tls(s) => s.read(buf),
            Stream::Plain(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tls(s) => s.write(buf),
            Stream::Plain(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Tls(s) => s.flush(),
            Stream::Plain(s) => s.flush(),
        }
    }
}

/// The server's address and how to talk to it, and the idle connections.
pub(super) struct Direct {
    host: String,
    port: u16,
    /// `host:port` as the `Host` header gives it.
    authority: String,
    /// With TLS: the name the handshake gives, and the client's set-up (the
    /// same pins or CA as reqwest's).
    tls: Option<(ServerName<'static>, Arc<rustls::ClientConfig>)>,
    idle: Mutex<Vec<Stream>>,
}

/// A ranged answer as this path reads it.
pub(super) struct Ranged {
    /// The `Content-Range` header's value.
    pub content_range: String,
    pub body: Vec<u8>,
}

impl Direct {
    /// The direct path to `base` (`https://host:port`), or `None` when
    /// reqwest must do every request: a proxy in the environment (reqwest
    /// follows it), a URL it cannot take apart, `REWIND_HTTP_DIRECT=0`.
    pub(super) fn new(base: &str, tls: &rustls::ClientConfig) -> Option<Direct> {
        if std::env::var("REWIND_HTTP_DIRECT").is_ok_and(|v| v == "0") {
            return None;
        }
        let proxied = [
            "HTTPS_PROXY",
            "https_proxy",
            "HTTP_PROXY",
            "http_proxy",
            "ALL_PROXY",
            "all_proxy",
        ]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|p| !p.is_empty()));
        if proxied {
            return None;
        }
        let url = reqwest::Url::parse(base).ok()?;
        let host = url.host_str()?.to_string();
        let port = url.port_or_known_default()?;
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        // `[::1]` is an IPv6 address in a URL; bare for the socket and TLS.
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let tls = match url.scheme() {
            "https" => Some((
                ServerName::try_from(bare.clone()).ok()?,
                Arc::new(tls.clone()),
            )),
            "http" => None,
            _ => return None,
        };
        Some(Direct {
            host: bare,
            port,
            authority,
            tls,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// `GET path` with `Range: range`: the body (at most `max` bytes) and
    /// its `Content-Range`, or `None` when the answer is not a plain 206 of
    /// at most that (or the server cannot be reached): the caller asks
    /// again through reqwest. A kept connection the server closed
    /// meanwhile is replaced by a new one.
    pub(super) fn get_range(
        &self,
        path: &str,
        range: &str,
        max: u64,
        token: &str,
    ) -> Option<Ranged> {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nRange: {range}\r\n\
             Accept-Encoding: identity\r\n\r\n",
            self.authority
        );
        let mut kept = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        loop {
            let fresh = kept.is_none();
            let mut stream = match kept.take() {
                Some(s) => s,
                None => self.connect().ok()?,
            };
            match exchange(&mut stream, request.as_bytes(), max) {
                Ok(Some((ranged, keep))) => {
                    if keep {
                        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                        if idle.len() < KEPT {
                            idle.push(stream);
                        }
                    }
                    return Some(ranged);
                }
                // Not a plain 206: for reqwest (the connection is dropped).
                Ok(None) => return None,
                // A kept connection may have been closed by the server.
                Err(_) if !fresh => continue,
                Err(_) => return None,
            }
        }
    }

    fn connect(&self) -> std::io::Result<Stream> {
        let mut last = None;
        for addr in (self.host.as_str(), self.port).to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(tcp) => {
                    tcp.set_nodelay(true)?;
                    tcp.set_read_timeout(Some(IO_TIMEOUT))?;
                    tcp.set_write_timeout(Some(IO_TIMEOUT))?;
                    return Ok(match &self.tls {
                        Some((name, config)) => {
                            let conn = rustls::ClientConnection::new(config.clone(), name.clone())
                                .map_err(std::io::Error::other)?;
                            let socket =
                                Buffered(std::io::BufReader::with_capacity(SOCKET_READ, tcp));
                            Stream::Tls(Box::new(rustls::StreamOwned::new(conn, socket)))
                        }
                        None => Stream::Plain(tcp),
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("the server's name has no address")))
    }
}

/// Send `request` and read a 206 answer of at most `max` bytes: `Ok(None)`
/// for any other answer, `Err` when the connection fails. With the answer,
/// whether the connection may be used again.
fn exchange(
    stream: &mut Stream,
    request: &[u8],
    max: u64,
) -> std::io::Result<Option<(Ranged, bool)>> {
    stream.write_all(request)?;
    stream.flush()?;
    let mut head = Vec::with_capacity(1024);
    let mut piece = [0u8; 4096];
    let end = loop {
        let n = stream.read(&mut piece)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&piece[..n]);
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        if head.len() > MAX_HEAD {
            return Ok(None);
        }
    };
    let Ok(text) = std::str::from_utf8(&head[..end]) else {
        return Ok(None);
    };
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap_or("");
    if !(status.starts_with("HTTP/1.1 206 ") || status == "HTTP/1.1 206") {
        return Ok(None);
    }
    let (mut length, mut content_range, mut keep) = (None, None, true);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Ok(None);
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse::<usize>().ok(),
            "content-range" => content_range = Some(value.to_string()),
            "connection" => keep = !value.eq_ignore_ascii_case("close"),
            // A body in another form than Content-Length says.
            "transfer-encoding" | "content-encoding" => return Ok(None),
            _ => {}
        }
    }
    let (Some(length), Some(content_range)) = (length, content_range) else {
        return Ok(None);
    };
    let already = &head[end + 4..];
    if already.len() > length || length as u64 > max {
        return Ok(None);
    }
    let mut body = Vec::with_capacity(length);
    body.extend_from_slice(already);
    Read::by_ref(stream)
        .take((length - already.len()) as u64)
        .read_to_end(&mut body)?;
    if body.len() != length {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Some((
        Ranged {
            content_range,
            body,
        },
        keep,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};

    /// A plain HTTP server on 127.0.0.1: each connection answers the
    /// requests it reads with the next of `answers` (a `None` closes the
    /// connection); returns the URL and the number of connections made.
    fn serve(answers: Vec<Vec<Option<String>>>) -> (String, Arc<Mutex<usize>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(Mutex::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for conn_answers in answers {
                let (conn, _) = listener.accept().unwrap();
                *count.lock().unwrap() += 1;
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                for answer in conn_answers {
                    let mut line = String::new();
                    while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
                        line.clear();
                    }
                    match answer {
                        Some(a) => conn.write_all(a.as_bytes()).unwrap(),
                        None => break,
                    }
                }
            }
        });
        (url, accepted)
    }

    fn partial(body: &str) -> Option<String> {
        Some(format!(
            "HTTP/1.1 206 Partial Content\r\ncontent-type: application/octet-stream\r\n\
             content-range: bytes 10-{}/100\r\ncontent-length: {}\r\n\r\n{body}",
            9 + body.len(),
            body.len()
        ))
    }

    fn direct(url: &str) -> Direct {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        Direct::new(url, &config).unwrap()
    }

    /// Two reads on one kept connection; then the server closes it, and
    /// the next read goes on a new one.
    #[test]
    fn connections_are_kept_and_replaced_when_closed() {
        let (url, accepted) = serve(vec![
            vec![partial("hello"), partial("world!"), None],
            vec![partial("again")],
        ]);
        let d = direct(&url);
        let a = d.get_range("/f", "bytes=10-14", 100, "t").unwrap();
        assert_eq!(
            (a.content_range.as_str(), &a.body[..]),
            ("bytes 10-14/100", &b"hello"[..])
        );
        let b = d.get_range("/f", "bytes=10-15", 100, "t").unwrap();
        assert_eq!(&b.body[..], b"world!");
        assert_eq!(*accepted.lock().unwrap(), 1);
        let c = d.get_range("/f", "bytes=10-14", 100, "t").unwrap();
        assert_eq!(&c.body[..], b"again");
        assert_eq!(*accepted.lock().unwrap(), 2);
    }

    /// Whatever is not a whole 206 with its length is left to reqwest.
    #[test]
    fn other_answers_are_left_to_reqwest() {
        let (url, _) = serve(vec![
            vec![Some(
                "HTTP/1.1 401 Unauthorized\r\ncontent-length: 2\r\n\r\n{}".to_string(),
            )],
            vec![Some(
                "HTTP/1.1 206 Partial Content\r\ncontent-range: bytes 0-4/9\r\n\
                 transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                    .to_string(),
            )],
            // Cut inside the body.
            vec![Some(
                "HTTP/1.1 206 Partial Content\r\ncontent-range: bytes 0-9/9\r\n\
                 content-length: 10\r\n\r\nhel"
                    .to_string(),
            )],
        ]);
        let d = direct(&url);
        assert!(d.get_range("/f", "bytes=0-4", 100, "t").is_none());
        assert!(d.get_range("/f", "bytes=0-4", 100, "t").is_none());
        assert!(d.get_range("/f", "bytes=0-9", 100, "t").is_none());
    }
}
