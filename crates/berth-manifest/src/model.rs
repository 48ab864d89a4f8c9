//! The berth.toml data model. Every table denies unknown keys, so a typo is an
//! error that points at the key, never a silently ignored setting.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;

/// berth.toml: the single source of truth for every product in the monorepo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The project (the monorepo) as a whole.
    pub project: Project,
    /// Commit, branch and task naming conventions enforced by `berth lint`.
    #[serde(default)]
    pub conventions: Conventions,
    /// Shared infrastructure: PostgreSQL and Redis.
    #[serde(default)]
    pub infra: Infra,
    /// The nginx front door. Without it a deploy restarts in place (not zero-downtime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<Proxy>,
    /// HTTPS for the products' domains: ACME certificates berth issues and renews,
    /// or certificate files you bring. Without it, `berth render --env prod` serves
    /// `<certs_dir>/<first domain>/{fullchain,privkey}.pem` (mode `files`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    /// How deploys run.
    #[serde(default)]
    pub deploy: Deploy,
    /// Where deploy locks and the audit log live.
    #[serde(default)]
    pub state: State,
    /// Who hears about deploys: a JSON webhook, Grafana annotations, Sentry deploys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
    /// `berth serve`: where it listens (and the rendered Prometheus scrapes it).
    #[serde(default)]
    pub serve: Serve,
    /// What the secret scan of `berth check` looks at.
    #[serde(default)]
    pub secret_scan: SecretScan,
    /// Backups: where they go, when they run, how long they are kept.
    #[serde(default)]
    pub backup: Backup,
    /// The GitHub workflow `berth render` writes: how its jobs install berth.
    #[serde(default, skip_serializing_if = "Ci::is_default")]
    pub ci: Ci,
    /// Resource limits of every service (CPUs, memory, processes, open files), unless
    /// its product's or its own `limits` say otherwise [defaults: cpus 1.0, memory
    /// "1GiB", pids 1024, nofile 4096].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<crate::limits::Limits>,
    /// Path groups shared by several products (e.g. `apps/server/**`).
    #[serde(default)]
    pub shared: IndexMap<String, SharedGroup>,
    /// The products, keyed by their slug (`bestays`).
    #[serde(default)]
    pub products: IndexMap<String, Product>,
}

/// `[project]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Project {
    /// Name of the monorepo.
    pub name: String,
    /// Product that a commit naming no product is attributed to. Empty by
    /// default: berth never guesses unless told, and warns when it falls back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_product: Option<String>,
}

/// `[conventions]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Conventions {
    /// Regex for task references; must capture `number` and `slug`.
    pub task_pattern: String,
    /// Regex for story references; must capture `number`.
    pub story_pattern: String,
    /// Regex a branch name must match (`berth lint branch`).
    pub branch_pattern: String,
    /// Whether every commit must reference a task.
    pub require_task: bool,
    /// Git trailers every commit must carry (e.g. `["Product"]`).
    pub required_trailers: Vec<String>,
    /// Long-lived branches exempt from `branch_pattern` (globs).
    pub branch_exempt: Vec<String>,
}

pub const DEFAULT_TASK_PATTERN: &str = r"TASK-(?P<number>\d+)-(?P<slug>[a-z0-9]+(?:-[a-z0-9]+)*)";
pub const DEFAULT_STORY_PATTERN: &str = r"US-(?P<number>\d+)";
pub const DEFAULT_BRANCH_PATTERN: &str = r"^(feat|fix|chore|docs|refactor|perf|test|build|ci|style|revert|hotfix)/TASK-\d+-[a-z0-9]+(-[a-z0-9]+)*(-US-\d+)?$";

impl Default for Conventions {
    fn default() -> Self {
        Self {
            task_pattern: DEFAULT_TASK_PATTERN.into(),
            story_pattern: DEFAULT_STORY_PATTERN.into(),
            branch_pattern: DEFAULT_BRANCH_PATTERN.into(),
            require_task: true,
            required_trailers: Vec::new(),
            branch_exempt: ["main", "master", "develop", "trunk", "release/*", "HEAD"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// `[infra]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Infra {
    /// The PostgreSQL server every product's database lives on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<InfraService>,
    /// The Redis server every product's key space lives in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<InfraService>,
}

/// How a piece of shared infrastructure is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InfraMode {
    /// berth runs it as a container in the shared infra compose project.
    Container,
    /// It runs elsewhere; berth reaches it through an admin URL held in an environment variable.
    External,
}

/// `[infra.postgres]` / `[infra.redis]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InfraService {
    /// `container` (berth runs it) or `external` (admin URL from the environment).
    pub mode: InfraMode,
    /// Container image (container mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Host port it is published on (container mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Name of the environment variable holding the admin URL (external mode). Never the URL itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_url_env: Option<String>,
    /// Host the products' services use to reach it [default: the service name
    /// (`postgres`, `redis`) in container mode; when external, `host.docker.internal`
    /// for services in containers (the host itself, through `extra_hosts: host-gateway`)
    /// and `localhost` for local processes].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_host: Option<String>,
    /// Port the products' containers use to reach it [default: 5432 / 6379].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_port: Option<u16>,
}

impl InfraService {
    /// Host and port the products use, with the defaults applied; `in_containers`:
    /// whether the product's services run in containers (see [`Manifest::in_containers`]).
    pub fn app_address(
        &self,
        service: &str,
        default_port: u16,
        in_containers: bool,
    ) -> (String, u16) {
        let host = self.app_host.clone().unwrap_or_else(|| match self.mode {
            InfraMode::Container => service.to_string(),
            InfraMode::External if in_containers => HOST_GATEWAY_NAME.to_string(),
            InfraMode::External => "localhost".to_string(),
        });
        (host, self.app_port.unwrap_or(default_port))
    }
}

/// The name containers reach their host by: the rendered compose maps it to the
/// host's gateway address (`extra_hosts: host-gateway`).
pub const HOST_GATEWAY_NAME: &str = "host.docker.internal";

/// Whether `host` names this machine's loopback (`localhost`, `127.x`, `::1`): inside a
/// container that is the container itself.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.to_ascii_lowercase().ends_with(".localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The Docker network both slots of a product join when it runs in containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductNetwork {
    /// `<project>-<product>`.
    pub name: String,
    /// An IPv4 /24 in 10.200.0.0-10.249.255.0, fixed by the project and product names,
    /// so `pg_hba.conf` can allow exactly it.
    pub subnet: String,
}

