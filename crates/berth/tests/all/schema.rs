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
            "lock-release",
            json_of(&["lock", "release", "realestate", "--format", "json"]),
        ),
        (
            "deploy-plan",
            json_of(&["deploy", "bestays", "--dry-run", "--format", "json"]),
        ),
        (
            "secrets-check",
            json_of(&["secrets", "check", "--format", "json"]),
        ),
        ("render", json_of(&["render", "--format", "json"])),
        (
            "provision",
            json_of(&["provision", "--all", "--dry-run", "--format", "json"]),
        ),
        (
            "render",
            json_of(&["render", "--check", "--format", "json"]),
        ),
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
        assert_published(name, Some(doc));
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

/// The `--format json` outputs of the git-side commands (affected, lint, log, hooks) and of
/// the manifest-writing ones (init, product add) validate against their committed schemas.
#[test]
fn git_and_manifest_command_outputs_validate_against_their_schemas() {
    let repo = attribution_repo();
    let base = repo.git(&["rev-parse", "HEAD"]).trim().to_string();
    repo.write("products/bestays/listing.py", "x");
    repo.commit_all("feat: listing (TASK-001-listing-bestays)");
    // A commit no rule attributes: a finding in affected and lint.
    repo.write("README.md", "x");
    repo.commit_all("chore: readme");
    let range = format!("{base}..HEAD");
    let mut docs = vec![
        (
            "affected",
            json(repo.path(), &["affected", "--explain", "--base", &base], 1),
        ),
        (
            "lint-commit",
            json(repo.path(), &["lint", "commit", "--range", &range], 1),
        ),
        (
            "lint-branch",
            json(repo.path(), &["lint", "branch", "feat/TASK-1-x"], 1),
        ),
        (
            "log",
            json(repo.path(), &["log", "--product", "bestays"], 0),
        ),
        ("hooks", json(repo.path(), &["hooks", "install"], 0)),
        ("hooks", json(repo.path(), &["hooks", "uninstall"], 0)),
        (
            "product-add",
            json(
                repo.path(),
                &["product", "add", "villas", "--like", "bestays"],
                0,
            ),
        ),
    ];
    let fresh = GitRepo::new();
    std::fs::copy(
        fixtures().join("seed/docker-compose.dev.yml"),
        fresh.path().join("docker-compose.dev.yml"),
    )
    .unwrap();
    docs.push((
        "init",
        json(
            fresh.path(),
            &["init", "--from", "docker-compose.dev.yml"],
            0,
        ),
    ));
    for (name, doc) in docs {
        assert_published(name, Some(doc));
    }
}

/// Every command that takes `--format` (found by walking `berth --help`, so a new one is
/// caught) names the committed schemas of its JSON output, and `berth schema` prints each.
#[test]
fn every_command_with_a_json_output_has_a_schema() {
    let schemas_of = |cmd: &str| -> &'static [&'static str] {
        match cmd {
            "deploy" | "rollback" => &["deploy", "deploy-plan"],
            "lock status" => &["lock"],
            "lock release" => &["lock-release"],
            "tls issue" | "tls renew" => &["tls"],
            "tls status" => &["tls-status"],
            "lint commit" => &["lint-commit"],
            "lint branch" => &["lint-branch"],
            "hooks install" | "hooks uninstall" => &["hooks"],
            "secrets list" => &["secrets-list"],
            "secrets check" => &["secrets-check"],
            "product add" => &["product-add"],
            "product list" => &["product-list"],
            "backup list" => &["backup-list", "backup-list-offsite"],
            "backup verify" => &["verify"],
            "backup prune" => &["backup-prune"],
            "check" => &["check"],
            "affected" => &["affected"],
            "log" => &["log"],
            "logs" => &["logs"],
            "render" => &["render"],
            "provision" => &["provision"],
            "history" => &["history"],
            "status" => &["status"],
            "doctor" => &["doctor"],
            "init" => &["init"],
            "backup" => &["backup"],
            "restore" => &["restore"],
            _ => &[],
        }
    };
    let dir = temp_dir();
    let help = |cmd: &[String]| -> String {
        let mut args: Vec<&str> = cmd.iter().map(String::as_str).collect();
        args.push("--help");
        let out = run(dir.path(), &args);
        out.assert_code(0);
        out.stdout
    };
    // The subcommands a help text lists under `Commands:`.
    let children = |text: &str| -> Vec<String> {
        text.lines()
            .skip_while(|l| !l.starts_with("Commands:"))
            .skip(1)
            .take_while(|l| l.starts_with("  ") || l.is_empty())
            .filter(|l| l.len() > 2 && !l[2..].starts_with(' '))
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .filter(|c| c != "help")
            .collect()
    };
    let mut todo = vec![Vec::<String>::new()];
    let mut with_format = Vec::new();
    while let Some(cmd) = todo.pop() {
        let text = help(&cmd);
        let takes_format = text
            .lines()
            .any(|l| l.trim_start().starts_with("--format <"));
        if !cmd.is_empty() && takes_format {
            with_format.push(cmd.join(" "));
        }
        for c in children(&text) {
            let mut next = cmd.clone();
            next.push(c);
            todo.push(next);
        }
    }
    assert!(with_format.len() > 20, "walked too little: {with_format:?}");
    for cmd in &with_format {
        let names = schemas_of(cmd);
        assert!(
            !names.is_empty(),
            "`berth {cmd} --format json` has no schema: write schema/<name>.schema.json and add it to `berth schema`"
        );
        for name in names {
            assert_published(name, None);
        }
    }
}

/// `berth schema <name>` prints the committed schema/<name>.schema.json, and `doc` (a real
/// output) validates against it.
fn assert_published(name: &str, doc: Option<serde_json::Value>) {
    let printed = run(temp_dir().path(), &["schema", name]);
    printed.assert_code(0);
    let committed =
        std::fs::read_to_string(workspace_root().join(format!("schema/{name}.schema.json")))
            .unwrap_or_default();
    assert_eq!(printed.stdout, committed, "{name}");
    if let Some(doc) = doc {
        crate::logs::validate_json_docs(&format!("{name}.schema.json"), &[doc]);
    }
}
