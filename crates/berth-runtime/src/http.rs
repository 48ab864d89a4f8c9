//! The one HTTP client berth sends with (health probes, `berth serve`'s prober, the
//! front door check, notifications, the swarm registry, the demo): `ureq`, configured
//! in one place. Every agent has a whole-request timeout, answers every status as an
//! answer (not an error), follows no redirect and ignores `HTTP_PROXY`/`http_proxy`
//! unless asked, and opens a new connection per request (a probe measures a fresh
//! connection, never one a previous probe left open).

use std::io::Read;
use std::time::Duration;

/// How to build an agent. [`Client::new`] gives berth's defaults; the setters change one each.
#[derive(Clone, Debug)]
pub struct Client {
    timeout: Duration,
    connect_timeout: Option<Duration>,
    redirects: u32,
    proxy_from_env: bool,
    user_agent: &'static str,
}

/// One answer: status, headers and the start of the body.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: ureq::http::HeaderMap,
    /// The body, up to the limit the request asked for (lossy UTF-8).
    pub body: String,
}

impl Answer {
    /// The value of header `name` (any case), when it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

impl Client {
    /// `timeout` bounds the whole request (resolve, connect, send, the answer's head
    /// and the part of the body read). No redirects, no proxy, user agent `berth`.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            connect_timeout: None,
            redirects: 0,
            proxy_from_env: false,
            user_agent: "berth",
        }
    }

    /// Give up connecting after `d` (within the whole timeout).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = Some(d);
        self
    }

    /// Follow up to `n` redirects (0, the default: a 3xx is the answer).
    pub fn follow_redirects(mut self, n: u32) -> Self {
        self.redirects = n;
        self
    }

    /// Use the proxy the environment names (`HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`...):
    /// for requests that leave the machine, never for probes of local addresses.
    pub fn proxy_from_env(mut self) -> Self {
        self.proxy_from_env = true;
        self
    }

    pub fn user_agent(mut self, ua: &'static str) -> Self {
        self.user_agent = ua;
        self
    }

    /// The configured agent (for requests this module has no helper for, e.g. JSON posts).
    pub fn agent(&self) -> ureq::Agent {
        ureq::Agent::config_builder()
            .timeout_global(Some(self.timeout))
            .timeout_connect(self.connect_timeout)
            .http_status_as_error(false)
            .max_redirects(self.redirects)
            .proxy(if self.proxy_from_env {
                ureq::Proxy::try_from_env()
            } else {
                None
            })
            .user_agent(self.user_agent)
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .build()
            .into()
    }

    /// GET `url`, with `host` as the `Host` header when given (an address probed under
    /// a product's name); the first `body_limit` bytes of the body are read.
    pub fn get(&self, url: &str, host: Option<&str>, body_limit: u64) -> Result<Answer, String> {
        let mut req = self.agent().get(url);
        if let Some(h) = host {
            req = req.header("Host", h);
        }
        self.answer(req.call(), body_limit)
    }

    /// HEAD `url`, with `host` as the `Host` header when given.
    pub fn head(&self, url: &str, host: Option<&str>) -> Result<Answer, String> {
        let mut req = self.agent().head(url);
        if let Some(h) = host {
            req = req.header("Host", h);
        }
        self.answer(req.call(), 0)
    }

    fn answer(
        &self,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        body_limit: u64,
    ) -> Result<Answer, String> {
        let mut r = r.map_err(|e| self.describe(&e))?;
        let mut raw = Vec::new();
        if body_limit > 0 {
            r.body_mut()
                .as_reader()
                .take(body_limit)
                .read_to_end(&mut raw)
                .map_err(|e| e.to_string())?;
        }
        Ok(Answer {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            body: String::from_utf8_lossy(&raw).into_owned(),
        })
    }

    /// One line for a failed request: the system's words for connection errors
    /// ("Connection refused"), "no answer within N ms" for a timeout.
    pub fn describe(&self, e: &ureq::Error) -> String {
        describe(e, self.timeout)
    }
}

/// [`Client::describe`] for an error of an agent whose whole timeout was `timeout`.
pub fn describe(e: &ureq::Error, timeout: Duration) -> String {
    match e {
        ureq::Error::Timeout(ureq::Timeout::Connect) => "connect timed out".into(),
        ureq::Error::Timeout(_) => format!("no answer within {} ms", timeout.as_millis()),
        ureq::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;
    use std::time::Instant;

    /// A server on a free port that answers one request with `answer` (after reading
    /// the head) and returns the head it read.
    fn serve_once(answer: &'static str) -> (u16, std::thread::JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            s.write_all(answer.as_bytes()).unwrap();
            String::from_utf8_lossy(&head).into_owned()
        });
        (port, h)
    }

    #[test]
    fn get_sends_the_host_asked_and_reads_status_headers_and_body_up_to_the_limit() {
        let (port, h) = serve_once(
            "HTTP/1.1 503 Busy\r\nX-Berth-Version: v7\r\nContent-Length: 10\r\nConnection: close\r\n\r\n0123456789",
        );
        let a = Client::new(Duration::from_secs(5))
            .user_agent("berth-test")
            .get(
                &format!("http://127.0.0.1:{port}/health"),
                Some("shop.example"),
                4,
            )
            .unwrap();
        let head = h.join().unwrap().to_ascii_lowercase();
        assert!(head.starts_with("get /health http/1.1\r\n"), "{head}");
        assert!(head.contains("\r\nhost: shop.example\r\n"), "{head}");
        assert!(head.contains("\r\nuser-agent: berth-test\r\n"), "{head}");
        assert_eq!(a.status, 503);
        assert!(!a.ok());
        assert_eq!(a.header("x-berth-version"), Some("v7"));
        assert_eq!(a.body, "0123");
    }

    #[test]
    fn a_redirect_is_the_answer_unless_following_is_asked() {
        let (port, h) = serve_once(
            "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:9/elsewhere\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        let a = Client::new(Duration::from_secs(5))
            .get(&format!("http://127.0.0.1:{port}/"), None, 0)
            .unwrap();
        h.join().unwrap();
        assert_eq!(a.status, 302);
        assert_eq!(a.header("location"), Some("http://127.0.0.1:9/elsewhere"));
    }

    #[test]
    fn a_server_that_never_answers_fails_within_the_timeout() {
        // Accepts (the kernel does, from the backlog) and never answers.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let start = Instant::now();
        let e = Client::new(Duration::from_millis(300))
            .get(&format!("http://127.0.0.1:{port}/"), None, 0)
            .unwrap_err();
        let took = start.elapsed();
        assert_eq!(e, "no answer within 300 ms");
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(5),
            "{took:?}"
        );
        drop(l);
    }

    #[test]
    fn a_refused_connection_says_so() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let e = Client::new(Duration::from_secs(5))
            .get(&format!("http://127.0.0.1:{port}/"), None, 0)
            .unwrap_err();
        assert!(e.to_ascii_lowercase().contains("connection refused"), "{e}");
    }

    #[test]
    fn no_proxy_from_the_environment_unless_asked() {
        // The agent's own configuration: setting HTTP_PROXY here would race other tests.
        assert!(
            Client::new(Duration::from_secs(1))
                .agent()
                .config()
                .proxy()
                .is_none()
        );
        assert_eq!(
            Client::new(Duration::from_secs(1))
                .agent()
                .config()
                .max_redirects(),
            0
        );
    }
}
