//! The swarm runtime: Docker Swarm through a manager node (`[deploy.swarm] manager`,
//! or berth's own `DOCKER_HOST` / docker context). Design and measured facts:
//! docs/swarm.md. In short:
//! - a slot is a stack, `<project>-<product>-<slot>`, whose services run on the nodes
//!   carrying the product's label, on the product's own overlay network;
//! - each task publishes the slot's port in host mode (no ingress mesh, no VIP:
//!   `endpoint_mode: dnsrr`), so a slot's addresses are `node-address:slot-port`, one
//!   per running task, and the host's nginx is the front door;
//! - images are built on the manager and pushed to `[deploy.swarm] registry`, tagged by
//!   version: a version is retained while its tag is in the registry;
//! - a product's secrets are Docker secrets named by their content, granted to its
//!   stacks only and read from `/run/secrets/<KEY>` (`<KEY>_FILE` names the file);
//! - `start` returns once every task of the slot runs the version (read from the
//!   manager: UpdateStatus and the tasks, never the CLI's "converged").
//!
//! Everything is read back from the manager; berth keeps no cache beyond a second.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use berth_cmd::Cmd;
use berth_manifest::{Manifest, SwarmSettings};
use serde_json::Value;

use crate::{
    Address, Instance, LogFrom, LogLine, LogStream, Runtime, RuntimeError, Slot, slot_port,
};

/// How often the manager is asked while waiting, at most (a wait starts at
/// [`FIRST_POLL`] and grows by half each read: most waits end within a second or two).
/// A read is one or two `docker` calls of ~15 ms on the manager; berth notices a state
/// Swarm reached 50 ms later on average.
const POLL: Duration = Duration::from_millis(100);
const FIRST_POLL: Duration = Duration::from_millis(40);

/// How long node addresses read from the manager are used without asking again (a task
/// on a node not among them asks at once).
const NODE_TTL: Duration = Duration::from_secs(10);

/// The pause between two reads of a wait: [`FIRST_POLL`], then half as long again each
/// time, up to [`POLL`].
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Self(FIRST_POLL)
    }
    fn sleep(&mut self) {
        std::thread::sleep(self.0);
        self.0 = (self.0 * 3 / 2).min(POLL);
    }
}

/// A Swarm service of a slot as the manager has it: its version label and its
/// `UpdateStatus` (state, started at; empty when it was never updated).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct SlotService {
    version: String,
    update: (String, String),
}

/// One task of a product, as the manager reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub id: String,
    /// berth's service name (`server`).
    pub service: String,
    pub slot: Slot,
    pub version: String,
    pub node_id: String,
    /// The node's address (`Status.Addr`), empty before the task is assigned.
    pub node_addr: String,
    /// `running`, `starting`, `failed`, `pending`, ...
    pub state: String,
    /// `running` for the tasks the service wants, `shutdown` for the others.
    pub desired: String,
    /// What went wrong (`Status.Err`), if anything.
    pub error: String,
    /// When the task reached its current state.
    pub since: Option<SystemTime>,
    pub exit_code: Option<i64>,
    /// The replica it is an attempt of (Swarm's task slot, 1-based).
    pub replica: u64,
    /// Its container's id (`Status.ContainerStatus.ContainerID`), empty before it has one.
    pub container: String,
    /// The limits of its spec (`Spec.Resources.Limits`): memory bytes, CPUs in
    /// billionths, processes.
    pub memory_limit: Option<u64>,
    pub nano_cpus: Option<u64>,
    pub pids_limit: Option<u64>,
}

impl Task {
    pub fn running(&self) -> bool {
        self.state == "running" && self.desired == "running"
    }
    /// The task's container exited (or could not start) for good.
    pub fn failed(&self) -> bool {
        matches!(self.state.as_str(), "failed" | "rejected" | "complete")
    }
}

/// A node of the swarm.
#[derive(Debug, Clone)]
struct NodeInfo {
    addr: String,
    ready: bool,
    active: bool,
    labels: BTreeMap<String, String>,
}

pub struct SwarmRuntime {
    manifest: Manifest,
    root: PathBuf,
    settings: SwarmSettings,
    /// The product's tasks read in the last second (`None`: read again).
    cache: Mutex<Option<(Instant, String, Vec<Task>)>>,
    /// Whether the manager's engine applies pids and nofile limits (asked once).
    limits_ok: Mutex<Option<bool>>,
    /// Node id -> address, as read at that instant (see [`NODE_TTL`]).
    node_addrs: Mutex<Option<(Instant, BTreeMap<String, String>)>>,
}

impl SwarmRuntime {
    pub fn new(manifest: Manifest, root: PathBuf) -> Self {
        let settings = manifest
            .deploy
            .swarm
            .clone()
            .unwrap_or_else(|| SwarmSettings {
                manager: None,
                context: None,
                registry: String::new(),
                host_address: None,
                products: Default::default(),
            });
        Self {
            manifest,
            root,
            settings,
            cache: Mutex::new(None),
            limits_ok: Mutex::new(None),
            node_addrs: Mutex::new(None),
        }
    }

    /// `docker` talking to the manager, with compose's allow-listed environment.
    /// `docker <kind> ls` of the objects labelled with `product`, one `format` line each.
    fn labelled(&self, kind: &str, product: &str, format: &str) -> Result<String, RuntimeError> {
        Ok(self
            .docker(format!("list the {kind}s of {product}"))
            .args([kind, "ls", "--filter"])
            .arg(format!("label=berth.product={product}"))
            .args(["--format", format])
            .output()?
            .stdout_str())
    }

    fn docker(&self, summary: impl Into<String>) -> Cmd {
        let mut c = crate::compose::docker_cmd(summary)
            .env("DOCKER_CLI_HINTS", "false")
            .timeout(Some(Duration::from_secs(300)))
            .hint_if_missing("install Docker (the docker CLI talks to the swarm's manager)");
        if let Some(m) = &self.settings.manager {
            c = c.env("DOCKER_HOST", m).env_remove("DOCKER_CONTEXT");
        } else if let Some(ctx) = &self.settings.context {
            c = c.env("DOCKER_CONTEXT", ctx).env_remove("DOCKER_HOST");
        }
        c
    }

    fn prefix(&self) -> String {
        berth_manifest::slug(&self.manifest.project.name)
    }

    /// The stack of a product's slot: `<project>-<product>-<slot>`.
    pub fn stack(&self, product: &str, slot: Slot) -> String {
        format!("{}-{product}-{slot}", self.prefix())
    }

    /// The Swarm service of a berth service in a slot (`<stack>_<service>`).
    pub fn service_name(&self, product: &str, slot: Slot, service: &str) -> String {
        format!("{}_{service}", self.stack(product, slot))
    }

    fn network(&self, product: &str) -> String {
        self.manifest.product_network(product).name
    }

    fn registry_host(&self) -> &str {
        let r = self.settings.registry.as_str();
        r.strip_prefix("http://")
            .or_else(|| r.strip_prefix("https://"))
            .unwrap_or(r)
            .trim_end_matches('/')
    }

    fn registry_url(&self) -> String {
        if self.settings.registry.starts_with("https://") {
            format!("https://{}", self.registry_host())
        } else {
            format!("http://{}", self.registry_host())
        }
    }

    /// The repository (in the registry) of a built service.
    fn repo_name(&self, product: &str, service: &str) -> String {
        let svc = &self.manifest.products[product].services[service];
        berth_render::image_name(&self.manifest, product, service, svc)
    }

    /// The image a service runs as `version`: the registry's tag for a built service,
    /// its own `image` otherwise.
    fn image(&self, product: &str, service: &str, version: &str) -> String {
        let svc = &self.manifest.products[product].services[service];
        match (&svc.build, &svc.image) {
            (None, Some(i)) => i.clone(),
            _ => format!(
                "{}/{}:{version}",
                self.registry_host(),
                self.repo_name(product, service)
            ),
        }
    }

