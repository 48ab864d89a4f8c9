//! Can a product's containers reach PostgreSQL and Redis? The probe's answers from
//! inside the product's network, what to change when they cannot, and a one-line
//! diagnosis of a failed migration or health gate that looks like that problem.

use berth_manifest::{InfraMode, Manifest};
use serde::Serialize;

/// One login attempt of the probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reach {
    /// `postgres` or `redis`.
    pub kind: String,
    /// `host:port` as the product's URL names it.
    pub target: String,
    /// The address the host name resolved to inside the container (`-`: it did not).
    pub address: String,
    /// `ok`, or why not: `refused`, `timeout`, `unreachable`, `resolve`, `hba`,
    /// `password`, `protected-mode`, `protocol`, `server`, `io`.
    pub result: String,
    pub detail: String,
}

impl Reach {
    pub fn ok(&self) -> bool {
        self.result == "ok"
    }
}

/// The probe's `check` output.
pub fn parse(out: &str) -> Vec<Reach> {
    out.lines()
        .filter_map(|l| {
            let mut f = l.splitn(5, '\t');
            Some(Reach {
                kind: f.next()?.to_string(),
                target: f.next()?.to_string(),
                address: f.next()?.to_string(),
                result: f.next()?.to_string(),
                detail: f.next().unwrap_or("").to_string(),
            })
        })
        .collect()
}

/// The password in `scheme://user:password@host...`, to mask it.
pub fn password_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let userinfo = rest.split('/').next()?.rsplit_once('@')?.0;
    userinfo
        .split_once(':')
        .map(|(_, p)| p)
        .filter(|p| !p.is_empty())
}

/// Exactly what to change so `r` succeeds, for `product` (whose containers are on
/// `subnet`). `None` when it succeeded.
pub fn fix(m: &Manifest, product: &str, subnet: &str, r: &Reach) -> Option<String> {
    if r.ok() {
        return None;
    }
    let host = r.target.rsplit_once(':').map_or(r.target.as_str(), |t| t.0);
    let port = r.target.rsplit_once(':').map_or("", |t| t.1);
    let addr = if r.address == "-" {
        "the host's Docker gateway address".to_string()
    } else {
        r.address.clone()
    };
    let external = |kind: &str| {
        let i = if kind == "postgres" {
            &m.infra.postgres
        } else {
            &m.infra.redis
        };
        i.as_ref().is_some_and(|i| i.mode == InfraMode::External)
    };
    let p = m.products.get(product);
    let (db, role) = p
        .and_then(|p| p.database.as_ref())
        .map_or(("all", "all"), |d| (d.name.as_str(), d.role.as_str()));
    let text = match (r.kind.as_str(), r.result.as_str()) {
        (kind, "resolve") => format!(
            "{host} does not resolve inside the containers of {product}: leave [infra.{kind}] app_host unset (containers then use {} through extra_hosts: host-gateway), or set it to an address they can reach",
            berth_manifest::HOST_GATEWAY_NAME
        ),
        (_, _) if berth_manifest::is_loopback_host(host) => format!(
            "{host} inside a container is the container itself: remove [infra.{}] app_host (containers then use {}) and render again",
            r.kind,
            berth_manifest::HOST_GATEWAY_NAME
        ),
        ("postgres", "refused" | "timeout" | "unreachable" | "io") if external("postgres") => {
            format!(
                "PostgreSQL does not accept connections on {addr}:{port}: in postgresql.conf set `listen_addresses = 'localhost,{addr}'` and restart PostgreSQL; in pg_hba.conf add `host {db} {role} {subnet} scram-sha-256` (then `SELECT pg_reload_conf()`)"
            )
        }
        ("postgres", "hba") => format!(
            "pg_hba.conf does not let the network of {product} in: add `host {db} {role} {subnet} scram-sha-256` above any broader `reject` line, then reload PostgreSQL (`SELECT pg_reload_conf()`)"
        ),
        ("postgres", "password") => format!(
            "PostgreSQL refused the password of role {role}: run `berth provision {product}` (add --rotate-passwords if the role's password is not berth's)"
        ),
        ("redis", "refused" | "timeout" | "unreachable" | "io") if external("redis") => format!(
            "Redis does not accept connections on {addr}:{port}: in redis.conf set `bind 127.0.0.1 -::1 {addr}` and restart Redis (keep `protected-mode yes` and give the default user a password, or turn it off with `user default off`)"
        ),
        ("redis", "protected-mode") => format!(
            "Redis is in protected mode and refuses clients that are not on loopback: in redis.conf either give the default user a password (`requirepass ...`, or `user default off` in the ACL file), or set `protected-mode no` once `bind` names only 127.0.0.1 and {addr}"
        ),
        ("redis", "password") => format!(
            "Redis refused user {product}: its ACL user is missing or has another password; run `berth provision {product}`"
        ),
        (kind, _) => format!(
            "{kind} at {host}:{port} is not reachable from the containers of {product} ({}): check that it runs and listens on {addr}, and that no firewall drops traffic from {subnet}",
            r.detail
        ),
    };
    Some(text)
}