impl Manifest {
    /// How long the old slot of `product` stays a warm standby after a switch: its
    /// `[products.<name>.deploy] standby`, else `[deploy] standby` (zero: none).
    pub fn standby(&self, product: &str) -> std::time::Duration {
        self.products
            .get(product)
            .and_then(|p| p.deploy.as_ref())
            .and_then(|d| d.standby)
            .unwrap_or(self.deploy.standby)
            .0
    }

    /// The host port of a service in its blue slot (`green`: false) or its green slot:
    /// `host_port` (or `port`), green `[deploy] slot_port_offset` above it. The one
    /// slot-to-port rule (`berth_runtime::slot_port` and the rendered compose files use it).
    pub fn slot_host_port(&self, svc: &Service, green: bool) -> Option<u16> {
        let hp = svc.host_port.or(svc.port)?;
        if green {
            hp.checked_add(self.deploy.slot_port_offset)
        } else {
            Some(hp)
        }
    }

    /// Whether a product's services run in containers: the compose runtime, or `auto`
    /// with a service that builds or names an image.
    pub fn in_containers(&self, product: &str) -> bool {
        match self.deploy.runtime {
            RuntimeKind::Local => false,
            RuntimeKind::Compose | RuntimeKind::Swarm => true,
            RuntimeKind::Auto => self.products.get(product).is_some_and(|p| {
                p.services
                    .values()
                    .any(|s| s.build.is_some() || s.image.is_some())
            }),
        }
    }

    /// The network of `product`'s containers. Subnets come from a hash of the names;
    /// products whose hashes meet are spread in name order, so each has its own.
    pub fn product_network(&self, product: &str) -> ProductNetwork {
        let project = crate::slug(&self.project.name);
        let slot_of = |name: &str| -> u32 {
            // FNV-1a: stable across builds and platforms.
            let mut h: u32 = 0x811c_9dc5;
            for b in format!("{project}/{name}").bytes() {
                h ^= b as u32;
                h = h.wrapping_mul(0x0100_0193);
            }
            h % (50 * 256)
        };
        let mut names: Vec<&str> = self.products.keys().map(String::as_str).collect();
        if !names.contains(&product) {
            names.push(product);
        }
        names.sort_unstable();
        let mut taken: Vec<u32> = Vec::new();
        let mut mine = 0;
        for n in names {
            let mut s = slot_of(n);
            while taken.contains(&s) {
                s = (s + 1) % (50 * 256);
            }
            taken.push(s);
            if n == product {
                mine = s;
            }
        }
        ProductNetwork {
            name: format!("{project}-{product}"),
            subnet: format!("10.{}.{}.0/24", 200 + mine / 256, mine % 256),
        }
    }

    /// Host and port `product`'s services reach PostgreSQL (`postgres`) or Redis
    /// (`redis`) at, with the defaults applied; `None` without that infrastructure.
    pub fn app_address(&self, product: &str, kind: &str) -> Option<(String, u16)> {
        let (infra, port) = match kind {
            "postgres" => (self.infra.postgres.as_ref(), 5432),
            _ => (self.infra.redis.as_ref(), 6379),
        };
        infra.map(|i| i.app_address(kind, port, self.in_containers(product)))
    }
}

/// `[proxy]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Proxy {
    /// The nginx main configuration berth manages, relative to berth.toml (e.g.
    /// `deploy/prod/nginx/nginx.conf` from `berth render`). Deploys rewrite the
    /// `upstreams/<product>.conf` beside it.
    pub nginx_config: String,
    /// Command that reloads nginx gracefully; `{root}` is the directory of berth.toml, `{config}` the config.
    #[serde(default = "default_reload")]
    pub reload_command: String,
    /// Command that tests the nginx configuration before a reload.
    #[serde(default = "default_test")]
    pub test_command: String,
    /// Command that starts nginx when it is not running.
    #[serde(default = "default_start")]
    pub start_command: String,
    /// Port nginx listens on for HTTP.
    #[serde(default = "default_http_port")]
    pub http_port: u16,
    /// Port nginx listens on for HTTPS (prod).
    #[serde(default = "default_https_port")]
    pub https_port: u16,
    /// Directory holding `<domain>/fullchain.pem` and `<domain>/privkey.pem` (prod TLS).
    #[serde(default = "default_certs_dir")]
    pub certs_dir: String,
    /// IP address (v4 or v6) every nginx `listen` binds [default: every interface, as a
    /// front door should]. `127.0.0.1` keeps a dev or test nginx off the network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// How long nginx waits for an answer from a slot's address (between two reads)
    /// before it gives up on it; an idempotent request (GET, HEAD, ...) then goes to the
    /// slot's next address. A request in flight on a node that died waits this long
    /// before it is retried, so a slot with several addresses (swarm replicas) wants it
    /// shorter than its clients' patience; at least 1s [default: 60s, nginx's own].
    #[serde(default = "default_read_timeout")]
    pub read_timeout: HumanDuration,
}

