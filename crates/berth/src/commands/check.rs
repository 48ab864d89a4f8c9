//! `berth check`: the manifest rules, path ownership against tracked files, and
//! the secret scan, all reported at once.

use std::path::Path;
use std::process::ExitCode;

use berth_manifest::diag::{self, Diagnostic};
use berth_manifest::{Loaded, validate};
use serde_json::json;

use crate::cli::{CheckArgs, Cli};
use crate::exit::{CliError, Result};
use crate::output::{Format, Printer};

/// Everything `berth check` found.
pub struct Report {
    pub file: String,
    pub loaded: Option<Loaded>,
    pub diagnostics: Vec<Diagnostic>,
    /// Whether the tracked files were scanned.
    pub scanned_files: Option<usize>,
}

impl Report {
    fn count(&self, f: impl Fn(&Diagnostic) -> bool) -> usize {
        self.diagnostics.iter().filter(|d| f(d)).count()
    }
    pub fn errors(&self) -> usize {
        self.count(Diagnostic::is_error)
    }
    pub fn warnings(&self) -> usize {
        self.count(|d| !d.is_error())
    }
    /// Manifest problems are configuration errors (2); committed secrets fail the check (1).
    pub fn exit_code(&self) -> u8 {
        let is_secret = |d: &Diagnostic| d.code == "committed-secret";
        if self
            .diagnostics
            .iter()
            .any(|d| d.is_error() && !is_secret(d))
        {
            2
        } else if self
            .diagnostics
            .iter()
            .any(|d| d.is_error() && is_secret(d))
        {
            1
        } else {
            0
        }
    }
}

/// `command`, `migrate` and `build_command` run through `sh -c`: each must be shell
/// syntax `sh -n` accepts, or it fails only at deploy.
fn shell_syntax(loaded: &Loaded) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (pname, product) in &loaded.manifest.products {
        for (sname, svc) in &product.services {
            for (key, value) in [
                ("command", &svc.command),
                ("migrate", &svc.migrate),
                ("build_command", &svc.build_command),
            ] {
                let Some(text) = value.as_deref().filter(|t| !t.trim().is_empty()) else {
                    continue;
                };
                if text.contains('\0') {
                    continue;
                }
                let Ok(o) = berth_cmd::Cmd::new("sh", "check the syntax of a shell command")
                    .args(["-n", "-c", text])
                    .timeout(Some(std::time::Duration::from_secs(10)))
                    .output_unchecked()
                else {
                    continue;
                };
                if o.status.success() {
                    continue;
                }
                let why = o.stderr_str();
                // dash says `sh: 1: Syntax error: ...`: keep the message.
                let why = why.lines().next().unwrap_or("").trim();
                let why = why.trim_start_matches("sh: ");
                let why = why
                    .split_once(": ")
                    .filter(|(line, _)| line.bytes().all(|b| b.is_ascii_digit()))
                    .map_or(why, |(_, rest)| rest);
                let mut d = Diagnostic::error(
                    "command-syntax",
                    format!("`{key}` of {pname}.{sname} is not valid shell syntax: {why}"),
                )
                .at(loaded
                    .source
                    .label(&["products", pname, "services", sname, key], ""))
                .help("the local runtime runs it with `sh -c`; `sh -n -c '...'` shows the problem");
                berth_manifest::secrets::mask_diagnostic(&mut d);
                out.push(d);
            }
        }
    }
    out
}

