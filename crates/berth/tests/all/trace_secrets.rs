//! The README promises that logs never contain a secret. Run the commands that handle
//! secrets (provision, deploy, backup, verify, restore, rollback, status, logs, run) with the most
//! verbose log level berth has, and look for every secret value in everything they print
//! and in everything they record.

use berth_render::secrets::SecretFile;

use crate::backup::Db;
use crate::deploy::Site;

/// Every secret value of every product's secret file, plus the admin password.
fn secret_values(db: &Db) -> Vec<(String, String)> {
    let mut out = vec![(
        "postgres admin password".to_string(),
        db.pg.password.clone(),
    )];
    for product in ["bestays", "realestate"] {
        let path = db
            .site
            .repo
            .path()
            .join(format!(".berth/secrets/{product}.env"));
        let file = SecretFile::load(&path).unwrap();
        for key in file.keys() {
            let value = file.get(key).unwrap_or_default();
            // The key prefix comes from berth.toml (public); values short enough to occur
            // by chance prove nothing either way.
            if key != "REDIS_KEY_PREFIX" && value.len() >= 8 {
                out.push((format!("{product} {key}"), value.to_string()));
            }
        }
    }
    out
}

#[test]
fn trace_logs_of_every_command_hold_no_secret_value() {
    let db = Db::with_site(Site::new(100));
    // Declared secrets with values, as an operator would set them.
    for product in ["bestays", "realestate"] {
        let path = db
            .site
            .repo
            .path()
            .join(format!(".berth/secrets/{product}.env"));
        let mut file = SecretFile::load(&path).unwrap();
        file.set(
            "CLERK_SECRET_KEY",
            &format!("sk_test_{product}Zq81TraceSecret"),
        );
        file.set(
            "OPENROUTER_API_KEY",
            &format!("sk-or-v1-{product}77TraceKey"),
        );
        file.set(
            "VITE_CLERK_PUBLISHABLE_KEY",
            &format!("pk_test_{product}Publish42"),
        );
        file.save(product).unwrap();
    }
    let secrets = secret_values(&db);
    assert!(
        secrets.len() >= 10,
        "too few secrets to look for: {:?}",
        secrets.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );

    let trace = [("BERTH_LOG", "trace")];
    let mut printed = String::new();
    let mut berth = |args: &[&str]| {
        let out = db.run_env(args, &trace);
        out.assert_code(0);
        printed.push_str(&format!("\n### berth {args:?}\n{}", out.all()));
        out
    };
    berth(&["provision", "--all", "--env", "dev"]);
    let out = berth(&["deploy", "bestays"]);
    // The trace level really was on: berth logged the commands it ran.
    assert!(
        out.stderr.contains("TRACE") || out.stderr.contains("DEBUG"),
        "BERTH_LOG=trace printed no debug lines:\n{}",
        out.stderr
    );
    berth(&["deploy", "realestate"]);
    db.site.change("bestays", 7);
    berth(&["deploy", "bestays"]);
    berth(&["status"]);
    berth(&["backup", "bestays"]);
    berth(&["backup", "verify", "--latest", "bestays"]);
    berth(&["restore", "bestays", "latest", "--yes"]);
    berth(&["rollback", "bestays"]);
    berth(&["history", "bestays"]);
    berth(&["logs", "bestays"]);
    berth(&["logs", "bestays", "--format", "json"]);
    berth(&["run", "bestays", "--", "sh", "-c", "echo ran"]);
    let root = db.site.repo.path();
    let mut recorded = String::new();
    for file in [
        ".berth/audit.jsonl",
        ".berth/nginx/error.log",
        ".berth/nginx/access.log",
    ] {
        recorded.push_str(&std::fs::read_to_string(root.join(file)).unwrap_or_default());
    }
    let mut leaks = Vec::new();
    for (what, value) in &secrets {
        if printed.contains(value.as_str()) {
            leaks.push(format!("{what} in berth's output"));
        }
        if recorded.contains(value.as_str()) {
            leaks.push(format!("{what} in berth's records"));
        }
    }
    assert!(leaks.is_empty(), "secrets leaked: {leaks:?}");
    // The commands that carry credentials were logged, masked: the test looked where secrets
    // would be (checked after the leaks, so a leak is reported as one).
    assert!(
        printed.contains("****"),
        "no masked value in the trace: nothing that carries a secret was logged"
    );
}