    fn built_services(&self, product: &str) -> Vec<String> {
        self.manifest.products[product]
            .services
            .iter()
            .filter(|(_, s)| s.build.is_some())
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn masker(&self, product: &str) -> Result<berth_cmd::Masker, RuntimeError> {
        berth_render::secrets::product_masker(&self.root, product)
            .map_err(|e| RuntimeError::Failed(e.to_string()))
    }

    fn forget(&self) {
        if let Ok(mut c) = self.cache.lock() {
            *c = None;
        }
    }

    // --- reading the swarm -------------------------------------------------------

    fn nodes(&self) -> Result<BTreeMap<String, NodeInfo>, RuntimeError> {
        let ids = self
            .docker("list the swarm's nodes")
            .args(["node", "ls", "-q"])
            .output()?
            .stdout_str();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        let mut out = BTreeMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let text = self
            .docker("read the swarm's nodes")
            .args(["node", "inspect"])
            .args(&ids)
            .output()?
            .stdout_str();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        for n in v.as_array().into_iter().flatten() {
            let labels = n["Spec"]["Labels"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default();
            out.insert(
                n["ID"].as_str().unwrap_or("").to_string(),
                NodeInfo {
                    addr: n["Status"]["Addr"].as_str().unwrap_or("").to_string(),
                    ready: n["Status"]["State"].as_str() == Some("ready"),
                    active: n["Spec"]["Availability"].as_str() == Some("active"),
                    labels,
                },
            );
        }
        if let Ok(mut c) = self.node_addrs.lock() {
            *c = Some((
                Instant::now(),
                out.iter()
                    .map(|(id, n)| (id.clone(), n.addr.clone()))
                    .collect(),
            ));
        }
        Ok(out)
    }

    /// The address of each node, for tasks on the nodes `needed`: read from the manager
    /// when one of them is not known yet or the last read is older than [`NODE_TTL`]
    /// (a deploy's waits read tasks many times; the nodes rarely change meanwhile).
    fn node_addrs<'a>(
        &self,
        needed: impl Iterator<Item = &'a str>,
    ) -> Result<BTreeMap<String, String>, RuntimeError> {
        let needed: Vec<&str> = needed.collect();
        if let Ok(c) = self.node_addrs.lock()
            && let Some((at, addrs)) = c.as_ref()
            && at.elapsed() < NODE_TTL
            && needed.iter().all(|id| addrs.contains_key(*id))
        {
            return Ok(addrs.clone());
        }
        Ok(self
            .nodes()?
            .into_iter()
            .map(|(id, n)| (id, n.addr))
            .collect())
    }

    /// The nodes `product`'s tasks may run on: Ready, active, with its label.
    fn placement_nodes(&self, product: &str) -> Result<Vec<NodeInfo>, RuntimeError> {
        let (k, v) = self.settings.node_label(product);
        Ok(self
            .nodes()?
            .into_values()
            .filter(|n| n.ready && n.active && n.labels.get(&k) == Some(&v))
            .collect())
    }

    /// The Swarm services of `product` (this project's): (id, name).
    fn services(&self, product: &str) -> Result<Vec<(String, String)>, RuntimeError> {
        let out = self.labelled("service", product, "{{.ID}} {{.Name}}")?;
        let prefix = format!("{}-{product}-", self.prefix());
        Ok(out
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(_, name)| name.starts_with(&prefix))
            .map(|(id, name)| (id.to_string(), name.to_string()))
            .collect())
    }

    /// The ids of the Swarm services of `product`'s `slot` stack.
    fn slot_service_ids(&self, product: &str, slot: Slot) -> Result<Vec<String>, RuntimeError> {
        let prefix = format!("{}_", self.stack(product, slot));
        Ok(self
            .services(product)?
            .into_iter()
            .filter(|(_, n)| n.starts_with(&prefix))
            .map(|(id, _)| id)
            .collect())
    }

    /// Every task of `product`'s services (history included), read from the manager.
    pub fn tasks(&self, product: &str) -> Result<Vec<Task>, RuntimeError> {
        if let Ok(c) = self.cache.lock()
            && let Some((at, p, tasks)) = c.as_ref()
            && p == product
            && at.elapsed() < Duration::from_millis(500)
        {
            return Ok(tasks.clone());
        }
        let tasks = self.read_tasks(product)?;
        if let Ok(mut c) = self.cache.lock() {
            *c = Some((Instant::now(), product.to_string(), tasks.clone()));
        }
        Ok(tasks)
    }

    fn read_tasks(&self, product: &str) -> Result<Vec<Task>, RuntimeError> {
        let services: Vec<String> = self
            .services(product)?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        self.read_tasks_of(product, &services)
    }

    /// The tasks of one slot's services (named from berth.toml: no `service ls`), for
    /// the waits of a deploy; a service that does not exist (yet) has none.
    fn slot_tasks(&self, product: &str, slot: Slot) -> Result<Vec<Task>, RuntimeError> {
        let names: Vec<String> = self.manifest.products[product]
            .services
            .keys()
            .map(|n| self.service_name(product, slot, n))
            .collect();
        let tasks = self.read_tasks_of(product, &names)?;
        if tasks.is_empty() {
            // One of them is missing (`service ps` of it fails): those that exist.
            let existing = self.slot_service_ids(product, slot)?;
            if existing.len() < names.len() {
                return self.read_tasks_of(product, &existing);
            }
        }
        Ok(tasks)
    }

    /// The tasks of `services` (ids or names), history included.
    fn read_tasks_of(&self, product: &str, services: &[String]) -> Result<Vec<Task>, RuntimeError> {
        if services.is_empty() {
            return Ok(Vec::new());
        }
        // A service removed between the two calls makes `service ps` fail: read again.
        let mut ids = String::new();
        for attempt in 0..3 {
            let out = self
                .docker(format!("list the tasks of {product}"))
                .args(["service", "ps", "-q", "--no-trunc"])
                .args(services)
                .output_unchecked()?;
            if out.status.success() {
                ids = out.stdout_str();
                break;
            }
            if attempt == 2 {
                return Ok(Vec::new());
            }
        }
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let out = self
            .docker(format!("read the tasks of {product}"))
            .args(["inspect", "--type", "task"])
            .args(&ids)
            .output_unchecked()?;
        let v: Value = serde_json::from_str(&out.stdout_str()).unwrap_or(Value::Null);
        let nodes = self.node_addrs(
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["NodeID"].as_str())
                .filter(|id| !id.is_empty()),
        )?;
        let mut tasks = Vec::new();
        for t in v.as_array().into_iter().flatten() {
            let labels = &t["Spec"]["ContainerSpec"]["Labels"];
            let (Some(service), Some(slot)) = (
                labels["berth.service"].as_str(),
                labels["berth.slot"].as_str().and_then(Slot::parse),
            ) else {
                continue;
            };
            if labels["berth.product"].as_str() != Some(product) {
                continue;
            }
            let node_id = t["NodeID"].as_str().unwrap_or("").to_string();
            tasks.push(Task {
                id: t["ID"].as_str().unwrap_or("").to_string(),
                service: service.to_string(),
                slot,
                version: labels["berth.version"].as_str().unwrap_or("").to_string(),
                node_addr: nodes.get(&node_id).cloned().unwrap_or_default(),
                node_id,
                state: t["Status"]["State"].as_str().unwrap_or("").to_string(),
                desired: t["DesiredState"].as_str().unwrap_or("").to_string(),
                error: t["Status"]["Err"].as_str().unwrap_or("").to_string(),
                since: t["Status"]["Timestamp"]
                    .as_str()
                    .and_then(parse_docker_time),
                exit_code: t["Status"]["ContainerStatus"]["ExitCode"].as_i64(),
                replica: t["Slot"].as_u64().unwrap_or(0),
                container: t["Status"]["ContainerStatus"]["ContainerID"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                memory_limit: limit(&t["Spec"]["Resources"]["Limits"]["MemoryBytes"]),
                nano_cpus: limit(&t["Spec"]["Resources"]["Limits"]["NanoCPUs"]),
                pids_limit: limit(&t["Spec"]["Resources"]["Limits"]["Pids"]),
            });
        }
        tasks.sort_by(|a, b| (a.slot, &a.service, &a.id).cmp(&(b.slot, &b.service, &b.id)));
        Ok(tasks)
    }

    /// The slot's Swarm services that exist, by berth's service name: each one's
    /// version and `UpdateStatus` (two calls: `service ls`, one `service inspect`).
    fn slot_services(
        &self,
        product: &str,
        slot: Slot,
    ) -> Result<BTreeMap<String, SlotService>, RuntimeError> {
        let prefix = format!("{}_", self.stack(product, slot));
        let names: Vec<String> = self
            .services(product)?
            .into_iter()
            .map(|(_, n)| n)
            .filter(|n| n.starts_with(&prefix))
            .collect();
        Ok(self
            .inspect_services(&names)?
            .into_iter()
            .filter_map(|(n, s)| Some((n.strip_prefix(&prefix)?.to_string(), s)))
            .collect())
    }

    /// Version and `UpdateStatus` of the Swarm services `names`, in one call (a service
    /// removed meanwhile: none of them).
    fn inspect_services(
        &self,
        names: &[String],
    ) -> Result<BTreeMap<String, SlotService>, RuntimeError> {
        if names.is_empty() {
            return Ok(BTreeMap::new());
        }
        let out = self
            .docker("read the services' versions and update status")
            .args([
                "service",
                "inspect",
                "--format",
                "{{.Spec.Name}}|{{index .Spec.Labels \"berth.version\"}}|{{if .UpdateStatus}}{{.UpdateStatus.State}}|{{.UpdateStatus.StartedAt}}{{end}}",
            ])
            .args(names)
            .output_unchecked()?;
        if !out.status.success() {
            return Ok(BTreeMap::new());
        }
        Ok(out
            .stdout_str()
            .lines()
            .filter_map(|l| {
                let mut it = l.trim().splitn(4, '|');
                let name = it.next().filter(|n| !n.is_empty())?;
                let version = it.next().unwrap_or("").to_string();
                let state = it.next().unwrap_or("").to_string();
                let at = it.next().unwrap_or("").to_string();
                Some((
                    name.to_string(),
                    SlotService {
                        version,
                        update: (state, at),
                    },
                ))
            })
            .collect())
    }