impl Proxy {
    /// `proxy_read_timeout` as nginx reads it (milliseconds).
    pub fn nginx_read_timeout(&self) -> String {
        match self.read_timeout.0.as_millis() {
            ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
            ms => format!("{ms}ms"),
        }
    }
    /// The address part of an nginx `listen` directive: `""` (every interface),
    /// `127.0.0.1:` or `[::1]:`. Only meaningful for a validated `listen`.
    pub fn listen_prefix(&self) -> String {
        match self
            .listen
            .as_deref()
            .map(|l| l.trim_start_matches('[').trim_end_matches(']'))
            .and_then(|l| l.parse::<std::net::IpAddr>().ok())
        {
            None => String::new(),
            Some(std::net::IpAddr::V4(a)) => format!("{a}:"),
            Some(std::net::IpAddr::V6(a)) => format!("[{a}]:"),
        }
    }
}

/// `[ci]`: how the rendered GitHub workflow installs berth. At most one of
/// `berth_version`, `berth_url` and `install_command`; without any, the version of the
/// berth that rendered the workflow is installed from crates.io.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Ci {
    /// A berth release on crates.io: `cargo install berth --version <it> --locked`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub berth_version: Option<String>,
    /// An `https://` URL of a berth binary (linux x86_64), downloaded onto the PATH.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub berth_url: Option<String>,
    /// A shell command (one line) that installs berth onto the PATH.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub install_command: Option<String>,
}

impl Ci {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

fn default_http_port() -> u16 {
    80
}
fn default_https_port() -> u16 {
    443
}
fn default_read_timeout() -> HumanDuration {
    HumanDuration::from_secs(60)
}
fn default_certs_dir() -> String {
    "/etc/letsencrypt/live".into()
}

/// `[proxy] reload_command` when berth.toml names none.
pub const DEFAULT_RELOAD_COMMAND: &str = "nginx -p {root} -c {config} -s reload";

fn default_reload() -> String {
    DEFAULT_RELOAD_COMMAND.into()
}
fn default_test() -> String {
    "nginx -p {root} -c {config} -t -q".into()
}
fn default_start() -> String {
    "nginx -p {root} -c {config}".into()
}

/// Which runtime runs the services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// `compose` when a Docker Engine answers, `local` otherwise.
    #[default]
    Auto,
    /// Local processes from each service's `command` (pid and log files under `.berth/run/`).
    Local,
    /// Docker Compose v2 on a Docker Engine (`DOCKER_HOST` or the current docker context).
    Compose,
    /// Docker Swarm: each product's services as Swarm services on the nodes carrying
    /// its label, images shipped through a registry (`[deploy.swarm]`).
    Swarm,
}

impl RuntimeKind {
    /// Whether this kind needs a Docker Engine to run anything (compose, swarm).
    pub fn needs_docker(self) -> bool {
        matches!(self, Self::Compose | Self::Swarm)
    }

    /// Whether this kind may run on a Docker Engine (`auto` picks compose when one
    /// answers): what the machine must start first, and whether `berth render` writes
    /// the compose files.
    pub fn may_use_docker(self) -> bool {
        self != Self::Local
    }
}

/// `[deploy]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Deploy {
    /// The runtime: `auto`, `local`, `compose` or `swarm`.
    pub runtime: RuntimeKind,
    /// Images (versions) kept per product for instant rollbacks.
    pub keep: usize,
    /// Time the old slot keeps serving in-flight requests after the switch.
    pub drain: HumanDuration,
    /// The green slot listens on `host_port + slot_port_offset` (blue on `host_port`).
    pub slot_port_offset: u16,
    /// Warm standby: how long the old slot keeps running, without traffic, after a
    /// switch; within it `berth rollback` is only a switch back (no start, no
    /// migration). `"0"` stops the old slot right after its drain.
    pub standby: HumanDuration,
    /// The swarm runtime's cluster: its manager, registry and where each product runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm: Option<SwarmSettings>,
}

/// `[deploy.swarm]`: the Docker Swarm a `runtime = "swarm"` deploy runs on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SwarmSettings {
    /// How berth reaches a manager node: a `DOCKER_HOST` value (`unix:///run/docker.sock`,
    /// `ssh://admin@manager`, `tcp://manager:2376`). Unset: berth's own `DOCKER_HOST` or
    /// docker context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<String>,
    /// A docker context naming the manager (instead of `manager`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// The registry images are pushed to and every node pulls from (`host:port`, plain
    /// HTTP or trusted by the nodes).
    pub registry: String,
    /// The address of the machine PostgreSQL and Redis run on, as the nodes reach it:
    /// tasks resolve `host.docker.internal` to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_address: Option<String>,
    /// Per product: the node label its tasks are placed on and its replicas.
    #[serde(default)]
    pub products: IndexMap<String, SwarmProduct>,
}

