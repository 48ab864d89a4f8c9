//! `berth lint commit|branch`.

use std::io::Read;
use std::process::ExitCode;

use berth_git::attribution::{Commit, Finding, Level};
use berth_git::lint::{CommitLint, lint_branch, lint_commit};
use serde_json::json;

use crate::cli::{Cli, LintBranchArgs, LintCommitArgs};
use crate::exit::{CliError, Result};
use crate::output::{Format, Printer, esc};

pub fn commit(cli: &Cli, args: &LintCommitArgs, printer: &Printer) -> Result<ExitCode> {
    let ctx = super::Context::load_quick(cli, printer)?;
    let attributor = ctx.attributor()?;
    let results: Vec<CommitLint> = if let Some(range) = &args.range {
        let repo = ctx.repo()?;
        super::validate_revs(&repo, &[range.as_str()])?;
        let commits = repo.commits(&[range.as_str()])?;
        commits
            .iter()
            .rev()
            .map(|c| lint_commit(&attributor, c, true, args.include_skipped))
            .collect()
    } else {
        let message = match &args.edit {
            // What git will keep of the file: no editor comments, nothing below the scissors.
            Some(path) => berth_git::message::Message::parse_edit_file(
                &std::fs::read_to_string(path).map_err(|e| {
                    CliError::Config(format!("cannot read {}: {e}", path.display()))
                })?,
            )
            .text(),
            None => {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s).map_err(|e| {
                    CliError::Config(format!("cannot read the message from stdin: {e}"))
                })?;
                s
            }
        };
        let files = if args.staged {
            ctx.repo()?.staged_files()?
        } else {
            Vec::new()
        };
        let commit = Commit {
            message,
            files,
            ..Commit::default()
        };
        vec![lint_commit(
            &attributor,
            &commit,
            args.staged,
            args.include_skipped,
        )]
    };
    report(&results, args.format, args.range.is_some(), printer)
}

pub fn report(
    results: &[CommitLint],
    format: Format,
    range: bool,
    printer: &Printer,
) -> Result<ExitCode> {
    let failed = results.iter().filter(|r| r.failed()).count();
    let skipped = results.iter().filter(|r| r.skipped.is_some()).count();
    match format {
        Format::Json => printer.json(&json!({
            "ok": failed == 0,
            "checked": results.len(),
            "failed": failed,
            "skipped": skipped,
            "commits": results,
        })),
        Format::Text => {
            for r in results.iter().filter(|r| !r.findings.is_empty()) {
                let id = r.commit.as_deref().unwrap_or("message");
                let mark = if r.failed() {
                    printer.styles.error.paint("✗")
                } else {
                    printer.styles.warning.paint("!")
                };
                println!("{mark} {id} {}", esc(&r.subject));
                print_findings(&r.findings, printer);
            }
            if range || failed > 0 {
                println!(
                    "{} commit(s) checked: {failed} failed, {skipped} skipped (merge/revert/fixup/squash)",
                    results.len()
                );
            }
        }
    }
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_findings(findings: &[Finding], printer: &Printer) {
    for f in findings {
        let rule = match f.level {
            Level::Error => printer.styles.error.paint(f.rule),
            Level::Warning => printer.styles.warning.paint(f.rule),
        };
        println!("    {rule}: {}", esc(&f.message));
        println!("      expected: {}", esc(&f.expected));
        if let Some(h) = &f.hint {
            println!("      {} {}", printer.styles.help.paint("hint:"), esc(h));
        }
    }
}

pub fn branch(cli: &Cli, args: &LintBranchArgs, printer: &Printer) -> Result<ExitCode> {
    let ctx = super::Context::load_quick(cli, printer)?;
    let attributor = ctx.attributor()?;
    let name = match &args.name {
        Some(n) => n.clone(),
        None => match ctx.repo()?.current_branch()? {
            Some(b) => b,
            // CI checkouts are detached: the CI names the branch in the environment.
            None => ["GITHUB_HEAD_REF", "GITHUB_REF_NAME", "CI_COMMIT_REF_NAME", "BUILDKITE_BRANCH", "BRANCH_NAME"]
                .iter()
                .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
                .ok_or_else(|| {
                    CliError::Config(
                        "HEAD is detached and no CI variable (GITHUB_HEAD_REF, GITHUB_REF_NAME, CI_COMMIT_REF_NAME) names the branch: pass the branch name".into(),
                    )
                })?,
        },
    };
    let findings = lint_branch(&attributor, &name);
    let failed = findings.iter().any(|f| f.level == Level::Error);
    match args.format {
        Format::Json => {
            printer.json(&json!({ "branch": name, "ok": !failed, "findings": findings }))
        }
        Format::Text => {
            if findings.is_empty() {
                println!("branch `{}`: ok", esc(&name));
            } else {
                println!(
                    "{} branch `{}`",
                    printer.styles.error.paint("✗"),
                    esc(&name)
                );
                print_findings(&findings, printer);
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
