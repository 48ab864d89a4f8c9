//! Deploys on a real Docker Engine with Compose v2: images built `FROM scratch`
//! around a static demo-app, blue/green projects per product, behind nginx.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::deploy::{Site, assert_in_flight_across_switch};
use crate::support::*;

/// demo-app linked statically (it is one file with no dependencies: rustc alone builds it).
pub fn static_demo_app() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("berth-static-demo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("demo-app");
        let status = Command::new("rustc")
            .args([
                "--edition",
                "2024",
                "-O",
                "-C",
                "target-feature=+crt-static",
                "--target",
                "x86_64-unknown-linux-gnu",
            ])
            .arg(workspace_root().join("examples/demo-app/src/main.rs"))
            .arg("-o")
            .arg(&out)
            .status()
            .expect("rustc is required to build the static demo-app");
        assert!(status.success(), "building a static demo-app failed");
        out
    })
    .clone()
}

pub fn docker_required() {
    let ok = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "a Docker Engine is required (./scripts/test.sh starts one and exports DOCKER_HOST)"
    );
    let ok = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "Docker Compose v2 is required (./scripts/test.sh installs it)"
    );
}

/// Stop and remove every compose project of a site (containers and images).
pub fn down_all(root: &Path, project: &str) {
    for product in ["bestays", "realestate"] {
        for slot in ["blue", "green"] {
            let _ = Command::new("docker")
                .args([
                    "compose",
                    "-p",
                    &format!("{project}-{product}-{slot}"),
                    "-f",
                ])
                .arg(root.join(format!("deploy/dev/compose/{product}.yml")))
                .args(["down", "--timeout", "1", "--rmi", "all"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
    for net in ["shared", "bestays", "realestate"] {
        let _ = Command::new("docker")
            .args(["network", "rm", &format!("{project}-{net}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// `docker <args>`'s stdout, asserting it succeeded.
fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The ids of every container of a product in this site's compose projects.
fn containers(site: &Site, product: &str) -> Vec<String> {
    let project = site.compose.as_ref().unwrap();
    docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=berth.product={product}"),
        "--filter",
        &format!("label=com.docker.compose.project={project}-{product}-blue"),
    ])
    .lines()
    .chain(
        docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=berth.product={product}"),
            "--filter",
            &format!("label=com.docker.compose.project={project}-{product}-green"),
        ])
        .lines(),
    )
    .map(str::to_string)
    .collect()
}

/// The tags of a product service's images (`<project>-<product>-<service>`).
fn image_tags(site: &Site, product: &str, service: &str) -> Vec<String> {
    let project = site.compose.as_ref().unwrap();
    let mut tags: Vec<String> = docker(&[
        "image",
        "ls",
        &format!("{project}-{product}-{service}"),
        "--format",
        "{{.Tag}}",
    ])
    .lines()
    .map(str::to_string)
    .collect();
    tags.sort();
    tags
}

fn network_exists(name: &str) -> bool {
    Command::new("docker")
        .args(["network", "inspect", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The host port of a service in the site's berth.toml (blue slot).
fn host_port(site: &Site, product: &str, service: &str) -> u16 {
    let m = std::fs::read_to_string(site.repo.path().join("berth.toml")).unwrap();
    let table = format!("[products.{product}.services.{service}]");
    let at = m.find(&table).unwrap();
    m[at..]
        .lines()
        .find_map(|l| l.strip_prefix("host_port = "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Whether something accepts a TCP connection at `ip:port`.
fn answers(ip: &str, port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &format!("{ip}:{port}").parse().unwrap(),
        Duration::from_secs(2),
    )
    .is_ok()
}

/// Poll until `f` holds, for at most `limit`.
fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> Result<(), String>) {
    let start = Instant::now();
    loop {
        match f() {
            Ok(()) => return,
            Err(e) if start.elapsed() > limit => panic!("{what} within {limit:?}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

#[test]
fn rendered_health_checks_need_nothing_from_the_image_and_ports_stay_behind_the_front_door() {
    // No `health.command`: the rendered check. The images are FROM scratch with one
    // static binary: no curl, no wget, no shell.
    let site = Site::compose(0);
    let m = std::fs::read_to_string(site.repo.path().join("berth.toml")).unwrap();
    let m = m.replace(", command = [\"/demo-app\", \"health\"]", "");
    assert!(!m.contains("\"/demo-app\", \"health\""));
    // One service must be reachable directly: it says so.
    let m = m.replace(
        "[products.realestate.services.frontend]\n",
        "[products.realestate.services.frontend]\npublic = true\n",
    );
    site.repo.write("berth.toml", &m);
    site.berth(&["render", "--env", "dev"]).assert_code(0);
    site.repo
        .commit_all("chore: rendered health checks (TASK-1-health-bestays)");
    for dockerfile in ["docker/server.Dockerfile", "docker/frontend.Dockerfile"] {
        let text = std::fs::read_to_string(site.repo.path().join(dockerfile)).unwrap();
        assert!(
            text.starts_with("FROM scratch\n") && !text.contains("RUN"),
            "{text}"
        );
    }
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    site.berth(&["deploy", "realestate", "--yes"])
        .assert_code(0);

    // Docker's own verdict, from the check it runs inside each container.
    for product in ["bestays", "realestate"] {
        let ids = containers(&site, product);
        assert_eq!(ids.len(), 2, "{product}: {ids:?}");
        for id in &ids {
            wait_until(Duration::from_secs(60), "healthy", || {
                let state = docker(&[
                    "inspect",
                    "--format",
                    "{{.State.Health.Status}} {{json .State.Health.Log}}",
                    id,
                ]);
                if state.starts_with("healthy ") {
                    Ok(())
                } else {
                    Err(format!("{product} container {id}: {state}"))
                }
            });
        }
    }

    // Product ports answer on the loopback the front door uses, and on no other
    // address: 127.0.0.2 is this machine too, but a socket bound to 127.0.0.1 does not
    // accept there (one bound to every interface would).
    for (product, service) in [
        ("bestays", "server"),
        ("bestays", "frontend"),
        ("realestate", "server"),
    ] {
        let port = host_port(&site, product, service);
        assert!(
            answers("127.0.0.1", port),
            "{product}.{service} on 127.0.0.1:{port}"
        );
        assert!(
            !answers("127.0.0.2", port),
            "{product}.{service} is reachable on 127.0.0.2:{port}, past the front door"
        );
    }
    // ...except the one that asked to be public.
    let port = host_port(&site, "realestate", "frontend");
    assert!(answers("127.0.0.1", port));
    assert!(
        answers("127.0.0.2", port),
        "a `public` service answers on every address"
    );
    assert_eq!(site.get("bestays.app", "/api/health").0, 200);
}

#[test]
fn a_failed_deploy_leaves_no_image_or_network_behind_and_plans_name_the_version() {
    let site = Site::compose(0);
    let project = site.compose.clone().unwrap();
    // A product whose very first deploy fails: nothing of it may stay.
    site.edit_manifest(
        "PRODUCT_ID = \"realestate\",",
        "PRODUCT_ID = \"realestate\", DEMO_EXIT_AT_START = \"1\",",
    );
    site.berth(&["render", "--env", "dev"]).assert_code(0);
    site.repo
        .commit_all("feat: broken realestate (TASK-1-broken-realestate)");
    let out = site.berth(&["deploy", "realestate", "--yes"]);
    out.assert_code(1);
    assert!(
        out.stderr.contains("exited before it became healthy"),
        "{}",
        out.snapshot()
    );
    for service in ["server", "frontend"] {
        assert_eq!(
            image_tags(&site, "realestate", service),
            Vec::<String>::new()
        );
    }
    assert!(containers(&site, "realestate").is_empty());
    assert!(
        !network_exists(&format!("{project}-realestate")),
        "the failed first deploy left its network"
    );
    assert!(
        out.stderr.contains("removed what the failed deploy left"),
        "{}",
        out.snapshot()
    );

    // A product that is live: the failed version's images go, the live one's stay.
    let v1 = site.head_version();
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let before = site.break_bestays_at_start();
    site.berth(&["render", "--env", "dev"]).assert_code(0);
    site.repo
        .commit_all("feat: broken bestays (TASK-2-broken-bestays)");
    let v2 = site.head_version();
    let out = site.berth(&["deploy", "bestays", "--yes"]);
    out.assert_code(1);
    for service in ["server", "frontend"] {
        assert_eq!(
            image_tags(&site, "bestays", service),
            vec![v1.clone()],
            "{}",
            out.snapshot()
        );
    }
    assert!(
        network_exists(&format!("{project}-bestays")),
        "the live slot's network stays"
    );
    assert_eq!(site.get("bestays.app", "/api/health"), (200, v1.clone()));

    // A good v3, then the rollback's plan says which version the idle slot starts.
    site.repo.write("berth.toml", &before);
    site.berth(&["render", "--env", "dev"]).assert_code(0);
    site.repo.commit_all("fix: unbroken (TASK-3-fix-bestays)");
    let v3 = site.head_version();
    assert_ne!(v2, v3);
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let out = site.berth(&["rollback", "bestays", "--dry-run"]);
    out.assert_code(0);
    assert!(
        out.all()
            .contains(&format!("start the blue slot with {v1}")),
        "{}",
        out.snapshot()
    );
}

#[test]
fn compose_deploy_redeploy_rollback_with_zero_dropped_requests() {
    let site = Site::compose(2000);
    site.berth(&["deploy", "realestate", "--yes"])
        .assert_code(0);
    let out = site.berth(&["deploy", "bestays", "--yes"]);
    out.assert_code(0);
    // realestate built the images of this commit's sources: bestays tags them.
    assert!(
        out.stderr.contains("build images (compose)")
            && out.stderr.contains("reused the image of the same source")
            && !out.stderr.contains("built "),
        "{}",
        out.snapshot()
    );
    let v1 = site.head_version();
    assert_eq!(site.get("bestays.app", "/api/health"), (200, v1.clone()));
    let realestate = site.processes("realestate");
    assert_eq!(realestate.len(), 2, "{realestate:?}");

    site.repo.write("products/bestays/change.md", "x");
    site.repo.commit_all("feat: change (TASK-1-change-bestays)");
    let v2 = site.head_version();
    let load = site.load("bestays.app");
    load.wait_for_answers(20);
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    assert_eq!(site.get("bestays.app", "/api/health").1, v2);
    let start = Instant::now();
    let out = site.berth(&["rollback", "bestays", "--yes"]);
    out.assert_code(0);
    let rollback = start.elapsed();
    assert!(
        !out.stderr.contains("no longer retained"),
        "the v1 image is retained: {}",
        out.snapshot()
    );
    assert!(
        !out.stderr.contains("built "),
        "a rollback does not rebuild: {}",
        out.snapshot()
    );
    assert_eq!(site.get("bestays.app", "/api/health").1, v1);
    load.wait_for_answers(20);
    let report = load.finish();
    eprintln!("zero-downtime (compose): rollback took {rollback:?}");
    report.assert_clean(300).assert_covered();
    assert_eq!(report.versions(), [v1.clone(), v2.clone()]);
    assert_in_flight_across_switch(&report, &v1, &v2);
    assert_in_flight_across_switch(&report, &v2, &v1);
    assert_eq!(
        site.processes("realestate"),
        realestate,
        "realestate's containers were touched"
    );
    // Status reads the containers' labels.
    let s = site.berth(&["status", "bestays", "--format", "json"]);
    s.assert_code(0);
    let v: serde_json::Value = serde_json::from_str(&s.stdout).unwrap();
    let services = v["services"].as_array().unwrap();
    // Both services of bestays are reported (an empty list would pass the loop).
    let mut names: Vec<&str> = services
        .iter()
        .map(|s| s["service"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["frontend", "server"], "{v}");
    for svc in services {
        assert_eq!(svc["version"], v1.as_str(), "{v}");
        assert_eq!(svc["health"], "up");
    }
}

#[test]
fn old_images_are_pruned_and_a_rollback_rebuilds_from_the_tag_when_its_image_is_gone() {
    let site = Site::compose(0);
    let m = std::fs::read_to_string(site.repo.path().join("berth.toml"))
        .unwrap()
        .replace("runtime = \"compose\"", "runtime = \"compose\"\nkeep = 1");
    site.repo.write("berth.toml", &m);
    // Sources of this site only: no image another test built has their build key.
    site.repo
        .write("apps/server/site.txt", site.compose.as_ref().unwrap());
    site.repo
        .commit_all("chore: keep one image (TASK-5-keep-bestays)");
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let v1 = site.head_version();
    let v1_tag = site
        .repo
        .git(&["tag", "--list", "bestays-deploy-*"])
        .trim()
        .to_string();
    // Changes to the server (its image changes with each: none is shared by two versions).
    site.repo.write("apps/server/c.md", "x");
    site.repo.commit_all("feat: c (TASK-6-c-bestays)");
    // keep = 1 still keeps the version a rollback returns to: v1's image stays...
    let out = site.berth(&["deploy", "bestays", "--yes"]);
    out.assert_code(0);
    assert!(
        !out.stderr.contains("removed old images"),
        "{}",
        out.snapshot()
    );
    // ...until a third deploy makes it older than both.
    site.repo.write("apps/server/d.md", "x");
    site.repo.commit_all("feat: d (TASK-7-d-bestays)");
    let out = site.berth(&["deploy", "bestays", "--yes"]);
    out.assert_code(0);
    assert!(
        out.stderr.contains("removed old images") && out.stderr.contains(&v1),
        "{}",
        out.snapshot()
    );
    let out = site.berth(&["rollback", "bestays", "--to", &v1_tag, "--yes"]);
    out.assert_code(0);
    assert!(
        out.stderr
            .contains("is no longer retained: it will be rebuilt"),
        "{}",
        out.snapshot()
    );
    assert!(
        out.stderr.contains(&format!("from commit {v1}")),
        "{}",
        out.snapshot()
    );
    assert_eq!(site.get("bestays.app", "/api/health"), (200, v1));
}

/// The address containers reach their host at (Docker's default bridge gateway,
/// which `host-gateway` names).
fn docker_gateway() -> String {
    let cfg = docker(&[
        "network",
        "inspect",
        "bridge",
        "--format",
        "{{range .IPAM.Config}}{{.Gateway}} {{.Subnet}}{{end}}",
    ]);
    let (gateway, subnet) = cfg.trim().split_once(' ').unwrap_or(("", cfg.trim()));
    if !gateway.is_empty() {
        return gateway.to_string();
    }
    // Unset: the daemon gives the bridge the subnet's first address.
    let net: std::net::Ipv4Addr = subnet.split('/').next().unwrap().parse().unwrap();
    std::net::Ipv4Addr::from(u32::from(net) + 1).to_string()
}

/// GET through the site's nginx: the body.
fn body(site: &Site, host: &str, path: &str) -> String {
    berth_testkit::http::get(site.http_port, host, path)
        .map(|r| r.text())
        .unwrap_or_default()
}

/// The text between the first "add `" (or "set `") after `after` and the next backtick.
fn quoted_after<'a>(text: &'a str, after: &str, opener: &str) -> &'a str {
    let at = text
        .find(after)
        .unwrap_or_else(|| panic!("no `{after}` in:\n{text}"));
    let rest = &text[at..];
    let start = rest
        .find(opener)
        .unwrap_or_else(|| panic!("no `{opener}` after `{after}` in:\n{text}"))
        + opener.len();
    let end = rest[start..].find('`').unwrap() + start;
    &rest[start..end]
}

#[test]
fn containers_reach_postgres_and_redis_on_the_host_with_no_hand_set_address() {
    use berth_testkit::{Postgres, Redis};
    let gateway = docker_gateway();
    assert!(!gateway.is_empty(), "the default bridge has a gateway");
    // PostgreSQL and Redis on the host, as on a VPS: PostgreSQL already listens on the
    // gateway address, Redis on loopback only, neither lets the containers in yet.
    let pg = Postgres::start_listening(&format!("127.0.0.1,{gateway}"));
    let site = Site::compose(0);
    let m = std::fs::read_to_string(site.repo.path().join("berth.toml")).unwrap();
    let m = m
        .replace(
            "[infra.postgres]\nmode = \"container\"\nimage = \"postgres:15\"\nport = 5433\n",
            &format!(
                "[infra.postgres]\nmode = \"external\"\nadmin_url_env = \"BERTH_POSTGRES_ADMIN_URL\"\napp_port = {}\n",
                pg.port
            ),
        )
        .replace(
            "PRODUCT_ID = \"bestays\",",
            "PRODUCT_ID = \"bestays\", DEMO_MIGRATE_CONNECT = \"1\",",
        );
    assert!(m.contains("mode = \"external\""));
    // The dev ACL: the default user administers this Redis.
    site.repo.write("berth.toml", &m);
    site.berth(&["render", "--env", "dev"]).assert_code(0);
    let acl = std::fs::read_to_string(site.repo.path().join("deploy/dev/redis/users.acl")).unwrap();
    let redis = Redis::start_with_acl(&acl);
    let m = m.replace(
        "[infra.redis]\nmode = \"container\"\nimage = \"redis:7\"\nport = 6379\n",
        &format!(
            "[infra.redis]\nmode = \"external\"\nadmin_url_env = \"BERTH_REDIS_ADMIN_URL\"\napp_port = {}\n",
            redis.port
        ),
    );
    assert!(!m.contains("mode = \"container\""));
    site.repo.write("berth.toml", &m);
    site.berth(&["render", "--env", "dev"]).assert_code(0);
    site.repo
        .commit_all("chore: PostgreSQL and Redis on the host (TASK-1-external-bestays)");
    let compose =
        std::fs::read_to_string(site.repo.path().join("deploy/dev/compose/bestays.yml")).unwrap();
    assert!(
        compose.contains("host.docker.internal:host-gateway"),
        "{compose}"
    );
    let secrets =
        std::fs::read_to_string(site.repo.path().join(".berth/secrets/bestays.env")).unwrap();
    assert!(
        secrets.contains(&format!("@host.docker.internal:{}/bestays", pg.port))
            && secrets.contains(&format!("@host.docker.internal:{}/0", redis.port)),
        "containers get the host's address by default"
    );
    let out = site.berth(&["check"]);
    out.assert_code(0);
    assert!(out.stdout.contains("; 0 warnings)"), "{}", out.snapshot());

    let env = [
        ("BERTH_POSTGRES_ADMIN_URL", pg.admin_url()),
        (
            "BERTH_REDIS_ADMIN_URL",
            format!("redis://127.0.0.1:{}", redis.port),
        ),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let provision = || site.berth_env(&["provision", "bestays", "--env", "dev"], &env);

    // From inside a container of the product's network: what to change, exactly.
    let out = provision();
    eprintln!("first check:\n{}", out.snapshot());
    out.assert_code(1);
    let hba = quoted_after(&out.stdout, "pg_hba.conf", "add `").to_string();
    assert!(
        hba.starts_with("host bestays bestays_user 10.") && hba.ends_with(".0/24 scram-sha-256"),
        "{}",
        out.snapshot()
    );
    let bind = quoted_after(&out.stdout, "Redis does not accept connections", "set `").to_string();
    assert_eq!(
        bind,
        format!("bind 127.0.0.1 -::1 {gateway}"),
        "{}",
        out.snapshot()
    );
    let db_pw = std::fs::read_to_string(site.repo.path().join(".berth/secrets/bestays.env"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("DATABASE_PASSWORD="))
        .unwrap()
        .to_string();
    assert!(!out.all().contains(&db_pw), "a password was printed");
    // Do what it says.
    pg.add_hba_line(&hba);
    let value = bind.strip_prefix("bind ").unwrap();
    assert_eq!(redis.cli(None, &["CONFIG", "SET", "bind", value]), "OK");
    let mut out = provision();
    if out.code != 0 && out.stdout.contains("protected mode") {
        // The default user has no password: Redis keeps non-loopback clients out
        // until told otherwise, and the check says how.
        assert!(
            out.stdout.contains("`protected-mode no`"),
            "{}",
            out.snapshot()
        );
        assert_eq!(
            redis.cli(None, &["CONFIG", "SET", "protected-mode", "no"]),
            "OK"
        );
        out = provision();
    }
    eprintln!("last check:\n{}", out.snapshot());
    out.assert_code(0);
    assert!(
        out.stdout.contains(&format!(
            "PostgreSQL at host.docker.internal:{} ({gateway}) logs in as bestays",
            pg.port
        )) && out.stdout.contains(&format!(
            "Redis at host.docker.internal:{} ({gateway}) logs in as bestays",
            redis.port
        )),
        "{}",
        out.snapshot()
    );

    // The deploy: its migration connects from a container, and the running service
    // reports both reachable.
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    wait_until(Duration::from_secs(30), "the service reaches both", || {
        let b = body(&site, "bestays.app", "/api/health");
        if b.contains("\"database\":\"ok\"") && b.contains("\"redis\":\"ok\"") {
            Ok(())
        } else {
            Err(b)
        }
    });

    // A hand-set loopback app_host: `check` warns, and the failed migration says why
    // in one line before the tail of its output.
    site.edit_manifest(
        "admin_url_env = \"BERTH_POSTGRES_ADMIN_URL\"\n",
        "admin_url_env = \"BERTH_POSTGRES_ADMIN_URL\"\napp_host = \"localhost\"\n",
    );
    let out = site.berth(&["check"]);
    out.assert_code(0);
    assert!(
        out.stderr.contains("app-host-loopback")
            && out.stderr.contains("infra.postgres.app_host `localhost`"),
        "{}",
        out.snapshot()
    );
    site.berth(&["render", "--env", "dev"]).assert_code(0);
    site.repo
        .commit_all("chore: a wrong app_host (TASK-2-wrong-bestays)");
    let out = site.berth(&["deploy", "bestays", "--yes"]);
    eprintln!("deploy with a loopback app_host:\n{}", out.snapshot());
    out.assert_code(1);
    let lines: Vec<&str> = out.stderr.lines().collect();
    let diagnoses: Vec<usize> = (0..lines.len())
        .filter(|i| lines[*i].starts_with("diagnosis:"))
        .collect();
    assert_eq!(diagnoses.len(), 1, "{}", out.snapshot());
    let d = lines[diagnoses[0]];
    assert!(
        d.contains(&format!("PostgreSQL at localhost:{}", pg.port))
            && d.contains("[infra.postgres] app_host")
            && d.contains("remove [infra.postgres] app_host"),
        "{d}"
    );
    let tail = lines
        .iter()
        .position(|l| l.contains("connection to server at"))
        .unwrap_or_else(|| panic!("the migration's output is shown:\n{}", out.snapshot()));
    assert!(diagnoses[0] < tail, "{}", out.snapshot());
    // The old version kept serving.
    assert_eq!(site.get("bestays.app", "/api/health").0, 200);
}

#[test]
fn a_fresh_init_reaches_postgres_and_redis_on_the_host_with_no_hand_set_address() {
    fresh_init_reaches_the_hosts_databases(ServerImage::Scratch);
}

/// The same with the server in a Python image built from Debian packages (debootstrap,
/// `docker import`): psycopg2 and redis-py log in with the URLs berth derived, and the
/// image has no curl or wget for a health check.
#[test]
fn a_python_image_from_debian_packages_reaches_postgres_and_redis_on_the_host() {
    fresh_init_reaches_the_hosts_databases(ServerImage::Python);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ServerImage {
    /// FROM scratch around the static demo-app (no shell at all).
    Scratch,
    /// FROM the Debian-built Python base image, running a small stdlib HTTP server.
    Python,
}

/// The server of the Python image: `/api/health` logs in to PostgreSQL and Redis with
/// the derived URLs (a driver scheme like `+asyncpg` dropped for psycopg2).
const PYTHON_APP: &str = r#"import json, os, http.server
import psycopg2, redis

def check():
    out = {"status": "ok"}
    try:
        url = os.environ["DATABASE_URL"]
        scheme, rest = url.split("://", 1)
        with psycopg2.connect("postgresql://" + rest, connect_timeout=3) as c:
            c.cursor().execute("SELECT 1")
        out["database"] = "ok"
    except Exception as e:
        out["database"] = "error: %s" % e
    try:
        redis.from_url(os.environ["REDIS_URL"], socket_timeout=3).ping()
        out["redis"] = "ok"
    except Exception as e:
        out["redis"] = "error: %s" % e
    return out

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps(check() if self.path.startswith("/api/health") else {"ok": True},
                          separators=(",", ":")).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8011"))), Handler).serve_forever()
"#;

/// `berth-test-python:bookworm`, imported once from the root file system
/// ./scripts/test.sh builds with debootstrap ($BERTH_TEST_PYTHON_ROOTFS).
pub fn python_base_image() -> &'static str {
    static IMAGE: OnceLock<()> = OnceLock::new();
    const NAME: &str = "berth-test-python:bookworm";
    IMAGE.get_or_init(|| {
        let have = Command::new("docker")
            .args(["image", "inspect", NAME])
            .output()
            .is_ok_and(|o| o.status.success());
        if have {
            return;
        }
        let tar = std::env::var("BERTH_TEST_PYTHON_ROOTFS").unwrap_or_else(|_| {
            panic!(
                "BERTH_TEST_PYTHON_ROOTFS is not set: this test needs a Python root file system made \
                 from Debian packages. ./scripts/test.sh builds it; by hand: \
                 `. scripts/lib.sh && ensure_python_rootfs && export BERTH_TEST_PYTHON_ROOTFS`"
            )
        });
        let out = Command::new("docker")
            .args(["import", &tar, NAME])
            .output()
            .expect("run docker import");
        assert!(
            out.status.success(),
            "docker import {tar}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    // The image has Python but neither curl nor wget: a rendered check must not need them.
    let tools = Command::new("docker")
        .args([
            "run",
            "--rm",
            NAME,
            "sh",
            "-c",
            "command -v curl || command -v wget",
        ])
        .output()
        .expect("docker run");
    assert!(
        !tools.status.success(),
        "the Python image has {}",
        String::from_utf8_lossy(&tools.stdout)
    );
    NAME
}

fn fresh_init_reaches_the_hosts_databases(server_image: ServerImage) {
    use berth_testkit::{Postgres, Redis};
    docker_required();
    let gateway = docker_gateway();
    let pg = Postgres::start_listening(&format!("127.0.0.1,{gateway}"));
    let repo = GitRepo::new();
    std::fs::copy(
        fixtures().join("seed/docker-compose.dev.yml"),
        repo.path().join("docker-compose.dev.yml"),
    )
    .unwrap();
    run(repo.path(), &["init", "--from", "docker-compose.dev.yml"]).assert_code(0);
    // The images: FROM scratch around the static demo-app, or the server in Python.
    let bin = static_demo_app();
    for app in ["apps/server", "apps/frontend"] {
        std::fs::create_dir_all(repo.path().join(app)).unwrap();
        if app == "apps/server" && server_image == ServerImage::Python {
            repo.write("apps/server/app.py", PYTHON_APP);
            repo.write(
                "apps/server/Dockerfile",
                &format!(
                    "FROM {}\nCOPY app.py /app/app.py\nCMD [\"python3\", \"-u\", \"/app/app.py\"]\n",
                    python_base_image()
                ),
            );
            continue;
        }
        std::fs::copy(&bin, repo.path().join(app).join("demo-app")).unwrap();
        repo.write(
            &format!("{app}/Dockerfile"),
            "FROM scratch\nCOPY demo-app /demo-app\nCMD [\"/demo-app\"]\n",
        );
    }
    // What the user changes: PostgreSQL and Redis are the host's (on the ports they
    // run on here), the compose runtime, ports free on this machine. No address.
    let project = format!("bi{}x{}", std::process::id(), crate::deploy::port_pair());
    let m = std::fs::read_to_string(repo.path().join("berth.toml")).unwrap();
    let (server, frontend) = (crate::deploy::port_pair(), crate::deploy::port_pair());
    let m = m
        .replace("name = \"bestays-monorepo\"", &format!("name = \"{project}\""))
        .replace(
            "[infra.postgres]\nmode = \"container\"\nimage = \"postgres:15\"\nport = 5433\n",
            &format!(
                "[infra.postgres]\nmode = \"external\"\nadmin_url_env = \"BERTH_POSTGRES_ADMIN_URL\"\napp_port = {}\n",
                pg.port
            ),
        )
        .replace("host_port = 8011", &format!("host_port = {server}"))
        .replace("host_port = 5183", &format!("host_port = {frontend}"))
        .replace("interval = \"10s\"", "interval = \"1s\"");
    let m = format!("{m}\n[deploy]\nruntime = \"compose\"\nstandby = \"0\"\n");
    repo.write("berth.toml", &m);
    run(repo.path(), &["render", "--env", "dev"]).assert_code(0);
    let acl = std::fs::read_to_string(repo.path().join("deploy/dev/redis/users.acl")).unwrap();
    let redis = Redis::start_with_acl(&acl);
    let m = m.replace(
        "[infra.redis]\nmode = \"container\"\nimage = \"redis:7-alpine\"\nport = 6379\n",
        &format!(
            "[infra.redis]\nmode = \"external\"\nadmin_url_env = \"BERTH_REDIS_ADMIN_URL\"\napp_port = {}\n",
            redis.port
        ),
    );
    assert!(!m.contains("mode = \"container\""), "{m}");
    assert!(!m.contains("app_host"), "{m}");
    repo.write("berth.toml", &m);
    // No [proxy]: deploys use the prod compose files.
    run(repo.path(), &["render", "--env", "dev"]).assert_code(0);
    run(repo.path(), &["render", "--env", "prod"]).assert_code(0);
    repo.commit_all("chore: adopt berth (TASK-1-berth-bestays)");
    let env = [
        ("BERTH_POSTGRES_ADMIN_URL", pg.admin_url()),
        (
            "BERTH_REDIS_ADMIN_URL",
            format!("redis://127.0.0.1:{}", redis.port),
        ),
    ];
    let provision = || {
        let mut c = berth(repo.path());
        c.args(["provision", "bestays", "--env", "dev"]);
        for (k, v) in &env {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        Outcome {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    };
    let out = provision();
    out.assert_code(1);
    pg.add_hba_line(quoted_after(&out.stdout, "pg_hba.conf", "add `"));
    let bind = quoted_after(&out.stdout, "Redis does not accept connections", "set `");
    assert_eq!(
        redis.cli(
            None,
            &["CONFIG", "SET", "bind", bind.strip_prefix("bind ").unwrap()]
        ),
        "OK"
    );
    let mut out = provision();
    if out.code != 0 && out.stdout.contains("protected mode") {
        // The dev ACL leaves the default user without a password: Redis keeps
        // non-loopback clients out, and the check says how to let them in.
        assert!(
            out.stdout.contains("`protected-mode no`"),
            "{}",
            out.snapshot()
        );
        assert_eq!(
            redis.cli(None, &["CONFIG", "SET", "protected-mode", "no"]),
            "OK"
        );
        out = provision();
    }
    out.assert_code(0);

    fill_every_declared_secret(repo.path());
    let out = run(repo.path(), &["deploy", "bestays", "--yes"]);
    let cleanup = || {
        for slot in ["blue", "green"] {
            let _ = Command::new("docker")
                .args(["compose", "-p", &format!("{project}-bestays-{slot}"), "-f"])
                .arg(repo.path().join("deploy/prod/compose/bestays.yml"))
                .args(["down", "--timeout", "1", "--rmi", "all"])
                .output();
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &format!("{project}-bestays")])
            .output();
    };
    if out.code != 0 {
        cleanup();
    }
    out.assert_code(0);
    let health = || -> Result<(), String> {
        let b = berth_testkit::http::get(server, "x", "/api/health")
            .map_err(|e| e.to_string())?
            .text();
        if b.contains("\"database\":\"ok\"") && b.contains("\"redis\":\"ok\"") {
            Ok(())
        } else {
            Err(b)
        }
    };
    let start = Instant::now();
    let result = loop {
        match health() {
            Ok(()) => break Ok(()),
            Err(e) if start.elapsed() > Duration::from_secs(30) => break Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    // Docker's verdict on the rendered check of the one service with a health path.
    let ids = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.compose.project={project}-bestays-blue"),
        "--filter",
        "label=berth.service=server",
    ]);
    let id = ids.trim().to_string();
    let mut healthy = String::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) && !id.is_empty() {
        healthy = docker(&["inspect", "--format", "{{.State.Health.Status}}", &id]);
        if healthy.trim() == "healthy" {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    cleanup();
    result.expect("the service reports PostgreSQL and Redis reachable");
    assert_eq!(healthy.trim(), "healthy", "server container {id:?}");
}

/// `docker build`s berth ran, from its command trace (`BERTH_LOG=berth::cmd=trace`):
/// each `docker build` and each `docker compose ... build` (the probe's image aside).
fn builds_in(out: &Outcome) -> Vec<String> {
    out.stderr
        .lines()
        .filter(|l| l.starts_with("TRACE ") && !l.contains("berth-probe"))
        .filter(|l| l.contains("docker build ") || l.contains(" build -> "))
        .map(str::to_string)
        .collect()
}

/// The files in the running `service` container of `product` at `version`.
fn files_in_running(site: &Site, product: &str, service: &str, version: &str) -> String {
    let project = site.compose.as_ref().unwrap();
    let ids = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=berth.product={product}"),
        "--filter",
        &format!("label=berth.service={service}"),
        "--filter",
        &format!("label=berth.version={version}"),
    ]);
    let id = ids
        .lines()
        .find(|id| {
            docker(&[
                "inspect",
                "--format",
                "{{index .Config.Labels \"com.docker.compose.project\"}}",
                id,
            ])
            .starts_with(&format!("{project}-{product}-"))
        })
        .unwrap_or_else(|| panic!("no running {product}.{service} at {version}"))
        .to_string();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("docker export {id} | tar -t"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn image_id(image: &str) -> String {
    docker(&["image", "inspect", "--format", "{{.Id}}", image])
        .trim()
        .to_string()
}

#[test]
fn products_sharing_a_build_context_build_it_once_and_own_build_args_build_their_own() {
    let site = Site::compose(0);
    let project = site.compose.clone().unwrap();
    let trace = [("BERTH_LOG", "berth::cmd=trace")];
    let deploy = |product: &str| {
        let out = site.berth_env(&["deploy", product, "--yes"], &trace);
        out.assert_code(0);
        out
    };
    let commit_server_change = |n: u32, also: &dyn Fn()| {
        site.repo
            .write(&format!("apps/server/change-{n}.txt"), &n.to_string());
        also();
        site.repo.commit_all(&format!(
            "feat: server change {n} (TASK-{n}-server-bestays)"
        ));
        site.head_version()
    };
    // The server's image holds its whole context (the running code shows each change);
    // sources of this site only (no image another test built has their build keys);
    // each product keeps one version besides the live one; no drain wait.
    site.repo.write(
        "docker/server.Dockerfile",
        "FROM scratch\nCOPY . /app\nCOPY demo-app /demo-app\nCMD [\"/demo-app\"]\n",
    );
    for app in ["apps/server", "apps/frontend"] {
        site.repo.write(&format!("{app}/site.txt"), &project);
    }
    let m = std::fs::read_to_string(site.repo.path().join("berth.toml"))
        .unwrap()
        .replace("runtime = \"compose\"", "runtime = \"compose\"\nkeep = 1")
        .replace("drain = \"1s\"", "drain = \"0s\"");
    site.repo.write("berth.toml", &m);
    site.repo
        .commit_all("chore: keep one (TASK-8-keep-realestate)");
    let first = deploy("realestate");
    assert!(!builds_in(&first).is_empty(), "{}", first.snapshot());

    // A change to apps/server, then both products: one build. realestate's server is
    // bestays's image (tagged); bestays's frontend is realestate's v1 image (its context
    // did not change).
    let v1 = site.head_version();
    let v2 = commit_server_change(2, &|| {});
    let start = Instant::now();
    let b = deploy("bestays");
    let r = deploy("realestate");
    let wall = start.elapsed();
    let builds: Vec<String> = builds_in(&b).into_iter().chain(builds_in(&r)).collect();
    eprintln!(
        "both products after a change to apps/server: {} build(s) in {wall:?}",
        builds.len()
    );
    assert_eq!(builds.len(), 1, "one build for both products: {builds:#?}");
    assert!(
        builds[0].contains(&format!("-t {project}-bestays-server:{v2} ")),
        "{builds:?}"
    );
    assert!(
        r.stderr.contains("reused the image of the same source"),
        "{}",
        r.snapshot()
    );
    let server = |p: &str, v: &str| image_id(&format!("{project}-{p}-server:{v}"));
    let frontend = |p: &str, v: &str| image_id(&format!("{project}-{p}-frontend:{v}"));
    let shared = server("bestays", &v2);
    assert_eq!(shared, server("realestate", &v2));
    assert_ne!(shared, server("realestate", &v1));
    assert_eq!(frontend("bestays", &v2), frontend("realestate", &v1));
    for product in ["bestays", "realestate"] {
        let files = files_in_running(&site, product, "server", &v2);
        assert!(
            files.contains("app/change-2.txt"),
            "{product} runs v2's code: {files}"
        );
        assert_eq!(
            site.get(&format!("{product}.app"), "/api/health"),
            (200, v2.clone())
        );
    }

    // realestate's own build arg: at one version, the same context gives each product
    // its own image, each built once.
    let v3 = commit_server_change(3, &|| {
        let m = std::fs::read_to_string(site.repo.path().join("berth.toml")).unwrap();
        let (head, tail) = m
            .split_once("[products.realestate.services.server]")
            .unwrap();
        let tail = tail.replacen(
            "dockerfile = \"docker/server.Dockerfile\" }",
            "dockerfile = \"docker/server.Dockerfile\", args = { FLAVOUR = \"realestate\" } }",
            1,
        );
        assert!(
            tail.contains("FLAVOUR"),
            "realestate's server has a build table"
        );
        site.repo.write(
            "berth.toml",
            &format!("{head}[products.realestate.services.server]{tail}"),
        );
        site.berth(&["render", "--env", "dev"]).assert_code(0);
    });
    let b = deploy("bestays");
    let r = deploy("realestate");
    assert_eq!(builds_in(&b).len(), 1, "{}", b.snapshot());
    assert_eq!(builds_in(&r).len(), 1, "{}", r.snapshot());
    assert!(
        builds_in(&r)[0].contains("--build-arg FLAVOUR=realestate"),
        "{:?}",
        builds_in(&r)
    );
    assert_ne!(server("realestate", &v3), server("bestays", &v3));

    // bestays moves on and prunes its tags of the shared v2 image; realestate's v2 (the
    // version its rollback returns to) keeps the image.
    commit_server_change(4, &|| {});
    let b = deploy("bestays");
    assert!(
        b.stderr.contains(&format!("{project}-bestays-server:{v2}")),
        "bestays pruned its v2 tag: {}",
        b.snapshot()
    );
    assert!(!image_tags(&site, "bestays", "server").contains(&v2));
    assert_eq!(
        server("realestate", &v2),
        shared,
        "realestate's retained v2 still has the shared image"
    );
    let out = site.berth(&["rollback", "realestate", "--dry-run"]);
    out.assert_code(0);
    assert!(
        out.all()
            .contains(&format!("reuse the retained images of {v2} (no build)")),
        "{}",
        out.snapshot()
    );
}
