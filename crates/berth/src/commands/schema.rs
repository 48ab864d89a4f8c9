use std::process::ExitCode;

use crate::cli::{SchemaArgs, SchemaName};
use crate::exit::{CliError, Result};
use crate::output::Printer;

pub fn run(args: &SchemaArgs, printer: &Printer) -> Result<ExitCode> {
    let schema = match args.name {
        SchemaName::Manifest => berth_manifest::json_schema(),
        SchemaName::Audit => berth_deploy::record::json_schema(),
        SchemaName::Logs => super::logs::json_schema(),
    };
    match &args.output {
        None => print!("{schema}"),
        Some(path) if args.check => {
            let current = std::fs::read_to_string(path).unwrap_or_default();
            if current != schema {
                return Err(CliError::Failed(format!(
                    "{} is stale; regenerate it with `berth schema --output {}`",
                    path.display(),
                    path.display()
                )));
            }
            printer.status("Up to date", &path.display().to_string());
        }
        Some(path) => {
            super::write_atomic(path, &schema)?;
            printer.status("Wrote", &path.display().to_string());
        }
    }
    Ok(ExitCode::SUCCESS)
}
