//! `berth serve` against real deploys on the local runtime behind a real nginx:
//! metrics checked by promtool, the prober against processes that die and come
//! back, the dashboard in a real headless Chromium, bearer tokens.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::deploy::{Site, port_pair};
use crate::support::*;

/// A running `berth serve`, stopped (SIGTERM) on drop.
pub struct Serve {
    child: Child,
    pub port: u16,
    log: std::path::PathBuf,
}

impl Serve {
    pub fn start(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let port = port_pair();
        std::fs::create_dir_all(dir.join(".berth")).unwrap();
        let log = dir.join(format!(".berth/serve-{port}.log"));
        let mut c = berth(dir);
        c.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            c.env(k, v);
        }
        let child = c.spawn().expect("start berth serve");
        let mut s = Self { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if http(port, "GET", "/healthz", &[], "").0 == 200 {
                return s;
            }
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("berth serve exited with {status}:\n{}", s.log());
            }
            assert!(
                Instant::now() < deadline,
                "berth serve did not answer on {port} within 20s:\n{}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http(self.port, "GET", path, &[], "")
    }

    pub fn json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// Poll the product's JSON until `ok` holds, or fail after `within`.
    pub fn wait_product(
        &self,
        product: &str,
        within: Duration,
        what: &str,
        ok: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let v = self.json(&format!("/api/products/{product}"));
            if ok(&v) {
                return v;
            }
            assert!(
                start.elapsed() < within,
                "{product}: {what} did not happen within {within:?}; last: {v:#}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request on loopback: (status, body). Status 0 when nothing answered.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let (status, _, body) = http_from(Ipv4Addr::LOCALHOST, port, method, path, headers, body);
    (status, body)
}

/// [`http`] from the client address `from` (any of 127.0.0.0/8 reaches 127.0.0.1
/// on Linux): (status, response head, body).
pub fn http_from(
    from: Ipv4Addr,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut r = berth_testkit::http::Request::new(method, port, path)
        .from(from.into())
        .timeout(Duration::from_secs(60));
    for (k, v) in headers {
        r = r.header(k, v);
    }
    if !body.is_empty() {
        r = r.body("application/json", body);
    }
    match r.send() {
        Ok(a) => {
            let head: String = a
                .headers
                .iter()
                .map(|(k, v)| format!("{k}: {v}\r\n"))
                .collect();
            (a.status, head, a.text())
        }
        Err(_) => (0, String::new(), String::new()),
    }
}

/// A connection to 127.0.0.1:`port` from the address `from`.
fn connect_from(from: Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.bind(&SocketAddr::from((from, 0)).into())?;
    s.connect(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)).into())?;
    Ok(s.into())
}

/// The value of header `name` in a response head.
fn header_of<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        l.split_once(':')
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    })
}

/// POST a form: (status, body, Set-Cookie header).
fn post_form(port: u16, path: &str, body: &str) -> (u16, String, String) {
    let r = berth_testkit::http::Request::new("POST", port, path)
        .host("127.0.0.1")
        .body("application/x-www-form-urlencoded", body)
        .send()
        .unwrap();
    let cookie = r.header("set-cookie").unwrap_or("").to_string();
    (r.status, r.text(), cookie)
}

/// The value of one sample in Prometheus text, e.g. `berth_rollbacks_total{product="bestays"}`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

