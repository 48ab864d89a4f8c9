//! One typed audit record: what every command appends (deploy steps, deploys, a failed
//! deploy, a rollback, backup, verify, restore, secrets, lock holds, one-off runs)
//! validates against the committed schema/audit.schema.json with a real validator,
//! and so do records in the shape older berth wrote by hand.

use crate::backup::Db;
use crate::deploy::Site;
use crate::logs::validate_json_docs;
use crate::secrets_cmd::with_stdin;

/// Lines older berth wrote (deploy steps, deploys, backups, verify, restore, secrets).
const OLD_RECORDS: &[&str] = &[
    r#"{"product":"bestays","version":"0123456789ab","commit":"0123456789abcdef0123456789abcdef01234567","operator":"o","step":"build","detail":"build 0123456789ab","duration_ms":3,"at":"2026-01-01T00:00:00Z","tag":"","tasks":[],"result":"ok"}"#,
    r#"{"product":"bestays","version":"0123456789ab","commit":"0123456789abcdef0123456789abcdef01234567","operator":"o","step":"deploy","result":"failed","failed_step":"health-check","rollback_of":null,"duration_ms":1500,"at":"2026-01-01T00:00:00Z"}"#,
    r#"{"product":"a","step":"deploy","result":"ok","version":"v1","at":"2026-01-01T00:00:00Z","tag":"a-deploy-1","operator":"o","tasks":["TASK-1-x"],"duration_ms":1500,"rollback_of":"a-deploy-0"}"#,
    r#"{"step":"backup","product":"a","operator":"o","at":"2026-01-01T00:00:00Z","result":"ok","file":"/b/a.dump","bytes":12}"#,
    r#"{"step":"backup-verify","product":"a","operator":"o","at":"2026-01-01T00:00:00Z","file":"/b/a.dump","result":"ok","error":null}"#,
    r#"{"step":"restore","product":"a","operator":"o","at":"2026-01-01T00:00:00Z","file":"f","result":"ok","previous_database":"a_old"}"#,
    r#"{"step":"secrets-set","product":"a","names":["KEY"],"operator":"o","at":"2026-01-01T00:00:00Z"}"#,
];

#[test]
fn every_commands_audit_records_validate_against_the_committed_schema() {
    let db = Db::with_site(Site::new(0));
    let run = |args: &[&str], code: i32| {
        db.run_env(args, &[]).assert_code(code);
    };
    run(&["deploy", "bestays", "--yes"], 0);
    // A deploy that fails its health gate.
    let before = db.site.break_bestays_at_start();
    run(&["deploy", "bestays", "--yes", "--allow-dirty"], 1);
    db.site.repo.write("berth.toml", &before);
    db.site.change("bestays", 61);
    run(&["deploy", "bestays", "--yes"], 0);
    run(&["rollback", "bestays", "--yes"], 0);
    // The --format json outputs of the backup commands, against their schemas.
    let mut outputs = Vec::new();
    for (name, args) in [
        ("backup", &["backup", "bestays", "--format", "json"][..]),
        (
            "verify",
            &[
                "backup", "verify", "--latest", "bestays", "--format", "json",
            ],
        ),
        (
            "restore",
            &["restore", "bestays", "latest", "--yes", "--format", "json"],
        ),
        ("backup-list", &["backup", "list", "--format", "json"]),
        // A dry run: what it would keep and delete, and why.
        ("backup-prune", &["backup", "prune", "--format", "json"]),
        (
            "provision",
            &["provision", "--all", "--env", "dev", "--format", "json"],
        ),
    ] {
        let out = db.run_env(args, &[]);
        out.assert_code(0);
        let doc: serde_json::Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", out.snapshot()));
        let printed = db.run_env(&["schema", name], &[]);
        let committed = std::fs::read_to_string(
            crate::support::workspace_root().join(format!("schema/{name}.schema.json")),
        )
        .unwrap();
        assert_eq!(printed.stdout, committed, "{name}");
        outputs.push((name, doc));
    }
    for (name, doc) in outputs {
        validate_json_docs(&format!("{name}.schema.json"), &[doc]);
    }
    with_stdin(
        db.site.repo.path(),
        &["secrets", "set", "bestays", "OPENROUTER_API_KEY"],
        b"sk-or-audit-test-value\n",
        &[],
    )
    .assert_code(0);
    run(
        &["lock", "acquire", "bestays", "-m", "maintenance window"],
        0,
    );
    run(&["lock", "release", "bestays"], 0);
    run(&["run", "bestays", "--", "sh", "-c", "exit 3"], 3);

    let text = std::fs::read_to_string(db.site.repo.path().join(".berth/audit.jsonl")).unwrap();
    assert!(
        !text.contains("sk-or-audit-test-value"),
        "a value in the audit log"
    );
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let steps: std::collections::BTreeSet<&str> =
        records.iter().filter_map(|r| r["step"].as_str()).collect();
    for want in [
        "lock",
        "build",
        "health-check",
        "switch",
        "deploy",
        "backup",
        "backup-verify",
        "restore",
        "secrets-set",
        "lock-hold",
        "lock-release",
        "run",
    ] {
        assert!(steps.contains(want), "no `{want}` record: {steps:?}");
    }
    assert!(
        records
            .iter()
            .any(|r| r["step"] == "deploy" && r["result"] == "failed"),
        "{text}"
    );
    assert!(
        records
            .iter()
            .any(|r| r["step"] == "deploy" && r["rollback_of"].is_string()),
        "{text}"
    );
    let mut all = records.clone();
    all.extend(OLD_RECORDS.iter().map(|l| serde_json::from_str(l).unwrap()));
    validate_json_docs("audit.schema.json", &all);
}

/// The schema is strict: a record carrying something berth never writes (an
/// environment) or a wrong type is rejected by the same validator.
#[test]
fn the_audit_schema_rejects_what_berth_never_writes() {
    for bad in [
        r#"{"step":"run","product":"a","command":["sh"],"exit_code":0,"env":{"DATABASE_URL":"x"}}"#,
        r#"{"step":"run","product":"a","exit_code":"7"}"#,
        r#"{"step":"deploy","product":"a","result":"maybe"}"#,
        r#"{"product":"a"}"#,
    ] {
        let v: serde_json::Value = serde_json::from_str(bad).unwrap();
        let ok = std::panic::catch_unwind(|| validate_json_docs("audit.schema.json", &[v]));
        assert!(ok.is_err(), "the schema accepts {bad}");
    }
}
