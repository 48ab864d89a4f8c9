//! demo-app: the product server berth deploys in its demo and tests.
//!
//! `demo-app [serve]` listens on `$PORT` (default 8080) after `$DEMO_BOOT_DELAY_MS`
//! (real servers take seconds to start; zero-downtime tests use at least 2000) and serves
//!   GET /api/health  {"status":"ok","product":...,"version":...,"database":...,"redis":...}
//!   GET /            a line naming the product and version
//!   GET /api/listings/{id}  a pretend listing (a route with a path parameter)
//!   GET /api/slow?ms=N  answers after N ms (at most 10000): a request that takes time,
//!                    so load tests have requests in flight across a switch and a drain
//!   GET /api/db      runs `$DEMO_DB_QUERY` (default `SELECT 1`) on `$DATABASE_URL` over
//!                    one kept connection: 200 with the row count, 500 when the read fails
//!                    (a route that reads the product's data, for the restore benchmark)
//!   GET /metrics     RED metrics in the Prometheus text format: requests and latency
//!                    by method, route *template* (never the raw path; anything
//!                    unmatched is `route="other"`) and status. No `product` label:
//!                    the scrape config berth renders attaches it as a target label.
//! `demo-app migrate` runs the (pretend) migration.
//!
//! Switches for tests: DEMO_FAIL_HEALTH=1 (health answers 503), DEMO_FAIL_MIGRATE=1,
//! DEMO_EXIT_AT_START=1 (exit 3 before listening), DEMO_MIGRATE_CONNECT=1 (the migration
//! connects to DATABASE_URL and REDIS_URL first), DEMO_LOG_EVERY_MS=N (a numbered line
//! `demo-app: tick <n> at <unix ms>` every N ms on stdout, from process start, for the
//! log tests). DATABASE_URL and REDIS_URL, when
//! set, are checked with a TCP connection and reported by the health check.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// One line on stderr in one write. Stderr is unbuffered and `eprintln!` writes a
/// formatted line piece by piece, so a line of stdout (the ticks, written by another
/// thread) could land inside it in a log file both streams go to (the local runtime's).
macro_rules! eline {
    ($($arg:tt)*) => {{
        let mut line = format!($($arg)*);
        line.push('\n');
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
    }};
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn flag(name: &str) -> bool {
    env(name).is_some_and(|v| v != "0" && v != "false")
}

fn product() -> String {
    env("BERTH_PRODUCT")
        .or_else(|| env("PRODUCT_ID"))
        .unwrap_or_else(|| "demo".into())
}

fn version() -> String {
    env("BERTH_VERSION").unwrap_or_else(|| "dev".into())
}

/// `scheme://user:pw@host:port/...` -> reachable over TCP within a second?
fn reachable(url: &str) -> &'static str {
    let Some(rest) = url.split_once("://").map(|(_, r)| r) else {
        return "invalid";
    };
    let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let hostport = hostport.split(['/', '?']).next().unwrap_or("");
    let Ok(mut addrs) = hostport.to_socket_addrs() else {
        return "unresolvable";
    };
    match addrs.next() {
        Some(a) if TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok() => "ok",
        _ => "unreachable",
    }
}

/// Database and Redis reachability, refreshed in the background so a health check
/// never waits on DNS or a connect timeout.
static DEPENDENCIES: std::sync::Mutex<(&str, &str)> = std::sync::Mutex::new(("unknown", "unknown"));

fn watch_dependencies() {
    std::thread::spawn(|| {
        loop {
            let db = env("DATABASE_URL").map_or("none", |u| reachable(&u));
            let redis = env("REDIS_URL").map_or("none", |u| reachable(&u));
            if let Ok(mut d) = DEPENDENCIES.lock() {
                *d = (db, redis);
            }
            std::thread::sleep(Duration::from_secs(5));
        }
    });
}

fn health_body() -> (u16, String) {
    let (db, redis) = DEPENDENCIES
        .lock()
        .map(|d| *d)
        .unwrap_or(("unknown", "unknown"));
    let failing = flag("DEMO_FAIL_HEALTH");
    let status = if failing { "failing" } else { "ok" };
    let body = format!(
        "{{\"status\":\"{status}\",\"product\":\"{}\",\"version\":\"{}\",\"database\":\"{db}\",\"redis\":\"{redis}\"}}",
        product(),
        version()
    );
    (if failing { 503 } else { 200 }, body)
}