pub fn promtool_check(text: &str) {
    let promtool = berth_testkit::require_program("promtool", &[], "Debian package prometheus");
    let mut c = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics rejected /metrics:\n{}{}\n---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Poll /metrics until every expected sample has its value.
fn wait_metrics(serve: &Serve, expected: &[(String, f64)]) -> String {
    let start = Instant::now();
    loop {
        let (status, text) = serve.get("/metrics");
        assert_eq!(status, 200);
        let wrong: Vec<_> = expected
            .iter()
            .filter(|(s, v)| sample(&text, s) != Some(*v))
            .map(|(s, v)| format!("{s}: want {v}, got {:?}", sample(&text, s)))
            .collect();
        if wrong.is_empty() {
            return text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "metrics did not settle:\n{}\n---\n{text}",
            wrong.join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn write_backup_record(site: &Site, product: &str, finished_unix: u64, file_bytes: u64) {
    let dir = site.repo.path().join("backups").join(product);
    std::fs::create_dir_all(&dir).unwrap();
    let stamp = berth_deploy_stamp(finished_unix);
    let file = format!("{product}_{stamp}.dump.zst");
    std::fs::write(dir.join(&file), vec![0u8; file_bytes as usize]).unwrap();
    let rfc = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &stamp[0..4],
        &stamp[4..6],
        &stamp[6..8],
        &stamp[9..11],
        &stamp[11..13],
        &stamp[13..15]
    );
    let record = berth_backup::Record {
        format: 1,
        product: product.into(),
        database: product.into(),
        file: file.clone(),
        started: rfc.clone(),
        started_unix: finished_unix - 2,
        finished: rfc,
        finished_unix,
        seq: 0,
        duration_ms: 2000,
        server_version: "15".into(),
        pg_dump_version: "15".into(),
        dump_bytes: file_bytes * 3,
        file_bytes,
        sha256: "0".repeat(64),
        compression: "zstd".into(),
        level: 3,
        encrypted: false,
        recipients: vec![],
        table_count: 0,
        tables: vec![],
        redis: None,
        redis_error: None,
        verified: None,
        offsite: None,
        dir: Default::default(),
    };
    std::fs::write(
        dir.join(format!("{file}.json")),
        serde_json::to_string_pretty(&record).unwrap(),
    )
    .unwrap();
}

/// `YYYYMMDD-HHMMSS` for a Unix time, through `date` (GNU coreutils).
fn berth_deploy_stamp(secs: u64) -> String {
    let out = Command::new("date")
        .args(["-u", "-d", &format!("@{secs}"), "+%Y%m%d-%H%M%S"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn metrics_follow_deploys_failures_rollbacks_and_backups_and_pass_promtool() {
    let site = Site::new(0);
    let serve = Serve::start(site.repo.path(), &["--refresh", "200ms"], &[]);
    let text = serve.get("/metrics").1;
    promtool_check(&text);
    assert_eq!(
        sample(
            &text,
            r#"berth_deploys_total{product="bestays",result="success"}"#
        ),
        Some(0.0)
    );
    assert!(!text.contains("berth_last_deploy_timestamp_seconds{product=\"bestays\"}"));
    assert!(
        !text.contains("berth_product_up{"),
        "nothing deployed, nothing probed:\n{text}"
    );

    let t0 = now();
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let v1 = site.head_version();
    site.change("bestays", 1);
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let v2 = site.head_version();
    // A release that dies at start: the deploy fails, v2 keeps serving.
    let base = site.break_bestays_at_start();
    site.repo.commit_all("feat: broken (TASK-2-broken-bestays)");
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(1);
    site.repo.write("berth.toml", &base);
    site.repo.commit_all("fix: unbroken (TASK-3-fix-bestays)");
    let before_rollback = now();
    site.berth(&["rollback", "bestays", "--yes"]).assert_code(0);
    // A real backup of bestays' database (pg_dump on a PostgreSQL of the test's own).
    let pg = berth_testkit::Postgres::start();
    let redis = berth_testkit::Redis::start_with_acl("user default on nopass ~* &* +@all\n");
    let admin = [
        ("BERTH_POSTGRES_ADMIN_URL", pg.admin_url()),
        (
            "BERTH_REDIS_ADMIN_URL",
            format!("redis://127.0.0.1:{}", redis.port),
        ),
    ];
    let admin: Vec<(&str, &str)> = admin.iter().map(|(k, v)| (*k, v.as_str())).collect();
    site.berth_env(&["provision", "--all", "--env", "dev"], &admin)
        .assert_code(0);
    site.berth_env(&["backup", "bestays"], &admin)
        .assert_code(0);
    let list = site.berth_env(&["backup", "list", "bestays", "--format", "json"], &admin);
    list.assert_code(0);
    let list: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let record = list["backups"].as_array().unwrap().last().unwrap().clone();
    let backup_at = record["finished_unix"].as_u64().expect("finished_unix");
    let backup_bytes = record["file_bytes"].as_u64().expect("file_bytes");
    assert!(
        backup_at >= before_rollback && backup_bytes > 0,
        "{record:#}"
    );

    let expected: Vec<(String, f64)> = vec![
        (
            r#"berth_deploys_total{product="bestays",result="success"}"#.into(),
            3.0,
        ),
        (
            r#"berth_deploys_total{product="bestays",result="failure"}"#.into(),
            1.0,
        ),
        (r#"berth_rollbacks_total{product="bestays"}"#.into(), 1.0),
        (
            r#"berth_deploys_total{product="realestate",result="success"}"#.into(),
            0.0,
        ),
        (r#"berth_rollbacks_total{product="realestate"}"#.into(), 0.0),
        (
            r#"berth_deploy_duration_seconds_count{product="bestays"}"#.into(),
            4.0,
        ),
        (
            format!(
                r#"berth_live_version_info{{product="bestays",service="server",version="{v1}"}}"#
            ),
            1.0,
        ),
        (
            r#"berth_product_up{product="bestays",service="server"}"#.into(),
            1.0,
        ),
        (
            r#"berth_product_up{product="bestays",service="frontend"}"#.into(),
            1.0,
        ),
        (
            r#"berth_last_backup_timestamp_seconds{product="bestays"}"#.into(),
            backup_at as f64,
        ),
        (
            r#"berth_backup_size_bytes{product="bestays"}"#.into(),
            backup_bytes as f64,
        ),
        // No [backup.offsite]: no copy failed (offsite:: counts refused uploads).
        (
            r#"berth_backup_offsite_failures_total{product="bestays"}"#.into(),
            0.0,
        ),
        (
            r#"berth_backup_offsite_failures_total{product="realestate"}"#.into(),
            0.0,
        ),
    ];
    let text = wait_metrics(&serve, &expected);
    promtool_check(&text);
    let last = sample(
        &text,
        r#"berth_last_deploy_timestamp_seconds{product="bestays"}"#,
    )
    .expect("a last deploy timestamp") as u64;
    assert!(
        last >= before_rollback && last <= now(),
        "the last deploy is the rollback ({before_rollback}..now), not {last}"
    );
    assert!(last >= t0);
    assert!(
        !text.contains(&format!("version=\"{v2}\"")),
        "v2 is no longer live:\n{text}"
    );
    assert!(!text.contains("product=\"realestate\",service=\"server\",version="));
    assert!(!text.contains("berth_last_backup_timestamp_seconds{product=\"realestate\"}"));
    let probes = sample(
        &text,
        r#"berth_probe_duration_seconds_count{product="bestays",service="server"}"#,
    )
    .unwrap();
    assert!(probes >= 1.0);

    // OpenMetrics when asked for.
    let (status, om) = http(
        serve.port,
        "GET",
        "/metrics",
        &[("Accept", "application/openmetrics-text; version=1.0.0")],
        "",
    );
    assert_eq!(status, 200);
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# UNIT berth_backup_size_bytes bytes"));

    // The JSON API says the same.
    let p = serve.json("/api/products/bestays");
    assert_eq!(p["live_version"], v1.as_str());
    assert_eq!(p["health"], "up");
    assert_eq!(p["last_deploy"]["operator"], "test-operator");
    assert!(p["last_deploy"]["rollback_of"].is_string(), "{p:#}");
    assert_eq!(p["last_backup"]["file_bytes"], backup_bytes);
    let d = serve.json("/api/products/bestays/deploys");
    let kinds: Vec<(String, String)> = d["deploys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["result"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("rollback", "success"),
            ("deploy", "failure"),
            ("deploy", "success"),
            ("deploy", "success")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    assert_eq!(d["deploys"][1]["failed_step"], "health-check");
    assert_eq!(d["deploys"][3]["tasks"][0], "TASK-0-setup-bestays");
    let all = serve.json("/api/products");
    assert_eq!(all["products"].as_array().unwrap().len(), 2);
    let (status, body) = serve.get("/api/products/nope");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("there is no product `nope`"), "{body}");
    let (status, _) = http(serve.port, "POST", "/api/products", &[], "{}");
    assert_eq!(status, 405, "read-only");
}

/// The pid of a product's service in a slot (local runtime).
fn pid_of(site: &Site, product: &str, slot: &str, service: &str) -> u32 {
    let f = site
        .repo
        .path()
        .join(".berth/run")
        .join(product)
        .join(slot)
        .join(format!("{service}.json"));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
    v["pid"].as_u64().unwrap() as u32
}

#[test]
fn prober_marks_a_stopped_service_down_within_two_intervals_and_up_when_it_returns() {
    let site = Site::new(0);
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let version = site.head_version();
    // Probe every second (the deploy above used the site's 200ms).
    let m = std::fs::read_to_string(site.repo.path().join("berth.toml")).unwrap();
    site.repo.write(
        "berth.toml",
        &m.replace("interval = \"200ms\"", "interval = \"1s\""),
    );
    let interval = Duration::from_secs(1);
    let serve = Serve::start(site.repo.path(), &["--refresh", "500ms"], &[]);
    let p = serve.wait_product("bestays", Duration::from_secs(10), "up", |v| {
        v["health"] == "up"
    });
    let slot = p["live_slot"].as_str().unwrap().to_string();
    let server = p["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "server")
        .unwrap()
        .clone();
    let port = server["port"].as_u64().unwrap() as u16;
    assert!(server["health"]["latency_ms"].as_f64().is_some());
    // On one machine an instance is a process: its address is the slot's port on
    // loopback, with its own probe and its own series.
    let address = format!("127.0.0.1:{port}");
    let instance = format!(
        r#"berth_task_up{{product="bestays",service="server",address="{address}",node=""}}"#
    );
    let p = serve.wait_product("bestays", Duration::from_secs(10), "instance up", |v| {
        v["services"][0]["tasks"][0]["health"] == "up"
            && v["services"][1]["tasks"][0]["health"] == "up"
    });
    let task = &p["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "server")
        .unwrap()["tasks"];
    assert_eq!(task.as_array().unwrap().len(), 1, "{p:#}");
    assert_eq!(task[0]["address"], address.as_str(), "{p:#}");
    assert_eq!(task[0]["running"], true, "{p:#}");
    assert!(task[0]["node"].is_null(), "{p:#}");
    wait_metrics(&serve, &[(instance.clone(), 1.0)]);

    // Stop the server process (its whole process group, as a crash would).
    let pid = pid_of(&site, "bestays", &slot, "server");
    let killed = Instant::now();
    Command::new("kill")
        .args(["-9", "--", &format!("-{pid}")])
        .status()
        .unwrap();
    serve.wait_product("bestays", 2 * interval, "down", |v| v["health"] == "down");
    let down_after = killed.elapsed();
    eprintln!("prober: down {down_after:?} after the kill (interval {interval:?})");
    let s = serve.json("/api/products/bestays");
    let svc = s["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "server")
        .unwrap();
    assert_eq!(svc["health"]["status"], "down");
    assert_eq!(svc["tasks"][0]["health"], "down", "{s:#}");
    wait_metrics(&serve, &[(instance.clone(), 0.0)]);
    assert_eq!(
        s["live_version"],
        version.as_str(),
        "still the live version"
    );
    let (_, text) = serve.get("/metrics");
    assert_eq!(
        sample(
            &text,
            r#"berth_product_up{product="bestays",service="server"}"#
        ),
        Some(0.0)
    );

    // It comes back on the same port.
    let mut back = Command::new(env!("CARGO_BIN_EXE_demo-app"))
        .env("PORT", port.to_string())
        .env("BIND", "127.0.0.1")
        .env("BERTH_PRODUCT", "bestays")
        .env("BERTH_VERSION", &version)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let returned = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "demo-app did not listen again");
        std::thread::sleep(Duration::from_millis(10));
    }
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        serve.wait_product("bestays", 2 * interval, "up again", |v| v["health"] == "up");
    }));
    let _ = back.kill();
    let _ = back.wait();
    if let Err(e) = r {
        std::panic::resume_unwind(e);
    }
    eprintln!("prober: up {:?} after it returned", returned.elapsed());
    // realestate was never deployed: nothing probed, no false "down".
    let r = serve.json("/api/products/realestate");
    assert_eq!(r["health"], "unknown");
    assert_eq!(r["deployed"], false);
}

#[test]
fn a_token_guards_every_endpoint_and_public_addresses_need_one() {
    let repo = example_repo();
    let out = run(repo.path(), &["serve", "--listen", "0.0.0.0:9"]);
    out.assert_code(2);
    assert!(out.stderr.contains("--token-env"), "{}", out.snapshot());
    let out = run(
        repo.path(),
        &[
            "serve",
            "--listen",
            "127.0.0.1:9",
            "--token-env",
            "BERTH_TEST_UNSET_TOKEN",
        ],
    );
    out.assert_code(2);
    assert!(
        out.stderr.contains("BERTH_TEST_UNSET_TOKEN is not set"),
        "{}",
        out.snapshot()
    );

    let taken = std::net::TcpListener::bind(("127.0.0.1", port_pair())).unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run(repo.path(), &["serve", "--listen", &addr]);
    out.assert_code(2);
    assert!(
        out.stderr.contains("could not listen on"),
        "{}",
        out.snapshot()
    );
    drop(taken);

    let token = "s3cret-token-for-the-test-0123456789";
    let serve = Serve::start(
        repo.path(),
        &["--token-env", "BERTH_SERVE_TOKEN"],
        &[("BERTH_SERVE_TOKEN", token)],
    );
    for path in [
        "/",
        "/metrics",
        "/api/products",
        "/api/products/bestays/deploys",
    ] {
        let (status, body) = serve.get(path);
        assert_eq!(status, 401, "{path} without a token");
        assert!(!body.contains(token));
        let (status, _) = http(
            serve.port,
            "GET",
            path,
            &[("Authorization", "Bearer wrong")],
            "",
        );
        assert_eq!(status, 401, "{path} with a wrong token");
        let (status, body) = http(
            serve.port,
            "GET",
            path,
            &[("Authorization", &format!("Bearer {token}"))],
            "",
        );
        assert_eq!(status, 200, "{path} with the token");
        assert!(!body.contains(token), "{path} shows the token");
        // The scheme name is case-insensitive (RFC 9110).
        let (status, _) = http(
            serve.port,
            "GET",
            path,
            &[("Authorization", &format!("bearer {token}"))],
            "",
        );
        assert_eq!(status, 200, "{path} with a lower-case scheme");
    }
    assert_eq!(serve.get("/healthz").0, 200);
    // A browser signs in with a form and gets a cookie.
    let (status, form) = serve.get("/");
    assert_eq!(status, 401);
    assert!(form.contains("<form") && !form.contains(token), "{form}");
    // (From another address: the four wrong bearer tokens above count against this one.)
    assert_eq!(
        http_from(
            Ipv4Addr::new(127, 0, 0, 5),
            serve.port,
            "POST",
            "/login",
            &[],
            "token=wrong"
        )
        .0,
        401
    );
    let (status, _, set_cookie) = post_form(serve.port, "/login", &format!("token={token}"));
    assert_eq!(status, 303);
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let (status, page) = http(serve.port, "GET", "/", &[("Cookie", &cookie)], "");
    assert_eq!(status, 200);
    assert!(page.contains("BeStays") && !page.contains(token));
    assert!(!serve.log().contains(token), "the log shows the token");
}

#[test]
fn wrong_tokens_from_one_address_are_refused_with_429_while_other_addresses_sign_in() {
    let repo = example_repo();
    let token = "s3cret-token-for-the-limit-test-0123456789";
    let serve = Serve::start(
        repo.path(),
        &["--token-env", "BERTH_SERVE_TOKEN"],
        &[("BERTH_SERVE_TOKEN", token)],
    );
    let (me, other) = (Ipv4Addr::LOCALHOST, Ipv4Addr::new(127, 0, 0, 2));
    let bearer = format!("Bearer {token}");
    let get = |from, headers: &[(&str, &str)]| {
        http_from(from, serve.port, "GET", "/api/products", headers, "")
    };
    // No token is not a guess: a browser before it signs in is never locked out.
    for _ in 0..8 {
        assert_eq!(get(me, &[]).0, 401);
        assert_eq!(http_from(me, serve.port, "GET", "/", &[], "").0, 401);
    }
    // Five wrong tokens within a minute, by every way a token comes in.
    for guess in ["guess-0001", "guess-0002", "guess-0003"] {
        let (status, _, body) = get(me, &[("Authorization", &format!("Bearer {guess}"))]);
        assert_eq!(status, 401, "{body}");
    }
    let (status, head, _) = get(me, &[("Cookie", "berth_token=guess-0004")]);
    assert_eq!(status, 401);
    assert!(
        header_of(&head, "set-cookie").is_some_and(|c| c.contains("Max-Age=0")),
        "a wrong cookie is cleared, so a page refresh does not send it again:\n{head}"
    );
    let (status, _, _) = http_from(me, serve.port, "POST", "/login", &[], "token=guess-0005");
    assert_eq!(status, 401, "the fifth is still answered");

    // Now every request from this address is refused, the right token included.
    let (status, head, body) = get(me, &[("Authorization", "Bearer guess-0006")]);
    assert_eq!(status, 429, "{head}\n{body}");
    let retry: u64 = header_of(&head, "retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After in seconds:\n{head}"));
    assert!((1..=60).contains(&retry), "Retry-After: {retry}");
    assert!(body.contains("try again in"), "{body}");
    let (status, head, _) = get(me, &[("Authorization", &bearer)]);
    assert_eq!(
        status, 429,
        "the right token tells nothing while locked out"
    );
    assert!(header_of(&head, "retry-after").is_some());
    let form = format!("token={token}");
    assert_eq!(
        http_from(me, serve.port, "POST", "/login", &[], &form).0,
        429
    );
    assert_eq!(http_from(me, serve.port, "GET", "/", &[], "").0, 429);
    assert_eq!(
        http_from(me, serve.port, "GET", "/healthz", &[], "").0,
        200,
        "/healthz stays open"
    );

    // Another address is not affected: the right token and the sign-in form work.
    let (status, _, body) = get(other, &[("Authorization", &bearer)]);
    assert_eq!(status, 200, "{body}");
    let (status, head, _) = http_from(other, serve.port, "POST", "/login", &[], &form);
    assert_eq!(status, 303, "{head}");
    assert!(header_of(&head, "set-cookie").is_some_and(|c| c.starts_with("berth_token=")));
    assert_eq!(get(other, &[("Authorization", "Bearer guess-0007")]).0, 401);
    assert_eq!(get(other, &[("Authorization", &bearer)]).0, 200);

    // One warning for the lockout, naming the address, never a token.
    let log = serve.log();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("429")).collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        warnings[0].contains("127.0.0.1:") && warnings[0].contains("WARN"),
        "{log}"
    );
    assert!(
        !log.contains(token) && !log.contains("guess-"),
        "the log shows a token:\n{log}"
    );

    // The right token from the same address (a signed-in tab, a scrape) does not
    // forgive the guesses made from it.
    let shared = Ipv4Addr::new(127, 0, 0, 3);
    for i in 0..4 {
        let guess = format!("Bearer guess-1{i:03}");
        assert_eq!(get(shared, &[("Authorization", &guess)]).0, 401);
    }
    assert_eq!(get(shared, &[("Authorization", &bearer)]).0, 200);
    assert_eq!(
        get(shared, &[("Authorization", "Bearer guess-1004")]).0,
        401
    );
    assert_eq!(
        get(shared, &[("Authorization", &bearer)]).0,
        429,
        "five wrong within the window lock, right tokens in between or not"
    );

    // A sign-in form whose body arrives after its address was locked out is refused
    // without its token being judged (the head was sent while the address was free).
    let slow = Ipv4Addr::new(127, 0, 0, 4);
    let mut pending = connect_from(slow, serve.port).unwrap();
    pending
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        pending,
        "POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        form.len()
    )
    .unwrap();
    pending.flush().unwrap();
    // No wait here: the claim is about the order the client sent things in (head, then
    // the lockout, then the body), which these sequential writes fix; the server judges
    // the token only once the body is there, whenever it parsed the head.
    for i in 0..5 {
        let guess = format!("Bearer guess-2{i:03}");
        assert_eq!(get(slow, &[("Authorization", &guess)]).0, 401);
    }
    pending.write_all(form.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = pending.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 429") && !answer.to_ascii_lowercase().contains("set-cookie"),
        "a late form body from a locked-out address must be refused:\n{answer}"
    );
}

/// A chromedriver session on real headless Chromium, both stopped on drop.
struct Browser {
    driver: Child,
    port: u16,
    session: String,
    profile: tempfile::TempDir,
}

impl Browser {
    fn start(width: u32, height: u32) -> Self {
        let chromium = berth_testkit::require_program("chromium", &[], "Debian package chromium");
        let driver =
            berth_testkit::require_program("chromedriver", &[], "Debian package chromium-driver");
        let port = port_pair();
        let driver = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        // Owned (and so stopped on drop) before anything can fail.
        let mut b = Self {
            driver,
            port,
            session: String::new(),
            profile: tempfile::tempdir().unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while http(port, "GET", "/status", &[], "").0 != 200 {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not start on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let caps = serde_json::json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": { "browser": "ALL" },
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--no-first-run",
                    format!("--user-data-dir={}", b.profile.path().display()),
                    format!("--window-size={width},{height}"),
                ],
            },
        }}});
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no chromedriver session: {v}"))
            .to_string();
        b
    }

    /// A WebDriver call; panics on a WebDriver error. Returns `value`.
    fn call(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let (status, text) = http(self.port, method, path, &[], &body);
        let v: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: {status} {e}: {text}"));
        assert_eq!(status, 200, "{method} {path}: {v:#}");
        v["value"].clone()
    }

    fn session_call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    fn goto(&self, url: &str) {
        self.session_call("POST", "/url", Some(serde_json::json!({ "url": url })));
    }

    fn eval(&self, script: &str) -> serde_json::Value {
        self.session_call(
            "POST",
            "/execute/sync",
            Some(serde_json::json!({ "script": script, "args": [] })),
        )
    }

    /// Console messages since the last call (levels SEVERE, WARNING, INFO...).
    fn console(&self) -> Vec<(String, String)> {
        self.session_call(
            "POST",
            "/se/log",
            Some(serde_json::json!({ "type": "browser" })),
        )
        .as_array()
        .expect("the browser log")
        .iter()
        .map(|e| {
            (
                e["level"].as_str().unwrap_or("").to_string(),
                e["message"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
    }

    fn screenshot(&self, path: &std::path::Path) {
        let b64 = self.session_call("GET", "/screenshot", None);
        let png = base64_decode(b64.as_str().expect("a screenshot"));
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http(
                self.port,
                "DELETE",
                &format!("/session/{}", self.session),
                &[],
                "",
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

const CARDS_JS: &str = r#"return Array.from(document.querySelectorAll('section.card')).map(c => ({
  product: c.dataset.product,
  version: (c.querySelector('code.version') || {}).textContent || null,
  health: c.querySelector('.badge').textContent,
  services: Array.from(c.querySelectorAll('li[data-service]')).map(l => l.textContent),
  timeline: c.querySelectorAll('svg circle, svg path').length,
  lastDeploy: c.querySelector('dl').textContent,
}));"#;

#[test]
fn the_dashboard_in_headless_chromium_shows_each_product_without_console_errors() {
    let site = Site::new(0);
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    site.berth(&["deploy", "realestate", "--yes"])
        .assert_code(0);
    let version = site.head_version();
    // bestays: a second deploy, a failed one, and a rollback to the first: all on its timeline.
    site.change("bestays", 1);
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let base = site.break_bestays_at_start();
    site.repo.commit_all("feat: broken (TASK-2-broken-bestays)");
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(1);
    site.repo.write("berth.toml", &base);
    site.repo.commit_all("fix: unbroken (TASK-3-fix-bestays)");
    site.berth(&["rollback", "bestays", "--yes"]).assert_code(0);
    write_backup_record(&site, "bestays", now() - 7200, 10_000_000);
    let serve = Serve::start(
        site.repo.path(),
        &["--refresh", "300ms", "--page-refresh", "30s"],
        &[],
    );
    serve.wait_product("bestays", Duration::from_secs(10), "up", |v| {
        v["health"] == "up"
    });
    let re = serve.wait_product("realestate", Duration::from_secs(10), "up", |v| {
        v["health"] == "up"
    });
    // realestate's frontend dies: its card must say down.
    let slot = re["live_slot"].as_str().unwrap().to_string();
    let pid = pid_of(&site, "realestate", &slot, "frontend");
    Command::new("kill")
        .args(["-9", "--", &format!("-{pid}")])
        .status()
        .unwrap();
    serve.wait_product("realestate", Duration::from_secs(5), "down", |v| {
        v["health"] == "down"
    });

    let browser = Browser::start(1280, 900);
    let url = format!("http://127.0.0.1:{}/", serve.port);
    browser.goto(&url);
    let cards = browser.eval(CARDS_JS);
    let cards = cards.as_array().expect("cards");
    assert_eq!(cards.len(), 2, "{cards:#?}");
    let api = serve.json("/api/products");
    for p in api["products"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let card = cards
            .iter()
            .find(|c| c["product"] == name)
            .unwrap_or_else(|| panic!("no card for {name}: {cards:#?}"));
        assert_eq!(card["version"], p["live_version"], "{name}: {card:#}");
        assert_eq!(card["version"], version.as_str(), "{name}");
        assert_eq!(card["health"], p["health"], "{name}: {card:#}");
        assert!(
            card["timeline"].as_u64().unwrap() >= 1,
            "{name}: a deploy on the timeline"
        );
        assert!(
            card["lastDeploy"]
                .as_str()
                .unwrap()
                .contains("by test-operator"),
            "{name}: {card:#}"
        );
    }
    let by = |n: &str| cards.iter().find(|c| c["product"] == n).unwrap().clone();
    let marks = browser.eval(
        "return Array.from(document.querySelectorAll('section[data-product=bestays] svg g'))\
         .map(g => g.dataset.kind + ':' + g.dataset.result)",
    );
    assert_eq!(
        marks,
        serde_json::json!([
            "deploy:success",
            "deploy:success",
            "deploy:failure",
            "rollback:success"
        ]),
        "bestays' timeline, oldest first"
    );
    assert_eq!(by("bestays")["health"], "up");
    assert_eq!(by("realestate")["health"], "down");
    assert!(
        by("bestays")["lastDeploy"]
            .as_str()
            .unwrap()
            .contains("2h 0m ago"),
        "{:#}",
        by("bestays")
    );
    assert!(
        by("realestate")["services"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s.as_str().unwrap().starts_with("frontenddown")),
        "{:#}",
        by("realestate")
    );
    assert_eq!(
        browser.eval("return document.querySelector('meta[http-equiv=refresh]').content"),
        "30",
        "the page refreshes itself"
    );
    assert_eq!(
        browser
            .eval("return document.querySelectorAll('script, link[rel=stylesheet], img').length"),
        0,
        "no scripts or external assets"
    );
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let desktop = dir.join("berth-serve-dashboard.png");
    browser.screenshot(&desktop);
    let errors: Vec<_> = browser
        .console()
        .into_iter()
        .filter(|(l, _)| l == "SEVERE")
        .collect();
    assert!(
        errors.is_empty(),
        "console errors on the dashboard: {errors:?}"
    );

    // Readable on a phone: one column, nothing wider than the screen.
    let phone = Browser::start(390, 844);
    phone.goto(&url);
    let fits = phone.eval(
        "return [document.documentElement.scrollWidth, window.innerWidth, \
         getComputedStyle(document.querySelector('main')).gridTemplateColumns.split(' ').length]",
    );
    assert!(
        fits[0].as_u64() <= fits[1].as_u64() && fits[2] == 1,
        "the page overflows a phone screen or is not one column: {fits}"
    );
    phone.screenshot(&dir.join("berth-serve-dashboard-phone.png"));
    let errors: Vec<_> = phone
        .console()
        .into_iter()
        .filter(|(l, _)| l == "SEVERE")
        .collect();
    assert!(errors.is_empty(), "console errors on the phone: {errors:?}");
    eprintln!(
        "screenshots: {} and the -phone one beside it",
        desktop.display()
    );

    // The check can fail: a page that errors is seen.
    browser.goto(&format!("http://127.0.0.1:{}/no-such-page", serve.port));
    let errors: Vec<_> = browser
        .console()
        .into_iter()
        .filter(|(l, _)| l == "SEVERE")
        .collect();
    assert!(!errors.is_empty(), "a 404 must show up as a console error");
}

#[test]
fn demo_app_exports_red_metrics_by_route_template_without_a_product_label() {
    let port = port_pair();
    let mut app = Command::new(env!("CARGO_BIN_EXE_demo-app"))
        .env("PORT", port.to_string())
        .env("BIND", "127.0.0.1")
        .env("BERTH_PRODUCT", "bestays")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "demo-app did not listen");
        std::thread::sleep(Duration::from_millis(10));
    }
    let r = std::panic::catch_unwind(|| {
        for (method, path, want) in [
            ("GET", "/", 200),
            ("GET", "/api/health", 200),
            ("GET", "/api/listings/1", 200),
            ("GET", "/api/listings/2?x=1", 200),
            ("GET", "/api/listings/abc", 404),
            ("GET", "/wp-admin/setup.php", 404),
            ("GET", "/random/path/12345", 404),
            ("BREW", "/", 200),
        ] {
            assert_eq!(http(port, method, path, &[], "").0, want, "{method} {path}");
        }
        let (status, text) = http(port, "GET", "/metrics", &[], "");
        assert_eq!(status, 200);
        promtool_check(&text);
        let count = |l: &str| sample(&text, &format!("http_requests_total{{{l}}}"));
        assert_eq!(
            count(r#"method="GET",route="/api/listings/{id}",status="200""#),
            Some(2.0)
        );
        assert_eq!(
            count(r#"method="GET",route="/api/listings/{id}",status="404""#),
            Some(1.0)
        );
        assert_eq!(
            count(r#"method="GET",route="other",status="404""#),
            Some(2.0)
        );
        assert_eq!(count(r#"method="other",route="/",status="200""#), Some(1.0));
        assert_eq!(
            sample(
                &text,
                r#"http_request_duration_seconds_count{method="GET",route="/api/listings/{id}"}"#
            ),
            Some(3.0)
        );
        for raw in [
            "wp-admin",
            "12345",
            "listings/1",
            "abc",
            "product=",
            "/metrics",
        ] {
            assert!(
                !text.contains(raw),
                "`{raw}` leaked into the labels:\n{text}"
            );
        }
    });
    let _ = app.kill();
    let _ = app.wait();
    if let Err(e) = r {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn the_rendered_scrape_config_labels_every_slot_with_its_product() {
    let repo = example_repo();
    let out = repo.path().join("out");
    run(
        repo.path(),
        &["render", "--env", "prod", "--out", out.to_str().unwrap()],
    )
    .assert_code(0);
    let text = std::fs::read_to_string(out.join("prometheus/prometheus.yml")).unwrap();
    let yaml: serde_json::Value = serde_norway::from_str(&text).unwrap();
    let jobs = yaml["scrape_configs"].as_array().unwrap();
    assert_eq!(jobs[0]["job_name"], "berth");
    // Every service of every product: one job, both slots, each labelled with its product.
    let services = [
        ("bestays", "server", 8011),
        ("bestays", "frontend", 5183),
        ("realestate", "server", 8012),
        ("realestate", "frontend", 5184),
    ];
    for (product, service, port) in services {
        let name = format!("{product}__{service}");
        let job = jobs
            .iter()
            .find(|j| j["job_name"] == name.as_str())
            .unwrap_or_else(|| panic!("no job {name}: {yaml:#}"));
        let sc = job["static_configs"].as_array().unwrap();
        assert_eq!(sc.len(), 2, "blue and green: {job:#}");
        for (i, (slot, target)) in [("blue", port), ("green", port + 10_000)]
            .into_iter()
            .enumerate()
        {
            assert_eq!(sc[i]["labels"]["product"], product, "{job:#}");
            assert_eq!(sc[i]["labels"]["service"], service, "{job:#}");
            assert_eq!(sc[i]["labels"]["slot"], slot, "{job:#}");
            assert_eq!(
                sc[i]["targets"],
                serde_json::json!([format!("127.0.0.1:{target}")]),
                "{job:#}"
            );
        }
    }
    // berth's own job plus one per service, nothing else.
    assert_eq!(jobs.len(), 1 + services.len(), "{yaml:#}");

    // Products and services whose names join alike (`a-b`+`c`, `a`+`b-c`) keep distinct
    // jobs; [serve] moves berth's own target and gives Prometheus its token file.
    let m = std::fs::read_to_string(repo.path().join("berth.toml")).unwrap();
    repo.write(
        "berth.toml",
        &(m.replace("[secret_scan]", "[serve]\nlisten = \"127.0.0.1:9555\"\ntoken_env = \"BERTH_SERVE_TOKEN\"\n\n[secret_scan]")
            + "\n[products.a-b]\npaths = [\"x/ab/**\"]\n[products.a-b.services.c]\ncommand = \"demo-app\"\nport = 9001\nhost_port = 9001\n\n[products.a]\npaths = [\"x/a/**\"]\n[products.a.services.b-c]\ncommand = \"demo-app\"\nport = 9002\nhost_port = 9002\n"),
    );
    run(repo.path(), &["check", "--no-secret-scan"]).assert_code(0);
    run(
        repo.path(),
        &["render", "--env", "prod", "--out", out.to_str().unwrap()],
    )
    .assert_code(0);
    let text = std::fs::read_to_string(out.join("prometheus/prometheus.yml")).unwrap();
    let yaml: serde_json::Value = serde_norway::from_str(&text).unwrap();
    let names: Vec<&str> = yaml["scrape_configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"a-b__c") && names.contains(&"a__b-c"),
        "{names:?}"
    );
    let berth = &yaml["scrape_configs"][0];
    assert_eq!(berth["static_configs"][0]["targets"][0], "127.0.0.1:9555");
    assert_eq!(
        berth["authorization"]["credentials_file"],
        "/etc/berth/bestays-monorepo-serve.token"
    );
}

#[test]
fn deploy_counts_come_from_the_postgres_audit_table_when_state_is_shared() {
    let pg = berth_testkit::Postgres::start();
    let site = Site::new(0);
    site.use_postgres_state(40);
    let url = pg.admin_url();
    let env = [("BERTH_STATE_URL", url.as_str())];
    site.berth_env(&["deploy", "bestays", "--yes"], &env)
        .assert_code(0);
    site.change("bestays", 41);
    site.berth_env(&["deploy", "bestays", "--yes"], &env)
        .assert_code(0);
    assert!(!site.repo.path().join(".berth/audit.jsonl").exists());
    let serve = Serve::start(site.repo.path(), &["--refresh", "200ms"], &env);
    let text = wait_metrics(
        &serve,
        &[
            (
                r#"berth_deploys_total{product="bestays",result="success"}"#.into(),
                2.0,
            ),
            (
                r#"berth_deploy_duration_seconds_count{product="bestays"}"#.into(),
                2.0,
            ),
        ],
    );
    promtool_check(&text);
    let d = serve.json("/api/products/bestays/deploys");
    assert_eq!(d["deploys"].as_array().unwrap().len(), 2, "{d:#}");
    // A deploy while serving: read from the table as a new row, counted once.
    site.change("bestays", 42);
    site.berth_env(&["deploy", "bestays", "--yes"], &env)
        .assert_code(0);
    wait_metrics(
        &serve,
        &[
            (
                r#"berth_deploys_total{product="bestays",result="success"}"#.into(),
                3.0,
            ),
            (
                r#"berth_deploy_duration_seconds_count{product="bestays"}"#.into(),
                3.0,
            ),
        ],
    );
    // Counted once: still 3 after the collector has refreshed again (not after a fixed wait).
    let seen = serve.json("/api/products")["collected_unix"]
        .as_u64()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while serve.json("/api/products")["collected_unix"]
        .as_u64()
        .unwrap()
        <= seen
    {
        assert!(
            Instant::now() < deadline,
            "the collector did not refresh again"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let d = serve.json("/api/products/bestays/deploys");
    assert_eq!(d["total"], 3, "{d:#}");
    assert_eq!(d["deploys"].as_array().unwrap().len(), 3, "{d:#}");
    assert!(!serve.log().contains(&url), "no state URL in the log");
}

#[test]
fn a_deployed_product_found_dead_at_start_is_down_not_unknown() {
    let site = Site::new(0);
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    // Its processes die (a reboot, a crash) and there is no proxy to say which slot is live.
    for svc in ["server", "frontend"] {
        let pid = pid_of(&site, "bestays", "blue", svc);
        Command::new("kill")
            .args(["-9", "--", &format!("-{pid}")])
            .status()
            .unwrap();
    }
    let m = std::fs::read_to_string(site.repo.path().join("berth.toml")).unwrap();
    let start = m.find("[proxy]").expect("the example has a proxy");
    let end = start + m[start..].find("[secret_scan]").unwrap();
    site.repo
        .write("berth.toml", &format!("{}{}", &m[..start], &m[end..]));
    let serve = Serve::start(site.repo.path(), &["--refresh", "500ms"], &[]);
    let p = serve.wait_product("bestays", Duration::from_secs(10), "down", |v| {
        v["health"] == "down"
    });
    assert_eq!(p["live_slot"], "blue", "{p:#}");
    let (_, text) = serve.get("/metrics");
    assert_eq!(
        sample(
            &text,
            r#"berth_product_up{product="bestays",service="server"}"#
        ),
        Some(0.0),
        "the down alert can fire"
    );
    // The deploys API is paginated; its total counts every deploy.
    let d = serve.json("/api/products/bestays/deploys?limit=0");
    assert_eq!(d["deploys"].as_array().unwrap().len(), 0);
    assert_eq!(d["total"], 1);
}

/// Seconds until the server closes `s` (reads until EOF or reset), or `None`
/// if it is still open after `within`.
fn closed_after(mut s: TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 512];
    while start.elapsed() < within {
        match s.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

#[test]
fn idle_and_trickling_connections_are_cut_and_healthz_answers_under_a_low_fd_limit() {
    let repo = example_repo();
    let port = port_pair();
    let log = repo.path().join(".berth-serve.log");
    // berth serve with 128 open files at most, as on a small VPS.
    let b = berth(repo.path());
    let mut c = Command::new("sh");
    c.current_dir(repo.path())
        .arg("-c")
        .arg("ulimit -n 128 && exec \"$0\" \"$@\"")
        .arg(b.get_program())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in b.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let mut child = c.spawn().unwrap();
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _kill = Kill(&mut child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while http(port, "GET", "/healthz", &[], "").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "berth serve did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // More idle connections than the process has file descriptors.
    let flood: Vec<TcpStream> = (0..300)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    // A slowloris: one byte of a request head per second, never finishing.
    let trickle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut writer = trickle.try_clone().unwrap();
    std::thread::spawn(move || {
        for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "
            .iter()
            .cycle()
            .take(60)
        {
            if writer.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    // A few idle keep-alive connections after the flood.
    let idle: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();

    // /healthz still answers, within a second.
    let t = Instant::now();
    let answer = berth_testkit::http::Request::new("GET", port, "/healthz")
        .host("x")
        .timeout(Duration::from_secs(2))
        .send()
        .map(|r| (r.status, r.text()));
    assert!(
        matches!(&answer, Ok((200, body)) if body == "ok\n"),
        "{answer:?} after {:?}",
        t.elapsed()
    );
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());

    // The trickling and the idle connections are closed after the head timeout,
    // not kept forever; the flood is gone too.
    let within = Duration::from_secs(25);
    let trickled = closed_after(trickle, within);
    assert!(trickled.is_some(), "the trickling connection is still open");
    for s in idle {
        assert!(
            closed_after(s, within).is_some(),
            "an idle connection is still open"
        );
    }
    let open = flood
        .into_iter()
        .filter(|s| closed_after(s.try_clone().unwrap(), Duration::from_millis(300)).is_none())
        .count();
    assert_eq!(open, 0, "of the flood, {open} connections are still open");
    assert_eq!(http(port, "GET", "/healthz", &[], "").0, 200);
}

#[test]
fn a_short_token_on_a_public_address_is_refused() {
    let repo = example_repo();
    let log = repo.path().join(".berth-serve.log");
    let mut child = berth(repo.path())
        .args(["serve", "--listen", "0.0.0.0:0", "--token-env", "BERTH_T"])
        .env("BERTH_T", "0123456789abcdef0123456789abcde")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // It must refuse at once, not serve: never wait on it for ever.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "berth serve is serving with a 31-byte token on 0.0.0.0: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(2));
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(
        err.contains("token of 31 bytes") && err.contains("at least 32"),
        "{err}"
    );
    assert!(
        !err.contains("0123456789abcdef"),
        "the token is never shown: {err}"
    );
}

/// A warm standby shows on the dashboard, in the API and in /metrics with when it
/// ends; at the end of its window `berth serve`'s tick stops it (audited as
/// `standby-stop`) and it disappears from all three.
#[test]
fn a_warm_standby_shows_and_the_serve_tick_ends_it() {
    let site = Site::new(0);
    site.edit_manifest("standby = \"0\"", "standby = \"4s\"");
    site.berth(&["render", "--env", "dev"]).assert_code(0);
    site.change("bestays", 1);
    let v1 = site.head_version();
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    site.change("bestays", 2);
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let serve = Serve::start(site.repo.path(), &["--refresh", "200ms"], &[]);
    let p = serve.wait_product("bestays", Duration::from_secs(20), "a standby", |p| {
        !p["standby"].is_null()
    });
    assert_eq!(p["standby"]["version"], v1.as_str(), "{p}");
    let until = p["standby"]["until_unix"].as_u64().unwrap();
    let text = serve.get("/metrics").1;
    promtool_check(&text);
    assert!(
        text.lines()
            .any(|l| l.starts_with("berth_standby_until_timestamp_seconds{")
                && l.contains("product=\"bestays\"")
                && l.ends_with(&format!(" {until}"))),
        "{text}"
    );
    let page = serve.get("/").1;
    assert!(
        page.contains("<dt>Standby</dt>") && page.contains(&v1),
        "{page}"
    );
    // The window ends; the next tick stops the standby.
    let p = serve.wait_product(
        "bestays",
        Duration::from_secs(30),
        "the standby gone",
        |p| p["standby"].is_null(),
    );
    assert!(now() >= until, "stopped before its window ended: {p}");
    let audit = std::fs::read_to_string(site.repo.path().join(".berth/audit.jsonl")).unwrap();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"standby-stop\"") && l.contains("\"ok\"")),
        "{audit}"
    );
    let text = serve.get("/metrics").1;
    assert!(
        !text.contains("berth_standby_until_timestamp_seconds{"),
        "{text}"
    );
}

/// SIGCONT on drop, so a failed assertion never leaves the cluster stopped.
struct Paused<'a>(&'a berth_testkit::Postgres);

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        self.0.resume();
    }
}

/// `[state] backend = "postgres"` and a PostgreSQL that stops answering (every process
/// SIGSTOPped): `berth serve` says its data is stale (JSON API, /metrics, the page)
/// within the audit tail's timeout, keeps the deploy totals it had, and after SIGCONT
/// reads on (a deploy recorded since counts) and is fresh again.
#[test]
fn serve_marks_its_data_stale_while_the_state_database_is_stalled_and_recovers() {
    let pg = berth_testkit::Postgres::start();
    let site = Site::new(0);
    site.use_postgres_state(40);
    let url = pg.admin_url();
    let env = [("BERTH_STATE_URL", url.as_str())];
    site.berth_env(&["deploy", "bestays", "--yes"], &env)
        .assert_code(0);
    let serve = Serve::start(site.repo.path(), &["--refresh", "1s"], &env);
    let bestays = |v: &serde_json::Value| -> serde_json::Value {
        v["products"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "bestays")
            .cloned()
            .unwrap_or_default()
    };
    let reasons = |v: &serde_json::Value| -> String {
        v["stale_reasons"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default()
    };
    let wait = |within: Duration, what: &str, ok: &dyn Fn(&serde_json::Value) -> bool| {
        let start = Instant::now();
        loop {
            let v = serve.json("/api/products");
            if ok(&v) {
                return (v, start.elapsed());
            }
            assert!(
                start.elapsed() < within,
                "{what} did not happen within {within:?}; last: {v:#}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let (v, _) = wait(Duration::from_secs(30), "the deploy counted, fresh", &|v| {
        bestays(v)["deploys"]["success"] == 1 && v["stale"] == false
    });
    assert_eq!(reasons(&v), "", "{v:#}");
    assert_eq!(
        sample(&serve.get("/metrics").1, "berth_serve_stale"),
        Some(0.0)
    );

    pg.pause();
    let paused = Paused(&pg);
    // The audit tail gives up after its 10 s timeout: the error is the reason shown.
    let (v, took) = wait(
        Duration::from_secs(40),
        "the stalled audit log marked stale",
        &|v| v["stale"] == true && reasons(v).contains("the audit log could not be read"),
    );
    assert!(
        took < berth_deploy::audit_tail::READ_TIMEOUT + Duration::from_secs(15),
        "noticed after {took:?}"
    );
    assert!(reasons(&v).contains("no answer within"), "{v:#}");
    assert_eq!(
        bestays(&v)["deploys"]["success"],
        1,
        "the totals read before stay: {v:#}"
    );
    let text = serve.get("/metrics").1;
    assert_eq!(sample(&text, "berth_serve_stale"), Some(1.0), "{text}");
    assert_eq!(
        sample(
            &text,
            r#"berth_deploys_total{product="bestays",result="success"}"#
        ),
        Some(1.0)
    );
    let page = serve.get("/").1;
    assert!(
        page.contains("stale: the audit log could not be read"),
        "{page}"
    );

    drop(paused);
    // A deploy recorded while serve was cut off (the newest deploy record again).
    pg.admin(
        "INSERT INTO berth_audit (product, record) SELECT product, record FROM berth_audit \
         WHERE record->>'step' = 'deploy' ORDER BY id DESC LIMIT 1",
    );
    let (v, _) = wait(Duration::from_secs(40), "recovered after SIGCONT", &|v| {
        v["stale"] == false && bestays(v)["deploys"]["success"] == 2
    });
    assert_eq!(reasons(&v), "", "{v:#}");
    assert_eq!(
        sample(&serve.get("/metrics").1, "berth_serve_stale"),
        Some(0.0)
    );
}
