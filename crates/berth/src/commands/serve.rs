//! `berth serve`: the prober, /metrics, the JSON API and the dashboard page.

use std::process::ExitCode;

use crate::cli::{Cli, ServeArgs};
use crate::exit::{CliError, Result};
use crate::output::Printer;

pub fn run(cli: &Cli, args: &ServeArgs, printer: &Printer) -> Result<ExitCode> {
    let l = super::deploy::load(cli, printer)?;
    let token_env = args
        .token_env
        .clone()
        .or(l.manifest.serve.token_env.clone());
    let listen = match args.listen {
        Some(a) => a,
        None => l.manifest.serve.listen.parse().map_err(|_| {
            CliError::Config(format!(
                "[serve] listen `{}` is not an address like 127.0.0.1:9400",
                l.manifest.serve.listen
            ))
        })?,
    };
    let token = match &token_env {
        Some(var) => {
            let value = std::env::var(var).ok().filter(|v| !v.trim().is_empty());
            match value {
                Some(v) => Some(v.trim().to_string()),
                None => {
                    return Err(CliError::Config(format!(
                        "--token-env {var}: ${var} is not set or empty; export the bearer token in it"
                    )));
                }
            }
        }
        None => None,
    };
    if token.is_none() && !berth_serve::is_loopback(&listen) && !args.no_token {
        return Err(CliError::Config(format!(
            "{listen} is not a loopback address: pass --token-env VAR (a variable holding a bearer token), or --no-token to serve it to anyone who can reach it"
        )));
    }
    if let (Some(t), Some(var)) = (&token, &token_env)
        && !berth_serve::is_loopback(&listen)
        && t.len() < berth_serve::MIN_PUBLIC_TOKEN_BYTES
    {
        return Err(CliError::Config(format!(
            "${var} holds a token of {} bytes; a token guarding a non-loopback address ({listen}) needs at least {} (e.g. `openssl rand -hex 32`)",
            t.len(),
            berth_serve::MIN_PUBLIC_TOKEN_BYTES
        )));
    }
    let rt = super::deploy::runtime(&l, args.runtime)?;
    let sources = berth_serve::state::Sources {
        manifest: l.manifest,
        root: l.root,
        repo: Some(l.repo),
        runtime: rt,
        store: l.store,
    };
    let config = berth_serve::Config {
        listen,
        token,
        refresh: args.refresh.0,
        page_refresh: args.page_refresh.0,
    };
    let products = sources.manifest.products.len();
    berth_serve::run(sources, config, |addr| {
        printer.status(
            "Serving",
            &format!(
                "{products} products on http://{addr}/ (metrics: /metrics, API: /api/products)"
            ),
        );
    })
    .map_err(|e| match e {
        berth_serve::ServeError::Listen { .. } => CliError::Config(e.to_string()),
        other => CliError::Failed(other.to_string()),
    })?;
    Ok(ExitCode::SUCCESS)
}