/// `[deploy.swarm.products.<name>]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SwarmProduct {
    /// `key=value` of the node label the product's tasks are placed on
    /// [default: `berth.product=<product>`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_label: Option<String>,
    /// Tasks per service (`{ server = 2 }`); a service not named runs one. At most one
    /// task of a service per node (its published port), so the label needs as many nodes.
    #[serde(default)]
    pub replicas: IndexMap<String, u32>,
}

impl SwarmSettings {
    /// The node label (`key`, `value`) `product`'s tasks are placed on.
    pub fn node_label(&self, product: &str) -> (String, String) {
        let label = self
            .products
            .get(product)
            .and_then(|p| p.node_label.clone())
            .unwrap_or_else(|| format!("berth.product={product}"));
        match label.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (label, String::new()),
        }
    }

    /// How many tasks `service` of `product` runs.
    pub fn replicas(&self, product: &str, service: &str) -> u32 {
        self.products
            .get(product)
            .and_then(|p| p.replicas.get(service).copied())
            .unwrap_or(1)
    }
}

/// The longest warm standby berth.toml may ask for: a standby holds its memory.
pub const MAX_STANDBY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

impl Default for Deploy {
    fn default() -> Self {
        Self {
            runtime: RuntimeKind::Auto,
            keep: 5,
            drain: HumanDuration::from_secs(2),
            slot_port_offset: 10000,
            standby: HumanDuration::from_secs(300),
            swarm: None,
        }
    }
}

/// `[products.<name>.deploy]`: per-product overrides of `[deploy]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductDeploy {
    /// This product's warm standby (instead of `[deploy] standby`); `"0"` turns it off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby: Option<HumanDuration>,
}

/// Where locks and the audit log live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StateBackend {
    /// OS file locks and `.berth/audit.jsonl` on this machine.
    #[default]
    Local,
    /// PostgreSQL advisory locks and a `berth_audit` table on a shared server (team and CI use).
    Postgres,
}

/// `[state]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct State {
    /// `local` or `postgres`.
    pub backend: StateBackend,
    /// Environment variable holding the PostgreSQL URL (postgres backend). Never the URL itself.
    pub url_env: String,
}

impl Default for State {
    fn default() -> Self {
        Self {
            backend: StateBackend::Local,
            url_env: "BERTH_STATE_URL".into(),
        }
    }
}

/// A deploy outcome that can notify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NotifyEvent {
    /// A deploy went live.
    Success,
    /// A deploy or rollback failed (the old version kept serving).
    Failure,
    /// A rollback went live.
    Rollback,
}

/// `[notify]`: notifications sent after every deploy or rollback outcome. A failed
/// notification is logged and never fails the deploy. Secrets are named by the
/// environment variable holding them, never written here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// Which outcomes notify [default: all of `success`, `failure`, `rollback`].
    #[serde(default = "all_notify_events")]
    pub on: Vec<NotifyEvent>,
    /// How long each notification may take before it is given up.
    #[serde(default = "default_notify_timeout")]
    pub timeout: HumanDuration,
    /// A generic JSON webhook (POST).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<NotifyWebhook>,
    /// A Grafana annotation per outcome (`POST /api/annotations`, tagged with the product).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grafana: Option<NotifyGrafana>,
    /// A Sentry deploy of the product's release (`<product>@<version>`) per successful deploy or rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentry: Option<NotifySentry>,
}

fn all_notify_events() -> Vec<NotifyEvent> {
    vec![
        NotifyEvent::Success,
        NotifyEvent::Failure,
        NotifyEvent::Rollback,
    ]
}
fn default_notify_timeout() -> HumanDuration {
    HumanDuration::from_secs(5)
}

/// `[notify.webhook]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifyWebhook {
    /// Environment variable holding the webhook URL (such URLs are often secrets themselves).
    pub url_env: String,
}

/// `[notify.grafana]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifyGrafana {
    /// Base URL of Grafana, e.g. `https://grafana.example.com`.
    pub url: String,
    /// Environment variable holding a Grafana service-account token.
    pub token_env: String,
    /// Put the annotations on this dashboard only [default: organisation-wide].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard_uid: Option<String>,
    /// Extra tags on every annotation (the product, `berth` and the outcome are always there).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// `[notify.sentry]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifySentry {
    /// Base URL of Sentry.
    #[serde(default = "default_sentry_url")]
    pub url: String,
    /// The organisation slug.
    pub org: String,
    /// The Sentry project of every product; `{product}` is replaced by the product's name [default: `{product}`].
    #[serde(default = "default_sentry_project")]
    pub project: String,
    /// Environment variable holding a Sentry auth token (scope `project:releases`).
    pub token_env: String,
    /// The Sentry environment deploys go to.
    #[serde(default = "default_sentry_environment")]
    pub environment: String,
}

fn default_sentry_url() -> String {
    "https://sentry.io".into()
}
fn default_sentry_project() -> String {
    "{product}".into()
}
fn default_sentry_environment() -> String {
    "production".into()
}

/// `[serve]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Serve {
    /// Address `berth serve` listens on (`--listen` overrides it).
    pub listen: String,
    /// Environment variable holding its bearer token (`--token-env` overrides it). The
    /// rendered Prometheus reads the token from `/etc/berth/<project>-serve.token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
}

impl Default for Serve {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9400".into(),
            token_env: None,
        }
    }
}

