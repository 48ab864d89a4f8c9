//! `berth provision`.

use std::process::ExitCode;

use berth_provision::{Options, ProvisionError, provision};
use serde_json::json;

use crate::cli::{Cli, ProvisionArgs};

use crate::exit::{CliError, Result};
use crate::output::{Format, Printer};

pub fn run(cli: &Cli, args: &ProvisionArgs, printer: &Printer) -> Result<ExitCode> {
    let path = super::find_manifest(cli)?;
    let m = super::load_manifest(&path, printer)?;
    let root = super::render::absolute(&super::manifest_dir(&path));
    let products: Vec<String> = match &args.product {
        Some(p) if m.products.contains_key(p) => vec![p.clone()],
        Some(p) => {
            let known: Vec<_> = m.products.keys().map(|k| format!("`{k}`")).collect();
            return Err(CliError::Config(format!(
                "there is no product `{p}`; products: {}",
                known.join(", ")
            )));
        }
        None => m.products.keys().cloned().collect(),
    };
    if args.dry_run {
        return dry_run(&m, &products, args.format, printer);
    }
    // Secret files and the ACL copy must exist before anything is applied.
    super::render::ensure_secrets(&m, &root, super::render::env_of(args.env))?;
    let reports = provision(&Options {
        manifest: &m,
        root: &root,
        products,
        rotate_passwords: args.rotate_passwords,
    })
    .map_err(|e| match e {
        ProvisionError::Config(msg) => CliError::Config(msg),
        other => CliError::Failed(other.to_string()),
    })?;
    let reach = if args.no_container_check {
        Vec::new()
    } else {
        container_check(&m, &root, &reports_products(&reports), args, printer)?
    };
    let unreachable = reach
        .iter()
        .flat_map(|r| &r.reach)
        .filter(|r| !r.reach.ok())
        .count();
    match args.format {
        Format::Json => printer.json(&json!({ "products": reports, "reach": reach })),
        Format::Text => {
            for r in &reports {
                let mut parts = Vec::new();
                if let (Some(db), Some(role), Some(pw)) = (r.database, r.role, r.db_password) {
                    let d = m.products[&r.product]
                        .database
                        .as_ref()
                        .expect("has a database");
                    parts.push(format!(
                        "database {} {db}, role {} {role} (password {pw})",
                        d.name, d.role
                    ));
                    if let (Some(c), Some(t)) = (r.connection_limit, &r.statement_timeout) {
                        parts.push(format!(
                            "role limits: {c} connections, statement timeout {t}"
                        ));
                    }
                }
                if let (Some(u), Some(pw)) = (r.redis_user, r.redis_password) {
                    parts.push(format!("redis user {} {u} (password {pw})", r.product));
                }
                println!(
                    "{}: {}",
                    r.product,
                    if parts.is_empty() {
                        "nothing to provision".into()
                    } else {
                        parts.join("; ")
                    }
                );
                if r.redis_password == Some("unknown") {
                    printer.warn(&format!(
                        "{}: the Redis user has a password that is not in .berth/secrets/{}.env; its rules were updated, its password kept; run with --rotate-passwords to let berth own it",
                        r.product, r.product
                    ));
                }
                if r.db_password == Some("reset") {
                    printer.warn(&format!(
                        "{}: the role's password on the server did not match .berth/secrets/{}.env (what the app logs in with); it was set to the secret file's value",
                        r.product, r.product
                    ));
                }
                if r.db_password == Some("unknown") {
                    printer.warn(&format!(
                        "{}: the role existed before berth and its password is not in .berth/secrets/{}.env; run with --rotate-passwords to let berth own it",
                        r.product, r.product
                    ));
                }
            }
            for r in &reach {
                for one in &r.reach {
                    let name = if one.reach.kind == "postgres" {
                        "PostgreSQL"
                    } else {
                        "Redis"
                    };
                    let via = if one.reach.address == "-" {
                        String::new()
                    } else {
                        format!(" ({})", one.reach.address)
                    };
                    let state = if one.reach.ok() {
                        format!("logs in as {}", r.product)
                    } else {
                        format!("FAILED: {}", one.reach.detail)
                    };
                    println!(
                        "{}: from its containers (network {}, subnet {}): {name} at {}{via} {state}",
                        r.product, r.network, r.subnet, one.reach.target
                    );
                    if let Some(fix) = &one.fix {
                        println!("    fix: {fix}");
                    }
                }
            }
        }
    }
    if unreachable > 0 {
        return Err(CliError::Reported(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// `--dry-run`: what provisioning would ensure for each product, its role's limits
/// included, with no connection to any server and nothing written.
fn dry_run(
    m: &berth_manifest::Manifest,
    products: &[String],
    format: Format,
    printer: &Printer,
) -> Result<ExitCode> {
    let plan: Vec<serde_json::Value> = products
        .iter()
        .map(|name| {
            let p = &m.products[name];
            let l = berth_manifest::effective_db_limits(m, name);
            json!({
                "product": name,
                "database": p.database.as_ref().map(|d| d.name.clone()),
                "role": p.database.as_ref().map(|d| d.role.clone()),
                "connection_limit": p.database.as_ref().map(|_| l.connections),
                "statement_timeout": p.database.as_ref().map(|_| berth_provision::limits::timeout_text(&l)),
                "statements": p.database.as_ref().map(|d| berth_provision::limits::role_limit_statements(&d.role, &l)),
                "redis_user": p.redis.as_ref().map(|_| name.clone()),
            })
        })
        .collect();
    match format {
        Format::Json => printer.json(&json!({ "dry_run": true, "products": plan })),
        Format::Text => {
            for (name, v) in products.iter().zip(&plan) {
                let mut parts = Vec::new();
                if let (Some(db), Some(role)) = (v["database"].as_str(), v["role"].as_str()) {
                    parts.push(format!(
                        "database {db}, role {role} (role limits: {} connections, statement timeout {})",
                        v["connection_limit"], v["statement_timeout"].as_str().unwrap_or("-")
                    ));
                }
                if v["redis_user"].is_string() {
                    parts.push(format!("redis user {name}"));
                }
                println!(
                    "{name}: would ensure {}",
                    if parts.is_empty() {
                        "nothing".into()
                    } else {
                        parts.join("; ")
                    }
                );
            }
            println!("dry run: nothing was applied");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn reports_products(reports: &[berth_provision::ProductReport]) -> Vec<String> {
    reports.iter().map(|r| r.product.to_string()).collect()
}

/// One product's logins from inside its network.
#[derive(serde::Serialize)]
struct ProductReach {
    product: String,
    network: String,
    subnet: String,
    reach: Vec<OneReach>,
}

#[derive(serde::Serialize)]
struct OneReach {
    #[serde(flatten)]
    reach: berth_runtime::reach::Reach,
    fix: Option<String>,
}

/// Log in to the external PostgreSQL and Redis as each product whose services run
/// in containers, from a container of its network, with the URLs its services get.
fn container_check(
    m: &berth_manifest::Manifest,
    root: &std::path::Path,
    products: &[String],
    args: &ProvisionArgs,
    printer: &Printer,
) -> Result<Vec<ProductReach>> {
    use berth_manifest::InfraMode;
    use berth_runtime::compose::ComposeRuntime;
    let external = |i: &Option<berth_manifest::InfraService>| {
        i.as_ref().is_some_and(|i| i.mode == InfraMode::External)
    };
    let mut wanted: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for name in products {
        if !m.in_containers(name) {
            continue;
        }
        let p = &m.products[name];
        let secrets = berth_render::secrets::SecretFile::load(
            &berth_render::secrets::product_secret_path(root, name),
        )
        .map_err(|e| CliError::Config(e.to_string()))?;
        let mut targets = Vec::new();
        if p.database.is_some()
            && external(&m.infra.postgres)
            && let Some(url) = secrets.get("DATABASE_URL")
        {
            targets.push(("postgres".to_string(), url.to_string()));
        }
        if p.redis.is_some()
            && external(&m.infra.redis)
            && let Some(url) = secrets.get("REDIS_URL")
        {
            targets.push(("redis".to_string(), url.to_string()));
        }
        if !targets.is_empty() {
            wanted.push((name.clone(), targets));
        }
    }
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    if !ComposeRuntime::available() {
        if m.deploy.runtime.needs_docker() {
            printer.warn("no Docker Engine answers, so the connection from the products' containers was not checked");
        }
        return Ok(Vec::new());
    }
    let env = super::render::env_of(args.env).name();
    let rt = ComposeRuntime::in_dir(
        m.clone(),
        root.to_path_buf(),
        root.join(format!("deploy/{env}/compose")),
    );
    let mut out = Vec::new();
    for (name, targets) in wanted {
        let net = m.product_network(&name);
        let reach = rt
            .reach_from_network(&name, &targets)
            .map_err(|e| CliError::Failed(e.to_string()))?;
        out.push(ProductReach {
            reach: reach
                .into_iter()
                .map(|r| OneReach {
                    fix: berth_runtime::reach::fix(m, &name, &net.subnet, &r),
                    reach: r,
                })
                .collect(),
            product: name,
            network: net.name,
            subnet: net.subnet,
        });
    }
    Ok(out)
}
