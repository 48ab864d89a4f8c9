use crate::support::*;

/// `berth init` on the seed, then `berth product add realestate --like bestays`
/// gives the strategy document's layout.
#[test]
fn product_add_yields_the_seed_layout() {
    let tmp = temp_dir();
    std::fs::copy(
        fixtures().join("seed/docker-compose.dev.yml"),
        tmp.path().join("compose.yml"),
    )
    .unwrap();
    run(tmp.path(), &["init", "--from", "compose.yml"]).assert_code(0);
    let original = std::fs::read_to_string(tmp.path().join("berth.toml")).unwrap();
    let out = run(
        tmp.path(),
        &[
            "product",
            "add",
            "realestate",
            "--like",
            "bestays",
            "--format",
            "json",
        ],
    );
    out.assert_code(0);
    let m = std::fs::read_to_string(tmp.path().join("berth.toml")).unwrap();
    let v: toml::Value = toml::from_str(&m).unwrap();
    let re = &v["products"]["realestate"];
    assert_eq!(
        re["services"]["server"]["host_port"].as_integer(),
        Some(8012)
    );
    assert_eq!(re["services"]["server"]["port"].as_integer(), Some(8011));
    assert_eq!(
        re["services"]["frontend"]["host_port"].as_integer(),
        Some(5184)
    );
    assert_eq!(re["redis"]["db"].as_integer(), Some(1));
    assert_eq!(re["redis"]["prefix"].as_str(), Some("realestate:"));
    assert_eq!(re["database"]["name"].as_str(), Some("realestate_dev"));
    assert_eq!(re["database"]["role"].as_str(), Some("realestate_user"));
    assert_eq!(re["domains"][0].as_str(), Some("realestate.localhost"));
    assert_eq!(
        re["services"]["frontend"]["env"]["VITE_API_URL"].as_str(),
        Some("http://localhost:8012")
    );
    // Everything that was there is untouched, byte for byte: the new product is appended.
    assert!(
        m.starts_with(&original),
        "product add changed the existing manifest:\n--- before\n{original}\n--- after\n{m}"
    );
    assert!(m[original.len()..].contains("[products.realestate]"));
    insta::assert_snapshot!("product_add_json", out.stdout);
    run(tmp.path(), &["check", "--no-secret-scan"]).assert_code(0);

    // A third product takes the next free values again.
    run(
        tmp.path(),
        &["product", "add", "villas", "--like", "bestays"],
    )
    .assert_code(0);
    let v: toml::Value =
        toml::from_str(&std::fs::read_to_string(tmp.path().join("berth.toml")).unwrap()).unwrap();
    assert_eq!(
        v["products"]["villas"]["services"]["server"]["host_port"].as_integer(),
        Some(8013)
    );
    assert_eq!(v["products"]["villas"]["redis"]["db"].as_integer(), Some(2));
}

#[test]
fn product_add_refuses_existing_and_unknown_products_and_changes_nothing() {
    let repo = example_repo();
    let before = std::fs::read_to_string(repo.path().join("berth.toml")).unwrap();
    let out = run(
        repo.path(),
        &["product", "add", "realestate", "--like", "bestays"],
    );
    out.assert_code(2);
    assert!(
        out.stderr.contains("product `realestate` already exists"),
        "{}",
        out.snapshot()
    );
    let out = run(repo.path(), &["product", "add", "villas", "--like", "nope"]);
    out.assert_code(2);
    assert!(
        out.stderr.contains("there is no product `nope` to copy"),
        "{}",
        out.snapshot()
    );
    let out = run(
        repo.path(),
        &["product", "add", "Villas", "--like", "bestays"],
    );
    out.assert_code(2);
    assert!(out.stderr.contains("use `villas`"), "{}", out.snapshot());
    assert_eq!(
        std::fs::read_to_string(repo.path().join("berth.toml")).unwrap(),
        before
    );
}