/// Phrases drivers use when a connection never got to the server.
const CONNECT_FAILURES: &[&str] = &[
    "connection refused",
    "cannot assign requested address",
    "could not translate host name",
    "name or service not known",
    "temporary failure in name resolution",
    "nodename nor servname",
    "no route to host",
    "network is unreachable",
    "timeout expired",
    "timed out",
    "could not connect to server",
    "error connecting to redis",
];

/// One line saying a failed migration or health gate looks like the product could not
/// connect to its configured PostgreSQL or Redis, with the fix; `None` when `text`
/// (the error and log tails) does not look like that.
pub fn diagnose_connection(m: &Manifest, product: &str, text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let p = m.products.get(product)?;
    let targets: Vec<(&str, &str, String, u16)> = [
        ("postgres", "PostgreSQL", p.database.is_some()),
        ("redis", "Redis", p.redis.is_some()),
    ]
    .into_iter()
    .filter(|t| t.2)
    .filter_map(|(kind, name, _)| {
        let (host, port) = m.app_address(product, kind)?;
        Some((kind, name, host, port))
    })
    .collect();
    // How surely a line names a target's configured address: 2 with its host and
    // port, 1 with the host alone (never a bare loopback name, which unrelated lines
    // mention) or the kind and port, 0 not at all.
    let score = |line: &str, kind: &str, host: &str, port: u16| -> u8 {
        let port_named =
            line.contains(&format!("port {port}")) || line.contains(&format!(":{port}"));
        let host_named = line.contains(&host.to_ascii_lowercase());
        if berth_manifest::is_loopback_host(host) {
            let loopback_named = host_named
                || ["localhost", "127.0.0.1", "::1"]
                    .iter()
                    .any(|h| line.contains(h));
            if port_named && loopback_named { 2 } else { 0 }
        } else if host_named && port_named {
            2
        } else if host_named || (port_named && line.contains(kind)) {
            1
        } else {
            0
        }
    };
    let (phrase, (kind, name, host, port)) = lower.lines().find_map(|l| {
        let phrase = CONNECT_FAILURES.iter().find(|f| l.contains(*f))?;
        let best = targets
            .iter()
            .map(|t| (score(l, t.0, &t.2, t.3), t))
            .filter(|(s, _)| *s > 0)
            .max_by_key(|(s, t)| (*s, std::cmp::Reverse(t.0)))?;
        Some((*phrase, best.1.clone()))
    })?;
    let setting = format!("[infra.{kind}] app_host");
    let fix = if berth_manifest::is_loopback_host(&host) && m.in_containers(product) {
        format!(
            "inside a container {host} is the container itself: remove {setting} (containers then use {}) and run `berth render` and `berth provision {product}`, which checks the connection from the product's network",
            berth_manifest::HOST_GATEWAY_NAME
        )
    } else {
        format!(
            "check that {name} listens on {host}:{port} for the product's network: `berth provision {product}` checks it from a container and says what to change"
        )
    };
    Some(format!(
        "{product} could not connect to {name} at {host}:{port} ({setting}): \"{phrase}\"; {fix}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(app_host: &str) -> Manifest {
        let text = format!(
            r#"
[project]
name = "shop"
[infra.postgres]
mode = "external"
admin_url_env = "PG_ADMIN"
{app_host}
[infra.redis]
mode = "external"
admin_url_env = "REDIS_ADMIN"
app_port = 6380
[deploy]
runtime = "compose"
[products.bestays]
database = {{ name = "bestays", role = "bestays_user" }}
redis = {{ db = 0, prefix = "bestays:" }}
[products.bestays.services.server]
image = "x"
port = 8000
"#
        );
        berth_manifest::parse_str("berth.toml", &text)
            .unwrap_or_else(|d| panic!("{d:?}"))
            .manifest
    }

    #[test]
    fn connection_failures_to_the_configured_address_are_diagnosed_in_one_line() {
        let m = manifest("app_host = \"localhost\"");
        // asyncpg / psycopg as the issue saw it.
        let tail = "sqlalchemy.exc.OperationalError: connection to server at \"::1\", port 5432 failed: Cannot assign requested address\n\tIs the server running on that host?";
        let d = diagnose_connection(&m, "bestays", tail).unwrap();
        assert!(!d.contains('\n'), "{d}");
        assert!(
            d.starts_with("bestays could not connect to PostgreSQL at localhost:5432 ([infra.postgres] app_host): \"cannot assign requested address\"; inside a container localhost is the container itself: remove [infra.postgres] app_host"),
            "{d}"
        );
        // Redis, at its configured port, with the default host.
        let m = manifest("");
        let d = diagnose_connection(
            &m,
            "bestays",
            "redis.exceptions.ConnectionError: Error 111 connecting to host.docker.internal:6380. Connection refused.",
        )
        .unwrap();
        assert!(
            d.starts_with("bestays could not connect to Redis at host.docker.internal:6380"),
            "{d}"
        );
        assert!(d.contains("`berth provision bestays`"), "{d}");
        // Name resolution.
        let d = diagnose_connection(
            &m,
            "bestays",
            "could not translate host name \"host.docker.internal\" to address: Name or service not known",
        )
        .unwrap();
        assert!(d.contains("PostgreSQL at host.docker.internal:5432"), "{d}");
    }

    #[test]
    fn other_failures_are_not_diagnosed_as_connection_problems() {
        let m = manifest("");
        for text in [
            "demo-app migrate: migration 0002_add_listings failed: relation \"listings\" already exists",
            // A refused connection to something else (a third-party API).
            "httpx.ConnectError: [Errno 111] Connection refused to api.example.com:443",
            // berth's own probe of the service.
            "GET http://127.0.0.1:8011/health: connection refused",
            "bestays.server did not become healthy within 60s (12 probes of /health)",
        ] {
            assert_eq!(diagnose_connection(&m, "bestays", text), None, "{text}");
            let loopback = manifest("app_host = \"127.0.0.1\"");
            assert_eq!(
                diagnose_connection(&loopback, "bestays", text),
                None,
                "{text}"
            );
        }
    }

    #[test]
    fn probe_lines_parse_and_passwords_are_found() {
        let r = parse(
            "postgres\thost.docker.internal:5432\t172.17.0.1\thba\tno pg_hba.conf entry\nredis\th:6379\t-\tok\tlogged in\n",
        );
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].result, "hba");
        assert!(r[1].ok());
        assert_eq!(
            password_of("postgresql://u:s3cret@h:5432/d"),
            Some("s3cret")
        );
        assert_eq!(password_of("redis://h:6379/0"), None);
    }
}
