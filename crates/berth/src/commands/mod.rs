//! One module per subcommand; `run` parses arguments, sets up logging and
//! maps results to exit codes.

mod affected;
mod backup;
mod check;
mod completions;
mod demo;
mod deploy;
mod doctor;
mod hooks;
mod init;
mod lint;
mod log;
mod logs;
mod product;
mod provision;
mod render;
mod run_cmd;
mod schema;
mod secrets;
mod serve;
mod tls;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{
    Cli, Command, HooksCommand, LintCommand, LockCommand, ProductCommand, SecretsCommand,
    TlsCommand,
};
use crate::exit::{CliError, Result};
use crate::output::Printer;

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let color = cli.color.enabled();
    init_logging(color);
    let printer = Printer::new(color);
    let result = match &cli.command {
        Command::Check(a) => check::run(&cli, a, &printer),
        Command::Init(a) => init::run(a, &printer),
        Command::Product(ProductCommand::Add(a)) => product::add(&cli, a, &printer),
        Command::Product(ProductCommand::List(a)) => product::list(&cli, a, &printer),
        Command::Affected(a) => affected::run(&cli, a, &printer),
        Command::Lint(LintCommand::Commit(a)) => lint::commit(&cli, a, &printer),
        Command::Lint(LintCommand::Branch(a)) => lint::branch(&cli, a, &printer),
        Command::Hooks(HooksCommand::Install(a)) => hooks::install(&cli, a, &printer),
        Command::Hooks(HooksCommand::Uninstall(a)) => hooks::uninstall(&cli, a, &printer),
        Command::Hooks(HooksCommand::Run(a)) => hooks::run(&cli, a, &printer),
        Command::Log(a) => log::run(&cli, a, &printer),
        Command::Render(a) => render::run(&cli, a, &printer),
        Command::Provision(a) => provision::run(&cli, a, &printer),
        Command::Deploy(a) => deploy::deploy(&cli, a, &printer),
        Command::Rollback(a) => deploy::rollback(&cli, a, &printer),
        Command::History(a) => deploy::history(&cli, a, &printer),
        Command::Status(a) => deploy::status(&cli, a, &printer),
        Command::Boot(a) => deploy::boot(&cli, a, &printer),
        Command::Serve(a) => serve::run(&cli, a, &printer),
        Command::Lock(LockCommand::Status(a)) => deploy::lock_status(&cli, a, &printer),
        Command::Lock(LockCommand::Acquire(a)) => deploy::lock_acquire(&cli, a, &printer),
        Command::Lock(LockCommand::Release(a)) => deploy::lock_release(&cli, a, &printer),
        Command::Tls(TlsCommand::Issue(a)) => tls::issue(&cli, a, &printer),
        Command::Tls(TlsCommand::Renew(a)) => tls::renew(&cli, a, &printer),
        Command::Tls(TlsCommand::Status(a)) => tls::status(&cli, a, &printer),
        Command::Doctor(a) => doctor::run(&cli, a, &printer),
        Command::Logs(a) => logs::run(&cli, a, &printer),
        Command::Run(a) => run_cmd::run(&cli, a, &printer),
        Command::Secrets(SecretsCommand::Set(a)) => secrets::set(&cli, a, &printer),
        Command::Secrets(SecretsCommand::Unset(a)) => secrets::unset(&cli, a, &printer),
        Command::Secrets(SecretsCommand::Import(a)) => secrets::import(&cli, a, &printer),
        Command::Secrets(SecretsCommand::List(a)) => secrets::list(&cli, a, &printer),
        Command::Secrets(SecretsCommand::Check(a)) => secrets::check(&cli, a, &printer),
        Command::Backup(a) => backup::run(&cli, a, &printer),
        Command::Restore(a) => backup::restore(&cli, a, &printer),
        Command::Schema(a) => schema::run(a, &printer),
        Command::Completions(a) => completions::run(a),
        Command::Demo(a) => demo::run(a, &printer),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if !matches!(e, CliError::Reported(_)) {
                printer.error(&e.to_string());
            }
            e.code()
        }
    }
}

