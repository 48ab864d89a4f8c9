use berth_testkit::{Postgres, Redis};

use crate::support::*;

fn secret(repo: &GitRepo, product: &str, key: &str) -> String {
    let text =
        std::fs::read_to_string(repo.path().join(format!(".berth/secrets/{product}.env"))).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} missing from {product}.env"))
        .to_string()
}

fn provision(repo: &GitRepo, env: &[(&str, String)], args: &[&str]) -> Outcome {
    let mut c = berth(repo.path());
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The state provisioning controls, to compare before and after a second run.
fn pg_state(pg: &Postgres) -> String {
    pg.admin(
        "SELECT r.rolname, r.rolcanlogin, r.rolsuper, coalesce(a.rolpassword, '') FROM pg_roles r JOIN pg_authid a ON a.oid = r.oid \
         WHERE r.rolname LIKE '%_user' ORDER BY 1; \
         SELECT datname, pg_get_userbyid(datdba), datacl::text FROM pg_database WHERE datname IN ('bestays','realestate') ORDER BY 1",
    )
}

#[test]
fn postgres_roles_are_isolated_and_provision_is_idempotent() {
    let pg = Postgres::start();
    let repo = example_repo();
    let env = [
        ("BERTH_POSTGRES_ADMIN_URL", pg.admin_url()),
        ("BERTH_REDIS_ADMIN_URL", String::new()),
    ];
    // Only the database side here: drop Redis from the manifest.
    let m = std::fs::read_to_string(repo.path().join("berth.toml")).unwrap();
    let m = m
        .replace("redis = { db = 0, prefix = \"bestays:\" }\n", "")
        .replace("redis = { db = 1, prefix = \"realestate:\" }\n", "");
    repo.write("berth.toml", &m);

    let out = provision(&repo, &env, &["provision", "--all"]);
    out.assert_code(0);
    assert!(
        out.stdout.contains(
            "bestays: database bestays created, role bestays_user created (password set)"
        ),
        "{}",
        out.snapshot()
    );
    assert!(
        out.stdout.contains(
            "realestate: database realestate created, role realestate_user created (password set)"
        ),
        "{}",
        out.snapshot()
    );
    // No password in anything berth printed.
    let bpw = secret(&repo, "bestays", "DATABASE_PASSWORD");
    let rpw = secret(&repo, "realestate", "DATABASE_PASSWORD");
    assert!(
        !out.all().contains(&bpw) && !out.all().contains(&pg.password),
        "{}",
        out.snapshot()
    );

    // Each role works in its own database...
    let (ok, text) = pg.psql_as("bestays_user", &bpw, "bestays", "CREATE TABLE listings (id int); INSERT INTO listings VALUES (1); SELECT count(*) FROM listings");
    assert!(ok && text.trim() == "1", "{text}");
    let (ok, text) = pg.psql_as(
        "realestate_user",
        &rpw,
        "realestate",
        "CREATE TABLE houses (id int)",
    );
    assert!(ok, "{text}");
    // ...and cannot even connect to the other's.
    let (ok, text) = pg.psql_as("realestate_user", &rpw, "bestays", "SELECT 1");
    assert!(
        !ok && text.contains("permission denied for database \"bestays\""),
        "{text}"
    );
    let (ok, text) = pg.psql_as("bestays_user", &bpw, "realestate", "SELECT 1");
    assert!(
        !ok && text.contains("permission denied for database \"realestate\""),
        "{text}"
    );
    // Nor write into the shared postgres database's public schema (it may connect there, as
    // every role may, but cannot leave objects for another product to trip over).
    let (ok, text) = pg.psql_as(
        "bestays_user",
        &bpw,
        "postgres",
        "CREATE TABLE public.planted (i int)",
    );
    assert!(
        !ok && text.contains("permission denied for schema public"),
        "bestays_user created a table in the postgres database's public schema: {text}"
    );
    let (ok, text) = pg.psql_as("bestays_user", &bpw, "postgres", "SELECT 1");
    assert!(
        ok,
        "the product role logs in at all (else the refusal above proves nothing): {text}"
    );
    // And a wrong password is refused.
    let (ok, text) = pg.psql_as("bestays_user", "wrong-password", "bestays", "SELECT 1");
    assert!(
        !ok && text.contains("password authentication failed"),
        "a wrong password must be refused: {text}"
    );

    // A second run changes nothing.
    let before = pg_state(&pg);
    let out = provision(&repo, &env, &["provision", "--all", "--format", "json"]);
    out.assert_code(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    for p in v["products"].as_array().unwrap() {
        assert_eq!(
            (
                p["database"].as_str(),
                p["role"].as_str(),
                p["db_password"].as_str()
            ),
            (Some("existing"), Some("existing"), Some("unchanged")),
            "{p}"
        );
    }
    assert_eq!(
        pg_state(&pg),
        before,
        "a second provision changed the server"
    );
    let (ok, text) = pg.psql_as(
        "bestays_user",
        &bpw,
        "bestays",
        "SELECT count(*) FROM listings",
    );
    assert!(ok && text.trim() == "1", "data survives: {text}");

    // Rotation changes the password, in the server and in the secret file, and only for the product asked.
    let out = provision(&repo, &env, &["provision", "bestays", "--rotate-passwords"]);
    out.assert_code(0);
    let new = secret(&repo, "bestays", "DATABASE_PASSWORD");
    assert_ne!(new, bpw);
    assert!(secret(&repo, "bestays", "DATABASE_URL").contains(&new));
    assert!(
        !pg.psql_as("bestays_user", &bpw, "bestays", "SELECT 1").0,
        "the old password must stop working"
    );
    assert!(pg.psql_as("bestays_user", &new, "bestays", "SELECT 1").0);
    assert_eq!(secret(&repo, "realestate", "DATABASE_PASSWORD"), rpw);
}

#[test]
fn provision_without_an_admin_connection_is_a_configuration_error() {
    let repo = example_repo();
    let m = std::fs::read_to_string(repo.path().join("berth.toml"))
        .unwrap()
        .replace(
            "mode = \"container\"\nimage = \"postgres:15\"\nport = 5433",
            "mode = \"external\"\nadmin_url_env = \"SHOP_PG_ADMIN\"",
        );
    repo.write("berth.toml", &m);
    let out = provision(
        &repo,
        &[("SHOP_PG_ADMIN", String::new())],
        &["provision", "--all"],
    );
    out.assert_code(2);
    assert!(
        out.stderr.contains("set $SHOP_PG_ADMIN"),
        "{}",
        out.snapshot()
    );
    let out = provision(&repo, &[], &["provision", "nope"]);
    out.assert_code(2);
    assert!(
        out.stderr.contains("there is no product `nope`"),
        "{}",
        out.snapshot()
    );
}

#[test]
fn redis_users_are_confined_to_their_prefix() {
    let repo = example_repo();
    // Without PostgreSQL here: drop the databases.
    let m = std::fs::read_to_string(repo.path().join("berth.toml")).unwrap();
    let m = m
        .replace(
            "database = { name = \"bestays\", role = \"bestays_user\" }\n",
            "",
        )
        .replace(
            "database = { name = \"realestate\", role = \"realestate_user\" }\n",
            "",
        );
    repo.write("berth.toml", &m);
    run(repo.path(), &["render", "--env", "dev"]).assert_code(0);
    // A Redis started with the rendered (dev) ACL: the default user administers it.
    let acl = std::fs::read_to_string(repo.path().join("deploy/dev/redis/users.acl")).unwrap();
    let redis = Redis::start_with_acl(&acl);
    let env = [(
        "BERTH_REDIS_ADMIN_URL",
        format!("redis://127.0.0.1:{}", redis.port),
    )];
    let out = provision(&repo, &env, &["provision", "--all", "--env", "dev"]);
    out.assert_code(0);
    // The rendered ACL declares the user (without a password); provision gives it one.
    assert!(
        out.stdout
            .contains("bestays: redis user bestays existing (password set)"),
        "{}",
        out.snapshot()
    );
    let pw = secret(&repo, "bestays", "REDIS_PASSWORD");
    let me = Some(("bestays", pw.as_str()));
    assert_eq!(redis.cli(me, &["SET", "bestays:greeting", "hello"]), "OK");
    assert_eq!(redis.cli(me, &["GET", "bestays:greeting"]), "hello");
    assert!(
        redis
            .cli(me, &["SET", "realestate:x", "1"])
            .contains("NOPERM"),
        "other prefix must be refused"
    );
    assert!(redis.cli(me, &["GET", "realestate:x"]).contains("NOPERM"));
    assert!(redis.cli(me, &["FLUSHALL"]).contains("NOPERM"));
    assert!(redis.cli(me, &["KEYS", "*"]).contains("NOPERM"));
    assert!(redis.cli(me, &["CONFIG", "GET", "*"]).contains("NOPERM"));
    assert!(
        redis
            .cli(Some(("bestays", "wrong")), &["PING"])
            .contains("WRONGPASS")
    );
    // Idempotent: a second run keeps the password.
    let out = provision(&repo, &env, &["provision", "--all", "--env", "dev"]);
    out.assert_code(0);
    assert!(
        out.stdout
            .contains("redis user bestays existing (password unchanged)"),
        "{}",
        out.snapshot()
    );
    assert_eq!(redis.cli(me, &["GET", "bestays:greeting"]), "hello");
}

/// Send `commands` in one write (a pipeline) as `user` and read the replies back.
fn redis_pipeline(port: u16, user: (&str, &str), commands: &[&[&str]]) -> Vec<String> {
    use berth_provision::redis_session::RedisSession;
    use berth_provision::url::ServiceUrl;
    // Connecting authenticates (AUTH user password), or fails.
    let mut conn = RedisSession::open(
        &ServiceUrl {
            scheme: "redis".into(),
            user: Some(user.0.into()),
            password: Some(user.1.into()),
            host: "127.0.0.1".into(),
            port: Some(port),
            path: String::new(),
        },
        0,
    )
    .unwrap();
    conn.pipeline(commands)
        .unwrap()
        .iter()
        .map(|r| format!("{r:?}"))
        .collect()
}

#[test]
fn redis_products_cannot_list_count_or_sample_other_products_keys() {
    let repo = example_repo();
    let m = std::fs::read_to_string(repo.path().join("berth.toml")).unwrap();
    let m = m
        .replace(
            "database = { name = \"bestays\", role = \"bestays_user\" }\n",
            "",
        )
        .replace(
            "database = { name = \"realestate\", role = \"realestate_user\" }\n",
            "",
        );
    repo.write("berth.toml", &m);
    run(repo.path(), &["render", "--env", "dev"]).assert_code(0);
    let acl = std::fs::read_to_string(repo.path().join("deploy/dev/redis/users.acl")).unwrap();
    let redis = Redis::start_with_acl(&acl);
    let env = [(
        "BERTH_REDIS_ADMIN_URL",
        format!("redis://127.0.0.1:{}", redis.port),
    )];
    provision(&repo, &env, &["provision", "--all", "--env", "dev"]).assert_code(0);
    let bpw = secret(&repo, "bestays", "REDIS_PASSWORD");
    let rpw = secret(&repo, "realestate", "REDIS_PASSWORD");
    let bestays = Some(("bestays", bpw.as_str()));
    let realestate = Some(("realestate", rpw.as_str()));

    // realestate works in its own database (1), as its REDIS_URL says.
    assert_eq!(
        redis.cli(realestate, &["-n", "1", "SET", "realestate:items", "3"]),
        "OK"
    );
    assert_eq!(
        redis.cli(realestate, &["-n", "1", "GET", "realestate:items"]),
        "3"
    );
    assert_eq!(redis.cli(bestays, &["SET", "bestays:own", "1"]), "OK");

    // Every way to learn another product's key names or their number is refused,
    // in every database (SELECT works: the client libraries send it for REDIS_URL's db).
    for db in 0..16 {
        let db = db.to_string();
        assert_eq!(
            redis.cli(bestays, &["-n", &db, "PING"]),
            "PONG",
            "SELECT {db}"
        );
        for cmd in [
            &["SCAN", "0"][..],
            &["SCAN", "0", "MATCH", "realestate:*"],
            &["KEYS", "*"],
            &["RANDOMKEY"],
            &["DBSIZE"],
            &["GET", "realestate:items"],
            &["EXISTS", "realestate:items"],
            &["OBJECT", "ENCODING", "realestate:items"],
            &["MEMORY", "USAGE", "realestate:items"],
        ] {
            let out = redis.cli(bestays, &[&["-n", db.as_str()][..], cmd].concat());
            assert!(
                out.starts_with("NOPERM"),
                "bestays in db {db}: {cmd:?} -> {out}"
            );
        }
    }
    // Commands that show other clients' work or the server's totals.
    for cmd in [
        &["MONITOR"][..],
        &["CLIENT", "LIST"],
        &["CLIENT", "KILL", "USER", "realestate"],
        &["CLIENT", "TRACKING", "on", "BCAST"],
        &["INFO", "keyspace"],
        &["MEMORY", "STATS"],
        &["SLOWLOG", "GET"],
        &["LATENCY", "LATEST"],
        &["PUBSUB", "CHANNELS"],
        &["DEBUG", "OBJECT", "realestate:items"],
        &["DEBUG", "OBJECT", "bestays:own"],
        &["SWAPDB", "0", "1"],
        &["FLUSHALL"],
        &["FLUSHDB"],
        &["CONFIG", "GET", "*"],
        &["FUNCTION", "LIST"],
        &["FUNCTION", "FLUSH"],
        &["SORT", "bestays:l", "BY", "realestate:*"],
        &["MOVE", "realestate:items", "0"],
        &["ACL", "LIST"],
    ] {
        // What the ACL says (DEBUG is also off in the server's config, so ask the ACL itself)...
        let dry = redis.cli(None, &[&["ACL", "DRYRUN", "bestays"][..], cmd].concat());
        assert!(
            dry.contains("no permissions"),
            "ACL DRYRUN bestays {cmd:?} -> {dry}"
        );
        // ...and what bestays gets.
        let out = redis.cli(
            bestays,
            &["-n", "1"].iter().chain(cmd).copied().collect::<Vec<_>>(),
        );
        assert!(
            out.starts_with("NOPERM") || out.starts_with("ERR DEBUG command not allowed"),
            "bestays: {cmd:?} -> {out}"
        );
    }
    // Scripts run with the user's rights: no enumeration through EVAL either.
    for script in [
        "return redis.call('SCAN', '0')",
        "return redis.call('KEYS', '*')",
        "return redis.call('DBSIZE')",
        "return redis.call('RANDOMKEY')",
    ] {
        let out = redis.cli(bestays, &["-n", "1", "EVAL", script, "0"]);
        assert!(out.contains("can't run this command"), "{script} -> {out}");
    }

    // The product's normal work on its own prefix still works, pipelined too.
    let replies = redis_pipeline(
        redis.port,
        ("bestays", &bpw),
        &[
            &["SELECT", "0"],
            &["SET", "bestays:counter", "1"],
            &["INCR", "bestays:counter"],
            &["EXPIRE", "bestays:counter", "600"],
            &["TTL", "bestays:counter"],
            &["HSET", "bestays:user:1", "name", "ann"],
            &["HGET", "bestays:user:1", "name"],
            &["LPUSH", "bestays:queue", "a"],
            &["MULTI"],
            &["INCR", "bestays:counter"],
            &["EXEC"],
            &["DEL", "bestays:queue"],
            &["PUBLISH", "bestays:events", "hello"],
            &[
                "EVAL",
                "return redis.call('GET', KEYS[1])",
                "1",
                "bestays:counter",
            ],
            &["UNLINK", "bestays:own"],
        ],
    );
    let text = replies.join("\n");
    assert!(
        !text.contains("NOPERM") && !text.contains("Error"),
        "{text}"
    );
    assert_eq!(redis.cli(bestays, &["GET", "bestays:counter"]), "3");
    for (cmd, allowed) in [
        (&["SUBSCRIBE", "bestays:events"][..], true),
        (&["PSUBSCRIBE", "bestays:*"], true),
        (&["SUBSCRIBE", "realestate:events"], false),
        (&["PUBLISH", "realestate:events", "x"], false),
        (&["CLIENT", "SETNAME", "web"], true),
        (&["CLIENT", "INFO"], true),
        (&["HELLO", "3"], true),
        (&["SELECT", "1"], true),
    ] {
        let dry = redis.cli(None, &[&["ACL", "DRYRUN", "bestays"][..], cmd].concat());
        assert_eq!(dry == "OK", allowed, "ACL DRYRUN bestays {cmd:?} -> {dry}");
    }
    // And realestate's keys are untouched.
    assert_eq!(
        redis.cli(realestate, &["-n", "1", "GET", "realestate:items"]),
        "3"
    );
}

#[test]
fn prod_redis_acl_copy_with_hashes_disables_the_default_user() {
    let repo = example_repo();
    run(repo.path(), &["render", "--env", "prod"]).assert_code(0);
    // The untracked copy berth rendered for the infra container, with password hashes.
    let acl =
        std::fs::read_to_string(repo.path().join(".berth/secrets/redis-users.prod.acl")).unwrap();
    let tracked = std::fs::read_to_string(repo.path().join("deploy/prod/redis/users.acl")).unwrap();
    assert!(
        !tracked.contains('#')
            || tracked
                .lines()
                .filter(|l| l.starts_with("user"))
                .all(|l| !l.contains(" #")),
        "no hashes in the tracked file"
    );
    let redis = Redis::start_with_acl(&acl);
    assert!(
        redis.cli(None, &["PING"]).contains("NOAUTH")
            || redis.cli(None, &["PING"]).contains("NOPERM"),
        "the default user is off"
    );
    let pw = secret(&repo, "realestate", "REDIS_PASSWORD");
    let me = Some(("realestate", pw.as_str()));
    assert_eq!(redis.cli(me, &["SET", "realestate:k", "v"]), "OK");
    assert!(redis.cli(me, &["GET", "bestays:k"]).contains("NOPERM"));
    assert!(redis.cli(me, &["FLUSHDB"]).contains("NOPERM"));
}

/// The example without Redis, bestays's database carrying `fields` (e.g. extensions).
fn postgres_only_repo(bestays_db: &str) -> GitRepo {
    let repo = example_repo();
    let m = std::fs::read_to_string(repo.path().join("berth.toml")).unwrap();
    let from = "database = { name = \"bestays\", role = \"bestays_user\" }";
    assert!(m.contains(from));
    let m = m
        .replace(from, bestays_db)
        .replace("redis = { db = 0, prefix = \"bestays:\" }\n", "")
        .replace("redis = { db = 1, prefix = \"realestate:\" }\n", "");
    repo.write("berth.toml", &m);
    repo
}

#[test]
fn provision_creates_the_products_extensions_as_the_admin() {
    let pg = Postgres::start();
    let repo = postgres_only_repo(
        "database = { name = \"bestays\", role = \"bestays_user\", extensions = [\"pg_trgm\", \"citext\"] }",
    );
    let env = [("BERTH_POSTGRES_ADMIN_URL", pg.admin_url())];
    provision(&repo, &env, &["provision", "--all"]).assert_code(0);
    let bpw = secret(&repo, "bestays", "DATABASE_PASSWORD");
    // In bestays's database, usable by its role (which could not create them: not a superuser).
    let (ok, text) = pg.psql_as(
        "bestays_user",
        &bpw,
        "bestays",
        "SELECT string_agg(extname, ',' ORDER BY extname) FROM pg_extension WHERE extname <> 'plpgsql'; SELECT similarity('berth', 'berths') > 0.5, 'A'::citext = 'a'::citext",
    );
    assert!(ok, "{text}");
    assert_eq!(text.trim(), "citext,pg_trgm\nt|t", "{text}");
    // Only there: realestate's database has none.
    let rpw = secret(&repo, "realestate", "DATABASE_PASSWORD");
    let (ok, text) = pg.psql_as(
        "realestate_user",
        &rpw,
        "realestate",
        "SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql'",
    );
    assert!(ok && text.trim() == "0", "{text}");
    // Idempotent.
    provision(&repo, &env, &["provision", "--all"]).assert_code(0);
}

#[test]
fn provision_sets_a_role_password_that_no_longer_matches_the_secret_file() {
    let pg = Postgres::start();
    let repo = postgres_only_repo("database = { name = \"bestays\", role = \"bestays_user\" }");
    let env = [("BERTH_POSTGRES_ADMIN_URL", pg.admin_url())];
    provision(&repo, &env, &["provision", "--all"]).assert_code(0);
    let old = secret(&repo, "bestays", "DATABASE_PASSWORD");
    let rpw = secret(&repo, "realestate", "DATABASE_PASSWORD");
    // A fresh checkout: the secret file is gone and `berth render` makes a new password.
    std::fs::remove_file(repo.path().join(".berth/secrets/bestays.env")).unwrap();
    run(repo.path(), &["render"]).assert_code(0);
    let new = secret(&repo, "bestays", "DATABASE_PASSWORD");
    assert_ne!(new, old);
    assert!(!pg.psql_as("bestays_user", &new, "bestays", "SELECT 1").0);

    let out = provision(&repo, &env, &["provision", "--all"]);
    out.assert_code(0);
    assert!(
        out.stdout
            .contains("bestays: database bestays existing, role bestays_user existing (password reset)")
            && out.stdout.contains("realestate: database realestate existing, role realestate_user existing (password unchanged)")
            && out.stderr.contains("did not match .berth/secrets/bestays.env"),
        "{}",
        out.snapshot()
    );
    assert!(!out.all().contains(&new) && !out.all().contains(&old));
    // The app's login works again, with the secret file's password only.
    let (ok, text) = pg.psql_as("bestays_user", &new, "bestays", "SELECT 1");
    assert!(ok, "{text}");
    assert!(!pg.psql_as("bestays_user", &old, "bestays", "SELECT 1").0);
    assert!(
        pg.psql_as("realestate_user", &rpw, "realestate", "SELECT 1")
            .0
    );
    // Matching now: a further run leaves it alone.
    let out = provision(&repo, &env, &["provision", "--all"]);
    assert!(
        out.stdout
            .contains("role bestays_user existing (password unchanged)"),
        "{}",
        out.snapshot()
    );
}

/// The environment of a running process, from /proc.
fn environ(pid: u64) -> Vec<(String, String)> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    raw.split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

#[test]
fn a_deployed_process_gets_the_database_url_in_the_products_scheme() {
    let site = crate::deploy::Site::new(0);
    site.edit_manifest(
        "database = { name = \"bestays\", role = \"bestays_user\" }",
        "database = { name = \"bestays\", role = \"bestays_user\", url_scheme = \"postgresql+asyncpg\" }",
    );
    // The frontend (standing in for a sync tool such as alembic) overrides the scheme.
    site.edit_manifest(
        "VITE_PRODUCT_ID = \"bestays\" }",
        "VITE_PRODUCT_ID = \"bestays\" }\ndatabase_url_scheme = \"postgresql\"",
    );
    site.berth(&["render", "--env", "dev"]).assert_code(0);
    site.repo
        .commit_all("chore: SQLAlchemy's async driver (TASK-0-setup-bestays)");
    let pg = Postgres::start();
    let redis = Redis::start_with_acl("user default on nopass ~* &* +@all\n");
    let env = [
        ("BERTH_POSTGRES_ADMIN_URL", pg.admin_url()),
        (
            "BERTH_REDIS_ADMIN_URL",
            format!("redis://127.0.0.1:{}", redis.port),
        ),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    site.berth_env(&["provision", "--all", "--env", "dev"], &env)
        .assert_code(0);
    site.berth_env(&["deploy", "bestays", "--yes"], &env)
        .assert_code(0);
    let pw = secret(&site.repo, "bestays", "DATABASE_PASSWORD");
    let mut seen = 0;
    for slot in ["blue", "green"] {
        let dir = site.repo.path().join(".berth/run/bestays").join(slot);
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.path().extension().is_none_or(|x| x != "json") {
                continue;
            }
            let meta: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(e.path()).unwrap()).unwrap();
            let pid = meta["pid"].as_u64().unwrap();
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            let env = environ(pid);
            let url = env
                .iter()
                .find(|(k, _)| k == "DATABASE_URL")
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("no DATABASE_URL in {}", e.path().display()));
            let scheme = if e.path().ends_with("frontend.json") {
                "postgresql"
            } else {
                "postgresql+asyncpg"
            };
            assert!(
                url.starts_with(&format!("{scheme}://bestays_user:{pw}@")),
                "{} has DATABASE_URL in another form than {scheme}",
                e.path().display()
            );
            assert_eq!(
                env.iter().filter(|(k, _)| k == "DATABASE_URL").count(),
                1,
                "one DATABASE_URL"
            );
            seen += 1;
        }
    }
    assert!(seen >= 2, "the server and the frontend run");
    // The URL names the same role, password and database: the role logs in with it.
    assert!(pg.psql_as("bestays_user", &pw, "bestays", "SELECT 1").0);
}

