//! The tests' one HTTP/1.1 client: one request on a new connection
//! (`Connection: close`), answered whole ([`Response`]: status, headers, body, read
//! by Content-Length or chunks, so a server that keeps the socket open is no stall),
//! within a timeout. Any address, any `Host` header, any source address on loopback
//! (a client address of 127.0.0.0/8 for per-address limits). The load generator
//! ([`crate::load`]) shares its response reader; it is the tool for throughput.

use std::io::{BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

pub use crate::load::Response;
use crate::load::read_response;

/// One request to send; [`Request::send`] sends it.
#[derive(Clone, Debug)]
pub struct Request {
    to: SocketAddr,
    from: Option<IpAddr>,
    host: String,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<(String, Vec<u8>)>,
    timeout: Duration,
}

/// One GET to 127.0.0.1:`port` with `host` as the `Host` header.
pub fn get(port: u16, host: &str, path: &str) -> std::io::Result<Response> {
    Request::new("GET", port, path).host(host).send()
}

/// One request to 127.0.0.1:`port` with `host` as the `Host` header and an optional
/// JSON body.
pub fn request(
    port: u16,
    host: &str,
    method: &str,
    path: &str,
    json: Option<&str>,
) -> std::io::Result<Response> {
    let mut r = Request::new(method, port, path).host(host);
    if let Some(body) = json {
        r = r.body("application/json", body);
    }
    r.send()
}

impl Request {
    /// `method path` to 127.0.0.1:`port`, `Host: 127.0.0.1:port`, a 10 s timeout.
    pub fn new(method: &str, port: u16, path: &str) -> Self {
        Self::to(method, SocketAddr::from((Ipv4Addr::LOCALHOST, port)), path)
    }

    /// `method path` to `to` (any address), `Host` the address.
    pub fn to(method: &str, to: SocketAddr, path: &str) -> Self {
        Self {
            to,
            from: None,
            host: to.to_string(),
            method: method.to_string(),
            path: path.to_string(),
            headers: Vec::new(),
            body: None,
            timeout: Duration::from_secs(10),
        }
    }

    pub fn host(mut self, host: &str) -> Self {
        self.host = host.to_string();
        self
    }

    /// Connect from the source address `from` (e.g. another address of 127.0.0.0/8).
    pub fn from(mut self, from: IpAddr) -> Self {
        self.from = Some(from);
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// A body with its `Content-Type` (and `Content-Length`).
    pub fn body(mut self, content_type: &str, body: &str) -> Self {
        self.body = Some((content_type.to_string(), body.as_bytes().to_vec()));
        self
    }

    /// Connecting, each write and each read give up after `d`.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    fn connect(&self) -> std::io::Result<TcpStream> {
        let s = match self.from {
            None => TcpStream::connect_timeout(&self.to, self.timeout)?,
            Some(from) => {
                use socket2::{Domain, Socket, Type};
                let s = Socket::new(Domain::for_address(self.to), Type::STREAM, None)?;
                s.bind(&SocketAddr::new(from, 0).into())?;
                s.connect_timeout(&self.to.into(), self.timeout)?;
                s.into()
            }
        };
        s.set_read_timeout(Some(self.timeout))?;
        s.set_write_timeout(Some(self.timeout))?;
        Ok(s)
    }

    /// Send it on a new connection and read the whole answer.
    pub fn send(&self) -> std::io::Result<Response> {
        let mut s = self.connect()?;
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.method, self.path, self.host
        );
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some((ctype, body)) = &self.body {
            head.push_str(&format!(
                "Content-Type: {ctype}\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        let mut req = head.into_bytes();
        if let Some((_, body)) = &self.body {
            req.extend_from_slice(body);
        }
        s.write_all(&req)?;
        let mut r = BufReader::with_capacity(64 * 1024, s);
        read_response(&mut r)?.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the connection closed without an answer",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    #[test]
    fn a_post_from_another_loopback_address_with_host_headers_and_body() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, peer) = l.accept().unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !String::from_utf8_lossy(&got).ends_with("a=1") {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0);
                got.extend_from_slice(&buf[..n]);
            }
            // Chunked, and the socket stays open: the answer ends at its last chunk.
            s.write_all(b"HTTP/1.1 201 Created\r\nSet-Cookie: c=1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
                .unwrap();
            let text = String::from_utf8_lossy(&got).into_owned();
            std::thread::sleep(Duration::from_millis(200));
            (text, peer.ip())
        });
        let r = Request::new("POST", port, "/login")
            .host("shop.example")
            .from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9)))
            .header("Authorization", "Bearer x")
            .body("application/x-www-form-urlencoded", "a=1")
            .send()
            .unwrap();
        let (text, peer) = server.join().unwrap();
        assert!(
            text.starts_with("POST /login HTTP/1.1\r\nHost: shop.example\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nAuthorization: Bearer x\r\n"), "{text}");
        assert!(text.contains("\r\nContent-Length: 3\r\n\r\na=1"), "{text}");
        assert_eq!(peer, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9)));
        assert_eq!(r.status, 201);
        assert_eq!(r.header("set-cookie"), Some("c=1"));
        assert_eq!(r.text(), "ok");
    }

    #[test]
    fn a_server_that_never_answers_is_an_error_after_the_timeout() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let start = std::time::Instant::now();
        let e = Request::new("GET", port, "/")
            .timeout(Duration::from_millis(200))
            .send()
            .unwrap_err();
        assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{e}"
        );
        assert!(start.elapsed() < Duration::from_secs(5));
        drop(l);
    }
}