fn init_logging(color: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("BERTH_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .with_ansi(color)
        .with_target(false);
    // BERTH_LOG_TIMES=1: each line with the time since berth started (where a command's
    // time goes, with BERTH_LOG=debug: every program it runs, and at trace how long each took).
    if std::env::var_os("BERTH_LOG_TIMES").is_some_and(|v| v != "0") {
        let _ = builder
            .with_timer(tracing_subscriber::fmt::time::Uptime::default())
            .try_init();
    } else {
        let _ = builder.without_time().try_init();
    }
}

/// The manifest to use: `--manifest`, or berth.toml in the current directory or the nearest parent.
pub fn find_manifest(cli: &Cli) -> Result<PathBuf> {
    if let Some(p) = &cli.manifest {
        if let Some(why) = berth_manifest::load::unusable_manifest(p) {
            return Err(CliError::Config(format!("manifest {why}")));
        }
        if p.is_file() {
            return Ok(p.clone());
        }
        return Err(CliError::Config(format!(
            "manifest {} does not exist",
            p.display()
        )));
    }
    let cwd = std::env::current_dir()
        .map_err(|e| CliError::Config(format!("cannot read the current directory: {e}")))?;
    for dir in cwd.ancestors() {
        let candidate = dir.join("berth.toml");
        // Something is there but it is not a manifest berth can read: say what,
        // rather than looking further up or claiming there is none.
        if let Some(why) = berth_manifest::load::unusable_manifest(&candidate) {
            return Err(CliError::Config(why));
        }
        if candidate.is_file() {
            return Ok(relative_to(&candidate, &cwd));
        }
    }
    Err(CliError::Config(format!(
        "no berth.toml in {} or any parent directory; create one with `berth init --from docker-compose.yml`, or pass --manifest",
        cwd.display()
    )))
}

/// `path` relative to `base` when it is under it (for shorter messages).
fn relative_to(path: &Path, base: &Path) -> PathBuf {
    path.strip_prefix(base)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| path.to_path_buf())
}

/// The directory holding the manifest (paths in it are relative to this).
pub fn manifest_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Load and fully validate the manifest at `path`; problems are printed (exit 2).
pub fn load_manifest(path: &Path, printer: &Printer) -> Result<berth_manifest::Manifest> {
    match berth_manifest::load_path(path) {
        Ok((loaded, _warnings)) => Ok(loaded.manifest),
        Err(berth_manifest::LoadError::Invalid { diagnostics, path }) => {
            printer.diagnostics(&diagnostics);
            printer.error(&format!(
                "{path} is invalid; `berth check` lists every problem"
            ));
            Err(CliError::Reported(2))
        }
        Err(e) => Err(CliError::Config(e.to_string())),
    }
}

/// Like [`write_atomic`], creating parent directories first.
pub fn write_atomic_mkdir(path: &Path, contents: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| CliError::Failed(format!("cannot create {}: {e}", parent.display())))?;
    }
    write_atomic(path, contents)
}

/// Write `contents` to `path` atomically (temp file, fsync, rename): a full disk
/// leaves the previous file whole and no temp file. Keeps the mode of the file being
/// replaced; new files get 0644.
pub fn write_atomic(path: &Path, contents: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644);
    berth_cmd::fs::write_atomic_mode(path, contents.as_bytes(), Some(mode))
        .map_err(|e| CliError::Failed(format!("could not write {}: {e}", path.display())))?;
    // The umask narrows a mode given at creation: set it as the old file had it.
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
    Ok(())
}

/// The git repository holding the manifest.
pub fn repo_for(manifest: &Path) -> Result<berth_git::Repo> {
    let dir = manifest_dir(manifest);
    berth_git::Repo::discover(&dir)?.ok_or_else(|| {
        CliError::Config(format!("{} is not inside a git repository", dir.display()))
    })
}

