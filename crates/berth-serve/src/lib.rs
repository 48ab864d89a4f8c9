//! `berth serve`: a read-only HTTP server over what berth knows.
//!
//! - a health prober (one task per service with a health check, on the live slot),
//! - `GET /metrics` (Prometheus text, or OpenMetrics when asked for),
//! - `GET /api/products`, `/api/products/{name}`, `/api/products/{name}/deploys` (JSON),
//! - `GET /` (the dashboard page), `GET /healthz`.
//!
//! Binds to loopback unless told otherwise; with a token, every request must carry
//! `Authorization: Bearer <token>` (or the `berth_token` cookie the sign-in form sets),
//! and an address that keeps sending wrong tokens is refused for a while ([`limit`]).

pub mod limit;
pub mod metrics;
pub mod page;
pub mod probe;
pub mod state;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::limit::{Client, Limiter, Verdict};
use crate::metrics::Metrics;
use crate::state::{DeployLog, Probes, Shared, Snapshot, Sources};

/// How to serve.
pub struct Config {
    pub listen: SocketAddr,
    /// Required on every request when set. Never logged or shown.
    pub token: Option<String>,
    /// How often the collector re-reads the runtime, tags, audit log and backups.
    pub refresh: Duration,
    /// How often the page reloads itself.
    pub page_refresh: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("could not listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the HTTP server failed: {0}")]
    Server(std::io::Error),
    #[error("could not start the async runtime: {0}")]
    Runtime(std::io::Error),
}

#[cfg(test)]
mod tests {
    #[test]
    fn form_values_decode() {
        assert_eq!(super::form_decode("a%2Bb+c%3D%3d%zz"), "a+b c==%zz");
        assert!(super::same(b"abc", b"abc"));
        assert!(!super::same(b"abc", b"abd"));
        assert!(!super::same(b"abc", b"ab"));
    }
}

#[derive(Clone)]
struct App {
    snapshot: Shared,
    probes: Probes,
    metrics: Metrics,
    project: Arc<str>,
    token: Option<Arc<str>>,
    /// Failed authentications per client address.
    limiter: Arc<Limiter>,
    page_refresh: u64,
    /// The collector's period, in seconds (a snapshot older than 3 periods is stale).
    refresh: u64,
}

/// Run until SIGINT or SIGTERM. `ready` is called with the bound address.
pub fn run(
    sources: Sources,
    config: Config,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("berth-serve")
        .build()
        .map_err(ServeError::Runtime)?;
    rt.block_on(serve(sources, config, ready))
}

async fn serve(
    sources: Sources,
    config: Config,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let sources = Arc::new(sources);
    let (first, log) = {
        let s = sources.clone();
        tokio::task::spawn_blocking(move || {
            let mut log = DeployLog::new(&s.store, s.manifest.products.keys());
            let first = state::collect(&s, &mut log, &Snapshot::default());
            (first, Some(log))
        })
        .await
        .unwrap_or_default()
    };
    log_problems(&first.problems, &[]);
    let snapshot: Shared = Arc::new(RwLock::new(first));
    let probes: Probes = Arc::new(Mutex::new(Default::default()));
    let metrics = Metrics::new(snapshot.clone(), config.refresh.as_secs().max(1));
    probe::spawn_all(
        snapshot.clone(),
        probes.clone(),
        metrics.clone(),
        sources.clone(),
    );
    spawn_collector(sources.clone(), log, snapshot.clone(), config.refresh);

    let app = App {
        snapshot,
        probes,
        metrics,
        project: Arc::from(sources.manifest.project.name.as_str()),
        token: config.token.map(Arc::from),
        limiter: Arc::new(Limiter::default()),
        page_refresh: config.page_refresh.as_secs().max(1),
        refresh: config.refresh.as_secs().max(1),
    };
    let router = Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics_text))
        .route("/api/products", get(api_products))
        .route("/api/products/{name}", get(api_product))
        .route("/api/products/{name}/deploys", get(api_deploys))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/login", axum::routing::post(login))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .layer(middleware::from_fn_with_state(app.clone(), auth))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(ServeError::Server)?;
    ready(addr);
    accept_loop(listener, router, connection_cap()).await;
    Ok(())
}

