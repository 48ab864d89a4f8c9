//! One module per subcommand; `run` parses arguments, sets up logging and
//! maps results to exit codes.

mod check;
mod completions;
mod demo;
mod init;
mod product;
mod schema;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, ProductCommand};
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
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .with_ansi(color)
        .without_time()
        .with_target(false)
        .try_init();
}

/// The manifest to use: `--manifest`, or berth.toml in the current directory or the nearest parent.
pub fn find_manifest(cli: &Cli) -> Result<PathBuf> {
    if let Some(p) = &cli.manifest {
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

/// Write `contents` to `path` atomically: a temp file beside it, then rename.
pub fn write_atomic(path: &Path, contents: &str) -> Result<()> {
    let dir = manifest_dir(path);
    let mut tmp = tempfile::NamedTempFile::new_in(&dir)
        .map_err(|e| CliError::Config(format!("cannot write in {}: {e}", dir.display())))?;
    std::io::Write::write_all(&mut tmp, contents.as_bytes())
        .map_err(|e| CliError::Config(format!("cannot write {}: {e}", path.display())))?;
    tmp.persist(path)
        .map_err(|e| CliError::Config(format!("cannot write {}: {}", path.display(), e.error)))?;
    Ok(())
}
