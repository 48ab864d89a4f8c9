//! `[notify]`: deploy, failure and rollback outcomes POSTed to a webhook, Grafana's
//! annotation API and Sentry's deploy API (here: one real HTTP server on loopback
//! that records what it receives and answers like those services), and a dead
//! target that only warns.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use crate::deploy::{Site, port_pair};

#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    authorization: Option<String>,
    body: serde_json::Value,
}

/// An HTTP server recording every request; answers 201 with `{}`.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn start() -> Self {
        let port = port_pair();
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let method = parts.next().unwrap_or("").to_string();
                let path = parts.next().unwrap_or("").to_string();
                let (mut len, mut authorization) = (0usize, None);
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    let (k, v) = h.split_once(':').unwrap_or((&h, ""));
                    match k.to_ascii_lowercase().as_str() {
                        "content-length" => len = v.trim().parse().unwrap_or(0),
                        "authorization" => authorization = Some(v.trim().to_string()),
                        _ => {}
                    }
                }
                let mut body = vec![0u8; len];
                let _ = reader.read_exact(&mut body);
                sink.lock().unwrap().push(Received {
                    method,
                    path,
                    authorization,
                    body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
                });
                let mut s = stream;
                let _ = s.write_all(
                    b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                );
            }
        });
        Self { port, got }
    }

    fn take(&self) -> Vec<Received> {
        std::mem::take(&mut *self.got.lock().unwrap())
    }
}

const GRAFANA_TOKEN: &str = "glsa_test_token_never_printed_0123456789";
const SENTRY_TOKEN: &str = "sntrys_test_token_never_printed_0123456789";

