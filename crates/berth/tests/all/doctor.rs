//! `berth doctor` on a healthy site, then with each thing broken for real.

use std::process::Command;

use crate::backup::Db;
use crate::deploy::Site;

/// One finding of `berth doctor --format json`, by its check name.
fn finding(report: &serde_json::Value, check: &str) -> serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == check)
        .cloned()
        .unwrap_or_else(|| panic!("no `{check}` check in {report:#}"))
}

/// Run doctor; assert its exit code; return the JSON report.
fn doctor(db: &Db, code: i32) -> serde_json::Value {
    let out = db.run_env(&["doctor", "--format", "json"], &[]);
    out.assert_code(code);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{}", out.snapshot()))
}

#[track_caller]
fn assert_failed_with_fix(report: &serde_json::Value, check: &str, detail: &str, fix: &str) {
    let f = finding(report, check);
    assert_eq!(f["status"], "fail", "{f:#}");
    assert!(
        f["detail"].as_str().unwrap().contains(detail),
        "want `{detail}`: {f:#}"
    );
    assert!(
        f["fix"].as_str().unwrap().contains(fix),
        "want fix `{fix}`: {f:#}"
    );
}

/// A small tmpfs mounted by the test (root, as CI is), unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn doctor_passes_a_healthy_site_and_names_each_broken_thing_with_a_fix() {
    let db = Db::with_site(Site::new(0));
    db.run_env(&["deploy", "bestays", "--yes"], &[])
        .assert_code(0);
    let root = db.site.repo.path().to_path_buf();

    let report = doctor(&db, 0);
    assert_eq!(report["ok"], true, "{report:#}");
    for check in [
        "program git",
        "program nginx",
        "program pg_dump",
        "postgres admin",
        "postgres bestays",
        "redis bestays",
        "nginx config",
        "nginx running",
        "disk bestays",
        "secrets bestays",
    ] {
        assert_eq!(
            finding(&report, check)["status"],
            "ok",
            "{check}: {report:#}"
        );
    }
    // berth speaks to PostgreSQL itself (tokio-postgres): psql is no program it calls.
    assert!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| !c["check"].as_str().unwrap().contains("psql")),
        "doctor still asks for psql: {report:#}"
    );
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(root.join("berth.toml")).unwrap()).unwrap();
    let port = |product: &str| {
        manifest["products"][product]["services"]["server"]["host_port"]
            .as_integer()
            .unwrap() as u16
    };
    assert!(
        finding(&report, &format!("port {}", port("bestays")))["detail"]
            .as_str()
            .unwrap()
            .contains("served by bestays.server (blue)")
    );

    // Another program takes realestate's port.
    let taken = std::net::TcpListener::bind(("127.0.0.1", port("realestate"))).unwrap();
    let report = doctor(&db, 1);
    assert_failed_with_fix(
        &report,
        &format!("port {}", port("realestate")),
        &format!(
            "realestate.server (blue)'s port is taken by pid {}",
            std::process::id()
        ),
        "host_port",
    );
    let text = db.run_env(&["doctor"], &[]);
    text.assert_code(1);
    assert!(
        text.stdout
            .contains(&format!("FAIL  port {}", port("realestate")))
            && text.stdout.contains("fix: stop that program")
            && text.stdout.contains("1 failed"),
        "{}",
        text.snapshot()
    );
    drop(taken);

    // Someone breaks nginx's config.
    let conf = root.join("deploy/dev/nginx/berth.conf");
    let good = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(&conf, format!("{good}\nthis is not nginx;\n")).unwrap();
    let report = doctor(&db, 1);
    assert_failed_with_fix(
        &report,
        "nginx config",
        "unknown directive",
        "run `berth render`",
    );
    std::fs::write(&conf, good).unwrap();

    // The backup disk is full.
    let backups = root.join("backups");
    std::fs::create_dir_all(&backups).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&backups)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mounting a tmpfs needs root (CI runs as root)");
    let _tmpfs = Tmpfs(backups.clone());
    std::fs::write(backups.join("filler"), vec![0u8; 3 << 20]).unwrap();
    let report = doctor(&db, 1);
    assert_failed_with_fix(
        &report,
        "disk bestays",
        "free; bestays needs 64.0 MiB",
        "berth backup prune bestays --yes",
    );

    // PostgreSQL stops (the same admin URL, nothing listening behind it any more).
    let admin = db.pg.admin_url();
    let redis_url = format!("redis://127.0.0.1:{}", db.redis.port);
    let Db { pg, redis, site } = db;
    drop(pg);
    let out = site.berth_env(
        &["doctor", "--format", "json"],
        &[
            ("BERTH_POSTGRES_ADMIN_URL", admin.as_str()),
            ("BERTH_REDIS_ADMIN_URL", redis_url.as_str()),
        ],
    );
    out.assert_code(1);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_failed_with_fix(
        &report,
        "postgres admin",
        "127.0.0.1",
        "start PostgreSQL at 127.0.0.1",
    );
    assert!(
        !out.all().contains(&admin),
        "the admin password is never printed"
    );
    drop(redis);
}