/// A loaded manifest and its repository, for commands that read git history.
pub struct Context {
    pub manifest: berth_manifest::Manifest,
    pub repo: berth_git::Repo,
}

impl Context {
    /// Load and fully validate the manifest; invalid manifests are reported (exit 2).
    pub fn load(cli: &Cli, printer: &Printer) -> Result<Self> {
        let path = find_manifest(cli)?;
        let manifest = match berth_manifest::load_path(&path) {
            Ok((loaded, _warnings)) => loaded.manifest,
            Err(berth_manifest::LoadError::Invalid { diagnostics, path }) => {
                printer.diagnostics(&diagnostics);
                printer.error(&format!(
                    "{path} is invalid; `berth check` lists every problem"
                ));
                return Err(CliError::Reported(2));
            }
            Err(e) => return Err(CliError::Config(e.to_string())),
        };
        let repo = repo_for(&path)?;
        Ok(Self { manifest, repo })
    }

    /// Load the manifest with the fast path only (for hooks that must start in
    /// milliseconds); falls back to full diagnostics if it does not parse.
    pub fn load_quick(cli: &Cli, printer: &Printer) -> Result<QuickContext> {
        let path = find_manifest(cli)?;
        let text = std::fs::read_to_string(&path)
            .map_err(|e| CliError::Config(format!("cannot read {}: {e}", path.display())))?;
        match toml::from_str::<berth_manifest::Manifest>(&text) {
            Ok(manifest) => Ok(QuickContext { manifest, path }),
            Err(_) => {
                let diags = match berth_manifest::parse_str(&path.display().to_string(), &text) {
                    Err(d) => d,
                    Ok(_) => Vec::new(),
                };
                printer.diagnostics(&diags);
                printer.error(&format!(
                    "{} is invalid; `berth check` lists every problem",
                    path.display()
                ));
                Err(CliError::Reported(2))
            }
        }
    }

    pub fn attributor(&self) -> Result<berth_git::attribution::Attributor<'_>> {
        berth_git::attribution::Attributor::new(&self.manifest)
            .map_err(|e| CliError::Config(e.to_string()))
    }
}

/// A manifest parsed without span tracking; git is opened only when needed.
pub struct QuickContext {
    pub manifest: berth_manifest::Manifest,
    pub path: PathBuf,
}

impl QuickContext {
    pub fn attributor(&self) -> Result<berth_git::attribution::Attributor<'_>> {
        berth_git::attribution::Attributor::new(&self.manifest)
            .map_err(|e| CliError::Config(e.to_string()))
    }

    pub fn repo(&self) -> Result<berth_git::Repo> {
        repo_for(&self.path)
    }
}

/// Check revisions a user passed before they reach `git log`: no options smuggled in
/// (`--output=...`), and every side of a range names a commit here.
pub fn validate_revs(repo: &berth_git::Repo, revs: &[&str]) -> Result<()> {
    for rev in revs {
        if rev.starts_with('-') {
            return Err(CliError::Config(format!(
                "`{rev}` is not a revision (revisions cannot start with `-`)"
            )));
        }
        let sides: Vec<&str> = if let Some((a, b)) = rev.split_once("...") {
            vec![a, b]
        } else if let Some((a, b)) = rev.split_once("..") {
            vec![a, b]
        } else {
            vec![rev.trim_start_matches('^')]
        };
        for side in sides.into_iter().filter(|s| !s.is_empty()) {
            if repo.resolve(side)?.is_none() {
                let hint = if side.chars().all(|c| c.is_ascii_hexdigit()) && side.len() >= 7 {
                    format!(
                        "; if it was force-pushed away or not fetched yet, `git fetch origin {side}` may bring it back"
                    )
                } else {
                    String::new()
                };
                return Err(CliError::Config(format!(
                    "`{side}` names no commit in this repository{hint}"
                )));
            }
        }
    }
    Ok(())
}