/// A client has this long to send a request's whole head, and an idle keep-alive
/// connection is closed after it: idle and trickling (slowloris) connections
/// cannot pile up.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The shortest token accepted on an address other than loopback: guessing is
/// rate-limited per address, but not across many addresses.
pub const MIN_PUBLIC_TOKEN_BYTES: usize = 32;

/// At most this many connections at once (fewer under a low open-file limit).
pub const MAX_CONNECTIONS: usize = 256;

/// `MAX_CONNECTIONS`, or fewer: room is kept below the open-file limit for the
/// files, pipes and sockets berth itself needs (git, the runtime, the probes).
fn connection_cap() -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(3)
                        .and_then(|v| v.parse::<usize>().ok())
                })
        });
    match soft {
        Some(n) => MAX_CONNECTIONS.min(n.saturating_sub(64) / 2).max(8),
        None => MAX_CONNECTIONS,
    }
}

/// Accept and serve HTTP/1.1 until SIGINT/SIGTERM. Each connection has the
/// head/idle timeout; at the cap, the oldest connection is closed to make room,
/// so a flood of idle sockets cannot lock out `/healthz` or the dashboard.
async fn accept_loop(listener: tokio::net::TcpListener, router: Router, cap: usize) {
    use std::collections::VecDeque;
    let open: Arc<Mutex<VecDeque<(u64, tokio::task::AbortHandle)>>> =
        Arc::new(Mutex::new(VecDeque::new()));
    let mut next_id = 0u64;
    let mut stop = std::pin::pin!(shutdown());
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors or the like: back off instead of spinning.
                    tracing::warn!("could not accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        {
            let mut open = open.lock().unwrap_or_else(|p| p.into_inner());
            while open.len() >= cap {
                if let Some((_, oldest)) = open.pop_front() {
                    oldest.abort();
                }
            }
        }
        let id = next_id;
        next_id += 1;
        let service = hyper_util::service::TowerToHyperService::new(
            router.clone().layer(axum::Extension(ConnectInfo(peer))),
        );
        let registry = open.clone();
        // Registered before the task can end and unregister itself.
        let mut held = open.lock().unwrap_or_else(|p| p.into_inner());
        let task = tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let served = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(true)
                .serve_connection(io, service)
                .await;
            if let Err(e) = served {
                tracing::debug!("connection from {peer}: {e}");
            }
            registry
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|(i, _)| *i != id);
        });
        held.push_back((id, task.abort_handle()));
        drop(held);
    }
}

async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}

fn log_problems(now: &[String], before: &[String]) {
    for p in now.iter().filter(|p| !before.contains(p)) {
        tracing::warn!("{p}");
    }
}

/// Re-read every source each `refresh`, off the async threads (git, docker, files).
/// The deploy log moves into each refresh and back out of it, so the audit log is
/// read from where the last refresh stopped (from its start again if a refresh
/// panicked and took it along).
fn spawn_collector(
    sources: Arc<Sources>,
    mut log: Option<DeployLog>,
    snapshot: Shared,
    refresh: Duration,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(refresh.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let previous = snapshot.read().unwrap_or_else(|e| e.into_inner()).clone();
            let s = sources.clone();
            let taken = log.take();
            let next = match tokio::task::spawn_blocking(move || {
                let mut log =
                    taken.unwrap_or_else(|| DeployLog::new(&s.store, s.manifest.products.keys()));
                let started = Instant::now();
                let next = state::collect(&s, &mut log, &previous);
                tracing::debug!("collected in {:?}", started.elapsed());
                (next, previous.problems, log)
            })
            .await
            {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!("the collector failed: {e}");
                    continue;
                }
            };
            log_problems(&next.0.problems, &next.1);
            log = Some(next.2);
            *snapshot.write().unwrap_or_else(|e| e.into_inner()) = next.0;
        }
    });
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timings.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token a request carries, and whether it came in the cookie.
fn presented_token(headers: &HeaderMap) -> Option<(&str, bool)> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        // The scheme name is case-insensitive (RFC 9110).
        let (scheme, rest) = v.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| (rest.trim(), false));
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("berth_token="))
        .map(|t| (t, true))
}

