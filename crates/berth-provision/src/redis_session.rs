//! A Redis session through the `redis` crate (its sync client): one connection,
//! authenticated, on one database, for ACL provisioning, the key dump/restore of
//! backups and doctor's checks.
//!
//! `redis://` is plain TCP; `rediss://` is TLS (rustls), the server's certificate
//! checked against the CA and the host name, always. The CA is the URL's
//! `sslrootcert=<PEM file>` (as for PostgreSQL), or the public CAs without it (or
//! with `sslrootcert=system`). Connecting (TCP, TLS, AUTH) is bounded by
//! [`CONNECT_TIMEOUT`], every reply by [`REPLY_TIMEOUT`]. The password never
//! reaches a message: places are the redacted URL.

use std::time::Duration;

use redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};

use crate::url::ServiceUrl;

pub use redis::{Cmd, FromRedisValue, Value, cmd};

/// How long connecting (TCP, TLS handshake, AUTH, SELECT) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one reply may take before the session is given up on.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// What went wrong talking to Redis. No variant carries the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisError {
    /// The URL asks for something berth cannot do (another scheme, an unreadable CA file).
    #[error("{0}")]
    Config(String),
    /// TLS could not be set up, or the server's certificate was refused.
    #[error("{0}")]
    Tls(String),
    /// No connection (refused, unreachable, authentication failed).
    #[error("{0}")]
    Connect(String),
    /// No answer within the timeout.
    #[error("no answer within {}s (the server or the network stalled)", .0.as_secs_f32())]
    Timeout(Duration),
    /// The server refused the command: its reply (`NOPERM ...`, `ERR ...`).
    #[error("{0}")]
    Server(String),
    /// The connection is gone.
    #[error("the connection closed: {0}")]
    Closed(String),
}

pub struct RedisSession {
    conn: redis::Connection,
    password: Option<String>,
}

impl RedisSession {
    /// Connect to the server of `url`, authenticate as its user and select `db`.
    pub fn open(url: &ServiceUrl, db: i64) -> Result<Self, RedisError> {
        let tls = match url.scheme.as_str() {
            "redis" => false,
            "rediss" => true,
            other => {
                return Err(RedisError::Config(format!(
                    "`{other}://` is not a Redis URL: use redis:// (plain TCP) or rediss:// (TLS)"
                )));
            }
        };
        let rootcert = crate::session::url_param(url, "sslrootcert");
        if !tls && rootcert.is_some() {
            return Err(RedisError::Config(
                "sslrootcert is for TLS: use a rediss:// URL (or drop sslrootcert)".into(),
            ));
        }
        tracing::debug!("connecting to Redis at {}", url.redacted());
        let port = url.port.unwrap_or(6379);
        let mut redis = RedisConnectionInfo::default()
            .set_db(db)
            // No CLIENT SETINFO: a product's ACL user may not run CLIENT.
            .set_skip_set_lib_name();
        if let Some(u) = &url.user {
            redis = redis.set_username(u);
        }
        if let Some(p) = &url.password {
            redis = redis.set_password(p);
        }
        let bad =
            |e: redis::RedisError| RedisError::Config(mask(e.to_string(), url.password.as_deref()));
        let client = if tls {
            if rustls_pki_types::ServerName::try_from(url.host.as_str()).is_err() {
                return Err(RedisError::Config(format!(
                    "`{}` is not a host name a certificate can be checked against",
                    url.host
                )));
            }
            let root_cert = match rootcert.as_deref() {
                None | Some("system") => None,
                Some(path) => {
                    crate::tls::load_roots(path)
                        .map_err(|e| RedisError::Config(format!("sslrootcert {path}: {e}")))?;
                    Some(
                        std::fs::read(path)
                            .map_err(|e| RedisError::Config(format!("sslrootcert {path}: {e}")))?,
                    )
                }
            };
            let info = ConnectionAddr::TcpTls {
                host: url.host.clone(),
                port,
                insecure: false,
                tls_params: None,
            }
            .into_connection_info()
            .map_err(bad)?
            .set_redis_settings(redis);
            redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert,
                },
            )
            .map_err(bad)?
        } else {
            let info = ConnectionAddr::Tcp(url.host.clone(), port)
                .into_connection_info()
                .map_err(bad)?
                .set_redis_settings(redis);
            redis::Client::open(info).map_err(bad)?
        };
        let connect_failed = |e: redis::RedisError| match classify(
            &e,
            url.password.as_deref(),
            CONNECT_TIMEOUT,
        ) {
            // A TLS-only port closes a plain connection at its first bytes.
            RedisError::Closed(why) if !tls => RedisError::Connect(format!(
                "the server closed the connection without an answer ({why}); a server that only speaks TLS does that to plain connections: use a rediss:// URL"
            )),
            RedisError::Closed(why) => RedisError::Connect(format!("the connection closed: {why}")),
            other => other,
        };
        let mut conn = client
            .get_connection_with_timeout(CONNECT_TIMEOUT)
            .map_err(connect_failed)?;
        // Without a password nothing has been sent yet: a PING makes the TLS handshake
        // (and any refusal) happen here, within the connect timeout.
        conn.set_read_timeout(Some(CONNECT_TIMEOUT))
            .and_then(|_| conn.set_write_timeout(Some(CONNECT_TIMEOUT)))
            .and_then(|_| cmd("PING").query::<()>(&mut conn))
            .map_err(connect_failed)?;
        conn.set_read_timeout(Some(REPLY_TIMEOUT))
            .and_then(|_| conn.set_write_timeout(Some(REPLY_TIMEOUT)))
            .map_err(connect_failed)?;
        Ok(Self {
            conn,
            password: url.password.clone(),
        })
    }

    /// Run one command; a server error reply is `Err(RedisError::Server)`.
    pub fn query<T: FromRedisValue>(&mut self, cmd: &Cmd) -> Result<T, RedisError> {
        cmd.query(&mut self.conn)
            .map_err(|e| classify(&e, self.password.as_deref(), REPLY_TIMEOUT))
    }

    /// Run one command given as its words.
    pub fn command<S: AsRef<[u8]>>(&mut self, args: &[S]) -> Result<Value, RedisError> {
        let mut c = Cmd::new();
        for a in args {
            c.arg(a.as_ref());
        }
        self.query(&c)
    }

    /// Send every command in one write, then read their replies in order; a refused
    /// command's reply is a `Value::ServerError` in its place.
    pub fn pipeline<S: AsRef<[u8]>>(
        &mut self,
        commands: &[&[S]],
    ) -> Result<Vec<Value>, RedisError> {
        let mut p = redis::pipe();
        p.ignore_errors();
        for c in commands {
            let mut cmd = Cmd::new();
            for a in *c {
                cmd.arg(a.as_ref());
            }
            p.add_command(cmd);
        }
        p.query(&mut self.conn)
            .map_err(|e| classify(&e, self.password.as_deref(), REPLY_TIMEOUT))
    }
}