/// A psql session held open as `user`: `Ok` once the server answered a query on it,
/// `Err(stderr)` when the server refused the connection.
fn hold_connection(
    pg: &Postgres,
    user: &str,
    password: &str,
    db: &str,
) -> Result<std::process::Child, String> {
    use std::io::{BufRead, Read, Write};
    use std::process::{Command, Stdio};
    let mut child = Command::new("psql")
        .args(["-X", "-q", "-At", "-h", "127.0.0.1", "-p"])
        .arg(pg.port.to_string())
        .args(["-U", user, "-d", db])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql");
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"SELECT 'up';\n")
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    if line.trim() == "up" {
        return Ok(child);
    }
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let _ = child.wait();
    Err(err)
}

/// bestays's role may hold 5 connections: of 50, 45 are refused by the server, while
/// realestate's queries keep succeeding; a statement past bestays's 1s timeout is
/// cancelled by the server; provision reports both limits.
#[test]
fn role_limits_refuse_connections_past_the_limit_and_cancel_long_statements() {
    let pg = Postgres::start();
    let repo = postgres_only_repo("database = { name = \"bestays\", role = \"bestays_user\" }");
    let m = std::fs::read_to_string(repo.path().join("berth.toml")).unwrap();
    let m = m.replace(
        "[products.bestays]\n",
        "[products.bestays]\nlimits = { db_connections = 5, statement_timeout = \"1s\" }\n",
    );
    repo.write("berth.toml", &m);
    let env = [("BERTH_POSTGRES_ADMIN_URL", pg.admin_url())];

    // The dry run shows them and touches nothing.
    let out = provision(&repo, &env, &["provision", "--all", "--dry-run"]);
    out.assert_code(0);
    assert!(
        out.stdout.contains("bestays: would ensure database bestays, role bestays_user (role limits: 5 connections, statement timeout 1s)")
            && out.stdout.contains("realestate: would ensure database realestate, role realestate_user (role limits: 20 connections, statement timeout 1m)"),
        "{}",
        out.snapshot()
    );
    assert_eq!(
        pg.admin("SELECT count(*) FROM pg_roles WHERE rolname LIKE '%_user'")
            .trim(),
        "0"
    );

    let out = provision(&repo, &env, &["provision", "--all"]);
    out.assert_code(0);
    assert!(
        out.stdout
            .contains("role limits: 5 connections, statement timeout 1s")
            && out
                .stdout
                .contains("role limits: 20 connections, statement timeout 1m"),
        "{}",
        out.snapshot()
    );
    let out = provision(&repo, &env, &["provision", "--all", "--format", "json"]);
    out.assert_code(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["products"][0]["connection_limit"], 5, "{v}");
    assert_eq!(v["products"][0]["statement_timeout"], "1s", "{v}");
    // What the server holds.
    assert_eq!(
        pg.admin(
            "SELECT rolname, rolconnlimit, array_to_string(rolconfig, ',') FROM pg_roles WHERE rolname LIKE '%_user' ORDER BY 1"
        )
        .trim(),
        "bestays_user|5|statement_timeout=1000\nrealestate_user|20|statement_timeout=60000"
    );

    let bpw = secret(&repo, "bestays", "DATABASE_PASSWORD");
    let rpw = secret(&repo, "realestate", "DATABASE_PASSWORD");
    let mut held = Vec::new();
    let mut refused = Vec::new();
    for i in 0..50 {
        match hold_connection(&pg, "bestays_user", &bpw, "bestays") {
            Ok(c) => held.push(c),
            Err(e) => refused.push(e),
        }
        // The other product, meanwhile, is served every time.
        if i % 5 == 0 {
            let (ok, text) = pg.psql_as("realestate_user", &rpw, "realestate", "SELECT 42");
            assert!(ok && text.trim() == "42", "realestate refused: {text}");
        }
    }
    assert_eq!(held.len(), 5, "{refused:?}");
    assert_eq!(refused.len(), 45);
    for e in &refused {
        assert!(
            e.contains("too many connections for role \"bestays_user\""),
            "{e}"
        );
    }
    for mut c in held {
        drop(c.stdin.take());
        c.wait().unwrap();
    }

    // Past its timeout, the server cancels the statement; realestate's is 1 minute.
    let (ok, text) = pg.psql_as("bestays_user", &bpw, "bestays", "SELECT pg_sleep(3)");
    assert!(
        !ok && text.contains("canceling statement due to statement timeout"),
        "{text}"
    );
    let (ok, text) = pg.psql_as(
        "realestate_user",
        &rpw,
        "realestate",
        "SHOW statement_timeout",
    );
    assert!(ok && text.trim() == "1min", "{text}");
}

