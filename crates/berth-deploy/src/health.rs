//! HTTP health probes against an address where a service answers.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use berth_runtime::Address;
use serde::Serialize;

/// One probe: what was asked and what came back.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    pub url: String,
    /// HTTP status, or `None` when no HTTP answer came.
    pub status: Option<u16>,
    /// The start of the body, or the connection error.
    pub detail: String,
    pub millis: u128,
}

impl Probe {
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(s) => write!(
                f,
                "{} -> {s} in {}ms: {}",
                self.url, self.millis, self.detail
            ),
            None => write!(
                f,
                "{} -> no answer after {}ms: {}",
                self.url, self.millis, self.detail
            ),
        }
    }
}

/// GET `http://{address}{path}` with a timeout.
pub fn probe(address: &Address, path: &str, timeout: Duration) -> Probe {
    let url = format!("http://{address}{path}");
    let start = Instant::now();
    let result = (|| -> std::io::Result<(u16, String)> {
        let addr = (address.host.as_str(), address.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, "the host has no address")
            })?;
        let mut s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: berth-health\r\nConnection: close\r\n\r\n",
            address.host
        )?;
        let mut buf = Vec::new();
        s.take(64 * 1024).read_to_end(&mut buf)?;
        let text = String::from_utf8_lossy(&buf);
        let status = text
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response")
            })?;
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        Ok((
            status,
            body.chars()
                .take(200)
                .collect::<String>()
                .trim()
                .to_string(),
        ))
    })();
    let millis = start.elapsed().as_millis();
    match result {
        Ok((status, detail)) => Probe {
            url,
            status: Some(status),
            detail,
            millis,
        },
        Err(e) => Probe {
            url,
            status: None,
            detail: e.to_string(),
            millis,
        },
    }
}
