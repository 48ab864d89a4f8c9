//! The Swarm stack file of one product's slot (`docker stack deploy -c`), rendered at
//! deploy time by the swarm runtime: it names the version's images and the secrets of
//! the product's current values (by name, never a value), so it is not a file `berth
//! render` commits. Every manifest value goes through the template's escaping filters.

use minijinja::context;
use serde::Serialize;

use crate::{HEADER, RenderError, environment, render_one};

/// One service of the stack.
#[derive(Debug, Clone, Serialize)]
pub struct StackService {
    pub name: String,
    /// The full image reference (`registry/name:version`).
    pub image: String,
    /// The container port, if the service listens.
    pub port: Option<u16>,
    /// The slot's port, published in host mode on each node with a task.
    pub published: Option<u16>,
    pub replicas: u32,
    pub env: Vec<(String, String)>,
    pub secrets: Vec<StackSecret>,
    /// Its resource limits (`deploy.resources.limits`, `ulimits`).
    pub limits: StackLimits,
}

/// A service's limits as a stack file writes them. The engine applies cpus and memory
/// to every task; `pids` (`TaskTemplate.Resources.Limits.Pids`) and the `nofile` ulimit
/// (`ContainerSpec.Ulimits`) need Docker Engine 20.10 (API 1.41): `None` leaves them
/// out for an older engine (the runtime says so, or refuses under `enforce = "strict"`).
#[derive(Debug, Clone, Serialize)]
pub struct StackLimits {
    /// A decimal number of CPUs (`0.5`).
    pub cpus: String,
    /// Bytes with the `b` unit.
    pub memory: String,
    pub pids: Option<u64>,
    pub nofile: Option<u64>,
}

impl StackLimits {
    /// `l` as written for an engine that can (`pids_and_nofile`) or cannot apply the
    /// process and open-file limits to services.
    pub fn new(l: berth_manifest::EffectiveLimits, pids_and_nofile: bool) -> Self {
        Self {
            cpus: crate::docker_cpus(l.cpus),
            memory: format!("{}b", l.memory),
            pids: pids_and_nofile.then_some(l.pids),
            nofile: pids_and_nofile.then_some(l.nofile),
        }
    }
}

/// A Docker secret granted to a service, read at `/run/secrets/<target>`.
#[derive(Debug, Clone, Serialize)]
pub struct StackSecret {
    /// The Docker secret's name (versioned by its content).
    pub name: String,
    /// The file name under /run/secrets.
    pub target: String,
    /// The variable that names the file (`<KEY>_FILE`).
    pub env: String,
    /// `/run/secrets/<target>`.
    pub path: String,
}

/// Everything a slot's stack file says.
#[derive(Debug, Clone, Serialize)]
pub struct Stack {
    pub product: String,
    pub slot: String,
    pub version: String,
    /// The product's overlay network (created by the runtime, external here).
    pub network: String,
    /// `key`, `value` of the node label tasks are placed on.
    pub label_key: String,
    pub label_value: String,
    /// `name:address` to add to each task's /etc/hosts (the host PostgreSQL / Redis run on).
    pub host_gateway: Option<String>,
    pub services: Vec<StackService>,
}

/// Render `stack` as a compose file for `docker stack deploy`.
pub fn render_stack(stack: &Stack) -> Result<String, RenderError> {
    let mut secrets: Vec<&str> = stack
        .services
        .iter()
        .flat_map(|s| s.secrets.iter().map(|x| x.name.as_str()))
        .collect();
    secrets.sort();
    secrets.dedup();
    let constraint = format!("node.labels.{} == {}", stack.label_key, stack.label_value);
    render_one(
        &environment(),
        "swarm-stack.yml",
        context! {
            header => HEADER,
            product => &stack.product,
            slot => &stack.slot,
            version => &stack.version,
            network => &stack.network,
            label_key => &stack.label_key,
            label_value => &stack.label_value,
            constraint => constraint,
            host_gateway => &stack.host_gateway,
            services => &stack.services,
            secrets => secrets,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Manifest values land quoted (a `$` doubled, a newline escaped): a value cannot
    /// add a key, and docker's interpolation never sees it.
    #[test]
    fn values_are_escaped_and_the_file_parses() {
        let stack = Stack {
            product: "bestays".into(),
            slot: "green".into(),
            version: "0123456789ab".into(),
            network: "p-bestays".into(),
            label_key: "berth.product".into(),
            label_value: "bestays".into(),
            host_gateway: Some("host.docker.internal:100.64.1.1".into()),
            services: vec![StackService {
                name: "server".into(),
                image: "reg:5000/p-bestays-server:0123456789ab".into(),
                port: Some(8011),
                published: Some(18011),
                replicas: 2,
                env: vec![("APP".into(), "a $HOME\nx: injected".into())],
                secrets: vec![StackSecret {
                    name: "bestays_KEY_abcdef012345".into(),
                    target: "KEY".into(),
                    env: "KEY_FILE".into(),
                    path: "/run/secrets/KEY".into(),
                }],
                limits: StackLimits::new(
                    berth_manifest::EffectiveLimits {
                        cpus: 0.5,
                        memory: 64 << 20,
                        pids: 200,
                        nofile: 1000,
                        ..Default::default()
                    },
                    true,
                ),
            }],
        };
        let text = render_stack(&stack).unwrap();
        assert!(text.contains("a $$HOME\\nx: injected"), "{text}");
        assert!(!text.contains("\nx: injected"), "{text}");
        assert!(text.contains("mode: host"));
        assert!(text.contains("endpoint_mode: dnsrr"));
        assert!(text.contains("max_replicas_per_node: 1"));
        assert!(text.contains("node.labels.berth.product == bestays"));
        assert!(
            text.contains("\"bestays_KEY_abcdef012345\":\n    external: true"),
            "{text}"
        );
        let v: serde_norway::Value = serde_norway::from_str(&text).unwrap();
        let server = &v["services"]["server"];
        let limits = &server["deploy"]["resources"]["limits"];
        assert_eq!(limits["cpus"].as_str(), Some("0.5"), "{text}");
        assert_eq!(limits["memory"].as_str(), Some("67108864b"), "{text}");
        assert_eq!(limits["pids"].as_u64(), Some(200), "{text}");
        assert_eq!(server["ulimits"]["nofile"]["soft"].as_u64(), Some(1000));
        assert_eq!(server["ulimits"]["nofile"]["hard"].as_u64(), Some(1000));
    }

    /// For an engine older than 20.10 the process and open-file limits are left out
    /// (the engine would refuse or ignore them); cpus and memory stay.
    #[test]
    fn an_old_engine_gets_cpus_and_memory_only() {
        let l = StackLimits::new(berth_manifest::EffectiveLimits::default(), false);
        assert_eq!((l.pids, l.nofile), (None, None));
        assert_eq!(l.cpus, "1.0");
        assert_eq!(l.memory, format!("{}b", 1u64 << 30));
    }
}