/// Which scheduler runs the nightly backups `berth render` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scheduler {
    /// A systemd service and timer per product (`deploy/<env>/systemd/`).
    #[default]
    Systemd,
    /// One cron file (`deploy/<env>/cron/berth-backups`) for `/etc/cron.d`.
    Cron,
}

/// `[backup]`: defaults for every product's backups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Backup {
    /// Directory (relative to berth.toml, or absolute) under which each product gets
    /// `<dir>/<product>/`.
    pub dir: String,
    /// Daily time (UTC, `HH:MM`) the scheduled backup runs.
    pub schedule: String,
    /// `systemd` (a timer per product, in UTC) or `cron` (the host's local time: keep it UTC).
    pub scheduler: Scheduler,
    /// zstd compression level (1-19; 3 is fast and small).
    pub level: i32,
    /// Compression threads (0: one per CPU core).
    pub threads: u32,
    /// Keep the newest backup of each of the last N days.
    pub keep_days: u32,
    /// Keep the newest backup of each of the last N ISO weeks.
    pub keep_weeks: u32,
    /// Keep the newest backup of each of the last N months.
    pub keep_months: u32,
    /// age recipients (`age1...` public keys): when set, backups are encrypted to them.
    pub recipients: Vec<String>,
    /// Also save the product's Redis keys (SCAN on its prefix, DUMP) into a second file.
    pub redis: bool,
    /// Off-site copies through rclone: every backup and its record are uploaded right
    /// after they are written, verified there by reading back size and sha256, and
    /// pruned there with the same policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offsite: Option<Offsite>,
}

/// `[backup.offsite]`: where the off-site copies go. Credentials live in rclone's own
/// config file, outside the repository, never here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Offsite {
    /// An rclone remote and path, `<remote>:<path>` (e.g. `offsite:berth-backups`): a
    /// remote defined in rclone's config file; each product goes under
    /// `<remote>:<path>/<product>/`.
    pub remote: String,
    /// rclone's config file (absolute, outside the repository). Default: rclone's own
    /// (`RCLONE_CONFIG`, else `~/.config/rclone/rclone.conf`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
}

impl Default for Backup {
    fn default() -> Self {
        Self {
            dir: "backups".into(),
            schedule: "03:00".into(),
            scheduler: Scheduler::Systemd,
            level: 3,
            threads: 0,
            keep_days: 7,
            keep_weeks: 4,
            keep_months: 6,
            recipients: Vec::new(),
            redis: false,
            offsite: None,
        }
    }
}

/// Why an off-site remote string cannot be used: berth passes it to rclone as one
/// argument (never through a shell), but a leading `-` would read as an option, an
/// on-the-fly `:backend,key=value:` remote would put credentials in berth.toml, and
/// control characters would garble logs.
pub fn check_offsite_remote(remote: &str) -> Result<(), String> {
    if remote.starts_with('-') {
        return Err("it starts with `-`, which rclone would read as an option".into());
    }
    if remote.chars().any(char::is_control) {
        return Err("it holds a control character".into());
    }
    let Some((name, path)) = remote.split_once(':') else {
        return Err("it has no `:`: a local path is not off-site".into());
    };
    if name.is_empty() {
        return Err("an on-the-fly `:backend:` remote would carry its settings (and credentials) in berth.toml".into());
    }
    if name.starts_with(' ')
        || name.ends_with(' ')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-. +@".contains(c))
    {
        return Err(format!(
            "`{name}` is not an rclone remote name (letters, digits, `_ - . + @` and inner spaces; no `,` connection-string settings)"
        ));
    }
    if path.split('/').any(|s| s == "..") {
        return Err("its path climbs with `..`".into());
    }
    Ok(())
}

/// `[products.<name>.backup]`: per-product overrides of `[backup]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductBackup {
    /// Schedule and keep this product's backups (default true when it has a database).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// This product's backup directory (instead of `<[backup] dir>/<product>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    /// Daily time (UTC, `HH:MM`), e.g. to stagger products.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_weeks: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_months: Option<u32>,
    /// age recipients for this product (replace `[backup] recipients`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipients: Option<Vec<String>>,
    /// Also save the product's Redis keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<bool>,
}

/// A product's backup settings with the overrides applied.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupSettings {
    pub enabled: bool,
    /// As written (relative to berth.toml unless absolute).
    pub dir: String,
    pub schedule: String,
    pub scheduler: Scheduler,
    pub level: i32,
    pub threads: u32,
    pub keep_days: u32,
    pub keep_weeks: u32,
    pub keep_months: u32,
    pub recipients: Vec<String>,
    pub redis: bool,
}

impl Manifest {
    /// The backup settings of `product` (`[backup]` with its overrides).
    pub fn backup_settings(&self, product: &str) -> BackupSettings {
        let b = &self.backup;
        let p = self.products.get(product);
        let o = p.and_then(|p| p.backup.clone()).unwrap_or_default();
        BackupSettings {
            enabled: o
                .enabled
                .unwrap_or_else(|| p.is_some_and(|p| p.database.is_some())),
            dir: o
                .dir
                .unwrap_or_else(|| format!("{}/{product}", b.dir.trim_end_matches('/'))),
            schedule: o.schedule.unwrap_or_else(|| b.schedule.clone()),
            scheduler: b.scheduler,
            level: b.level,
            threads: b.threads,
            keep_days: o.keep_days.unwrap_or(b.keep_days),
            keep_weeks: o.keep_weeks.unwrap_or(b.keep_weeks),
            keep_months: o.keep_months.unwrap_or(b.keep_months),
            recipients: o.recipients.unwrap_or_else(|| b.recipients.clone()),
            redis: o.redis.unwrap_or(b.redis),
        }
    }
}

