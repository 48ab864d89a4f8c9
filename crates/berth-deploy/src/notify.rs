//! Deploy notifications (`[notify]`): after a deploy or rollback outcome is known,
//! POST it to a JSON webhook, a Grafana annotation and a Sentry deploy. Each is
//! tried once with the configured timeout; a failure is reported to the caller
//! (to log) and never fails the deploy. URLs and tokens come from environment
//! variables and never appear in what is returned.

use std::time::Duration;

use berth_cmd::Masker;
use berth_manifest::{Manifest, NotifyEvent};
use serde::Serialize;
use serde_json::json;

/// What happened.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub product: String,
    pub version: String,
    /// `true`: it went live; `false`: it failed and the old version kept serving.
    pub ok: bool,
    /// The deploy tag this rolled back from, for a rollback.
    pub rollback_of: Option<String>,
    pub tag: Option<String>,
    pub operator: String,
    pub tasks: Vec<String>,
    pub duration_ms: u64,
    /// A one-line reason, for failures.
    pub error: Option<String>,
    /// Unix seconds when the outcome was known.
    pub at_unix: u64,
}

impl Event {
    pub fn kind(&self) -> NotifyEvent {
        match (self.ok, &self.rollback_of) {
            (false, _) => NotifyEvent::Failure,
            (true, Some(_)) => NotifyEvent::Rollback,
            (true, None) => NotifyEvent::Success,
        }
    }

    fn name(&self) -> &'static str {
        match self.kind() {
            NotifyEvent::Success => "success",
            NotifyEvent::Failure => "failure",
            NotifyEvent::Rollback => "rollback",
        }
    }

    fn summary(&self) -> String {
        let what = if self.rollback_of.is_some() {
            "rollback"
        } else {
            "deploy"
        };
        let mut s = if self.ok {
            format!("{} {what} of {} live", self.product, self.version)
        } else {
            format!("{} {what} of {} FAILED", self.product, self.version)
        };
        s.push_str(&format!(" by {} ({} ms)", self.operator, self.duration_ms));
        if !self.tasks.is_empty() {
            s.push_str(&format!("; tasks: {}", self.tasks.join(", ")));
        }
        if let Some(e) = &self.error {
            s.push_str(&format!("; {e}"));
        }
        s
    }
}

/// The result of one notification.
#[derive(Debug, Clone, Serialize)]
pub struct Sent {
    /// `webhook`, `grafana` or `sentry`.
    pub target: &'static str,
    /// `None`: delivered; `Some(why)`: not (secrets masked).
    pub error: Option<String>,
}

/// Mask every secret (URLs and tokens from the environment) in a message.
fn masker_of(values: &[&String]) -> Masker {
    let mut m = Masker::new();
    for v in values {
        m.add(v.to_string());
    }
    m
}

fn env(var: &str) -> Result<String, String> {
    std::env::var(var)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| v.trim().to_string())
        .ok_or_else(|| format!("${var} is not set"))
}

