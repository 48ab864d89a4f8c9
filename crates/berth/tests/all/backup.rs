//! `berth backup`, `verify`, `prune` and `restore` against a real PostgreSQL (and
//! Redis) started by the test, on the example monorepo.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_testkit::{Postgres, Redis};

use crate::deploy::Site;
use crate::support::{Outcome, berth, temp_dir};

/// The example site with its databases provisioned on a fresh PostgreSQL and
/// bestays filled with several tables, indexes, sequences, a view and 100k rows.
pub(crate) struct Db {
    pub(crate) pg: Postgres,
    pub(crate) redis: Redis,
    pub(crate) site: Site,
}

const SEED: &str = "
SET ROLE bestays_user;
CREATE SEQUENCE booking_ref START 1000;
CREATE TABLE guests (id bigserial PRIMARY KEY, email text UNIQUE NOT NULL, name text, created timestamptz NOT NULL);
CREATE TABLE bookings (id bigserial PRIMARY KEY, guest_id bigint REFERENCES guests(id), ref bigint DEFAULT nextval('booking_ref'),
  nights int CHECK (nights > 0), price numeric(10,2), meta jsonb);
CREATE TABLE audit_log (at timestamptz, line text);
CREATE INDEX bookings_guest ON bookings (guest_id);
CREATE INDEX bookings_meta ON bookings USING gin (meta);
CREATE INDEX guests_email_lower ON guests (lower(email));
INSERT INTO guests (email, name, created)
  SELECT 'g' || g || '@example.com', 'Guest ' || g, timestamptz '2026-01-01' + g * interval '1 minute' FROM generate_series(1, 20000) g;
INSERT INTO bookings (guest_id, nights, price, meta)
  SELECT 1 + g % 20000, 1 + g % 14, (g % 500) + 0.99, jsonb_build_object('src', CASE WHEN g % 3 = 0 THEN 'web' ELSE 'app' END, 'n', g)
  FROM generate_series(1, 70000) g;
INSERT INTO audit_log SELECT timestamptz '2026-01-01' + g * interval '1 second', md5(g::text) FROM generate_series(1, 10000) g;
CREATE VIEW revenue AS SELECT guest_id, sum(price) AS total FROM bookings GROUP BY guest_id;
";

impl Db {
    fn new() -> Self {
        Self::with_site(Site::new(300))
    }

    pub(crate) fn with_site(site: Site) -> Self {
        let pg = Postgres::start();
        let redis = Redis::start_with_acl("user default on nopass ~* &* +@all\n");
        let db = Self { pg, redis, site };
        db.run(&["provision", "--all", "--env", "dev"])
            .assert_code(0);
        db.sql("bestays", SEED);
        db.sql(
            "realestate",
            "SET ROLE realestate_user; CREATE TABLE listings (id serial PRIMARY KEY, title text); \
             INSERT INTO listings (title) SELECT 'listing ' || g FROM generate_series(1, 500) g;",
        );
        db
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("BERTH_POSTGRES_ADMIN_URL", self.pg.admin_url()),
            (
                "BERTH_REDIS_ADMIN_URL",
                format!("redis://127.0.0.1:{}", self.redis.port),
            ),
        ]
    }

    fn run(&self, args: &[&str]) -> Outcome {
        self.run_env(args, &[])
    }

    pub(crate) fn run_env(&self, args: &[&str], extra: &[(&str, &str)]) -> Outcome {
        let env = self.env();
        let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        all.extend_from_slice(extra);
        self.site.berth_env(args, &all)
    }

    pub(crate) fn sql(&self, db: &str, sql: &str) -> String {
        let (ok, out) = self.pg.psql_as("postgres", &self.pg.password, db, sql);
        assert!(ok, "SQL on {db} failed: {sql}\n{out}");
        out.trim().to_string()
    }

    /// Everything that makes a database's content: per-table row counts and
    /// checksums (computed in SQL), the view, sequences, indexes, constraints, owners.
    pub(crate) fn fingerprint(&self, db: &str) -> BTreeMap<String, String> {
        let mut f = BTreeMap::new();
        let tables = self.sql(
            db,
            "SELECT string_agg(relname, ' ' ORDER BY relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v')",
        );
        for t in tables.split_whitespace() {
            f.insert(
                format!("rows {t}"),
                self.sql(
                    db,
                    &format!(
                        "SELECT count(*) || ' ' || md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM {t} x"
                    ),
                ),
            );
        }
        for (k, q) in [
            (
                "sequences",
                "SELECT string_agg(sequencename || '=' || coalesce(last_value::text, 'unused'), ' ' ORDER BY sequencename) FROM pg_sequences WHERE schemaname = 'public'",
            ),
            (
                "indexes",
                "SELECT string_agg(indexdef, '; ' ORDER BY indexdef) FROM pg_indexes WHERE schemaname = 'public'",
            ),
            (
                "constraints",
                "SELECT string_agg(conname || ' ' || pg_get_constraintdef(oid), '; ' ORDER BY conname) FROM pg_constraint WHERE connamespace = 'public'::regnamespace",
            ),
            (
                "owners",
                "SELECT string_agg(DISTINCT pg_get_userbyid(relowner), ',') FROM pg_class WHERE relnamespace = 'public'::regnamespace",
            ),
            (
                "view",
                "SELECT coalesce((SELECT pg_get_viewdef(oid) FROM pg_class WHERE relname = 'revenue'), 'none')",
            ),
        ] {
            f.insert(k.to_string(), self.sql(db, q));
        }
        f
    }

    fn databases(&self) -> Vec<String> {
        self.sql(
            "postgres",
            "SELECT string_agg(datname, ' ' ORDER BY datname) FROM pg_database WHERE NOT datistemplate",
        )
        .split_whitespace()
        .map(str::to_string)
        .collect()
    }

    fn backups_dir(&self) -> PathBuf {
        self.site.repo.path().join("backups/bestays")
    }

    fn latest_backup(&self) -> (PathBuf, serde_json::Value) {
        let out = self.run(&["backup", "list", "bestays", "--format", "json"]);
        out.assert_code(0);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        let last = v["backups"].as_array().unwrap().last().unwrap().clone();
        (PathBuf::from(last["path"].as_str().unwrap()), last)
    }

    fn secret(&self, product: &str, key: &str) -> String {
        let text = std::fs::read_to_string(
            self.site
                .repo
                .path()
                .join(format!(".berth/secrets/{product}.env")),
        )
        .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap()
            .to_string()
    }
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn zstd_decompress(p: &Path) -> Vec<u8> {
    zstd::decode_all(std::fs::File::open(p).unwrap()).unwrap()
}