/// The route templates this app serves; a request matches one, or is `other`.
const ROUTES: [&str; 8] = [
    "/",
    "/api/health",
    "/health",
    "/api/listings/{id}",
    "/api/slow",
    "/api/db",
    "/metrics",
    "/api/hog",
];

/// The template `path` matches (`{x}` matches one non-empty segment), or `other`.
fn route_of(path: &str) -> &'static str {
    let segs: Vec<&str> = path.split('/').collect();
    ROUTES
        .iter()
        .find(|r| {
            let t: Vec<&str> = r.split('/').collect();
            t.len() == segs.len()
                && t.iter().zip(&segs).all(|(t, s)| {
                    if t.starts_with('{') && t.ends_with('}') {
                        !s.is_empty()
                    } else {
                        t == s
                    }
                })
        })
        .copied()
        .unwrap_or("other")
}

/// Methods outside the standard set collapse to `other`, so clients cannot mint label values.
fn method_label(m: &str) -> &'static str {
    const KNOWN: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
    KNOWN.iter().find(|k| **k == m).copied().unwrap_or("other")
}

const BUCKETS: [f64; 11] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

#[derive(Default)]
struct Red {
    /// (method, route, status) -> requests
    requests: std::collections::BTreeMap<(&'static str, &'static str, u16), u64>,
    /// (method, route) -> (bucket counts, sum of seconds, count)
    latency:
        std::collections::BTreeMap<(&'static str, &'static str), ([u64; BUCKETS.len()], f64, u64)>,
}

static RED: std::sync::Mutex<Option<Red>> = std::sync::Mutex::new(None);

fn record(method: &'static str, route: &'static str, status: u16, took: Duration) {
    let mut g = RED.lock().unwrap_or_else(|e| e.into_inner());
    let red = g.get_or_insert_with(Red::default);
    *red.requests.entry((method, route, status)).or_default() += 1;
    let secs = took.as_secs_f64();
    let h = red
        .latency
        .entry((method, route))
        .or_insert(([0; BUCKETS.len()], 0.0, 0));
    for (i, b) in BUCKETS.iter().enumerate() {
        if secs <= *b {
            h.0[i] += 1;
        }
    }
    h.1 += secs;
    h.2 += 1;
}

/// The Prometheus text exposition (format 0.0.4).
fn metrics_text() -> String {
    let g = RED.lock().unwrap_or_else(|e| e.into_inner());
    let empty = Red::default();
    let red = g.as_ref().unwrap_or(&empty);
    let mut s = String::new();
    s.push_str(
        "# HELP http_requests_total HTTP requests served, by method, route template and status.\n",
    );
    s.push_str("# TYPE http_requests_total counter\n");
    for ((m, r, st), n) in &red.requests {
        s.push_str(&format!(
            "http_requests_total{{method=\"{m}\",route=\"{r}\",status=\"{st}\"}} {n}\n"
        ));
    }
    s.push_str("# HELP http_request_duration_seconds Time to serve a request, by method and route template.\n");
    s.push_str("# TYPE http_request_duration_seconds histogram\n");
    for ((m, r), (buckets, sum, count)) in &red.latency {
        let l = format!("method=\"{m}\",route=\"{r}\"");
        for (b, n) in BUCKETS.iter().zip(buckets) {
            s.push_str(&format!(
                "http_request_duration_seconds_bucket{{{l},le=\"{b}\"}} {n}\n"
            ));
        }
        s.push_str(&format!(
            "http_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} {count}\n"
        ));
        s.push_str(&format!("http_request_duration_seconds_sum{{{l}}} {sum}\n"));
        s.push_str(&format!(
            "http_request_duration_seconds_count{{{l}}} {count}\n"
        ));
    }
    s
}