/// `[secret_scan]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SecretScan {
    /// Globs of tracked files the secret scan skips (e.g. test fixtures with fake keys).
    pub exclude: Vec<String>,
}

/// `[shared.<group>]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SharedGroup {
    /// Path globs; a change under them affects every product that depends on this group.
    pub paths: Vec<String>,
}

/// `[products.<name>]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Product {
    /// Human name (`"BeStays"`): one line of printable text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Path globs this product owns; a path may be owned by one product only.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Words that name this product in task slugs (`login-bestays`).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Domains served for this product.
    #[serde(default)]
    pub domains: Vec<String>,
    /// The product's own database and role on the shared PostgreSQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<Database>,
    /// The product's own Redis database number and key prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisSpace>,
    /// Names of `[shared.<group>]` entries whose changes affect this product.
    #[serde(default)]
    pub depends_on_shared: Vec<String>,
    /// The product's services (containers or local processes).
    #[serde(default)]
    pub services: IndexMap<String, Service>,
    /// Overrides of `[backup]` for this product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<ProductBackup>,
    /// Overrides of `[deploy]` for this product (its warm standby).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<ProductDeploy>,
    /// Resource limits of each of this product's services (over `[limits]`; a service's
    /// own `limits` win).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<crate::limits::Limits>,
    /// Overrides of `[tls]` for this product (its mode, or its own certificate files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ProductTls>,
}

/// How a product's domains get their certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// berth issues one certificate per product from an ACME CA (HTTP-01 through
    /// its nginx) and renews it (`berth tls issue`, `berth tls renew`).
    Acme,
    /// Certificate files you bring (a Cloudflare origin certificate, a corporate CA).
    Files,
    /// Plain HTTP only.
    Off,
}

/// `[tls]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// `acme`, `files` or `off` for every product without its own `[products.<name>.tls]`.
    #[serde(default = "default_tls_mode")]
    pub mode: TlsMode,
    /// The ACME CA (mode `acme`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acme: Option<Acme>,
}

fn default_tls_mode() -> TlsMode {
    TlsMode::Acme
}

/// `[tls.acme]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Acme {
    /// `letsencrypt`, `letsencrypt-staging`, or the `https://` URL of any RFC 8555 directory.
    #[serde(default = "default_acme_directory")]
    pub directory: String,
    /// Contact email the CA writes to about expiring certificates and problems.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// External account binding: the name of the environment variable holding the key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eab_kid_env: Option<String>,
    /// External account binding: the name of the environment variable holding the
    /// base64url HMAC key (never the key itself: berth.toml is committed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eab_hmac_env: Option<String>,
    /// A PEM file of the root CA the directory's own HTTPS certificate chains to (a
    /// private CA), relative to berth.toml; the system roots otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_ca: Option<String>,
}

fn default_acme_directory() -> String {
    "letsencrypt".into()
}

/// The directory URL Let's Encrypt's production CA answers at.
pub const LETSENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// The directory URL of Let's Encrypt's staging CA.
pub const LETSENCRYPT_STAGING_DIRECTORY: &str =
    "https://acme-staging-v02.api.letsencrypt.org/directory";

impl Acme {
    /// The directory URL (`letsencrypt` and `letsencrypt-staging` resolved).
    pub fn directory_url(&self) -> &str {
        match self.directory.as_str() {
            "letsencrypt" => LETSENCRYPT_DIRECTORY,
            "letsencrypt-staging" => LETSENCRYPT_STAGING_DIRECTORY,
            url => url,
        }
    }
}

/// `[products.<name>.tls]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductTls {
    /// This product's mode [default: `[tls] mode`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<TlsMode>,
    /// Mode `files`: the certificate chain (PEM), relative to berth.toml or absolute
    /// [default: `<proxy.certs_dir>/<first domain>/fullchain.pem`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    /// Mode `files`: the private key (PEM) [default: `<proxy.certs_dir>/<first domain>/privkey.pem`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl Manifest {
    /// How `product`'s domains get their certificate in a prod render: its own
    /// `[products.<name>.tls] mode`, else `[tls] mode`, else `files` (the
    /// `certs_dir` layout berth always served).
    pub fn tls_mode(&self, product: &str) -> TlsMode {
        self.products
            .get(product)
            .and_then(|p| p.tls.as_ref())
            .and_then(|t| t.mode)
            .or(self.tls.as_ref().map(|t| t.mode))
            .unwrap_or(TlsMode::Files)
    }

    /// Mode `files`: the certificate chain and key of `product`, as written in
    /// berth.toml (relative to its directory, or absolute).
    pub fn tls_files(&self, product: &str) -> Option<(String, String)> {
        let p = self.products.get(product)?;
        let first = p.domains.first()?;
        let dir = self
            .proxy
            .as_ref()
            .map(|px| px.certs_dir.clone())
            .unwrap_or_else(default_certs_dir);
        let own = p.tls.clone().unwrap_or_default();
        Some((
            own.cert
                .unwrap_or_else(|| format!("{dir}/{first}/fullchain.pem")),
            own.key
                .unwrap_or_else(|| format!("{dir}/{first}/privkey.pem")),
        ))
    }
}

