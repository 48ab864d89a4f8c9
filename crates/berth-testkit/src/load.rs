//! One HTTP/1.1 load generator for the tests and the bench (std only, so that
//! `bench/loadgen.rs` can include this file with `#[path]` and build with rustc alone).
//!
//! Traffic that looks like real clients': some workers keep one connection alive
//! for request after request (reconnecting when the server closes it), others
//! open a new connection for every request (`Connection: close`); every worker
//! walks the product's routes in turn (slow ones too, such as demo-app's
//! `/api/slow?ms=300`, so that requests are in flight across a switch and a
//! drain), with the product's `Host` header. Each request's status and latency
//! are recorded; [`Report::assert_clean`] fails a test on any failed request
//! (connection error, reset, timeout, an answer that is not 2xx unless allowed,
//! a stall longer than a second) or on too few requests, with a readable summary.
//!
//! Requests go only to 127.0.0.1. The load stops when [`Load::finish`] is called,
//! or by itself after `max_duration` (a test that panics never leaves it running
//! for long).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A request slower than this is a stall, counted as a failure.
pub const STALL: Duration = Duration::from_secs(1);

/// What to send, how, and for how long at most.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Port on 127.0.0.1 (the front door).
    pub port: u16,
    /// The `Host` header (the product's domain).
    pub host: String,
    /// Every route to request (path and query), visited in turn by every worker.
    pub paths: Vec<String>,
    /// Workers that keep their connection alive between requests.
    pub keep_alive_workers: usize,
    /// Workers that open a new connection for every request.
    pub new_connection_workers: usize,
    /// Extra workers, one per entry, each requesting only that route, back to back over
    /// a kept-alive connection, their starts spread over the first 300 ms. The mixed
    /// workers fall into step on a slow route (each waits for its slow answer, then
    /// all walk the fast routes together), leaving moments with no slow request in
    /// flight; two steady workers on a slow route keep one in flight at every moment.
    pub steady: Vec<String>,
    /// A 503 answer carrying `Retry-After` is not a failure (a deliberate maintenance answer).
    pub allow_maintenance: bool,
    /// A request slower than this is a failure.
    pub stall: Duration,
    /// Give up on a request (a failure) after this long without an answer.
    pub timeout: Duration,
    /// Stop by itself after this long even if nobody calls `finish`.
    pub max_duration: Duration,
    /// Extra header lines (without CRLF), e.g. `Authorization: Bearer ...`.
    pub headers: Vec<String>,
    /// Pause between two requests of one worker.
    pub pause: Duration,
}

impl LoadConfig {
    /// Defaults: 3 keep-alive workers and 2 new-connection workers on `/`, 2xx only,
    /// stall at 1 s, stop after 180 s at most.
    pub fn new(port: u16, host: &str) -> Self {
        Self {
            port,
            host: host.to_string(),
            paths: vec!["/".to_string()],
            keep_alive_workers: 3,
            new_connection_workers: 2,
            steady: Vec::new(),
            allow_maintenance: false,
            stall: STALL,
            timeout: Duration::from_secs(5),
            max_duration: Duration::from_secs(180),
            headers: Vec::new(),
            pause: Duration::from_millis(2),
        }
    }

    /// The routes to go through (each worker starts at a different one).
    pub fn paths(mut self, paths: &[&str]) -> Self {
        self.paths = paths.iter().map(|p| p.to_string()).collect();
        self
    }

    pub fn workers(mut self, keep_alive: usize, new_connection: usize) -> Self {
        self.keep_alive_workers = keep_alive;
        self.new_connection_workers = new_connection;
        self
    }

    /// Add steady workers (see [`LoadConfig::steady`]), one per route given.
    pub fn steady(mut self, routes: &[&str]) -> Self {
        self.steady.extend(routes.iter().map(|p| p.to_string()));
        self
    }

    /// Accept `503` with `Retry-After` (a maintenance answer) as a success.
    pub fn allow_maintenance(mut self) -> Self {
        self.allow_maintenance = true;
        self
    }

    pub fn header(mut self, line: &str) -> Self {
        self.headers.push(line.to_string());
        self
    }

    pub fn max_duration(mut self, d: Duration) -> Self {
        self.max_duration = d;
        self
    }

