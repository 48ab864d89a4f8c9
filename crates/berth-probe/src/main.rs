//! berth-probe: a tiny, statically linked program berth puts into containers, so
//! nothing has to be in the image (no curl, no wget, no shell, no libc).
//!
//! - `berth-probe http://127.0.0.1:8011/health [TIMEOUT_MS]`: the compose health
//!   check. Exit 0 on a 2xx answer, 1 otherwise.
//! - `berth-probe check`: reads `postgres <url>` / `redis <url>` lines on stdin (so
//!   the credentials are never in argv or the environment) and logs in to each,
//!   as a product's container would. Prints one tab-separated line per target:
//!   `<kind>\t<host:port>\t<address>\tok|<failure class>\t<detail>`; exit 0 when
//!   all are ok.
//!
//! It depends on nothing but std and resolves names itself (`/etc/hosts`, then DNS
//! from `/etc/resolv.conf`): a static glibc cannot load the NSS modules.
//! berth-runtime's build script compiles this one file with rustc.

use std::io::{BufRead, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some(url) if url.starts_with("http://") => {
            let timeout = args
                .get(1)
                .and_then(|t| t.parse().ok())
                .map(Duration::from_millis)
                .unwrap_or(Duration::from_secs(5));
            match http_get(url, timeout) {
                Ok(status) if (200..300).contains(&status) => 0,
                Ok(status) => {
                    eprintln!("berth-probe: {url} answered {status}");
                    1
                }
                Err(e) => {
                    eprintln!("berth-probe: {url}: {}", e.detail);
                    1
                }
            }
        }
        Some("check") => check(),
        _ => {
            eprintln!(
                "usage: berth-probe http://HOST:PORT/PATH [TIMEOUT_MS]\n       berth-probe check   (reads `postgres URL` / `redis URL` lines on stdin)"
            );
            2
        }
    };
    std::process::exit(code);
}

/// Why a probe failed: a short class (`refused`, `timeout`, `resolve`, `unreachable`,
/// `hba`, `password`, `protected-mode`, `protocol`) and the detail.
#[derive(Debug)]
struct Fail {
    class: &'static str,
    detail: String,
}

fn fail(class: &'static str, detail: impl Into<String>) -> Fail {
    Fail {
        class,
        detail: detail.into(),
    }
}

impl From<std::io::Error> for Fail {
    fn from(e: std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        let class = match e.kind() {
            ConnectionRefused => "refused",
            TimedOut | WouldBlock => "timeout",
            AddrNotAvailable | NetworkUnreachable | HostUnreachable => "unreachable",
            _ => "io",
        };
        fail(class, e.to_string())
    }
}

/// `scheme://user:password@host:port/path`, percent-decoded.
#[derive(Debug, PartialEq)]
struct Url {
    user: String,
    password: String,
    host: String,
    port: u16,
    path: String,
}

fn parse_url(url: &str, default_port: u16) -> Option<Url> {
    let rest = url.split_once("://")?.1;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (u, h),
        None => ("", authority),
    };
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
        let (h, p) = h.split_once(']')?;
        (h, p.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default_port,
    };
    Some(Url {
        user: decode(user),
        password: decode(password),
        host: host.to_string(),
        port,
        path: path.to_string(),
    })
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 3 <= b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Resolve a host the way a container does, without NSS: an address, `/etc/hosts`, DNS.
fn resolve(host: &str) -> Result<IpAddr, Fail> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip);
    }
    if host == "localhost" {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    if let Ok(hosts) = std::fs::read_to_string("/etc/hosts") {
        for line in hosts.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut words = line.split_whitespace();
            let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) else {
                continue;
            };
            if words.any(|w| w.eq_ignore_ascii_case(host)) {
                return Ok(ip);
            }
        }
    }
    let servers: Vec<IpAddr> = std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    for server in &servers {
        if let Some(ip) = dns_a(*server, host) {
            return Ok(IpAddr::V4(ip));
        }
    }
    Err(fail(
        "resolve",
        format!("could not translate host name \"{host}\" to an address"),
    ))
}

