//! Deploys on the local runtime behind a real nginx: zero downtime under load,
//! rollbacks, broken releases, kill -9 at every step, concurrent deploys.

use std::path::Path;
use std::time::{Duration, Instant};

use berth_runtime::Kind;
use berth_testkit::load::{Load, LoadConfig, Report};

use crate::support::*;

/// Two adjacent free ports (blue and green with slot_port_offset = 1), reserved for this
/// test process (below the ephemeral range, never handed out twice).
pub fn port_pair() -> u16 {
    berth_testkit::reserve_ports(2)
}

/// The example monorepo, deployable: demo-app services on free ports behind an
/// nginx of its own on a free port. Everything is stopped on drop.
pub struct Site {
    pub repo: GitRepo,
    pub http_port: u16,
    /// The runtime berth.toml names.
    pub runtime: Kind,
    /// The project name, when the site runs on Docker Compose.
    pub compose: Option<String>,
    /// The swarm the site runs on (`Kind::Swarm`), shared by the tests at hand.
    pub swarm: Option<std::sync::Arc<berth_testkit::swarm::Swarm>>,
}

impl Site {
    /// The site on the local runtime.
    pub fn new(boot_delay_ms: u64) -> Self {
        Self::with(Kind::Local, boot_delay_ms)
    }

    /// The same site on a real Docker Engine: images `FROM scratch` around a static demo-app.
    pub fn compose(boot_delay_ms: u64) -> Self {
        Self::with(Kind::Compose, boot_delay_ms)
    }

    /// The site on the runtime `kind` (its services take `boot_delay_ms` to start).
    pub fn with(kind: Kind, boot_delay_ms: u64) -> Self {
        let swarm = (kind == Kind::Swarm).then(berth_testkit::swarm::Swarm::shared);
        Self::build(kind, boot_delay_ms, swarm)
    }

    /// The site on a swarm of the test's own (one whose nodes it may kill).
    pub fn on_swarm(
        swarm: std::sync::Arc<berth_testkit::swarm::Swarm>,
        boot_delay_ms: u64,
    ) -> Self {
        Self::build(Kind::Swarm, boot_delay_ms, Some(swarm))
    }

    fn build(
        kind: Kind,
        boot_delay_ms: u64,
        swarm: Option<std::sync::Arc<berth_testkit::swarm::Swarm>>,
    ) -> Self {
        let compose = match kind {
            Kind::Local => false,
            Kind::Compose | Kind::Swarm => true,
            Kind::Auto => panic!("a test site names its runtime"),
        };
        if compose && swarm.is_none() {
            crate::compose::docker_required();
        }
        let repo = GitRepo::new();
        repo.copy_tree(&example_dir());
        let mut m = std::fs::read_to_string(repo.path().join("berth.toml")).unwrap();
        let http_port = berth_testkit::free_port();
        m = m.replace(
            "nginx_config = \"deploy/prod/nginx/nginx.conf\"",
            &format!(
                "nginx_config = \"deploy/dev/nginx/nginx.conf\"\nlisten = \"127.0.0.1\"\nhttp_port = {http_port}"
            ),
        );
        m = m.replace(
            "[secret_scan]",
            "[deploy]\nruntime = \"local\"\nslot_port_offset = 1\ndrain = \"1s\"\nstandby = \"0\"\n\n[secret_scan]",
        );
        for old in [
            "host_port = 8011",
            "host_port = 5183",
            "host_port = 8012",
            "host_port = 5184",
        ] {
            m = m.replace(old, &format!("host_port = {}", port_pair()));
        }
        // Real servers take seconds to boot; instant ones hide downtime.
        m = m.replace(
            "PRODUCT_ID = \"bestays\",",
            &format!("PRODUCT_ID = \"bestays\", DEMO_BOOT_DELAY_MS = \"{boot_delay_ms}\","),
        );
        m = m.replace(
            "PRODUCT_ID = \"realestate\",",
            &format!("PRODUCT_ID = \"realestate\", DEMO_BOOT_DELAY_MS = \"{boot_delay_ms}\","),
        );
        m = m.replace("interval = \"2s\"", "interval = \"200ms\"");
        let project = compose.then(|| format!("bt{}x{}", std::process::id(), port_pair()));
        if let Some(project) = &project {
            m = m.replace(
                "name = \"bestays-monorepo\"",
                &format!("name = \"{project}\""),
            );
            m = m.replace(
                "migrate = \"demo-app migrate\"",
                "migrate = \"/demo-app migrate\"",
            );
            match &swarm {
                None => {
                    m = m.replace("runtime = \"local\"", "runtime = \"compose\"");
                    m = m.replace(
                        "deadline = \"60s\" }",
                        "deadline = \"60s\", command = [\"/demo-app\", \"health\"] }",
                    );
                }
                // bestays runs two server tasks on its two labelled workers, realestate
                // one of each on the manager (the edge); the host's nginx is the front door.
                Some(sw) => {
                    m = m.replace("runtime = \"local\"", "runtime = \"swarm\"");
                    m = m.replace(
                        "drain = \"1s\"\nstandby = \"0\"\n",
                        &format!(
                            "drain = \"1s\"\nstandby = \"0\"\n\n[deploy.swarm]\nmanager = \"{}\"\nregistry = \"{}\"\nhost_address = \"{}\"\n\n[deploy.swarm.products.bestays]\nreplicas = {{ server = 2 }}\n",
                            sw.manager().docker_host(),
                            sw.registry(),
                            sw.host_ip
                        ),
                    );
                }
            }
            let bin = crate::compose::static_demo_app();
            for app in ["apps/server", "apps/frontend"] {
                std::fs::copy(&bin, repo.path().join(app).join("demo-app")).unwrap();
            }
            let dockerfile = "FROM scratch\nCOPY demo-app /demo-app\nCMD [\"/demo-app\"]\n";
            repo.write("docker/server.Dockerfile", dockerfile);
            repo.write("docker/frontend.Dockerfile", dockerfile);
        }
        repo.write("berth.toml", &m);
        let site = Self {
            repo,
            http_port,
            runtime: kind,
            compose: project,
            swarm,
        };
        site.berth(&["render", "--env", "dev"]).assert_code(0);
        site.fill_declared_secrets();
        site.repo
            .commit_all("chore: the example, rendered (TASK-0-setup-bestays)");
        site
    }

