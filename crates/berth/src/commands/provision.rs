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
    match args.format {
        Format::Json => printer.json(&json!({ "products": reports })),
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
        }
    }
    Ok(ExitCode::SUCCESS)
}
