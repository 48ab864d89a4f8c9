//! `berth demo`: the main job, end to end, on an embedded example in a temp
//! git repository. Each step runs the same code as the real command.

use std::path::Path;
use std::process::ExitCode;

use berth_manifest::product_add::add_product;

use crate::cli::DemoArgs;
use crate::demo_files::EXAMPLE;
use crate::exit::{CliError, Result};
use crate::output::Printer;

/// The seed document's `.env` block, as it was committed.
const SEED_ENV: &str = "\
POSTGRES_USER=postgres
POSTGRES_PASSWORD=postgres
CLERK_SECRET_KEY=sk_test_<redacted>
VITE_CLERK_PUBLISHABLE_KEY=pk_test_<redacted>
OPENROUTER_API_KEY=sk-or-v1-...
LLM_CHAT_MODEL=anthropic/claude-3-sonnet
";

pub fn run(args: &DemoArgs, printer: &Printer) -> Result<ExitCode> {
    let (_tmp, dir) = match &args.dir {
        Some(d) => {
            if d.exists() && d.read_dir().map(|mut r| r.next().is_some()).unwrap_or(true) {
                return Err(CliError::Config(format!(
                    "{} is not empty; pick a new directory",
                    d.display()
                )));
            }
            std::fs::create_dir_all(d)
                .map_err(|e| CliError::Config(format!("cannot create {}: {e}", d.display())))?;
            (None, d.clone())
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("berth-demo-")
                .tempdir()
                .map_err(|e| CliError::Failed(format!("cannot create a temp directory: {e}")))?;
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    step(
        printer,
        1,
        &format!(
            "create a two-product monorepo (bestays, realestate) in {}",
            dir.display()
        ),
    );
    for (rel, body) in EXAMPLE {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().expect("file has a parent")).map_err(io)?;
        std::fs::write(&p, body).map_err(io)?;
    }
    let repo = git_init(&dir)?;
    commit(
        &repo,
        "chore: import the multi-product example (TASK-000-setup-bestays)",
    )?;

    let manifest = dir.join("berth.toml");
    step(
        printer,
        2,
        "berth check: validate berth.toml and scan tracked files for secrets",
    );
    let report = super::check::check_path(&manifest, true)?;
    printer.diagnostics(&report.diagnostics);
    expect(report.exit_code() == 0, "the example passes `berth check`")?;
    println!(
        "    ok: {} products, {} tracked files scanned, no secrets",
        product_count(&manifest)?,
        report.scanned_files.unwrap_or(0)
    );

    step(printer, 3, "berth product add villas --like bestays");
    let text = std::fs::read_to_string(&manifest).map_err(io)?;
    let added = add_product("berth.toml", &text, "villas", "bestays", false).map_err(|d| {
        printer.diagnostics(&d);
        CliError::Failed("product add failed".into())
    })?;
    std::fs::write(&manifest, &added.toml).map_err(io)?;
    for c in &added.changes {
        println!("    {c}");
    }
    let report = super::check::check_path(&manifest, true)?;
    expect(
        report.exit_code() == 0,
        "the manifest with three products passes `berth check`",
    )?;
    commit(&repo, "feat: add the villas product (TASK-001-add-villas)")?;
    println!(
        "    ok: {} products, still no collisions",
        product_count(&manifest)?
    );

    step(
        printer,
        4,
        "berth lint commit: the strategy document's commit messages",
    );
    let (loaded, _) =
        berth_manifest::load_path(&manifest).map_err(|e| CliError::Failed(e.to_string()))?;
    let attributor = berth_git::attribution::Attributor::new(&loaded.manifest)
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let mut failed = 0;
    for message in [
        "feat: implement login (US-001 TASK-001-login-bestays)",
        "TASK-050-port-login-realestate",
        "TASK-002-database-schema",
    ] {
        let commit = berth_git::attribution::Commit {
            message: message.into(),
            ..Default::default()
        };
        let r = berth_git::lint::lint_commit(&attributor, &commit, false, false);
        if r.failed() {
            failed += 1;
            let f = r
                .findings
                .iter()
                .find(|f| f.level == berth_git::attribution::Level::Error)
                .expect("a failing finding");
            println!(
                "    ✗ {message}\n        {}: {}\n        hint: {}",
                f.rule,
                f.message,
                f.hint.as_deref().unwrap_or("-")
            );
        } else {
            println!("    ✓ {message}  -> {}", r.products.join(", "));
        }
    }
    expect(failed == 1, "exactly the message naming no product to fail")?;

    step(
        printer,
        5,
        "berth affected --explain: a shared fix and a realestate feature",
    );
    let base = repo.resolve("HEAD")?.expect("HEAD exists");
    std::fs::write(
        dir.join("apps/server/app/health.py"),
        "def ok():\n    return True\n",
    )
    .map_err(io)?;
    commit(&repo, "fix: health check (TASK-003-health-bestays)")?;
    std::fs::write(
        dir.join("products/realestate/listings.yaml"),
        "kinds: [house]\n",
    )
    .map_err(io)?;
    commit(&repo, "feat: listings (TASK-004-listings-realestate)")?;
    let since = berth_git::affected::Since::Range {
        base,
        head: "HEAD".into(),
    };
    let walk = berth_git::affected::Walk {
        first_parent: false,
        explain: true,
    };
    let result = berth_git::affected::affected(&repo, &attributor, &since, walk)
        .map_err(|e| CliError::Failed(e.to_string()))?;
    println!("    affected: {}", result.affected.join(", "));
    for p in &result.products {
        for c in &p.commits {
            let rules: Vec<&str> = c.rules.iter().map(|e| e.rule.describe()).collect();
            println!(
                "      {:<11} {} ({})",
                p.product,
                c.subject,
                rules.join(", ")
            );
        }
    }
    expect(
        result.affected.len() == 3,
        "the shared fix to affect every product",
    )?;

    step(
        printer,
        6,
        "force-commit the strategy document's .env, as it was, and run berth check again",
    );
    std::fs::write(dir.join(".env"), SEED_ENV).map_err(io)?;
    // .gitignore lists .env; the seed's repository committed it anyway.
    repo.git("stage .env past .gitignore")
        .args(["add", "-f", ".env"])
        .output()?;
    commit(&repo, "chore: share dev settings (TASK-002-env-bestays)")?;
    let report = super::check::check_path(&manifest, true)?;
    printer.diagnostics(&report.diagnostics);
    let secrets = report
        .diagnostics
        .iter()
        .filter(|d| d.code == "committed-secret")
        .count();
    expect(
        report.exit_code() == 1 && secrets == 3,
        "the secret scan fails on the committed .env",
    )?;
    println!("    caught {secrets} committed secrets, values masked; `berth check` exits 1");

    step(printer, 7, "done");
    println!(
        "    check, product add, lint, affected and the secret scan ran for real in {}.",
        dir.display()
    );
    if args.dir.is_none() {
        println!("    (a temp directory, removed now; pass --dir DIR to keep it)");
    }
    Ok(ExitCode::SUCCESS)
}

fn step(printer: &Printer, n: usize, what: &str) {
    println!();
    println!("{}", printer.styles.bold.paint(&format!("[{n}] {what}")));
}

fn io(e: std::io::Error) -> CliError {
    CliError::Failed(format!("demo: {e}"))
}

fn expect(ok: bool, what: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(CliError::Failed(format!(
            "demo step failed: expected {what}"
        )))
    }
}

fn product_count(manifest: &Path) -> Result<usize> {
    let (loaded, _) =
        berth_manifest::load_path(manifest).map_err(|e| CliError::Failed(e.to_string()))?;
    Ok(loaded.manifest.products.len())
}

fn git_init(dir: &Path) -> Result<berth_git::Repo> {
    berth_cmd::Cmd::new("git", "create the demo repository")
        .args(["init", "-q", "-b", "main"])
        .current_dir(dir)
        .hint_if_missing("berth demo needs git: apt-get install git")
        .output()?;
    let repo = berth_git::Repo::open(dir)?;
    for (k, v) in [
        ("user.name", "berth demo"),
        ("user.email", "demo@berth.invalid"),
        ("commit.gpgsign", "false"),
    ] {
        repo.git("configure the demo repository")
            .args(["config", k, v])
            .output()?;
    }
    Ok(repo)
}

fn commit(repo: &berth_git::Repo, message: &str) -> Result<()> {
    repo.git("stage the demo files")
        .args(["add", "-A"])
        .output()?;
    repo.git("commit in the demo repository")
        .args(["commit", "-q", "-m", message])
        .output()?;
    Ok(())
}
