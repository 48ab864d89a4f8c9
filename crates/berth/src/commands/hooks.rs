//! `berth hooks install|uninstall|run`.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use berth_git::hooks::{self, HookChange};
use berth_git::lint::lint_commit;
use serde_json::json;

use crate::cli::{Cli, HooksArgs, HooksRunArgs};
use crate::exit::{CliError, Result};
use crate::output::{Format, Printer};

fn hook_err(e: hooks::HookError) -> CliError {
    match e {
        hooks::HookError::SharedHooksPath { .. } => CliError::Config(e.to_string()),
        other => CliError::Failed(other.to_string()),
    }
}

pub fn install(cli: &Cli, args: &HooksArgs, printer: &Printer) -> Result<ExitCode> {
    let manifest = super::find_manifest(cli)?;
    let repo = super::repo_for(&manifest)?;
    let top = repo.toplevel()?;
    let abs = std::fs::canonicalize(&manifest)
        .map_err(|e| CliError::Config(format!("{}: {e}", manifest.display())))?;
    let rel = abs
        .strip_prefix(std::fs::canonicalize(&top).unwrap_or(top.clone()))
        .map(Path::to_path_buf)
        .unwrap_or(abs.clone());
    let exe = std::env::current_exe()
        .map_err(|e| CliError::Failed(format!("cannot locate the berth binary: {e}")))?;
    let changes = hooks::install(&repo, &exe, &rel.display().to_string()).map_err(hook_err)?;
    print(&changes, args.format, printer);
    Ok(ExitCode::SUCCESS)
}

pub fn uninstall(cli: &Cli, args: &HooksArgs, printer: &Printer) -> Result<ExitCode> {
    let manifest = super::find_manifest(cli)?;
    let repo = super::repo_for(&manifest)?;
    let changes = hooks::uninstall(&repo).map_err(hook_err)?;
    print(&changes, args.format, printer);
    Ok(ExitCode::SUCCESS)
}

fn print(changes: &[HookChange], format: Format, printer: &Printer) {
    match format {
        Format::Json => printer.json(&json!({ "hooks": changes })),
        Format::Text => {
            for c in changes {
                println!("{:<10} {:<10} {}", c.hook, c.action, c.path);
            }
        }
    }
}

/// The pre-push hook: lint every commit being pushed, with its files.
pub fn run(cli: &Cli, args: &HooksRunArgs, printer: &Printer) -> Result<ExitCode> {
    if args.hook != "pre-push" {
        return Err(CliError::Config(format!(
            "unknown hook `{}`; berth runs `pre-push`",
            args.hook
        )));
    }
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| CliError::Config(format!("cannot read the hook's input: {e}")))?;
    let ctx = super::Context::load_quick(cli, printer)?;
    let attributor = ctx.attributor()?;
    let repo = ctx.repo()?;
    let mut results = Vec::new();
    let known = |sha: &str| repo.resolve(sha).ok().flatten().is_some();
    for revs in hooks::pre_push_ranges(&input, &known) {
        let revs: Vec<&str> = revs.iter().map(String::as_str).collect();
        for c in repo.commits(&revs)?.iter().rev() {
            results.push(lint_commit(&attributor, c, true, false));
        }
    }
    let code = super::lint::report(&results, Format::Text, true, printer)?;
    if code != ExitCode::SUCCESS {
        printer.error("push refused by berth's pre-push hook: fix the messages above (`git rebase -i`, reword), or push with --no-verify to bypass");
    }
    Ok(code)
}