#[test]
fn round_trip_of_100k_rows_is_identical_and_nothing_secret_is_written() {
    let db = Db::new();
    // What lives beside the content: an extension only a superuser may create, a grant
    // to another role, database and role-in-database settings.
    db.sql("postgres", "CREATE ROLE reporter");
    db.sql("bestays", "CREATE EXTENSION postgres_fdw");
    db.sql(
        "bestays",
        "SET ROLE bestays_user; GRANT SELECT ON guests TO reporter",
    );
    db.sql(
        "postgres",
        "ALTER DATABASE bestays SET statement_timeout = '5s'; \
         ALTER DATABASE bestays SET search_path = \"$user\", public; \
         ALTER ROLE bestays_user IN DATABASE bestays SET work_mem = '8MB'; \
         GRANT CONNECT ON DATABASE bestays TO reporter",
    );
    let shape = |db: &Db| {
        db.sql(
            "postgres",
            "SELECT (SELECT string_agg(array_to_string(setconfig, ','), ';' ORDER BY setrole) FROM pg_db_role_setting s \
               JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = 'bestays') \
             || ' ' || has_database_privilege('reporter', 'bestays', 'CONNECT') \
             || ' ' || has_database_privilege('realestate_user', 'bestays', 'CONNECT')",
        ) + &db.sql(
            "bestays",
            "SELECT ' ' || has_table_privilege('reporter', 'guests', 'SELECT') || ' ' || \
             (SELECT count(*) FROM pg_extension WHERE extname = 'postgres_fdw')",
        )
    };
    let shape_before = shape(&db);
    assert!(
        shape_before.contains("statement_timeout=5s"),
        "{shape_before}"
    );
    let before = db.fingerprint("bestays");
    assert_eq!(before["rows guests"].split(' ').next(), Some("20000"));
    assert_eq!(before["rows bookings"].split(' ').next(), Some("70000"));

    let out = db.run(&["backup", "bestays"]);
    out.assert_code(0);
    assert!(
        out.stdout.contains("5 tables") || out.stdout.contains("3 tables"),
        "{}",
        out.snapshot()
    );
    let (file, rec) = db.latest_backup();
    assert!(file.to_string_lossy().ends_with(".dump.zst"), "{file:?}");
    assert_eq!(mode(&file), 0o600);
    assert_eq!(
        mode(&PathBuf::from(format!("{}.json", file.display()))),
        0o600
    );
    assert_eq!(mode(&db.backups_dir()), 0o700);
    assert_eq!(rec["product"], "bestays");
    assert_eq!(rec["database"], "bestays");
    assert_eq!(rec["table_count"], 3);
    let rows: u64 = rec["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["rows"].as_u64().unwrap())
        .sum();
    assert_eq!(rows, 100_000);
    assert!(rec["server_version"].as_str().unwrap().starts_with("1"));
    assert!(rec["pg_dump_version"].as_str().unwrap().starts_with("1"));
    assert!(rec["file_bytes"].as_u64().unwrap() < rec["dump_bytes"].as_u64().unwrap() / 2);
    assert_eq!(
        rec["sha256"].as_str().unwrap(),
        sha256_hex(&std::fs::read(&file).unwrap())
    );
    // No leftovers of the temporary write.
    let names: Vec<String> = std::fs::read_dir(db.backups_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".lock" && n != ".gitignore")
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    // No password anywhere: not the admin's, not the product role's.
    let plain = zstd_decompress(&file);
    assert!(plain.starts_with(b"PGDMP"), "a pg_dump custom archive");
    let record_text = std::fs::read_to_string(format!("{}.json", file.display())).unwrap();
    for pw in [
        db.pg.password.clone(),
        db.secret("bestays", "DATABASE_PASSWORD"),
    ] {
        assert!(!record_text.contains(&pw));
        assert!(!contains(&plain, pw.as_bytes()));
        assert!(!contains(&std::fs::read(&file).unwrap(), pw.as_bytes()));
        assert!(!out.all().contains(&pw));
    }

    // Damage the live database, then restore.
    db.sql(
        "bestays",
        "SET ROLE bestays_user; DELETE FROM bookings WHERE id % 7 = 0; DROP VIEW revenue; \
         UPDATE guests SET name = 'changed' WHERE id < 100; SELECT nextval('booking_ref');",
    );
    assert_ne!(db.fingerprint("bestays"), before);
    let real_before = db.fingerprint("realestate");
    let out = db.run(&["restore", "bestays", file.to_str().unwrap(), "--yes"]);
    out.assert_code(0);
    assert!(
        out.stdout.contains("restored bestays from"),
        "{}",
        out.snapshot()
    );
    assert_eq!(
        db.fingerprint("bestays"),
        before,
        "identical content after restore"
    );
    assert_eq!(
        shape(&db),
        shape_before,
        "grants, settings and extensions come along"
    );
    assert_eq!(db.fingerprint("realestate"), real_before);

    // The product role owns and uses it; other roles cannot connect.
    let pw = db.secret("bestays", "DATABASE_PASSWORD");
    let (ok, n) = db.pg.psql_as(
        "bestays_user",
        &pw,
        "bestays",
        "SELECT count(*) FROM bookings",
    );
    assert!(ok, "{n}");
    assert_eq!(n.trim(), "70000");
    let (ok, n) = db.pg.psql_as(
        "bestays_user",
        &pw,
        "bestays",
        "INSERT INTO audit_log VALUES (now(), 'after restore')",
    );
    assert!(ok, "the product role can write: {n}");
    let rpw = db.secret("realestate", "DATABASE_PASSWORD");
    let (ok, _) = db
        .pg
        .psql_as("realestate_user", &rpw, "bestays", "SELECT 1");
    assert!(!ok, "another product's role may not connect");

    // The replaced database is kept aside, named in the output.
    let dbs = db.databases();
    let aside: Vec<_> = dbs
        .iter()
        .filter(|d| d.starts_with("bestays_pre_restore_"))
        .collect();
    assert_eq!(aside.len(), 1, "{dbs:?}");
    assert!(out.stdout.contains(aside[0].as_str()));
    assert!(
        !dbs.iter()
            .any(|d| d.contains("_restore_") && !d.contains("pre_restore"))
    );

    // The audit has it.
    let audit = std::fs::read_to_string(db.site.repo.path().join(".berth/audit.jsonl")).unwrap();
    assert!(audit.contains("\"step\":\"backup\"") && audit.contains("\"step\":\"restore\""));
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// A psql session that stays connected; `pid()` asks the server for its backend.
struct Conn {
    child: std::process::Child,
}

impl Conn {
    fn open(pg: &Postgres, db: &str) -> Self {
        let child = std::process::Command::new("psql")
            .args([
                "-X",
                "-q",
                "-At",
                "-h",
                "127.0.0.1",
                "-p",
                &pg.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
            ])
            .env("PGPASSWORD", &pg.password)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Self { child }
    }

    /// The backend pid, or None when the connection is gone.
    fn pid(&mut self) -> Option<String> {
        use std::io::{BufRead, Write};
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "SELECT pg_backend_pid();").ok()?;
        stdin.flush().ok()?;
        let mut line = String::new();
        let stdout = self.child.stdout.as_mut().unwrap();
        let mut r = std::io::BufReader::new(stdout);
        r.read_line(&mut line).ok()?;
        let l = line.trim();
        (!l.is_empty()).then(|| l.to_string())
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn restore_swaps_under_a_running_product_and_leaves_the_other_untouched() {
    let db = Db::new();
    db.run(&["deploy", "bestays", "--yes"]).assert_code(0);
    db.run(&["deploy", "realestate", "--yes"]).assert_code(0);
    let version = db.site.head_version();
    assert_eq!(db.site.get("bestays.app", "/api/health").0, 200);
    db.run(&["backup", "bestays"]).assert_code(0);
    let before = db.fingerprint("bestays");
    db.sql("bestays", "SET ROLE bestays_user; TRUNCATE audit_log");

    let mut best_conn = Conn::open(&db.pg, "bestays");
    let mut real_conn = Conn::open(&db.pg, "realestate");
    let real_pid = real_conn.pid().expect("connected");
    assert!(best_conn.pid().is_some());
    let real_procs = db.site.processes("realestate");
    let real_before = db.fingerprint("realestate");

    let out = db.run(&["restore", "bestays", "latest", "--yes", "--format", "json"]);
    out.assert_code(0);
    let rep: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(rep["version"], version.as_str());
    // Every phase is timed, the new database's creation too (overlapping the
    // decompression, so it is listed after it).
    let phases: Vec<String> = rep["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .map(|n| match n.strip_prefix("pg_restore -j ") {
            Some(rest) => format!(
                "pg_restore -j N{}",
                rest.trim_start_matches(char::is_numeric)
            ),
            None => n.to_string(),
        })
        .collect();
    assert_eq!(
        phases,
        [
            "prepare",
            "checksum and decompression",
            "create the database (during the decompression)",
            "pg_restore -j N: schema, data, indexes and constraints",
            "row counts",
            "ANALYZE",
            "swap"
        ],
        "{rep}"
    );
    crate::logs::validate_json_docs("restore.schema.json", std::slice::from_ref(&rep));
    assert!(out.stderr.contains("stop bestays"), "{}", out.snapshot());
    assert!(out.stderr.contains("health-check"), "{}", out.snapshot());

    assert_eq!(
        db.fingerprint("bestays"),
        before,
        "the product's database is replaced"
    );
    // The planner has statistics for every restored table (an ANALYZE by berth, not
    // autovacuum's: that one records last_autoanalyze).
    assert_eq!(
        db.sql(
            "bestays",
            "SELECT count(*) || ' ' || count(last_analyze) FROM pg_stat_user_tables WHERE schemaname = 'public'"
        ),
        "3 3",
        "every restored table is analyzed"
    );
    // An expression index has statistics of its own too (ANALYZE gathers them only
    // for indexes that exist by then; berth runs it after pg_restore's index builds).
    assert_ne!(
        db.sql(
            "bestays",
            "SELECT count(*) FROM pg_stats WHERE schemaname = 'public' AND tablename = 'guests_email_lower'"
        ),
        "0",
        "the expression index has statistics"
    );
    assert_eq!(db.fingerprint("realestate"), real_before);
    assert_eq!(
        real_conn.pid(),
        Some(real_pid),
        "the other product's connection survives"
    );
    assert_eq!(
        best_conn.pid(),
        None,
        "the product's old connections were terminated"
    );
    assert_eq!(
        db.site.processes("realestate"),
        real_procs,
        "the other product kept running"
    );
    // The product serves again, same version.
    let (code, v) = db.site.get("bestays.app", "/api/health");
    assert_eq!((code, v.as_str()), (200, version.as_str()));
    let status = db.run(&["status", "bestays", "--format", "json"]);
    status.assert_code(0);
    let v: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    let age = v["services"][0]["last_backup_age_s"].as_u64().unwrap();
    assert!(age < 600, "{age}");
    let text = db.run(&["status"]);
    assert!(text.stdout.contains("BACKUP"), "{}", text.snapshot());
    let real_row = text
        .stdout
        .lines()
        .find(|l| l.starts_with("realestate"))
        .unwrap();
    assert!(
        real_row.contains("never"),
        "realestate was never backed up: {real_row}"
    );
    let best_row = text
        .stdout
        .lines()
        .find(|l| l.starts_with("bestays"))
        .unwrap();
    assert!(best_row.contains("s ago"), "{best_row}");
    assert!(
        status.stdout.contains("\"running\": true"),
        "{}",
        status.snapshot()
    );
}

#[test]
fn damaged_or_interrupted_restores_leave_the_live_database_intact() {
    let db = Db::new();
    db.run(&["backup", "bestays"]).assert_code(0);
    let (file, _) = db.latest_backup();
    db.sql("bestays", "SET ROLE bestays_user; DELETE FROM guests WHERE id > 19990 AND NOT EXISTS (SELECT 1 FROM bookings b WHERE b.guest_id = guests.id)");
    db.sql(
        "bestays",
        "SET ROLE bestays_user; INSERT INTO audit_log VALUES (now(), 'written after the backup')",
    );
    let live = db.fingerprint("bestays");
    let dbs = db.databases();

    // A good backup verifies (and the record says so).
    let out = db.run(&["backup", "verify", file.to_str().unwrap()]);
    out.assert_code(0);
    assert!(
        out.stdout.contains("ok (sha256 matches"),
        "{}",
        out.snapshot()
    );
    assert!(db.latest_backup().1["verified"]["ok"].as_bool().unwrap());
    assert_eq!(db.databases(), dbs, "the scratch database is dropped");

    // A server that cannot be reached says nothing about the file: not recorded.
    let closed = format!(
        "postgresql://postgres:x@127.0.0.1:{}/postgres",
        berth_testkit::free_port()
    );
    let out = db.run_env(
        &["backup", "verify", file.to_str().unwrap()],
        &[("BERTH_POSTGRES_ADMIN_URL", closed.as_str())],
    );
    out.assert_code(1);
    assert!(
        db.latest_backup().1["verified"]["ok"].as_bool().unwrap(),
        "{}",
        out.snapshot()
    );

    // One flipped byte: verify and restore fail before anything changes.
    let good = std::fs::read(&file).unwrap();
    let mut bad = good.clone();
    let i = bad.len() / 2;
    bad[i] ^= 0x01;
    std::fs::write(&file, &bad).unwrap();
    let out = db.run(&["backup", "verify", "--latest", "bestays"]);
    out.assert_code(1);
    assert!(
        out.stderr.contains("checksum mismatch"),
        "{}",
        out.snapshot()
    );
    assert!(!db.latest_backup().1["verified"]["ok"].as_bool().unwrap());
    let out = db.run(&["restore", "bestays", file.to_str().unwrap(), "--yes"]);
    out.assert_code(1);
    assert!(
        out.stderr.contains("checksum mismatch")
            && out
                .stderr
                .contains("the live database bestays was not touched"),
        "{}",
        out.snapshot()
    );
    assert_eq!(db.fingerprint("bestays"), live);
    assert_eq!(db.databases(), dbs);

    // Damage that matches its (rewritten) checksum: decompression catches it.
    let rec_path = PathBuf::from(format!("{}.json", file.display()));
    let mut rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&rec_path).unwrap()).unwrap();
    rec["sha256"] = sha256_hex(&bad).into();
    std::fs::write(&rec_path, serde_json::to_string(&rec).unwrap()).unwrap();
    let out = db.run(&["restore", "bestays", file.to_str().unwrap(), "--yes"]);
    out.assert_code(1);
    assert!(
        out.stderr.contains("does not decompress"),
        "{}",
        out.snapshot()
    );
    assert!(
        out.stderr
            .contains("the live database bestays was not touched"),
        "{}",
        out.snapshot()
    );
    assert_eq!(db.fingerprint("bestays"), live);
    assert_eq!(db.databases(), dbs);
    std::fs::write(&file, &good).unwrap();
    rec["sha256"] = sha256_hex(&good).into();
    std::fs::write(&rec_path, serde_json::to_string(&rec).unwrap()).unwrap();

    // A record whose row counts disagree with what the file restores: verify says which.
    let mut wrong = rec.clone();
    let n = wrong["tables"][0]["rows"].as_u64().unwrap();
    wrong["tables"][0]["rows"] = (n + 1).into();
    std::fs::write(&rec_path, serde_json::to_string(&wrong).unwrap()).unwrap();
    let out = db.run(&["backup", "verify", file.to_str().unwrap()]);
    out.assert_code(1);
    assert!(
        out.stderr
            .contains(&format!("has {n} rows, {} at backup time", n + 1)),
        "{}",
        out.snapshot()
    );
    assert_eq!(
        db.databases(),
        dbs,
        "the scratch database is dropped after a failure too"
    );
    // One row fewer in the record than in the file: the same.
    assert!(n > 0);
    wrong["tables"][0]["rows"] = (n - 1).into();
    std::fs::write(&rec_path, serde_json::to_string(&wrong).unwrap()).unwrap();
    let out = db.run(&["backup", "verify", file.to_str().unwrap()]);
    out.assert_code(1);
    assert!(
        out.stderr
            .contains(&format!("has {n} rows, {} at backup time", n - 1)),
        "{}",
        out.snapshot()
    );
    wrong["tables"][0]["rows"] = (n + 1).into();
    std::fs::write(&rec_path, serde_json::to_string(&wrong).unwrap()).unwrap();
    // Restore counts the rows after pg_restore (the statistics disagree with the record,
    // so the table is scanned): a mismatch fails it, the new database dropped, nothing
    // swapped.
    let out = db.run(&["restore", "bestays", file.to_str().unwrap(), "--yes"]);
    out.assert_code(1);
    assert!(
        out.stderr
            .contains(&format!("has {n} rows, {} at backup time", n + 1))
            && out
                .stderr
                .contains("the live database bestays was not touched"),
        "{}",
        out.snapshot()
    );
    assert_eq!(db.fingerprint("bestays"), live);
    assert_eq!(db.databases(), dbs, "the new database is dropped");
    // A record that calls a table empty, restored where the statistics count nothing
    // (`track_counts` off in the live database: berth gives the new one its settings,
    // so pg_restore's sessions count nothing either): the table is scanned all the
    // same, and the restore fails.
    db.sql("postgres", "ALTER DATABASE bestays SET track_counts = off");
    wrong["tables"][0]["rows"] = 0.into();
    std::fs::write(&rec_path, serde_json::to_string(&wrong).unwrap()).unwrap();
    let out = db.run(&["restore", "bestays", file.to_str().unwrap(), "--yes"]);
    db.sql("postgres", "ALTER DATABASE bestays RESET track_counts");
    out.assert_code(1);
    assert!(
        out.stderr
            .contains(&format!("has {n} rows, 0 at backup time")),
        "{}",
        out.snapshot()
    );
    assert_eq!(db.fingerprint("bestays"), live);
    assert_eq!(db.databases(), dbs, "the new database is dropped");
    std::fs::write(&rec_path, serde_json::to_string(&rec).unwrap()).unwrap();

    // Without --yes and without a terminal to ask on: refused, nothing done.
    let out = db.run(&["restore", "bestays", "latest"]);
    out.assert_code(2);
    assert!(
        out.stderr.contains("pass --yes to confirm"),
        "{}",
        out.snapshot()
    );

    // A backup on a disk without room for its decoded archive: refused before a byte
    // is written or anything changes (a real, small tmpfs).
    {
        let small = Tmpfs::mount(std::fs::metadata(&file).unwrap().len() + (1 << 20));
        let copy = small.path().join(file.file_name().unwrap());
        std::fs::copy(&file, &copy).unwrap();
        std::fs::copy(&rec_path, format!("{}.json", copy.display())).unwrap();
        for args in [
            &["restore", "bestays", copy.to_str().unwrap(), "--yes"][..],
            &["backup", "verify", copy.to_str().unwrap()],
        ] {
            let out = db.run(args);
            out.assert_code(1);
            assert!(
                out.stderr.contains("the decoded archive needs")
                    && out.stderr.contains("nothing was changed"),
                "{args:?}: {}",
                out.snapshot()
            );
            assert_eq!(db.fingerprint("bestays"), live);
            assert_eq!(db.databases(), dbs);
            let partial: Vec<_> = std::fs::read_dir(small.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".partial"))
                .collect();
            assert!(partial.is_empty(), "{partial:?}");
        }
    }

    // kill -9 midway (after the new database is restored, and after the services
    // stopped): the live database is intact; the next restore completes.
    for point in ["restored", "stopped"] {
        let env = db.env();
        let mut child = berth(db.site.repo.path())
            .args(["restore", "bestays", file.to_str().unwrap(), "--yes"])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("BERTH_DEBUG_PAUSE_RESTORE", point)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("restore progress");
            if line.contains("paused") {
                break;
            }
            assert!(Instant::now() < deadline, "no pause");
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(
            db.fingerprint("bestays"),
            live,
            "killed at {point}: live intact"
        );
        let pw = db.secret("bestays", "DATABASE_PASSWORD");
        let (ok, out) = db.pg.psql_as(
            "bestays_user",
            &pw,
            "bestays",
            "SELECT count(*) FROM guests",
        );
        assert!(ok, "the product can still use its database: {out}");
    }
    let left: Vec<String> = db
        .databases()
        .into_iter()
        .filter(|d| d.starts_with("bestays_restore_"))
        .collect();
    // The second run dropped what the first left; the second's own is left.
    assert_eq!(left.len(), 1, "{left:?}");
    let out = db.run(&["restore", "bestays", "latest", "--yes"]);
    out.assert_code(0);
    assert!(
        out.stderr
            .contains("left by an interrupted verify or restore"),
        "{}",
        out.snapshot()
    );
    assert_ne!(
        db.fingerprint("bestays"),
        live,
        "the backup's content is live now"
    );
    let dbs = db.databases();
    assert!(
        !dbs.iter().any(|d| d.starts_with("bestays_restore_")),
        "{dbs:?}"
    );
    assert!(
        dbs.iter().any(|d| d.starts_with("bestays_pre_restore_")),
        "{dbs:?}"
    );
    let plain: Vec<_> = std::fs::read_dir(db.backups_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".partial"))
        .collect();
    assert!(
        plain.is_empty(),
        "no decoded archive stays behind: {plain:?}"
    );
}