    pub fn pause(mut self, d: Duration) -> Self {
        self.pause = d;
        self
    }

    /// Start the workers.
    pub fn start(self) -> Load {
        Load::start(self)
    }
}

/// One answered (or failed) request.
#[derive(Clone, Debug)]
pub struct Sample {
    /// When it was sent, from the start of the load.
    pub at: Duration,
    pub path: String,
    /// The HTTP status, or 0 when no answer came.
    pub status: u16,
    pub latency: Duration,
    /// The `X-Berth-Version` header of the answer, if any.
    pub version: String,
    pub retry_after: bool,
    /// The connection was opened for this request (not reused).
    pub new_connection: bool,
    /// Why no answer came (connect error, reset, timeout, malformed answer).
    pub error: Option<String>,
}

/// An answer to one request, read whole.
#[derive(Clone, Debug, Default)]
pub struct Response {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn wants_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// Read one response from `r`. `Ok(None)` when the connection closed before any
/// byte of an answer (a kept-alive connection the server had closed).
pub fn read_response<R: BufRead>(r: &mut R) -> std::io::Result<Option<Response>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed in the headers",
            ));
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let mut resp = Response {
        status,
        headers,
        body: Vec::new(),
    };
    let chunked = resp
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let len = resp
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok());
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let size = size.trim().split(';').next().unwrap_or("");
            let n = usize::from_str_radix(size, 16).map_err(std::io::Error::other)?;
            let mut chunk = vec![0u8; n + 2];
            r.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            chunk.truncate(n);
            resp.body.extend_from_slice(&chunk);
        }
    } else if let Some(n) = len {
        resp.body.resize(n, 0);
        r.read_exact(&mut resp.body)?;
    } else if status >= 200 && status != 204 && status != 304 {
        r.read_to_end(&mut resp.body)?;
    }
    Ok(Some(resp))
}

fn request_bytes(host: &str, path: &str, close: bool, headers: &[String]) -> Vec<u8> {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    if close {
        req.push_str("Connection: close\r\n");
    }
    req.push_str("\r\n");
    req.into_bytes()
}

fn connect(port: u16, timeout: Duration) -> std::io::Result<BufReader<TcpStream>> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let _ = s.set_nodelay(true);
    Ok(BufReader::with_capacity(64 * 1024, s))
}

/// Load running in the background; [`Load::finish`] stops it and returns the [`Report`].
pub struct Load {
    stop: Arc<AtomicBool>,
    /// Requests answered so far (any status).
    answered: Arc<AtomicUsize>,
    workers: Vec<std::thread::JoinHandle<(Vec<Sample>, u64)>>,
    start: Instant,
    config: LoadConfig,
}

impl Load {
    pub fn start(config: LoadConfig) -> Self {
        assert!(!config.paths.is_empty(), "load: no path to request");
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let mixed = config.keep_alive_workers + config.new_connection_workers;
        assert!(mixed + config.steady.len() > 0, "load: no worker");
        let spread = Duration::from_millis(300) / config.steady.len().max(1) as u32;
        let workers = (0..mixed + config.steady.len())
            .map(|i| {
                let (stop, answered, config) = (stop.clone(), answered.clone(), config.clone());
                let route = i.checked_sub(mixed).map(|k| (k, config.steady[k].clone()));
                std::thread::spawn(move || match route {
                    None => {
                        let keep_alive = i < config.keep_alive_workers;
                        worker(
                            i,
                            keep_alive,
                            &config.paths,
                            &config,
                            &stop,
                            &answered,
                            start,
                        )
                    }
                    Some((k, route)) => {
                        std::thread::sleep(spread * k as u32);
                        worker(0, true, &[route], &config, &stop, &answered, start)
                    }
                })
            })
            .collect();
        Self {
            stop,
            answered,
            workers,
            start,
            config,
        }
    }

    /// Wait until `n` more requests have been answered than when called (so the load
    /// is known to be flowing, e.g. before and after the action under test); panics
    /// after 30 s.
    #[track_caller]
    pub fn wait_for_answers(&self, n: usize) -> &Self {
        let target = self.answered.load(Ordering::Relaxed) + n;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.answered.load(Ordering::Relaxed) < target {
            assert!(
                Instant::now() < deadline,
                "load: fewer than {n} answers in 30 s from 127.0.0.1:{} ({})",
                self.config.port,
                self.config.host
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        self
    }

    /// Requests answered so far.
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::Relaxed)
    }

