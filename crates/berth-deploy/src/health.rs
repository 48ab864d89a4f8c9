//! HTTP health probes against an address where a service answers.

use std::time::{Duration, Instant};

use berth_runtime::{Address, http};
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

/// GET `http://{address}{path}` with a timeout, through berth's one HTTP client
/// (the `Host` header is the address's host).
pub fn probe(address: &Address, path: &str, timeout: Duration) -> Probe {
    let url = format!("http://{address}{path}");
    let start = Instant::now();
    let result = http::Client::new(timeout).user_agent("berth-health").get(
        &url,
        Some(&address.host),
        64 * 1024,
    );
    let millis = start.elapsed().as_millis();
    match result {
        Ok(a) => Probe {
            url,
            status: Some(a.status),
            detail: a
                .body
                .chars()
                .take(200)
                .collect::<String>()
                .trim()
                .to_string(),
            millis,
        },
        Err(detail) => Probe {
            url,
            status: None,
            detail,
            millis,
        },
    }
}