/// A tmpfs of `bytes` mounted on a temporary directory (needs root, as CI has: a
/// failed mount fails the test), unmounted when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(bytes: u64) -> Self {
        let dir = temp_dir();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs failed (the test needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

/// Synthetic backups (a record and a file each) once a day for 400 days.
fn synthetic_backups(dir: &Path, now: u64, verified_day: u64) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let mut files = Vec::new();
    for day in 0..400u64 {
        let t = now - day * 86_400 - 3600;
        let (compact, rfc) = berth_backup::stamp(t);
        let name = format!("bestays_{compact}.dump.zst");
        std::fs::write(dir.join(&name), b"x").unwrap();
        let rec = serde_json::json!({
            "format": 1, "product": "bestays", "database": "bestays", "file": name,
            "started": rfc, "started_unix": t, "finished": rfc, "finished_unix": t,
            "duration_ms": 1, "server_version": "15", "pg_dump_version": "15",
            "dump_bytes": 1, "file_bytes": 1, "sha256": "00", "compression": "zstd", "level": 3,
            "encrypted": false, "table_count": 0, "tables": [],
            "verified": if day == verified_day { serde_json::json!({"at": rfc, "at_unix": t, "ok": true, "detail": ""}) } else { serde_json::Value::Null },
        });
        let mut rec = rec;
        if day != verified_day {
            rec.as_object_mut().unwrap().remove("verified");
        }
        std::fs::write(dir.join(format!("{name}.json")), rec.to_string()).unwrap();
        files.push(dir.join(name));
    }
    files
}

