use crate::support::*;

/// The strategy document's `.env` block, verbatim.
const SEED_ENV: &str = "\
# ==========================================================================
# Shared Configuration
# ==========================================================================
POSTGRES_USER=postgres
POSTGRES_PASSWORD=postgres

# ==========================================================================
# Bestays Product
# ==========================================================================
CLERK_SECRET_KEY=sk_test_<redacted>
VITE_CLERK_PUBLISHABLE_KEY=pk_test_<redacted>

# LLM Configuration (Bestays)
OPENROUTER_API_KEY=sk-or-v1-...
LLM_CHAT_MODEL=anthropic/claude-3-sonnet

# ==========================================================================
# Real Estate Product
# ==========================================================================
REALESTATE_CLERK_SECRET_KEY=sk_test_<redacted>
REALESTATE_CLERK_PUBLISHABLE_KEY=pk_test_<redacted>

# LLM Configuration (Real Estate) - can share or separate
REALESTATE_OPENROUTER_API_KEY=sk-or-v1-...  # Optional: separate budget tracking
REALESTATE_LLM_CHAT_MODEL=anthropic/claude-3-sonnet
";

/// Every line of the seed's `.env` that holds a secret, by line number.
/// (Clerk *publishable* keys are public by design and are not flagged.)
const SECRET_LINES: &[usize] = &[5, 10, 14, 20, 24];

