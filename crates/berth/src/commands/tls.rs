//! `berth tls issue|renew|status`: thin over berth-tls.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::progress::{Reporter, Shape};
use berth_manifest::Manifest;
use berth_tls::{NginxDoor, Outcome, ProductStatus, Purpose, Tls, TlsError, WARN_DAYS, rfc3339};
use serde_json::json;

use crate::cli::{Cli, TlsArgs, TlsStatusArgs};
use crate::exit::{CliError, Result};
use crate::output::{Format, Printer};

fn load(cli: &Cli, printer: &Printer) -> Result<(Manifest, PathBuf)> {
    let path = super::find_manifest(cli)?;
    let manifest = super::load_manifest(&path, printer)?;
    let root = super::render::absolute(&super::manifest_dir(&path));
    Ok((manifest, root))
}

fn targets(m: &Manifest, args: &TlsArgs) -> Result<Vec<String>> {
    match &args.product {
        Some(p) if !m.products.contains_key(p) => Err(CliError::Config(format!(
            "no product `{p}` in berth.toml (products: {})",
            m.products.keys().cloned().collect::<Vec<_>>().join(", ")
        ))),
        Some(p) => Ok(vec![p.clone()]),
        None => Ok(berth_tls::products(m)),
    }
}

/// The one way berth reaches nginx for TLS: berth-deploy's front door.
fn door<'a>(m: &'a Manifest, root: &Path) -> Result<NginxDoor<'a>> {
    NginxDoor::new(m, root).ok_or_else(|| {
        CliError::Config(
            "berth.toml has no [proxy]: TLS is served by berth's nginx, configure it first".into(),
        )
    })
}

/// Before a deploy's switch: issue `product`'s certificate when it has none or its
/// domains changed (mode files: install changed files). Does nothing for products
/// without TLS or when the configured nginx is not a prod render.
pub fn before_switch(m: &Manifest, root: &Path, product: &str, printer: &Printer) -> Result<()> {
    if !berth_tls::products(m).iter().any(|p| p == product) {
        return Ok(());
    }
    let Some(door) = NginxDoor::new(m, root) else {
        return Ok(());
    };
    use berth_tls::FrontDoor;
    if !door.serves_site(product) {
        return Ok(());
    }
    let tls = Tls::new(m, root, door);
    let progress = Reporter::new(Some(product), Shape::Steps);
    let outcome = tls.ensure(product, Purpose::Deploy, false, &progress);
    drop(progress);
    match outcome {
        Ok(o) => {
            if matches!(o.action, "issued" | "renewed" | "installed") {
                printer.status("TLS", &describe(&o));
            }
            Ok(())
        }
        Err(TlsError::Config(e)) => Err(CliError::Config(e)),
        // The deploy goes on: without a certificate the product is served on port 80,
        // with an older one that one keeps serving. Loud, and retried by the timer.
        Err(TlsError::Failed(e)) => {
            printer.warn(&format!(
                "no new certificate for {product} ({e}); deploying anyway: {product} keeps what nginx serves it with (port 80 only while it has no certificate); `berth tls issue {product}` retries"
            ));
            Ok(())
        }
    }
}

fn describe(o: &Outcome) -> String {
    let cert = o.certificate.as_ref().map(|c| {
        format!(
            " [{}] until {} ({} days)",
            c.names.join(", "),
            rfc3339(c.not_after),
            (c.not_after - berth_tls::now()).div_euclid(86_400)
        )
    });
    format!(
        "{}: {}{}{}",
        o.product,
        o.action,
        o.why
            .as_ref()
            .map(|w| format!(" ({w})"))
            .unwrap_or_default(),
        cert.unwrap_or_default()
    )
}

