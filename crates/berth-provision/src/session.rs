//! A PostgreSQL session through `tokio-postgres`: one connection, many queries, for
//! provisioning, the state store (a session-level advisory lock lives as long as the
//! connection berth owns), the audit tail and the backup catalog queries.
//!
//! Every statement has a client-side timeout (a stalled server or a partitioned
//! network is noticed, not waited on until TCP gives up), the socket has TCP
//! keepalive, and TLS follows the URL's `sslmode` (`disable`, `prefer` (the default),
//! `require`, `verify-ca`, `verify-full`) with `sslrootcert=<CA file>` (or `system`),
//! the way libpq reads them, so `pg_dump`/`pg_restore` get the same settings
//! ([`libpq_env`]). The password never reaches a message.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::SimpleQueryMessage;
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

use crate::url::ServiceUrl;

/// How long a connection may take, unless the URL says `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one statement may take before the session is given up on, unless the
/// caller says otherwise ([`PgSession::set_timeout`], [`PgSession::open_within`]):
/// long enough for an ANALYZE of a large restored database.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// What went wrong talking to PostgreSQL. No variant carries the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PgError {
    /// The URL asks for something berth cannot do (an unknown sslmode, an unreadable CA file).
    #[error("{0}")]
    Config(String),
    /// TLS could not be set up, or the server's certificate was refused.
    #[error("{0}")]
    Tls(String),
    /// No connection (refused, unreachable, authentication failed).
    #[error("{0}")]
    Connect(String),
    /// No answer within the timeout: the session is given up (closed).
    #[error("no answer within {}s (the server or the network stalled)", .0.as_secs_f32())]
    Timeout(Duration),
    /// The server refused the statement; its message.
    #[error("{0}")]
    Server(String),
    /// The connection is gone.
    #[error("the connection closed: {0}")]
    Closed(String),
}

impl From<PgError> for String {
    fn from(e: PgError) -> String {
        e.to_string()
    }
}

pub struct PgSession {
    rt: tokio::runtime::Runtime,
    client: Option<tokio_postgres::Client>,
    conn: Option<tokio::task::JoinHandle<()>>,
    timeout: Duration,
    broken: Option<PgError>,
    timed_out: bool,
}

/// libpq connection parameters for `url` on database `db` (no password, no TLS
/// settings: those go in the environment, see [`libpq_env`]).
pub fn conninfo(url: &ServiceUrl, db: &str) -> String {
    let mut conn = format!("host={} dbname={db}", url.host);
    if let Some(p) = url.port {
        conn.push_str(&format!(" port={p}"));
    }
    if let Some(u) = &url.user {
        conn.push_str(&format!(" user={u}"));
    }
    conn
}

/// The database named in the URL's path, or `postgres`.
pub fn url_database(url: &ServiceUrl) -> &str {
    url.path
        .split('?')
        .next()
        .filter(|d| !d.is_empty())
        .unwrap_or("postgres")
}

/// The URL's query parameter `key`, percent-decoded.
pub fn url_param(url: &ServiceUrl, key: &str) -> Option<String> {
    let (_, q) = url.path.split_once('?')?;
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| crate::url::decode(v))
}

/// The TLS settings of a URL, as libpq reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl TlsMode {
    fn parse(v: &str) -> Result<Self, PgError> {
        Ok(match v {
            "disable" => Self::Disable,
            // libpq's `allow` tries plain first; berth tries TLS first, like `prefer`.
            "allow" | "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => {
                return Err(PgError::Config(format!(
                    "sslmode={other} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                )));
            }
        })
    }
}

/// `PGSSLMODE` and `PGSSLROOTCERT` for libpq programs (pg_dump, pg_restore), from the URL.
pub fn libpq_env(url: &ServiceUrl) -> Vec<(&'static str, String)> {
    let mut env = Vec::new();
    if let Some(m) = url_param(url, "sslmode") {
        env.push(("PGSSLMODE", m));
    }
    if let Some(c) = url_param(url, "sslrootcert") {
        env.push(("PGSSLROOTCERT", c));
    }
    env
}

/// The one current-thread runtime a session's socket is driven on.
fn runtime() -> Result<tokio::runtime::Runtime, PgError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| PgError::Connect(format!("could not start the client runtime: {e}")))
}

