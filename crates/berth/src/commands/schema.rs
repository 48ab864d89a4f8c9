use std::process::ExitCode;

use crate::cli::{SchemaArgs, SchemaName};
use crate::exit::{CliError, Result};
use crate::output::Printer;

pub fn run(args: &SchemaArgs, printer: &Printer) -> Result<ExitCode> {
    let schema = match args.name {
        SchemaName::Manifest => berth_manifest::json_schema(),
        SchemaName::Audit => berth_deploy::record::json_schema(),
        SchemaName::Logs => super::logs::json_schema(),
        // Written by hand beside the others; tests validate real output against them.
        SchemaName::Status => include_str!("../../../../schema/status.schema.json").into(),
        SchemaName::History => include_str!("../../../../schema/history.schema.json").into(),
        SchemaName::Lock => include_str!("../../../../schema/lock.schema.json").into(),
        SchemaName::Deploy => include_str!("../../../../schema/deploy.schema.json").into(),
        SchemaName::SecretsList => {
            include_str!("../../../../schema/secrets-list.schema.json").into()
        }
        SchemaName::Doctor => include_str!("../../../../schema/doctor.schema.json").into(),
        SchemaName::Backup => include_str!("../../../../schema/backup.schema.json").into(),
        SchemaName::BackupList => include_str!("../../../../schema/backup-list.schema.json").into(),
        SchemaName::BackupListOffsite => {
            include_str!("../../../../schema/backup-list-offsite.schema.json").into()
        }
        SchemaName::Verify => include_str!("../../../../schema/verify.schema.json").into(),
        SchemaName::Restore => include_str!("../../../../schema/restore.schema.json").into(),
        SchemaName::ProductList => {
            include_str!("../../../../schema/product-list.schema.json").into()
        }
        SchemaName::Check => include_str!("../../../../schema/check.schema.json").into(),
        SchemaName::TlsStatus => include_str!("../../../../schema/tls-status.schema.json").into(),
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
