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
        name => written(name).into(),
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

/// The schemas written by hand under schema/, by name.
fn written(name: SchemaName) -> &'static str {
    macro_rules! schema {
        ($file:literal) => {
            include_str!(concat!("../../../../schema/", $file, ".schema.json"))
        };
    }
    match name {
        // Generated from their types (see `run`); the committed copies are what it prints.
        SchemaName::Manifest => schema!("berth"),
        SchemaName::Audit => schema!("audit"),
        SchemaName::Logs => schema!("logs"),
        SchemaName::Status => schema!("status"),
        SchemaName::History => schema!("history"),
        SchemaName::Lock => schema!("lock"),
        SchemaName::Deploy => schema!("deploy"),
        SchemaName::SecretsList => schema!("secrets-list"),
        SchemaName::Doctor => schema!("doctor"),
        SchemaName::Backup => schema!("backup"),
        SchemaName::BackupList => schema!("backup-list"),
        SchemaName::BackupListOffsite => schema!("backup-list-offsite"),
        SchemaName::Verify => schema!("verify"),
        SchemaName::Restore => schema!("restore"),
        SchemaName::ProductList => schema!("product-list"),
        SchemaName::Check => schema!("check"),
        SchemaName::TlsStatus => schema!("tls-status"),
        SchemaName::Tls => schema!("tls"),
        SchemaName::Affected => schema!("affected"),
        SchemaName::LintCommit => schema!("lint-commit"),
        SchemaName::LintBranch => schema!("lint-branch"),
        SchemaName::Hooks => schema!("hooks"),
        SchemaName::Log => schema!("log"),
        SchemaName::Render => schema!("render"),
        SchemaName::Init => schema!("init"),
        SchemaName::ProductAdd => schema!("product-add"),
        SchemaName::Provision => schema!("provision"),
        SchemaName::BackupPrune => schema!("backup-prune"),
        SchemaName::SecretsCheck => schema!("secrets-check"),
        SchemaName::DeployPlan => schema!("deploy-plan"),
        SchemaName::LockRelease => schema!("lock-release"),
    }
}
