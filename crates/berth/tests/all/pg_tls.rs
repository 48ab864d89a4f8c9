//! PostgreSQL over TLS with a CA made by the test: provision, deploy with the
//! PostgreSQL state backend, backup, verify and restore all with
//! `sslmode=verify-full`; a certificate for another host name, another CA and a
//! server without TLS are refused with a clear error.

use berth_testkit::{Postgres, Redis, TestCa};

use crate::deploy::Site;

#[test]
fn postgres_over_tls_with_verify_full() {
    let ca = TestCa::new("berth test CA");
    let pg = Postgres::start_tls(&ca.issue(&["localhost"]));
    // Only TLS gets in over TCP: whatever berth does below, it did over TLS.
    pg.require_tls_for_tcp();
    let redis = Redis::start_with_acl("user default on nopass ~* &* +@all\n");
    let site = Site::new(300);
    let url_for = |host: &str, mode: &str, ca_file: &std::path::Path| {
        format!(
            "postgresql://postgres:{}@{host}:{}/postgres?sslmode={mode}&sslrootcert={}",
            pg.password,
            pg.port,
            ca_file.display()
        )
    };
    let url = url_for("localhost", "verify-full", &ca.cert_file());
    let redis_url = format!("redis://127.0.0.1:{}", redis.port);
    let run = |args: &[&str], pg_url: &str| {
        site.berth_env(
            args,
            &[
                ("BERTH_POSTGRES_ADMIN_URL", pg_url),
                ("BERTH_STATE_URL", pg_url),
                ("BERTH_REDIS_ADMIN_URL", &redis_url),
            ],
        )
    };

    // Refused: the certificate is for `localhost`, not 127.0.0.1 ...
    let out = run(
        &["provision", "bestays", "--env", "dev"],
        &url_for("127.0.0.1", "verify-full", &ca.cert_file()),
    );
    assert_ne!(out.code, 0, "{}", out.snapshot());
    assert!(
        out.stderr.contains("not for this host name"),
        "{}",
        out.snapshot()
    );
    assert!(!out.stderr.contains(&pg.password), "{}", out.snapshot());
    // ... and signed by a CA the URL does not name.
    let other = TestCa::new("another CA");
    let out = run(
        &["provision", "bestays", "--env", "dev"],
        &url_for("localhost", "verify-ca", &other.cert_file()),
    );
    assert_ne!(out.code, 0, "{}", out.snapshot());
    assert!(
        out.stderr.contains("not signed by the CA in sslrootcert"),
        "{}",
        out.snapshot()
    );
    assert!(
        pg.admin("SELECT count(*) FROM pg_roles WHERE rolname = 'bestays_user'")
            .trim()
            == "0",
        "nothing was done"
    );

    // With verify-full: provision, deploy with the state in PostgreSQL, backup, verify, restore.
    run(&["provision", "--all", "--env", "dev"], &url).assert_code(0);
    let bpw = berth_render::secrets::SecretFile::load(&berth_render::secrets::product_secret_path(
        site.repo.path(),
        "bestays",
    ))
    .unwrap()
    .get("DATABASE_PASSWORD")
    .unwrap()
    .to_string();
    let (ok, text) = pg.psql_as(
        "bestays_user",
        &bpw,
        "bestays",
        "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 1000); SELECT count(*) FROM t",
    );
    assert!(ok && text.trim() == "1000", "{text}");

    site.use_postgres_state(40);
    run(&["deploy", "bestays", "--yes"], &url).assert_code(0);
    let rows = pg.admin(
        "SELECT count(*) FROM berth_audit WHERE product = 'bestays' AND record->>'step' = 'switch'",
    );
    assert_eq!(rows.trim(), "1", "the audit went to PostgreSQL over TLS");

    run(&["backup", "bestays"], &url).assert_code(0);
    run(&["backup", "verify", "--latest", "bestays"], &url).assert_code(0);
    pg.psql_as(
        "bestays_user",
        &bpw,
        "bestays",
        "DELETE FROM t WHERE id > 10",
    );
    run(&["restore", "bestays", "latest", "--yes"], &url).assert_code(0);
    let (ok, text) = pg.psql_as("bestays_user", &bpw, "bestays", "SELECT count(*) FROM t");
    assert!(ok && text.trim() == "1000", "restored: {text}");

    // A server without TLS, reached with a URL that asks for it: refused, nothing sent.
    let plain = Postgres::start();
    let out = run(
        &["provision", "bestays", "--env", "dev"],
        &format!(
            "postgresql://postgres:{}@127.0.0.1:{}/postgres?sslmode=require",
            plain.password, plain.port
        ),
    );
    assert_ne!(out.code, 0, "{}", out.snapshot());
    assert!(
        out.stderr
            .contains("does not offer TLS and the URL asks for it (sslmode=require)"),
        "{}",
        out.snapshot()
    );
}
