//! `berth init --from <compose file>`.

use std::process::ExitCode;

use berth_manifest::init::{InitOptions, from_compose};
use serde_json::json;

use crate::cli::InitArgs;
use crate::exit::{CliError, Result};
use crate::output::{Format, Printer};

pub fn run(args: &InitArgs, printer: &Printer) -> Result<ExitCode> {
    if args.output.exists() && !args.force {
        return Err(CliError::Config(format!(
            "{} already exists; pass --force to replace it",
            args.output.display()
        )));
    }
    let file = args.from.display().to_string();
    let text = std::fs::read_to_string(&args.from)
        .map_err(|e| CliError::Config(format!("cannot read {file}: {e}")))?;
    let opts = InitOptions {
        product: args.product.clone(),
        project: args.project.clone(),
    };
    let result = match from_compose(&file, &text, &opts) {
        Ok(r) => r,
        Err(diags) => {
            printer.diagnostics(&diags);
            printer.error(&format!("could not import {file}; nothing was written"));
            return Err(CliError::Reported(2));
        }
    };
    super::write_atomic(&args.output, &result.toml)?;
    match args.format {
        Format::Json => printer.json(&json!({
            "manifest": args.output.display().to_string(),
            "product": result.product,
            "notes": result.notes,
        })),
        Format::Text => {
            for n in &result.notes {
                printer.status("Note", n);
            }
            println!(
                "wrote {} with product `{}`; review it, then run `berth check`",
                args.output.display(),
                result.product
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
