//! `berth product add|list`.

use std::process::ExitCode;

use berth_manifest::product_add::add_product;
use serde_json::json;

use crate::cli::{Cli, ProductAddArgs, ProductListArgs};
use crate::exit::{CliError, Result};
use crate::output::{Format, Printer};

pub fn add(cli: &Cli, args: &ProductAddArgs, printer: &Printer) -> Result<ExitCode> {
    let path = super::find_manifest(cli)?;
    let file = path.display().to_string();
    let text = std::fs::read_to_string(&path)
        .map_err(|e| CliError::Config(format!("cannot read {file}: {e}")))?;
    let result = match add_product(&file, &text, &args.name, &args.like, args.force) {
        Ok(r) => r,
        Err(diags) => {
            printer.diagnostics(&diags);
            printer.error(&format!("{file} was not changed"));
            return Err(CliError::Reported(2));
        }
    };
    if !args.dry_run {
        super::write_atomic(&path, &result.toml)?;
    }
    match args.format {
        Format::Json => printer.json(&json!({
            "manifest": file,
            "product": args.name,
            "like": args.like,
            "written": !args.dry_run,
            "changes": result.changes,
        })),
        Format::Text => {
            for c in &result.changes {
                printer.status("Set", c);
            }
            if args.dry_run {
                println!(
                    "would add product `{}` to {file} (dry run: nothing written)",
                    args.name
                );
            } else {
                println!(
                    "added product `{}` to {file}; it passes `berth check`",
                    args.name
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn list(cli: &Cli, args: &ProductListArgs, printer: &Printer) -> Result<ExitCode> {
    let path = super::find_manifest(cli)?;
    let (loaded, _) = match berth_manifest::load_path(&path) {
        Ok(v) => v,
        Err(berth_manifest::LoadError::Invalid { diagnostics, path }) => {
            printer.diagnostics(&diagnostics);
            printer.error(&format!("{path} is invalid; run `berth check`"));
            return Err(CliError::Reported(2));
        }
        Err(e) => return Err(CliError::Config(e.to_string())),
    };
    let m = &loaded.manifest;
    match args.format {
        Format::Json => {
            let products: Vec<_> = m
                .products
                .iter()
                .map(|(name, p)| {
                    json!({
                        "name": name,
                        "display_name": p.title(name),
                        "domains": p.domains,
                        "services": p.services.keys().collect::<Vec<_>>(),
                        "database": p.database,
                        "redis": p.redis,
                    })
                })
                .collect();
            printer.json(&json!({ "products": products }));
        }
        Format::Text => {
            for (name, p) in &m.products {
                let ports: Vec<String> = p
                    .services
                    .iter()
                    .map(|(s, svc)| match svc.host_port {
                        Some(hp) => format!("{s}:{hp}"),
                        None => s.clone(),
                    })
                    .collect();
                println!(
                    "{name:<16} {:<24} {}  {}",
                    p.title(name),
                    ports.join(" "),
                    p.domains.join(" ")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