/// Civil date (year, month, day) of a count of days since 1970-01-01 (the proleptic
/// Gregorian calendar, by era arithmetic).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Which of the backups (taken at `unix`, newest first, one index each) a 7-day / 4-week /
/// 6-month policy keeps, reckoned from scratch: the newest of each of the last 7 days, of
/// each of the last 4 weeks (Monday to Sunday) and of each of the last 6 calendar months,
/// the newest backup and the newest verified one.
fn prune_oracle(unix: &[u64], now: u64, verified: usize) -> Vec<usize> {
    let day = |t: u64| (t / 86_400) as i64;
    // 1970-01-01 was a Thursday: days since the Monday before it.
    let monday = |d: i64| d - (d + 3).rem_euclid(7);
    let month = |d: i64| {
        let (y, m, _) = civil(d);
        y * 12 + m
    };
    let today = day(now);
    let mut keep = std::collections::BTreeSet::new();
    let mut newest_of = |bucket: &dyn Fn(i64) -> Option<i64>| {
        let mut seen = std::collections::HashSet::new();
        for (i, t) in unix.iter().enumerate() {
            if let Some(b) = bucket(day(*t))
                && seen.insert(b)
            {
                keep.insert(i);
            }
        }
    };
    newest_of(&|d| (today - d < 7).then_some(d));
    newest_of(&|d| ((monday(today) - monday(d)) / 7 < 4).then_some(monday(d)));
    newest_of(&|d| (month(today) - month(d) < 6).then_some(month(d)));
    keep.insert(0);
    keep.insert(verified);
    keep.into_iter().collect()
}