fn respond(mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut request_line = String::new();
    // A connection closed without a request (a port check) is not a request.
    if reader.read_line(&mut request_line).is_err() || request_line.trim().is_empty() {
        return;
    }
    // Drain the headers.
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {}
        }
    }
    let started = Instant::now();
    let mut parts = request_line.split_whitespace();
    let method = method_label(parts.next().unwrap_or(""));
    let target = parts.next().unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let route = route_of(path);
    let (status, ctype, body) = match route {
        "/api/health" | "/health" => {
            let (s, b) = health_body();
            (s, "application/json", b)
        }
        "/" => (
            200,
            "text/plain",
            format!("hello from {} {}\n", product(), version()),
        ),
        "/api/listings/{id}" => {
            let id = path.rsplit('/').next().unwrap_or("");
            if id.bytes().all(|b| b.is_ascii_digit()) {
                (
                    200,
                    "application/json",
                    format!("{{\"id\":{id},\"product\":\"{}\"}}", product()),
                )
            } else {
                (404, "text/plain", "no such listing\n".to_string())
            }
        }
        "/api/slow" => {
            let ms = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("ms="))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                .min(10_000);
            std::thread::sleep(Duration::from_millis(ms));
            (
                200,
                "application/json",
                format!(
                    "{{\"slept_ms\":{ms},\"product\":\"{}\",\"version\":\"{}\"}}",
                    product(),
                    version()
                ),
            )
        }
        // Tests of resource limits only, and only when DEMO_HOGS is set: `memory=1`
        // allocates (and touches) memory without bound until the kernel kills the
        // process; `cpu_ms=N` keeps a core busy for N ms.
        "/api/hog" if flag("DEMO_HOGS") => {
            let arg = |k: &str| {
                query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
                    .and_then(|v| v.parse::<u64>().ok())
            };
            if arg("memory").is_some_and(|v| v > 0) {
                let mut held: Vec<Vec<u8>> = Vec::new();
                loop {
                    held.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&held);
                }
            }
            let ms = arg("cpu_ms").unwrap_or(0).min(600_000);
            let until = Instant::now() + Duration::from_millis(ms);
            let mut x = 0u64;
            while Instant::now() < until {
                for i in 0..10_000u64 {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
                }
            }
            (200, "application/json", format!("{{\"burned_ms\":{ms}}}"))
        }
        "/api/db" => match pg::read() {
            Ok(rows) => (
                200,
                "application/json",
                format!("{{\"database\":\"ok\",\"rows\":{rows}}}"),
            ),
            Err(e) => (500, "text/plain", format!("database read failed: {e}\n")),
        },
        "/metrics" => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics_text(),
        ),
        _ => (404, "text/plain", "not found\n".to_string()),
    };
    // The scrape itself is not a request of the app's users.
    if route != "/metrics" {
        record(method, route, status, started.elapsed());
    }
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "Service Unavailable",
    };
    // One write: headers and body written piecemeal wait on Nagle and the client's
    // delayed ACK (tens of ms a response).
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nX-Berth-Version: {}\r\nConnection: close\r\n\r\n{body}",
        body.len(),
        version()
    );
    let _ = stream.write_all(response.as_bytes());
    let _ = stream.flush();
}

/// A minimal PostgreSQL client (std only): the simple query protocol over one kept
/// connection, with trust or cleartext-password authentication (what the benchmark's
/// cluster uses; anything else is a clear error).
mod pg {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::sync::Mutex;
    use std::time::Duration;

    static CONN: Mutex<Option<TcpStream>> = Mutex::new(None);

    struct Url {
        user: String,
        password: String,
        host: String,
        port: u16,
        db: String,
    }

