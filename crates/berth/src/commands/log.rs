//! `berth log --product|--task|--story`.

use std::process::ExitCode;

use berth_git::message::{Message, story_refs};
use serde_json::json;

use crate::cli::{Cli, LogArgs};
use crate::exit::{CliError, Result};
use crate::output::{Format, Printer, esc};

pub fn run(cli: &Cli, args: &LogArgs, printer: &Printer) -> Result<ExitCode> {
    let ctx = super::Context::load(cli, printer)?;
    let attributor = ctx.attributor()?;
    let product = match &args.product {
        Some(p) => Some(attributor.product_named(p).ok_or_else(|| {
            let hint = attributor
                .closest(p)
                .map(|c| format!(" (did you mean `{c}`?)"))
                .unwrap_or_default();
            CliError::Config(format!(
                "`{p}` is not a product or alias{hint}; products: {}",
                attributor.product_list()
            ))
        })?),
        None => None,
    };
    let mut revs: Vec<&str> = args.revs.iter().map(String::as_str).collect();
    super::validate_revs(&ctx.repo, &revs)?;
    if revs.is_empty() && !args.all && ctx.repo.resolve("HEAD")?.is_none() {
        return Err(CliError::Config(
            "this repository has no commits yet".into(),
        ));
    }
    if args.all {
        revs.push("--all");
    }
    let needs_files = product.is_some();
    let commits = if needs_files {
        ctx.repo.commits(&revs)?
    } else {
        ctx.repo.commit_messages(&revs)?
    };
    if needs_files {
        // A shallow clone's boundary commit has no parent here: every file looks
        // added in it, so it would be attributed to every product without a word.
        let boundary = ctx.repo.shallow_boundary()?;
        for c in commits.iter().filter(|c| boundary.contains(&c.id)) {
            printer.warn(&format!(
                "this is a shallow clone: {} ({}) is the oldest commit fetched and has no parent here, so every file looks added in it and it is attributed to every product it touches; {}",
                c.short(),
                c.subject(),
                berth_git::affected::UNSHALLOW_HINT
            ));
        }
    }
    let mut rows = Vec::new();
    for c in &commits {
        let msg = Message::parse(&c.message);
        let text = msg.text();
        let a = attributor.attribute(c);
        let stories = story_refs(&text, &attributor.story_re);
        let keep = if let Some(p) = &product {
            a.products.contains(p)
        } else if let Some(t) = &args.task {
            a.tasks
                .iter()
                .any(|r| r.full == *t || r.full.starts_with(&format!("{t}-")))
        } else if let Some(s) = &args.story {
            stories.iter().any(|x| x == s)
        } else {
            false
        };
        if keep {
            rows.push((c, a, stories));
        }
    }
    match args.format {
        Format::Json => {
            let v: Vec<_> = rows
                .iter()
                .map(|(c, a, stories)| {
                    json!({
                        "id": c.id,
                        "short": c.short(),
                        "author": c.author,
                        "date": c.date,
                        "subject": c.subject(),
                        "products": a.products,
                        "tasks": a.tasks.iter().map(|t| &t.full).collect::<Vec<_>>(),
                        "stories": stories,
                        "rules": a.evidence,
                    })
                })
                .collect();
            printer.json(&json!({ "commits": v }));
        }
        Format::Text => {
            for (c, a, _) in &rows {
                let products: Vec<&str> = a.products.iter().map(String::as_str).collect();
                println!(
                    "{} {} {}  [{}]",
                    c.short(),
                    &c.date[..10.min(c.date.len())],
                    esc(c.subject()),
                    products.join(", ")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