#[test]
fn deploy_outcomes_notify_webhook_grafana_and_sentry_and_a_dead_target_only_warns() {
    let site = Site::new(0);
    let rx = Receiver::start();
    let base = std::fs::read_to_string(site.repo.path().join("berth.toml")).unwrap();
    let with_notify = format!(
        "{base}\n[notify]\ntimeout = \"3s\"\n\n[notify.webhook]\nurl_env = \"BERTH_TEST_WEBHOOK_URL\"\n\n\
         [notify.grafana]\nurl = \"http://127.0.0.1:{p}/grafana\"\ntoken_env = \"BERTH_TEST_GRAFANA_TOKEN\"\ntags = [\"prod\"]\n\n\
         [notify.sentry]\nurl = \"http://127.0.0.1:{p}/sentry\"\norg = \"acme\"\nproject = \"{{product}}-web\"\ntoken_env = \"BERTH_TEST_SENTRY_TOKEN\"\n",
        p = rx.port
    );
    site.repo.write("berth.toml", &with_notify);
    site.repo
        .commit_all("chore: notify (TASK-5-notify-bestays)");
    let webhook = format!("http://127.0.0.1:{}/hooks/T0/SECRETPATH", rx.port);
    let env = [
        ("BERTH_TEST_WEBHOOK_URL", webhook.as_str()),
        ("BERTH_TEST_GRAFANA_TOKEN", GRAFANA_TOKEN),
        ("BERTH_TEST_SENTRY_TOKEN", SENTRY_TOKEN),
    ];
    let no_secrets = |out: &crate::support::Outcome| {
        for s in [GRAFANA_TOKEN, SENTRY_TOKEN, "SECRETPATH"] {
            assert!(!out.all().contains(s), "`{s}` printed:\n{}", out.snapshot());
        }
    };

    // 1. A deploy goes live.
    let out = site.berth_env(&["deploy", "bestays", "--yes"], &env);
    out.assert_code(0);
    no_secrets(&out);
    let v1 = site.head_version();
    let got = rx.take();
    let hook = got
        .iter()
        .find(|r| r.path == "/hooks/T0/SECRETPATH")
        .expect("webhook");
    assert_eq!(hook.method, "POST");
    assert_eq!(hook.authorization, None);
    assert_eq!(hook.body["event"], "deploy.success");
    assert_eq!(hook.body["product"], "bestays");
    assert_eq!(hook.body["version"], v1.as_str());
    assert_eq!(hook.body["operator"], "test-operator");
    assert!(
        hook.body["tag"]
            .as_str()
            .unwrap()
            .starts_with("bestays-deploy-")
    );
    let ann = got
        .iter()
        .find(|r| r.path == "/grafana/api/annotations")
        .expect("grafana");
    assert_eq!(
        ann.authorization.as_deref(),
        Some(format!("Bearer {GRAFANA_TOKEN}").as_str())
    );
    let tags: Vec<&str> = ann.body["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(
        tags,
        [
            "berth",
            "bestays",
            "product:bestays",
            "result:success",
            "prod"
        ]
    );
    assert!(
        ann.body["time"].as_u64().unwrap() > 1_600_000_000_000,
        "milliseconds"
    );
    let release = format!("bestays@{v1}");
    let rel = got
        .iter()
        .find(|r| r.path == "/sentry/api/0/organizations/acme/releases/")
        .expect("sentry release");
    assert_eq!(rel.body["version"], release.as_str());
    assert_eq!(rel.body["projects"][0], "bestays-web");
    let dep = got
        .iter()
        .find(|r| r.path == format!("/sentry/api/0/organizations/acme/releases/{release}/deploys/"))
        .expect("sentry deploy");
    assert_eq!(
        dep.authorization.as_deref(),
        Some(format!("Bearer {SENTRY_TOKEN}").as_str())
    );
    assert_eq!(dep.body["environment"], "production");
    assert_eq!(got.len(), 4, "{got:#?}");

    // 2. A second deploy, then a failing one: webhook and Grafana hear the failure, Sentry does not.
    site.change("bestays", 1);
    site.berth_env(&["deploy", "bestays", "--yes"], &env)
        .assert_code(0);
    rx.take();
    site.break_bestays_at_start();
    site.repo.commit_all("feat: broken (TASK-6-broken-bestays)");
    let out = site.berth_env(&["deploy", "bestays", "--yes"], &env);
    out.assert_code(1);
    no_secrets(&out);
    let got = rx.take();
    assert_eq!(got.len(), 2, "{got:#?}");
    let hook = got.iter().find(|r| r.path.starts_with("/hooks/")).unwrap();
    assert_eq!(hook.body["event"], "deploy.failure");
    assert!(
        hook.body["error"]
            .as_str()
            .unwrap()
            .contains("failed at step"),
        "{:#}",
        hook.body
    );
    assert!(got.iter().all(|r| !r.path.starts_with("/sentry/")));
    site.repo.write("berth.toml", &with_notify);
    site.repo.commit_all("fix: unbroken (TASK-7-fix-bestays)");

    // 3. A rollback.
    let out = site.berth_env(&["rollback", "bestays", "--yes"], &env);
    out.assert_code(0);
    let got = rx.take();
    let hook = got.iter().find(|r| r.path.starts_with("/hooks/")).unwrap();
    assert_eq!(hook.body["event"], "deploy.rollback");
    assert_eq!(hook.body["version"], v1.as_str());
    assert!(hook.body["rollback_of"].is_string());
    assert!(
        got.iter()
            .any(|r| r.path
                == format!("/sentry/api/0/organizations/acme/releases/{release}/deploys/"))
    );

    // 4. Targets that are down, or whose secret is missing: warnings, the deploy goes through.
    let dead = format!("http://127.0.0.1:{}/hooks/T0/SECRETPATH", port_pair());
    let out = site.berth_env(
        &["deploy", "bestays", "--yes"],
        &[
            ("BERTH_TEST_WEBHOOK_URL", dead.as_str()),
            ("BERTH_TEST_GRAFANA_TOKEN", ""),
            ("BERTH_TEST_SENTRY_TOKEN", SENTRY_TOKEN),
        ],
    );
    out.assert_code(0);
    no_secrets(&out);
    assert!(
        out.stderr
            .contains("could not notify webhook (the deploy is not affected)"),
        "{}",
        out.snapshot()
    );
    assert!(out.stderr.contains("could not notify grafana (the deploy is not affected): $BERTH_TEST_GRAFANA_TOKEN is not set"), "{}", out.snapshot());
    assert!(out.stderr.contains("Notified sentry"), "{}", out.snapshot());
}