/// One DNS A query over UDP.
fn dns_a(server: IpAddr, host: &str) -> Option<Ipv4Addr> {
    let sock = UdpSocket::bind(if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })
    .ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let id: u16 = (std::process::id() as u16) ^ 0x5a5a;
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in host.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return None;
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    sock.send_to(&q, SocketAddr::new(server, 53)).ok()?;
    let mut buf = [0u8; 1500];
    let n = sock.recv(&mut buf).ok()?;
    let r = &buf[..n];
    if r.len() < 12 || r[0..2] != id.to_be_bytes() || r[3] & 0x0f != 0 {
        return None;
    }
    let answers = u16::from_be_bytes([r[6], r[7]]);
    let skip_name = |mut i: usize| -> Option<usize> {
        loop {
            let l = *r.get(i)? as usize;
            if l == 0 {
                return Some(i + 1);
            }
            if l & 0xc0 == 0xc0 {
                return Some(i + 2);
            }
            i += l + 1;
        }
    };
    let mut i = skip_name(12)? + 4;
    for _ in 0..answers {
        i = skip_name(i)?;
        let rtype = u16::from_be_bytes([*r.get(i)?, *r.get(i + 1)?]);
        let len = u16::from_be_bytes([*r.get(i + 8)?, *r.get(i + 9)?]) as usize;
        let data = r.get(i + 10..i + 10 + len)?;
        if rtype == 1 && len == 4 {
            return Some(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        i += 10 + len;
    }
    None
}

fn connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, Fail> {
    let ip = resolve(host)?;
    let s = TcpStream::connect_timeout(&SocketAddr::new(ip, port), timeout).map_err(|e| {
        let mut f = Fail::from(e);
        f.detail = format!("connect to {host}:{port} ({ip}): {}", f.detail);
        f
    })?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    Ok(s)
}

/// GET the URL; the HTTP status.
fn http_get(url: &str, timeout: Duration) -> Result<u16, Fail> {
    let u = parse_url(url, 80).ok_or_else(|| fail("usage", format!("not a URL: {url}")))?;
    let mut s = connect(&u.host, u.port, timeout)?;
    write!(
        s,
        "GET {} HTTP/1.0\r\nHost: {}:{}\r\nUser-Agent: berth-probe\r\nConnection: close\r\n\r\n",
        u.path, u.host, u.port
    )?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") && head.len() < 1024 {
        if s.read(&mut byte)? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| fail("protocol", format!("not an HTTP answer: {}", line.trim())))
}

fn check() -> i32 {
    let mut all_ok = true;
    let stdin = std::io::stdin();
    for line in stdin.lock().lines().map_while(Result::ok) {
        let Some((kind, url)) = line.trim().split_once(' ') else {
            continue;
        };
        let timeout = Duration::from_secs(5);
        let default_port = if kind == "postgres" { 5432 } else { 6379 };
        let Some(u) = parse_url(url, default_port) else {
            all_ok = false;
            println!("{kind}\t-\t-\tusage\tnot a URL");
            continue;
        };
        let target = format!("{}:{}", u.host, u.port);
        let ip = resolve(&u.host)
            .map(|ip| ip.to_string())
            .unwrap_or_else(|_| "-".into());
        if wants_tls(kind, url) {
            // This std-only probe speaks no TLS: from the container it proves the
            // network path; berth itself logs in over TLS (provision, doctor).
            match connect(&u.host, u.port, timeout) {
                Ok(_) => println!(
                    "{kind}\t{target}\t{ip}\tok\treachable (TLS: the login is checked by berth over TLS, not from the container)"
                ),
                Err(f) => {
                    all_ok = false;
                    let detail = f.detail.replace(['\t', '\n'], " ");
                    println!("{kind}\t{target}\t{ip}\t{}\t{detail}", f.class);
                }
            }
            continue;
        }
        let result = match kind {
            "postgres" => postgres_login(&u, timeout),
            "redis" => redis_login(&u, timeout),
            _ => continue,
        };
        match result {
            Ok(()) => println!("{kind}\t{target}\t{ip}\tok\tlogged in"),
            Err(f) => {
                all_ok = false;
                let detail = f.detail.replace(['\t', '\n'], " ");
                println!("{kind}\t{target}\t{ip}\t{}\t{detail}", f.class);
            }
        }
    }
    if all_ok { 0 } else { 1 }
}

/// Does the URL ask for TLS: `rediss://`, or PostgreSQL's `sslmode` require,
/// verify-ca or verify-full (prefer and allow fall back to a plain login)?
fn wants_tls(kind: &str, url: &str) -> bool {
    match kind {
        "redis" => url.starts_with("rediss://"),
        "postgres" => url
            .split_once('?')
            .map(|(_, q)| {
                q.split('&').any(|kv| {
                    matches!(
                        kv,
                        "sslmode=require" | "sslmode=verify-ca" | "sslmode=verify-full"
                    )
                })
            })
            .unwrap_or(false),
        _ => false,
    }
}

// --- Redis -----------------------------------------------------------------