#[test]
fn the_prune_oracle_knows_the_calendar() {
    assert_eq!(civil(0), (1970, 1, 1));
    assert_eq!(civil(11_016), (2000, 2, 29));
    assert_eq!(civil(20_787), (2026, 11, 30));
}

#[test]
fn prune_lists_then_deletes_exactly_what_the_policy_selects() {
    let site = Site::new(0);
    let dir = site.repo.path().join("backups/bestays");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Day 300 is the only verified backup: it must survive any policy.
    let files = synthetic_backups(&dir, now, 300);
    let out = site.berth(&["backup", "prune", "bestays", "--format", "json"]);
    out.assert_code(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["dry_run"], true);
    let rows = v["backups"].as_array().unwrap();
    assert_eq!(rows.len(), 400);
    let kept: Vec<&str> = rows
        .iter()
        .filter(|r| r["keep"] == true)
        .map(|r| r["file"].as_str().unwrap())
        .collect();
    // 7 days + up to 4 weeks + up to 6 months, overlapping; plus the verified one.
    assert!((12..=18).contains(&kept.len()), "{kept:?}");
    // Exactly the set an independent reckoning of the policy keeps (plain day arithmetic,
    // not the implementation's calendar library).
    let unix: Vec<u64> = (0..400u64).map(|i| now - i * 86_400 - 3600).collect();
    let expected: Vec<String> = prune_oracle(&unix, now, 300)
        .into_iter()
        .map(|i| files[i].display().to_string())
        .collect();
    let mut got: Vec<String> = kept.iter().map(|s| s.to_string()).collect();
    got.sort();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(got, want, "prune keeps another set than the policy says");
    let verified = files[300].display().to_string();
    assert!(
        kept.contains(&verified.as_str()),
        "never the newest verified backup"
    );
    assert!(
        files.iter().all(|f| f.exists()),
        "a dry run deletes nothing"
    );

    let text = site.berth(&["backup", "prune", "bestays"]);
    assert!(text.stdout.contains("would delete"), "{}", text.snapshot());
    assert!(
        text.stdout.contains("run again with --yes"),
        "{}",
        text.snapshot()
    );

    // Leftovers of interrupted backups go once they are a day old.
    let stale = dir.join(".bestays_20250101T030000Z.dump.zst.partial");
    let fresh = dir.join(".bestays_20990101T030000Z.dump.zst.partial");
    for p in [&stale, &fresh] {
        std::fs::write(p, b"half").unwrap();
    }
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(2 * 86_400))
        .unwrap();
    let out = site.berth(&["backup", "prune", "bestays", "--yes"]);
    out.assert_code(0);
    assert!(!stale.exists() && fresh.exists(), "{}", out.snapshot());
    assert!(out.stdout.contains("left by an interrupted backup"));
    for f in &files {
        let keep = expected.contains(&f.display().to_string());
        assert_eq!(f.exists(), keep, "{}", f.display());
        assert_eq!(
            PathBuf::from(format!("{}.json", f.display())).exists(),
            keep
        );
    }
    // Flags override the manifest: keep one day only (plus the verified one).
    site.berth(&[
        "backup",
        "prune",
        "bestays",
        "--keep-days",
        "1",
        "--keep-weeks",
        "0",
        "--keep-months",
        "0",
        "--yes",
    ])
    .assert_code(0);
    let left: Vec<_> = files.iter().filter(|f| f.exists()).collect();
    assert_eq!(left, vec![&files[0], &files[300]]);
}