/// Connection limits that do not fit in the server's max_connections (with its
/// superuser reserve and berth's) are a configuration error before anything is applied.
#[test]
fn connection_limits_over_max_connections_are_refused_before_anything_is_applied() {
    let pg = Postgres::start();
    let max: u64 = pg.admin("SHOW max_connections").trim().parse().unwrap();
    let repo = postgres_only_repo("database = { name = \"bestays\", role = \"bestays_user\" }");
    let m = std::fs::read_to_string(repo.path().join("berth.toml")).unwrap();
    let m = m.replace(
        "[products.bestays]\n",
        &format!("[products.bestays]\nlimits = {{ db_connections = {max} }}\n"),
    );
    repo.write("berth.toml", &m);
    let env = [("BERTH_POSTGRES_ADMIN_URL", pg.admin_url())];
    let out = provision(&repo, &env, &["provision", "--all"]);
    out.assert_code(2);
    assert!(
        out.stderr.contains(&format!(
            "the products' PostgreSQL connection limits add up to {} (bestays {max}, realestate 20)",
            max + 20
        )) && out
            .stderr
            .contains(&format!("more than the server's max_connections ({max})")),
        "{}",
        out.snapshot()
    );
    assert_eq!(
        pg.admin("SELECT count(*) FROM pg_roles WHERE rolname LIKE '%_user'")
            .trim(),
        "0",
        "nothing applied"
    );
}