    /// The products whose deploy lock a running deploy holds now (`berth lock status`).
    pub fn deploy_locks(&self) -> Vec<String> {
        let out = self.berth(&["lock", "status", "--format", "json"]);
        out.assert_code(0);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        v["locks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| !l["deploy"].is_null())
            .map(|l| l["product"].as_str().unwrap().to_string())
            .collect()
    }

    /// Wait (up to 60 s) until a running deploy holds `product`'s lock.
    pub fn wait_for_deploy_lock(&self, product: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.deploy_locks().iter().any(|p| p == product) {
            assert!(
                Instant::now() < deadline,
                "no deploy of {product} took its lock"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Give every secret the example's services declare a value (deploys refuse without).
    pub fn fill_declared_secrets(&self) {
        fill_declared_secrets(self.repo.path());
    }

    pub fn berth(&self, args: &[&str]) -> Outcome {
        self.berth_env(args, &[])
    }

    pub fn berth_env(&self, args: &[&str], env: &[(&str, &str)]) -> Outcome {
        let mut c = berth(self.repo.path());
        c.args(args).env("BERTH_OPERATOR", "test-operator");
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        Outcome {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The version a deploy of HEAD gets (its 12-character commit id).
    pub fn head_version(&self) -> String {
        self.repo
            .git(&["rev-parse", "--short=12", "HEAD"])
            .trim()
            .to_string()
    }

    /// Replace `from` (which must be there) with `to` in berth.toml, uncommitted;
    /// returns the text before.
    pub fn edit_manifest(&self, from: &str, to: &str) -> String {
        let before = std::fs::read_to_string(self.repo.path().join("berth.toml")).unwrap();
        assert!(before.contains(from), "berth.toml has no `{from}`");
        self.repo.write("berth.toml", &before.replace(from, to));
        before
    }

    /// bestays's demo-app exits at start from now on (a release that never becomes
    /// healthy), uncommitted; returns berth.toml as it was.
    pub fn break_bestays_at_start(&self) -> String {
        self.edit_manifest(
            "PRODUCT_ID = \"bestays\",",
            "PRODUCT_ID = \"bestays\", DEMO_EXIT_AT_START = \"1\",",
        )
    }

    /// `[state] backend = "postgres"`, committed as task `task`.
    pub fn use_postgres_state(&self, task: u32) {
        self.edit_manifest(
            "[secret_scan]",
            "[state]\nbackend = \"postgres\"\n\n[secret_scan]",
        );
        self.repo
            .commit_all(&format!("chore: shared state (TASK-{task}-state-bestays)"));
    }

    /// A new commit touching `product`'s files.
    pub fn change(&self, product: &str, n: u32) {
        self.repo
            .write(&format!("products/{product}/change-{n}.md"), "x");
        self.repo
            .commit_all(&format!("feat: change {n} (TASK-{n}-change-{product})"));
    }

    /// GET through nginx: (status, version header).
    pub fn get(&self, host: &str, path: &str) -> (u16, String) {
        get(self.http_port, host, path)
    }

    /// Every running instance of a product (pid or container id, version, start), sorted.
    pub fn processes(&self, product: &str) -> Vec<(String, String)> {
        if let (Some(project), Some(sw)) = (&self.compose, &self.swarm) {
            return swarm_tasks(sw, project, product);
        }
        if let Some(project) = &self.compose {
            let out = std::process::Command::new("docker")
                .args(["ps", "--no-trunc", "--filter", &format!("label=berth.product={product}")])
                .args(["--format", "{{.ID}} {{.Label \"berth.version\"}} {{.Label \"com.docker.compose.project\"}}\t{{.CreatedAt}}"])
                .output()
                .unwrap();
            let mut v: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.contains(&format!(" {project}-{product}-")))
                .filter_map(|l| {
                    l.split_once('\t')
                        .map(|(a, b)| (a.to_string(), b.to_string()))
                })
                .collect();
            v.sort();
            return v;
        }
        let mut out = Vec::new();
        for slot in ["blue", "green"] {
            let dir = self.repo.path().join(".berth/run").join(product).join(slot);
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if e.path().extension().is_some_and(|x| x == "json") {
                    let text = std::fs::read_to_string(e.path()).unwrap();
                    let modified = std::fs::metadata(e.path()).unwrap().modified().unwrap();
                    out.push((text, format!("{modified:?}")));
                }
            }
        }
        out.sort();
        out
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let root = self.repo.path();
        let _ = std::process::Command::new("nginx")
            .args([
                "-p",
                root.to_str().unwrap(),
                "-c",
                "deploy/dev/nginx/nginx.conf",
                "-s",
                "stop",
            ])
            .stderr(std::process::Stdio::null())
            .status();
        stop_local_products(root);
        if let (Some(project), Some(sw)) = (&self.compose, &self.swarm) {
            swarm_down(sw, project);
        } else if let Some(project) = &self.compose {
            crate::compose::down_all(root, project);
        }
    }
}

/// The running tasks of `product`'s stacks (`<project>-<product>-<slot>`) on the swarm:
/// ("task-id version stack", "node-id created"), sorted.
pub fn swarm_tasks(
    sw: &berth_testkit::swarm::Swarm,
    project: &str,
    product: &str,
) -> Vec<(String, String)> {
    let m = sw.manager();
    let services = m.docker(&["service", "ls", "--format", "{{.Name}}"]);
    let mine: Vec<&str> = services
        .lines()
        .filter(|n| n.starts_with(&format!("{project}-{product}-")) && !n.contains("-migrate-"))
        .collect();
    if mine.is_empty() {
        return Vec::new();
    }
    let mut args = vec![
        "service",
        "ps",
        "--no-trunc",
        "--filter",
        "desired-state=running",
        "--format",
        "{{.ID}} {{.Image}} {{.Name}}\t{{.Node}} {{.CurrentState}}",
    ];
    args.extend(mine.iter().copied());
    let Ok(out) = m.try_docker(&args) else {
        return Vec::new();
    };
    let mut v: Vec<(String, String)> = out
        .lines()
        .filter_map(|l| {
            let (a, b) = l.split_once('\t')?;
            // "Running 5 seconds ago": the state, not its age.
            let state = b.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
            Some((a.to_string(), state))
        })
        .collect();
    v.sort();
    v
}

/// Remove every service and secret of a site's project from the swarm.
fn swarm_down(sw: &berth_testkit::swarm::Swarm, project: &str) {
    let m = sw.manager();
    let services = m.docker(&["service", "ls", "--format", "{{.Name}}"]);
    let mine: Vec<&str> = services
        .lines()
        .filter(|n| n.starts_with(&format!("{project}-")))
        .collect();
    if !mine.is_empty() {
        let mut args = vec!["service", "rm"];
        args.extend(mine);
        let _ = m.try_docker(&args);
    }
}

/// Kill the local runtime's product processes of the site at `root` (every process
/// group a pid file under `.berth/run` names) and remove its cgroups: what a fixture
/// that deployed on the local runtime leaves when it drops.
pub fn stop_local_products(root: &Path) {
    kill_all(&root.join(".berth/run"));
    berth_runtime::cgroup::Cgroup::remove_site(
        std::path::Path::new(berth_runtime::cgroup::CGROUP_FS),
        root,
    );
}

fn kill_all(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            kill_all(&p);
        } else if p.extension().is_some_and(|x| x == "json")
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(
                &std::fs::read_to_string(&p).unwrap_or_default(),
            )
            && let Some(pid) = v["pid"].as_u64()
        {
            let _ = std::process::Command::new("kill")
                .args(["-9", "--", &format!("-{pid}")])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// One GET through nginx on a new connection: (status, version header), (0, "") when
/// no answer came.
pub fn get(port: u16, host: &str, path: &str) -> (u16, String) {
    match berth_testkit::http::get(port, host, path) {
        Ok(r) => (
            r.status,
            r.header("x-berth-version").unwrap_or("").to_string(),
        ),
        Err(_) => (0, String::new()),
    }
}

/// Every route of the example's products through nginx: the server's health, a
/// listing, a request that takes 300 ms (so requests are in flight across a switch
/// and a drain) and the frontend's `/`.
pub const ROUTES: &[&str] = &["/api/health", "/", "/api/listings/7", SLOW];

/// The example's slow route (300 ms).
pub const SLOW: &str = "/api/slow?ms=300";

impl Site {
    /// The shared load generator on `host` (keep-alive and new connections, every route,
    /// and a slow request in flight at every moment: see [`assert_in_flight_across_switch`]).
    pub fn load(&self, host: &str) -> Load {
        LoadConfig::new(self.http_port, host)
            .paths(ROUTES)
            .steady(&[SLOW, SLOW])
            .start()
    }
}

/// Panic unless a slow request answered by `from` was in flight when `to` took over
/// (still unanswered when a request `to` answered was sent, near the switch): the old
/// slot finished what it had while traffic moved.
#[track_caller]
pub fn assert_in_flight_across_switch(report: &Report, from: &str, to: &str) {
    // The switch, by send time: the first answer of `to` on a new connection that follows
    // an answer of `from` on a new connection. A new connection is accepted by the workers
    // of the configuration nginx runs at that moment, so this answer was sent after the
    // reload; a kept connection may still be held by a worker of the configuration before,
    // and a rate that drops under load makes "the next n answers" a poor clock.
    let mut fresh: Vec<_> = report.samples.iter().filter(|s| s.new_connection).collect();
    fresh.sort_by_key(|s| s.at);
    let switch = fresh
        .windows(2)
        .find(|w| w[0].version == from && w[1].version == to)
        .map(|w| w[1]);
    let Some(switch) = switch else {
        panic!(
            "no switch from {from} to {to} under load\n{}",
            report.summary()
        );
    };
    // Both versions served at once around the switch: a slow request of `from` was still
    // in flight when a request answered by `to` was sent (so the old slot finished it
    // after the new one had taken traffic). Near this switch only: the report may hold
    // the switch back too.
    let near = Duration::from_secs(2);
    let spanned = report.samples.iter().any(|s| {
        s.version == from
            && s.path.starts_with("/api/slow")
            && report.samples.iter().any(|t| {
                t.version == to
                    && t.at + near > switch.at
                    && t.at < switch.at + near
                    && s.at < t.at
                    && t.at < s.at + s.latency
            })
    });
    assert!(
        spanned,
        "no slow request of {from} was in flight when {to} took over at {:?}\n{}\n{}",
        switch.at,
        report.summary(),
        report.timeline(switch.at, near)
    );
}

#[test]
fn deploy_redeploy_rollback_with_zero_dropped_requests_and_realestate_untouched() {
    let site = Site::new(2000);
    site.berth(&["deploy", "realestate", "--yes"])
        .assert_code(0);
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let v1 = site.head_version();
    assert_eq!(site.get("bestays.app", "/api/health").1, v1);
    let realestate_before = site.processes("realestate");
    assert_eq!(realestate_before.len(), 2);

    site.change("bestays", 1);
    let v2 = site.head_version();
    let load = site.load("bestays.app");
    load.wait_for_answers(20);
    let out = site.berth(&["deploy", "bestays", "--yes"]);
    out.assert_code(0);
    assert!(
        out.stdout.contains("is live in green"),
        "{}",
        out.snapshot()
    );
    assert_eq!(site.get("bestays.app", "/api/health").1, v2);
    let rollback_start = Instant::now();
    let out = site.berth(&["rollback", "bestays", "--yes"]);
    out.assert_code(0);
    let rollback_time = rollback_start.elapsed();
    assert_eq!(site.get("bestays.app", "/api/health").1, v1, "rolled back");
    load.wait_for_answers(20);
    let report = load.finish();
    eprintln!("zero-downtime (local): rollback took {rollback_time:?}");
    report.assert_clean(300).assert_covered();
    assert_eq!(report.versions(), [v1.clone(), v2.clone()]);
    assert_in_flight_across_switch(&report, &v1, &v2);
    assert_in_flight_across_switch(&report, &v2, &v1);

    // realestate's processes were never touched.
    assert_eq!(site.processes("realestate"), realestate_before);

    // History from tags, with tasks; status from the runtime; the audit log per step.
    let h = site.berth(&["history", "bestays", "--format", "json"]);
    h.assert_code(0);
    let v: serde_json::Value = serde_json::from_str(&h.stdout).unwrap();
    let deploys = v["deploys"].as_array().unwrap();
    assert_eq!(deploys.len(), 3);
    assert_eq!(deploys[0]["version"], v1.as_str());
    assert!(deploys[0]["rollback_of"].is_string());
    assert_eq!(
        deploys[1]["tasks"],
        serde_json::json!(["TASK-1-change-bestays"])
    );
    assert_eq!(deploys[1]["previous"], deploys[2]["tag"]);
    assert_eq!(deploys[1]["operator"], "test-operator");
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
        assert_eq!(svc["version"], v1.as_str());
        assert_eq!(svc["health"], "up");
        assert_eq!(svc["slot"], "blue");
    }
    let audit = std::fs::read_to_string(site.repo.path().join(".berth/audit.jsonl")).unwrap();
    let steps: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        steps
            .iter()
            .any(|r| r["step"] == "switch" && r["product"] == "bestays" && r["result"] == "ok")
    );
    assert!(steps.iter().all(|r| r["operator"] == "test-operator"));
}

#[test]
fn a_stop_start_deploy_drops_requests_which_is_what_berth_avoids() {
    let site = Site::new(2000);
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    // The seed's way: no proxy switch, stop the old process and start the new one.
    let m = std::fs::read_to_string(site.repo.path().join("berth.toml")).unwrap();
    let without_proxy = m
        .replace("[proxy]", "[unused]")
        .replace("[unused]\n", "# no proxy\n[x_removed_proxy]\n");
    let without_proxy = strip_table(&without_proxy, "[x_removed_proxy]");
    site.repo.write("berth.toml", &without_proxy);
    site.repo
        .commit_all("chore: no proxy (TASK-2-noproxy-bestays)");
    let load = site.load("bestays.app");
    load.wait_for_answers(20);
    let out = site.berth(&["deploy", "bestays", "--yes"]);
    out.assert_code(0);
    assert!(
        out.stderr.contains("NOT zero-downtime"),
        "{}",
        out.snapshot()
    );
    load.wait_for_answers(20);
    let report = load.finish();
    eprintln!("stop/start deploy: {}", report.summary());
    assert!(
        report.errors() > 0,
        "a stop/start deploy of a 2 s boot must drop requests"
    );
}

fn strip_table(text: &str, header: &str) -> String {
    let mut out = Vec::new();
    let mut skipping = false;
    for line in text.lines() {
        if line.trim() == header {
            skipping = true;
            continue;
        }
        if skipping && line.starts_with('[') {
            skipping = false;
        }
        if !skipping {
            out.push(line);
        }
    }
    out.join("\n") + "\n"
}

// Broken releases (health never passes, migration fails, exits at start) and a
// kill -9 after every step are scenarios of the runtime contract suite, run on
// every runtime under load: see contract.rs.

/// nginx rejects its configuration (a broken line in berth's nginx config): the
/// deploy refuses before it starts anything, the old version keeps serving under
/// load, no new slot runs, and once the config is fixed a deploy goes through.
#[test]
fn a_switch_nginx_rejects_leaves_the_old_version_serving() {
    let site = Site::new(300);
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let live = site.get("bestays.app", "/api/health").1;
    let conf = site.repo.path().join("deploy/dev/nginx/berth.conf");
    let conf_before = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(
        &conf,
        format!("{conf_before}\nthis_is_not_a_directive on;\n"),
    )
    .unwrap();
    site.repo
        .commit_all("feat: broken nginx (TASK-10-broken-bestays)");
    let load = site.load("bestays.app");
    load.wait_for_answers(10);
    let out = site.berth(&["deploy", "bestays", "--yes"]);
    // The refusal is quick: enough answers for the report's floor of 40.
    load.wait_for_answers(40);
    let report = load.finish();
    // Refused before anything started: nginx's own config fails `nginx -t` (the
    // switch would fail after building and starting green; badday:: tests both).
    out.assert_code(2);
    assert!(
        out.stderr.contains("refusing to deploy bestays")
            && out.stderr.contains("fails its test")
            && out.stderr.contains("this_is_not_a_directive"),
        "{}",
        out.snapshot()
    );
    report.assert_clean(40).assert_covered();
    assert_eq!(
        report.versions(),
        [live.as_str()],
        "only the old version answered"
    );
    assert_eq!(site.get("bestays.app", "/api/health"), (200, live.clone()));
    let green: Vec<_> = site
        .processes("bestays")
        .into_iter()
        .filter(|(t, _)| !t.contains(&live))
        .collect();
    assert!(green.is_empty(), "leftovers {green:?}");
    std::fs::write(&conf, conf_before).unwrap();
    site.repo.commit_all("fix: nginx (TASK-11-fix-bestays)");
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
}

#[test]
fn concurrent_deploys_of_one_product_lock_and_other_products_proceed() {
    concurrent_deploys_of_one_product_lock_and_other_products_proceed_on(Site::new(1500));
}

#[test]
fn concurrent_deploys_of_one_product_lock_and_other_products_proceed_on_compose() {
    concurrent_deploys_of_one_product_lock_and_other_products_proceed_on(Site::compose(1500));
}

fn concurrent_deploys_of_one_product_lock_and_other_products_proceed_on(site: Site) {
    site.change("bestays", 1);
    let mut children = Vec::new();
    for _ in 0..10 {
        children.push(
            berth(site.repo.path())
                .args(["deploy", "bestays", "--yes"])
                .env("BERTH_OPERATOR", "ci-job")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
    }
    // realestate deploys while a bestays deploy holds bestays' lock: both locks are
    // seen held at one moment (the deploys overlapped, neither waited for the other).
    site.wait_for_deploy_lock("bestays");
    let mut other = berth(site.repo.path())
        .args(["deploy", "realestate", "--yes"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let held = site.deploy_locks();
        if held.contains(&"bestays".to_string()) && held.contains(&"realestate".to_string()) {
            break;
        }
        assert!(
            other.try_wait().unwrap().is_none() && Instant::now() < deadline,
            "the realestate deploy never ran while bestays was locked (locks: {held:?})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let other = other.wait_with_output().unwrap();
    assert_eq!(
        other.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let ok = outs.iter().filter(|o| o.status.code() == Some(0)).count();
    let locked: Vec<String> = outs
        .iter()
        .filter(|o| o.status.code() == Some(1))
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .collect();
    assert_eq!(ok, 1, "exactly one deploy runs");
    assert_eq!(locked.len(), 9);
    for e in &locked {
        assert!(
            e.contains("bestays is locked by ci-job (pid ") && e.contains(" since 20"),
            "{e}"
        );
    }
    // --lock-wait waits its turn instead.
    site.change("bestays", 2);
    let mut a = berth(site.repo.path())
        .args(["deploy", "bestays", "--yes"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // b starts while a holds the lock (seen, not assumed after a sleep): without
    // --lock-wait it would be refused, so its success means it waited for a.
    site.wait_for_deploy_lock("bestays");
    let b = site.berth(&["deploy", "bestays", "--yes", "--lock-wait", "60s"]);
    let a_done = a.try_wait().unwrap();
    assert!(
        a_done.is_some(),
        "b finished before a: it cannot have waited"
    );
    assert_eq!(a_done.unwrap().code(), Some(0));
    b.assert_code(0);
    // A manual hold stops deploys with its message.
    site.berth(&["lock", "acquire", "bestays", "-m", "database maintenance"])
        .assert_code(0);
    let out = site.berth(&["deploy", "bestays", "--yes"]);
    out.assert_code(1);
    assert!(
        out.stderr.contains("database maintenance"),
        "{}",
        out.snapshot()
    );
    site.berth(&["lock", "release", "bestays"]).assert_code(0);
}

#[test]
fn dry_run_plans_without_doing_and_dirty_trees_are_refused() {
    let site = Site::new(0);
    let out = site.berth(&["deploy", "bestays", "--dry-run"]);
    out.assert_code(0);
    assert!(
        out.stderr.contains("start the blue slot")
            && out.stderr.contains("tag the deploy: bestays-deploy-"),
        "{}",
        out.snapshot()
    );
    assert!(
        site.processes("bestays").is_empty(),
        "a dry run starts nothing"
    );
    assert!(site.repo.git(&["tag"]).is_empty(), "a dry run tags nothing");
    // --push-tags pushes the deploy tag to origin.
    let remote = temp_dir();
    assert!(
        std::process::Command::new("git")
            .args(["init", "-q", "--bare"])
            .arg(remote.path())
            .status()
            .unwrap()
            .success()
    );
    site.repo
        .git(&["remote", "add", "origin", remote.path().to_str().unwrap()]);
    let out = site.berth(&["deploy", "bestays", "--yes", "--push-tags"]);
    out.assert_code(0);
    let pushed = std::process::Command::new("git")
        .args(["tag"])
        .current_dir(remote.path())
        .output()
        .unwrap();
    let pushed = String::from_utf8_lossy(&pushed.stdout).to_string();
    assert!(
        pushed.starts_with("bestays-deploy-"),
        "{pushed}\n{}",
        out.snapshot()
    );
    site.repo.write("products/bestays/wip.md", "uncommitted");
    let out = site.berth(&["deploy", "bestays", "--yes"]);
    out.assert_code(2);
    assert!(
        out.stderr.contains("uncommitted changes") && out.stderr.contains("--allow-dirty"),
        "{}",
        out.snapshot()
    );
    site.berth(&["deploy", "bestays", "--yes", "--allow-dirty"])
        .assert_code(0);
}

/// `[state] backend = "postgres"`: advisory locks and the audit table on a real PostgreSQL.
#[test]
fn postgres_state_backend_locks_and_audits() {
    let pg = berth_testkit::Postgres::start();
    let site = Site::new(800);
    site.use_postgres_state(30);
    let env = [("BERTH_STATE_URL", pg.admin_url())];
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    // Without the URL: a configuration error, nothing done.
    let out = site.berth(&["deploy", "bestays", "--yes"]);
    out.assert_code(2);
    assert!(
        out.stderr.contains("needs $BERTH_STATE_URL"),
        "{}",
        out.snapshot()
    );

    site.berth_env(&["deploy", "bestays", "--yes"], &env_ref)
        .assert_code(0);
    assert!(
        !site.repo.path().join(".berth/audit.jsonl").exists(),
        "the audit goes to PostgreSQL"
    );
    let rows = pg.admin(
        "SELECT count(*) FROM berth_audit WHERE product = 'bestays' AND record->>'result' = 'ok'",
    );
    assert!(rows.trim().parse::<u32>().unwrap() >= 8, "{rows}");
    let sw =
        pg.admin("SELECT record->>'operator' FROM berth_audit WHERE record->>'step' = 'switch'");
    assert_eq!(sw.trim(), "test-operator");

    // Concurrent deploys: the advisory lock lets one through.
    site.change("bestays", 31);
    let children: Vec<_> = (0..3)
        .map(|_| {
            berth(site.repo.path())
                .args(["deploy", "bestays", "--yes"])
                .env("BERTH_STATE_URL", pg.admin_url())
                .env("BERTH_OPERATOR", "ci-job")
                .stderr(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    assert_eq!(outs.iter().filter(|o| o.status.success()).count(), 1);
    for o in outs.iter().filter(|o| !o.status.success()) {
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains("bestays is locked by ci-job (pid "), "{e}");
    }

    // kill -9 while holding the lock: the session ends, the lock with it.
    site.change("bestays", 32);
    let mut child = berth(site.repo.path())
        .args(["deploy", "bestays", "--yes"])
        .env("BERTH_STATE_URL", pg.admin_url())
        .env("BERTH_DEBUG_PAUSE_AFTER_STEP", "2")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the lock in the shared database (the deploy pauses after step 2 holding it).
    let lock_held = |held: bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = site.berth_env(&["lock", "status", "bestays"], &env_ref);
            if status.stdout.contains("bestays: locked by") == held {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the lock of bestays is still {}\n{}",
                if held { "free" } else { "held" },
                status.snapshot()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    lock_held(true);
    let _ = child.kill();
    let _ = child.wait();
    // PostgreSQL ends the killed session and its advisory lock with it.
    lock_held(false);
    site.berth_env(&["deploy", "bestays", "--yes"], &env_ref)
        .assert_code(0);

    // A manual hold lives in the shared database too.
    site.berth_env(
        &["lock", "acquire", "bestays", "-m", "migrating the database"],
        &env_ref,
    )
    .assert_code(0);
    let out = site.berth_env(&["deploy", "bestays", "--yes"], &env_ref);
    out.assert_code(1);
    assert!(
        out.stderr.contains("migrating the database"),
        "{}",
        out.snapshot()
    );
    site.berth_env(&["lock", "release", "bestays"], &env_ref)
        .assert_code(0);
    site.berth_env(&["lock", "status", "bestays"], &env_ref)
        .assert_code(0);
}

/// GET through nginx: (status, body).
pub fn get_body(port: u16, host: &str, path: &str) -> (u16, String) {
    match berth_testkit::http::get(port, host, path) {
        Ok(r) => (r.status, r.text()),
        Err(_) => (0, String::new()),
    }
}

/// The pids berth recorded for a product's slot: (service, pid).
pub fn recorded_pids(site: &Site, product: &str, slot: &str) -> Vec<(String, u32)> {
    let dir = site.repo.path().join(".berth/run").join(product).join(slot);
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "json") {
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            let service = p.file_stem().unwrap().to_string_lossy().into_owned();
            out.push((service, v["pid"].as_u64().unwrap() as u32));
        }
    }
    out.sort();
    out
}

/// `/proc/<pid>/environ` as (name, value) pairs.
pub fn environ(pid: u32) -> Vec<(String, String)> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    raw.split(|b| *b == 0)
        .filter(|e| !e.is_empty())
        .filter_map(|e| {
            let s = String::from_utf8_lossy(e).into_owned();
            s.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

fn pid_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// bestays.server becomes a Python http.server serving the files of
/// `products/bestays/site` of the version's own checkout: what answers is the code.
fn serve_bestays_from_the_repo(site: &Site, command: &str, extra: &str) {
    site.edit_manifest(
        "[products.bestays.services.server]\nbuild = { context = \"apps/server\", dockerfile = \"docker/server.Dockerfile\" }\ncommand = \"demo-app\"",
        &format!(
            "[products.bestays.services.server]\nbuild = {{ context = \"apps/server\", dockerfile = \"docker/server.Dockerfile\" }}\ncommand = {command:?}\n{extra}"
        ),
    );
}

/// Wait until `check` holds (polling), or fail with `what`.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < Duration::from_secs(30), "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A product process gets a cleared environment plus its allow-list: berth's own
/// exports (a marker, the admin URLs `berth restore` needs) never reach it, and HOME
/// is the product's own directory. Checked in /proc/<pid>/environ of every process,
/// and in the environment the migration ran with.
#[test]
fn product_processes_get_only_their_own_environment() {
    let site = Site::new(0);
    // The migration writes out its environment (in its working directory: the checkout).
    site.edit_manifest(
        "migrate = \"demo-app migrate\"\nenv = { APP_NAME = \"BeStays\"",
        "migrate = \"env > migrate.env && demo-app migrate\"\nenv = { APP_NAME = \"BeStays\"",
    );
    site.repo
        .commit_all("chore: record the migration's environment (TASK-40-env-bestays)");
    let leaks = [
        ("BERTH_TEST_OPERATOR_MARKER", "operator-export-7f3a"),
        (
            "BERTH_POSTGRES_ADMIN_URL",
            "postgresql://postgres:admin-pw-91c2@127.0.0.1:1/postgres",
        ),
        (
            "BERTH_REDIS_ADMIN_URL",
            "redis://default:redis-admin-pw-5d0e@127.0.0.1:1/0",
        ),
    ];
    site.berth_env(&["deploy", "bestays", "--yes"], &leaks)
        .assert_code(0);
    let version = site.head_version();
    let root = site.repo.path().canonicalize().unwrap();
    let home = root.join(".berth/home/bestays");
    let mut envs: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let pids = recorded_pids(&site, "bestays", "blue");
    assert_eq!(pids.len(), 2, "{pids:?}");
    for (service, pid) in &pids {
        envs.push((format!("{service} (pid {pid})"), environ(*pid)));
    }
    // The migration ran in the version's checkout (its working directory).
    let migrate_env = root
        .join(".berth/versions/bestays")
        .join(&version)
        .join("migrate.env");
    if let Ok(text) = std::fs::read_to_string(&migrate_env) {
        envs.push((
            "migrate".into(),
            text.lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ));
    }
    for (who, env) in &envs {
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        for (k, v) in &leaks {
            assert_eq!(get(k), None, "{who} got {k}: {env:?}");
            assert!(
                env.iter().all(|(_, val)| !val.contains(v)),
                "{who} got the value of {k}"
            );
        }
        assert_eq!(get("HOME"), Some(home.to_str().unwrap()), "{who}: {env:?}");
        assert_eq!(get("BERTH_PRODUCT"), Some("bestays"), "{who}");
        assert_eq!(get("BERTH_VERSION"), Some(version.as_str()), "{who}");
        assert_eq!(
            get("APP_NAME").is_some(),
            who.starts_with("server") || who == "migrate",
            "{who}"
        );
        assert!(get("PATH").is_some(), "{who}");
        // Nothing outside the allow-list: berth's identity, the service's env, secrets.
        for (k, _) in env {
            assert!(
                ![
                    "USER",
                    "COLUMNS",
                    "NO_COLOR",
                    "DOCKER_CONFIG",
                    "BERTH_OPERATOR",
                    "PWD_OF_BERTH"
                ]
                .contains(&k.as_str()),
                "{who} inherited {k} from berth"
            );
        }
    }
    assert_eq!(
        envs.len(),
        3,
        "the migration wrote {}",
        migrate_env.display()
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&home).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{}", home.display());
}

/// A rollback runs the old version's code, not HEAD's code labelled as the old version:
/// each version runs from its own checkout, pruned beyond `[deploy] keep`.
#[test]
fn rollback_runs_the_old_code_from_its_own_checkout() {
    let site = Site::new(0);
    serve_bestays_from_the_repo(
        &site,
        "python3 -m http.server \"$PORT\" --bind \"$BIND\" --directory products/bestays/site",
        "",
    );
    site.edit_manifest("runtime = \"local\"\n", "runtime = \"local\"\nkeep = 2\n");
    site.repo
        .write("products/bestays/site/api/health", "code one\n");
    site.repo
        .commit_all("feat: code one (TASK-41-code-bestays)");
    let v1 = site.head_version();
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    assert_eq!(
        get_body(site.http_port, "bestays.app", "/api/health"),
        (200, "code one\n".to_string())
    );

    site.repo
        .write("products/bestays/site/api/health", "code two\n");
    site.repo
        .commit_all("feat: code two (TASK-42-code-bestays)");
    let v2 = site.head_version();
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    assert_eq!(
        get_body(site.http_port, "bestays.app", "/api/health"),
        (200, "code two\n".to_string())
    );

    let out = site.berth(&["rollback", "bestays", "--yes"]);
    out.assert_code(0);
    assert_eq!(
        get_body(site.http_port, "bestays.app", "/api/health"),
        (200, "code one\n".to_string()),
        "the rolled-back version's code answers"
    );
    assert!(
        out.stderr
            .contains(&format!("reuse the retained checkout of {v1}")),
        "{}",
        out.snapshot()
    );
    // The process runs in v1's checkout, labelled v1.
    let root = site.repo.path().canonicalize().unwrap();
    let (_, pid) = recorded_pids(&site, "bestays", "blue")
        .into_iter()
        .find(|(s, _)| s == "server")
        .unwrap();
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap(),
        root.join(".berth/versions/bestays").join(&v1)
    );
    let s = site.berth(&["status", "bestays", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&s.stdout).unwrap();
    assert!(
        v["services"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["version"] == v1.as_str() && s["health"] == "up"),
        "{v:#}"
    );
    // The checkouts are git-ignored: the tree stays clean.
    assert_eq!(site.repo.git(&["status", "--porcelain"]), "");

    // A third version: keep = 2 keeps it and the one it replaced (v1); v2 goes.
    site.repo
        .write("products/bestays/site/api/health", "code three\n");
    site.repo
        .commit_all("feat: code three (TASK-43-code-bestays)");
    let v3 = site.head_version();
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    assert_eq!(
        get_body(site.http_port, "bestays.app", "/api/health"),
        (200, "code three\n".to_string())
    );
    let versions = root.join(".berth/versions/bestays");
    let mut kept: Vec<String> = std::fs::read_dir(&versions)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    let mut want = vec![v1.clone(), v3.clone()];
    want.sort();
    assert_eq!(kept, want, "v2 ({v2}) is pruned");
    // `deploy --ref` of a pruned version checks it out again.
    site.berth(&["deploy", "bestays", "--yes", "--ref", &v2])
        .assert_code(0);
    assert_eq!(
        get_body(site.http_port, "bestays.app", "/api/health"),
        (200, "code two\n".to_string())
    );
}

/// `workdir`: `command`, `migrate` and `build_command` run there, through the same shell,
/// so `cd sub && exec server` works in `command` as it does in `migrate`.
#[test]
fn workdir_and_shell_commands_run_the_same_way_everywhere() {
    let site = Site::new(0);
    serve_bestays_from_the_repo(
        &site,
        "cd site && exec python3 -m http.server \"$PORT\" --bind \"$BIND\"",
        "workdir = \"products/bestays\"\nbuild_command = \"cd site && cp api/health api/built\"",
    );
    site.edit_manifest(
        "migrate = \"demo-app migrate\"\nenv = { APP_NAME = \"BeStays\"",
        "migrate = \"cd site && test -f api/built && demo-app migrate\"\nenv = { APP_NAME = \"BeStays\"",
    );
    site.repo
        .write("products/bestays/site/api/health", "from the workdir\n");
    site.repo
        .commit_all("feat: workdir (TASK-44-workdir-bestays)");
    site.berth(&["check"]).assert_code(0);
    let out = site.berth(&["deploy", "bestays", "--yes"]);
    out.assert_code(0);
    assert!(
        out.stderr.contains("ran the build_command of server"),
        "{}",
        out.snapshot()
    );
    assert_eq!(
        get_body(site.http_port, "bestays.app", "/api/built"),
        (200, "from the workdir\n".to_string()),
        "build_command ran in the workdir of the checkout"
    );
    let root = site.repo.path().canonicalize().unwrap();
    let (_, pid) = recorded_pids(&site, "bestays", "blue")
        .into_iter()
        .find(|(s, _)| s == "server")
        .unwrap();
    // The recorded pid leads the service's process group (its shell, which starts the
    // command again if the kernel kills it): the server is one of the group.
    let want = root
        .join(".berth/versions/bestays")
        .join(site.head_version())
        .join("products/bestays/site");
    let cwds: Vec<std::path::PathBuf> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, r)| r.split_whitespace().nth(2) == Some(pid.to_string().as_str()))
                })
                .unwrap_or(false)
        })
        .filter_map(|p| std::fs::read_link(format!("/proc/{p}/cwd")).ok())
        .collect();
    assert!(cwds.contains(&want), "{want:?} not in {cwds:?}");
    // A workdir that is not in the repository is caught by check, before any deploy.
    site.edit_manifest(
        "workdir = \"products/bestays\"",
        "workdir = \"products/nope\"",
    );
    let out = site.berth(&["check"]);
    out.assert_code(2);
    assert!(
        out.stderr.contains("error[workdir-missing]") && out.stderr.contains("berth.toml:"),
        "{}",
        out.snapshot()
    );
    // So is one that exists but holds nothing git tracks: the checkout would lack it.
    site.edit_manifest(
        "workdir = \"products/nope\"",
        "workdir = \"products/scratch\"",
    );
    site.repo.write("products/scratch/notes.txt", "untracked");
    let out = site.berth(&["check"]);
    out.assert_code(2);
    assert!(
        out.stderr.contains("error[workdir-untracked]"),
        "{}",
        out.snapshot()
    );
}

/// A pid file naming a process berth did not start (pid reuse after a crash or a
/// reboot): status reports the service down, and no deploy ever signals it.
#[test]
fn a_pid_file_naming_a_stranger_is_dead_and_never_signalled() {
    use std::os::unix::process::CommandExt;
    let site = Site::new(0);
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let pid_file = site.repo.path().join(".berth/run/bestays/blue/server.json");
    let mut record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&pid_file).unwrap()).unwrap();
    let old = record["pid"].as_u64().unwrap() as u32;
    // The server dies; its pid goes to an unrelated process (a group leader, like it was).
    std::process::Command::new("kill")
        .args(["-9", "--", &format!("-{old}")])
        .status()
        .unwrap();
    eventually("the old server exits", || !pid_running(old));
    let mut stranger = std::process::Command::new("sleep")
        .arg("1000")
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = stranger.id();
    record["pid"] = pid.into();
    std::fs::write(&pid_file, record.to_string()).unwrap();

    let s = site.berth(&["status", "bestays", "--format", "json"]);
    s.assert_code(0);
    let v: serde_json::Value = serde_json::from_str(&s.stdout).unwrap();
    let server = v["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["service"] == "server")
        .unwrap()
        .clone();
    assert_eq!(server["running"], false, "{v:#}");
    assert_eq!(server["health"], "down", "{v:#}");

    site.change("bestays", 45);
    let out = site.berth(&["deploy", "bestays", "--yes"]);
    out.assert_code(0);
    assert_eq!(
        site.get("bestays.app", "/api/health"),
        (200, site.head_version())
    );
    assert!(
        stranger.try_wait().unwrap().is_none() && pid_running(pid),
        "the deploy signalled a process berth did not start\n{}",
        out.snapshot()
    );
    let _ = stranger.kill();
    let _ = stranger.wait();
}

/// A deleted upstream include: `berth render` recreates it pointing at the slot that
/// runs (green here), so the next reload keeps serving; and a deploy without it takes
/// the live slot from the runtime.
#[test]
fn a_deleted_upstream_include_points_at_the_slot_that_runs() {
    let site = Site::new(0);
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    site.change("bestays", 46);
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let v2 = site.head_version();
    assert_eq!(site.get("bestays.app", "/api/health"), (200, v2.clone()));
    let include = site
        .repo
        .path()
        .join("deploy/dev/nginx/upstreams/bestays.conf");
    let green = std::fs::read_to_string(&include).unwrap();
    assert!(
        green.contains("Live slot of product bestays: green"),
        "{green}"
    );

    std::fs::remove_file(&include).unwrap();
    let out = site.berth(&["render", "--env", "dev"]);
    out.assert_code(0);
    assert_eq!(
        std::fs::read_to_string(&include).unwrap(),
        green,
        "{}",
        out.snapshot()
    );
    let reload = std::process::Command::new("nginx")
        .args([
            "-p",
            site.repo.path().to_str().unwrap(),
            "-c",
            "deploy/dev/nginx/nginx.conf",
            "-s",
            "reload",
        ])
        .status()
        .unwrap();
    assert!(reload.success());
    // Every answer after the reload comes from green, none is a 502.
    for _ in 0..50 {
        assert_eq!(site.get("bestays.app", "/api/health"), (200, v2.clone()));
    }

    // Deleted again, and a deploy (no render): green is live, so the new version goes to
    // blue and green is drained and stopped.
    std::fs::remove_file(&include).unwrap();
    site.change("bestays", 47);
    deploy_moves_bestays_from_green_to_blue(&site);
}

/// Deploy bestays while green is live: the new version goes to blue, traffic switches
/// green -> blue, green is drained and stopped, and the new version answers.
fn deploy_moves_bestays_from_green_to_blue(site: &Site) {
    let out = site.berth(&["deploy", "bestays", "--yes"]);
    out.assert_code(0);
    assert!(
        out.stderr.contains("switch traffic green -> blue")
            && out.stderr.contains("then stop the green slot"),
        "{}",
        out.snapshot()
    );
    assert_eq!(
        site.get("bestays.app", "/api/health"),
        (200, site.head_version())
    );
    assert!(recorded_pids(site, "bestays", "green").is_empty());
}

/// A garbage upstream include: the deploy takes the live slot from the runtime, drains
/// it and stops it, instead of switching blind and leaving it running.
#[test]
fn a_garbage_upstream_include_still_drains_and_stops_the_old_slot() {
    let site = Site::new(0);
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    site.change("bestays", 48);
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let green = recorded_pids(&site, "bestays", "green");
    assert_eq!(green.len(), 2);
    let include = site
        .repo
        .path()
        .join("deploy/dev/nginx/upstreams/bestays.conf");
    std::fs::write(&include, "\u{0}\u{1}garbage, not an upstream\n").unwrap();

    site.change("bestays", 49);
    deploy_moves_bestays_from_green_to_blue(&site);
    for (service, pid) in green {
        assert!(!pid_running(pid), "green {service} (pid {pid}) still runs");
    }
}

#[test]
fn an_audit_record_that_cannot_be_written_is_a_warning_not_silence() {
    let site = Site::new(0);
    // Something in the log's place that cannot be appended to.
    std::fs::create_dir_all(site.repo.path().join(".berth/audit.jsonl")).unwrap();
    let out = site.berth(&["deploy", "realestate", "--yes"]);
    out.assert_code(0);
    assert!(
        out.stderr.contains("could not write the audit record to")
            && out.stderr.contains(".berth/audit.jsonl"),
        "{}",
        out.snapshot()
    );
}

/// A service whose command leaves the shell as the process group's leader and runs the
/// server as its child, a child that takes its time to stop (uvicorn closes its socket
/// on the next tick; this one ignores SIGTERM): stopping a slot waits for the whole group,
/// not only the shell, and kills what remains. Otherwise the next start on that slot
/// cannot bind its port, and the health check passes against the old process still
/// answering there: the old code would serve under the new version's name.
#[test]
fn stopping_a_slot_waits_for_every_process_of_the_service_not_only_the_shell() {
    let site = Site::new(0);
    serve_bestays_from_the_repo(&site, "(trap '' TERM; exec demo-app)", "");
    site.repo
        .commit_all("chore: the server outlives its shell (TASK-40-server-bestays)");
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let v1 = site.head_version();
    let blue = recorded_pids(&site, "bestays", "blue");
    assert!(!blue.is_empty());
    // The server itself: a child of the recorded shell, in its process group.
    let group_of = |leader: u32| -> Vec<u32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                    s.rsplit_once(')').is_some_and(|(_, r)| {
                        let f: Vec<&str> = r.split_whitespace().collect();
                        f.first() != Some(&"Z") && f.get(2) == Some(&leader.to_string().as_str())
                    })
                })
            })
            .collect()
    };
    let blue_group: Vec<u32> = blue.iter().flat_map(|(_, pid)| group_of(*pid)).collect();
    assert!(
        blue_group.len() > blue.len(),
        "the shells have children in their groups: {blue_group:?}"
    );

    site.change("bestays", 41);
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let v2 = site.head_version();
    assert_eq!(site.get("bestays.app", "/api/health"), (200, v2.clone()));
    let left: Vec<u32> = blue_group
        .iter()
        .copied()
        .filter(|p| pid_running(*p))
        .collect();
    assert!(
        left.is_empty(),
        "processes of the stopped blue slot still run: {left:?}"
    );

    // Back on blue: the new version answers there, not the old process of v1.
    site.change("bestays", 42);
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let v3 = site.head_version();
    assert_ne!(v3, v1);
    for _ in 0..5 {
        assert_eq!(site.get("bestays.app", "/api/health"), (200, v3.clone()));
    }
}