fn redis_login(u: &Url, timeout: Duration) -> Result<(), Fail> {
    let mut s = connect(&u.host, u.port, timeout)?;
    let mut cmd = |args: &[&str]| -> Result<String, Fail> {
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes())?;
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\r\n") && line.len() < 4096 {
            if s.read(&mut byte)? == 0 {
                break;
            }
            line.push(byte[0]);
        }
        Ok(String::from_utf8_lossy(&line).trim().to_string())
    };
    let reply = if u.user.is_empty() {
        cmd(&["AUTH", &u.password])?
    } else {
        cmd(&["AUTH", &u.user, &u.password])?
    };
    if reply.contains("protected mode") {
        // Its first sentence; the rest is Redis's own list of remedies.
        let first = reply
            .trim_start_matches('-')
            .split(". ")
            .next()
            .unwrap_or("");
        return Err(fail("protected-mode", first.to_string()));
    }
    if reply.starts_with("-WRONGPASS") || reply.starts_with("-ERR") {
        return Err(fail("password", reply.trim_start_matches('-').to_string()));
    }
    if reply.is_empty() {
        return Err(fail("protocol", "the server closed the connection"));
    }
    let pong = cmd(&["PING"])?;
    if pong != "+PONG" {
        return Err(fail("password", format!("PING after AUTH answered {pong}")));
    }
    Ok(())
}

// --- PostgreSQL --------------------------------------------------------------

fn pg_message(s: &mut TcpStream) -> Result<(u8, Vec<u8>), Fail> {
    let mut head = [0u8; 5];
    s.read_exact(&mut head).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            fail("protocol", "the server closed the connection")
        } else {
            Fail::from(e)
        }
    })?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if !(4..=1 << 20).contains(&len) {
        return Err(fail("protocol", "not a PostgreSQL server"));
    }
    let mut body = vec![0u8; len - 4];
    s.read_exact(&mut body)?;
    Ok((head[0], body))
}

fn pg_send(s: &mut TcpStream, tag: u8, body: &[u8]) -> Result<(), Fail> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    s.write_all(&m)?;
    Ok(())
}

/// An ErrorResponse as a failure: pg_hba refusals and wrong passwords told apart.
fn pg_error(body: &[u8]) -> Fail {
    let mut message = String::new();
    let mut code = String::new();
    for field in body.split(|b| *b == 0) {
        if let Some((&t, v)) = field.split_first() {
            let v = String::from_utf8_lossy(v).into_owned();
            match t {
                b'M' => message = v,
                b'C' => code = v,
                _ => {}
            }
        }
    }
    let class = if message.contains("pg_hba.conf") {
        "hba"
    } else if code == "28P01" || message.contains("password authentication failed") {
        "password"
    } else {
        "server"
    };
    fail(class, message)
}

fn postgres_login(u: &Url, timeout: Duration) -> Result<(), Fail> {
    let mut s = connect(&u.host, u.port, timeout)?;
    let db = u.path.trim_start_matches('/');
    let db = if db.is_empty() { u.user.as_str() } else { db };
    let mut startup = Vec::new();
    startup.extend_from_slice(&196_608u32.to_be_bytes());
    for (k, v) in [("user", u.user.as_str()), ("database", db)] {
        startup.extend_from_slice(k.as_bytes());
        startup.push(0);
        startup.extend_from_slice(v.as_bytes());
        startup.push(0);
    }
    startup.push(0);
    let mut m = ((startup.len() + 4) as u32).to_be_bytes().to_vec();
    m.extend_from_slice(&startup);
    s.write_all(&m)?;
    let mut scram: Option<Scram> = None;
    loop {
        let (tag, body) = pg_message(&mut s)?;
        match tag {
            b'E' => return Err(pg_error(&body)),
            b'R' if body.len() >= 4 => {
                let code = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                match code {
                    0 => return Ok(()),
                    3 => {
                        let mut pw = u.password.as_bytes().to_vec();
                        pw.push(0);
                        pg_send(&mut s, b'p', &pw)?;
                    }
                    10 => {
                        let c = Scram::new();
                        let first = c.client_first();
                        let mut out = b"SCRAM-SHA-256\0".to_vec();
                        out.extend_from_slice(&(first.len() as u32).to_be_bytes());
                        out.extend_from_slice(first.as_bytes());
                        pg_send(&mut s, b'p', &out)?;
                        scram = Some(c);
                    }
                    11 => {
                        let c = scram
                            .as_mut()
                            .ok_or_else(|| fail("protocol", "SASL continue before start"))?;
                        let reply = c
                            .client_final(&u.password, &String::from_utf8_lossy(&body[4..]))
                            .ok_or_else(|| fail("protocol", "unexpected SCRAM server message"))?;
                        pg_send(&mut s, b'p', reply.as_bytes())?;
                    }
                    12 => {}
                    other => {
                        return Err(fail(
                            "protocol",
                            format!(
                                "the server asked for authentication method {other}, which the probe does not speak (use scram-sha-256 in pg_hba.conf)"
                            ),
                        ));
                    }
                }
            }
            _ => {}
        }
    }
}