impl PgSession {
    /// Connect to `db` (the URL's own database when `None`).
    pub fn open(url: &ServiceUrl, db: Option<&str>) -> Result<Self, PgError> {
        Self::connect(url, db, None)
    }

    /// Connect to `db` with `timeout` bounding the whole connection (TCP, TLS,
    /// authentication) and then every statement: for readers that must notice a
    /// stalled server quickly (the audit tail).
    pub fn open_within(
        url: &ServiceUrl,
        db: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, PgError> {
        let mut s = Self::connect(url, db, Some(timeout))?;
        s.timeout = timeout;
        Ok(s)
    }

    fn connect(
        url: &ServiceUrl,
        db: Option<&str>,
        bound: Option<Duration>,
    ) -> Result<Self, PgError> {
        let db = db.unwrap_or_else(|| url_database(url));
        let place = format!("{} database {db}", url.redacted());
        // The password stays out of every log: the URL is logged redacted.
        tracing::debug!("connecting to {place}");
        let mode = match url_param(url, "sslmode") {
            Some(m) => TlsMode::parse(&m)?,
            None => TlsMode::Prefer,
        };
        let tls = Tls::new(mode, url_param(url, "sslrootcert").as_deref(), &url.host)?;
        let connect_timeout = url_param(url, "connect_timeout")
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|s| *s > 0)
            .map(Duration::from_secs)
            .unwrap_or(CONNECT_TIMEOUT);
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&url.host)
            .port(url.port.unwrap_or(5432))
            .dbname(db)
            .application_name("berth")
            .connect_timeout(connect_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .keepalives_interval(Duration::from_secs(10))
            .keepalives_retries(3)
            .ssl_mode(match mode {
                TlsMode::Disable => SslMode::Disable,
                TlsMode::Prefer => SslMode::Prefer,
                _ => SslMode::Require,
            });
        if let Some(u) = &url.user {
            cfg.user(u);
        }
        if let Some(pw) = &url.password {
            cfg.password(pw.as_bytes());
        }
        let rt = runtime()?;
        // connect_timeout bounds the TCP connection; a server that accepts and then
        // says nothing (stopped, overloaded) is bounded here.
        let bound = bound.unwrap_or(connect_timeout + Duration::from_secs(5));
        let connected = rt.block_on(async { tokio::time::timeout(bound, cfg.connect(tls)).await });
        let (client, connection) = match connected {
            Err(_) => {
                return Err(PgError::Timeout(bound));
            }
            Ok(Err(e)) => return Err(connect_error(&e, &place, mode)),
            Ok(Ok(c)) => c,
        };
        let conn = rt.spawn(async move {
            let _ = connection.await;
        });
        Ok(Self {
            rt,
            client: Some(client),
            conn: Some(conn),
            timeout: STATEMENT_TIMEOUT,
            broken: None,
            timed_out: false,
        })
    }

    /// Whether a statement went unanswered within the timeout (the session is closed).
    pub fn timed_out(&self) -> bool {
        self.timed_out
    }