#[test]
fn seed_env_block_is_caught_line_by_line_with_values_masked() {
    let repo = example_repo();
    repo.write("config/.env", SEED_ENV);
    repo.git(&["add", "-f", "config/.env"]);
    repo.commit_all("chore: share settings (TASK-002-env-bestays)");
    let out = run(repo.path(), &["check", "--format", "json"]);
    out.assert_code(1);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let found: Vec<(String, u64)> = v["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["code"] == "committed-secret")
        .map(|d| {
            (
                d["primary"]["file"].as_str().unwrap().to_string(),
                d["primary"]["line"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, u64)> = SECRET_LINES
        .iter()
        .map(|l| ("config/.env".to_string(), *l as u64))
        .collect();
    assert_eq!(found, want, "{}", out.snapshot());
    // The same in text, never showing a value.
    let out = run(repo.path(), &["check"]);
    out.assert_code(1);
    for value in ["sk_test_<redacted>", "sk-or-v1-...", "=postgres\n"] {
        assert!(
            !out.all().contains(value),
            "leaked {value}\n{}",
            out.snapshot()
        );
    }
    insta::assert_snapshot!(redact_paths(&out.snapshot(), repo.path()));
}

#[test]
fn real_looking_keys_anywhere_in_tracked_files() {
    let repo = example_repo();
    repo.write("apps/server/app/keys.py", "AWS_KEY = 'AKIAIOSFODNN7EXAMPLE'\nDB_PASSWORD = \"hunter22\"\nother = os.environ['API_KEY']\n");
    repo.write(
        "deploy/id_rsa",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----\n",
    );
    repo.write(
        "docker/compose.yml",
        "services:\n  db:\n    environment:\n      DATABASE_URL: postgres://app:pa55word@db/app\n",
    );
    repo.commit_all("chore: oops (TASK-003-keys-bestays)");
    let out = run(repo.path(), &["check"]);
    out.assert_code(1);
    let locs: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.trim_start().starts_with("-->"))
        .map(str::trim)
        .collect();
    assert_eq!(
        locs,
        [
            "--> apps/server/app/keys.py:1:12",
            "--> apps/server/app/keys.py:2:16",
            "--> deploy/id_rsa:1:1",
            "--> docker/compose.yml:4:36",
        ],
        "{}",
        out.snapshot()
    );
    assert!(
        !out.all().contains("hunter22")
            && !out.all().contains("pa55word")
            && !out.all().contains("AKIAIOSFODNN7EXAMPLE")
    );
}

#[test]
fn untracked_and_excluded_files_are_not_scanned() {
    let repo = example_repo();
    // Untracked (ignored by .gitignore): the right place for secrets.
    repo.write(".env", SEED_ENV);
    // Tracked but excluded by the manifest.
    repo.write(
        "tests/fixtures/fake.env",
        "CLERK_SECRET_KEY=sk_test_fake_for_tests\n",
    );
    let manifest = std::fs::read_to_string(repo.path().join("berth.toml"))
        .unwrap()
        .replace("exclude = []", "exclude = [\"tests/fixtures/**\"]");
    repo.write("berth.toml", &manifest);
    repo.commit_all("test: fixtures (TASK-004-tests-bestays)");
    assert!(
        repo.git(&["ls-files", ".env"]).is_empty(),
        ".env must stay untracked"
    );
    let out = run(repo.path(), &["check"]);
    out.assert_code(0);
}

#[test]
fn allow_marker_accepts_a_deliberate_fake() {
    let repo = example_repo();
    repo.write(
        "docs/example.env",
        "CLERK_SECRET_KEY=sk_test_documentation_only # berth:allow-secret\n",
    );
    repo.commit_all("docs: example (TASK-005-docs-bestays)");
    run(repo.path(), &["check"]).assert_code(0);
}

#[test]
fn no_false_positive_on_the_example_monorepo() {
    let repo = example_repo();
    let out = run(repo.path(), &["check", "--format", "json"]);
    out.assert_code(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        v["diagnostics"],
        serde_json::json!([]),
        "{}",
        out.snapshot()
    );
}

#[test]
fn a_secret_anywhere_in_the_repository_is_found_not_only_under_berth_toml() {
    let repo = GitRepo::new();
    repo.write(
        "mono/berth.toml",
        "[project]\nname = \"shop\"\n\n[products.bestays]\n",
    );
    repo.write(".env", "CLERK_SECRET_KEY=sk_live_0123456789abcdef\n");
    repo.git(&["add", "-f", ".env"]);
    repo.commit_all("chore: init (TASK-1-init-bestays)");
    let out = run(repo.path(), &["--manifest", "mono/berth.toml", "check"]);
    out.assert_code(1);
    assert!(out.stderr.contains("--> .env:1:18"), "{}", out.snapshot());
    let out = run(&repo.path().join("mono"), &["check"]);
    out.assert_code(1);
    assert!(
        out.stderr.contains("--> ../.env:1:18"),
        "{}",
        out.snapshot()
    );
}

#[test]
fn a_secret_on_a_manifest_line_with_a_syntax_or_type_error_is_masked() {
    let tmp = temp_dir();
    for text in [
        "[project]\nname = \"x\"\n[products.a.services.s]\nimage = \"i\"\nenv = { CLERK_SECRET_KEY = \"sk_live_REALKEY123456\", PORT = 1 }\n",
        "[project]\nname = \"x\"\nenv = { KEY = \"sk-or-v1-abcdef123456\"\n",
    ] {
        std::fs::write(tmp.path().join("berth.toml"), text).unwrap();
        let out = run(tmp.path(), &["check", "--no-secret-scan"]);
        out.assert_code(2);
        assert!(
            !out.all().contains("REALKEY123456") && !out.all().contains("abcdef123456"),
            "{}",
            out.snapshot()
        );
    }
}

/// Set `key` in a product's secret file (as a person does for an API key).
fn set_secret(root: &std::path::Path, product: &str, key: &str, value: &str) {
    let path = root.join(format!(".berth/secrets/{product}.env"));
    let mut file = berth_render::secrets::SecretFile::load(&path).unwrap();
    assert!(file.keys().any(|k| k == key), "{key} is not declared");
    file.set(key, value);
    file.save(product).unwrap();
}

fn secret_value(root: &std::path::Path, product: &str, key: &str) -> String {
    std::fs::read_to_string(root.join(format!(".berth/secrets/{product}.env")))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} missing"))
        .to_string()
}

fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn secret_values_never_reach_deploy_output_or_the_audit_log_which_is_private() {
    use crate::deploy::Site;
    let site = Site::new(0);
    let root = site.repo.path().to_path_buf();
    let clerk = "sk_test_h2MaskMe0123456789";
    set_secret(&root, "bestays", "CLERK_SECRET_KEY", clerk);
    // An audit log an older berth left world-readable.
    let audit = root.join(".berth/audit.jsonl");
    std::fs::write(&audit, "{\"step\":\"old\"}\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&audit, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    // A migration that prints the API key on both streams, then fails.
    site.edit_manifest(
        "migrate = \"demo-app migrate\"\nenv = { APP_NAME = \"BeStays\"",
        "migrate = \"echo out $CLERK_SECRET_KEY; echo err $CLERK_SECRET_KEY >&2; exit 3\"\nenv = { APP_NAME = \"BeStays\"",
    );
    site.repo
        .commit_all("feat: a chatty migration (TASK-31-chatty-bestays)");
    let out = site.berth(&["deploy", "bestays", "--yes"]);
    out.assert_code(1);
    assert!(
        out.stderr
            .contains("failed at step `run the migration of server")
            && out.stderr.contains("err ****")
            && out.stderr.contains("out ****"),
        "the output is shown, masked:\n{}",
        out.snapshot()
    );
    assert!(!out.all().contains(clerk), "{}", out.snapshot());
    let log = std::fs::read_to_string(&audit).unwrap();
    assert!(
        log.contains("err ****") && !log.contains(clerk),
        "audit log:\n{log}"
    );
    assert_eq!(mode(&audit), 0o600, "the audit log is private");

    // A server that prints its database password and never becomes healthy.
    let db_password = secret_value(&root, "bestays", "DATABASE_PASSWORD");
    assert!(db_password.len() >= 32);
    site.edit_manifest(
        "migrate = \"echo out $CLERK_SECRET_KEY; echo err $CLERK_SECRET_KEY >&2; exit 3\"\n",
        "",
    );
    site.edit_manifest(
        "[products.bestays.services.server]\nbuild = { context = \"apps/server\", dockerfile = \"docker/server.Dockerfile\" }\ncommand = \"demo-app\"",
        "[products.bestays.services.server]\nbuild = { context = \"apps/server\", dockerfile = \"docker/server.Dockerfile\" }\ncommand = \"sh -c 'echo connecting with password $DATABASE_PASSWORD; exit 1'\"",
    );
    site.repo
        .commit_all("feat: a chatty server (TASK-32-chatty-bestays)");
    let out = site.berth(&["deploy", "bestays", "--yes"]);
    out.assert_code(1);
    assert!(
        out.stderr.contains("last log lines of bestays.server")
            && out.stderr.contains("connecting with password ****"),
        "the log tail is shown, masked:\n{}",
        out.snapshot()
    );
    assert!(!out.all().contains(&db_password), "{}", out.snapshot());
    let log = std::fs::read_to_string(&audit).unwrap();
    assert!(!log.contains(&db_password) && !log.contains(clerk), "{log}");
    assert_eq!(mode(&audit), 0o600);
}

/// A PostgreSQL and a Redis of the test's own, provisioned for a site, and the
/// environment an operator running `berth restore` has: the admin URLs, plus a
/// variable of their own.
struct Operator {
    pg: berth_testkit::Postgres,
    _redis: berth_testkit::Redis,
    env: Vec<(&'static str, String)>,
}

impl Operator {
    fn new(site: &crate::deploy::Site) -> Self {
        let pg = berth_testkit::Postgres::start();
        let redis = berth_testkit::Redis::start_with_acl("user default on nopass ~* &* +@all\n");
        let env = vec![
            ("BERTH_POSTGRES_ADMIN_URL", pg.admin_url()),
            (
                "BERTH_REDIS_ADMIN_URL",
                format!("redis://127.0.0.1:{}", redis.port),
            ),
            (
                "H2_OPERATOR_MARKER",
                format!("operator-marker-{}", std::process::id()),
            ),
            // A registry login a CI job exported for docker: not the product's either.
            (
                "DOCKER_PASSWORD",
                format!("registry-password-{}", std::process::id()),
            ),
        ];
        let this = Self {
            pg,
            _redis: redis,
            env,
        };
        this.berth(site, &["provision", "--all", "--env", "dev"])
            .assert_code(0);
        this
    }

    fn berth(&self, site: &crate::deploy::Site, args: &[&str]) -> Outcome {
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        site.berth_env(args, &env)
    }

    /// What must not be in a product process's environment: the operator's
    /// variables (by name and by value) and the admin passwords.
    #[track_caller]
    fn assert_clean(&self, what: &str, env: &[String]) {
        assert!(
            env.iter().any(|e| e == "BERTH_PRODUCT=bestays"),
            "{what}: not a bestays process? {env:?}"
        );
        for (name, value) in &self.env {
            for e in env {
                assert!(
                    !e.starts_with(&format!("{name}=")) && !e.contains(value.as_str()),
                    "{what} has {name} in its environment: {e}"
                );
            }
        }
        assert!(
            !env.iter().any(|e| e.contains(&self.pg.password)),
            "{what} has the PostgreSQL superuser's password"
        );
    }
}

/// Every process of the product the local runtime runs: each recorded pid and its process group.
fn local_processes(root: &std::path::Path, product: &str) -> Vec<u32> {
    let mut leaders = Vec::new();
    for slot in ["blue", "green"] {
        let dir = root.join(".berth/run").join(product).join(slot);
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.path().extension().is_some_and(|x| x == "json") {
                let v: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(e.path()).unwrap()).unwrap();
                leaders.push(v["pid"].as_u64().unwrap() as u32);
            }
        }
    }
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...
        let pgrp = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(2))
            .and_then(|p| p.parse::<u32>().ok());
        if pgrp.is_some_and(|g| leaders.contains(&g)) {
            pids.push(pid);
        }
    }
    pids
}

