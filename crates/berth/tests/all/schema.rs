use crate::support::*;

/// The committed schema must match what `berth schema` prints.
#[test]
fn committed_schema_is_up_to_date() {
    let path = workspace_root().join("schema/berth.schema.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let tmp = temp_dir();
    let out = run(tmp.path(), &["schema"]);
    out.assert_code(0);
    assert!(
        committed == out.stdout,
        "schema/berth.schema.json is stale: run `cargo run -p berth -- schema --output schema/berth.schema.json`"
    );
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["title"], "Manifest");
    assert!(v["properties"]["products"].is_object());
}

#[test]
fn schema_check_detects_staleness() {
    let tmp = temp_dir();
    std::fs::write(tmp.path().join("s.json"), "{}").unwrap();
    let out = run(tmp.path(), &["schema", "--output", "s.json", "--check"]);
    out.assert_code(1);
    assert!(out.stderr.contains("s.json is stale"), "{}", out.snapshot());
    run(tmp.path(), &["schema", "--output", "s.json"]).assert_code(0);
    run(tmp.path(), &["schema", "--output", "s.json", "--check"]).assert_code(0);
}

/// `check-jsonschema` (PyPI), a real JSON-schema validator, installed by ./scripts/test.sh.
fn check_jsonschema() -> std::path::PathBuf {
    let venv = workspace_root().join("scripts/tools/venv/bin");
    berth_testkit::require_program(
        "check-jsonschema",
        &[venv.to_str().unwrap()],
        "pip install check-jsonschema",
    )
}

/// Validate a TOML file against the committed schema; (passed, output).
fn validate(file: &std::path::Path) -> (bool, String) {
    let out = std::process::Command::new(check_jsonschema())
        .arg("--schemafile")
        .arg(workspace_root().join("schema/berth.schema.json"))
        .arg(file)
        .output()
        .expect("run check-jsonschema");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The example manifest validates against the committed JSON schema with a real validator (not
/// only berth's own parser), and the same validator rejects a misspelt key, a wrong type and an
/// unknown enum value in it: the schema is strict where berth is.
#[test]
fn example_validates_against_the_schema() {
    let example = example_dir().join("berth.toml");
    let (ok, text) = validate(&example);
    assert!(
        ok,
        "the example does not validate against the schema:\n{text}"
    );

    let original = std::fs::read_to_string(&example).unwrap();
    let tmp = temp_dir();
    for (what, from, to) in [
        ("a wrong type", "host_port = 8011", "host_port = \"8011\""),
        ("a misspelt key", "host_port = 8011", "host_prot = 8011"),
        (
            "a port out of range",
            "host_port = 8011",
            "host_port = 70000",
        ),
    ] {
        assert!(
            original.contains(from),
            "the example no longer has `{from}`"
        );
        let bad = tmp.path().join("berth.toml");
        std::fs::write(&bad, original.replacen(from, to, 1)).unwrap();
        let (ok, text) = validate(&bad);
        assert!(!ok, "the schema accepts {what} (`{to}`):\n{text}");
        // berth's own parser agrees.
        run(tmp.path(), &["check", "--no-secret-scan"]).assert_code(2);
    }
}

/// The committed schemas of the audit log's records and of `berth logs --format json`
/// lines match what `berth schema audit|logs` prints.
#[test]
fn committed_audit_and_logs_schemas_are_up_to_date() {
    let tmp = temp_dir();
    for (name, title) in [("audit", "AuditRecord"), ("logs", "LogRecord")] {
        let path = workspace_root().join(format!("schema/{name}.schema.json"));
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        let out = run(tmp.path(), &["schema", name]);
        out.assert_code(0);
        assert!(
            committed == out.stdout,
            "schema/{name}.schema.json is stale: run `cargo run -p berth -- schema {name} --output schema/{name}.schema.json`"
        );
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(v["title"], title);
        assert_eq!(v["additionalProperties"], false, "{name}");
    }
}

/// Each `--format json` output with a schema validates against it (real output of a
/// real deploy, with check-jsonschema), and `berth schema <name>` prints that schema.
#[test]
fn format_json_outputs_validate_against_their_schemas() {
    let site = crate::deploy::Site::new(0);
    let json_of = |args: &[&str]| -> serde_json::Value {
        let out = site.berth(args);
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", out.snapshot()))
    };
    let deploy = site.berth(&["deploy", "bestays", "--yes", "--format", "json"]);
    deploy.assert_code(0);
    site.berth(&["lock", "acquire", "realestate", "-m", "maintenance"])
        .assert_code(0);
    let outputs = [
        ("deploy", serde_json::from_str(&deploy.stdout).unwrap()),
        ("status", json_of(&["status", "--format", "json"])),
        (
            "history",
            json_of(&["history", "bestays", "--format", "json"]),
        ),
        ("lock", json_of(&["lock", "status", "--format", "json"])),
        (
            "secrets-list",
            json_of(&["secrets", "list", "--format", "json"]),
        ),
        // Whatever doctor finds here (no PostgreSQL), its output has the one shape.
        ("doctor", json_of(&["doctor", "--format", "json"])),
        (
            "product-list",
            json_of(&["product", "list", "--format", "json"]),
        ),
        ("check", json_of(&["check", "--format", "json"])),
        (
            "tls-status",
            json_of(&["tls", "status", "--format", "json"]),
        ),
    ];
    for (name, doc) in outputs {
        let printed = site.berth(&["schema", name]);
        printed.assert_code(0);
        let committed =
            std::fs::read_to_string(workspace_root().join(format!("schema/{name}.schema.json")))
                .unwrap();
        assert_eq!(printed.stdout, committed, "{name}");
        crate::logs::validate_json_docs(&format!("{name}.schema.json"), &[doc]);
    }
}

/// `berth check --format json` of a manifest with problems (errors with their places,
/// a related place) validates against schema/check.schema.json.
#[test]
fn check_json_with_problems_validates_against_its_schema() {
    let repo = example_repo();
    let path = repo.path().join("berth.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    // Two products on one port, and a key berth does not know.
    let bad = text
        .replacen("host_port = 8012", "host_port = 8011", 1)
        .replacen("[secret_scan]", "[secret_scan]\nbogus = 1", 1);
    assert_ne!(bad, text);
    std::fs::write(&path, bad).unwrap();
    let out = run(
        repo.path(),
        &["check", "--no-secret-scan", "--format", "json"],
    );
    out.assert_code(2);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(
        doc["diagnostics"].as_array().is_some_and(|d| !d.is_empty()),
        "{}",
        out.snapshot()
    );
    crate::logs::validate_json_docs("check.schema.json", &[doc]);
}
