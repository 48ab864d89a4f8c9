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
    }
}
