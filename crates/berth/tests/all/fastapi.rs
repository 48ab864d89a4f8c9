//! A real FastAPI product, as a new user brings one: two products sharing one
//! Python server (`apps/server`: FastAPI on uvicorn, asyncpg, redis-py, alembic
//! migrations), each with its own PostgreSQL database and Redis ACL user, run by the
//! local runtime behind nginx. Its virtualenv is built from PyPI by the test command
//! (scripts/lib.sh `ensure_test_venv`), found through `BERTH_TEST_PYTHON`.
//!
//! Claims: a redeploy with a code change and a rollback under load fail no request,
//! and after the rollback the old commit's *code* answers (not HEAD's code under the
//! old label); a restore under load answers every request with the product or a
//! deliberate 503 + Retry-After, never a 502 or a reset; one product's database role
//! and Redis user cannot reach the other's data.

use std::path::PathBuf;
use std::process::Command;

use berth_testkit::http::request;
use berth_testkit::load::LoadConfig;
use berth_testkit::{Postgres, Redis, free_port};

use crate::deploy::{Site, assert_in_flight_across_switch, port_pair};
use crate::support::*;

/// Every route of the product: health (database and Redis round trips), the items
/// (a table read and a Redis write), a request that takes 300 ms, and `/`.
const ROUTES: &[&str] = &["/api/health", "/api/items", SLOW, "/"];

/// The server's slow route (300 ms).
const SLOW: &str = "/api/slow?ms=300";

/// The virtualenv's Python, with every package the server needs importable.
fn python() -> PathBuf {
    let py = std::env::var_os("BERTH_TEST_PYTHON").unwrap_or_else(|| {
        panic!(
            "BERTH_TEST_PYTHON is not set: this test runs a FastAPI server from a virtualenv built \
             from PyPI. ./scripts/test.sh builds it and sets the variable; by hand: \
             `. scripts/lib.sh && ensure_test_venv && export BERTH_TEST_PYTHON` from the repository root"
        )
    });
    let py = PathBuf::from(py);
    let out = Command::new(&py)
        .args([
            "-c",
            "import fastapi, uvicorn, asyncpg, redis, alembic, sqlalchemy",
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "BERTH_TEST_PYTHON={} cannot run ({e}): rebuild the virtualenv with ./scripts/test.sh",
                py.display()
            )
        });
    assert!(
        out.status.success(),
        "BERTH_TEST_PYTHON={} lacks the server's packages (rebuild it with ./scripts/test.sh):\n{}",
        py.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    py
}

/// The FastAPI monorepo, rendered, provisioned on a real PostgreSQL and Redis.
struct FastApi {
    pg: Postgres,
    redis: Redis,
    site: Site,
}

impl FastApi {
    fn new() -> Self {
        let py = python();
        let pg = Postgres::start();
        let redis = Redis::start_with_acl("user default on nopass ~* &* +@all\n");
        let repo = GitRepo::new();
        repo.copy_tree(&fixtures().join("fastapi"));
        let http_port = free_port();
        let mut m = std::fs::read_to_string(repo.path().join("berth.toml")).unwrap();
        for (placeholder, value) in [
            ("@PYTHON@", py.display().to_string()),
            ("@PG_PORT@", pg.port.to_string()),
            ("@REDIS_PORT@", redis.port.to_string()),
            ("@HTTP_PORT@", http_port.to_string()),
            ("@BESTAYS_PORT@", port_pair().to_string()),
            ("@REALESTATE_PORT@", port_pair().to_string()),
        ] {
            assert!(m.contains(placeholder), "no {placeholder} in the fixture");
            m = m.replace(placeholder, &value);
        }
        repo.write("berth.toml", &m);
        let site = Site {
            repo,
            http_port,
            runtime: berth_runtime::Kind::Local,
            compose: None,
            swarm: None,
        };
        let this = Self { pg, redis, site };
        this.site.berth(&["render", "--env", "dev"]).assert_code(0);
        this.site
            .repo
            .commit_all("chore: the FastAPI monorepo (TASK-0-setup-bestays)");
        this.run(&["provision", "--all", "--env", "dev"])
            .assert_code(0);
        this
    }

    /// berth with the admin URLs (provision, backup, restore need them).
    fn run(&self, args: &[&str]) -> Outcome {
        let redis = format!("redis://127.0.0.1:{}", self.redis.port);
        let pg = self.pg.admin_url();
        self.site.berth_env(
            args,
            &[
                ("BERTH_POSTGRES_ADMIN_URL", pg.as_str()),
                ("BERTH_REDIS_ADMIN_URL", redis.as_str()),
            ],
        )
    }

    fn secret(&self, product: &str, key: &str) -> String {
        let path = self
            .site
            .repo
            .path()
            .join(format!(".berth/secrets/{product}.env"));
        std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
            .unwrap_or_else(|| panic!("{key} is not in {}", path.display()))
    }