    fn parse(url: &str) -> Result<Url, String> {
        let rest = url
            .strip_prefix("postgresql://")
            .or_else(|| url.strip_prefix("postgres://"))
            .ok_or("DATABASE_URL is not a postgresql:// URL")?;
        let (auth, rest) = rest.rsplit_once('@').unwrap_or(("", rest));
        let (user, password) = auth.split_once(':').unwrap_or((auth, ""));
        let (hostport, db) = rest.split_once('/').unwrap_or((rest, ""));
        let db = db.split('?').next().unwrap_or("");
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| "bad port in DATABASE_URL")?),
            None => (hostport, 5432),
        };
        Ok(Url {
            user: user.to_string(),
            password: password.to_string(),
            host: host.to_string(),
            port,
            db: if db.is_empty() { user } else { db }.to_string(),
        })
    }

    #[cfg(test)]
    pub fn parse_for_test(url: &str) -> (String, String, String, u16, String) {
        let u = parse(url).expect("parses");
        (u.user, u.password, u.host, u.port, u.db)
    }

    fn message(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
        let mut head = [0u8; 5];
        s.read_exact(&mut head)?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len.saturating_sub(4)];
        s.read_exact(&mut body)?;
        Ok((head[0], body))
    }

    /// An ErrorResponse as `SQLSTATE: message`.
    fn error_text(body: &[u8]) -> String {
        let (mut code, mut msg) = (String::new(), String::new());
        for field in body.split(|b| *b == 0) {
            if let Some((&t, v)) = field.split_first() {
                let v = String::from_utf8_lossy(v).into_owned();
                match t {
                    b'C' => code = v,
                    b'M' => msg = v,
                    _ => {}
                }
            }
        }
        format!("{code}: {msg}")
    }

    fn send(s: &mut TcpStream, tag: Option<u8>, body: &[u8]) -> std::io::Result<()> {
        let mut m = Vec::with_capacity(body.len() + 5);
        m.extend(tag);
        m.extend(((body.len() + 4) as u32).to_be_bytes());
        m.extend(body);
        s.write_all(&m)
    }

    fn connect(u: &Url) -> Result<TcpStream, String> {
        let mut s =
            TcpStream::connect((u.host.as_str(), u.port)).map_err(|e| format!("connect: {e}"))?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
        let mut body = 196608u32.to_be_bytes().to_vec();
        for (k, v) in [("user", &u.user), ("database", &u.db)] {
            body.extend(k.as_bytes());
            body.push(0);
            body.extend(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        send(&mut s, None, &body).map_err(|e| format!("startup: {e}"))?;
        loop {
            let (t, b) = message(&mut s).map_err(|e| format!("startup: {e}"))?;
            match t {
                b'R' => match b
                    .get(..4)
                    .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                {
                    Some(0) => {}
                    Some(3) => {
                        let mut pw = u.password.as_bytes().to_vec();
                        pw.push(0);
                        send(&mut s, Some(b'p'), &pw).map_err(|e| format!("auth: {e}"))?;
                    }
                    other => {
                        return Err(format!(
                            "authentication method {other:?} is not supported by demo-app (trust or password only)"
                        ));
                    }
                },
                b'E' => return Err(error_text(&b)),
                b'Z' => return Ok(s),
                _ => {}
            }
        }
    }

    /// Run the query; Ok(rows) or the error. `Err((true, _))`: the connection broke.
    fn query(s: &mut TcpStream, sql: &str) -> Result<u64, (bool, String)> {
        let mut body = sql.as_bytes().to_vec();
        body.push(0);
        send(s, Some(b'Q'), &body).map_err(|e| (true, format!("send: {e}")))?;
        let (mut rows, mut err) = (0, None);
        loop {
            let (t, b) = message(s).map_err(|e| (true, format!("read: {e}")))?;
            match t {
                b'D' => rows += 1,
                b'E' => {
                    let text = error_text(&b);
                    // 57P01 admin_shutdown (terminated), 57P02/57P03: the server goes away.
                    if text.starts_with("57P") {
                        return Err((true, text));
                    }
                    err = Some(text);
                }
                b'Z' => return err.map_or(Ok(rows), |e| Err((false, e))),
                _ => {}
            }
        }
    }

    /// One read of the product's data. A kept connection found broken is replaced
    /// once, as a pooled client does; a fresh connection that fails is the answer.
    pub fn read() -> Result<u64, String> {
        let url =
            std::env::var("DATABASE_URL").map_err(|_| "DATABASE_URL is not set".to_string())?;
        let u = parse(&url)?;
        let sql = std::env::var("DEMO_DB_QUERY").unwrap_or_else(|_| "SELECT 1".into());
        let mut kept = CONN.lock().unwrap_or_else(|e| e.into_inner());
        let reused = kept.is_some();
        for attempt in 0..2 {
            if kept.is_none() {
                *kept = Some(connect(&u)?);
            }
            let s = kept.as_mut().expect("connected above");
            match query(s, &sql) {
                Ok(rows) => return Ok(rows),
                Err((broken, e)) => {
                    if broken {
                        *kept = None;
                    }
                    if !(broken && reused && attempt == 0) {
                        return Err(e);
                    }
                }
            }
        }
        Err("unreachable".into())
    }
}

fn serve() -> ! {
    if flag("DEMO_EXIT_AT_START") {
        eline!("demo-app: told to fail at start (DEMO_EXIT_AT_START)");
        std::process::exit(3);
    }
    watch_dependencies();
    if let Some(every) = env("DEMO_LOG_EVERY_MS").and_then(|v| v.parse::<u64>().ok()) {
        std::thread::spawn(move || {
            for n in 0u64.. {
                let ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis())
                    .unwrap_or(0);
                println!("demo-app: tick {n} at {ms}");
                std::thread::sleep(Duration::from_millis(every.max(1)));
            }
        });
    }
    let delay = env("DEMO_BOOT_DELAY_MS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if delay > 0 {
        eline!("demo-app: booting for {delay} ms");
        std::thread::sleep(Duration::from_millis(delay));
    }
    let port: u16 = env("PORT").and_then(|p| p.parse().ok()).unwrap_or(8080);
    let bind = env("BIND").unwrap_or_else(|| "0.0.0.0".into());
    let listener = TcpListener::bind((bind.as_str(), port)).unwrap_or_else(|e| {
        eline!("demo-app: cannot listen on {bind}:{port}: {e}");
        std::process::exit(2);
    });
    eline!(
        "demo-app: {} {} listening on {bind}:{port}",
        product(),
        version()
    );
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || respond(stream));
    }
    std::process::exit(0)
}