#[test]
fn encrypted_backups_cannot_be_restored_without_the_identity() {
    let site = Site::new(0);
    let id = age::x25519::Identity::generate();
    let other = age::x25519::Identity::generate();
    use age::secrecy::ExposeSecret;
    let id_file = site.repo.path().join(".berth/backup.key");
    std::fs::create_dir_all(id_file.parent().unwrap()).unwrap();
    std::fs::write(&id_file, format!("{}\n", id.to_string().expose_secret())).unwrap();
    let other_file = site.repo.path().join(".berth/other.key");
    std::fs::write(
        &other_file,
        format!("{}\n", other.to_string().expose_secret()),
    )
    .unwrap();
    site.edit_manifest(
        "[secret_scan]",
        &format!(
            "[backup]\nrecipients = [\"{}\"]\n\n[secret_scan]",
            id.to_public()
        ),
    );
    site.repo
        .commit_all("chore: encrypted backups (TASK-40-backup-bestays)");
    let db = Db::with_site(site);
    let live = db.fingerprint("bestays");
    db.run(&["backup", "bestays"]).assert_code(0);
    let (file, rec) = db.latest_backup();
    assert!(file.to_string_lossy().ends_with(".dump.zst.age"));
    assert_eq!(rec["encrypted"], true);
    let bytes = std::fs::read(&file).unwrap();
    assert!(bytes.starts_with(b"age-encryption.org/v1"));
    assert!(!contains(&bytes, b"PGDMP") && !contains(&bytes, b"Guest 1"));

    let dbs = db.databases();
    let out = db.run(&["restore", "bestays", "latest", "--yes"]);
    out.assert_code(2);
    assert!(
        out.stderr.contains("is encrypted: pass the age identity"),
        "{}",
        out.snapshot()
    );
    let out = db.run(&[
        "restore",
        "bestays",
        "latest",
        "--yes",
        "--identity",
        other_file.to_str().unwrap(),
    ]);
    out.assert_code(1);
    assert!(
        out.stderr.contains("could not decrypt"),
        "{}",
        out.snapshot()
    );
    assert_eq!(db.databases(), dbs, "nothing created");
    assert_eq!(db.fingerprint("bestays"), live);

    let out = db.run_env(
        &["backup", "verify", "--latest", "bestays"],
        &[("BERTH_AGE_IDENTITY", id_file.to_str().unwrap())],
    );
    out.assert_code(0);
    db.sql("bestays", "SET ROLE bestays_user; DELETE FROM audit_log");
    db.run(&[
        "restore",
        "bestays",
        "latest",
        "--yes",
        "--identity",
        id_file.to_str().unwrap(),
    ])
    .assert_code(0);
    assert_eq!(db.fingerprint("bestays"), live);
}

#[test]
fn redis_keys_are_backed_up_and_restored_with_their_ttls() {
    let site = Site::new(0);
    site.edit_manifest("[secret_scan]", "[backup]\nredis = true\n\n[secret_scan]");
    site.repo
        .commit_all("chore: redis backups (TASK-41-backup-bestays)");
    let db = Db::with_site(site);
    let redis = &db.redis;
    redis.cli(None, &["SELECT", "0"]);
    for i in 0..300 {
        redis.cli(
            None,
            &["SET", &format!("bestays:session:{i}"), &format!("v{i}")],
        );
    }
    redis.cli(None, &["HSET", "bestays:cart", "a", "1", "b", "2"]);
    redis.cli(None, &["SET", "bestays:ttl", "soon", "EX", "5000"]);
    redis.cli(None, &["SET", "bestays[x]*", "odd"]);
    redis.cli(None, &["SET", "realestate:k", "theirs"]);
    let out = db.run(&["backup", "bestays"]);
    out.assert_code(0);
    assert!(out.stdout.contains("302 Redis keys"), "{}", out.snapshot());
    let (_, rec) = db.latest_backup();
    assert_eq!(rec["redis"]["keys"], 302);

    // A second backup in the same second keeps its own Redis file; `latest` is it.
    let again = db.run(&["backup", "bestays"]);
    again.assert_code(0);
    let (latest, rec2) = db.latest_backup();
    assert_ne!(rec2["redis"]["file"], rec["redis"]["file"]);
    assert!(latest.exists());
    let out = db.run(&["backup", "verify", "--latest", "bestays"]);
    out.assert_code(0);

    // Redis down: the database backup still lands (listed, recorded), exit 1 says why.
    let closed = format!("redis://127.0.0.1:{}", berth_testkit::free_port());
    let out = db.run_env(
        &["backup", "bestays"],
        &[("BERTH_REDIS_ADMIN_URL", closed.as_str())],
    );
    out.assert_code(1);
    assert!(
        out.stderr.contains("its Redis part failed"),
        "{}",
        out.snapshot()
    );
    let (_, rec3) = db.latest_backup();
    assert!(
        rec3["redis_error"]
            .as_str()
            .unwrap()
            .contains("could not connect"),
        "{rec3}"
    );
    assert!(rec3["redis"].is_null());

    redis.cli(None, &["FLUSHALL"]);
    redis.cli(None, &["SET", "bestays:created-after-backup", "x"]);
    redis.cli(None, &["SET", "realestate:k", "theirs-later"]);
    // The newest backup has no Redis part: asking for it is a usage error.
    db.run(&["restore", "bestays", "latest", "--yes", "--with-redis"])
        .assert_code(2);
    let out = db.run(&[
        "restore",
        "bestays",
        latest.to_str().unwrap(),
        "--yes",
        "--with-redis",
    ]);
    out.assert_code(0);
    assert!(
        out.stdout.contains("the previous Redis keys are saved in"),
        "{}",
        out.snapshot()
    );
    assert_eq!(
        redis.cli(None, &["GET", "bestays:created-after-backup"]),
        "",
        "the key space is the backup's"
    );
    assert_eq!(redis.cli(None, &["GET", "bestays:session:299"]), "v299");
    assert_eq!(redis.cli(None, &["HGET", "bestays:cart", "b"]), "2");
    let ttl: i64 = redis.cli(None, &["TTL", "bestays:ttl"]).parse().unwrap();
    assert!((4900..=5000).contains(&ttl), "{ttl}");
    assert_eq!(
        redis.cli(None, &["GET", "bestays[x]*"]),
        "",
        "not under the prefix `bestays:`"
    );
    assert_eq!(redis.cli(None, &["GET", "realestate:k"]), "theirs-later");
}