/// Run every check on the manifest at `path`.
pub fn check_path(path: &Path, secret_scan: bool) -> Result<Report> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Config(format!("cannot read {file}: {e}")))?;
    let mut report = Report {
        file: file.clone(),
        loaded: None,
        diagnostics: Vec::new(),
        scanned_files: None,
    };
    match berth_manifest::parse_str(&file, &text) {
        Err(diags) => report.diagnostics = diags,
        Ok(loaded) => {
            report.diagnostics = validate::validate(&loaded);
            report.diagnostics.extend(shell_syntax(&loaded));
            report.loaded = Some(loaded);
        }
    }
    let dir = super::manifest_dir(path);
    if let Some(repo) = berth_git::Repo::discover(&dir)? {
        let files = repo.tracked_files()?;
        if let Some(loaded) = &report.loaded {
            report
                .diagnostics
                .extend(validate::ownership_conflicts(loaded, &files));
            report
                .diagnostics
                .extend(validate::workdirs_untracked(loaded, &files));
        }
        if secret_scan {
            // Every file the repository tracks, not only those under berth.toml: a key
            // committed at the root of the monorepo is just as leaked.
            let top = super::render::absolute(&repo.toplevel()?);
            let all = berth_git::Repo::open(&top)?.tracked_files()?;
            let manifest_dir = super::render::absolute(&dir);
            let prefix = super::render::relative(&top, &manifest_dir);
            let exclude: Vec<String> = report
                .loaded
                .as_ref()
                .map(|l| l.manifest.secret_scan.exclude.clone())
                .unwrap_or_default()
                .into_iter()
                .map(|g| {
                    if prefix == "." {
                        g
                    } else {
                        format!("{prefix}/{g}")
                    }
                })
                .collect();
            let cwd = super::render::absolute(Path::new("."));
            let found = berth_git::scan::scan_files(&top, &all, &exclude);
            report.diagnostics.extend(found.into_iter().map(|mut d| {
                // Name files relative to where the user stands, like the manifest.
                if let Some(l) = &mut d.primary {
                    l.file = super::render::relative(&cwd, &top.join(&l.file));
                }
                d
            }));
            report.scanned_files = Some(all.len());
        }
    } else if secret_scan {
        report.diagnostics.push(
            Diagnostic::warning(
                "no-git",
                format!(
                    "{} is not in a git repository, so no tracked files were scanned for secrets",
                    dir.display()
                ),
            )
            .help("run `git init`, or pass --no-secret-scan to say you meant it"),
        );
    }
    diag::sort(&mut report.diagnostics);
    Ok(report)
}

pub fn run(cli: &Cli, args: &CheckArgs, printer: &Printer) -> Result<ExitCode> {
    let path = super::find_manifest(cli)?;
    let report = check_path(&path, !args.no_secret_scan)?;
    let code = report.exit_code();
    match args.format {
        Format::Json => printer.json(&to_json(&report)),
        Format::Text => {
            printer.diagnostics(&report.diagnostics);
            let (e, w) = (report.errors(), report.warnings());
            let plural = |n: usize, s: &str| format!("{n} {s}{}", if n == 1 { "" } else { "s" });
            if e > 0 {
                let secrets = report.count(|d| d.is_error() && d.code == "committed-secret");
                let mut parts = Vec::new();
                if e > secrets {
                    parts.push(format!("{}: {}", report.file, plural(e - secrets, "error")));
                }
                if secrets > 0 {
                    parts.push(format!(
                        "{} in tracked files",
                        plural(secrets, "committed secret")
                    ));
                }
                printer.error(&format!("{}; {}", parts.join("; "), plural(w, "warning")));
            } else {
                let m = &report
                    .loaded
                    .as_ref()
                    .expect("no errors means it parsed")
                    .manifest;
                let services: usize = m.products.values().map(|p| p.services.len()).sum();
                let scanned = match report.scanned_files {
                    Some(n) => format!(", {} scanned for secrets", plural(n, "tracked file")),
                    None => String::new(),
                };
                println!(
                    "{}: ok ({}, {}{scanned}; {})",
                    report.file,
                    plural(m.products.len(), "product"),
                    plural(services, "service"),
                    plural(w, "warning")
                );
            }
        }
    }
    Ok(ExitCode::from(code))
}

fn to_json(r: &Report) -> serde_json::Value {
    json!({
        "manifest": r.file,
        "ok": r.errors() == 0,
        "errors": r.errors(),
        "warnings": r.warnings(),
        "products": r.loaded.as_ref().map(|l| l.manifest.products.keys().cloned().collect::<Vec<_>>()).unwrap_or_default(),
        "scanned_files": r.scanned_files,
        "diagnostics": r.diagnostics,
    })
}
