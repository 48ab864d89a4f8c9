//! `berth run`: a one-off command in the live version's environment, on berth's own
//! terminal; its exit code is berth's. The audit log records who ran what, when, and
//! how it ended, never the environment.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Instant;

use berth_deploy::record::AuditRecord;

use super::deploy::{load, product_known, runtime};
use super::logs::{live, version_in};
use crate::cli::{Cli, RunArgs};
use crate::exit::{CliError, Result};
use crate::output::Printer;

pub fn run(cli: &Cli, args: &RunArgs, printer: &Printer) -> Result<ExitCode> {
    let l = load(cli, printer)?;
    let product = args.product.as_str();
    product_known(&l.manifest, product)?;
    let p = &l.manifest.products[product];
    let service = match &args.service {
        Some(s) if p.services.contains_key(s) => s.clone(),
        Some(s) => {
            let known: Vec<_> = p.services.keys().map(|k| format!("`{k}`")).collect();
            return Err(CliError::Config(format!(
                "{product} has no service `{s}`; its services: {}",
                known.join(", ")
            )));
        }
        None => p
            .services
            .iter()
            .find(|(_, s)| s.migrate.is_some())
            .or_else(|| p.services.first())
            .map(|(n, _)| n.clone())
            .ok_or_else(|| CliError::Config(format!("{product} has no services")))?,
    };
    let rt = runtime(&l, args.runtime)?;
    let (live_slot, instances) = live(&l, rt.as_ref(), product)?;
    let slot = match (args.slot, live_slot) {
        (Some(s), _) => s.slot(),
        (None, Some(s)) => s,
        (None, None) => {
            return Err(CliError::Failed(format!(
                "nothing of {product} runs, so there is no live version to run as: deploy it first, or name a slot with --slot"
            )));
        }
    };
    let version = version_in(&instances, slot, &service).ok_or_else(|| {
        CliError::Failed(format!(
            "nothing of {product} runs in the {slot} slot: there is no version to run as"
        ))
    })?;
    let masker = berth_render::secrets::product_masker(&l.root, product)
        .map_err(|e| CliError::Config(e.to_string()))?;
    let operator = berth_deploy::operator(&l.repo);
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let started = Instant::now();
    let interrupts = interrupts_are_the_commands();
    let result = rt.run_once(product, &service, slot, &version, &args.command, tty);
    let mut record = AuditRecord::new("run", product, &operator);
    record.service = Some(service.clone());
    record.slot = Some(slot.name().to_string());
    record.version = Some(version.clone());
    // What was typed, with any value of the secret file masked; never the environment.
    record.command = Some(args.command.iter().map(|a| masker.mask(a)).collect());
    record.duration_ms = Some(started.elapsed().as_millis() as u64);
    match &result {
        Ok(code) => {
            record.exit_code = Some(*code);
            record.set_result(*code == 0);
        }
        Err(e) => {
            record.set_result(false);
            record.error = Some(masker.mask(&e.to_string()));
        }
    }
    l.store.record(None, &record);
    drop(interrupts);
    let code = result.map_err(|e| CliError::Failed(masker.mask(&e.to_string())))?;
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

/// While the command runs, Ctrl-C and Ctrl-\\ (sent to the terminal's whole foreground
/// group) are the command's to handle: berth stays to record and pass on its exit
/// code. A handler is installed rather than the signals ignored, since an ignored
/// signal would be inherited by the command; exec resets a handler.
fn interrupts_are_the_commands()
-> Option<(tokio::runtime::Runtime, Vec<tokio::signal::unix::Signal>)> {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .ok()?;
    let signals = {
        let _entered = rt.enter();
        [SignalKind::interrupt(), SignalKind::quit()]
            .into_iter()
            .filter_map(|k| signal(k).ok())
            .collect()
    };
    Some((rt, signals))
}