    // --- making things -----------------------------------------------------------

    /// The product's overlay network, created once (attachable, so one-off tasks join).
    fn ensure_network(&self, product: &str) -> Result<(), RuntimeError> {
        let net = self.manifest.product_network(product);
        if self
            .docker(format!("look for the network of {product}"))
            .args(["network", "inspect", "--format", "{{.ID}}", &net.name])
            .output()
            .is_ok()
        {
            return Ok(());
        }
        let out = self
            .docker(format!("create the overlay network of {product}"))
            .args(["network", "create", "--driver", "overlay", "--attachable"])
            .args(["--label", &format!("berth.product={product}")])
            .args(["--label", &format!("berth.project={}", self.prefix())])
            .args(["--subnet", &net.subnet, &net.name])
            .output_unchecked()?;
        // Two deploys at once: the other one made it.
        if !out.status.success()
            && !out.stderr_str().contains("already exists")
            && self
                .docker("look for the network again")
                .args(["network", "inspect", "--format", "{{.ID}}", &net.name])
                .output()
                .is_err()
        {
            return Err(RuntimeError::Failed(format!(
                "could not create the overlay network {} of {product}: {}",
                net.name,
                out.stderr_str().trim()
            )));
        }
        Ok(())
    }

    /// The product's secrets as Docker secrets, each named by its content
    /// (`<project>-<product>_<KEY>_<12 hex of sha256>`): created when missing, the value
    /// on stdin only. Returns (docker name, key) for each.
    fn ensure_secrets(&self, product: &str) -> Result<Vec<(String, String)>, RuntimeError> {
        let path = berth_render::secrets::product_secret_path(&self.root, product);
        let file = berth_render::secrets::SecretFile::load(&path)
            .map_err(|e| RuntimeError::Failed(e.to_string()))?;
        let existing = self.labelled("secret", product, "{{.Name}}")?;
        let mut out = Vec::new();
        for key in file.keys().map(str::to_string).collect::<Vec<_>>() {
            let Some(value) = file.get(&key) else {
                continue;
            };
            let name = secret_name(&self.prefix(), product, &key, value);
            if !existing.lines().any(|l| l.trim() == name) {
                let created = self
                    .docker(format!("create the secret {key} of {product}"))
                    .args(["secret", "create", "--label"])
                    .arg(format!("berth.product={product}"))
                    .args(["--label", &format!("berth.project={}", self.prefix())])
                    .args([&name, "-"])
                    .stdin(value.as_bytes().to_vec())
                    .redact(value)
                    .output_unchecked()?;
                if !created.status.success() && !created.stderr_str().contains("already exists") {
                    return Err(RuntimeError::Failed(format!(
                        "could not create the Docker secret {name}: {}",
                        created.stderr_str().trim()
                    )));
                }
            }
            out.push((name, key));
        }
        Ok(out)
    }

    /// The stack file of a slot, rendered through berth-render's template.
    fn stack_file(
        &self,
        product: &str,
        slot: Slot,
        version: &str,
        secrets: &[(String, String)],
    ) -> Result<String, RuntimeError> {
        use berth_render::swarm::{Stack, StackSecret, StackService};
        let p = &self.manifest.products[product];
        let (label_key, label_value) = self.settings.node_label(product);
        let all_limits = self.limits_supported()?;
        let grants: Vec<StackSecret> = secrets
            .iter()
            .map(|(name, key)| StackSecret {
                name: name.clone(),
                target: key.clone(),
                env: format!("{key}_FILE"),
                path: format!("/run/secrets/{key}"),
            })
            .collect();
        let stack = Stack {
            product: product.to_string(),
            slot: slot.name().to_string(),
            version: version.to_string(),
            network: self.network(product),
            label_key,
            label_value,
            host_gateway: self
                .settings
                .host_address
                .as_ref()
                .map(|a| format!("{}:{a}", berth_manifest::HOST_GATEWAY_NAME)),
            services: p
                .services
                .iter()
                .map(|(name, svc)| StackService {
                    name: name.clone(),
                    image: self.image(product, name, version),
                    port: svc.port,
                    published: svc.port.and(slot_port(&self.manifest, svc, slot)),
                    replicas: self.settings.replicas(product, name),
                    env: svc
                        .env
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    secrets: grants.clone(),
                    limits: berth_render::swarm::StackLimits::new(
                        berth_manifest::effective_limits(&self.manifest, product, name),
                        all_limits,
                    ),
                })
                .collect(),
        };
        berth_render::swarm::render_stack(&stack).map_err(|e| RuntimeError::Failed(e.to_string()))
    }

    /// The slot's stack file written and deployed (services that exist are updated in
    /// place), then the wait until it converged. `before`: the slot's services as they
    /// were ([`Self::slot_services`]).
    fn deploy_stack(
        &self,
        product: &str,
        slot: Slot,
        version: &str,
        before: &BTreeMap<String, SlotService>,
    ) -> Result<(), RuntimeError> {
        self.ensure_network(product)?;
        let secrets = self.ensure_secrets(product)?;
        let text = self.stack_file(product, slot, version, &secrets)?;
        let stack = self.stack(product, slot);
        let file = self.root.join(".berth/swarm").join(format!("{stack}.yml"));
        crate::write_atomic(&file, text.as_bytes()).map_err(crate::io("write", &file))?;
        self.docker(format!("deploy the {slot} stack of {product} ({version})"))
            .args(["stack", "deploy", "--prune", "-c"])
            .arg(&file)
            .arg(&stack)
            .output()?;
        self.forget();
        let result = self.wait_converged(product, slot, version, before);
        self.forget();
        result
    }