    /// How long each later statement may take (the default is [`STATEMENT_TIMEOUT`]).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Run SQL (one statement or several, separated by `;`, in the simple query
    /// protocol) and return its rows as lines, columns joined by `|`, NULL as empty,
    /// values as PostgreSQL's text (`t`/`f` for booleans). A failed statement is an
    /// `Err` with the server's message; a timeout closes the session.
    pub fn query(&mut self, sql: &str) -> Result<Vec<String>, PgError> {
        let messages = self.run(sql)?;
        Ok(messages
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some(
                    (0..r.len())
                        .map(|i| r.get(i).unwrap_or(""))
                        .collect::<Vec<_>>()
                        .join("|"),
                ),
                _ => None,
            })
            .collect())
    }

    /// Run SQL for its effect (one statement or several).
    pub fn execute(&mut self, sql: &str) -> Result<(), PgError> {
        self.run(sql).map(|_| ())
    }

    /// Rows with their cells as they are (NULL as `None`), for values that may hold `|`.
    pub fn rows(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, PgError> {
        let messages = self.run(sql)?;
        Ok(messages
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                }
                _ => None,
            })
            .collect())
    }

    fn run(&mut self, sql: &str) -> Result<Vec<SimpleQueryMessage>, PgError> {
        if let Some(e) = &self.broken {
            return Err(e.clone());
        }
        let client = self.client.as_ref().expect("kept until drop");
        let timeout = self.timeout;
        let r = self
            .rt
            .block_on(async { tokio::time::timeout(timeout, client.simple_query(sql)).await });
        match r {
            Ok(Ok(m)) => Ok(m),
            Ok(Err(e)) => {
                let err = statement_error(&e);
                if e.is_closed() || !matches!(err, PgError::Server(_)) {
                    self.broken = Some(err.clone());
                }
                Err(err)
            }
            Err(_) => {
                // The answer may still come; this session is not to be trusted after it.
                let err = PgError::Timeout(timeout);
                self.timed_out = true;
                self.broken = Some(PgError::Closed(err.to_string()));
                if let Some(c) = self.conn.take() {
                    c.abort();
                }
                Err(err)
            }
        }
    }
}

impl Drop for PgSession {
    fn drop(&mut self) {
        // Closing the client ends the session (Terminate); give it a moment to go out.
        drop(self.client.take());
        if let Some(c) = self.conn.take()
            && self.broken.is_none()
        {
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(2), c).await });
        }
    }
}

/// The server's message of a failed statement (like psql's), or what happened to the connection.
fn statement_error(e: &tokio_postgres::Error) -> PgError {
    if let Some(db) = e.as_db_error() {
        return PgError::Server(db.message().to_string());
    }
    if e.is_closed() {
        return PgError::Closed(chain(e));
    }
    PgError::Closed(chain(e))
}

/// An error with its causes, `a: b: c`.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

fn connect_error(e: &tokio_postgres::Error, place: &str, mode: TlsMode) -> PgError {
    if let Some(db) = e.as_db_error() {
        return PgError::Connect(format!("could not connect to {place}: {}", db.message()));
    }
    let text = chain(e);
    if let Some(r) = crate::tls::find_rustls_error(e) {
        let mut why = crate::tls::describe(r, "sslrootcert");
        if matches!(
            r,
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                    | rustls::CertificateError::NotValidForNameContext { .. },
            )
        ) {
            why.push_str(" (sslmode=verify-full checks it; use the name the certificate is for)");
        }
        return PgError::Tls(format!("could not connect to {place}: {why}"));
    }
    if text.contains("server does not support TLS") {
        return PgError::Tls(format!(
            "could not connect to {place}: the server does not offer TLS and the URL asks for it (sslmode={})",
            match mode {
                TlsMode::VerifyFull => "verify-full",
                TlsMode::VerifyCa => "verify-ca",
                _ => "require",
            }
        ));
    }
    PgError::Connect(format!("could not connect to {place}: {text}"))
}

/// TLS for tokio-postgres on rustls (ring), verifying as the sslmode says.
#[derive(Clone)]
pub struct Tls {
    config: Arc<rustls::ClientConfig>,
}