/// The client a request came from (every request has one: the server is run with
/// the peer address of each connection).
fn client_of(req: &Request) -> Option<Client> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| Client::of(a.ip()))
}

/// Judge a presented (non-empty) token from `client` with the limiter, after the
/// request has arrived whole; the lockout a wrong one may start is logged once (the
/// address, never the token).
fn judge(app: &App, client: Option<Client>, given: &str, token: &str) -> Verdict {
    let right = same(given.as_bytes(), token.as_bytes());
    let Some(client) = client else {
        return if right {
            Verdict::Right
        } else {
            Verdict::Wrong(None)
        };
    };
    let verdict = app.limiter.judge(client, Instant::now(), right);
    if let Verdict::Wrong(Some(lockout)) = verdict {
        let p = app.limiter.policy();
        tracing::warn!(
            "{client}: {} wrong tokens within {}s; refusing its requests (429) for {}s",
            p.max_failures,
            p.window.as_secs(),
            lockout.as_secs()
        );
    }
    verdict
}

fn too_many(wait: Duration) -> Response {
    // Whole seconds, rounded up: a client that waits that long is let in.
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, HeaderValue::from(secs.max(1)))],
        format!(
            "too many wrong tokens from this address: try again in {}s\n",
            secs.max(1)
        ),
    )
        .into_response()
}

/// A `Set-Cookie` that removes the sign-in cookie (a stale one would count as a
/// wrong token on every page refresh).
const CLEAR_COOKIE: &str = "berth_token=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict";

async fn auth(State(app): State<App>, req: Request, next: Next) -> Response {
    let Some(token) = &app.token else {
        return next.run(req).await;
    };
    if req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    let client = client_of(&req);
    if let Some(c) = client
        && let Err(wait) = app.limiter.check(c, Instant::now())
    {
        return too_many(wait);
    }
    if req.uri().path() == "/login" {
        // The form handler counts its own failures.
        return next.run(req).await;
    }
    // No token at all is not a guess; a wrong one is.
    let presented = presented_token(req.headers()).filter(|(t, _)| !t.is_empty());
    let verdict = presented.map(|(t, _)| judge(&app, client, t, token));
    match verdict {
        Some(Verdict::Right) => return next.run(req).await,
        Some(Verdict::Locked(wait)) => return too_many(wait),
        Some(Verdict::Wrong(_)) | None => {}
    }
    let mut r = if req.uri().path() == "/" {
        // A browser cannot send a bearer header: offer a sign-in form that sets a cookie.
        (StatusCode::UNAUTHORIZED, Html(page::sign_in(&app.project))).into_response()
    } else {
        (
            StatusCode::UNAUTHORIZED,
            "this berth serve needs a bearer token: send `Authorization: Bearer <token>`\n",
        )
            .into_response()
    };
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"berth\""),
    );
    if let Some((_, true)) = presented {
        r.headers_mut()
            .insert(header::SET_COOKIE, HeaderValue::from_static(CLEAR_COOKIE));
    }
    r
}

/// `POST /login` (form field `token`): with the right token, a cookie that lets a
/// browser read the page; the token is compared, never echoed or logged.
async fn login(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: String,
) -> Response {
    let Some(token) = &app.token else {
        return (StatusCode::NOT_FOUND, "no token is configured\n").into_response();
    };
    let client = Client::of(peer.ip());
    let given = body
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .map(form_decode)
        .unwrap_or_default();
    // Judged only now that the body is here: a form posted slowly, started before
    // its address was locked out, is refused like any other request from it.
    let given = given.trim();
    let verdict = if given.is_empty() {
        Verdict::Wrong(None)
    } else {
        judge(&app, Some(client), given, token)
    };
    match verdict {
        Verdict::Right => {}
        Verdict::Locked(wait) => return too_many(wait),
        Verdict::Wrong(_) => {
            return (StatusCode::UNAUTHORIZED, Html(page::sign_in(&app.project))).into_response();
        }
    }
    let cookie = format!("berth_token={token}; Path=/; HttpOnly; SameSite=Strict");
    match HeaderValue::from_str(&cookie) {
        Ok(c) => (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, HeaderValue::from_static("/")),
                (header::SET_COOKIE, c),
            ],
        )
            .into_response(),
        Err(_) => (
            StatusCode::BAD_REQUEST,
            "this token cannot be kept in a cookie; send it as a bearer header\n",
        )
            .into_response(),
    }
}