/// DEMO_MIGRATE_CONNECT=1: the migration opens a TCP connection to DATABASE_URL and
/// REDIS_URL first, as a real one would, and fails the way drivers do when it cannot.
fn migrate_connect() {
    for var in ["DATABASE_URL", "REDIS_URL"] {
        let Some(url) = env(var) else { continue };
        let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
        let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        let hostport = hostport.split(['/', '?']).next().unwrap_or("");
        let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "0"));
        let result = hostport
            .to_socket_addrs()
            .map_err(|e| format!("could not translate host name \"{host}\" to address: {e}"))
            .and_then(|mut a| {
                a.next()
                    .ok_or_else(|| format!("could not translate host name \"{host}\" to address"))
            })
            .and_then(|a| {
                TcpStream::connect_timeout(&a, Duration::from_secs(3))
                    .map(|_| a)
                    .map_err(|e| {
                        format!(
                            "connection to server at \"{host}\" ({}), port {port} failed: {e}",
                            a.ip()
                        )
                    })
            });
        match result {
            Ok(a) => println!("demo-app migrate: {var} reachable at {a}"),
            Err(e) => {
                eline!("demo-app migrate: {e}");
                std::process::exit(1);
            }
        }
    }
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        None | Some("serve") => serve(),
        Some("migrate") => {
            if flag("DEMO_MIGRATE_CONNECT") {
                migrate_connect();
            }
            if flag("DEMO_FAIL_MIGRATE") {
                eline!(
                    "demo-app migrate: migration 0002_add_listings failed: relation \"listings\" already exists"
                );
                std::process::exit(1);
            }
            println!(
                "demo-app migrate: {} {} schema up to date",
                product(),
                version()
            );
        }
        Some("health") => {
            // For `FROM scratch` images: a container health check without curl.
            let port = env("PORT").unwrap_or_else(|| "8080".into());
            let ok = TcpStream::connect(("127.0.0.1", port.parse().unwrap_or(8080)))
                .and_then(|mut s| {
                    write!(
                        s,
                        "GET /api/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                    )?;
                    let mut line = String::new();
                    BufReader::new(s).read_line(&mut line)?;
                    Ok(line.contains(" 200 "))
                })
                .unwrap_or(false);
            std::process::exit(if ok { 0 } else { 1 });
        }
        Some(other) => {
            eline!("demo-app: unknown command `{other}` (serve, migrate, health)");
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_collapse_to_route_templates() {
        assert_eq!(route_of("/"), "/");
        assert_eq!(route_of("/api/listings/42"), "/api/listings/{id}");
        assert_eq!(route_of("/api/slow"), "/api/slow");
        assert_eq!(route_of("/api/db"), "/api/db");
        assert_eq!(route_of("/api/listings/"), "other");
        assert_eq!(route_of("/api/listings/42/photos"), "other");
        assert_eq!(route_of("/wp-admin/setup.php"), "other");
        assert_eq!(method_label("GET"), "GET");
        assert_eq!(method_label("BREW"), "other");
    }

    #[test]
    fn database_urls_parse() {
        let u =
            pg::parse_for_test("postgresql://shop_user:pw@127.0.0.1:25432/shop?sslmode=disable");
        assert_eq!(
            u,
            (
                "shop_user".into(),
                "pw".into(),
                "127.0.0.1".into(),
                25432,
                "shop".into()
            )
        );
        let u = pg::parse_for_test("postgres://app@db/");
        assert_eq!(
            u,
            ("app".into(), "".into(), "db".into(), 5432, "app".into())
        );
    }
}