fn run(cli: &Cli, args: &TlsArgs, printer: &Printer, purpose: Purpose) -> Result<ExitCode> {
    let (m, root) = load(cli, printer)?;
    let products = targets(&m, args)?;
    let tls = Tls::new(&m, &root, door(&m, &root)?);
    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    for p in &products {
        // One product's failure never stops the others.
        let progress = Reporter::new(Some(p), Shape::Steps);
        let outcome = tls.ensure(p, purpose, args.force, &progress);
        drop(progress);
        match outcome {
            Ok(o) => {
                if args.format == Format::Text {
                    printer.status("TLS", &describe(&o));
                }
                outcomes.push(o);
            }
            Err(TlsError::Config(e)) => return Err(CliError::Config(e)),
            Err(TlsError::Failed(e)) => {
                if args.format == Format::Text {
                    printer.error(&e);
                }
                failures.push((p.clone(), e));
            }
        }
    }
    // Loud: a certificate close to expiry, whatever happened this time.
    let statuses = berth_tls::status(&m, &root);
    for s in statuses.iter().filter(|s| products.contains(&s.product)) {
        if let Some(d) = s.days_left
            && d < WARN_DAYS
            && s.mode != "off"
        {
            printer.warn(&format!(
                "the certificate of {} expires in {d} days ({}): {}",
                s.product,
                s.certificate
                    .as_ref()
                    .map(|c| rfc3339(c.not_after))
                    .unwrap_or_default(),
                s.last_error.as_deref().unwrap_or("renew it now")
            ));
        }
    }
    if args.format == Format::Json {
        printer.json(&json!({
            "outcomes": outcomes,
            "failures": failures.iter().map(|(p, e)| json!({"product": p, "error": e})).collect::<Vec<_>>(),
        }));
    }
    if failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(CliError::Reported(1))
    }
}

pub fn issue(cli: &Cli, args: &TlsArgs, printer: &Printer) -> Result<ExitCode> {
    run(cli, args, printer, Purpose::Issue)
}

pub fn renew(cli: &Cli, args: &TlsArgs, printer: &Printer) -> Result<ExitCode> {
    run(cli, args, printer, Purpose::Renew)
}

/// One line per product for people.
pub fn status_line(s: &ProductStatus) -> String {
    let cert = match &s.certificate {
        Some(c) => format!(
            "{} days left (until {}), issuer {}",
            s.days_left.unwrap_or(0),
            rfc3339(c.not_after),
            c.issuer
        ),
        None => "no certificate".into(),
    };
    let err = s
        .last_error
        .as_ref()
        .map(|e| format!("; last attempt failed: {e}"))
        .unwrap_or_default();
    format!("{} [{}] {}: {cert}{err}", s.product, s.mode, s.health)
}

/// The TLS status of the products with TLS (all, or `product`), for `berth status`.
pub fn status_of(m: &Manifest, root: &Path, product: Option<&str>) -> Vec<ProductStatus> {
    berth_tls::status(m, root)
        .into_iter()
        .filter(|s| s.mode != "off" && product.is_none_or(|p| p == s.product))
        .collect()
}

/// The TLS lines of `berth status` (nothing without TLS), loud under 7 days.
pub fn print_status(all: &[ProductStatus], printer: &Printer) {
    if all.is_empty() {
        return;
    }
    println!();
    println!("TLS");
    for s in all {
        println!("  {}", status_line(s));
        if s.days_left.is_some_and(|d| d < WARN_DAYS) {
            printer.warn(&format!(
                "the certificate of {} expires in {} days",
                s.product,
                s.days_left.unwrap_or(0)
            ));
        }
    }
}

pub fn status(cli: &Cli, args: &TlsStatusArgs, printer: &Printer) -> Result<ExitCode> {
    let (m, root) = load(cli, printer)?;
    if let Some(p) = &args.product
        && !m.products.contains_key(p)
    {
        return Err(CliError::Config(format!("no product `{p}` in berth.toml")));
    }
    let all: Vec<ProductStatus> = berth_tls::status(&m, &root)
        .into_iter()
        .filter(|s| args.product.as_ref().is_none_or(|p| *p == s.product))
        .collect();
    match args.format {
        Format::Json => printer.json(&json!({ "products": all })),
        Format::Text => {
            for s in &all {
                println!("{}", status_line(s));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
