//! Command-line arguments. Each subcommand's arguments live beside it here;
//! the work is done in `commands/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::output::{ColorChoice, Format};

const ABOUT: &str = "Run several products from one monorepo on shared infrastructure.";

const LONG_ABOUT: &str = "\
Run several products from one monorepo on shared infrastructure.

Each product gets its own berth: its own containers, database and role, Redis \
key space, domains, deploy history, rollbacks and backups. One manifest, \
berth.toml, is the single source of truth.";

const AFTER_HELP: &str = "\
Exit codes: 0 success, 1 the check or operation failed, 2 usage or configuration error.
Logs go to stderr; set BERTH_LOG (or RUST_LOG) to debug or trace for more.

Start here:
  berth init --from docker-compose.dev.yml      import today's single-product setup
  berth product add realestate --like bestays   add a second product
  berth check                                   validate berth.toml, scan git for secrets
  berth demo                                    see it all run in a temp directory";

#[derive(Debug, Parser)]
#[command(name = "berth", version, about = ABOUT, long_about = LONG_ABOUT, after_help = AFTER_HELP)]
#[command(propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// Path to berth.toml [default: berth.toml in this directory or the nearest parent]
    #[arg(
        long,
        short = 'm',
        global = true,
        env = "BERTH_MANIFEST",
        value_name = "PATH"
    )]
    pub manifest: Option<PathBuf>,

    /// When to colour output
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN")]
    pub color: ColorChoice,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate berth.toml and scan the files git tracks for committed secrets
    #[command(long_about = CHECK_LONG)]
    Check(CheckArgs),
    /// Create berth.toml from an existing single-product docker-compose file
    #[command(long_about = INIT_LONG)]
    Init(InitArgs),
    /// List products, or add one modelled on an existing product
    #[command(subcommand)]
    Product(ProductCommand),
    /// Print the JSON schema of berth.toml (for editors and CI)
    Schema(SchemaArgs),
    /// Print shell completions
    Completions(CompletionsArgs),
    /// Run berth's main job end to end on an embedded two-product example, in a temp directory
    #[command(long_about = DEMO_LONG)]
    Demo(DemoArgs),
}

const CHECK_LONG: &str = "\
Validate berth.toml and scan the files git tracks for committed secrets.

Every problem is reported at once with file:line:column: colliding host ports, \
shared Redis databases, overlapping Redis prefixes, duplicate databases, roles \
or domains, paths owned by two products, ambiguous aliases, secret values \
written into the manifest, malformed health checks, and more.

The secret scan reads every tracked file for Clerk and OpenRouter keys, AWS \
access keys, private key blocks, passwords in URLs and *_SECRET*/*_PASSWORD*/*_API_KEY* \
assignments with real values, and prints each finding with the value masked. \
Mark a deliberate fake with `berth:allow-secret` on its line, or exclude paths \
in [secret_scan] exclude.

Exit status: 0 clean (warnings allowed), 1 secrets found in tracked files, \
2 berth.toml is invalid.";

const INIT_LONG: &str = "\
Create berth.toml from an existing single-product docker-compose file.

PostgreSQL and Redis services become [infra.postgres] and [infra.redis]; every \
other service becomes a service of one product. Build contexts become shared \
path groups. DATABASE_URL and REDIS_URL become the product's database (name, \
role) and Redis (db, prefix). Secret values are never copied: a variable with a \
secret-looking name or value, or one interpolated from the environment, is \
listed under `secrets` by name only. The result must pass `berth check` before \
it is written.";

const DEMO_LONG: &str = "\
Run berth's main job end to end on an embedded two-product example (bestays and \
realestate), in a fresh temporary git repository. Needs only git: no Docker.

The demo checks the manifest, adds a third product modelled on the first, \
and shows the secret scan catching a committed .env file.";

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Skip the scan of tracked files for secrets
    #[arg(long)]
    pub no_secret_scan: bool,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The docker-compose file to import
    #[arg(long, value_name = "COMPOSE_FILE")]
    pub from: PathBuf,
    /// Product name [default: derived from PRODUCT_ID, container names or POSTGRES_DB]
    #[arg(long)]
    pub product: Option<String>,
    /// Project name [default: <product>-monorepo]
    #[arg(long)]
    pub project: Option<String>,
    /// Where to write the manifest
    #[arg(long, short, value_name = "PATH", default_value = "berth.toml")]
    pub output: PathBuf,
    /// Replace an existing manifest
    #[arg(long)]
    pub force: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Subcommand)]
pub enum ProductCommand {
    /// Add a product modelled on an existing one: next free host ports, Redis database,
    /// key prefix, database and role names, and domains
    Add(ProductAddArgs),
    /// List the products in berth.toml
    List(ProductListArgs),
}

#[derive(Debug, Args)]
pub struct ProductAddArgs {
    /// Name of the new product (a lowercase slug)
    pub name: String,
    /// The existing product to copy
    #[arg(long, value_name = "PRODUCT")]
    pub like: String,
    /// Replace the product if it already exists
    #[arg(long)]
    pub force: bool,
    /// Show what would change without writing berth.toml
    #[arg(long)]
    pub dry_run: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct ProductListArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// Write the schema to this file instead of stdout
    #[arg(long, short, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Exit 1 if the file given by --output is not up to date
    #[arg(long, requires = "output")]
    pub check: bool,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to generate completions for
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Run in this directory (must be empty or absent) instead of a temp directory, and keep it
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}
