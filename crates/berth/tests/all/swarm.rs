//! The Docker Swarm building blocks the swarm runtime stands on, proven on a real
//! three-node swarm on this machine (`berth_testkit::swarm`: one dockerd per network
//! namespace, a bridge, a registry): stacks from compose files, `endpoint_mode: dnsrr`,
//! placement by node label, an overlay network per product, host-mode published ports
//! that nginx on the host reaches at `node-ip:port` (berth's front door: a slot is a list
//! of such addresses), a service's UpdateStatus and each task's node and health read from
//! the manager, Docker secrets granted to one product's service only, and a node's death
//! with its task rescheduled. docs/swarm.md is the design these facts support.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_testkit::load::LoadConfig;
use berth_testkit::swarm::{Node, Swarm, SwarmConfig, static_binary, wait_until};

/// A std-only helper put into the images beside demo-app (they are FROM scratch: no
/// shell, no curl): `cat FILE`, `get PORT PATH` (exit 0 on a 2xx, the health check),
/// `resolve NAME` (the addresses Docker's DNS gives for NAME, one a line).
const TOOL: &str = r#"
use std::io::{Read, Write};
fn main() {
    let a: Vec<String> = std::env::args().collect();
    match a.get(1).map(String::as_str) {
        Some("cat") => match std::fs::read(&a[2]) {
            Ok(b) => std::io::stdout().write_all(&b).unwrap(),
            Err(e) => { eprintln!("{}: {e}", a[2]); std::process::exit(1) }
        },
        Some("get") => {
            let answer = std::net::TcpStream::connect(("127.0.0.1", a[2].parse::<u16>().unwrap()))
                .and_then(|mut s| {
                    s.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
                    write!(s, "GET {} HTTP/1.0\r\nHost: localhost\r\n\r\n", a[3])?;
                    let mut b = String::new();
                    s.read_to_string(&mut b)?;
                    Ok(b)
                });
            let ok = answer.is_ok_and(|b| b.starts_with("HTTP/1.1 2") || b.starts_with("HTTP/1.0 2"));
            std::process::exit(if ok { 0 } else { 1 })
        }
        Some("resolve") => match std::net::ToSocketAddrs::to_socket_addrs(&(a[2].as_str(), 80)) {
            Ok(addrs) => { for x in addrs { println!("{}", x.ip()) } }
            Err(e) => { eprintln!("{}: {e}", a[2]); std::process::exit(1) }
        },
        _ => { eprintln!("usage: tool cat FILE | get PORT PATH | resolve NAME"); std::process::exit(2) }
    }
}
"#;

/// demo-app images `demo:v1`, `demo:v2` and `demo:v3` in the swarm's registry (three
/// versions retained there by tag), built once per swarm.
fn demo_images(swarm: &Swarm) -> [String; 3] {
    static BUILT: Mutex<Vec<(String, [String; 3])>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, images)) = built.iter().find(|(id, _)| *id == swarm.id) {
        return images.clone();
    }
    let demo = static_binary(
        &berth_testkit::workspace_root().join("examples/demo-app/src/main.rs"),
        "demo-app",
    );
    let src = swarm.scratch_dir("tool").join("tool.rs");
    std::fs::write(&src, TOOL).unwrap();
    let tool = static_binary(&src, "tool");
    let images = ["v1", "v2", "v3"].map(|v| {
        let ctx = swarm.scratch_dir(&format!("demo-{v}"));
        std::fs::copy(&demo, ctx.join("demo-app")).unwrap();
        std::fs::copy(&tool, ctx.join("tool")).unwrap();
        std::fs::write(ctx.join("VERSION"), v).unwrap();
        std::fs::write(
            ctx.join("Dockerfile"),
            "FROM scratch\nCOPY demo-app tool VERSION /\nCMD [\"/demo-app\"]\n",
        )
        .unwrap();
        swarm.build_and_push(&format!("demo:{v}"), &ctx)
    });
    built.push((swarm.id.clone(), images.clone()));
    images
}

/// A product's stack: one service `server` running demo-app with the health check,
/// `replicas` tasks placed on nodes labelled `berth.product=<label>` (one per node),
/// `endpoint_mode: dnsrr`, the port published in host mode on each node, on the stack's
/// own overlay network; `secret` (a Docker secret's name) granted as `api_key`.
struct Stack<'a> {
    name: &'a str,
    label: &'a str,
    image: &'a str,
    version: &'a str,
    replicas: usize,
    port: u16,
    secret: Option<&'a str>,
    env: &'a [(&'a str, &'a str)],
}

impl Stack<'_> {
    fn compose(&self) -> String {
        let mut env = format!(
            "      BERTH_PRODUCT: {}\n      BERTH_VERSION: {}\n      PORT: \"8080\"\n",
            self.name, self.version
        );
        for (k, v) in self.env {
            env.push_str(&format!("      {k}: \"{v}\"\n"));
        }
        let (grant, declare) = match self.secret {
            Some(s) => (
                "    secrets:\n      - source: api_key\n        target: api_key\n".to_string(),
                format!("secrets:\n  api_key:\n    external: true\n    name: {s}\n"),
            ),
            None => (String::new(), String::new()),
        };
        format!(
            r#"version: "3.8"
services:
  server:
    image: {image}
    environment:
{env}    healthcheck:
      test: ["CMD", "/tool", "get", "8080", "/api/health"]
      interval: 1s
      timeout: 2s
      retries: 2
    stop_grace_period: 2s
    ports:
      - target: 8080
        published: {port}
        protocol: tcp
        mode: host
    networks: [net]
{grant}    deploy:
      replicas: {replicas}
      endpoint_mode: dnsrr
      restart_policy:
        condition: any
        delay: 1s
      placement:
        constraints: ["node.labels.berth.product == {label}"]
        max_replicas_per_node: 1
      update_config:
        parallelism: 1
        order: stop-first
        failure_action: rollback
        monitor: 1s
      rollback_config:
        parallelism: 1
        order: stop-first
networks:
  net:
    driver: overlay
{declare}"#,
            image = self.image,
            port = self.port,
            replicas = self.replicas,
            label = self.label,
        )
    }

    /// `docker stack deploy` on the manager, then wait until every task runs healthy.
    fn deploy(&self, swarm: &Swarm) {
        let dir = swarm.scratch_dir(&format!("stack-{}", self.name));
        let file = dir.join("compose.yml");
        std::fs::write(&file, self.compose()).unwrap();
        swarm.manager().docker(&[
            "stack",
            "deploy",
            "--prune",
            "-c",
            file.to_str().unwrap(),
            self.name,
        ]);
        let service = format!("{}_server", self.name);
        wait_until(
            Duration::from_secs(90),
            &format!("{} running tasks of {service}", self.replicas),
            || running_tasks(swarm.manager(), &service).len() == self.replicas,
        );
    }
}

/// One task of a service as the manager sees it.
#[derive(Clone, Debug, PartialEq)]
struct Task {
    id: String,
    node_id: String,
    state: String,
    image: String,
    container: String,
}

/// The tasks of `service` the manager wants running and reports running (a task with a
/// health check is `starting` until it passes, then `running`).
fn running_tasks(manager: &Node, service: &str) -> Vec<Task> {
    let Ok(ids) = manager.try_docker(&[
        "service",
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        "desired-state=running",
        service,
    ]) else {
        return Vec::new();
    };
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if ids.is_empty() {
        return Vec::new();
    }
    let mut args = vec![
        "inspect",
        "--type",
        "task",
        "--format",
        "{{.ID}} {{.NodeID}} {{.Status.State}} {{.Spec.ContainerSpec.Image}} {{.Status.ContainerStatus.ContainerID}}",
    ];
    args.extend(&ids);
    let Ok(out) = manager.try_docker(&args) else {
        return Vec::new();
    };
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() == 5 && f[2] == "running").then(|| Task {
                id: f[0].into(),
                node_id: f[1].into(),
                state: f[2].into(),
                image: f[3].into(),
                container: f[4].into(),
            })
        })
        .collect()
}

/// (task id, state) of every task of `service` the manager wants running, whatever
/// state it is in (`pending`, `assigned`, `preparing`, `starting`, `running`, ...).
fn task_states(manager: &Node, service: &str) -> Vec<(String, String)> {
    let Ok(ids) = manager.try_docker(&[
        "service",
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        "desired-state=running",
        service,
    ]) else {
        return Vec::new();
    };
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if ids.is_empty() {
        return Vec::new();
    }
    let mut args = vec![
        "inspect",
        "--type",
        "task",
        "--format",
        "{{.ID}} {{.Status.State}}",
    ];
    args.extend(&ids);
    manager
        .try_docker(&args)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(id, state)| (id.to_string(), state.to_string()))
        .collect()
}