/// `[products.<name>.database]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Database {
    /// Database name (`bestays`).
    pub name: String,
    /// Login role that owns it and alone may connect (`bestays_user`).
    pub role: String,
    /// Scheme of the derived `DATABASE_URL` [default: `postgresql`], e.g.
    /// `postgresql+asyncpg` for SQLAlchemy's async engine. Must start with `postgres`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_scheme: Option<String>,
    /// Extensions `berth provision` creates in the database as the admin
    /// (`CREATE EXTENSION IF NOT EXISTS`), e.g. `["vector"]` for pgvector.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<String>,
}

/// The default scheme of a derived `DATABASE_URL`.
pub const DEFAULT_DATABASE_SCHEME: &str = "postgresql";
/// The default scheme of a derived `REDIS_URL`.
pub const DEFAULT_REDIS_SCHEME: &str = "redis";

impl Database {
    /// The scheme of the derived `DATABASE_URL`.
    pub fn scheme(&self) -> &str {
        self.url_scheme
            .as_deref()
            .unwrap_or(DEFAULT_DATABASE_SCHEME)
    }
}

/// `[products.<name>.redis]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisSpace {
    /// Redis logical database number (0-15).
    pub db: u8,
    /// Key prefix (`[A-Za-z0-9_:.-]+` ending in a separator, e.g. `bestays:`); the product's
    /// ACL user may touch only keys and channels under it. No product's prefix may begin
    /// with another's.
    pub prefix: String,
    /// Scheme of the derived `REDIS_URL` [default: `redis`], e.g. `rediss` for TLS.
    /// Must start with `redis`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_scheme: Option<String>,
}

impl RedisSpace {
    /// The scheme of the derived `REDIS_URL`.
    pub fn scheme(&self) -> &str {
        self.url_scheme.as_deref().unwrap_or(DEFAULT_REDIS_SCHEME)
    }
}

/// `[products.<name>.services.<service>]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Build the image from source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<Build>,
    /// Use a prebuilt image (an OCI reference, `[registry/]name[:tag][@digest]`) instead of building.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Command line for the local-process runtime, run by `sh -c` in `workdir` of the
    /// version's checkout (`.berth/versions/<product>/<version>/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Directory `command`, `migrate` and `build_command` run in under the local runtime,
    /// relative to the repository root (berth.toml's directory); it must exist and stay
    /// inside the repository [default: the root]. Containers use their image's WORKDIR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// Local runtime: run once per version in `workdir` of the version's fresh checkout,
    /// before `migrate` and `command` (create a virtualenv, `npm ci`, compile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_command: Option<String>,
    /// Port the service listens on inside its container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Port published on the host (must be unique across all products).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    /// Publish the port on every interface of the host [default: false: on 127.0.0.1
    /// only, so requests come through the front door (nginx) with its routing and TLS].
    /// For the rare service that must be reached directly.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub public: bool,
    /// nginx location routed to this service (`"/api/"`; `/` then letters, digits and
    /// `._~%!*+,:@=/-`), unique within the product [default: `/` for the first service
    /// with a port, `/<service>/` for the others].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// HTTP health check that gates every deploy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// Migration command run in a one-off container of the new version before it starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrate: Option<String>,
    /// Plain (non-secret) environment variables.
    #[serde(default)]
    pub env: IndexMap<String, String>,
    /// Names of secret environment variables; values live in the product's untracked secret file.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// This service's scheme of `DATABASE_URL`, overriding the product's
    /// `database.url_scheme` (e.g. `postgresql` for a sync migration tool while the app
    /// uses `postgresql+asyncpg`). Must start with `postgres`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_url_scheme: Option<String>,
    /// This service's scheme of `REDIS_URL`, overriding the product's `redis.url_scheme`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_url_scheme: Option<String>,
    /// This service's resource limits (over its product's `limits` and `[limits]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<crate::limits::Limits>,
}

impl Service {
    /// Whether the derived URLs of this service differ in form from its product's.
    pub fn overrides_url_schemes(&self) -> bool {
        self.database_url_scheme.is_some() || self.redis_url_scheme.is_some()
    }
}

/// `build = { context = "...", dockerfile = "...", args = { NAME = "value" } }`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Build {
    /// Build context directory, relative to berth.toml and inside the repository.
    pub context: String,
    /// Dockerfile path, relative to berth.toml (default: `<context>/Dockerfile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<String>,
    /// Build arguments (`docker build --build-arg NAME=value`), not secret: they stay
    /// in the image's history. Services of different products built from the same
    /// context, Dockerfile and args at one version share one image; different args
    /// give a product its own.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub args: IndexMap<String, String>,
}

/// `[products.<name>.services.<service>.health]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// HTTP path probed on the service's port: `/` then letters, digits and `._~%+,:@=/?-`.
    pub path: String,
    /// Time between probes.
    #[serde(default = "default_interval")]
    pub interval: HumanDuration,
    /// Time one probe may take.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Consecutive failures before a running service counts as down.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// How long a new deploy may take to become healthy before it is abandoned.
    #[serde(default = "default_deadline")]
    pub deadline: HumanDuration,
    /// Command the container runs to check itself (compose healthcheck) [default:
    /// curl or wget of `path`]. Images without a shell (`FROM scratch`) need one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
}

