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

/// The example manifest validates against the JSON schema too (not only berth's own parser).
#[test]
fn example_validates_against_the_schema() {
    let text = std::fs::read_to_string(example_dir().join("berth.toml")).unwrap();
    let value: serde_json::Value = toml::from_str(&text).unwrap();
    let schema =
        std::fs::read_to_string(workspace_root().join("schema/berth.schema.json")).unwrap();
    let schema: serde_json::Value = serde_json::from_str(&schema).unwrap();
    // Every top-level key of the example is a property of the schema.
    for key in value.as_object().unwrap().keys() {
        assert!(
            schema["properties"].get(key).is_some(),
            "schema lacks `{key}`"
        );
    }
    assert_eq!(schema["additionalProperties"], false);
}