/// The image of every task of `service` the manager wants running, whatever its state
/// (one entry per task: `task-id image`).
fn task_images(manager: &Node, service: &str) -> Vec<String> {
    let Ok(ids) = manager.try_docker(&[
        "service",
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        "desired-state=running",
        service,
    ]) else {
        return Vec::new();
    };
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if ids.is_empty() {
        return Vec::new();
    }
    let mut args = vec![
        "inspect",
        "--type",
        "task",
        "--format",
        "{{.Spec.ContainerSpec.Image}} {{.ID}}",
    ];
    args.extend(&ids);
    manager
        .try_docker(&args)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Where a slot answers: `node-address:published-port` of every running task of
/// `service`, from the manager alone (the node's advertised address, the service's
/// host-mode port). This is what the runtime contract hands the front door.
fn slot_addresses(manager: &Node, service: &str) -> Vec<String> {
    let port = manager
        .docker(&[
            "service",
            "inspect",
            "--format",
            "{{range .Endpoint.Ports}}{{.PublishedPort}}{{end}}",
            service,
        ])
        .trim()
        .to_string();
    let mut out: Vec<String> = running_tasks(manager, service)
        .iter()
        .map(|t| {
            let addr = manager.docker(&[
                "node",
                "inspect",
                "--format",
                "{{.Status.Addr}}",
                &t.node_id,
            ]);
            format!("{}:{port}", addr.trim())
        })
        .collect();
    out.sort();
    out
}

/// `.UpdateStatus` of a service: (state, started at); ("", "") before its first update.
fn update_status(manager: &Node, service: &str) -> (String, String) {
    let out = manager.docker(&[
        "service",
        "inspect",
        "--format",
        "{{if .UpdateStatus}}{{.UpdateStatus.State}} {{.UpdateStatus.StartedAt}}{{end}}",
        service,
    ]);
    let out = out.trim();
    let (state, started) = out.split_once(' ').unwrap_or((out, ""));
    (state.to_string(), started.to_string())
}

/// Submit `docker service update -d ARGS SERVICE` and poll UpdateStatus until *this*
/// update ended: the state is final and StartedAt is not the previous update's (right
/// after the call the manager can still show the last update's `completed`, or none).
/// Returns every state seen, in order; the last is where the update ended.
fn update_and_wait(manager: &Node, service: &str, args: &[&str]) -> Vec<String> {
    let (_, previous) = update_status(manager, service);
    let mut all = vec!["service", "update", "-d"];
    all.extend(args);
    all.push(service);
    manager.docker(&all);
    let mut seen: Vec<String> = Vec::new();
    wait_until(
        Duration::from_secs(120),
        &format!("the update of {service} to end"),
        || {
            let (state, started) = update_status(manager, service);
            let label = if started == previous {
                format!("{state} (previous update)")
            } else {
                state.clone()
            };
            if seen.last() != Some(&label) {
                seen.push(label);
            }
            started != previous
                && matches!(
                    state.as_str(),
                    "completed" | "paused" | "rollback_completed" | "rollback_paused"
                )
        },
    );
    seen
}

/// nginx on the host in front of a slot: an upstream of `node-ip:port` addresses, retrying
/// the next one on a refused or broken connection. Stopped on drop.
struct FrontDoor {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

impl FrontDoor {
    fn start(addresses: &[String]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-swarm-nginx-")
            .tempdir()
            .unwrap();
        let port = berth_testkit::free_port();
        write_nginx_conf(dir.path(), port, addresses);
        let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .args(["-c", "nginx.conf", "-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nginx is required (./scripts/test.sh installs it)");
        let this = Self { dir, port, child };
        wait_until(Duration::from_secs(20), "nginx to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        this
    }

    /// Point the upstream at `addresses` and reload (what a switch or a reschedule does).
    fn switch(&self, addresses: &[String]) {
        write_nginx_conf(self.dir.path(), self.port, addresses);
        let out = Command::new("nginx")
            .arg("-p")
            .arg(self.dir.path())
            .args(["-c", "nginx.conf", "-s", "reload"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nginx reload: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn load(&self, host: &str) -> LoadConfig {
        LoadConfig::new(self.port, host)
            .paths(&["/", "/api/health", "/api/listings/7"])
            .max_duration(Duration::from_secs(150))
    }
}

impl Drop for FrontDoor {
    fn drop(&mut self) {
        let _ = Command::new("nginx")
            .arg("-p")
            .arg(self.dir.path())
            .args(["-c", "nginx.conf", "-s", "stop"])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

fn write_nginx_conf(dir: &Path, port: u16, addresses: &[String]) {
    let d = dir.display();
    let servers: String = addresses
        .iter()
        .map(|a| format!("    server {a} max_fails=1 fail_timeout=2s;\n"))
        .collect();
    let conf = format!(
        r#"pid {d}/nginx.pid;
error_log {d}/error.log;
worker_processes 1;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  upstream slot {{
{servers}    keepalive 16;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://slot;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_next_upstream error timeout http_502 http_503;
      proxy_connect_timeout 300ms;
      proxy_read_timeout 5s;
    }}
  }}
}}
"#
    );
    std::fs::write(dir.join("nginx.conf.tmp"), conf).unwrap();
    std::fs::rename(dir.join("nginx.conf.tmp"), dir.join("nginx.conf")).unwrap();
}

/// Plain GET to `addr` (an address on the swarm's bridge): (status, body), or (0, error).
fn get(addr: &str, path: &str) -> (u16, String) {
    let Ok(sock) = addr.parse::<std::net::SocketAddr>() else {
        return (0, format!("bad address {addr}"));
    };
    match berth_testkit::http::Request::to("GET", sock, path)
        .host("test")
        .timeout(Duration::from_secs(5))
        .send()
    {
        Ok(r) => (r.status, r.text()),
        Err(e) => (0, e.to_string()),
    }
}

/// Run `args` in a task's container on the node it runs on: (success, stdout + stderr).
fn exec_in(swarm: &Swarm, task: &Task, args: &[&str]) -> (bool, String) {
    let node = swarm
        .node_by_id(&task.node_id)
        .unwrap_or_else(|| panic!("task {} on unknown node {}", task.id, task.node_id));
    let out = node
        .docker_cmd()
        .args(["exec", &task.container])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn nodes_of(tasks: &[Task]) -> BTreeSet<String> {
    tasks.iter().map(|t| t.node_id.clone()).collect()
}

/// A Docker secret named by its content (Swarm secrets are immutable): the value goes
/// in on stdin, never on a command line.
fn create_secret(manager: &Node, product: &str, key: &str, value: &str) -> String {
    use std::io::Write;
    let hash = berth_render::secrets::sha256_hex(value);
    let name = format!("{product}_{key}_{}", &hash[..12]);
    let mut child = manager
        .docker_cmd()
        .args([
            "secret",
            "create",
            "--label",
            &format!("berth.product={product}"),
            &name,
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(value.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "docker secret create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    name
}

#[test]
fn stacks_place_dnsrr_tasks_by_label_on_their_own_overlay_behind_host_nginx() {
    let swarm = Swarm::shared();
    eprintln!("swarm {} started in {:?}", swarm.id, swarm.start_time);
    let [v1, _, _] = demo_images(&swarm);
    let m = swarm.manager();
    let value = format!("bestays-api-key-{}", std::process::id());
    let secret = create_secret(m, "bestays", "api_key", &value);

    let bestays = Stack {
        name: "bestays",
        label: "bestays",
        image: &v1,
        version: "v1",
        replicas: 2,
        port: 18001,
        secret: Some(&secret),
        env: &[],
    };
    let realestate = Stack {
        name: "realestate",
        label: "realestate",
        image: &v1,
        version: "v1",
        replicas: 1,
        port: 18101,
        secret: None,
        env: &[],
    };
    std::thread::scope(|s| {
        s.spawn(|| bestays.deploy(&swarm));
        s.spawn(|| realestate.deploy(&swarm));
    });

    // Placement by label: bestays on the two workers (one each), realestate on the manager.
    let b_tasks = running_tasks(m, "bestays_server");
    let r_tasks = running_tasks(m, "realestate_server");
    assert_eq!(
        nodes_of(&b_tasks),
        BTreeSet::from([swarm.node(1).id.clone(), swarm.node(2).id.clone()]),
        "bestays' tasks: {b_tasks:?}"
    );
    assert_eq!(
        nodes_of(&r_tasks),
        BTreeSet::from([swarm.node(0).id.clone()]),
        "realestate's tasks: {r_tasks:?}"
    );
    assert!(
        b_tasks.iter().all(|t| t.image.starts_with(&v1)),
        "{b_tasks:?}"
    );

    // dnsrr, no VIP: the service has no virtual IP, and its name resolves to its tasks.
    let vips = m.docker(&[
        "service",
        "inspect",
        "--format",
        "{{.Endpoint.VirtualIPs}}",
        "bestays_server",
    ]);
    assert_eq!(vips.trim(), "[]", "a dnsrr service has no VIP");
    // An overlay network per product.
    for product in ["bestays", "realestate"] {
        let net = m.docker(&[
            "network",
            "inspect",
            "--format",
            "{{.Driver}} {{.Scope}}",
            &format!("{product}_net"),
        ]);
        assert_eq!(net.trim(), "overlay swarm", "{product}_net");
    }
    let (ok, names) = exec_in(&swarm, &b_tasks[0], &["/tool", "resolve", "server"]);
    assert!(ok, "{names}");
    let mut expected_ips = BTreeSet::new();
    for t in &b_tasks {
        let ip = m.docker(&[
            "inspect",
            "--type",
            "task",
            "--format",
            "{{range .NetworksAttachments}}{{if eq .Network.Spec.Name \"bestays_net\"}}{{range .Addresses}}{{.}}{{end}}{{end}}{{end}}",
            &t.id,
        ]);
        expected_ips.insert(ip.trim().split('/').next().unwrap().to_string());
    }
    let resolved: BTreeSet<String> = names.lines().map(str::to_string).collect();
    assert_eq!(
        resolved, expected_ips,
        "`server` resolves to both bestays tasks on bestays_net"
    );
    // realestate's task sees none of bestays' names: the overlays are apart.
    for name in ["bestays_server", "tasks.bestays_server", "tasks.server"] {
        let (ok, out) = exec_in(&swarm, &r_tasks[0], &["/tool", "resolve", name]);
        let leaked: Vec<&str> = out.lines().filter(|l| expected_ips.contains(*l)).collect();
        assert!(
            !ok || leaked.is_empty(),
            "realestate resolves {name} to bestays' tasks: {out}"
        );
    }

    // Host-mode ports: the host reaches each task at its node's address.
    let slot = slot_addresses(m, "bestays_server");
    assert_eq!(
        slot,
        vec![
            format!("{}:18001", swarm.node(1).ip),
            format!("{}:18001", swarm.node(2).ip)
        ]
    );
    for addr in &slot {
        let (status, body) = get(addr, "/");
        assert_eq!(status, 200, "{addr}: {body}");
        assert!(
            body.contains("bestays") && body.contains("v1"),
            "{addr}: {body}"
        );
    }

    // The secret: readable in bestays' tasks, absent from realestate's; never in the
    // service's or the container's definition.
    for t in &b_tasks {
        let (ok, out) = exec_in(&swarm, t, &["/tool", "cat", "/run/secrets/api_key"]);
        assert!(
            ok && out == value,
            "bestays task {} reads its secret: {out}",
            t.id
        );
    }
    let (ok, out) = exec_in(
        &swarm,
        &r_tasks[0],
        &["/tool", "cat", "/run/secrets/api_key"],
    );
    assert!(
        !ok && !out.contains(&value),
        "realestate reads bestays' secret: {out}"
    );
    let spec = m.docker(&["service", "inspect", "bestays_server"]);
    assert!(spec.contains(&secret) && !spec.contains(&value));
    for t in &b_tasks {
        let node = swarm.node_by_id(&t.node_id).unwrap();
        let c = node.docker(&["inspect", &t.container]);
        assert!(
            !c.contains(&value),
            "the secret's value is in the container's definition"
        );
    }
    // Secrets are immutable: the same name cannot take a new value (hence names by content).
    let again = m.try_docker(&["secret", "create", &secret, "/dev/null"]);
    assert!(
        again.is_err(),
        "a second secret of the same name was created"
    );

    // nginx on the host in front of the slot: every request answered, at 100 req/s or more.
    let door = FrontDoor::start(&slot);
    let load = door.load("bestays.test").start();
    load.wait_for_answers(400);
    let report = load.finish();
    report.assert_clean(400);
    assert!(report.rate() >= 100.0, "{}", report.summary());
}

#[test]
fn update_status_and_per_task_health_guide_updates_and_rollback_to_any_tag() {
    let swarm = Swarm::shared();
    let [v1, v2, v3] = demo_images(&swarm);
    let m = swarm.manager();
    let stack = Stack {
        name: "upd",
        label: "bestays",
        image: &v1,
        version: "v1",
        replicas: 2,
        port: 18002,
        secret: None,
        env: &[],
    };
    stack.deploy(&swarm);
    let service = "upd_server";
    let door = FrontDoor::start(&slot_addresses(m, service));
    let load = door.load("upd.test").start();
    load.wait_for_answers(100);

    // A rolling update; the manager's UpdateStatus says when it is over.
    let update = |image: &str, version: &str, extra: &[&str]| {
        let started = Instant::now();
        let env = format!("BERTH_VERSION={version}");
        let mut args = vec!["--image", image, "--env-add", &env];
        args.extend(extra);
        let states = update_and_wait(m, service, &args);
        (states, started.elapsed())
    };
    let (states, took) = update(&v2, "v2", &[]);
    eprintln!("update to v2: UpdateStatus {states:?} in {took:?}");
    assert_eq!(
        states.last().map(String::as_str),
        Some("completed"),
        "{states:?}"
    );
    assert!(states.iter().any(|s| s == "updating"), "{states:?}");
    // Per task: its node and state from the manager, its container's health from its node.
    let mut tasks = Vec::new();
    wait_until(Duration::from_secs(60), "2 running v2 tasks", || {
        tasks = running_tasks(m, service);
        tasks.len() == 2
    });
    assert_eq!(
        nodes_of(&tasks),
        BTreeSet::from([swarm.node(1).id.clone(), swarm.node(2).id.clone()])
    );
    for t in &tasks {
        assert!(t.image.starts_with(&v2), "{t:?}");
        let node = swarm.node_by_id(&t.node_id).unwrap();
        let health = node.docker(&[
            "inspect",
            "--format",
            "{{.State.Health.Status}}",
            &t.container,
        ]);
        assert_eq!(health.trim(), "healthy", "{t:?}");
    }

    // Back to any retained version by its tag: no rebuild, the nodes still hold the image.
    let (states, took) = update(&v1, "v1", &[]);
    eprintln!("back to v1 (a retained tag): UpdateStatus {states:?} in {took:?}");
    assert_eq!(
        states.last().map(String::as_str),
        Some("completed"),
        "{states:?}"
    );
    assert!(
        running_tasks(m, service)
            .iter()
            .all(|t| t.image.starts_with(&v1))
    );

    let report = load.finish();
    eprintln!(
        "through the update to v2 and back to v1: {}",
        report.summary()
    );
    report.assert_clean(500);

    // A release whose health never passes: Swarm rolls it back by itself, and UpdateStatus
    // says so; the tasks run v1 again. The requests through the front door meanwhile are
    // only reported: an in-place update sends traffic to tasks nginx cannot tell are
    // unhealthy (one run saw 28 s of 502s: the unhealthy task's 503s made nginx mark
    // servers failed until none was left), which is why berth updates the idle slot's
    // service and switches after health (docs/swarm.md).
    let load = door.load("upd.test").start();
    let v3_counts = Mutex::new(BTreeSet::new());
    let done = std::sync::atomic::AtomicBool::new(false);
    let (states, took) = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let images: BTreeSet<String> = task_images(m, service).into_iter().collect();
                let v3_tasks = images.iter().filter(|i| i.starts_with(&v3)).count();
                v3_counts.lock().unwrap().insert(v3_tasks);
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let r = update(&v3, "v3", &["--env-add", "DEMO_FAIL_HEALTH=1"]);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        r
    });
    eprintln!(
        "v3 (health never passes): UpdateStatus {states:?} in {took:?}; tasks on v3 at once: {:?}",
        v3_counts.lock().unwrap()
    );
    assert_eq!(
        states.last().map(String::as_str),
        Some("rollback_completed"),
        "{states:?}"
    );
    // `rollback_completed` says every task was put back on v1; a task whose container
    // restarted is `starting` until its health check passes again.
    let mut tasks = Vec::new();
    wait_until(
        Duration::from_secs(60),
        "2 running v1 tasks after the automatic rollback",
        || {
            tasks = running_tasks(m, service);
            tasks.len() == 2 && tasks.iter().all(|t| t.image.starts_with(&v1))
        },
    );
    let report = load.finish();
    eprintln!(
        "in-place update to a release whose health never passes, through host nginx: {}",
        report.summary()
    );
}

#[test]
fn a_dead_workers_task_is_rescheduled_within_30s_and_the_next_update_converges() {
    // Its own swarm: a node dies here. Docker's 5 s dispatcher heartbeat declares a node
    // down after 10 to 15 s; at 2 s (what docs/swarm.md recommends) after about 6. Every node carries the label, so the task of the
    // dead node has somewhere to go (with max_replicas_per_node 1, two labelled nodes
    // would leave it pending: the deadlock validation must reject that).
    let swarm = Swarm::start(
        SwarmConfig::new(3)
            .dispatcher_heartbeat(Duration::from_secs(2))
            .label(0, "berth.product", "bestays")
            .label(1, "berth.product", "bestays")
            .label(2, "berth.product", "bestays"),
    );
    eprintln!("swarm {} started in {:?}", swarm.id, swarm.start_time);
    let [v1, v2, _] = demo_images(&swarm);
    let m = swarm.manager();
    let stack = Stack {
        name: "bestays",
        label: "bestays",
        image: &v1,
        version: "v1",
        replicas: 2,
        port: 18001,
        secret: None,
        env: &[],
    };
    stack.deploy(&swarm);
    let service = "bestays_server";
    let before = running_tasks(m, service);
    let victim = swarm
        .nodes
        .iter()
        .find(|n| n.index != 0 && before.iter().any(|t| t.node_id == n.id))
        .expect("a worker runs a task");
    let survivor = before
        .iter()
        .find(|t| t.node_id != victim.id)
        .unwrap()
        .clone();

    // Every labelled node holds the image already (a deploy pulls it on each of them
    // first), so a reschedule never waits for the registry.
    for node in &swarm.nodes {
        node.docker(&["pull", "-q", &v1]);
    }
    let door = FrontDoor::start(&slot_addresses(m, service));
    let load = door.load("bestays.test").start();
    load.wait_for_answers(200);

    let killed = Instant::now();
    victim.kill();
    assert_eq!(victim.process_count(), 0, "the node's processes all died");
    let mut down = None;
    let mut timeline: Vec<String> = Vec::new();
    wait_until(
        Duration::from_secs(30),
        "the dead node's task rescheduled and running",
        || {
            for (id, state) in task_states(m, service) {
                let line = format!("task {} {state}", &id[..12]);
                if !timeline.iter().any(|l| l.ends_with(&line)) {
                    timeline.push(format!("{:.1} s: {line}", killed.elapsed().as_secs_f64()));
                }
            }
            if down.is_none()
                && m.try_docker(&[
                    "node",
                    "inspect",
                    "--format",
                    "{{.Status.State}}",
                    &victim.id,
                ])
                .is_ok_and(|s| s.trim() == "down")
            {
                down = Some(killed.elapsed());
            }
            let now = running_tasks(m, service);
            now.len() == 2 && now.iter().all(|t| t.node_id != victim.id)
        },
    );
    let rescheduled = killed.elapsed();
    eprintln!("after the kill:\n  {}", timeline.join("\n  "));
    let slot = slot_addresses(m, service);
    for addr in &slot {
        assert_eq!(get(addr, "/").0, 200, "{addr}");
    }
    // The front door follows the slot's new addresses.
    door.switch(&slot);
    let after = running_tasks(m, service);
    assert!(
        after.contains(&survivor),
        "the surviving task was left alone: {after:?}"
    );
    load.wait_for_answers(200);
    let report = load.finish();
    eprintln!(
        "a worker died: the manager saw it down after {down:?}, its task rescheduled and \
         running after {rescheduled:?} (dispatcher heartbeat 2 s); requests during the failover: {}",
        report.summary()
    );
    assert!(rescheduled < Duration::from_secs(30));

    // The next deploy converges on the nodes that are left.
    let env = "BERTH_VERSION=v2";
    let states = update_and_wait(m, service, &["--image", &v2, "--env-add", env]);
    assert_eq!(
        states.last().map(String::as_str),
        Some("completed"),
        "{states:?}"
    );
    let tasks = running_tasks(m, service);
    assert!(
        tasks.len() == 2
            && tasks
                .iter()
                .all(|t| t.image.starts_with(&v2) && t.node_id != victim.id),
        "{tasks:?}"
    );
}

/// An nginx image assembled from this host's nginx and the libraries it links (no image
/// can be pulled), with `conf` as its configuration; pushed to the registry.
fn nginx_image(swarm: &Swarm, tag: &str, conf: &str) -> String {
    let ctx = swarm.scratch_dir(&format!("nginx-{tag}"));
    let root = ctx.join("rootfs");
    let ldd = Command::new("ldd").arg("/usr/sbin/nginx").output().unwrap();
    let mut files = vec![PathBuf::from("/usr/sbin/nginx")];
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            files.push(PathBuf::from(p));
        }
    }
    for f in &files {
        let to = root.join(f.strip_prefix("/").unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(f, &to).unwrap_or_else(|e| panic!("copy {}: {e}", f.display()));
    }
    for d in ["var/lib/nginx", "var/log/nginx", "tmp", "run"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::create_dir_all(root.join("etc/nginx")).unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    std::fs::write(root.join("etc/nginx/nginx.conf"), conf).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\nCMD [\"/usr/sbin/nginx\", \"-c\", \"/etc/nginx/nginx.conf\"]\n",
    )
    .unwrap();
    swarm.build_and_push(&format!("edge-nginx:{tag}"), &ctx)
}

/// The other way to the tasks, weighed in docs/swarm.md: nginx as a Swarm service on the
/// edge node, on the product's overlay, resolving `tasks.<service>` through Docker's DNS
/// (`resolver 127.0.0.11 valid=1s`). It follows an update of the service without a
/// reload; the requests that fail while tasks are replaced are counted and printed.
#[test]
fn nginx_as_a_service_on_the_edge_follows_tasks_through_docker_dns() {
    let swarm = Swarm::shared();
    let [v1, v2, _] = demo_images(&swarm);
    let m = swarm.manager();
    let stack = Stack {
        name: "dns",
        label: "bestays",
        image: &v1,
        version: "v1",
        replicas: 2,
        port: 18003,
        secret: None,
        env: &[],
    };
    stack.deploy(&swarm);
    let conf = r#"daemon off;
error_log stderr warn;
pid /tmp/nginx.pid;
worker_processes 1;
events { worker_connections 512; }
http {
  access_log off;
  resolver 127.0.0.11 valid=1s ipv6=off;
  resolver_timeout 1s;
  server {
    listen 8081;
    location / {
      set $backend tasks.dns_server;
      proxy_pass http://$backend:8080;
      proxy_next_upstream error timeout http_502 http_503;
      proxy_connect_timeout 300ms;
      proxy_read_timeout 5s;
    }
  }
}
"#;
    let image = nginx_image(&swarm, "1", conf);
    let edge = format!(
        r#"version: "3.8"
services:
  nginx:
    image: {image}
    ports:
      - target: 8081
        published: 18080
        protocol: tcp
        mode: host
    networks: [app]
    deploy:
      replicas: 1
      endpoint_mode: dnsrr
      placement:
        constraints: ["node.labels.berth.role == edge"]
networks:
  app:
    external: true
    name: dns_net
"#
    );
    let file = swarm.scratch_dir("stack-edge").join("compose.yml");
    std::fs::write(&file, edge).unwrap();
    m.docker(&["stack", "deploy", "-c", file.to_str().unwrap(), "edge"]);
    let door = format!("{}:18080", swarm.node(0).ip);
    wait_until(Duration::from_secs(60), "nginx on the edge node", || {
        let (status, body) = get(&door, "/");
        status == 200 && body.contains("v1")
    });

    // Requests through the edge nginx while the service's tasks are replaced by v2.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let (stop, door) = (stop.clone(), door.clone());
        std::thread::spawn(move || {
            let mut answers: Vec<(u16, String)> = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, body) = get(&door, "/");
                let version = ["v1", "v2"]
                    .into_iter()
                    .find(|v| body.contains(v))
                    .unwrap_or("")
                    .to_string();
                answers.push((status, version));
                std::thread::sleep(Duration::from_millis(5));
            }
            answers
        })
    };
    let states = update_and_wait(
        m,
        "dns_server",
        &["--image", &v2, "--env-add", "BERTH_VERSION=v2"],
    );
    assert_eq!(
        states.last().map(String::as_str),
        Some("completed"),
        "{states:?}"
    );
    // No reload: within the DNS answer's validity nginx reaches the new tasks.
    wait_until(
        Duration::from_secs(10),
        "the edge nginx to answer from v2",
        || {
            let (status, body) = get(&door, "/");
            status == 200 && body.contains("v2")
        },
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answers = sender.join().unwrap();
    let failed = answers.iter().filter(|(s, _)| *s != 200).count();
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for (s, _) in &answers {
        *by_status.entry(*s).or_default() += 1;
    }
    eprintln!(
        "nginx as a swarm service, through a stop-first update of 2 tasks: {} requests, {failed} failed, by status {by_status:?}",
        answers.len()
    );
    assert!(answers.len() > 100, "too few requests: {}", answers.len());
    m.docker(&["stack", "rm", "edge"]);
}

// --- berth's swarm runtime on the shared swarm ---------------------------------------

/// The `berth status` JSON rows of `product`.`service`.
fn status_tasks(
    site: &crate::deploy::Site,
    product: &str,
    service: &str,
) -> Vec<serde_json::Value> {
    let v = crate::support::json(site.repo.path(), &["status", product], 0);
    v["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["service"] == service)
        .unwrap_or_else(|| panic!("no {product}.{service} in {v}"))["tasks"]
        .as_array()
        .unwrap()
        .clone()
}

/// `berth deploy` / `rollback` of bestays through the host's nginx under >= 100 req/s:
/// 0 failed requests, and both versions answered.
fn under_fast_load(site: &crate::deploy::Site, args: &[&str]) -> berth_testkit::load::Report {
    let load = LoadConfig::new(site.http_port, "bestays.app")
        .paths(&["/api/health", "/", "/api/listings/7"])
        .workers(8, 4)
        .start();
    load.wait_for_answers(50);
    let out = site.berth(args);
    load.wait_for_answers(50);
    let report = load.finish();
    out.assert_code(0);
    eprintln!("berth {}: {}", args.join(" "), report.summary());
    report.assert_clean(100).assert_covered();
    assert!(
        report.rate() >= 100.0,
        "the load ran at {:.0} req/s, below the 100 the claim needs",
        report.rate()
    );
    report
}

/// bestays on its two labelled workers (server: one task on each), realestate on the
/// manager: a deploy and a rollback of bestays under >= 100 req/s through the host's
/// nginx fail no request; bestays's tasks only ever run on nodes with its label;
/// realestate's tasks (ids) are untouched throughout; each product's services are
/// granted its own Docker secrets only, and no secret value is in a service's spec (env,
/// labels), a rendered stack file or berth's output; `berth status` shows each task's
/// node and health.
#[test]
fn bestays_deploys_and_rolls_back_across_labelled_nodes_at_100_rps_with_its_own_secrets() {
    let started = Instant::now();
    let site = crate::deploy::Site::with(berth_runtime::Kind::Swarm, 300);
    let swarm = site.swarm.clone().unwrap();
    let project = site.compose.clone().unwrap();
    site.berth(&["deploy", "realestate", "--yes"])
        .assert_code(0);
    let realestate = site.processes("realestate");
    assert_eq!(realestate.len(), 2, "{realestate:?}");
    site.change("bestays", 1);
    let v1 = site.head_version();
    // realestate's images are bestays's too (the same sources): tagged on the manager
    // and pushed under bestays's repositories, from which bestays's nodes pull them.
    let out = site.berth(&["deploy", "bestays", "--yes"]);
    out.assert_code(0);
    assert!(
        out.stderr.contains("reused the image of the same source")
            && !out.stderr.contains("built "),
        "{}",
        out.snapshot()
    );

    let labelled: BTreeSet<String> = [1, 2]
        .iter()
        .map(|i| swarm.node(*i).ip.to_string())
        .collect();
    let placed = |what: &str| {
        let tasks = status_tasks(&site, "bestays", "server");
        let nodes: BTreeSet<String> = tasks
            .iter()
            .map(|t| t["node"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            nodes, labelled,
            "{what}: bestays.server's two tasks on its two labelled nodes: {tasks:?}"
        );
        for t in &tasks {
            assert_eq!(t["health"], "up", "{what}: {t}");
            assert_eq!(t["state"], "running", "{what}: {t}");
        }
        for t in status_tasks(&site, "bestays", "frontend") {
            assert!(
                labelled.contains(t["node"].as_str().unwrap()),
                "{what}: {t}"
            );
        }
    };
    placed("first deploy");

    site.change("bestays", 2);
    let v2 = site.head_version();
    let report = under_fast_load(&site, &["deploy", "bestays", "--yes"]);
    assert_eq!(report.versions(), [v1.clone(), v2.clone()]);
    placed("redeploy");
    let report = under_fast_load(&site, &["rollback", "bestays", "--yes"]);
    assert_eq!(report.versions(), [v2.clone(), v1.clone()]);
    placed("rollback");
    assert_eq!(
        site.processes("realestate"),
        realestate,
        "realestate's tasks untouched"
    );

    // Secrets: granted per product, by name only.
    let m = swarm.manager();
    let services = m.docker(&["service", "ls", "--format", "{{.Name}}"]);
    let mut values: Vec<String> = Vec::new();
    for product in ["bestays", "realestate"] {
        let file = berth_render::secrets::SecretFile::load(
            &berth_render::secrets::product_secret_path(site.repo.path(), product),
        )
        .unwrap();
        values.extend(
            file.keys()
                .filter_map(|k| file.get(k))
                .filter(|v| v.len() >= 8)
                .map(str::to_string),
        );
    }
    assert!(!values.is_empty());
    for name in services
        .lines()
        .filter(|n| n.starts_with(&format!("{project}-")))
    {
        let product = if name.starts_with(&format!("{project}-bestays-")) {
            "bestays"
        } else {
            "realestate"
        };
        let spec = m.docker(&["service", "inspect", name]);
        let granted: Vec<String> = serde_json::from_str::<serde_json::Value>(&spec).unwrap()[0]["Spec"]["TaskTemplate"]["ContainerSpec"]["Secrets"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|s| s["SecretName"].as_str().unwrap().to_string())
            .collect();
        assert!(
            !granted.is_empty(),
            "{name} is granted its product's secrets"
        );
        for g in &granted {
            assert!(
                g.starts_with(&format!("{project}-{product}_")),
                "{name} is granted {g}, not its own product's"
            );
        }
        for v in &values {
            assert!(
                !spec.contains(v.as_str()),
                "a secret value is in `docker service inspect {name}`"
            );
        }
    }
    for e in std::fs::read_dir(site.repo.path().join(".berth/swarm"))
        .unwrap()
        .flatten()
    {
        let text = std::fs::read_to_string(e.path()).unwrap();
        for v in &values {
            assert!(
                !text.contains(v.as_str()),
                "a secret value is in {}",
                e.path().display()
            );
        }
    }
    let status = site.berth(&["status"]);
    status.assert_code(0);
    assert!(
        status
            .stdout
            .contains(&format!("on {}: running, health up", swarm.node(1).ip)),
        "{}",
        status.stdout
    );
    // The steps' wall times of every deploy, from the audit log (for the report).
    let audit = std::fs::read_to_string(site.repo.path().join(".berth/audit.jsonl")).unwrap();
    for line in audit.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        eprintln!(
            "audit {} {} {} ms",
            r["product"].as_str().unwrap_or(""),
            r["step"].as_str().unwrap_or(""),
            r["duration_ms"]
        );
    }
    eprintln!(
        "bestays across labelled nodes: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// A worker dies (every process of it killed -9, its link down) while bestays runs its
/// two server tasks on two of its three labelled nodes: no request through the host's
/// nginx fails during the failover (a dead address costs a short connect timeout, or
/// `[proxy] read_timeout` for a request already sent to it, then nginx retries the other
/// task), the task runs again on the spare node within 30 s, `berth serve` points the
/// front door at the rescheduled task's address, and the next deploy converges on the
/// nodes left.
#[test]
fn a_dead_workers_bestays_task_is_rescheduled_and_the_next_deploy_converges() {
    let swarm = Arc::new(Swarm::start(
        SwarmConfig::new(3)
            .dispatcher_heartbeat(Duration::from_secs(2))
            .label(0, "berth.bestays", "yes")
            .label(1, "berth.bestays", "yes")
            .label(2, "berth.bestays", "yes"),
    ));
    let site = crate::deploy::Site::on_swarm(swarm.clone(), 300);
    site.edit_manifest(
        "[deploy.swarm.products.bestays]\nreplicas",
        "[deploy.swarm.products.bestays]\nnode_label = \"berth.bestays=yes\"\nreplicas",
    );
    // Shorter than the load's 5 s client timeout: a request in flight on the node that
    // dies is retried on the other task before its client gives up.
    site.edit_manifest(
        "nginx_config = \"deploy/dev/nginx/nginx.conf\"",
        "nginx_config = \"deploy/dev/nginx/nginx.conf\"\nread_timeout = \"3s\"",
    );
    site.berth(&["render", "--env", "dev"]).assert_code(0);
    site.repo
        .commit_all("chore: bestays on three nodes (TASK-2-place-bestays)");
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let tasks = status_tasks(&site, "bestays", "server");
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    // A worker with a server task (at least one of the two runs on a worker).
    let victim = [1, 2]
        .into_iter()
        .map(|i| swarm.node(i))
        .find(|n| tasks.iter().any(|t| t["node"] == n.ip.to_string().as_str()))
        .expect("a server task on a worker");
    let victim_ip = victim.ip.to_string();
    let include = site
        .repo
        .path()
        .join("deploy/dev/nginx/upstreams/bestays.conf");
    let routed_ips = || -> BTreeSet<String> {
        std::fs::read_to_string(&include)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().strip_prefix("server "))
            .filter_map(|r| r.split(':').next().map(str::to_string))
            .collect()
    };
    assert!(routed_ips().contains(&victim_ip), "{}", include.display());
    let serve = crate::serve::Serve::start(site.repo.path(), &["--refresh", "1s"], &[]);
    let mut config = LoadConfig::new(site.http_port, "bestays.app").paths(&["/api/health", "/"]);
    // A request that meets the dead node waits nginx's connect timeout (1 s) or, when it
    // was sent before the link went, read_timeout (3 s), and is then answered by the
    // other task: slow, not lost. An error, a non-2xx or a slower answer fails.
    config.stall = Duration::from_secs(5);
    config.timeout = Duration::from_secs(10);
    let load = config.start();
    load.wait_for_answers(20);
    victim.kill();
    let rescheduled = wait_until(
        Duration::from_secs(30),
        "bestays.server running on two live nodes again",
        || {
            let t = status_tasks(&site, "bestays", "server");
            t.iter()
                .filter(|t| t["running"] == true && t["node"] != victim_ip.as_str())
                .count()
                == 2
        },
    );
    // berth serve re-routes to the rescheduled task: the dead node leaves the include,
    // every node of a running server task is in it.
    let followed = wait_until(
        Duration::from_secs(30),
        "berth serve to point the front door at the rescheduled task",
        || {
            let routed = routed_ips();
            !routed.contains(&victim_ip)
                && status_tasks(&site, "bestays", "server")
                    .iter()
                    .filter(|t| t["running"] == true)
                    .all(|t| routed.contains(t["node"].as_str().unwrap_or("")))
        },
    );
    load.wait_for_answers(100);
    let report = load.finish();
    drop(serve);
    eprintln!(
        "failover: rescheduled within {:.1} s of the kill, front door followed {:.1} s later; {} requests slower than 1 s; load: {}",
        rescheduled.as_secs_f64(),
        followed.as_secs_f64(),
        report
            .samples
            .iter()
            .filter(|s| s.latency > Duration::from_secs(1))
            .count(),
        report.summary()
    );
    report.assert_clean(100);
    site.change("bestays", 3);
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let nodes: BTreeSet<String> = status_tasks(&site, "bestays", "server")
        .iter()
        .map(|t| t["node"].as_str().unwrap().to_string())
        .collect();
    assert!(!nodes.contains(&victim_ip), "{nodes:?}");
    assert_eq!(nodes.len(), 2, "{nodes:?}");
}

/// One deploy of bestays on the shared swarm, then every view names each task's node
/// and health: `berth history` (the nodes its tasks ran on, healthy, at the switch:
/// the tag's `Nodes` trailer), `berth status` (each task's node, state, health),
/// `berth serve`'s API (each task's node, address, state and its own probe) and
/// /metrics (`berth_task_up{product,service,address,node}`, accepted by promtool).
#[test]
fn history_status_and_serve_show_each_tasks_node_and_health() {
    let started = Instant::now();
    let site = crate::deploy::Site::with(berth_runtime::Kind::Swarm, 300);
    let swarm = site.swarm.clone().unwrap();
    site.change("bestays", 1);
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let labelled: BTreeSet<String> = [1, 2]
        .iter()
        .map(|i| swarm.node(*i).ip.to_string())
        .collect();

    // history: where the new version's tasks ran at the switch.
    let h = crate::support::json(site.repo.path(), &["history", "bestays"], 0);
    let nodes = h["deploys"][0]["nodes"].as_array().unwrap().clone();
    let server: BTreeSet<String> = nodes
        .iter()
        .filter(|n| n["service"] == "server")
        .map(|n| n["node"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(server, labelled, "history's nodes: {h:#}");
    assert!(
        nodes
            .iter()
            .all(|n| labelled.contains(n["node"].as_str().unwrap())),
        "{h:#}"
    );
    let text = site.berth(&["history", "bestays"]);
    text.assert_code(0);
    let ip1 = swarm.node(1).ip.to_string();
    assert!(
        text.stdout.contains("healthy at the switch on: ")
            && text.stdout.contains(&format!("server@{ip1}")),
        "{}",
        text.stdout
    );

    // status: each task's node and health.
    let tasks = status_tasks(&site, "bestays", "server");
    let on: BTreeSet<String> = tasks
        .iter()
        .map(|t| t["node"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(on, labelled, "{tasks:?}");
    assert!(tasks.iter().all(|t| t["health"] == "up"), "{tasks:?}");

    // serve: the API's tasks with their own probes, and one series per task.
    let serve = crate::serve::Serve::start(site.repo.path(), &["--refresh", "500ms"], &[]);
    let p = serve.wait_product(
        "bestays",
        Duration::from_secs(30),
        "each server task probed up on its node",
        |v| {
            let Some(s) = v["services"]
                .as_array()
                .and_then(|s| s.iter().find(|s| s["name"] == "server"))
            else {
                return false;
            };
            let t = s["tasks"].as_array().cloned().unwrap_or_default();
            t.len() == 2 && t.iter().all(|t| t["health"] == "up")
        },
    );
    let server = p["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "server")
        .unwrap()
        .clone();
    let mut expected = Vec::new();
    for t in server["tasks"].as_array().unwrap() {
        let node = t["node"].as_str().unwrap();
        assert!(labelled.contains(node), "{t}");
        assert_eq!(t["state"], "running", "{t}");
        assert_eq!(t["running"], true, "{t}");
        let address = t["address"].as_str().unwrap();
        assert!(address.starts_with(&format!("{node}:")), "{t}");
        expected.push((
            format!(
                r#"berth_task_up{{product="bestays",service="server",address="{address}",node="{node}"}}"#
            ),
            1.0,
        ));
    }
    let page = serve.get("/").1;
    assert!(
        page.contains(&format!(r#"data-node="{ip1}" data-health="up""#)),
        "the dashboard shows the task on {ip1} up"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let metrics = loop {
        let (status, text) = serve.get("/metrics");
        assert_eq!(status, 200);
        if expected
            .iter()
            .all(|(s, v)| crate::serve::sample(&text, s) == Some(*v))
        {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no up series per task {expected:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    crate::serve::promtool_check(&metrics);
    eprintln!(
        "history, status and serve per task: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// A std-only program in bestays' server image for `berth run` (the image is FROM
/// scratch: no shell): `berth-tool report CODE` prints the product it runs as, how
/// many environment variables name an admin credential, and for each `*_FILE` variable
/// (a Docker secret) its name, the value's length and FNV-1a hash (never the value),
/// then exits with CODE.
const RUN_TOOL: &str = r#"
fn fnv(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for x in b { h ^= *x as u64; h = h.wrapping_mul(0x100000001b3); }
    h
}
fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.get(1).map(String::as_str) != Some("report") { eprintln!("usage: berth-tool report CODE"); std::process::exit(2) }
    println!("product {}", std::env::var("BERTH_PRODUCT").unwrap_or_default());
    let mut vars: Vec<(String, String)> = std::env::vars().collect();
    vars.sort();
    println!("admin {}", vars.iter().filter(|(k, _)| k.contains("ADMIN")).count());
    for (k, v) in &vars {
        if let Some(name) = k.strip_suffix("_FILE") {
            match std::fs::read(v) {
                Ok(b) => println!("secret {name} {} {:016x}", b.len(), fnv(&b)),
                Err(e) => println!("secret {name} unreadable: {e}"),
            }
        }
    }
    std::process::exit(a[2].parse().unwrap_or(1))
}
"#;

fn fnv(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for x in b {
        h ^= *x as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// The `docker` processes still reading `service`'s log (`docker service logs`).
fn log_readers(service: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains("service logs") && cmd.contains(service) {
            found.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
        }
    }
    found
}

/// `berth logs` and `berth run` of bestays on the swarm (two server tasks on its two
/// labelled workers, each printing its own tick sequence every 100 ms), one deploy:
/// - `logs --format json` shows both tasks' lines, each attributed to the task (and
///   node) `berth status` lists, each task's ticks consecutive (a line given to the
///   wrong task would break its sequence), valid against the committed schema; the
///   text form names task@node;
/// - `logs -f` streams new lines of both tasks, and a Ctrl-C (SIGINT to the group, as a
///   terminal sends it) ends berth and its `docker service logs`;
/// - `run bestays -- berth-tool report 7` runs as a Swarm job with bestays' env and
///   its own DATABASE_URL secret (not realestate's, no admin credential), berth shows
///   its output and exits 7, the audit has the command and code but no value, and no
///   one-off service is left; a command that succeeds exits 0.
#[test]
fn bestays_logs_attribute_lines_to_tasks_follow_and_run_passes_exit_codes_on_swarm() {
    let started = Instant::now();
    let site = crate::deploy::Site::with(berth_runtime::Kind::Swarm, 0);
    let project = site.compose.clone().unwrap();
    let src = site
        .swarm
        .as_ref()
        .unwrap()
        .scratch_dir("run-tool")
        .join("berth-tool.rs");
    std::fs::write(&src, RUN_TOOL).unwrap();
    let tool = static_binary(&src, "berth-tool");
    std::fs::copy(&tool, site.repo.path().join("apps/server/berth-tool")).unwrap();
    site.repo.write(
        "docker/server.Dockerfile",
        "FROM scratch\nCOPY demo-app berth-tool /\nCMD [\"/demo-app\"]\n",
    );
    site.edit_manifest(
        "PRODUCT_ID = \"bestays\",",
        "PRODUCT_ID = \"bestays\", DEMO_LOG_EVERY_MS = \"100\",",
    );
    site.berth(&["render", "--env", "dev"]).assert_code(0);
    site.repo
        .commit_all("chore: ticking servers with a run tool (TASK-54-ticks-bestays)");
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let version = site.head_version();
    let deployed = started.elapsed();
    let tasks: BTreeMap<String, String> = status_tasks(&site, "bestays", "server")
        .iter()
        .filter(|t| t["running"] == true)
        .map(|t| {
            (
                t["id"].as_str().unwrap().to_string(),
                t["node"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(tasks.len(), 2, "{tasks:?}");

    // Both tasks' lines, each with its task and node.
    let by_task = |docs: &[serde_json::Value]| -> BTreeMap<String, Vec<u64>> {
        let mut m: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for v in docs {
            if let Some((n, _)) = crate::logs::tick(v) {
                m.entry(v["task"].as_str().unwrap_or("?").to_string())
                    .or_default()
                    .push(n);
            }
        }
        m
    };
    let docs = wait_until_some(Duration::from_secs(30), "ticks of both tasks", || {
        let out = site.berth(&[
            "logs", "bestays", "server", "--tail", "20", "--format", "json",
        ]);
        out.assert_code(0);
        let docs: Vec<serde_json::Value> = out
            .stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        let ticks = by_task(&docs);
        (ticks.len() == 2 && ticks.values().all(|t| t.len() >= 5)).then_some(docs)
    });
    let slot = docs[0]["slot"].as_str().unwrap().to_string();
    for v in &docs {
        assert_eq!(v["product"], "bestays", "{v}");
        assert_eq!(v["service"], "server", "{v}");
        assert_eq!(v["slot"], slot.as_str(), "{v}");
        assert_eq!(v["version"], version.as_str(), "{v}");
        assert_eq!(v["timestamp_source"], "runtime", "{v}");
        let task = v["task"].as_str().unwrap_or_else(|| panic!("no task: {v}"));
        assert_eq!(
            v["node"].as_str(),
            tasks.get(task).map(String::as_str),
            "line attributed to a task `berth status` does not list, or to another node: {v}"
        );
    }
    for (task, ticks) in by_task(&docs) {
        for w in ticks.windows(2) {
            assert_eq!(
                w[1],
                w[0] + 1,
                "task {task}'s ticks skip or repeat: {ticks:?}"
            );
        }
    }
    crate::logs::validate_json_docs("logs.schema.json", &docs[..docs.len().min(6)]);
    let text = site.berth(&["logs", "bestays", "server", "--tail", "3"]);
    text.assert_code(0);
    for (task, node) in &tasks {
        let prefix = format!("bestays server {slot} {version} {task}@{node} | demo-app: tick ");
        assert!(
            text.stdout.contains(&prefix),
            "no `{prefix}`:\n{}",
            text.stdout
        );
    }

    // -f: new lines of both tasks, across a deploy; then a Ctrl-C ends berth and its log reader.
    let since = crate::logs::now_ms();
    let mut c = crate::support::berth(site.repo.path());
    c.args([
        "logs", "bestays", "server", "-f", "--tail", "1", "--format", "json",
    ]);
    std::os::unix::process::CommandExt::process_group(&mut c, 0);
    let mut f = crate::logs::Follower::spawn(c);
    for task in tasks.keys() {
        f.until(Duration::from_secs(30), &format!("new from {task}"), |v| {
            v["task"] == task.as_str() && crate::logs::tick(v).is_some_and(|(_, ms)| ms > since)
        });
    }
    // A deploy under the same `logs -f`: the old slot's lines, then the new slot's
    // (both of its tasks), never interleaved, each task's ticks consecutive (nothing
    // shown twice), the new tasks from their first tick, and no gap longer than the
    // drain (1 s) between the old slot's last line and the new slot's first.
    site.change("bestays", 61);
    let v2 = site.head_version();
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let deployed_ms = crate::logs::now_ms();
    let mut new_tasks = BTreeSet::new();
    while new_tasks.len() < 2 {
        f.until(
            Duration::from_secs(60),
            "ticks of both new tasks after the deploy",
            |v| {
                v["version"] == v2.as_str()
                    && crate::logs::tick(v).is_some_and(|(_, ms)| ms > deployed_ms)
            },
        );
        let last = f.seen.last().unwrap();
        new_tasks.insert(last["task"].as_str().unwrap_or("?").to_string());
    }
    let new_slot = f.seen.last().unwrap()["slot"].as_str().unwrap().to_string();
    assert_ne!(new_slot, slot);
    let runs: Vec<(String, String)> = f.seen.iter().fold(Vec::new(), |mut runs, v| {
        let key = (
            v["slot"].as_str().unwrap_or("?").to_string(),
            v["version"].as_str().unwrap_or("?").to_string(),
        );
        if runs.last() != Some(&key) {
            runs.push(key);
        }
        runs
    });
    assert_eq!(
        runs,
        [
            (slot.clone(), version.clone()),
            (new_slot.clone(), v2.clone())
        ],
        "old slot, then new slot, never interleaved"
    );
    let first_new = f
        .seen
        .iter()
        .position(|v| v["version"] == v2.as_str())
        .unwrap();
    let old_last = f.seen[..first_new]
        .iter()
        .filter_map(crate::logs::tick)
        .map(|(_, ms)| ms)
        .max()
        .unwrap();
    let new_first = f.seen[first_new..]
        .iter()
        .filter_map(crate::logs::tick)
        .map(|(_, ms)| ms)
        .min()
        .unwrap();
    assert!(
        new_first <= old_last + 1000,
        "gap of {} ms between the old slot's last line and the new slot's first",
        new_first as i128 - old_last as i128
    );
    for (task, ticks) in by_task(&f.seen[first_new..]) {
        assert_eq!(
            ticks[0], 0,
            "new task {task} is not shown from its first tick: {ticks:?}"
        );
    }
    let service = format!("{project}-bestays-{new_slot}_server");
    assert!(
        !log_readers(&service).is_empty(),
        "no docker service logs for {service}"
    );
    let status = Command::new("kill")
        .args(["-INT", "--", &format!("-{}", f.child.id())])
        .status()
        .unwrap();
    assert!(status.success());
    wait_until(
        Duration::from_secs(10),
        "berth logs -f ended by Ctrl-C",
        || matches!(f.child.try_wait(), Ok(Some(_))),
    );
    wait_until(
        Duration::from_secs(10),
        "no docker service logs left",
        || log_readers(&service).is_empty(),
    );
    let followed = by_task(&f.seen);
    assert_eq!(followed.len(), 4, "two tasks per slot: {followed:?}");
    for (task, ticks) in &followed {
        for w in ticks.windows(2) {
            assert_eq!(
                w[1],
                w[0] + 1,
                "followed: task {task}'s ticks skip or repeat: {ticks:?}"
            );
        }
    }
    drop(f);
    let logs_done = started.elapsed();

    // run: a Swarm job with bestays' own environment; its exit code is berth's.
    let admin = "postgresql://postgres:admin-pw-4f1e@127.0.0.1:1/postgres";
    let out = site.berth_env(
        &["run", "bestays", "--", "/berth-tool", "report", "7"],
        &[("BERTH_POSTGRES_ADMIN_URL", admin)],
    );
    out.assert_code(7);
    let secret = |product: &str| {
        let path = berth_render::secrets::product_secret_path(site.repo.path(), product);
        berth_render::secrets::SecretFile::load(&path)
            .unwrap()
            .get("DATABASE_URL")
            .unwrap()
            .to_string()
    };
    let (own, other) = (secret("bestays"), secret("realestate"));
    assert_ne!(own, other);
    let line = format!(
        "secret DATABASE_URL {} {:016x}",
        own.len(),
        fnv(own.as_bytes())
    );
    assert!(
        out.stdout.contains(&line),
        "not bestays' DATABASE_URL (want `{line}`; realestate's is {:016x}):\n{}",
        fnv(other.as_bytes()),
        out.snapshot()
    );
    assert!(out.stdout.contains("product bestays"), "{}", out.snapshot());
    assert!(out.stdout.contains("admin 0"), "{}", out.snapshot());
    let audit = std::fs::read_to_string(site.repo.path().join(".berth/audit.jsonl")).unwrap();
    let runs: Vec<serde_json::Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["step"] == "run")
        .collect();
    assert_eq!(runs.len(), 1, "{audit}");
    assert_eq!(runs[0]["exit_code"], 7);
    assert_eq!(
        runs[0]["command"],
        serde_json::json!(["/berth-tool", "report", "7"])
    );
    for value in [own.as_str(), other.as_str(), admin] {
        assert!(!audit.contains(value), "a value reached the audit log");
    }
    site.berth(&["run", "bestays", "--", "/berth-tool", "report", "0"])
        .assert_code(0);
    let left: Vec<String> = swarm_services(&site)
        .into_iter()
        .filter(|n| n.contains("-run-"))
        .collect();
    assert!(left.is_empty(), "one-off services left behind: {left:?}");
    eprintln!(
        "swarm logs and run: deploy {:.1} s, logs {:.1} s, run {:.1} s",
        deployed.as_secs_f64(),
        (logs_done - deployed).as_secs_f64(),
        (started.elapsed() - logs_done).as_secs_f64()
    );
}

/// The swarm's service names.
fn swarm_services(site: &crate::deploy::Site) -> Vec<String> {
    site.swarm
        .as_ref()
        .unwrap()
        .manager()
        .docker(&["service", "ls", "--format", "{{.Name}}"])
        .lines()
        .map(str::to_string)
        .collect()
}

/// Poll `f` (every 200 ms, up to `limit`) until it gives a value.
fn wait_until_some<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What a timed trace line of a `BERTH_LOG=berth::cmd=trace,berth::wait=trace`,
/// `BERTH_LOG_TIMES=1` log says.
enum Timed {
    /// An external command ended, after `ms`: `-> exited with code N in 12.3ms`, or a
    /// wait blocked in a command until it wrote a line (`docker events`: `-> stopped
    /// after its first line in ...`, or `after waiting` when none came).
    Command { ms: f64 },
    /// The drain inside a step: `-> drained in ...`.
    Drain { ms: f64 },
    /// A wait for Swarm ended `span_ms` after it began; Swarm had reached the awaited
    /// state `lag_ms` before (`-> Swarm reached it 40.1ms before berth read it, 900.2ms
    /// into the wait`).
    Wait { lag_ms: f64, span_ms: f64 },
}

/// The timed lines of a log: when each was written (seconds since berth started; a
/// line of a multi-line record has its record's time), the step it came in (the last
/// progress line before it, `[bestays] 6/10 health-check the green slot`:
/// `health-check the green slot`) and what it says.
fn timed_lines(log: &str) -> Vec<(f64, String, Timed)> {
    let mut at = 0.0;
    let mut step = String::new();
    let mut out = Vec::new();
    for line in log.lines() {
        if let Some((_, rest)) = line.split_once("] ")
            && line.starts_with('[')
            && let Some((n, name)) = rest.split_once(' ')
            && n.contains('/')
            && n.chars().all(|c| c.is_ascii_digit() || c == '/')
        {
            step = name.to_string();
        }
        if let Some(t) = line
            .trim_start()
            .split_once("s ")
            .and_then(|(t, _)| t.parse::<f64>().ok())
        {
            at = t;
        }
        let timed = if let Some((_, rest)) = line.split_once("-> exited with code ") {
            rest.split_once(" in ")
                .and_then(|(_, d)| duration_ms(d))
                .map(|ms| Timed::Command { ms })
        } else if let Some((_, d)) = line
            .split_once("-> stopped after its first line in ")
            .or_else(|| line.split_once("-> stopped after waiting in "))
        {
            duration_ms(d).map(|ms| Timed::Command { ms })
        } else if let Some((_, d)) = line.split_once("-> drained in ") {
            duration_ms(d).map(|ms| Timed::Drain { ms })
        } else if let Some((_, rest)) = line.split_once("-> Swarm reached it ") {
            rest.split_once(" before berth read it, ")
                .and_then(|(lag, span)| {
                    Some(Timed::Wait {
                        lag_ms: duration_ms(lag)?,
                        span_ms: duration_ms(span.trim_end_matches(" into the wait"))?,
                    })
                })
        } else {
            None
        };
        out.extend(timed.map(|t| (at, step.clone(), t)));
    }
    out
}

/// The external commands' time (ms) within the steps whose names start with `prefix`.
fn external_in_steps_ms(log: &str, prefix: &str) -> f64 {
    summed_ms(log, |step, t| match t {
        Timed::Command { ms } if step.starts_with(prefix) => Some(*ms),
        _ => None,
    })
}

/// `12.3ms`, `1.2s`, `900µs`, `15ns` in milliseconds.
fn duration_ms(t: &str) -> Option<f64> {
    let t = t.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (n, unit) = t.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "s" => n * 1000.0,
        "ms" => n,
        "µs" => n / 1000.0,
        "ns" => n / 1e6,
        _ => return None,
    })
}

/// The external commands' time (ms), summed: commands run in parallel count twice.
fn external_ms(log: &str) -> f64 {
    summed_ms(log, |_, t| match t {
        Timed::Command { ms } => Some(*ms),
        _ => None,
    })
}

/// The drain waits inside a step (an idle slot that served moments ago: its in-flight
/// requests get `[deploy] drain` before it is replaced), from the trace log.
fn drained_ms(log: &str) -> f64 {
    summed_ms(log, |_, t| match t {
        Timed::Drain { ms } => Some(*ms),
        _ => None,
    })
}

/// The durations `pick` takes from the log's timed lines (given each line's step),
/// summed (ms).
fn summed_ms(log: &str, pick: impl Fn(&str, &Timed) -> Option<f64>) -> f64 {
    timed_lines(log)
        .iter()
        .filter_map(|(_, step, t)| pick(step, t))
        .sum::<f64>()
        + 0.0 // an empty sum is -0.0, printed "-0"
}

/// The time berth slept in its waits for Swarm before Swarm had reached the awaited
/// state (ms): Swarm's work, not berth's. Each wait's part from its start to the moment
/// Swarm reached the state, less the external commands that ran in it (counted as
/// external already). What follows that moment, until berth read it, stays berth's.
fn swarm_work_ms(log: &str) -> f64 {
    let lines = timed_lines(log);
    let commands: Vec<(f64, f64)> = lines
        .iter()
        .filter_map(|(at, _, t)| match t {
            Timed::Command { ms } => Some((at - ms / 1000.0, *at)),
            _ => None,
        })
        .collect();
    lines
        .iter()
        .filter_map(|(at, _, t)| match t {
            Timed::Wait { lag_ms, span_ms } => Some((at - span_ms / 1000.0, at - lag_ms / 1000.0)),
            _ => None,
        })
        .map(|(from, to)| {
            // The commands' union within [from, to].
            let mut inside: Vec<(f64, f64)> = commands
                .iter()
                .map(|&(a, b)| (a.max(from), b.min(to)))
                .filter(|(a, b)| a < b)
                .collect();
            inside.sort_by(|x, y| x.0.total_cmp(&y.0));
            let (mut busy, mut end) = (0.0, from);
            for (a, b) in inside {
                if b > end {
                    busy += b - a.max(end);
                    end = b;
                }
            }
            ((to - from) - busy).max(0.0) * 1000.0
        })
        .sum::<f64>()
        + 0.0 // an empty sum is -0.0, printed "-0"
}

/// The `swarm` benchmark (bench/swarm.sh): the same product (bestays of the example)
/// on compose and on the three-node swarm, BERTH_BENCH_N (default 5) deploys and
/// rollbacks within the warm-standby window each, one `swarm bench` line per operation:
/// its wall time, and for a deploy the time of the docker/nginx/git commands berth ran
/// (BERTH_LOG=berth::cmd=trace), of its health checks and of the drain.
#[test]
#[ignore = "a benchmark: bench/swarm.sh runs it"]
fn swarm_bench() {
    let n: usize = std::env::var("BERTH_BENCH_N")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5);
    for kind in [berth_runtime::Kind::Compose, berth_runtime::Kind::Swarm] {
        let site = crate::deploy::Site::with(kind, 300);
        site.edit_manifest("standby = \"0\"", "standby = \"1h\"");
        site.berth(&["render", "--env", "dev"]).assert_code(0);
        site.change("bestays", 1);
        site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
        for i in 0..n {
            site.change("bestays", 2 + i as u32);
            let started = Instant::now();
            let out = site.berth_env(
                &["deploy", "bestays", "--yes", "--format", "json"],
                &[
                    ("BERTH_LOG", "berth::cmd=trace,berth::wait=trace"),
                    ("BERTH_LOG_TIMES", "1"),
                ],
            );
            let wall = started.elapsed().as_secs_f64() * 1000.0;
            // BERTH_BENCH_LOG=FILE: every deploy's log appended there (where the time went).
            if let Some(path) = std::env::var_os("BERTH_BENCH_LOG") {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .unwrap();
                writeln!(f, "=== {kind:?} deploy {i}\n{}", out.stderr).unwrap();
                if let Some(sw) = &site.swarm {
                    for svc in swarm_services(&site) {
                        let ids = sw
                            .manager()
                            .docker(&["service", "ps", "-q", "--no-trunc", &svc]);
                        let ids: Vec<&str> = ids.split_whitespace().collect();
                        let mut args = vec![
                            "inspect",
                            "--type",
                            "task",
                            "--format",
                            "{{.ID}} slot={{.Slot}} v={{index .Spec.ContainerSpec.Labels \"berth.version\"}} created={{.CreatedAt}} state={{.Status.State}}@{{.Status.Timestamp}} desired={{.DesiredState}} updated={{.UpdatedAt}}",
                        ];
                        args.extend(ids);
                        writeln!(f, "--- {svc}\n{}", sw.manager().docker(&args)).unwrap();
                    }
                }
            }
            out.assert_code(0);
            let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
            let steps: Vec<(String, f64)> = v["steps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| (s[0].as_str().unwrap().to_string(), s[1].as_f64().unwrap()))
                .collect();
            let sum = |prefix: &str| -> f64 {
                steps
                    .iter()
                    .filter(|(n, _)| n.starts_with(prefix))
                    .map(|(_, ms)| ms)
                    .sum::<f64>()
                    + 0.0 // an empty sum is -0.0, printed "-0"
            };
            println!(
                "swarm bench: {kind:?} deploy wall {wall:.0} ms, external {:.0} ms, health {:.0} ms, drain {:.0} ms, swarm {:.0} ms, steps {}",
                external_ms(&out.stderr),
                // The health check's waits: its commands count as external.
                sum("health-check") - external_in_steps_ms(&out.stderr, "health-check"),
                sum("drain") + drained_ms(&out.stderr),
                swarm_work_ms(&out.stderr),
                steps
                    .iter()
                    .map(|(n, ms)| format!("{n}={ms:.0}"))
                    .collect::<Vec<_>>()
                    .join("|")
            );
            let started = Instant::now();
            let out = site.berth(&["rollback", "bestays", "--yes"]);
            let wall = started.elapsed().as_secs_f64() * 1000.0;
            out.assert_code(0);
            let warm = out.stderr.contains("as a warm standby");
            println!("swarm bench: {kind:?} rollback wall {wall:.0} ms, warm {warm}");
        }
    }
}
