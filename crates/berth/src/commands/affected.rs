//! `berth affected`.

use std::process::ExitCode;

use berth_git::affected::{Affected, Since, Walk, affected};
use berth_git::attribution::Level;

use crate::cli::{AffectedArgs, AffectedFormat, Cli};
use crate::exit::{CliError, Result};
use crate::output::Printer;

pub fn run(cli: &Cli, args: &AffectedArgs, printer: &Printer) -> Result<ExitCode> {
    let ctx = super::Context::load(cli, printer)?;
    let attributor = ctx.attributor()?;
    let since = match &args.base {
        Some(base) => Since::Range {
            base: base.clone(),
            head: args.head.clone(),
        },
        None => Since::Deploy {
            head: args.head.clone(),
        },
    };
    let walk = Walk {
        first_parent: args.first_parent,
        explain: args.explain,
    };
    let result = affected(&ctx.repo, &attributor, &since, walk).map_err(|e| match e {
        berth_git::affected::AffectedError::Git(g) => CliError::from(g),
        other => CliError::Config(other.to_string()),
    })?;
    for n in &result.notes {
        printer.status("Note", n);
    }
    match args.format {
        AffectedFormat::Json => printer.json(&serde_json::to_value(&result).expect("serializable")),
        AffectedFormat::Github => {
            println!(
                "products={}",
                serde_json::to_string(&result.affected).expect("serializable")
            );
            println!("any={}", !result.affected.is_empty());
        }
        AffectedFormat::Text => print_text(&result, args.explain),
    }
    // Fallbacks are expected in bulk (that is what fallback_product is for): one line, not one per commit.
    let fallbacks = result
        .findings
        .iter()
        .filter(|f| f.finding.rule == "fallback")
        .count();
    if fallbacks > 0 && args.format != AffectedFormat::Json {
        printer.status(
            "Note",
            &format!("{fallbacks} commit(s) name no product and touch no product's paths; attributed to fallback_product (`--format json` lists them)"),
        );
    }
    for f in result
        .findings
        .iter()
        .filter(|f| f.finding.rule != "fallback")
    {
        let word = match f.finding.level {
            Level::Error => printer.styles.error.paint("error"),
            Level::Warning => printer.styles.warning.paint("warning"),
        };
        let hint = f
            .finding
            .hint
            .as_ref()
            .map(|h| format!(" ({h})"))
            .unwrap_or_default();
        eprintln!(
            "{word}[{}]: {} {}: {}{}",
            f.finding.rule,
            f.commit,
            crate::output::esc(&f.subject),
            crate::output::esc(&f.finding.message),
            crate::output::esc(&hint)
        );
    }
    let unattributed = result.unattributed();
    if unattributed > 0 {
        printer.error(&format!(
            "{unattributed} commit(s) belong to no product; name the product in the task slug or a Product: trailer, or set [project] fallback_product"
        ));
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_text(r: &Affected, explain: bool) {
    let list = if r.affected.is_empty() {
        "none".to_string()
    } else {
        r.affected.join(", ")
    };
    println!("affected: {list}");
    match (&r.base, &r.merge_base) {
        (Some(base), Some(mb)) => println!(
            "  {} commit(s) on {} since {} (merge base {})",
            r.commits,
            crate::output::esc(&r.head),
            crate::output::esc(base),
            &mb[..7.min(mb.len())]
        ),
        _ => println!(
            "  {} commit(s) on {} since each product's latest deploy tag",
            r.commits,
            crate::output::esc(&r.head)
        ),
    }
    if !explain {
        return;
    }
    for p in &r.products {
        let since = p
            .since
            .as_deref()
            .map(|s| format!(" since {s}"))
            .unwrap_or_default();
        let state = if p.never_deployed {
            "affected: never deployed".to_string()
        } else if p.affected {
            format!("affected by {} commit(s){since}", p.commit_count)
        } else {
            format!("not affected{since}")
        };
        println!("\n{} — {state}", p.product);
        for c in &p.commits {
            println!("  {} {}", c.short, crate::output::esc(&c.subject));
            for e in &c.rules {
                println!(
                    "      {:<16} {}",
                    e.rule.describe(),
                    crate::output::esc(&e.detail)
                );
            }
        }
    }
}