#[test]
fn product_add_force_replaces_and_dry_run_writes_nothing() {
    let repo = example_repo();
    let before = std::fs::read_to_string(repo.path().join("berth.toml")).unwrap();
    let out = run(
        repo.path(),
        &["product", "add", "villas", "--like", "bestays", "--dry-run"],
    );
    out.assert_code(0);
    assert!(out.stdout.contains("dry run"), "{}", out.snapshot());
    assert_eq!(
        std::fs::read_to_string(repo.path().join("berth.toml")).unwrap(),
        before
    );
    run(
        repo.path(),
        &[
            "product",
            "add",
            "realestate",
            "--like",
            "bestays",
            "--force",
        ],
    )
    .assert_code(0);
    run(repo.path(), &["check"]).assert_code(0);
    let out = run(repo.path(), &["product", "list", "--format", "json"]);
    out.assert_code(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["products"].as_array().unwrap().len(), 2);
}

#[test]
fn product_add_on_an_invalid_manifest_reports_it() {
    let tmp = temp_dir();
    std::fs::copy(
        fixtures().join("broken/06-port-collision.toml"),
        tmp.path().join("berth.toml"),
    )
    .unwrap();
    let out = run(
        tmp.path(),
        &["product", "add", "villas", "--like", "bestays"],
    );
    out.assert_code(2);
    assert!(
        out.stderr.contains("error[port-collision]"),
        "{}",
        out.snapshot()
    );
    assert!(
        out.stderr.contains("berth.toml was not changed"),
        "{}",
        out.snapshot()
    );
}

#[test]
fn product_list_text() {
    let repo = example_repo();
    let out = run(repo.path(), &["product", "list"]);
    out.assert_code(0);
    insta::assert_snapshot!(out.stdout);
}

const P1: &str = r#"[project]
name = "shop"

[infra.postgres]
mode = "container"
port = 5433

[infra.redis]
mode = "container"
port = 6379

[products.p1]
paths = ["products/p1/**"]
domains = ["p1.app"]
database = { name = "p1", role = "p1_user" }
redis = { db = 0, prefix = "p1:" }

[products.p1.services.server]
image = "p1-server:latest"
port = 8000
host_port = 8011
route = "/api/"
health = { path = "/api/health" }
"#;

/// Issue 20: `p1:` and `p10:` cannot match each other's keys (both end with
/// the separator), so `product add p10 --like p1` works and its result passes
/// `berth check`.
#[test]
fn product_add_p10_like_p1_passes_check() {
    let tmp = temp_dir();
    std::fs::write(tmp.path().join("berth.toml"), P1).unwrap();
    let out = run(tmp.path(), &["product", "add", "p10", "--like", "p1"]);
    out.assert_code(0);
    let m = std::fs::read_to_string(tmp.path().join("berth.toml")).unwrap();
    let v: toml::Value = toml::from_str(&m).unwrap();
    assert_eq!(
        v["products"]["p10"]["redis"]["prefix"].as_str(),
        Some("p10:")
    );
    run(tmp.path(), &["check", "--no-secret-scan"]).assert_code(0);
    // And the other way round: a prefix that really begins with another is refused.
    std::fs::write(
        tmp.path().join("berth.toml"),
        m.replace("prefix = \"p10:\"", "prefix = \"p1:x:\""),
    )
    .unwrap();
    let out = run(tmp.path(), &["check", "--no-secret-scan"]);
    out.assert_code(2);
    assert!(
        out.stderr.contains(
            "error[redis-prefix-overlap]: Redis prefix `p1:x:` of `p10` overlaps `p1:` of `p1`"
        ),
        "{}",
        out.snapshot()
    );
}

/// `product add` validates what it would write: a result `berth check` rejects
/// (here a database name longer than PostgreSQL's 63 bytes) is reported with
/// exit 2 and berth.toml is left as it was.
#[test]
fn product_add_never_writes_a_manifest_check_rejects() {
    let tmp = temp_dir();
    std::fs::write(tmp.path().join("berth.toml"), P1).unwrap();
    let long = format!("p{}", "x".repeat(70));
    let out = run(tmp.path(), &["product", "add", &long, "--like", "p1"]);
    out.assert_code(2);
    assert!(
        out.stderr.contains("error[database-identifier]"),
        "{}",
        out.snapshot()
    );
    assert!(out.stderr.contains("was not changed"), "{}", out.snapshot());
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("berth.toml")).unwrap(),
        P1
    );
    // Every product that add does write passes check, over a run of names.
    for name in ["p2", "p1x", "p1-b", "q", "p11"] {
        run(tmp.path(), &["product", "add", name, "--like", "p1"]).assert_code(0);
        run(tmp.path(), &["check", "--no-secret-scan"]).assert_code(0);
    }
}
