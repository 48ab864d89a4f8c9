//! PostgreSQL and Redis over TLS with a CA made by the test, as with managed
//! servers: provision, deploy with the PostgreSQL state backend, a backup with its
//! Redis part, verify and restore, all with `sslmode=verify-full` and a Redis that
//! speaks only TLS (`rediss://` with `sslrootcert`). A certificate for another host
//! name, another CA, a PostgreSQL without TLS and a plain `redis://` to the TLS-only
//! port are refused with a clear error. (One test: the servers and the site are
//! the slow part, started once.)

use berth_testkit::{Postgres, Redis, TestCa};

use crate::deploy::Site;

#[test]
fn postgres_and_redis_over_tls_with_verified_certificates() {
    let ca = TestCa::new("berth test CA");
    let pg = Postgres::start_tls(&ca.issue(&["localhost"]));
    // Only TLS gets in over TCP: whatever berth does below, it did over TLS.
    pg.require_tls_for_tcp();
    // Redis listens only for TLS (`--port 0 --tls-port`): the same holds for it.
    let redis = Redis::start_tls(
        "user default on nopass ~* &* +@all\n",
        &ca.issue(&["localhost"]),
        &ca,
    );
    let site = Site::new(300);
    site.edit_manifest("[secret_scan]", "[backup]\nredis = true\n\n[secret_scan]");
    site.repo
        .commit_all("chore: redis backups (TASK-42-backup-bestays)");
    let url_for = |host: &str, mode: &str, ca_file: &std::path::Path| {
        format!(
            "postgresql://postgres:{}@{host}:{}/postgres?sslmode={mode}&sslrootcert={}",
            pg.password,
            pg.port,
            ca_file.display()
        )
    };
    let url = url_for("localhost", "verify-full", &ca.cert_file());
    let rediss = |ca_file: &std::path::Path| {
        format!(
            "rediss://localhost:{}/0?sslrootcert={}",
            redis.port,
            ca_file.display()
        )
    };
    let redis_url = rediss(&ca.cert_file());
    let run_with = |args: &[&str], pg_url: &str, redis_url: &str| {
        site.berth_env(
            args,
            &[
                ("BERTH_POSTGRES_ADMIN_URL", pg_url),
                ("BERTH_STATE_URL", pg_url),
                ("BERTH_REDIS_ADMIN_URL", redis_url),
            ],
        )
    };
    let run = |args: &[&str], pg_url: &str| run_with(args, pg_url, &redis_url);

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

    // Redis, refused: signed by a CA the URL does not name ...
    let other_redis = rediss(&other.cert_file());
    let out = run_with(
        &["provision", "bestays", "--env", "dev"],
        &url,
        &other_redis,
    );
    out.assert_code(1);
    assert!(
        out.stderr.contains(&format!(
            "could not connect to Redis at {other_redis}: the server's certificate is not signed by the CA in sslrootcert"
        )),
        "{}",
        out.snapshot()
    );
    let no_redis_user = |what: &str| {
        assert_eq!(
            redis.cli(None, &["ACL", "GETUSER", "bestays"]),
            "",
            "{what}: no Redis user was made"
        );
    };
    no_redis_user("another CA");
    // ... and a plain connection to the TLS-only port (with a password: never shown).
    let out = run_with(
        &["provision", "bestays", "--env", "dev"],
        &url,
        &format!("redis://berth-admin:hunter2-admin@127.0.0.1:{}", redis.port),
    );
    out.assert_code(1);
    assert!(
        out.stderr.contains(&format!(
            "could not connect to Redis at redis://berth-admin:****@127.0.0.1:{}/: the server closed the connection without an answer",
            redis.port
        )) && out.stderr.contains("use a rediss:// URL"),
        "{}",
        out.snapshot()
    );
    assert!(!out.stderr.contains("hunter2-admin"), "{}", out.snapshot());
    no_redis_user("plain redis://");

    // With verify-full: provision, deploy with the state in PostgreSQL, backup, verify, restore.
    run(&["provision", "--all", "--env", "dev"], &url).assert_code(0);
    // The product's Redis user (made over rediss://) works, over TLS.
    let rpw = berth_render::secrets::SecretFile::load(&berth_render::secrets::product_secret_path(
        site.repo.path(),
        "bestays",
    ))
    .unwrap()
    .get("REDIS_PASSWORD")
    .unwrap()
    .to_string();
    let me = Some(("bestays", rpw.as_str()));
    assert_eq!(redis.cli(me, &["SET", "bestays:greeting", "hello"]), "OK");
    assert_eq!(
        redis.cli(me, &["SET", "bestays:ttl", "soon", "EX", "5000"]),
        "OK"
    );
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

    let out = run(&["backup", "bestays"], &url);
    out.assert_code(0);
    assert!(out.stdout.contains("2 Redis keys"), "{}", out.snapshot());
    run(&["backup", "verify", "--latest", "bestays"], &url).assert_code(0);
    pg.psql_as(
        "bestays_user",
        &bpw,
        "bestays",
        "DELETE FROM t WHERE id > 10",
    );
    redis.cli(me, &["SET", "bestays:greeting", "changed"]);
    redis.cli(me, &["SET", "bestays:after", "x"]);
    run(
        &["restore", "bestays", "latest", "--yes", "--with-redis"],
        &url,
    )
    .assert_code(0);
    let (ok, text) = pg.psql_as("bestays_user", &bpw, "bestays", "SELECT count(*) FROM t");
    assert!(ok && text.trim() == "1000", "restored: {text}");
    assert_eq!(redis.cli(me, &["GET", "bestays:greeting"]), "hello");
    assert_eq!(redis.cli(me, &["GET", "bestays:after"]), "");
    let ttl: i64 = redis.cli(me, &["TTL", "bestays:ttl"]).parse().unwrap();
    assert!((4900..=5000).contains(&ttl), "the TTL came back too: {ttl}");

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