#[test]
fn a_restore_whose_product_fails_its_health_gate_swaps_the_old_database_back() {
    let db = Db::new();
    db.run(&["deploy", "bestays", "--yes"]).assert_code(0);
    db.run(&["backup", "bestays"]).assert_code(0);
    db.sql(
        "bestays",
        "SET ROLE bestays_user; INSERT INTO audit_log VALUES (now(), 'written after the backup')",
    );
    let live = db.fingerprint("bestays");
    // The product will not come back up: its processes now exit at start.
    db.site.break_bestays_at_start();
    let upstream = db
        .site
        .repo
        .path()
        .join("deploy/dev/nginx/upstreams/bestays.conf");
    let live_include = std::fs::read_to_string(&upstream).unwrap();
    let out = db.run(&["restore", "bestays", "latest", "--yes"]);
    out.assert_code(1);
    assert_out_of_maintenance(&std::fs::read_to_string(&upstream).unwrap(), &live_include);
    assert!(
        out.stderr.contains("exited before it became healthy")
            && out.stderr.contains("the previous database is live again"),
        "{}",
        out.snapshot()
    );
    assert_eq!(
        db.fingerprint("bestays"),
        live,
        "the old database is live again"
    );
    let dbs = db.databases();
    assert!(
        dbs.iter().any(|d| d.starts_with("bestays_failed_restore_")),
        "the restored database is kept for inspection: {dbs:?}"
    );
    assert!(
        !dbs.iter().any(|d| d.starts_with("bestays_pre_restore_")),
        "{dbs:?}"
    );
    let audit = std::fs::read_to_string(db.site.repo.path().join(".berth/audit.jsonl")).unwrap();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"step\":\"restore\"") && l.contains("\"result\":\"failed\""))
    );
}

#[test]
fn long_database_names_never_collide_with_the_live_one() {
    let site = Site::new(0);
    let long = format!("bestays_{}", "x".repeat(55));
    assert_eq!(long.len(), 63);
    site.edit_manifest(
        "name = \"bestays\", role",
        &format!("name = \"{long}\", role"),
    );
    site.repo
        .commit_all("chore: a long database name (TASK-42-db-bestays)");
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
    let sql = |db: &str, q: &str| {
        let (ok, out) = pg.psql_as("postgres", &pg.password, db, q);
        assert!(ok, "{q}: {out}");
        out.trim().to_string()
    };
    sql(
        &long,
        "SET ROLE bestays_user; CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g",
    );
    site.berth_env(&["backup", "bestays"], &env).assert_code(0);
    site.berth_env(&["backup", "verify", "--latest", "bestays"], &env)
        .assert_code(0);
    sql(&long, "SET ROLE bestays_user; DELETE FROM t WHERE g > 10");
    for _ in 0..2 {
        let out = site.berth_env(&["restore", "bestays", "latest", "--yes"], &env);
        out.assert_code(0);
        assert_eq!(sql(&long, "SELECT count(*) FROM t"), "1000");
        // No pause between the two: restores within one second must not collide.
    }
    let dbs = sql(
        "postgres",
        "SELECT string_agg(datname, ' ') FROM pg_database",
    );
    assert_eq!(
        dbs.split(' ')
            .filter(|d| d.contains("_pre_restore_"))
            .count(),
        2,
        "two restores keep two distinct previous databases: {dbs}"
    );
    assert!(dbs.split(' ').all(|d| d.len() <= 63));
}

