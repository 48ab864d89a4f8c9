//! demo-app: the product server berth deploys in its demo and tests.
//!
//! `demo-app [serve]` listens on `$PORT` (default 8080) after `$DEMO_BOOT_DELAY_MS`
//! (real servers take seconds to start; zero-downtime tests use at least 2000) and serves
//!   GET /api/health  {"status":"ok","product":...,"version":...,"database":...,"redis":...}
//!   GET /            a line naming the product and version
//! `demo-app migrate` runs the (pretend) migration.
//!
//! Switches for tests: DEMO_FAIL_HEALTH=1 (health answers 503), DEMO_FAIL_MIGRATE=1,
//! DEMO_EXIT_AT_START=1 (exit 3 before listening). DATABASE_URL and REDIS_URL, when
//! set, are checked with a TCP connection and reported by the health check.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::Duration;

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

fn respond(mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
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
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let (status, ctype, body) = match path.split('?').next().unwrap_or("/") {
        "/api/health" | "/health" => {
            let (s, b) = health_body();
            (s, "application/json", b)
        }
        "/" => (
            200,
            "text/plain",
            format!("hello from {} {}\n", product(), version()),
        ),
        _ => (404, "text/plain", "not found\n".to_string()),
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        _ => "Service Unavailable",
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nX-Berth-Version: {}\r\nConnection: close\r\n\r\n{body}",
        body.len(),
        version()
    );
    let _ = stream.flush();
}

fn serve() -> ! {
    if flag("DEMO_EXIT_AT_START") {
        eprintln!("demo-app: told to fail at start (DEMO_EXIT_AT_START)");
        std::process::exit(3);
    }
    watch_dependencies();
    let delay = env("DEMO_BOOT_DELAY_MS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if delay > 0 {
        eprintln!("demo-app: booting for {delay} ms");
        std::thread::sleep(Duration::from_millis(delay));
    }
    let port: u16 = env("PORT").and_then(|p| p.parse().ok()).unwrap_or(8080);
    let bind = env("BIND").unwrap_or_else(|| "0.0.0.0".into());
    let listener = TcpListener::bind((bind.as_str(), port)).unwrap_or_else(|e| {
        eprintln!("demo-app: cannot listen on {bind}:{port}: {e}");
        std::process::exit(2);
    });
    eprintln!(
        "demo-app: {} {} listening on {bind}:{port}",
        product(),
        version()
    );
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || respond(stream));
    }
    std::process::exit(0)
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        None | Some("serve") => serve(),
        Some("migrate") => {
            if flag("DEMO_FAIL_MIGRATE") {
                eprintln!(
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
            eprintln!("demo-app: unknown command `{other}` (serve, migrate, health)");
            std::process::exit(2);
        }
    }
}
