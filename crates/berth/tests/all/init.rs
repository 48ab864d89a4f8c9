use crate::support::*;

fn seed_compose() -> std::path::PathBuf {
    fixtures().join("seed/docker-compose.dev.yml")
}

#[test]
fn init_from_the_seed_compose_file_passes_check_and_copies_no_secret() {
    let repo = GitRepo::new();
    std::fs::copy(seed_compose(), repo.path().join("docker-compose.dev.yml")).unwrap();
    let out = run(repo.path(), &["init", "--from", "docker-compose.dev.yml"]);
    out.assert_code(0);
    let manifest = std::fs::read_to_string(repo.path().join("berth.toml")).unwrap();
    for secret in [
        "bestays_password",
        "sk-or-v1-0123456789abcdef",
        "POSTGRES_PASSWORD",
        "postgres:postgres",
    ] {
        assert!(
            !manifest.contains(secret),
            "berth.toml contains {secret}:\n{manifest}"
        );
    }
    insta::assert_snapshot!("init_manifest", manifest);
    insta::assert_snapshot!("init_output", out.snapshot());
    repo.commit_all("chore: adopt berth (TASK-001-berth-bestays)");
    let check = run(repo.path(), &["check"]);
    // The compose file itself holds the old secrets, and the scan says so.
    check.assert_code(1);
    assert!(
        check.stderr.contains("docker-compose.dev.yml:24:"),
        "{}",
        check.snapshot()
    );
    assert!(
        check.stderr.contains("docker-compose.dev.yml:28:"),
        "{}",
        check.snapshot()
    );
    let check = run(repo.path(), &["check", "--no-secret-scan"]);
    check.assert_code(0);
}

#[test]
fn init_refuses_to_overwrite_without_force() {
    let tmp = temp_dir();
    std::fs::copy(seed_compose(), tmp.path().join("compose.yml")).unwrap();
    std::fs::write(tmp.path().join("berth.toml"), "# mine\n").unwrap();
    let out = run(tmp.path(), &["init", "--from", "compose.yml"]);
    out.assert_code(2);
    assert!(
        out.stderr
            .contains("berth.toml already exists; pass --force"),
        "{}",
        out.snapshot()
    );
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("berth.toml")).unwrap(),
        "# mine\n"
    );
    run(tmp.path(), &["init", "--from", "compose.yml", "--force"]).assert_code(0);
    assert!(
        std::fs::read_to_string(tmp.path().join("berth.toml"))
            .unwrap()
            .contains("[products.bestays]")
    );
}

#[test]
fn init_reports_bad_yaml_with_its_location() {
    let tmp = temp_dir();
    std::fs::write(
        tmp.path().join("compose.yml"),
        "services:\n  web:\n    ports: [\"80:80\"\n",
    )
    .unwrap();
    let out = run(tmp.path(), &["init", "--from", "compose.yml"]);
    out.assert_code(2);
    assert!(
        out.stderr.contains("error[compose-syntax]"),
        "{}",
        out.snapshot()
    );
    assert!(
        out.stderr.contains("--> compose.yml:"),
        "{}",
        out.snapshot()
    );
    assert!(!tmp.path().join("berth.toml").exists());
}

#[test]
fn init_names_the_product_from_the_flag() {
    let tmp = temp_dir();
    std::fs::write(
        tmp.path().join("compose.yml"),
        "services:\n  web:\n    image: nginx:1\n    ports: [\"8080:80\"]\n    environment:\n      API_TOKEN: abc123\n",
    )
    .unwrap();
    let out = run(tmp.path(), &["init", "--from", "compose.yml"]);
    out.assert_code(2);
    assert!(
        out.stderr.contains("--product <name>"),
        "{}",
        out.snapshot()
    );
    run(
        tmp.path(),
        &["init", "--from", "compose.yml", "--product", "shop"],
    )
    .assert_code(0);
    let m = std::fs::read_to_string(tmp.path().join("berth.toml")).unwrap();
    assert!(
        m.contains("[products.shop.services.web]") && m.contains("secrets = [\"API_TOKEN\"]"),
        "{m}"
    );
    assert!(!m.contains("abc123"));
}

#[test]
fn init_recognises_pgvector_and_valkey_keeps_the_url_scheme_and_the_command() {
    let repo = GitRepo::new();
    std::fs::copy(
        fixtures().join("seed/docker-compose.fastapi.yml"),
        repo.path().join("docker-compose.dev.yml"),
    )
    .unwrap();
    let out = run(repo.path(), &["init", "--from", "docker-compose.dev.yml"]);
    out.assert_code(0);
    let text = std::fs::read_to_string(repo.path().join("berth.toml")).unwrap();
    let m: toml::Value = toml::from_str(&text).unwrap();
    assert_eq!(
        m["infra"]["postgres"]["image"].as_str(),
        Some("pgvector/pgvector:pg16"),
        "{text}"
    );
    assert!(
        m["infra"]["redis"]["image"]
            .as_str()
            .unwrap()
            .starts_with("docker.io/valkey/valkey:8-alpine@sha256:")
    );
    let p = &m["products"]["bestays"];
    assert!(
        p["services"].get("db").is_none() && p["services"].get("cache").is_none(),
        "{text}"
    );
    assert_eq!(
        p["database"]["url_scheme"].as_str(),
        Some("postgresql+asyncpg"),
        "{text}"
    );
    assert_eq!(
        p["database"]["extensions"].as_array().unwrap()[0].as_str(),
        Some("vector")
    );
    assert!(
        p["redis"].get("url_scheme").is_none(),
        "redis:// is the default: {text}"
    );
    assert_eq!(
        p["services"]["server"]["command"].as_str(),
        Some("uvicorn app.main:app --host 0.0.0.0 --port 8011"),
        "{text}"
    );
    assert!(
        out.stderr.contains("--reload") && out.stderr.contains("development only"),
        "{}",
        out.snapshot()
    );
    assert!(
        !out.all().contains("no [infra.postgres]") && !out.all().contains("no [infra.redis]"),
        "{}",
        out.snapshot()
    );
    let check = run(repo.path(), &["check", "--no-secret-scan"]);
    check.assert_code(0);
    assert!(!check.stderr.contains("warning"), "{}", check.snapshot());

    // The derived URL takes the kept scheme: what SQLAlchemy's async engine reads.
    run(repo.path(), &["render", "--env", "dev"]).assert_code(0);
    let secrets = std::fs::read_to_string(repo.path().join(".berth/secrets/bestays.env")).unwrap();
    let url = secrets
        .lines()
        .find_map(|l| l.strip_prefix("DATABASE_URL="))
        .unwrap();
    assert!(
        url.starts_with("postgresql+asyncpg://bestays_user:"),
        "{url}"
    );
    let redis = secrets
        .lines()
        .find_map(|l| l.strip_prefix("REDIS_URL="))
        .unwrap();
    assert!(redis.starts_with("redis://bestays:"), "{redis}");
    let sql =
        std::fs::read_to_string(repo.path().join("deploy/dev/postgres/provision.sql")).unwrap();
    assert!(
        sql.contains("CREATE EXTENSION IF NOT EXISTS \"vector\";"),
        "{sql}"
    );
}