/// A SCRAM-SHA-256 client (RFC 5802 / 7677), as PostgreSQL uses it (no channel binding).
struct Scram {
    nonce: String,
    first_bare: String,
}

impl Scram {
    fn new() -> Self {
        let mut raw = [0u8; 18];
        if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
            let _ = f.read_exact(&mut raw);
        } else {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            raw[..16].copy_from_slice(&t.to_le_bytes());
        }
        let nonce = base64(&raw);
        Self {
            first_bare: format!("n=,r={nonce}"),
            nonce,
        }
    }

    fn client_first(&self) -> String {
        format!("n,,{}", self.first_bare)
    }

    fn client_final(&mut self, password: &str, server_first: &str) -> Option<String> {
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for part in server_first.split(',') {
            if let Some(v) = part.strip_prefix("r=") {
                nonce = Some(v);
            } else if let Some(v) = part.strip_prefix("s=") {
                salt = unbase64(v);
            } else if let Some(v) = part.strip_prefix("i=") {
                iterations = v.parse::<u32>().ok();
            }
        }
        let (nonce, salt, iterations) = (nonce?, salt?, iterations?);
        if !nonce.starts_with(&self.nonce) || iterations == 0 {
            return None;
        }
        let without_proof = format!("c=biws,r={nonce}");
        let salted = pbkdf2_sha256(password.as_bytes(), &salt, iterations);
        let client_key = hmac_sha256(&salted, b"Client Key");
        let stored_key = sha256(&client_key);
        let auth = format!("{},{server_first},{without_proof}", self.first_bare);
        let signature = hmac_sha256(&stored_key, auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature.iter())
            .map(|(a, b)| a ^ b)
            .collect();
        Some(format!("{without_proof},p={}", base64(&proof)))
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn unbase64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = B64.iter().position(|x| *x == c)? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits & 0xff) as u8);
        }
    }
    Some(out)
}

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

fn sha256(data: &[u8]) -> [u8; 32] {
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 64];
        for i in 0..16 {
            w[i] = u32::from_be_bytes([
                block[4 * i],
                block[4 * i + 1],
                block[4 * i + 2],
                block[4 * i + 3],
            ]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 32];
    for (i, v) in h.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&v.to_be_bytes());
    }
    out
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&sha256(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    inner.extend_from_slice(data);
    let mut outer: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    outer.extend_from_slice(&sha256(&inner));
    sha256(&outer)
}

/// PBKDF2-HMAC-SHA256 with one 32-byte block (SCRAM's `Hi`).
fn pbkdf2_sha256(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut s = salt.to_vec();
    s.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac_sha256(password, &s);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac_sha256(password, &u);
        for (o, x) in out.iter_mut().zip(u.iter()) {
            *o ^= x;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn tls_urls_are_told_apart() {
        assert!(wants_tls("redis", "rediss://u:p@cache:6380/0"));
        assert!(!wants_tls("redis", "redis://u:p@cache:6379/0"));
        assert!(wants_tls(
            "postgres",
            "postgresql://u:p@db/x?sslmode=verify-full&sslrootcert=/ca.pem"
        ));
        assert!(wants_tls(
            "postgres",
            "postgresql://u:p@db/x?sslmode=require"
        ));
        assert!(!wants_tls(
            "postgres",
            "postgresql://u:p@db/x?sslmode=prefer"
        ));
        assert!(!wants_tls("postgres", "postgresql://u:p@db/x"));
    }

    #[test]
    fn sha256_and_hmac_match_known_vectors() {
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(&sha256(&[b'a'; 1000])),
            "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3"
        );
        // RFC 4231 test case 2.
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn scram_matches_the_rfc_7677_example() {
        let mut c = Scram {
            nonce: "rOprNGfwEbeRWgbNEkqO".into(),
            first_bare: "n=user,r=rOprNGfwEbeRWgbNEkqO".into(),
        };
        let reply = c
            .client_final(
                "pencil",
                "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            )
            .unwrap();
        assert_eq!(
            reply,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
    }

    #[test]
    fn urls_and_base64() {
        assert_eq!(
            parse_url(
                "postgresql://bestays_user:p%40ss@host.docker.internal:5432/bestays",
                1
            ),
            Some(Url {
                user: "bestays_user".into(),
                password: "p@ss".into(),
                host: "host.docker.internal".into(),
                port: 5432,
                path: "/bestays".into(),
            })
        );
        assert_eq!(parse_url("http://127.0.0.1/x", 80).unwrap().port, 80);
        assert_eq!(base64(b"n,,"), "biws");
        assert_eq!(unbase64(&base64(b"hello!?")).unwrap(), b"hello!?");
    }
}