fn default_interval() -> HumanDuration {
    HumanDuration::from_secs(2)
}
fn default_timeout() -> HumanDuration {
    HumanDuration::from_secs(1)
}
fn default_retries() -> u32 {
    3
}
fn default_deadline() -> HumanDuration {
    HumanDuration::from_secs(60)
}

impl Product {
    /// The name shown to people: the display name or the slug.
    pub fn title<'a>(&'a self, slug: &'a str) -> &'a str {
        self.display_name.as_deref().unwrap_or(slug)
    }

    /// The nginx location of each service with a port, in service order: its
    /// `route`, or `/` for the first such service and `/<service>/` for the others.
    pub fn routes(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (name, svc) in &self.services {
            if svc.port.is_none() {
                continue;
            }
            let route = svc.route.clone().unwrap_or_else(|| {
                if out.is_empty() {
                    "/".to_string()
                } else {
                    format!("/{name}/")
                }
            });
            out.push((name.clone(), route));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(text: &str) -> Manifest {
        crate::parse_str("berth.toml", text)
            .unwrap_or_else(|d| panic!("{d:?}"))
            .manifest
    }

    const EXTERNAL: &str = r#"
[project]
name = "shop"
[infra.postgres]
mode = "external"
admin_url_env = "PG_ADMIN"
[deploy]
runtime = "RUNTIME"
[products.a.services.web]
image = "a"
port = 80
[products.b.services.web]
command = "b"
"#;

    /// What each runtime kind asks of the machine: a Docker Engine it needs (the
    /// warning `berth provision` gives when none answers) and one it may use (`auto`:
    /// compose files rendered, docker.service started before `berth boot`).
    #[test]
    fn runtime_kinds_say_whether_they_need_or_may_use_docker() {
        use RuntimeKind::*;
        let needs: Vec<_> = [Auto, Local, Compose, Swarm]
            .into_iter()
            .map(RuntimeKind::needs_docker)
            .collect();
        assert_eq!(needs, [false, false, true, true]);
        let may: Vec<_> = [Auto, Local, Compose, Swarm]
            .into_iter()
            .map(RuntimeKind::may_use_docker)
            .collect();
        assert_eq!(may, [true, false, true, true]);
    }

    #[test]
    fn external_infra_is_the_host_gateway_for_containers_and_localhost_for_processes() {
        let auto = manifest(&EXTERNAL.replace("RUNTIME", "auto"));
        assert_eq!(
            auto.app_address("a", "postgres"),
            Some(("host.docker.internal".into(), 5432))
        );
        // Only a `command`: a local process even under `auto`.
        assert_eq!(
            auto.app_address("b", "postgres"),
            Some(("localhost".into(), 5432))
        );
        assert_eq!(auto.app_address("a", "redis"), None);
        let local = manifest(&EXTERNAL.replace("RUNTIME", "local"));
        assert_eq!(
            local.app_address("a", "postgres"),
            Some(("localhost".into(), 5432))
        );
        let compose = manifest(&EXTERNAL.replace("RUNTIME", "compose"));
        assert_eq!(
            compose.app_address("b", "postgres"),
            Some(("host.docker.internal".into(), 5432))
        );
    }

    #[test]
    fn product_networks_are_fixed_distinct_private_subnets() {
        let mut text = String::from("[project]\nname = \"shop\"\n");
        for i in 0..300 {
            text.push_str(&format!("[products.p{i}]\n"));
        }
        let m = manifest(&text);
        let mut seen = std::collections::HashSet::new();
        for i in 0..300 {
            let n = m.product_network(&format!("p{i}"));
            assert_eq!(n.name, format!("shop-p{i}"));
            let octets: Vec<u16> = n
                .subnet
                .trim_end_matches(".0/24")
                .split('.')
                .map(|o| o.parse().unwrap())
                .collect();
            assert_eq!(octets[0], 10, "{}", n.subnet);
            assert!((200..250).contains(&octets[1]), "{}", n.subnet);
            assert!(seen.insert(n.subnet.clone()), "{} twice", n.subnet);
        }
        // The same names give the same subnet on every machine, run and berth version
        // (pg_hba.conf names it): FNV-1a of "shop/p0", computed independently.
        assert_eq!(m.product_network("p0"), m.product_network("p0"));
        let alone = manifest("[project]\nname = \"shop\"\n[products.p0]\n");
        assert_eq!(alone.product_network("p0").subnet, "10.210.34.0/24");
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "LOCALHOST",
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "[::1]",
            "db.localhost",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "host.docker.internal",
            "172.17.0.1",
            "db.internal",
            "10.0.0.1",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}

#[cfg(test)]
mod offsite_tests {
    use super::check_offsite_remote as check;

    #[test]
    fn offsite_remotes_that_could_change_the_rclone_command_are_refused() {
        for ok in [
            "offsite:",
            "offsite:berth",
            "my s3.eu@x:bucket/berth/prod",
            "a_b-c:x",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        for bad in [
            "-offsite:x",
            "--config=/tmp/evil:x",
            ":s3,access_key_id=AKIA,secret_access_key=x:bucket",
            "s3,secret_access_key=x:bucket",
            "/var/backups",
            "offsite:x\ny",
            " offsite:x",
            "offsite:a/../../etc",
            "off;rm -rf /:x",
        ] {
            assert!(check(bad).is_err(), "{bad:?} accepted");
        }
    }
}