    /// Wait until every service of the slot runs `version` on all its replicas, and
    /// each service that existed `before` has a new `UpdateStatus` that completed; `Ok`
    /// also when a task exited (the health check reports it, with the log tail). Each
    /// read asks the manager for the slot's own tasks and, for updated services, their
    /// update status: two or three calls, starting again after [`Backoff`].
    fn wait_converged(
        &self,
        product: &str,
        slot: Slot,
        version: &str,
        before: &BTreeMap<String, SlotService>,
    ) -> Result<(), RuntimeError> {
        let p = &self.manifest.products[product];
        let deadline = p
            .services
            .values()
            .filter_map(|s| s.health.as_ref().map(|h| h.deadline.0))
            .max()
            .unwrap_or(Duration::from_secs(60))
            + Duration::from_secs(60);
        let updated: Vec<String> = before
            .keys()
            .filter(|n| p.services.contains_key(*n))
            .map(|n| self.service_name(product, slot, n))
            .collect();
        let start = Instant::now();
        let mut pause = Backoff::new();
        // Every service is updated in place: Swarm reports each change of an update's
        // state as a service event, so between two reads berth waits in `docker events`
        // for the next one (a second at most: the events only say when to read again).
        let evented = !updated.is_empty() && updated.len() == p.services.len();
        loop {
            let read_at = SystemTime::now();
            let tasks = self.slot_tasks(product, slot)?;
            let statuses = self.inspect_services(&updated)?;
            let mut done = true;
            let mut waiting = Vec::new();
            for name in p.services.keys() {
                let full = self.service_name(product, slot, name);
                let mine: Vec<&Task> = tasks
                    .iter()
                    .filter(|t| t.slot == slot && t.service == *name && t.version == version)
                    .collect();
                if let Some(t) = mine.iter().find(|t| t.state == "rejected") {
                    return Err(RuntimeError::Failed(format!(
                        "a task of {product}.{name} ({slot}) was rejected: {}",
                        t.error
                    )));
                }
                // A replica whose process exited twice is in a restart loop: the health
                // gate says so with the log tail. (Once can be a hiccup Swarm retries.)
                let looping = mine.iter().any(|t| {
                    mine.iter()
                        .filter(|o| o.replica == t.replica && o.failed())
                        .count()
                        >= 2
                });
                if looping {
                    return Ok(());
                }
                // An update of an existing service: its UpdateStatus must be a new one,
                // and final (right after the call it can still show the previous one).
                if let Some(old) = before.get(name) {
                    match statuses.get(&full) {
                        Some(now) if !now.update.1.is_empty() && now.update.1 != old.update.1 => {
                            match now.update.0.as_str() {
                                "completed" => {}
                                // A task of the version exited: Swarm paused the update
                                // (failure_action); the health gate reports the exit.
                                "paused" if mine.iter().any(|t| t.failed()) => return Ok(()),
                                "paused" | "rollback_started" | "rollback_paused"
                                | "rollback_completed" => {
                                    return Err(RuntimeError::Failed(format!(
                                        "the update of {full} ended `{}`",
                                        now.update.0
                                    )));
                                }
                                _ => done = false,
                            }
                        }
                        _ => done = false,
                    }
                }
                let want = self.settings.replicas(product, name) as usize;
                let running = mine.iter().filter(|t| t.running()).count();
                if running < want {
                    done = false;
                    let pending: Vec<String> = mine
                        .iter()
                        .filter(|t| t.desired == "running" && !t.running())
                        .map(|t| {
                            if t.error.is_empty() {
                                t.state.clone()
                            } else {
                                format!("{}: {}", t.state, t.error)
                            }
                        })
                        .collect();
                    waiting.push(format!(
                        "{name}: {running} of {want} running{}",
                        if pending.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", pending.join("; "))
                        }
                    ));
                }
            }
            if done {
                // The moment Swarm had them all running (an update completes a little
                // later: then berth waited in `docker events`, not in a sleep).
                let at = tasks
                    .iter()
                    .filter(|t| t.slot == slot && t.version == version && t.running())
                    .filter_map(|t| t.since)
                    .max();
                trace_wait(start, at);
                return Ok(());
            }
            if start.elapsed() > deadline {
                return Err(RuntimeError::Failed(format!(
                    "the {slot} slot of {product} did not converge within {}s: {}",
                    deadline.as_secs(),
                    waiting.join(", ")
                )));
            }
            if evented {
                self.next_service_event(&updated, read_at);
            } else {
                pause.sleep();
            }
        }
    }

    /// Wait for the next event of the Swarm services `names` since `since` (one that
    /// came after the last read, too), a second at most.
    fn next_service_event(&self, names: &[String], since: SystemTime) {
        let since = since
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let mut c = self
            .docker("wait for the next change of the slot's services")
            .args([
                "events",
                "--format",
                "{{.Action}}",
                "--filter",
                "type=service",
            ])
            .args(["--since", &format!("{since:.3}")]);
        for n in names {
            c = c.args(["--filter", &format!("service={n}")]);
        }
        if c.first_line(Duration::from_secs(1)).is_err() {
            std::thread::sleep(FIRST_POLL);
        }
    }

    /// Wait until nothing answers on the slot's port of any node the product may run
    /// on, but the nodes at the addresses `skip` (where the slot's own tasks run).
    fn wait_ports_free(
        &self,
        product: &str,
        slot: Slot,
        within: Duration,
        skip: &[String],
    ) -> Result<(), RuntimeError> {
        let mut nodes = self.placement_nodes(product)?;
        nodes.retain(|n| !skip.contains(&n.addr));
        let p = &self.manifest.products[product];
        let deadline = Instant::now() + within;
        let mut pause = Backoff::new();
        for (name, svc) in &p.services {
            let Some(port) = svc.port.and(slot_port(&self.manifest, svc, slot)) else {
                continue;
            };
            for n in &nodes {
                let addr = format!("{}:{port}", n.addr);
                while answers(&addr) {
                    if Instant::now() >= deadline {
                        return Err(RuntimeError::Failed(format!(
                            "{addr} ({product}.{name}, {slot} slot) still answers although berth runs nothing there: stop what listens, or change host_port / [deploy] slot_port_offset"
                        )));
                    }
                    pause.sleep();
                }
            }
        }
        Ok(())
    }

    /// The registry is the swarm's own (on a manager): no proxy; the registry API
    /// may redirect.
    fn registry_agent() -> ureq::Agent {
        crate::http::Client::new(Duration::from_secs(20))
            .follow_redirects(5)
            .agent()
    }

    /// The digest of `repo:tag` in the registry (`None`: no such tag).
    fn registry_digest(&self, agent: &ureq::Agent, repo: &str, tag: &str) -> Option<String> {
        let url = format!("{}/v2/{repo}/manifests/{tag}", self.registry_url());
        let r = agent
            .head(&url)
            .header(
                "Accept",
                "application/vnd.docker.distribution.manifest.v2+json",
            )
            .call()
            .ok()?;
        if r.status().as_u16() != 200 {
            return None;
        }
        r.headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    fn registry_tags(&self, agent: &ureq::Agent, repo: &str) -> Result<Vec<String>, RuntimeError> {
        let url = format!("{}/v2/{repo}/tags/list", self.registry_url());
        let mut r = agent.get(&url).call().map_err(|e| {
            RuntimeError::Failed(format!(
                "the registry {} did not answer: {e}",
                self.registry_host()
            ))
        })?;
        if r.status().as_u16() == 404 {
            return Ok(Vec::new());
        }
        let v: Value = r.body_mut().read_json().unwrap_or(Value::Null);
        Ok(v["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect())
    }

    /// Delete the tags of `product`'s images not in `keep` (a digest another kept
    /// tag also names stays: deleting it would take the kept tag along).
    fn prune_registry(&self, product: &str, keep: &[String]) -> Result<Vec<String>, RuntimeError> {
        let agent = Self::registry_agent();
        let mut removed = Vec::new();
        for service in self.built_services(product) {
            let repo = self.repo_name(product, &service);
            let tags = self.registry_tags(&agent, &repo)?;
            let digests: BTreeMap<String, Option<String>> = tags
                .iter()
                .map(|t| (t.clone(), self.registry_digest(&agent, &repo, t)))
                .collect();
            let kept: Vec<&String> = digests
                .iter()
                .filter(|(t, _)| keep.contains(t))
                .filter_map(|(_, d)| d.as_ref())
                .collect();
            let mut gone: Vec<&String> = Vec::new();
            for (tag, digest) in &digests {
                let Some(d) = digest else { continue };
                if keep.contains(tag) {
                    continue;
                }
                if !kept.contains(&d) && !gone.contains(&d) {
                    let url = format!("{}/v2/{repo}/manifests/{d}", self.registry_url());
                    match agent.delete(&url).call() {
                        Ok(r) if r.status().is_success() => gone.push(d),
                        _ => continue,
                    }
                }
                if gone.contains(&d) {
                    removed.push(format!("{}/{repo}:{tag}", self.registry_host()));
                }
            }
        }
        Ok(removed)
    }

    /// Run a one-off task (a Swarm job) of `service` as `version` in the product's
    /// environment: its network, placement, env and secrets. Returns (exit code, log).
    fn run_job(
        &self,
        product: &str,
        service: &str,
        slot: Slot,
        version: &str,
        argv: &[String],
        what: &str,
    ) -> Result<(i64, String), RuntimeError> {
        self.ensure_network(product)?;
        let secrets = self.ensure_secrets(product)?;
        let masker = self.masker(product)?;
        let svc = &self.manifest.products[product].services[service];
        let (k, v) = self.settings.node_label(product);
        let name = format!(
            "{}-{what}-{}",
            self.service_name(product, slot, service),
            std::process::id()
        );
        let _ = self
            .docker("remove a leftover one-off task")
            .args(["service", "rm", &name])
            .output_unchecked();
        let mut c = self
            .docker(format!("start the {what} of {product}.{service}"))
            .mask_with(&masker)
            .args(["service", "create", "--detach", "--quiet", "--name", &name])
            .args(["--mode", "replicated-job", "--restart-condition", "none"])
            .args(["--network", &self.network(product)])
            .args(["--constraint", &format!("node.labels.{k}=={v}")])
            .args(["--label", &format!("berth.product={product}")])
            .args(["--label", &format!("berth.run={what}")])
            .args(["--env", &format!("BERTH_PRODUCT={product}")])
            .args(["--env", &format!("BERTH_SERVICE={service}")])
            .args(["--env", &format!("BERTH_SLOT={slot}")])
            .args(["--env", &format!("BERTH_VERSION={version}")]);
        for (key, value) in &svc.env {
            c = c.args(["--env", &format!("{key}={value}")]);
        }
        for (secret, key) in &secrets {
            c = c
                .args([
                    "--secret",
                    &format!("source={secret},target={key},mode=0400"),
                ])
                .args(["--env", &format!("{key}_FILE=/run/secrets/{key}")]);
        }
        if let Some(a) = &self.settings.host_address {
            c = c.args([
                "--host",
                &format!("{}:{a}", berth_manifest::HOST_GATEWAY_NAME),
            ]);
        }
        c.arg(self.image(product, service, version))
            .args(argv)
            .output()?;
        let result = (|| {
            let start = Instant::now();
            let mut pause = Backoff::new();
            // The job's task, once it has one: a job with no restarts keeps it, so each
            // later read is one `inspect` of it.
            let mut out = String::new();
            loop {
                if out.trim().is_empty() {
                    out = self
                        .docker(format!("wait for the {what} of {product}.{service}"))
                        .args(["service", "ps", "-q", "--no-trunc", &name])
                        .output()?
                        .stdout_str();
                }
                let ids: Vec<&str> = out.split_whitespace().collect();
                if !ids.is_empty() {
                    let v: Value = serde_json::from_str(
                        &self
                            .docker("read the one-off task")
                            .args(["inspect", "--type", "task"])
                            .args(&ids)
                            .output()?
                            .stdout_str(),
                    )
                    .unwrap_or(Value::Null);
                    for t in v.as_array().into_iter().flatten() {
                        let state = t["Status"]["State"].as_str().unwrap_or("");
                        if matches!(state, "complete" | "failed") {
                            let at = t["Status"]["Timestamp"]
                                .as_str()
                                .and_then(parse_docker_time);
                            trace_wait(start, at);
                        }
                        match state {
                            "complete" => return Ok(0),
                            "failed" => {
                                return Ok(t["Status"]["ContainerStatus"]["ExitCode"]
                                    .as_i64()
                                    .unwrap_or(1));
                            }
                            "rejected" => {
                                return Err(RuntimeError::Failed(format!(
                                    "the {what} of {product}.{service} could not start: {}",
                                    t["Status"]["Err"].as_str().unwrap_or("")
                                )));
                            }
                            _ => {}
                        }
                    }
                }
                if start.elapsed() > Duration::from_secs(900) {
                    return Err(RuntimeError::Failed(format!(
                        "the {what} of {product}.{service} did not end within 15 minutes"
                    )));
                }
                pause.sleep();
            }
        })();
        let log = self
            .docker(format!("read the log of the {what}"))
            .mask_with(&masker)
            .args(["service", "logs", "--raw", "--tail", "50", &name])
            .timeout(Some(Duration::from_secs(30)))
            .output_unchecked()
            .map(|o| format!("{}{}", o.stdout_str(), o.stderr_str()))
            .unwrap_or_default();
        let _ = self
            .docker(format!("remove the {what} task"))
            .args(["service", "rm", &name])
            .output_unchecked();
        Ok((result?, masker.mask(&log)))
    }

    /// Is the manager a swarm manager? (state, is manager, engine version)
    fn swarm_state(&self) -> Result<(String, bool, String), RuntimeError> {
        let out = self
            .docker("ask the manager for its swarm state")
            .args([
                "info",
                "--format",
                "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}} {{.ServerVersion}}",
            ])
            .timeout(Some(Duration::from_secs(15)))
            .output()
            .map_err(|e| {
                RuntimeError::Preflight(format!(
                    "the swarm runtime could not reach the manager ([deploy.swarm] manager, or DOCKER_HOST): {e}"
                ))
            })?
            .stdout_str();
        let mut it = out.split_whitespace();
        Ok((
            it.next().unwrap_or("").to_string(),
            it.next() == Some("true"),
            it.next().unwrap_or("").to_string(),
        ))
    }

    /// Whether the manager's engine applies process and open-file limits to services
    /// (`Resources.Limits.Pids`, `ContainerSpec.Ulimits`: Docker Engine 20.10, API 1.41).
    /// Asked once per runtime.
    fn limits_supported(&self) -> Result<bool, RuntimeError> {
        if let Some(v) = *self.limits_ok.lock().unwrap_or_else(|e| e.into_inner()) {
            return Ok(v);
        }
        let (_, _, version) = self.swarm_state()?;
        let ok = engine_applies_service_limits(&version);
        *self.limits_ok.lock().unwrap_or_else(|e| e.into_inner()) = Some(ok);
        Ok(ok)
    }
}

/// Docker Engine `version` (`20.10.24+dfsg1`, `24.0.7`) is 20.10 or newer: the first
/// whose services take a pids limit and ulimits.
fn engine_applies_service_limits(version: &str) -> bool {
    let mut it = version
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (major, minor) >= (20, 10)
}

/// The longest name Docker gives a secret.
const SECRET_NAME_MAX: usize = 64;

/// A secret's Docker name, by content: `<project>-<product>_<KEY>_<12 hex of
/// sha256(value)>`. Docker allows 64 characters: a longer name keeps its start, cut,
/// and ends with 12 hex of sha256(KEY, value) instead, so two keys cut alike differ.
fn secret_name(prefix: &str, product: &str, key: &str, value: &str) -> String {
    use sha2::Digest;
    let hex = |bytes: &[u8]| -> String {
        sha2::Sha256::digest(bytes)
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let full = format!("{prefix}-{product}_{key}_{}", hex(value.as_bytes()));
    if full.len() <= SECRET_NAME_MAX {
        return full;
    }
    let mut keyed = key.as_bytes().to_vec();
    keyed.push(0);
    keyed.extend_from_slice(value.as_bytes());
    let tail = hex(&keyed);
    // Names are ASCII ([a-zA-Z0-9-_.]): any byte is a char boundary.
    let head = &full[..SECRET_NAME_MAX - tail.len() - 1];
    format!("{}_{tail}", head.trim_end_matches(['_', '-', '.']))
}

/// What the manager's swarm state means: `Ok` for an active manager, else the error
/// that says what to do (`docker swarm init` for an engine in no swarm).
fn manager_check(state: &str, manager: bool, engine: &str) -> Result<(), RuntimeError> {
    match (state, manager) {
        ("active", true) => Ok(()),
        ("active", false) => Err(RuntimeError::Preflight(format!(
            "{engine} is a swarm worker, not a manager: point it at a manager (DOCKER_HOST, or [deploy.swarm] manager)"
        ))),
        _ => Err(RuntimeError::Preflight(format!(
            "{engine} is not in a swarm (state `{}`): run `docker swarm init` on it (one node is a swarm), or point it at a manager (DOCKER_HOST, or [deploy.swarm] manager)",
            if state.is_empty() { "unknown" } else { state }
        ))),
    }
}

/// The Docker Engine of berth's environment (DOCKER_HOST or the docker context) as a
/// swarm manager: its node id, or why it is none (`docker swarm init`).
pub fn environment_manager() -> Result<String, RuntimeError> {
    let out = crate::compose::docker_cmd("ask the Docker Engine for its swarm state")
        .args([
            "info",
            "--format",
            "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}} {{.Swarm.NodeID}}",
        ])
        .timeout(Some(Duration::from_secs(15)))
        .hint_if_missing("install Docker (the docker CLI talks to the swarm's manager)")
        .output()
        .map_err(|e| {
            RuntimeError::Preflight(format!(
                "the swarm runtime needs a Docker Engine that is a swarm manager (DOCKER_HOST); none answered: {e}"
            ))
        })?
        .stdout_str();
    let mut it = out.split_whitespace();
    let (state, manager) = (it.next().unwrap_or(""), it.next() == Some("true"));
    manager_check(state, manager, "the Docker Engine (DOCKER_HOST)")?;
    Ok(it.next().unwrap_or("").to_string())
}

/// Add (or remove) the node label `key=value` on the environment's manager node
/// (`berth demo`: a one-node swarm carries every product's placement label).
pub fn label_environment_manager(key: &str, value: &str, add: bool) -> Result<(), RuntimeError> {
    let node = environment_manager()?;
    let mut c = crate::compose::docker_cmd(format!("label the swarm node {node}"))
        .timeout(Some(Duration::from_secs(30)))
        .args(["node", "update"]);
    c = if add {
        c.args(["--label-add", &format!("{key}={value}")])
    } else {
        c.args(["--label-rm", key])
    };
    c.arg(&node).output()?;
    Ok(())
}

/// Does something accept TCP connections at `addr`?
fn answers(addr: &str) -> bool {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| {
            std::net::TcpStream::connect_timeout(&a, Duration::from_millis(300)).is_ok()
        })
}

/// A limit of a task's spec: absent or 0 is none.
fn limit(v: &Value) -> Option<u64> {
    v.as_u64().filter(|n| *n > 0)
}

/// docker's task time (`2026-11-30T12:01:02.123456789Z`).
/// The tasks of a product by id, for a log stream: (short id, node address, one of the
/// service's current tasks); read again when a task not yet seen writes (one started
/// after the stream did).
struct TaskNames {
    rt: SwarmRuntime,
    product: String,
    known: BTreeMap<String, Option<(String, String, bool)>>,
}

impl TaskNames {
    fn get(&mut self, id: &str) -> Option<(String, String, bool)> {
        if !self.known.contains_key(id) {
            self.rt.forget();
            for t in self.rt.tasks(&self.product).unwrap_or_default() {
                let current = t.desired == "running";
                let short = t.id.chars().take(12).collect();
                self.known
                    .insert(t.id.clone(), Some((short, t.node_addr, current)));
            }
            self.known.entry(id.to_string()).or_insert(None);
        }
        self.known.get(id).cloned().flatten()
    }
}

/// One line of `docker service logs --timestamps --no-trunc --no-resolve`:
/// `<task>@<node>    | <time> <text>` (the CLI puts its prefix first; the time may also
/// come first), where `<task>` ends in the task's id. (task id, time, text); `None` for
/// a line without the prefix (what docker says about itself).
fn parse_service_log_line(line: &str) -> Option<(String, Option<SystemTime>, String)> {
    let (head, rest) = line.split_once(" | ")?;
    let head = head.trim_end();
    let (stamp, head) = match head.split_once(' ') {
        Some((a, b)) => (parse_docker_time(a), b.trim_start()),
        None => (None, head),
    };
    let (task, _node) = head.rsplit_once('@')?;
    let id = task.rsplit('.').next().filter(|id| !id.is_empty())?;
    if id.contains(char::is_whitespace) {
        return None;
    }
    let (at, text) = match (stamp, rest.split_once(' ')) {
        (Some(t), _) => (Some(t), rest.to_string()),
        (None, Some((a, b))) => match parse_docker_time(a) {
            Some(t) => (Some(t), b.to_string()),
            None => (None, rest.to_string()),
        },
        (None, None) => match parse_docker_time(rest) {
            Some(t) => (Some(t), String::new()),
            None => (None, rest.to_string()),
        },
    };
    Some((id.to_string(), at, text))
}

/// At trace level (`berth::wait`), for the bench's account of where a deploy's time
/// went: a wait that began at `began` ends now; Swarm reached the awaited state `at`
/// (by its own clock: the task's status time). What lies between `at` and now is
/// berth's reaction; what lies before `at` is Swarm's work.
fn trace_wait(began: Instant, at: Option<SystemTime>) {
    let span = began.elapsed();
    let lag = at
        .and_then(|at| SystemTime::now().duration_since(at).ok())
        .unwrap_or(span)
        .min(span);
    tracing::trace!(
        target: "berth::wait",
        "-> Swarm reached it {:.1}ms before berth read it, {:.1}ms into the wait",
        lag.as_secs_f64() * 1000.0,
        span.as_secs_f64() * 1000.0
    );
}

fn parse_docker_time(s: &str) -> Option<SystemTime> {
    crate::compose::parse_rfc3339_utc(s)
}

impl Runtime for SwarmRuntime {
    fn name(&self) -> &'static str {
        "swarm"
    }

    fn build_summary(&self) -> String {
        format!(
            "build images on the swarm's manager and push them to {}",
            self.registry_host()
        )
    }

    fn retained_summary(&self, version: &str) -> String {
        format!(
            "reuse the images of {version} in {} (no build)",
            self.registry_host()
        )
    }

    /// The cluster checks of docs/swarm.md: a manager answers, the registry answers,
    /// and enough Ready nodes carry the product's label for each service's replicas
    /// (one task per node: the host-mode port).
    fn preflight(&self, product: &str, _dirty: bool) -> Result<Vec<String>, RuntimeError> {
        if self.manifest.deploy.swarm.is_none() || self.settings.registry.trim().is_empty() {
            return Err(RuntimeError::Preflight(
                "the swarm runtime needs [deploy.swarm] with the registry images are pushed to (registry = \"host:port\")".into(),
            ));
        }
        // (Validation refuses it when berth.toml names swarm; `--runtime swarm` gets
        // here with a manifest made for another runtime.)
        if let Some(p) = self.manifest.products.get(product) {
            let background: Vec<&str> = p
                .services
                .keys()
                .filter(|s| {
                    berth_manifest::effective_limits(&self.manifest, product, s).cpu_priority
                        == berth_manifest::CpuPriority::Background
                })
                .map(String::as_str)
                .collect();
            if !background.is_empty() {
                return Err(RuntimeError::Preflight(format!(
                    "{product}'s {} set cpu_priority = \"background\", which the swarm runtime cannot apply (a swarm service has no CPU weight); remove it from berth.toml or deploy with another runtime",
                    background.join(", ")
                )));
            }
        }
        let (state, manager, version) = self.swarm_state()?;
        manager_check(&state, manager, "the Docker Engine berth talks to")?;
        let mut warnings = Vec::new();
        let limits_ok = engine_applies_service_limits(&version);
        *self.limits_ok.lock().unwrap_or_else(|e| e.into_inner()) = Some(limits_ok);
        if !limits_ok {
            let lacks = format!(
                "the manager's Docker Engine {version} cannot limit a swarm service's processes (pids) or open files (nofile): that needs Docker Engine 20.10 (API 1.41)"
            );
            if berth_manifest::limits::enforce_strict(&self.manifest) {
                return Err(RuntimeError::Preflight(format!(
                    "{lacks}; upgrade the engine, or set [limits] enforce = \"best-effort\" to run with cpus and memory limits only"
                )));
            }
            warnings.push(format!(
                "{lacks}; {product}'s services run with cpus and memory limits only ([limits] enforce = \"best-effort\")"
            ));
        }
        let agent = Self::registry_agent();
        let v2 = format!("{}/v2/", self.registry_url());
        match agent.get(&v2).call() {
            Ok(r) if r.status().as_u16() < 500 => {}
            Ok(r) => {
                return Err(RuntimeError::Failed(format!(
                    "the registry {} answered {} on /v2/",
                    self.registry_host(),
                    r.status()
                )));
            }
            Err(e) => {
                return Err(RuntimeError::Failed(format!(
                    "the registry {} does not answer: {e}",
                    self.registry_host()
                )));
            }
        }
        let nodes = self.placement_nodes(product)?;
        let (k, v) = self.settings.node_label(product);
        for (name, svc) in &self.manifest.products[product].services {
            let want = self.settings.replicas(product, name) as usize;
            if svc.port.is_some() && nodes.len() < want {
                return Err(RuntimeError::Preflight(format!(
                    "{product}.{name} wants {want} tasks, one per node (its port is published on each node), but only {} Ready node(s) carry the label {k}={v}: label more nodes (docker node update --label-add {k}={v} NODE) or lower [deploy.swarm.products.{product}] replicas",
                    nodes.len()
                )));
            }
            if svc.port.is_some() && nodes.len() == want {
                warnings.push(format!(
                    "{product}.{name} runs {want} task(s) on exactly {want} node(s) labelled {k}={v}: when one dies its task waits for it (label a spare node for failover)"
                ));
            }
        }
        if nodes.iter().any(|n| n.addr.is_empty()) {
            return Err(RuntimeError::Preflight(format!(
                "a node labelled {k}={v} reports no address: the front door could not reach its tasks"
            )));
        }
        Ok(warnings)
    }

    /// Every running task's node address and the slot's published port.
    fn addresses(&self, product: &str, service: &str, slot: Slot) -> Vec<Address> {
        let Some(svc) = self
            .manifest
            .products
            .get(product)
            .and_then(|p| p.services.get(service))
        else {
            return Vec::new();
        };
        let Some(port) = svc.port.and(slot_port(&self.manifest, svc, slot)) else {
            return Vec::new();
        };
        let tasks: Vec<Task> = self
            .tasks(product)
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.slot == slot && t.service == service && !t.node_addr.is_empty())
            .collect();
        let wanted = tasks.iter().filter(|t| t.desired == "running");
        // A slot whose tasks all died (and are not yet replaced) still answers nowhere
        // else than where they ran: a health check there fails, never passes on nothing.
        let mut out: Vec<Address> = if wanted.clone().next().is_some() {
            wanted
                .map(|t| Address::new(t.node_addr.clone(), port))
                .collect()
        } else {
            tasks
                .iter()
                .filter(|t| t.failed())
                .map(|t| Address::new(t.node_addr.clone(), port))
                .collect()
        };
        out.sort_by_key(|a| a.to_string());
        out.dedup();
        out
    }

    fn slot_free(&self, product: &str, slot: Slot) -> Result<(), RuntimeError> {
        self.wait_ports_free(product, slot, Duration::from_secs(15), &[])
    }

    /// A task answers on its node's address at the slot's published port.
    fn address_of(&self, product: &str, instance: &Instance) -> Option<Address> {
        let svc = self
            .manifest
            .products
            .get(product)?
            .services
            .get(&instance.service)?;
        svc.port?;
        Some(Address::new(instance.node.clone()?, instance.port?))
    }

    fn programs(&self) -> Vec<crate::Program> {
        vec![crate::compose::DOCKER]
    }

    /// Both slots' stacks removed, the product's secrets, its network and its images
    /// in the registry.
    fn teardown(&self, product: &str) -> Result<Vec<String>, RuntimeError> {
        let mut removed = Vec::new();
        for slot in [Slot::Blue, Slot::Green] {
            let had = self
                .services(product)?
                .iter()
                .any(|(_, n)| n.starts_with(&format!("{}_", self.stack(product, slot))));
            self.stop(product, slot)?;
            if had {
                removed.push(format!("stack {}", self.stack(product, slot)));
            }
        }
        let secrets = self.labelled("secret", product, "{{.Name}}")?;
        let prefix = format!("{}-{product}_", self.prefix());
        for name in secrets.lines().filter(|l| l.starts_with(&prefix)) {
            if self
                .docker(format!("remove the secret {name}"))
                .args(["secret", "rm", name])
                .output()
                .is_ok()
            {
                removed.push(format!("secret {name}"));
            }
        }
        removed.extend(self.prune_registry(product, &[])?);
        let net = self.network(product);
        if self
            .docker(format!("remove the network {net}"))
            .args(["network", "rm", &net])
            .output()
            .is_ok()
        {
            removed.push(format!("network {net}"));
        }
        Ok(removed)
    }

    /// Each built service's image made on the manager (its build key's image tagged,
    /// or built: [`crate::build`]) and pushed under the product's repository (a
    /// shared image's layers are in the registry already: the push sends none).
    fn build(&self, product: &str, version: &str) -> Result<Option<String>, RuntimeError> {
        let services = self.built_services(product);
        if services.is_empty() {
            return Ok(None);
        }
        let wanted: Vec<crate::build::Wanted> = services
            .iter()
            .map(|name| crate::build::Wanted {
                build: self.manifest.products[product].services[name]
                    .build
                    .as_ref()
                    .expect("a built service"),
                image: self.image(product, name, version),
            })
            .collect();
        // HEAD is the version (and clean): build from the work tree; otherwise from a
        // checkout of the version's commit.
        let docker = |summary: String| self.docker(summary);
        let builder = crate::build::Builder {
            root: &self.root,
            version,
            from_work_tree: crate::build::head_is(&self.root, version)?
                && !crate::build::dirty(&self.root)?,
            checkout_name: format!("berth-swarm-build-{product}"),
            docker: &docker,
            labels: vec![format!("berth.project={}", self.prefix())],
        };
        let mut pushed = Vec::new();
        let note = builder.make(&wanted, |image| {
            self.docker(format!("push {image} to the registry"))
                .args(["push", "-q", image])
                .timeout(Some(Duration::from_secs(900)))
                .output()?;
            pushed.push(image.to_string());
            Ok(())
        })?;
        Ok(Some(format!("{note}; pushed {}", pushed.join(", "))))
    }

    fn has_version(&self, product: &str, version: &str) -> bool {
        if self.settings.registry.trim().is_empty() {
            return false;
        }
        let agent = Self::registry_agent();
        self.built_services(product).iter().all(|s| {
            self.registry_digest(&agent, &self.repo_name(product, s), version)
                .is_some()
        })
    }

    fn migrate(
        &self,
        product: &str,
        service: &str,
        version: &str,
        slot: Slot,
    ) -> Result<String, RuntimeError> {
        let Some(migrate) = self.manifest.products[product].services[service]
            .migrate
            .clone()
        else {
            return Ok(String::new());
        };
        let argv: Vec<String> = migrate.split_whitespace().map(str::to_string).collect();
        let (code, log) = self.run_job(product, service, slot, version, &argv, "migrate")?;
        if code != 0 {
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(RuntimeError::Failed(format!(
                "the migration of {product}.{service} exited with {code}\n{}",
                tail.join("\n")
            )));
        }
        Ok(log)
    }

    fn start(&self, product: &str, slot: Slot, version: &str) -> Result<(), RuntimeError> {
        let before = self.slot_services(product, slot)?;
        self.deploy_stack(product, slot, version, &before)
    }

    /// The idle slot's services updated in place to `version`: one `docker stack
    /// deploy` onto them (stop-first, every task at once: the slot takes no traffic),
    /// instead of removing them, waiting for their ports and creating them again. A slot
    /// with no services, or already on `version` (the stack file would change nothing,
    /// so Swarm would start no update), is stopped and started as by default.
    fn replace(&self, product: &str, slot: Slot, version: &str) -> Result<(), RuntimeError> {
        let before = self.slot_services(product, slot)?;
        if before.is_empty() || before.values().any(|s| s.version == version) {
            if !before.is_empty() {
                self.stop(product, slot)?;
            }
            self.slot_free(product, slot)?;
            return self.start(product, slot, version);
        }
        // Nothing else may answer on the slot's port of a node its tasks are not on.
        self.forget();
        let on: Vec<String> = self
            .slot_tasks(product, slot)?
            .into_iter()
            .filter(|t| t.desired == "running" && !t.node_addr.is_empty())
            .map(|t| t.node_addr)
            .collect();
        self.wait_ports_free(product, slot, Duration::from_secs(15), &on)?;
        self.deploy_stack(product, slot, version, &before)
    }

    /// The slot's stack removed, and its tasks gone from every node (their ports free).
    fn stop(&self, product: &str, slot: Slot) -> Result<(), RuntimeError> {
        let services = self.slot_service_ids(product, slot)?;
        self.forget();
        if services.is_empty() {
            return Ok(());
        }
        self.docker(format!("remove the {slot} stack of {product}"))
            .args(["service", "rm"])
            .args(&services)
            .output()?;
        self.forget();
        self.wait_ports_free(product, slot, Duration::from_secs(30), &[])
    }

    fn instances(&self, product: &str) -> Result<Vec<Instance>, RuntimeError> {
        let m = &self.manifest;
        let all = self.tasks(product)?;
        Ok(all
            .clone()
            .into_iter()
            // The tasks the services want, and those that died with nothing of their
            // replica running since (a failed start, not a retried hiccup).
            .filter(|t| {
                t.desired == "running"
                    || (t.failed()
                        && !all.iter().any(|o| {
                            o.slot == t.slot
                                && o.service == t.service
                                && o.replica == t.replica
                                && o.running()
                        }))
            })
            .map(|t| {
                let svc = m.products[product].services.get(&t.service);
                Instance {
                    service: t.service.clone(),
                    slot: t.slot,
                    version: t.version.clone(),
                    alive: t.running(),
                    id: t.id.chars().take(12).collect(),
                    started: t.since,
                    port: svc.and_then(|s| slot_port(m, s, t.slot)),
                    node: Some(t.node_addr.clone()).filter(|a| !a.is_empty()),
                    state: Some(if t.error.is_empty() {
                        t.state.clone()
                    } else {
                        format!("{}: {}", t.state, t.error)
                    }),
                }
            })
            .collect())
    }

    /// The task's limits as its spec holds them; what it uses from `docker stats` when
    /// the task runs on the engine berth talks to (the manager): a task elsewhere shows
    /// its limits only (berth does not reach the other nodes' engines).
    fn usage(&self, product: &str, i: &Instance) -> Option<crate::ResourceUsage> {
        if !i.alive {
            return None;
        }
        let task = self
            .tasks(product)
            .ok()?
            .into_iter()
            .find(|t| t.id.starts_with(&i.id) && t.running())?;
        let stats = (!task.container.is_empty())
            .then(|| {
                crate::compose::docker_stats(
                    self.docker(format!("read the usage of task {}", i.id))
                        .timeout(Some(Duration::from_secs(15))),
                    &task.container,
                )
            })
            .flatten();
        Some(crate::ResourceUsage {
            memory_bytes: stats.map(|s| s.0),
            memory_limit_bytes: task.memory_limit,
            cpus: stats.and_then(|s| s.1),
            cpus_limit: task.nano_cpus.map(|n| n as f64 / 1e9),
            background: None,
            pids: stats.and_then(|s| s.2),
            pids_limit: task.pids_limit,
            oom_kills: None,
        })
    }

    fn refresh(&self) {
        self.forget();
    }

    fn logs(&self, product: &str, slot: Slot, service: &str, lines: usize) -> String {
        let Ok(masker) = self.masker(product) else {
            return String::new();
        };
        let name = self.service_name(product, slot, service);
        let out = self
            .docker(format!("read the logs of {product}.{service} ({slot})"))
            .mask_with(&masker)
            .args([
                "service",
                "logs",
                "--no-trunc",
                "--tail",
                &lines.to_string(),
                &name,
            ])
            .timeout(Some(Duration::from_secs(30)))
            .output_unchecked()
            .map(|o| format!("{}{}", o.stdout_str(), o.stderr_str()))
            .unwrap_or_default();
        // Where each task ran and how it ended: what a log alone does not say.
        self.forget();
        let mut tasks = String::new();
        for t in self
            .tasks(product)
            .unwrap_or_default()
            .iter()
            .filter(|t| t.slot == slot && t.service == service)
        {
            tasks.push_str(&format!(
                "task {} on {}: {} (desired {}){}{}\n",
                t.id.chars().take(12).collect::<String>(),
                if t.node_addr.is_empty() {
                    "no node"
                } else {
                    &t.node_addr
                },
                t.state,
                t.desired,
                if t.error.is_empty() {
                    String::new()
                } else {
                    format!(": {}", t.error)
                },
                t.exit_code
                    .filter(|c| *c != 0)
                    .map(|c| format!(", exit {c}"))
                    .unwrap_or_default(),
            ));
        }
        masker.mask(&format!("{out}{tasks}"))
    }

    /// `docker service logs --timestamps --no-trunc --no-resolve` of the slot's service:
    /// every task's lines (with `--follow`, as they are written, until the stream is
    /// dropped), each tagged with the task that wrote it and that task's node. With
    /// [`LogFrom::Run`] only the service's current tasks are shown, not the tasks an
    /// earlier deploy into the same slot replaced.
    fn log_stream(
        &self,
        product: &str,
        slot: Slot,
        service: &str,
        from: LogFrom,
        follow: bool,
    ) -> Result<LogStream, RuntimeError> {
        use std::io::BufRead;
        use std::process::Stdio;
        let name = self.service_name(product, slot, service);
        let c = self
            .docker(format!("read the logs of {product}.{service} ({slot})"))
            .args([
                "service",
                "logs",
                "--timestamps",
                "--no-trunc",
                "--no-resolve",
            ]);
        let mut cmd = crate::compose::log_window(c, from, follow)
            .arg(&name)
            .to_command();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| {
            RuntimeError::Failed(format!(
                "could not read the logs of {product}.{service}: docker: {e}"
            ))
        })?;
        let (tx, rx) = std::sync::mpsc::channel();
        let out = child.stdout.take().expect("piped");
        let err = child.stderr.take().expect("piped");
        // The readers ask the manager which task is which (a runtime of their own: the
        // stream outlives this borrow). docker writes what a task wrote to stderr on
        // its own stderr, with the same prefix.
        let names = std::sync::Arc::new(Mutex::new(TaskNames {
            rt: SwarmRuntime::new(self.manifest.clone(), self.root.clone()),
            product: product.to_string(),
            known: BTreeMap::new(),
        }));
        let run_only = from == LogFrom::Run;
        for reader in [
            Box::new(out) as Box<dyn std::io::Read + Send>,
            Box::new(err) as Box<dyn std::io::Read + Send>,
        ] {
            let tx = tx.clone();
            let names = names.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(reader)
                    .lines()
                    .map_while(Result::ok)
                {
                    let l = match parse_service_log_line(&line) {
                        // What docker itself says (no such service, no manager), as it is.
                        None => LogLine::new(None, line),
                        Some((id, at, text)) => {
                            let task = match names.lock() {
                                Ok(mut n) => n.get(&id),
                                Err(_) => None,
                            };
                            if run_only && task.as_ref().is_some_and(|t| !t.2) {
                                continue;
                            }
                            let (task, node) = match task {
                                Some((short, node, _)) => {
                                    (short, Some(node).filter(|n| !n.is_empty()))
                                }
                                None => (id.chars().take(12).collect(), None),
                            };
                            LogLine {
                                at,
                                text,
                                task: Some(task),
                                node,
                            }
                        }
                    };
                    if tx.send(l).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let child = std::sync::Arc::new(Mutex::new(child));
        let reaper = child.clone();
        std::thread::spawn(move || {
            loop {
                if let Ok(mut c) = reaper.lock()
                    && !matches!(c.try_wait(), Ok(None))
                {
                    return;
                }
                std::thread::sleep(POLL);
            }
        });
        Ok(LogStream::new(rx, move || {
            if let Ok(mut c) = child.lock() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }))
    }

    fn prune(&self, product: &str, keep: &[String]) -> Result<Vec<String>, RuntimeError> {
        if self.settings.registry.trim().is_empty() {
            return Ok(Vec::new());
        }
        self.prune_registry(product, keep)
    }

    /// A Swarm job of the service as `version` (its network, env and secrets); its
    /// output is shown once it ended (a job has no terminal: `tty` is ignored).
    fn run_once(
        &self,
        product: &str,
        service: &str,
        slot: Slot,
        version: &str,
        argv: &[String],
        _tty: bool,
    ) -> Result<i32, RuntimeError> {
        if argv.is_empty() {
            return Err(RuntimeError::Failed("no command to run".into()));
        }
        let (code, log) = self.run_job(product, service, slot, version, argv, "run")?;
        print!("{log}");
        Ok(code as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--runtime swarm` with a manifest made for another runtime: a background
    /// service is refused before berth talks to any engine (it would run without the
    /// priority berth.toml asks for).
    #[test]
    fn a_background_service_is_refused_before_anything_runs() {
        let text = "[project]\nname = \"shop\"\n[deploy.swarm]\nregistry = \"127.0.0.1:1\"\n[products.a.services.web]\nimage = \"a\"\n[products.a.services.batch]\nimage = \"b\"\nlimits = { cpu_priority = \"background\" }\n";
        let m = berth_manifest::parse_str("berth.toml", text)
            .unwrap()
            .manifest;
        let rt = SwarmRuntime::new(m, std::env::temp_dir());
        match rt.preflight("a", false) {
            Err(RuntimeError::Preflight(e)) => {
                assert!(
                    e.contains("a's batch set cpu_priority = \"background\""),
                    "{e}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    /// Services take a pids limit and ulimits from Docker Engine 20.10 (API 1.41) on.
    #[test]
    fn engines_from_20_10_apply_pids_and_nofile() {
        for (v, ok) in [
            ("20.10.24+dfsg1", true),
            ("20.10.0", true),
            ("24.0.7", true),
            ("28.2.2", true),
            ("19.03.15", false),
            ("20.04.0", false),
            ("", false),
        ] {
            assert_eq!(engine_applies_service_limits(v), ok, "{v}");
        }
    }

    /// Secret names fit Docker's 64 characters, stay by content, start with the
    /// product's prefix, and two long keys cut alike still differ.
    #[test]
    fn secret_names_fit_in_64_characters_and_stay_distinct() {
        let short = secret_name("shop", "a", "API_KEY", "v1");
        assert!(short.starts_with("shop-a_API_KEY_"), "{short}");
        assert_eq!(short.len(), "shop-a_API_KEY_".len() + 12);
        assert_ne!(short, secret_name("shop", "a", "API_KEY", "v2"));
        let long =
            |key: &str, value: &str| secret_name("berth-demo-24976", "realestate", key, value);
        let a = long("VITE_CLERK_PUBLISHABLE_KEY", "pk");
        assert!(a.len() <= 64, "{a} is {} long", a.len());
        assert!(a.starts_with("berth-demo-24976-realestate_"), "{a}");
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        );
        assert!(a.ends_with(|c: char| c.is_ascii_alphanumeric()));
        assert_eq!(a, long("VITE_CLERK_PUBLISHABLE_KEY", "pk"));
        assert_ne!(a, long("VITE_CLERK_PUBLISHABLE_KEY", "pk2"));
        assert_ne!(a, long("VITE_CLERK_PUBLISHABLE_KEY_2", "pk"));
    }

    /// An engine in no swarm is told to `docker swarm init`, a worker to point at a
    /// manager; only an active manager passes.
    #[test]
    fn only_an_active_manager_passes_and_the_error_says_what_to_do() {
        assert!(manager_check("active", true, "it").is_ok());
        let inactive = manager_check("inactive", false, "it").unwrap_err();
        assert!(matches!(inactive, RuntimeError::Preflight(_)));
        assert!(
            inactive.to_string().contains("`docker swarm init`"),
            "{inactive}"
        );
        assert!(
            manager_check("", false, "it")
                .unwrap_err()
                .to_string()
                .contains("state `unknown`")
        );
        let worker = manager_check("active", false, "it").unwrap_err();
        assert!(worker.to_string().contains("worker"), "{worker}");
    }

    /// `docker service logs --timestamps --no-trunc --no-resolve` lines, as docker
    /// 20.10 writes them (the time first), and with the time after the prefix.
    #[test]
    fn service_log_lines_give_their_task_time_and_text() {
        let line = "2026-11-30T18:21:48.757177437Z wlh1qbqmqv8ojjpd6212dr2m2.2.pw6fgxhileoij4pgit4mdp6a9@lcdgtkcu5ekfaafzuj09rs3ob    | demo-app: tick 3 at 17 | x";
        let (id, at, text) = parse_service_log_line(line).unwrap();
        assert_eq!(id, "pw6fgxhileoij4pgit4mdp6a9");
        assert_eq!(at, parse_docker_time("2026-11-30T18:21:48.757177437Z"));
        assert!(at.is_some());
        assert_eq!(text, "demo-app: tick 3 at 17 | x");
        let (id, at, text) = parse_service_log_line(
            "svc.1.abc@node1    | 2026-11-30T18:21:48.7Z listening on 0.0.0.0:8011",
        )
        .unwrap();
        assert_eq!(id, "abc");
        assert!(at.is_some());
        assert_eq!(text, "listening on 0.0.0.0:8011");
        // What docker says about itself has no task.
        assert!(parse_service_log_line("Error: No such service: x").is_none());
        assert!(parse_service_log_line("error from daemon | in stream").is_none());
    }
}