    /// A request through nginx: (status, JSON body).
    fn call(
        &self,
        host: &str,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let r = request(self.site.http_port, host, method, path, body)
            .unwrap_or_else(|e| panic!("{method} {host}{path}: {e}"));
        let v = serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null);
        (r.status, v)
    }

    /// (code version, berth version) that answers `/api/health` of `host`.
    fn health(&self, host: &str) -> (String, String) {
        let (status, v) = self.call(host, "GET", "/api/health", None);
        assert_eq!(status, 200, "{host} health: {v}");
        (
            v["code"].as_str().unwrap_or_default().to_string(),
            v["version"].as_str().unwrap_or_default().to_string(),
        )
    }

    fn item_names(&self, host: &str) -> Vec<String> {
        let (status, v) = self.call(host, "GET", "/api/items", None);
        assert_eq!(status, 200, "{host} items: {v}");
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_string())
            .collect()
    }

    fn add_item(&self, host: &str, name: &str) -> i64 {
        let (status, v) = self.call(
            host,
            "POST",
            "/api/items",
            Some(&format!("{{\"name\":\"{name}\"}}")),
        );
        assert_eq!(status, 201, "{host} add item: {v}");
        v["id"].as_i64().unwrap()
    }

    fn load(&self, host: &str) -> LoadConfig {
        LoadConfig::new(self.site.http_port, host)
            .paths(ROUTES)
            .steady(&[SLOW, SLOW])
    }

    /// Set the code version the server answers, as a commit to the shared server.
    fn commit_code(&self, code: &str, task: u32) -> String {
        self.site.repo.write(
            "apps/server/app/version.py",
            &format!("CODE_VERSION = \"{code}\"\n"),
        );
        self.site
            .repo
            .commit_all(&format!("feat: server {code} (TASK-{task}-server-bestays)"));
        self.site.head_version()
    }
}

#[test]
fn fastapi_products_redeploy_roll_back_and_restore_under_load_in_isolation() {
    let f = FastApi::new();
    let v1 = f.site.head_version();
    f.site
        .berth(&["deploy", "realestate", "--yes"])
        .assert_code(0);
    f.site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    assert_eq!(f.health("bestays.app"), ("v1".into(), v1.clone()));
    assert_eq!(f.health("realestate.app"), ("v1".into(), v1.clone()));
    // alembic made each product's table in its own database; Redis keys under its prefix.
    let best_id = f.add_item("bestays.app", "room-1");
    let real_id = f.add_item("realestate.app", "house-1");
    assert_eq!(f.item_names("bestays.app"), ["room-1"]);
    assert_eq!(f.item_names("realestate.app"), ["house-1"]);

    // Isolation: bestays's role cannot connect to realestate's database, and its
    // Redis user cannot read realestate's keys (each checked against a positive control).
    let best_pw = f.secret("bestays", "DATABASE_PASSWORD");
    let (ok, out) = f.pg.psql_as(
        "bestays_user",
        &best_pw,
        "bestays",
        "SELECT name FROM items",
    );
    assert!(ok && out.trim() == "room-1", "bestays reads its own: {out}");
    let (ok, out) = f.pg.psql_as(
        "bestays_user",
        &best_pw,
        "realestate",
        "SELECT name FROM items",
    );
    assert!(
        !ok && out.contains("permission denied for database"),
        "bestays_user reached realestate's database: {out}"
    );
    let best_redis = ("bestays", f.secret("bestays", "REDIS_PASSWORD"));
    let best_redis = Some((best_redis.0, best_redis.1.as_str()));
    let real_key = format!("realestate:item:{real_id}");
    assert_eq!(f.redis.cli(None, &["-n", "1", "GET", &real_key]), "house-1");
    assert_eq!(
        f.redis
            .cli(best_redis, &["GET", &format!("bestays:item:{best_id}")]),
        "room-1"
    );
    for db in ["0", "1"] {
        let out = f.redis.cli(best_redis, &["-n", db, "GET", &real_key]);
        assert!(
            out.contains("NOPERM"),
            "bestays's Redis user read {real_key} in db {db}: {out}"
        );
    }

    // A redeploy with a code change, then a rollback, under load on both products.
    let v2 = f.commit_code("v2", 1);
    let best = f.load("bestays.app").start();
    let real = f.load("realestate.app").workers(1, 1).start();
    best.wait_for_answers(20);
    real.wait_for_answers(5);
    f.site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    assert_eq!(f.health("bestays.app"), ("v2".into(), v2.clone()));
    f.site
        .berth(&["rollback", "bestays", "--yes"])
        .assert_code(0);
    // Enough answers for the report's floor of 200, however quick the rollback was.
    best.wait_for_answers(200);
    let report = best.finish();
    eprintln!("bestays, redeploy and rollback:");
    report.assert_clean(200).assert_covered();
    assert_eq!(report.versions(), [v1.clone(), v2.clone()]);
    assert_in_flight_across_switch(&report, &v1, &v2);
    assert_in_flight_across_switch(&report, &v2, &v1);
    assert_eq!(
        f.health("bestays.app"),
        ("v1".into(), v1.clone()),
        "after the rollback the code of {v1} answers, not HEAD's code labelled {v1}"
    );
    assert_eq!(f.item_names("bestays.app"), ["room-1"]);

    // A restore under load: the product's answer or a 503 with Retry-After, never a 502.
    f.run(&["backup", "bestays"]).assert_code(0);
    f.add_item("bestays.app", "room-after-backup");
    let best = f.load("bestays.app").allow_maintenance().start();
    best.wait_for_answers(20);
    f.run(&["restore", "bestays", "latest", "--yes"])
        .assert_code(0);
    best.wait_for_answers(20);
    let report = best.finish();
    eprintln!("bestays, restore:");
    assert_eq!(
        report.count_status(502),
        0,
        "502 answers during the restore\n{}",
        report.summary()
    );
    report.assert_clean(50);
    assert_eq!(
        f.item_names("bestays.app"),
        ["room-1"],
        "the backup's data is back"
    );
    assert_eq!(f.health("bestays.app"), ("v1".into(), v1.clone()));

    // realestate served throughout, its code and data untouched.
    let report = real.finish();
    eprintln!("realestate, throughout:");
    report.assert_clean(50);
    assert_eq!(report.versions(), [v1.as_str()]);
    assert_eq!(f.item_names("realestate.app"), ["house-1"]);
}