/// A `redis` crate error as a [`RedisError`], the password masked wherever it might appear.
fn classify(e: &redis::RedisError, password: Option<&str>, timeout: Duration) -> RedisError {
    let mask = |s: String| mask(s, password);
    if let Some(r) = crate::tls::find_rustls_error(e) {
        let mut why = crate::tls::describe(r, "sslrootcert");
        if matches!(
            r,
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                    | rustls::CertificateError::NotValidForNameContext { .. },
            )
        ) {
            why.push_str(" (rediss:// checks it: use the name the certificate is for)");
        }
        return RedisError::Tls(why);
    }
    if let Some(code) = e.code() {
        let text = match e.detail() {
            Some(d) => format!("{code} {d}"),
            None => code.to_string(),
        };
        return match e.kind() {
            redis::ErrorKind::AuthenticationFailed => RedisError::Connect(mask(text)),
            _ => RedisError::Server(mask(text)),
        };
    }
    if e.kind() == redis::ErrorKind::AuthenticationFailed {
        return RedisError::Connect(mask(e.to_string()));
    }
    if e.is_timeout() {
        return RedisError::Timeout(timeout);
    }
    if e.is_connection_refusal() {
        return RedisError::Connect(mask(e.to_string()));
    }
    if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
        return RedisError::Closed(mask(e.to_string()));
    }
    RedisError::Server(mask(e.to_string()))
}

/// `text` with the password masked.
fn mask(text: String, password: Option<&str>) -> String {
    match password {
        Some(p) if !p.is_empty() => text.replace(p, "****"),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_berth_cannot_use_are_refused_before_connecting() {
        for (u, want) in [
            (
                "http://a:pw@127.0.0.1:1",
                "`http://` is not a Redis URL: use redis:// (plain TCP) or rediss:// (TLS)",
            ),
            (
                "redis://a:pw@127.0.0.1:1/0?sslrootcert=/etc/ca.pem",
                "sslrootcert is for TLS: use a rediss:// URL",
            ),
            (
                "rediss://a:pw@127.0.0.1:1/0?sslrootcert=/nonexistent/ca.pem",
                "sslrootcert /nonexistent/ca.pem:",
            ),
        ] {
            let e = RedisSession::open(&ServiceUrl::parse(u).unwrap(), 0)
                .err()
                .expect("refused");
            assert!(matches!(e, RedisError::Config(_)), "{e:?}");
            assert!(e.to_string().contains(want), "{e}");
            assert!(!e.to_string().contains("pw"), "{e}");
        }
    }
}