    /// How long it has been running.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Stop every worker (each finishes the request it has in flight) and report.
    pub fn finish(mut self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        let mut samples = Vec::new();
        let mut stale_retries = 0;
        for w in self.workers.drain(..) {
            let (s, r) = w.join().expect("a load worker panicked");
            samples.extend(s);
            stale_retries += r;
        }
        samples.sort_by_key(|s| s.at);
        Report {
            samples,
            elapsed: self.start.elapsed(),
            stale_retries,
            config: self.config.clone(),
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn worker(
    index: usize,
    keep_alive: bool,
    paths: &[String],
    config: &LoadConfig,
    stop: &AtomicBool,
    answered: &AtomicUsize,
    start: Instant,
) -> (Vec<Sample>, u64) {
    let mut samples = Vec::new();
    let mut stale_retries = 0u64;
    let mut conn: Option<BufReader<TcpStream>> = None;
    let mut n = index;
    while !stop.load(Ordering::Relaxed) && start.elapsed() < config.max_duration {
        let path = &paths[n % paths.len()];
        n += 1;
        let req = request_bytes(&config.host, path, !keep_alive, &config.headers);
        let at = start.elapsed();
        let sent = Instant::now();
        let mut new_connection = false;
        let mut result: Result<Response, String> = Err(String::new());
        // A kept-alive connection may have been closed by the server while idle (nginx
        // closes idle connections on a reload): like every HTTP client, send the request
        // again on a new connection when the old one closed before any byte of an answer.
        for attempt in 0..2 {
            if conn.is_none() {
                match connect(config.port, config.timeout) {
                    Ok(c) => {
                        conn = Some(c);
                        new_connection = true;
                    }
                    Err(e) => {
                        result = Err(format!("connect: {e}"));
                        break;
                    }
                }
            }
            let c = conn.as_mut().expect("connected");
            // Did the server close (or reset) the connection before any byte of an answer?
            let first = c.get_mut().write_all(&req).and_then(|()| {
                loop {
                    // A signal to this process (a child exiting) interrupts the wait: not
                    // the server's doing, so wait again, as read_exact and read_line do.
                    match c.fill_buf() {
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        other => break other.map(|b| b.is_empty()),
                    }
                }
            });
            let stale = match &first {
                Ok(closed) => *closed,
                Err(e) => matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                ),
            };
            if stale && !new_connection && attempt == 0 {
                stale_retries += 1;
                conn = None;
                continue;
            }
            match first.and_then(|_| read_response(c)) {
                Ok(Some(resp)) => {
                    result = Ok(resp);
                    break;
                }
                Ok(None) => {
                    result = Err("connection closed without an answer".to_string());
                    conn = None;
                    break;
                }
                Err(e) => {
                    result = Err(format!("{:?}: {e}", e.kind()));
                    conn = None;
                    break;
                }
            }
        }
        let latency = sent.elapsed();
        let sample = match result {
            Ok(resp) => {
                if !keep_alive || resp.wants_close() {
                    conn = None;
                }
                Sample {
                    at,
                    path: path.clone(),
                    status: resp.status,
                    latency,
                    version: resp.header("x-berth-version").unwrap_or("").to_string(),
                    retry_after: resp.header("retry-after").is_some(),
                    new_connection,
                    error: None,
                }
            }
            Err(e) => Sample {
                at,
                path: path.clone(),
                status: 0,
                latency,
                version: String::new(),
                retry_after: false,
                new_connection,
                error: Some(e),
            },
        };
        let failed = sample.status == 0;
        if !failed {
            answered.fetch_add(1, Ordering::Relaxed);
        }
        samples.push(sample);
        if failed {
            // Do not spin on a refused port.
            std::thread::sleep(Duration::from_millis(10));
        } else if !config.pause.is_zero() {
            std::thread::sleep(config.pause);
        }
    }
    (samples, stale_retries)
}

/// Every request of a load run, and what to make of them.
#[derive(Clone, Debug)]
pub struct Report {
    pub samples: Vec<Sample>,
    pub elapsed: Duration,
    /// Requests sent again because a kept-alive connection had been closed while idle.
    pub stale_retries: u64,
    pub config: LoadConfig,
}

impl Report {
    pub fn requests(&self) -> usize {
        self.samples.len()
    }

    pub fn rate(&self) -> f64 {
        self.samples.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Why a sample is a failure, or None.
    pub fn failure_of(&self, s: &Sample) -> Option<String> {
        if let Some(e) = &s.error {
            return Some(e.clone());
        }
        let ok = (200..300).contains(&s.status)
            || (self.config.allow_maintenance && s.status == 503 && s.retry_after);
        if !ok {
            return Some(format!(
                "HTTP {}{}",
                s.status,
                if s.status == 503 && !s.retry_after {
                    " without Retry-After"
                } else {
                    ""
                }
            ));
        }
        if s.latency > self.config.stall {
            return Some(format!("stalled {} ms", s.latency.as_millis()));
        }
        None
    }

    /// Failed requests with the reason.
    pub fn failures(&self) -> Vec<(&Sample, String)> {
        self.samples
            .iter()
            .filter_map(|s| self.failure_of(s).map(|f| (s, f)))
            .collect()
    }

    /// Requests that got no answer or a refused one (not counting stalls).
    pub fn errors(&self) -> usize {
        self.samples
            .iter()
            .filter(|s| {
                s.error.is_some()
                    || !((200..300).contains(&s.status)
                        || (self.config.allow_maintenance && s.status == 503 && s.retry_after))
            })
            .count()
    }

    /// Answers with this status.
    pub fn count_status(&self, status: u16) -> usize {
        self.samples.iter().filter(|s| s.status == status).count()
    }

    /// The latency at quantile `q` (0.0..=1.0) of answered requests.
    pub fn percentile(&self, q: f64) -> Duration {
        let mut l: Vec<Duration> = self
            .samples
            .iter()
            .filter(|s| s.error.is_none())
            .map(|s| s.latency)
            .collect();
        if l.is_empty() {
            return Duration::ZERO;
        }
        l.sort();
        l[((l.len() as f64 - 1.0) * q).round() as usize]
    }

    pub fn max_latency(&self) -> Duration {
        self.samples
            .iter()
            .map(|s| s.latency)
            .max()
            .unwrap_or_default()
    }

    /// The versions that answered, in the order they first appeared.
    pub fn versions(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for s in &self.samples {
            if !s.version.is_empty() && !v.contains(&s.version) {
                v.push(s.version.clone());
            }
        }
        v
    }

    /// The requests sent within `around` of `at`, one line each in send order (when it
    /// was sent, how long it took, route, status, version, new or kept connection): what
    /// a failed assertion about a moment of the load shows.
    pub fn timeline(&self, at: Duration, around: Duration) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let mut out = format!("requests sent within {around:?} of {at:?}:\n");
        // The samples are in send order ([`Load::finish`] sorts them).
        for s in self
            .samples
            .iter()
            .filter(|s| s.at + around > at && s.at < at + around)
        {
            out.push_str(&format!(
                "  {:>9.1} ms +{:>6.1} ms {} {} {} {}{}\n",
                ms(s.at),
                ms(s.latency),
                s.path,
                s.status,
                s.version,
                if s.new_connection { "new" } else { "kept" },
                s.error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ));
        }
        out
    }

    /// One paragraph: counts, connections, latency, failures by kind and the first few.
    pub fn summary(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let new_conns = self.samples.iter().filter(|s| s.new_connection).count();
        let mut per_path: Vec<(String, usize, usize)> = Vec::new();
        for p in &self.config.paths {
            let of: Vec<&Sample> = self.samples.iter().filter(|s| &s.path == p).collect();
            let slow = of
                .iter()
                .filter(|s| s.latency > Duration::from_millis(100))
                .count();
            per_path.push((p.clone(), of.len(), slow));
        }
        let failures = self.failures();
        let mut kinds: Vec<(String, usize)> = Vec::new();
        for (_, f) in &failures {
            let kind = if f.starts_with("stalled") {
                "stall > 1 s".to_string()
            } else {
                f.clone()
            };
            match kinds.iter_mut().find(|(k, _)| *k == kind) {
                Some(k) => k.1 += 1,
                None => kinds.push((kind, 1)),
            }
        }
        let mut s = format!(
            "load on {} (port {}): {} requests in {:.1} s ({:.0} req/s), {} failed; \
             {} keep-alive + {} new-connection workers, {} connections opened, {} stale keep-alive retries; \
             latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; versions {:?}\n  per route (requests): {}",
            self.config.host,
            self.config.port,
            self.requests(),
            self.elapsed.as_secs_f64(),
            self.rate(),
            failures.len(),
            self.config.keep_alive_workers,
            self.config.new_connection_workers,
            new_conns,
            self.stale_retries,
            ms(self.percentile(0.5)),
            ms(self.percentile(0.99)),
            ms(self.max_latency()),
            self.versions(),
            per_path
                .iter()
                .map(|(p, n, _)| format!("{p} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        let maint = self.count_status(503);
        if maint > 0 {
            s.push_str(&format!("\n  503 answers: {maint}"));
        }
        if !kinds.is_empty() {
            s.push_str(&format!(
                "\n  failures by kind: {kinds:?}\n  first failures:"
            ));
            for (smp, f) in failures.iter().take(8) {
                s.push_str(&format!(
                    "\n    at {:.3} s {} -> {f} (latency {:.1} ms, {} connection)",
                    smp.at.as_secs_f64(),
                    smp.path,
                    ms(smp.latency),
                    if smp.new_connection { "new" } else { "kept" }
                ));
            }
        }
        s
    }

    /// Panic with the summary unless no request failed and at least `min_requests`
    /// were sent; prints the summary either way.
    #[track_caller]
    pub fn assert_clean(&self, min_requests: usize) -> &Self {
        let summary = self.summary();
        eprintln!("{summary}");
        assert!(
            self.requests() >= min_requests,
            "too few requests: {} < {min_requests}\n{summary}",
            self.requests()
        );
        let failed = self.failures().len();
        assert!(failed == 0, "{failed} requests failed\n{summary}");
        self
    }

    /// Panic unless every route was requested and some requests went both over
    /// kept-alive connections and over new ones.
    #[track_caller]
    pub fn assert_covered(&self) -> &Self {
        for p in &self.config.paths {
            assert!(
                self.samples.iter().any(|s| &s.path == p && s.status != 0),
                "route {p} was never answered\n{}",
                self.summary()
            );
        }
        if self.config.keep_alive_workers > 0 {
            assert!(
                self.samples.iter().any(|s| !s.new_connection),
                "no request reused a connection\n{}",
                self.summary()
            );
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_content_length_chunked_and_close_delimited_bodies() {
        let mut r = BufReader::new(
            &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-Berth-Version: v1\r\n\r\nabcHTTP/1.1 503 x\r\nTransfer-Encoding: chunked\r\nRetry-After: 2\r\n\r\n2\r\nhi\r\n1\r\n!\r\n0\r\n\r\n"[..],
        );
        let a = read_response(&mut r).unwrap().unwrap();
        assert_eq!((a.status, a.text().as_str()), (200, "abc"));
        assert_eq!(a.header("X-Berth-Version"), Some("v1"));
        let b = read_response(&mut r).unwrap().unwrap();
        assert_eq!((b.status, b.text().as_str()), (503, "hi!"));
        assert_eq!(b.header("retry-after"), Some("2"));
        assert!(read_response(&mut r).unwrap().is_none(), "closed");
        let mut c = BufReader::new(&b"HTTP/1.1 200 OK\r\n\r\nto the end"[..]);
        assert_eq!(read_response(&mut c).unwrap().unwrap().text(), "to the end");
        let mut torn = BufReader::new(&b"HTTP/1.1 200 OK\r\nContent-Le"[..]);
        assert!(read_response(&mut torn).is_err());
    }

    fn sample(status: u16, ms: u64, retry_after: bool, error: Option<&str>) -> Sample {
        Sample {
            at: Duration::ZERO,
            path: "/".into(),
            status,
            latency: Duration::from_millis(ms),
            version: String::new(),
            retry_after,
            new_connection: false,
            error: error.map(str::to_string),
        }
    }

    #[test]
    fn failures_are_errors_refusals_and_stalls_and_maintenance_only_when_allowed() {
        let mut r = Report {
            samples: vec![
                sample(200, 5, false, None),
                sample(204, 5, false, None),
                sample(200, 1500, false, None),
                sample(502, 5, false, None),
                sample(503, 5, true, None),
                sample(503, 5, false, None),
                sample(0, 5, false, Some("ConnectionReset: reset")),
            ],
            elapsed: Duration::from_secs(1),
            stale_retries: 0,
            config: LoadConfig::new(1, "x"),
        };
        let kinds: Vec<String> = r.failures().into_iter().map(|(_, f)| f).collect();
        assert_eq!(
            kinds,
            [
                "stalled 1500 ms",
                "HTTP 502",
                "HTTP 503",
                "HTTP 503 without Retry-After",
                "ConnectionReset: reset"
            ]
        );
        r.config.allow_maintenance = true;
        assert_eq!(r.failures().len(), 4);
        assert_eq!(r.errors(), 3);
        let clean = std::panic::catch_unwind(|| {
            r.assert_clean(1);
        });
        assert!(clean.is_err(), "failures make assert_clean panic");
    }

    #[test]
    fn too_few_requests_fail_even_when_none_failed() {
        let r = Report {
            samples: vec![sample(200, 5, false, None)],
            elapsed: Duration::from_secs(1),
            stale_retries: 0,
            config: LoadConfig::new(1, "x"),
        };
        r.assert_clean(1);
        assert!(
            std::panic::catch_unwind(|| {
                r.assert_clean(2);
            })
            .is_err()
        );
    }

    /// A server that closes every connection after one answer (without saying so, as
    /// nginx does to idle connections on a reload): a kept-alive request that meets the
    /// closed connection is sent again on a new one, not counted as failed.
    #[test]
    fn a_kept_alive_connection_closed_by_the_server_is_retried_once() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut s = s;
                let mut line = String::new();
                while r.read_line(&mut line).unwrap_or(0) > 2 {
                    line.clear();
                }
                let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            }
        });
        let load = LoadConfig::new(port, "example.test").workers(1, 0).start();
        load.wait_for_answers(20);
        let report = load.finish();
        report.assert_clean(20);
        assert!(report.stale_retries > 0, "{}", report.summary());
    }

    /// A tiny keep-alive server on 127.0.0.1: `/slow` answers after 50 ms, `/gone`
    /// closes without an answer, anything else answers 200.
    #[test]
    fn keeps_connections_alive_opens_new_ones_and_counts_what_fails() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let acc = accepted.clone();
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                acc.fetch_add(1, Ordering::Relaxed);
                std::thread::spawn(move || {
                    let mut r = BufReader::new(s.try_clone().unwrap());
                    let mut s = s;
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let mut close = false;
                        loop {
                            let mut h = String::new();
                            r.read_line(&mut h).unwrap();
                            if h.to_ascii_lowercase().starts_with("connection: close") {
                                close = true;
                            }
                            if h == "\r\n" {
                                break;
                            }
                        }
                        if line.contains("/gone") {
                            return;
                        }
                        if line.contains("/slow") {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        write!(
                            s,
                            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Berth-Version: t\r\n\r\nok"
                        )
                        .unwrap();
                        if close {
                            return;
                        }
                    }
                });
            }
        });
        let load = LoadConfig::new(port, "example.test")
            .paths(&["/", "/slow"])
            .workers(2, 1)
            .start();
        load.wait_for_answers(30);
        let report = load.finish();
        report.assert_clean(20).assert_covered();
        assert_eq!(report.versions(), ["t"]);
        let kept = report.samples.iter().filter(|s| !s.new_connection).count();
        assert!(kept > 10, "{}", report.summary());
        assert!(
            accepted.load(Ordering::Relaxed) < report.requests(),
            "keep-alive reuses connections"
        );
        assert!(report.percentile(0.99) >= Duration::from_millis(50));

        let load = LoadConfig::new(port, "example.test")
            .paths(&["/gone"])
            .workers(0, 1)
            .start();
        while load.elapsed() < Duration::from_millis(100) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let report = load.finish();
        assert!(report.requests() > 0);
        assert_eq!(
            report.failures().len(),
            report.requests(),
            "{}",
            report.summary()
        );
    }
}