#[test]
fn concurrent_backups_of_one_product_never_clobber_each_other() {
    let db = Db::new();
    let env = db.env();
    let children: Vec<_> = (0..3)
        .map(|_| {
            berth(db.site.repo.path())
                .args(["backup", "bestays"])
                .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let ok = outs.iter().filter(|o| o.status.success()).count();
    assert!(ok >= 1, "at least one backup lands");
    for o in outs.iter().filter(|o| !o.status.success()) {
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(
            e.contains("another backup operation on bestays is running (backup, pid "),
            "{e}"
        );
    }
    let out = db.run(&["backup", "list", "bestays", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["backups"].as_array().unwrap().len(), ok);
    for b in v["backups"].as_array().unwrap() {
        db.run(&["backup", "verify", b["path"].as_str().unwrap()])
            .assert_code(0);
    }
}

/// What `berth restore` restarts gets the product's environment only: the admin URLs
/// restore itself needs (and anything else berth was started with) stay out of it.
#[test]
fn a_product_restarted_by_restore_gets_no_admin_url() {
    let db = Db::new();
    let marker = [("BERTH_TEST_OPERATOR_MARKER", "operator-export-2b81")];
    db.run_env(&["deploy", "bestays", "--yes"], &marker)
        .assert_code(0);
    db.run(&["backup", "bestays"]).assert_code(0);
    let before = crate::deploy::recorded_pids(&db.site, "bestays", "blue");
    db.run_env(&["restore", "bestays", "latest", "--yes"], &marker)
        .assert_code(0);
    let after = crate::deploy::recorded_pids(&db.site, "bestays", "blue");
    assert_eq!(after.len(), 2);
    assert_ne!(after, before, "restore restarted the services");
    let home = db
        .site
        .repo
        .path()
        .canonicalize()
        .unwrap()
        .join(".berth/home/bestays");
    let secrets: Vec<String> = db.env().into_iter().map(|(_, v)| v).collect();
    for (service, pid) in after {
        let env = crate::deploy::environ(pid);
        for (k, v) in &env {
            assert!(
                !k.ends_with("_ADMIN_URL") && k != "BERTH_TEST_OPERATOR_MARKER",
                "{service} got {k}"
            );
            assert!(!secrets.contains(v), "{service} got an admin URL as {k}");
        }
        assert!(
            env.iter().any(|(k, v)| k == "HOME" && Path::new(v) == home),
            "{service}: {env:?}"
        );
    }
}

#[test]
fn a_backup_inside_the_repository_does_not_stop_the_next_deploy() {
    let db = Db::new();
    // A repository whose .gitignore says nothing about backups (rendered by an older
    // berth, or the user removed the rule).
    let repo = &db.site.repo;
    let gi = std::fs::read_to_string(repo.path().join(".gitignore")).unwrap();
    let without: String = gi
        .lines()
        .filter(|l| !l.contains("backups"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(gi, without, "the fixture ignored backups/: {gi}");
    repo.write(".gitignore", &without);
    repo.commit_all("chore: forget the backups rule (TASK-0-setup-bestays)");

    db.run(&["deploy", "bestays", "--yes"]).assert_code(0);
    db.run(&["backup", "bestays"]).assert_code(0);
    assert!(db.backups_dir().join(".gitignore").is_file());
    assert_eq!(
        repo.git(&["status", "--porcelain"]).trim(),
        "",
        "the dumps show as changes"
    );
    let out = db.run(&["deploy", "bestays", "--yes"]);
    out.assert_code(0);

    // A backup directory from an older berth (no .gitignore of its own): deploy refuses,
    // and never tells the user to commit the dumps.
    std::fs::remove_file(db.backups_dir().join(".gitignore")).unwrap();
    let out = db.run(&["deploy", "bestays", "--yes"]);
    out.assert_code(2);
    assert!(
        out.stderr
            .contains("these are database backups: never commit them")
            && !out.stderr.contains("commit or stash these changes"),
        "{}",
        out.snapshot()
    );
}

#[test]
fn a_restore_under_load_answers_503_with_retry_after_never_502() {
    let db = Db::new();
    db.run(&["deploy", "bestays", "--yes"]).assert_code(0);
    db.run(&["backup", "bestays"]).assert_code(0);
    let upstream = db
        .site
        .repo
        .path()
        .join("deploy/dev/nginx/upstreams/bestays.conf");
    let live_include = std::fs::read_to_string(&upstream).unwrap();

    // The shared load generator through nginx: kept connections and new ones, every
    // route; a 503 with Retry-After is the deliberate answer, anything else fails.
    let load = berth_testkit::load::LoadConfig::new(db.site.http_port, "bestays.app")
        .paths(crate::deploy::ROUTES)
        .allow_maintenance()
        .start();
    // The load is flowing before the restore starts, and still after it returned.
    load.wait_for_answers(50);
    let out = db.run(&["restore", "bestays", "latest", "--yes"]);
    out.assert_code(0);
    load.wait_for_answers(50);
    let report = load.finish();
    assert!(
        out.stderr.contains("503 (maintenance)") && out.stderr.contains("serves the"),
        "{}",
        out.snapshot()
    );
    assert_eq!(report.count_status(502), 0, "no 502\n{}", report.summary());
    report.assert_clean(100);
    let maintenance: Vec<_> = report.samples.iter().filter(|s| s.status == 503).collect();
    assert!(
        !maintenance.is_empty(),
        "answers during the window\n{}",
        report.summary()
    );
    assert!(
        maintenance.iter().all(|s| s.retry_after),
        "every 503 says Retry-After"
    );
    // Back on the live slot, serving.
    assert_out_of_maintenance(&std::fs::read_to_string(&upstream).unwrap(), &live_include);
    let answer = berth_testkit::http::get(db.site.http_port, "bestays.app", "/api/health").unwrap();
    assert_eq!(answer.status, 200, "{:?} {}", answer.headers, answer.text());
}

/// The include after a restore: the live slot's upstreams as before, then only the
/// maintenance server kept for requests old nginx workers still hold (no upstream of it).
#[track_caller]
fn assert_out_of_maintenance(include: &str, live_include: &str) {
    assert!(
        include.starts_with(live_include),
        "the front door is not back on the live slot:\n{include}"
    );
    let rest = &include[live_include.len()..];
    assert!(
        !rest.contains("upstream") && rest.contains("return 503") && rest.contains("Retry-After"),
        "after the live upstreams only the maintenance server may follow:\n{rest}"
    );
}

#[test]
fn leftovers_of_killed_backups_go_and_a_backup_without_its_record_is_not_kept() {
    let db = Db::new();
    db.run(&["backup", "bestays"]).assert_code(0);
    let dir = db.backups_dir();
    let names = || -> Vec<String> {
        let mut v: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != ".lock" && n != ".gitignore")
            .collect();
        v.sort();
        v
    };
    let kept = names();
    // What a backup, a verify and a restore killed mid-write leave behind.
    for left in [
        ".bestays_20260101T000000Z.dump.zst.partial",
        ".bestays_20260101T000000Z.dump.zst.json.partial",
        ".bestays_20260101T000000Z.dump.zst.verify.partial",
    ] {
        std::fs::write(dir.join(left), "half").unwrap();
    }
    let out = db.run(&["backup", "bestays"]);
    out.assert_code(0);
    assert!(
        out.stderr
            .contains("removed .bestays_20260101T000000Z.dump.zst.partial"),
        "{}",
        out.snapshot()
    );
    let after = names();
    assert!(after.iter().all(|n| !n.ends_with(".partial")), "{after:?}");
    assert_eq!(after.len(), kept.len() * 2, "{kept:?} -> {after:?}");

    // The record cannot be written (a directory in its place): the dump goes too,
    // so the backup either exists whole or not at all.
    let env = db.env();
    let mut child = berth(db.site.repo.path())
        .args(["backup", "bestays"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("BERTH_DEBUG_PAUSE_BACKUP", "dumped")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let file = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("backup progress");
        if let Some(rest) = line.split("paused: dumped ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    assert!(dir.join(&file).is_file(), "the dump is in place: {file}");
    std::fs::create_dir_all(dir.join(format!("{file}.json")).join("in-the-way")).unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    // Every line the child wrote (the reader ends at its EOF), not only those forwarded yet.
    let rest: Vec<String> = rx.iter().collect();
    assert_eq!(status.code(), Some(1), "{rest:?}");
    assert!(
        rest.iter()
            .any(|l| l.contains("could not write") && l.contains("backup file was removed")),
        "{rest:?}"
    );
    assert!(!dir.join(&file).exists(), "no dump without its record");
    std::fs::remove_dir_all(dir.join(format!("{file}.json"))).unwrap();
    assert_eq!(names(), after, "exactly the backups with records are left");
    let list = db.run(&["backup", "list", "bestays", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(v["backups"].as_array().unwrap().len(), 2);
}