fn proc_environ(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    raw.split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

// Needs the local runtime's cleared environment (helper H3's branch): fails until it is merged.
#[test]
fn local_product_processes_never_get_the_admin_urls_or_the_operators_variables() {
    let site = crate::deploy::Site::new(0);
    let op = Operator::new(&site);
    op.berth(&site, &["deploy", "bestays", "--yes"])
        .assert_code(0);
    let pids = local_processes(site.repo.path(), "bestays");
    assert!(pids.len() >= 2, "bestays runs: {pids:?}");
    for pid in &pids {
        op.assert_clean(&format!("pid {pid} after deploy"), &proc_environ(*pid));
    }
    op.berth(&site, &["backup", "bestays"]).assert_code(0);
    let out = op.berth(&site, &["restore", "bestays", "latest", "--yes"]);
    out.assert_code(0);
    let after = local_processes(site.repo.path(), "bestays");
    assert!(
        after.len() >= 2,
        "bestays runs after the restore: {after:?}"
    );
    assert_ne!(after, pids, "the restore restarted the product");
    for pid in &after {
        op.assert_clean(&format!("pid {pid} after restore"), &proc_environ(*pid));
    }
}

#[test]
fn compose_containers_never_get_the_admin_urls_or_the_operators_variables() {
    let site = crate::deploy::Site::compose(0);
    let project = site.compose.clone().unwrap();
    // Compose interpolates `${NAME}` in env_file values from its own environment: a
    // secret file holding such a value gets nothing from berth's environment.
    let secrets = site.repo.path().join(".berth/secrets/bestays.env");
    let mut text = std::fs::read_to_string(&secrets).unwrap();
    text.push_str("PASSTHRU_PG=${BERTH_POSTGRES_ADMIN_URL}\nPASSTHRU_REDIS=${BERTH_REDIS_ADMIN_URL}\nPASSTHRU_MARKER=${H2_OPERATOR_MARKER}\nPASSTHRU_DOCKER=${DOCKER_PASSWORD}\n");
    std::fs::write(&secrets, text).unwrap();
    let op = Operator::new(&site);
    let check = |when: &str| {
        // This test's containers only: its compose projects, by label.
        let ids: Vec<String> = ["blue", "green"]
            .iter()
            .flat_map(|slot| {
                let out = std::process::Command::new("docker")
                    .args(["ps", "-q", "--filter", "label=berth.product=bestays"])
                    .args([
                        "--filter",
                        &format!("label=com.docker.compose.project={project}-bestays-{slot}"),
                    ])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut mine = Vec::new();
        for id in &ids {
            let out = std::process::Command::new("docker")
                .args([
                    "inspect",
                    "--format",
                    "{{index .Config.Labels \"com.docker.compose.project\"}} {{json .Config.Env}}",
                    id,
                ])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let Some((p, env)) = text.trim().split_once(' ') else {
                continue;
            };
            if !p.starts_with(&format!("{project}-bestays-")) {
                continue;
            }
            let env: Vec<String> = serde_json::from_str(env).unwrap();
            assert!(
                env.iter().any(|e| e.starts_with("CLERK_SECRET_KEY=")),
                "the product's own secret file is there: {env:?}"
            );
            op.assert_clean(&format!("container {id} after {when}"), &env);
            mine.push(id.clone());
        }
        assert!(
            mine.len() >= 2,
            "bestays's containers after {when}: {ids:?}"
        );
        mine
    };
    op.berth(&site, &["deploy", "bestays", "--yes"])
        .assert_code(0);
    let deployed = check("deploy");
    op.berth(&site, &["backup", "bestays"]).assert_code(0);
    let out = op.berth(&site, &["restore", "bestays", "latest", "--yes"]);
    out.assert_code(0);
    assert_ne!(
        check("restore"),
        deployed,
        "the restore restarted the product"
    );
}

#[test]
fn compose_health_gate_log_tails_mask_the_secret_files_values() {
    let site = crate::deploy::Site::compose(0);
    // A value of the secret file the server prints when it fails: demo-app names the
    // address it could not listen on ($BIND, which the compose file does not set).
    let value = format!("h2-bind-secret-{}.invalid", std::process::id());
    let secrets = site.repo.path().join(".berth/secrets/bestays.env");
    let mut text = std::fs::read_to_string(&secrets).unwrap();
    text.push_str(&format!("BIND={value}\n"));
    std::fs::write(&secrets, text).unwrap();
    let out = site.berth(&["deploy", "bestays", "--yes"]);
    out.assert_code(1);
    assert!(
        out.stderr.contains("last log lines of bestays.server")
            && out.stderr.contains("cannot listen on ****:"),
        "the log tail is shown, masked:\n{}",
        out.snapshot()
    );
    assert!(!out.all().contains(&value), "{}", out.snapshot());
    let log = std::fs::read_to_string(site.repo.path().join(".berth/audit.jsonl")).unwrap();
    assert!(!log.contains(&value), "{log}");
    assert_eq!(mode(&site.repo.path().join(".berth/audit.jsonl")), 0o600);
}
