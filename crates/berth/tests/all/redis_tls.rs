//! Redis over TLS with a CA made by the test: a redis-server that speaks only TLS
//! (`--port 0 --tls-port`); provision, a backup with its Redis part, verify and
//! restore all over `rediss://` with `sslrootcert`; another CA and a plain
//! `redis://` to the TLS port are refused with a clear error.

use berth_testkit::{Postgres, Redis, TestCa};

use crate::deploy::Site;

#[test]
fn redis_over_tls_with_the_test_ca() {
    let ca = TestCa::new("berth test CA");
    let redis = Redis::start_tls(
        "user default on nopass ~* &* +@all\n",
        &ca.issue(&["localhost"]),
        &ca,
    );
    let pg = Postgres::start();
    let site = Site::new(0);
    site.edit_manifest("[secret_scan]", "[backup]\nredis = true\n\n[secret_scan]");
    site.repo
        .commit_all("chore: redis backups (TASK-42-backup-bestays)");
    let rediss = |ca_file: &std::path::Path| {
        format!(
            "rediss://localhost:{}/0?sslrootcert={}",
            redis.port,
            ca_file.display()
        )
    };
    let url = rediss(&ca.cert_file());
    let pg_url = pg.admin_url();
    let run = |args: &[&str], redis_url: &str| {
        site.berth_env(
            args,
            &[
                ("BERTH_POSTGRES_ADMIN_URL", pg_url.as_str()),
                ("BERTH_REDIS_ADMIN_URL", redis_url),
            ],
        )
    };
    let no_user = |what: &str| {
        assert_eq!(
            redis.cli(None, &["ACL", "GETUSER", "bestays"]),
            "",
            "{what}: no Redis user was made"
        );
    };

    // Refused: signed by a CA the URL does not name ...
    let other = TestCa::new("another CA");
    let out = run(
        &["provision", "bestays", "--env", "dev"],
        &rediss(&other.cert_file()),
    );
    out.assert_code(1);
    assert!(
        out.stderr.contains(&format!(
            "could not connect to Redis at rediss://localhost:{}/0?sslrootcert={}: the server's certificate is not signed by the CA in sslrootcert",
            redis.port,
            other.cert_file().display()
        )),
        "{}",
        out.snapshot()
    );
    no_user("another CA");
    // ... and a plain connection to the TLS-only port, with the admin's password.
    let out = run(
        &["provision", "bestays", "--env", "dev"],
        &format!("redis://berth-admin:hunter2-admin@127.0.0.1:{}", redis.port),
    );
    out.assert_code(1);
    assert!(
        out.stderr.contains(&format!(
            "could not connect to Redis at redis://berth-admin:****@127.0.0.1:{}/: the server closed the connection without an answer",
        redis.port)) && out.stderr.contains("use a rediss:// URL"),
        "{}",
        out.snapshot()
    );
    assert!(!out.stderr.contains("hunter2-admin"), "{}", out.snapshot());
    no_user("plain redis://");

    // Over rediss:// with the test CA: provision, then the product logs in over TLS.
    run(&["provision", "--all", "--env", "dev"], &url).assert_code(0);
    let pw = berth_render::secrets::SecretFile::load(&berth_render::secrets::product_secret_path(
        site.repo.path(),
        "bestays",
    ))
    .unwrap()
    .get("REDIS_PASSWORD")
    .unwrap()
    .to_string();
    let me = Some(("bestays", pw.as_str()));
    assert_eq!(redis.cli(me, &["SET", "bestays:greeting", "hello"]), "OK");
    assert_eq!(
        redis.cli(me, &["SET", "bestays:ttl", "soon", "EX", "5000"]),
        "OK"
    );
    let doctor = run(&["doctor"], &url);
    assert!(
        doctor.stdout.contains("user bestays authenticates"),
        "{}",
        doctor.snapshot()
    );

    // A backup with its Redis part, verified, then restored over the keys changed since.
    let out = run(&["backup", "bestays"], &url);
    out.assert_code(0);
    assert!(out.stdout.contains("2 Redis keys"), "{}", out.snapshot());
    run(&["backup", "verify", "--latest", "bestays"], &url).assert_code(0);
    redis.cli(me, &["SET", "bestays:greeting", "changed"]);
    redis.cli(me, &["SET", "bestays:after", "x"]);
    run(
        &["restore", "bestays", "latest", "--yes", "--with-redis"],
        &url,
    )
    .assert_code(0);
    assert_eq!(redis.cli(me, &["GET", "bestays:greeting"]), "hello");
    assert_eq!(redis.cli(me, &["GET", "bestays:after"]), "");
    let ttl: i64 = redis.cli(me, &["TTL", "bestays:ttl"]).parse().unwrap();
    assert!((4900..=5000).contains(&ttl), "{ttl}");
}