fn post(
    agent: &ureq::Agent,
    url: &str,
    token: Option<&str>,
    body: &serde_json::Value,
) -> Result<u16, String> {
    let mut req = agent.post(url);
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    match req.send_json(body) {
        Ok(r) => Ok(r.status().as_u16()),
        Err(ureq::Error::Timeout(_)) => Err("timed out".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn expect_2xx(r: Result<u16, String>) -> Result<(), String> {
    match r? {
        s if (200..300).contains(&s) => Ok(()),
        s => Err(format!("answered HTTP {s}")),
    }
}

/// URL-encode one path segment.
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

fn rfc3339(secs: u64) -> String {
    crate::tags::utc_stamp(secs).1
}

/// Send every notification `[notify]` configures for this event. Empty when none apply.
pub fn send(m: &Manifest, ev: &Event) -> Vec<Sent> {
    let Some(n) = &m.notify else {
        return Vec::new();
    };
    if !n.on.contains(&ev.kind()) {
        return Vec::new();
    }
    // Notifications leave the machine: the environment's proxy applies to them.
    let agent = berth_runtime::http::Client::new(n.timeout.0.max(Duration::from_millis(100)))
        .proxy_from_env()
        .agent();
    let agent = &agent;
    // The targets are independent: notify them at once, so a slow one delays the others by nothing.
    let out: Vec<Sent> = std::thread::scope(|scope| {
        let mut jobs = Vec::new();
        if let Some(w) = &n.webhook {
            jobs.push(scope.spawn(move || {
                let r = env(&w.url_env).and_then(|url| {
                    let secrets = masker_of(&[&url]);
                    let body = json!({
                        "event": format!("deploy.{}", ev.name()),
                        "project": m.project.name,
                        "product": ev.product,
                        "version": ev.version,
                        "ok": ev.ok,
                        "rollback_of": ev.rollback_of,
                        "tag": ev.tag,
                        "operator": ev.operator,
                        "tasks": ev.tasks,
                        "duration_ms": ev.duration_ms,
                        "error": ev.error,
                        "at": rfc3339(ev.at_unix),
                        "text": ev.summary(),
                    });
                    expect_2xx(post(agent, &url, None, &body)).map_err(|e| secrets.mask(&e))
                });
                Sent {
                    target: "webhook",
                    error: r.err(),
                }
            }));
        }
        if let Some(g) = &n.grafana {
            jobs.push(scope.spawn(move || {
                let r = env(&g.token_env).and_then(|token| {
                    let secrets = masker_of(&[&token]);
                    let mut tags = vec![
                        "berth".to_string(),
                        ev.product.clone(),
                        format!("product:{}", ev.product),
                        format!("result:{}", ev.name()),
                    ];
                    tags.extend(g.tags.iter().cloned());
                    let mut body = json!({
                        "time": ev.at_unix.saturating_sub(ev.duration_ms / 1000) * 1000,
                        "timeEnd": ev.at_unix * 1000,
                        "tags": tags,
                        "text": ev.summary(),
                    });
                    if let Some(uid) = &g.dashboard_uid {
                        body["dashboardUID"] = uid.clone().into();
                    }
                    let url = format!("{}/api/annotations", g.url.trim_end_matches('/'));
                    expect_2xx(post(agent, &url, Some(&token), &body)).map_err(|e| secrets.mask(&e))
                });
                Sent {
                    target: "grafana",
                    error: r.err(),
                }
            }));
        }
        // A Sentry deploy says a release went live: failures have none to report.
        if let Some(s) = n.sentry.as_ref().filter(|_| ev.ok) {
            jobs.push(scope.spawn(move || {
                let r = env(&s.token_env).and_then(|token| {
                    let secrets = masker_of(&[&token]);
                    let base = format!(
                        "{}/api/0/organizations/{}",
                        s.url.trim_end_matches('/'),
                        segment(&s.org)
                    );
                    let release = format!("{}@{}", ev.product, ev.version);
                    let project = s.project.replace("{product}", &ev.product);
                    // The release must exist; 208 or 400 when it already does.
                    let created = post(
                        agent,
                        &format!("{base}/releases/"),
                        Some(&token),
                        &json!({ "version": release, "projects": [project] }),
                    )
                    .map_err(|e| secrets.mask(&e))?;
                    if !(200..300).contains(&created) && created != 400 {
                        return Err(format!(
                            "creating release {release} answered HTTP {created}"
                        ));
                    }
                    let body = json!({
                        "environment": s.environment,
                        "name": ev.tag.clone().unwrap_or_else(|| release.clone()),
                        "dateStarted": rfc3339(ev.at_unix.saturating_sub(ev.duration_ms / 1000)),
                        "dateFinished": rfc3339(ev.at_unix),
                    });
                    let url = format!("{base}/releases/{}/deploys/", segment(&release));
                    expect_2xx(post(agent, &url, Some(&token), &body)).map_err(|e| secrets.mask(&e))
                });
                Sent {
                    target: "sentry",
                    error: r.err(),
                }
            }));
        }
        jobs.into_iter().filter_map(|j| j.join().ok()).collect()
    });
    for s in &out {
        match &s.error {
            None => tracing::info!(
                "notified {} of the {} of {}",
                s.target,
                ev.name(),
                ev.product
            ),
            // The caller reports it to the person deploying; here only at debug level.
            Some(e) => tracing::debug!("could not notify {}: {e}", s.target),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_segments_and_masking() {
        let mut ev = Event {
            product: "bestays".into(),
            version: "abc".into(),
            ok: true,
            rollback_of: None,
            tag: None,
            operator: "me".into(),
            tasks: vec![],
            duration_ms: 0,
            error: None,
            at_unix: 0,
        };
        assert_eq!(ev.kind(), NotifyEvent::Success);
        ev.rollback_of = Some("t".into());
        assert_eq!(ev.kind(), NotifyEvent::Rollback);
        ev.ok = false;
        assert_eq!(ev.kind(), NotifyEvent::Failure);
        assert_eq!(segment("a b/c@1"), "a%20b%2Fc@1");
        let s = masker_of(&[&"https://hooks.example/T0/SECRET".to_string()]);
        assert_eq!(
            s.mask("error sending to https://hooks.example/T0/SECRET: refused"),
            "error sending to ****: refused"
        );
    }
}