impl Tls {
    fn new(mode: TlsMode, rootcert: Option<&str>, host: &str) -> Result<Self, PgError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = match rootcert {
            None => None,
            Some("system") => Some(crate::tls::system_roots()),
            Some(path) => Some(
                crate::tls::load_roots(path)
                    .map_err(|e| PgError::Config(format!("sslrootcert {path}: {e}")))?,
            ),
        };
        let verify = match (mode, roots) {
            (TlsMode::VerifyCa | TlsMode::VerifyFull, None) => {
                return Err(PgError::Config(format!(
                    "sslmode={} needs the CA's certificate: add sslrootcert=<path of the CA file> (or sslrootcert=system) to the URL",
                    if mode == TlsMode::VerifyFull {
                        "verify-full"
                    } else {
                        "verify-ca"
                    }
                )));
            }
            // As libpq: `require` with a CA file verifies the chain (not the name).
            (TlsMode::Require, Some(r)) => Some((r, false)),
            (TlsMode::VerifyCa, Some(r)) => Some((r, false)),
            (TlsMode::VerifyFull, Some(r)) => Some((r, true)),
            _ => None,
        };
        if verify.as_ref().is_some_and(|(_, full)| *full)
            && rustls_pki_types::ServerName::try_from(host.to_string()).is_err()
        {
            return Err(PgError::Config(format!(
                "`{host}` is not a host name a certificate can be checked against"
            )));
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| PgError::Tls(e.to_string()))?;
        let config = match verify {
            Some((roots, true)) => builder.with_root_certificates(roots).with_no_client_auth(),
            Some((roots, false)) => {
                let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| PgError::Tls(e.to_string()))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(crate::tls::AnyName(inner)))
                    .with_no_client_auth()
            }
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(crate::tls::Unverified(provider)))
                .with_no_client_auth(),
        };
        Ok(Self {
            config: Arc::new(config),
        })
    }
}

impl<S> MakeTlsConnect<S> for Tls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = TlsConnector;
    type Error = rustls::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<TlsConnector, rustls::Error> {
        let name = rustls_pki_types::ServerName::try_from(domain.to_string())
            .map_err(|_| rustls::Error::General(format!("`{domain}` is not a server name")))?;
        Ok(TlsConnector {
            config: self.config.clone(),
            name,
        })
    }
}

pub struct TlsConnector {
    config: Arc<rustls::ClientConfig>,
    name: rustls_pki_types::ServerName<'static>,
}

impl<S> TlsConnect<S> for TlsConnector
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.config);
        Box::pin(async move {
            connector
                .connect(self.name, stream)
                .await
                .map(|s| RustlsStream(Box::new(s)))
        })
    }
}

pub struct RustlsStream<S>(Box<tokio_rustls::client::TlsStream<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM without channel binding (as with sslmode=prefer in libpq's default).
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> ServiceUrl {
        ServiceUrl::parse(s).unwrap()
    }

    #[test]
    fn tls_settings_come_from_the_url_as_libpq_reads_them() {
        let u = url(
            "postgresql://a:pw@db.example.com:5432/app?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
        );
        assert_eq!(url_database(&u), "app");
        assert_eq!(url_param(&u, "sslrootcert").as_deref(), Some("/etc/ca.pem"));
        assert_eq!(
            libpq_env(&u),
            [
                ("PGSSLMODE", "verify-full".to_string()),
                ("PGSSLROOTCERT", "/etc/ca.pem".to_string())
            ]
        );
        assert!(libpq_env(&url("postgresql://a:pw@h/db")).is_empty());

        // Refused before connecting, with what to do, and no password.
        for (u, want) in [
            (
                "postgresql://a:pw@127.0.0.1:1/db?sslmode=verify-full",
                "sslmode=verify-full needs the CA's certificate: add sslrootcert=",
            ),
            (
                "postgresql://a:pw@127.0.0.1:1/db?sslmode=verify",
                "sslmode=verify is not one of disable, allow, prefer, require, verify-ca, verify-full",
            ),
            (
                "postgresql://a:pw@127.0.0.1:1/db?sslmode=require&sslrootcert=/nonexistent/ca.pem",
                "sslrootcert /nonexistent/ca.pem:",
            ),
        ] {
            let e = PgSession::open(&url(u), None).err().expect("refused");
            assert!(matches!(e, PgError::Config(_)), "{e:?}");
            assert!(e.to_string().contains(want), "{e}");
            assert!(!e.to_string().contains("pw"), "{e}");
        }
    }
}
