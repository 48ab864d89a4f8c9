//! A real Docker Swarm of several nodes on this one machine, and a real registry.
//!
//! Each node is a `dockerd` in its own network namespace (`ip netns`), joined to the
//! others by a bridge in the host's namespace and one veth pair per node, on a /24 of
//! 100.64.0.0/10 that this swarm owns (the host is `.1`, node `i` is `.2+i`). Every node
//! has its own `--data-root`, `--exec-root`, `--pidfile`, socket and cgroup parent, and
//! runs in a private mount namespace (the one `ip netns exec` makes) with its own `/run`
//! (so its containerd, shims and network sandboxes never meet another node's, nor the
//! machine's own Docker Engine) and the host's cgroup hierarchy mounted again (`ip netns
//! exec` remounts `/sys`). Node 0 is the manager; the others join as workers, all started
//! in parallel. A registry (Debian's `docker-registry`) listens on the bridge address;
//! every node trusts it as an insecure registry, so images built on the manager are
//! pushed there and pulled by the nodes, the path a user's images take.
//!
//! What this kernel lacks: IPVS, so no ingress routing mesh and no service VIPs. Services
//! use `endpoint_mode: dnsrr` and host-mode published ports, which the host reaches at
//! `node_ip:port` through the bridge. All nodes report the same hostname: place by label.
//!
//! Teardown on drop leaves nothing: every process of every node (dockerd, containerd, the
//! shims and the containers under them) is killed, the cgroups, namespaces, bridge, veths,
//! the host firewall rule and the directory are removed; [`leftovers`] lists whatever of a
//! swarm is still on the machine, and a swarm left by a test process that died is cleaned
//! up by the next [`Swarm::start`]. Needs root. A fixture that cannot start panics with
//! the reason: a swarm test never passes by skipping.

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// How long a node's dockerd, the swarm's joins and the registry may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// What swarm to build: how many nodes and which labels they carry.
#[derive(Clone, Debug)]
pub struct SwarmConfig {
    pub nodes: usize,
    /// (node index, key, value): `docker node update --label-add key=value`.
    pub labels: Vec<(usize, String, String)>,
    /// `docker swarm init --dispatcher-heartbeat` (Docker's default is 5 s; a node is
    /// declared down after a few missed heartbeats).
    pub dispatcher_heartbeat: Option<Duration>,
}

impl SwarmConfig {
    /// `nodes` nodes (node 0 is the manager), no labels.
    pub fn new(nodes: usize) -> Self {
        assert!(nodes >= 1, "a swarm needs at least one node");
        Self {
            nodes,
            labels: Vec::new(),
            dispatcher_heartbeat: None,
        }
    }

    pub fn dispatcher_heartbeat(mut self, every: Duration) -> Self {
        self.dispatcher_heartbeat = Some(every);
        self
    }

    pub fn label(mut self, node: usize, key: &str, value: &str) -> Self {
        assert!(
            node < self.nodes,
            "no node {node} in a swarm of {}",
            self.nodes
        );
        self.labels.push((node, key.into(), value.into()));
        self
    }

    /// Three nodes: the manager is the edge and runs realestate
    /// (`berth.role=edge`, `berth.product=realestate`); the two workers run bestays
    /// (`berth.product=bestays`).
    pub fn three_nodes() -> Self {
        Self::new(3)
            .label(0, "berth.role", "edge")
            .label(0, "berth.product", "realestate")
            .label(1, "berth.product", "bestays")
            .label(2, "berth.product", "bestays")
    }
}

/// One node: a dockerd in its own network namespace.
pub struct Node {
    pub index: usize,
    /// The network namespace (`ip netns exec <netns> ...`).
    pub netns: String,
    /// Its address on the swarm's bridge, reachable from the host.
    pub ip: Ipv4Addr,
    /// The swarm's node id.
    pub id: String,
    dir: PathBuf,
    veth: String,
}

impl Node {
    /// `unix://...` of this node's dockerd.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }

    /// A `docker` command talking to this node (own client config, no context).
    pub fn docker_cmd(&self) -> Command {
        let mut c = Command::new("docker");
        c.env("DOCKER_HOST", self.docker_host())
            .env("DOCKER_CONFIG", self.dir.join("client"))
            .env("DOCKER_BUILDKIT", "0")
            .env("DOCKER_CLI_HINTS", "false")
            .env_remove("DOCKER_CONTEXT")
            .stdin(Stdio::null());
        c
    }

    /// Run docker on this node; its stdout, or the error with docker's output.
    pub fn try_docker(&self, args: &[&str]) -> Result<String, String> {
        let out = self
            .docker_cmd()
            .args(args)
            .output()
            .map_err(|e| format!("docker could not run: {e}"))?;
        output_or_error(&format!("docker {args:?} on node {}", self.index), out)
    }

    /// Run docker on this node; panics with docker's output if it fails.
    pub fn docker(&self, args: &[&str]) -> String {
        self.try_docker(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The pid of this node's dockerd (from its pidfile).
    pub fn dockerd_pid(&self) -> u32 {
        std::fs::read_to_string(self.dir.join("dockerd.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| panic!("node {} has no dockerd pid file", self.index))
    }

    /// kill -9 this node's dockerd alone. Its containerd, shims and containers may live
    /// on and keep answering: to take the node away, use [`Node::kill`].
    pub fn kill_dockerd(&self) {
        let pid = self.dockerd_pid();
        kill9(&[pid]);
        wait_until(
            Duration::from_secs(10),
            "dockerd to exit after kill -9",
            || !Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid),
        );
    }

    /// The node dies: its link goes down and every process of it (dockerd first, with
    /// kill -9, then containerd, the shims and the containers) is killed.
    pub fn kill(&self) {
        run(
            Command::new("ip").args(["link", "set", &self.veth, "down"]),
            "cut a node's link",
        );
        self.kill_dockerd();
        kill_netns_processes(&self.netns);
    }

    /// Processes running in this node's network namespace (0 once it is dead).
    pub fn process_count(&self) -> usize {
        netns_pids(&self.netns).len()
    }

    /// This node's dockerd log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }
}

/// The registry every node pulls from.
struct Registry {
    child: Child,
    addr: String,
}

/// A running swarm; torn down on drop.
pub struct Swarm {
    /// Unique on this machine (pid and a counter); every name of the swarm contains it.
    pub id: String,
    pub nodes: Vec<Node>,
    /// The bridge's address: the host as the nodes see it.
    pub host_ip: Ipv4Addr,
    /// How long [`Swarm::start`] took (nodes, swarm, labels and registry).
    pub start_time: Duration,
    registry: Option<Registry>,
    dir: PathBuf,
}

impl Swarm {
    /// Build a swarm as `config` says. Panics with the reason when something cannot start
    /// (root, `ip`, `dockerd`, `docker-registry` are needed; ./scripts/test.sh installs them).
    pub fn start(config: SwarmConfig) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let started = Instant::now();
        preflight();
        clean_stale();
        let id = format!(
            "{:x}g{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let dir = swarm_dir(&id);
        std::fs::create_dir_all(&dir).expect("create the swarm's directory");
        let mut swarm = Self {
            id: id.clone(),
            nodes: Vec::new(),
            host_ip: Ipv4Addr::UNSPECIFIED,
            start_time: Duration::ZERO,
            registry: None,
            dir: dir.clone(),
        };
        // From here on, a panic drops `swarm`, which tears down whatever was made.
        let subnet = pick_subnet();
        swarm.host_ip = Ipv4Addr::new(100, 64, subnet, 1);
        let bridge = bridge_name(&id);
        run(
            Command::new("ip").args(["link", "add", &bridge, "type", "bridge"]),
            "create the swarm's bridge",
        );
        run(
            Command::new("ip").args([
                "addr",
                "add",
                &format!("{}/24", swarm.host_ip),
                "dev",
                &bridge,
            ]),
            "address the swarm's bridge",
        );
        run(
            Command::new("ip").args(["link", "set", &bridge, "up"]),
            "bring the swarm's bridge up",
        );
        // With br_netfilter, frames between two ports of a bridge go through the host's
        // FORWARD chain, whose policy Docker sets to DROP: let the nodes talk.
        if bridge_nf_call_iptables() {
            run(
                Command::new("iptables").args(forward_rule("-I", &bridge)),
                "allow traffic between the swarm's nodes",
            );
        }
        let registry_port = crate::free_port();
        let registry_addr = format!("{}:{registry_port}", swarm.host_ip);
        let cgroup_mounts = cgroup_mounts();

        for index in 0..config.nodes {
            let netns = format!("{}{id}-n{index}", NETNS_PREFIX);
            let veth = format!("{bridge}v{index}");
            let ip = Ipv4Addr::new(100, 64, subnet, 2 + index as u8);
            let node_dir = dir.join(format!("n{index}"));
            std::fs::create_dir_all(node_dir.join("client")).expect("create a node's directory");
            run(
                Command::new("ip").args(["netns", "add", &netns]),
                "create a node's network namespace",
            );
            // Recorded before anything else of the node exists, so teardown finds it.
            swarm.nodes.push(Node {
                index,
                netns: netns.clone(),
                ip,
                id: String::new(),
                dir: node_dir.clone(),
                veth: veth.clone(),
            });
            run(
                Command::new("ip").args([
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns,
                ]),
                "create a node's veth pair",
            );
            run(
                Command::new("ip").args(["link", "set", &veth, "master", &bridge, "up"]),
                "attach a node's veth to the bridge",
            );
            for args in [
                vec!["link", "set", "lo", "up"],
                vec!["addr", "add", &format!("{ip}/24"), "dev", "eth0"],
                vec!["link", "set", "eth0", "up"],
            ] {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &netns, "ip"]).args(&args);
                run(&mut c, "configure a node's network");
            }
            let script = node_script(
                &cgroup_mounts,
                &node_dir,
                &cgroup_parent(&id, index),
                &registry_addr,
            );
            let log =
                std::fs::File::create(node_dir.join("dockerd.log")).expect("create dockerd.log");
            // The dockerd is not a child kept by this process: it is found by its pidfile
            // and its namespace, so a node can be killed like a machine would die.
            let mut child = Command::new("ip")
                .args(["netns", "exec", &netns, "sh", "-c", &script])
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup log"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("could not start dockerd in {netns}: {e}"));
            // Reap it in the background so it never lingers as a zombie.
            std::thread::spawn(move || {
                let _ = child.wait();
            });
        }

        let registry = start_registry(&dir, &registry_addr);
        swarm.registry = Some(registry);

        for node in &swarm.nodes {
            let sock = node.dir.join("docker.sock");
            let deadline = Instant::now() + START_TIMEOUT;
            while !docker_ping(&sock) {
                if Instant::now() > deadline {
                    panic!(
                        "dockerd of node {} did not answer on {} within {START_TIMEOUT:?}; its log:\n{}",
                        node.index,
                        sock.display(),
                        tail(&node.log(), 40)
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }

        let manager = &swarm.nodes[0];
        let (advertise, listen) = (manager.ip.to_string(), format!("{}:2377", manager.ip));
        let mut init = vec![
            "swarm",
            "init",
            "--advertise-addr",
            &advertise,
            "--listen-addr",
            &listen,
        ];
        let heartbeat = config
            .dispatcher_heartbeat
            .map(|d| format!("{}ms", d.as_millis()));
        if let Some(h) = &heartbeat {
            init.extend(["--dispatcher-heartbeat", h]);
        }
        manager.docker(&init);
        let token = manager.docker(&["swarm", "join-token", "-q", "worker"]);
        let token = token.trim();
        let join_to = format!("{}:2377", manager.ip);
        std::thread::scope(|s| {
            for node in &swarm.nodes[1..] {
                let (token, join_to) = (token, &join_to);
                s.spawn(move || {
                    node.docker(&[
                        "swarm",
                        "join",
                        "--token",
                        token,
                        "--advertise-addr",
                        &node.ip.to_string(),
                        "--listen-addr",
                        &format!("{}:2377", node.ip),
                        join_to,
                    ]);
                });
            }
        });
        for node in &mut swarm.nodes {
            node.id = node
                .docker(&["info", "--format", "{{.Swarm.NodeID}}"])
                .trim()
                .to_string();
            assert!(
                !node.id.is_empty(),
                "node {} has no swarm node id",
                node.index
            );
        }
        let manager = &swarm.nodes[0];
        wait_until(START_TIMEOUT, "every node Ready in the swarm", || {
            manager
                .try_docker(&["node", "ls", "--format", "{{.Status}}"])
                .is_ok_and(|s| {
                    s.lines().filter(|l| l.trim() == "Ready").count() == swarm.nodes.len()
                })
        });
        for (index, key, value) in &config.labels {
            let id = swarm.nodes[*index].id.clone();
            swarm.manager().docker(&[
                "node",
                "update",
                "--label-add",
                &format!("{key}={value}"),
                &id,
            ]);
        }
        swarm.start_time = started.elapsed();
        swarm
    }

    /// One three-node swarm ([`SwarmConfig::three_nodes`]) shared by the tests of this
    /// process that run at the same time; torn down when the last of them drops it.
    /// Tests that change the swarm's nodes (kill one) start their own with [`Swarm::start`].
    pub fn shared() -> Arc<Swarm> {
        static SHARED: OnceLock<Mutex<Weak<Swarm>>> = OnceLock::new();
        let slot = SHARED.get_or_init(|| Mutex::new(Weak::new()));
        let mut weak = slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(swarm) = weak.upgrade() {
            return swarm;
        }
        let swarm = Arc::new(Swarm::start(SwarmConfig::three_nodes()));
        *weak = Arc::downgrade(&swarm);
        swarm
    }

    pub fn manager(&self) -> &Node {
        &self.nodes[0]
    }

    pub fn node(&self, index: usize) -> &Node {
        &self.nodes[index]
    }

    /// The node with this swarm node id.
    pub fn node_by_id(&self, id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// `host:port` of the registry, as every node (and the host) reaches it.
    pub fn registry(&self) -> &str {
        &self.registry.as_ref().expect("the registry runs").addr
    }

    /// `docker build` `context` on the manager as `<registry>/<name_tag>` and push it to
    /// the registry; returns the image reference the nodes pull.
    pub fn build_and_push(&self, name_tag: &str, context: &Path) -> String {
        let image = format!("{}/{name_tag}", self.registry());
        let context = context.to_str().expect("utf-8 build context");
        self.manager()
            .docker(&["build", "-q", "-t", &image, context]);
        self.manager().docker(&["push", "-q", &image]);
        image
    }

    /// A directory of this swarm's, removed with it (for compose files, build contexts).
    pub fn scratch_dir(&self, name: &str) -> PathBuf {
        let d = self.dir.join("scratch").join(name);
        std::fs::create_dir_all(&d).expect("create a scratch directory");
        d
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        if let Some(mut registry) = self.registry.take() {
            let _ = registry.child.kill();
            let _ = registry.child.wait();
        }
        teardown(&self.id);
    }
}

/// What of swarm `id` is still on this machine: processes, namespaces, links, mounts,
/// cgroups, firewall rules, its directory. Empty after the swarm was dropped.
pub fn leftovers(id: &str) -> Vec<String> {
    let mut found = Vec::new();
    let dir = swarm_dir(id);
    let needle = dir.to_string_lossy().to_string();
    for pid in all_pids() {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&needle) && !is_zombie(pid) {
            found.push(format!("process {pid}: {cmdline}"));
        }
    }
    for ns in swarm_netns(id) {
        found.push(format!("network namespace {ns}"));
    }
    for link in links_with_prefix(&bridge_name(id)) {
        found.push(format!("link {link}"));
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let name = format!("berth-swarm-{id}");
    for line in mountinfo.lines() {
        if line.contains(&name) {
            found.push(format!("mount {line}"));
        }
    }
    for cg in swarm_cgroups(id) {
        found.push(format!("cgroup {}", cg.display()));
    }
    let rules = Command::new("iptables")
        .args(["-w", "-S", "FORWARD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for rule in rules.lines().filter(|l| l.contains(&bridge_name(id))) {
        found.push(format!("iptables rule {rule}"));
    }
    if dir.exists() {
        found.push(format!("directory {}", dir.display()));
    }
    found
}

const NETNS_PREFIX: &str = "berth-swarm-";

fn swarm_dir(id: &str) -> PathBuf {
    std::env::temp_dir().join(format!("berth-swarm-{id}"))
}

/// At most 15 bytes with the veth suffix: `bs` + pid in hex (<= 6) + `g` + counter + `v<i>`.
fn bridge_name(id: &str) -> String {
    format!("bs{id}")
}

fn cgroup_parent(id: &str, index: usize) -> String {
    format!("berth-swarm-{id}-n{index}")
}

fn preflight() {
    // Only root can create network namespaces and run dockerd.
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .unwrap_or_default();
    assert_eq!(
        uid, "0",
        "the swarm tests build network namespaces and run dockerd: they must run as root"
    );
    for (program, package) in [
        ("ip", "iproute2"),
        ("dockerd", "docker.io"),
        ("docker", "docker.io"),
        ("iptables", "iptables"),
        ("docker-registry", "docker-registry"),
    ] {
        crate::require_program(
            program,
            &["/usr/sbin", "/sbin"],
            &format!("apt-get install {package}"),
        );
    }
}

/// The host's cgroup mounts (mount point, type, source, options), in mount order, for the
/// node to mount again after `ip netns exec` replaced `/sys`.
fn cgroup_mounts() -> Vec<(String, String, String, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    let mut out = Vec::new();
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let mount_point = fields[4];
        if mount_point != "/sys/fs/cgroup" && !mount_point.starts_with("/sys/fs/cgroup/") {
            continue;
        }
        let (fstype, source, opts) = (fields[dash + 1], fields[dash + 2], fields[dash + 3]);
        out.push((
            mount_point.into(),
            fstype.into(),
            source.into(),
            opts.into(),
        ));
    }
    assert!(
        !out.is_empty(),
        "no cgroup file system is mounted under /sys/fs/cgroup: dockerd cannot run containers"
    );
    out
}

fn node_script(
    cgroups: &[(String, String, String, String)],
    dir: &Path,
    cgroup_parent: &str,
    registry: &str,
) -> String {
    let mut s = String::from("set -e\nmount -t tmpfs -o mode=755 berth-swarm-run /run\n");
    for (mount_point, fstype, source, opts) in cgroups {
        s.push_str(&format!(
            "mkdir -p {mount_point}\nmount -t {fstype} -o {opts} {source} {mount_point}\n"
        ));
    }
    let d = dir.display();
    s.push_str(&format!(
        "exec dockerd --default-ulimit nofile=1024:1024 --default-ulimit nproc=1024:1024 \
         --data-root {d}/data --exec-root /run/docker --pidfile {d}/dockerd.pid \
         -H unix://{d}/docker.sock --cgroup-parent /{cgroup_parent} \
         --insecure-registry {registry} --config-file {d}/daemon.json\n"
    ));
    std::fs::write(dir.join("daemon.json"), "{}\n").expect("write daemon.json");
    s
}

fn start_registry(dir: &Path, addr: &str) -> Registry {
    let root = dir.join("registry");
    std::fs::create_dir_all(&root).expect("create the registry's directory");
    let config = dir.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            root.display()
        ),
    )
    .expect("write the registry's config");
    let log = std::fs::File::create(dir.join("registry.log")).expect("create registry.log");
    let mut child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup log"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("could not start docker-registry: {e}"));
    std::fs::write(dir.join("registry.pid"), child.id().to_string()).expect("write registry.pid");
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if http_get_ok(addr, "/v2/") {
            break;
        }
        let exited = child.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "docker-registry did not answer on {addr} ({}); its log:\n{}",
                exited.map_or("timed out".into(), |s| format!("exited: {s}")),
                std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Registry {
        child,
        addr: addr.to_string(),
    }
}

/// Tear down everything of swarm `id` there is, found by name (so it also cleans up
/// after a test process that died).
fn teardown(id: &str) {
    let dir = swarm_dir(id);
    if let Some(pid) = std::fs::read_to_string(dir.join("registry.pid"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
    {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("docker-registry") {
            kill9(&[pid]);
        }
    }
    let namespaces = swarm_netns(id);
    let cgroups = swarm_cgroups(id);
    // Every process of every node and everything below them (containers run in their own
    // namespaces under the shims), plus whatever is in the nodes' cgroups, all at once.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut pids: BTreeSet<u32> = BTreeSet::new();
        for ns in &namespaces {
            pids.extend(netns_pids(ns));
        }
        pids.extend(descendants(&pids));
        for cg in &cgroups {
            pids.extend(cgroup_procs(cg));
        }
        pids.retain(|p| !is_zombie(*p));
        if pids.is_empty() {
            break;
        }
        kill9(&pids.iter().copied().collect::<Vec<_>>());
        if Instant::now() > deadline {
            eprintln!("swarm {id}: processes still alive after kill -9: {pids:?}");
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for ns in &namespaces {
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
    }
    let bridge = bridge_name(id);
    for link in links_with_prefix(&bridge) {
        if link != bridge {
            let _ = Command::new("ip").args(["link", "del", &link]).output();
        }
    }
    let _ = Command::new("ip").args(["link", "del", &bridge]).output();
    while Command::new("iptables")
        .args(forward_rule("-D", &bridge))
        .output()
        .is_ok_and(|o| o.status.success())
    {}
    // Cgroups: deepest first; a cgroup whose last task is still exiting is busy for a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    for cg in &cgroups {
        let mut dirs = Vec::new();
        collect_dirs(cg, &mut dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            while std::fs::remove_dir(&d).is_err() && d.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Swarms left behind by test processes that no longer exist.
fn clean_stale() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    let mut ids: BTreeSet<String> = entries
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("berth-swarm-"))
                .map(str::to_string)
        })
        .collect();
    ids.extend(list_netns().iter().filter_map(|ns| {
        ns.strip_prefix(NETNS_PREFIX)
            .and_then(|r| r.rsplit_once("-n"))
            .map(|(id, _)| id.to_string())
    }));
    for id in ids {
        let Some(pid) = id
            .split_once('g')
            .and_then(|(pid, _)| u32::from_str_radix(pid, 16).ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            teardown(&id);
        }
    }
}

/// A /24 of 100.64.0.0/10 that no address of this host is in.
fn pick_subnet() -> u8 {
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .expect("run ip addr");
    let addrs = String::from_utf8_lossy(&out.stdout).into_owned();
    let start = (std::process::id() as usize * 7 + crate::random_u32() as usize) % 250;
    (0..250)
        .map(|i| ((start + i) % 250 + 2) as u8)
        .find(|x| !addrs.contains(&format!(" 100.64.{x}.")))
        .expect("no free /24 in 100.64.0.0/16 for a test swarm")
}

fn forward_rule(op: &str, bridge: &str) -> Vec<String> {
    [
        "-w", op, "FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn bridge_nf_call_iptables() -> bool {
    std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables")
        .is_ok_and(|s| s.trim() == "1")
}

fn list_netns() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn swarm_netns(id: &str) -> Vec<String> {
    let prefix = format!("{NETNS_PREFIX}{id}-n");
    list_netns()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

fn links_with_prefix(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// The cgroup directories of swarm `id`'s nodes, in every hierarchy of the host.
fn swarm_cgroups(id: &str) -> Vec<PathBuf> {
    let prefix = format!("berth-swarm-{id}-n");
    let mut out = Vec::new();
    let mut roots: Vec<PathBuf> = cgroup_mounts_quiet()
        .into_iter()
        .map(PathBuf::from)
        .collect();
    roots.dedup();
    for root in roots {
        if let Ok(entries) = std::fs::read_dir(&root) {
            for e in entries.flatten() {
                if e.file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(&prefix))
                {
                    out.push(e.path());
                }
            }
        }
    }
    out
}

fn cgroup_mounts_quiet() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            let fstype = fields.get(dash + 1)?;
            (fstype.starts_with("cgroup")).then(|| fields[4].to_string())
        })
        .collect()
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    if !dir.is_dir() {
        return;
    }
    out.push(dir.to_path_buf());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

fn cgroup_procs(dir: &Path) -> Vec<u32> {
    let mut dirs = Vec::new();
    collect_dirs(dir, &mut dirs);
    dirs.iter()
        .flat_map(|d| {
            std::fs::read_to_string(d.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

fn netns_pids(netns: &str) -> Vec<u32> {
    Command::new("ip")
        .args(["netns", "pids", netns])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// (state, parent pid) of a process, from /proc/<pid>/stat.
fn stat(pid: u32) -> Option<(char, u32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

fn is_zombie(pid: u32) -> bool {
    matches!(stat(pid), Some(('Z' | 'X', _)))
}

/// Every process below `roots`.
fn descendants(roots: &BTreeSet<u32>) -> BTreeSet<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for pid in all_pids() {
        if let Some((_, ppid)) = stat(pid) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut out = BTreeSet::new();
    let mut stack: Vec<u32> = roots.iter().copied().collect();
    while let Some(p) = stack.pop() {
        for c in children.get(&p).into_iter().flatten() {
            if out.insert(*c) {
                stack.push(*c);
            }
        }
    }
    out
}

fn kill_netns_processes(netns: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut pids: BTreeSet<u32> = netns_pids(netns).into_iter().collect();
        pids.extend(descendants(&pids));
        pids.retain(|p| !is_zombie(*p) && Path::new(&format!("/proc/{p}")).exists());
        if pids.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "processes of {netns} still alive after kill -9: {pids:?}"
        );
        kill9(&pids.iter().copied().collect::<Vec<_>>());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill9(pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg("-9")
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status();
}

/// GET /_ping on a dockerd socket answers OK.
fn docker_ping(sock: &Path) -> bool {
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(sock) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.") && buf.contains(" 200 ") && buf.ends_with("OK")
}

/// A plain HTTP GET answered 2xx (for the registry's `/v2/`).
fn http_get_ok(addr: &str, path: &str) -> bool {
    let Some(sockaddr) = std::net::ToSocketAddrs::to_socket_addrs(addr)
        .ok()
        .and_then(|mut a| a.next())
    else {
        return false;
    };
    crate::http::Request::to("GET", sockaddr, path)
        .host(addr)
        .timeout(Duration::from_secs(2))
        .send()
        .is_ok_and(|r| (200..300).contains(&r.status))
}

fn output_or_error(what: &str, out: Output) -> Result<String, String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("could not {what}: {e}"));
    output_or_error(&format!("{what} ({cmd:?})"), out).unwrap_or_else(|e| panic!("{e}"))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Poll `cond` every 50 ms until it holds; panics after `timeout` naming `what`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A Rust source file compiled statically (`+crt-static`, no dependencies: rustc alone),
/// once per process, for `FROM scratch` images.
pub fn static_binary(source: &Path, name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<(PathBuf, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, out)) = built.iter().find(|(s, _)| s == source) {
        return out.clone();
    }
    let dir = std::env::temp_dir().join(format!("berth-static-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create a directory for static binaries");
    let out = dir.join(format!("{}-{name}", built.len()));
    run(
        Command::new("rustc")
            .args([
                "--edition",
                "2024",
                "-O",
                "-C",
                "target-feature=+crt-static",
                "--target",
                "x86_64-unknown-linux-gnu",
            ])
            .arg(source)
            .arg("-o")
            .arg(&out),
        &format!("build {} statically", source.display()),
    );
    built.push((source.to_path_buf(), out.clone()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A three-node swarm starts, its nodes carry their labels, an image pushed to the
    /// registry runs on every node, a killed node takes all its processes with it, and
    /// after drop nothing of the swarm is left on the machine.
    #[test]
    fn three_nodes_run_an_image_from_the_registry_and_leave_nothing_behind() {
        let t0 = Instant::now();
        let swarm = Swarm::start(SwarmConfig::three_nodes());
        eprintln!(
            "three-node swarm and registry started in {:?}",
            swarm.start_time
        );
        let id = swarm.id.clone();
        let manager = swarm.manager();
        let ls = manager.docker(&[
            "node",
            "ls",
            "--format",
            "{{.ID}} {{.Status}} {{.ManagerStatus}}",
        ]);
        assert_eq!(ls.lines().count(), 3, "{ls}");
        assert!(ls.lines().all(|l| l.contains(" Ready")), "{ls}");
        for (index, want) in [(0, "realestate"), (1, "bestays"), (2, "bestays")] {
            let label = manager.docker(&[
                "node",
                "inspect",
                "--format",
                "{{index .Spec.Labels \"berth.product\"}}",
                &swarm.node(index).id,
            ]);
            assert_eq!(label.trim(), want, "label of node {index}");
        }

        let bin = static_binary(
            &crate::workspace_root().join("examples/demo-app/src/main.rs"),
            "demo-app",
        );
        let ctx = swarm.scratch_dir("demo");
        std::fs::copy(&bin, ctx.join("demo-app")).unwrap();
        std::fs::write(
            ctx.join("Dockerfile"),
            "FROM scratch\nCOPY demo-app /demo-app\nCMD [\"/demo-app\"]\n",
        )
        .unwrap();
        let t = Instant::now();
        let image = swarm.build_and_push("testkit/demo:1", &ctx);
        eprintln!("build and push took {:?}", t.elapsed());
        manager.docker(&[
            "service",
            "create",
            "-d",
            "--name",
            "everywhere",
            "--mode",
            "global",
            "--endpoint-mode",
            "dnsrr",
            "--publish",
            "mode=host,target=8080,published=18080",
            "--env",
            "BERTH_VERSION=v1",
            &image,
        ]);
        // Every node pulled the image from the registry and answers on its own address.
        for node in &swarm.nodes {
            let addr = format!("{}:18080", node.ip);
            wait_until(
                Duration::from_secs(60),
                &format!("demo-app on {addr}"),
                || http_get_ok(&addr, "/api/health"),
            );
            let images = node.docker(&["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]);
            assert!(
                images.contains(&format!("{}/testkit/demo", swarm.registry())),
                "node {} did not pull from the registry: {images}",
                node.index
            );
        }

        eprintln!("[{:?}] every node answers", t0.elapsed());
        let worker = swarm.node(2);
        assert!(
            worker.process_count() >= 3,
            "dockerd, containerd and a shim"
        );
        worker.kill();
        let killed = Instant::now();
        assert_eq!(
            worker.process_count(),
            0,
            "a killed node has no process left"
        );
        assert!(
            !http_get_ok(&format!("{}:18080", worker.ip), "/api/health"),
            "the killed node's task still answers"
        );
        let worker_id = worker.id.clone();
        let took = wait_until(
            Duration::from_secs(60),
            "the manager to see the node Down",
            || {
                manager
                    .try_docker(&[
                        "node",
                        "inspect",
                        "--format",
                        "{{.Status.State}}",
                        &worker_id,
                    ])
                    .is_ok_and(|s| s.trim() == "down")
            },
        );
        eprintln!(
            "the manager saw the killed node down after {:?} (polled for {took:?})",
            killed.elapsed()
        );

        // The check below sees a live swarm's every kind of trace (so it can fail).
        let live = leftovers(&id).join("\n");
        for kind in [
            "process",
            "network namespace",
            "link",
            "mount",
            "cgroup",
            "directory",
        ] {
            assert!(
                live.contains(kind),
                "leftovers() misses the live swarm's {kind}s:\n{live}"
            );
        }
        if bridge_nf_call_iptables() {
            assert!(live.contains("iptables rule"), "{live}");
        }
        let t = Instant::now();
        drop(swarm);
        eprintln!("teardown took {:?}", t.elapsed());
        let left = leftovers(&id);
        assert!(
            left.is_empty(),
            "left behind by swarm {id}:\n{}",
            left.join("\n")
        );
    }
}