/// Decode `application/x-www-form-urlencoded` text.
fn form_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'+', _, _) => out.push(b' '),
            (b'%', Some(h), Some(l)) => {
                out.push(h * 16 + l);
                i += 2;
            }
            (c, _, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn metrics_text(State(app): State<App>, headers: HeaderMap) -> Response {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let body = app.metrics.encode(openmetrics);
    let ctype = if openmetrics {
        metrics::OPENMETRICS_CONTENT_TYPE
    } else {
        metrics::TEXT_CONTENT_TYPE
    };
    ([(header::CONTENT_TYPE, ctype)], body).into_response()
}

fn json_response(v: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(v) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn unknown(name: &str, app: &App) -> Response {
    let snap = app.snapshot.read().unwrap_or_else(|e| e.into_inner());
    let known: Vec<&str> = snap.products.iter().map(|p| p.view.name.as_str()).collect();
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "error": format!("there is no product `{name}`"), "products": known }).to_string(),
    )
        .into_response()
}

async fn api_products(State(app): State<App>) -> Response {
    let snap = app.snapshot.read().unwrap_or_else(|e| e.into_inner());
    let views = state::views(&snap, &app.probes);
    let stale = snap.stale_reasons(app.refresh, state::now_unix());
    json_response(&json!({
        "products": views,
        "collected_unix": snap.taken_unix,
        "stale": !stale.is_empty(),
        "stale_reasons": stale,
    }))
}

async fn api_product(State(app): State<App>, Path(name): Path<String>) -> Response {
    let found = {
        let snap = app.snapshot.read().unwrap_or_else(|e| e.into_inner());
        let probes = app.probes.lock().unwrap_or_else(|e| e.into_inner());
        snap.products
            .iter()
            .find(|p| p.view.name == name)
            .map(|p| state::with_probes(&p.view, &probes))
    };
    match found {
        Some(v) => json_response(&v),
        None => unknown(&name, &app),
    }
}

#[derive(serde::Deserialize)]
struct DeploysQuery {
    limit: Option<usize>,
}

/// The newest deploys (`?limit=N`, default 50, at most the 200 kept per product);
/// `total` counts every deploy in the audit log.
async fn api_deploys(
    State(app): State<App>,
    Path(name): Path<String>,
    axum::extract::Query(q): axum::extract::Query<DeploysQuery>,
) -> Response {
    let limit = q.limit.unwrap_or(50).min(state::KEPT_EVENTS);
    let found = {
        let snap = app.snapshot.read().unwrap_or_else(|e| e.into_inner());
        snap.products.iter().find(|p| p.view.name == name).map(|p| {
            let d = &p.view.deploys;
            json!({
                "product": name,
                "total": d.success + d.failure,
                "deploys": &p.events[..p.events.len().min(limit)],
            })
        })
    };
    match found {
        Some(v) => json_response(&v),
        None => unknown(&name, &app),
    }
}

async fn page(State(app): State<App>) -> Response {
    let (products, problems) = {
        let snap = app.snapshot.read().unwrap_or_else(|e| e.into_inner());
        let probes = app.probes.lock().unwrap_or_else(|e| e.into_inner());
        (
            snap.products
                .iter()
                .map(|p| (state::with_probes(&p.view, &probes), p.events.clone()))
                .collect::<Vec<_>>(),
            {
                let mut problems: Vec<String> = snap
                    .stale_reasons(app.refresh, state::now_unix())
                    .into_iter()
                    .map(|r| format!("stale: {r}"))
                    .collect();
                problems.extend(snap.problems.iter().cloned());
                problems
            },
        )
    };
    let html = page::render(
        &app.project,
        &products,
        &problems,
        app.page_refresh,
        state::now_unix(),
    );
    let mut r = Html(html).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Whether an address is loopback (where serving without a token is safe).
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}
