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
  berth render && berth deploy bestays          zero-downtime, health-gated, tagged deploy
  berth rollback bestays                        back to the previous deploy in seconds
  berth demo                                    see it all run in a temp directory";

#[derive(Debug, Parser)]
#[command(name = "berth", version, about = ABOUT, long_about = LONG_ABOUT, after_help = AFTER_HELP)]
#[command(propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// Path to berth.toml [default: berth.toml in this directory or the nearest parent]
    #[arg(long, global = true, env = "BERTH_MANIFEST", value_name = "PATH")]
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
    /// Which products a range of commits affects, and why
    #[command(long_about = AFFECTED_LONG)]
    Affected(AffectedArgs),
    /// Check commit messages and branch names against [conventions]
    #[command(subcommand)]
    Lint(LintCommand),
    /// Install or remove the commit-msg and pre-push hooks that run `berth lint`
    #[command(subcommand)]
    Hooks(HooksCommand),
    /// List the commits of a product, task or story (by attribution, not grep)
    Log(LogArgs),
    /// Render compose, nginx, SQL, Redis ACL, .env.example, Prometheus, Grafana and CI files
    #[command(long_about = RENDER_LONG)]
    Render(RenderArgs),
    /// Create each product's database, role and Redis user on the shared servers
    #[command(long_about = PROVISION_LONG)]
    Provision(ProvisionArgs),
    /// Deploy a product: zero-downtime, health-gated, tagged, audited
    #[command(long_about = DEPLOY_LONG)]
    Deploy(DeployArgs),
    /// Roll a product back to an earlier deploy through the same health-gated switch
    Rollback(RollbackArgs),
    /// List a product's deploys (from its deploy tags) with their tasks
    History(HistoryArgs),
    /// Every product's live slot, version, health, uptime and last deploy, read from the runtime
    Status(StatusArgs),
    /// Start what a reboot stopped: each product's live slot with its live version, then nginx (idempotent; the rendered berth-boot.service runs it)
    Boot(BootArgs),
    /// Serve /metrics, a JSON API and a dashboard page, probing every product's health
    #[command(long_about = SERVE_LONG)]
    Serve(ServeArgs),
    /// Show, take or release a product's deploy lock
    #[command(subcommand)]
    Lock(LockCommand),
    /// Per-product HTTPS certificates: issue (ACME or your files), renew, status
    #[command(subcommand, long_about = TLS_LONG)]
    Tls(TlsCommand),
    /// Check what berth needs: programs, servers and credentials, nginx, ports, disk, locks
    #[command(long_about = DOCTOR_LONG)]
    Doctor(DoctorArgs),
    /// Show a product's logs: the live slot, secrets masked; -f follows across deploys
    #[command(long_about = LOGS_LONG)]
    Logs(LogsArgs),
    /// Run a one-off command in the live version's environment (audited)
    #[command(long_about = RUN_LONG)]
    Run(RunArgs),
    /// Set, unset, import, list and check a product's secrets (values are never printed)
    #[command(subcommand, long_about = SECRETS_LONG)]
    Secrets(SecretsCommand),
    /// Back up a product's database (and Redis keys); list, verify and prune backups
    #[command(long_about = BACKUP_LONG)]
    Backup(BackupArgs),
    /// Replace a product's database with a backup, without a window of data loss
    #[command(long_about = RESTORE_LONG)]
    Restore(RestoreArgs),
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

const AFFECTED_LONG: &str = "\
Which products a range of commits affects, and why.

A commit belongs to the union of: products whose owned paths it changes (both \
sides of a rename, deletions too), products depending on a shared path group it \
changes, the product its task slug names (TASK-001-login-bestays), and its \
Product: trailers. --explain shows, per product, the commits, rules and files.

--base REF compares like `git diff BASE...HEAD`: from the merge base, so a \
force-pushed base still works (and is reported). --since-deploy compares each \
product from its latest deploy tag (<product>-deploy-*); a product never \
deployed is affected. A shallow clone that does not reach the base is an error \
with the fix, never a silent guess.

Exit status: 0 done, 1 some commit could not be attributed to any product \
(set fallback_product to accept that), 2 usage error or unusable history.";

const RENDER_LONG: &str = "\
Render every file berth derives from berth.toml into --out (default deploy/<env>):
  compose/<product>.yml, compose/infra.yml   one compose project per product (+ shared infra)
  nginx/nginx.conf, nginx/berth.conf         front door; upstreams/<product>.conf point at live slots
  postgres/provision.sql                     databases and roles, idempotent
  redis/users.acl                            one ACL user per product, confined to its prefix
  env/<product>.env.example                  the names each product reads, never values
  prometheus/prometheus.yml, alerts.yml      product and service as target labels
  grafana/berth-dashboard.json               requests, errors, p95 per product
  github/workflows/berth.yml                 lint, affected, a deploy job per product

Output depends only on berth.toml: byte-identical across runs and machines, so \
--check (exit 1 listing stale files) works as a CI drift check. Secrets never \
enter these files: each product's passwords are generated into \
.berth/secrets/<product>.env (mode 0600, git-ignored; berth adds the ignore rule).";

const PROVISION_LONG: &str = "\
Create each product's database and login role on the shared PostgreSQL (from \
postgres/provision.sql, run by berth itself) and its Redis ACL user, idempotently. Prints \
what was created and what already existed. Passwords come from the product's \
secret file; they change only with --rotate-passwords.

The admin connection comes from the environment variable named by \
[infra.*] admin_url_env (default BERTH_POSTGRES_ADMIN_URL / BERTH_REDIS_ADMIN_URL); \
in container mode without it, the infra secret file and published port are used.";

const DEPLOY_LONG: &str = "\
Deploy a product. berth prints the plan, then runs it step by step:
  lock -> resolve the version (commit of --ref) -> build -> migrate (one-off, new version)
  -> start the idle slot -> health-check it -> switch nginx to it (nginx -t, graceful
  reload) -> drain and stop the old slot -> tag <product>-deploy-YYYYMMDD-HHMMSS -> unlock.
Each step is appended to .berth/audit.jsonl.

If a step fails before the switch, the old version keeps serving untouched and the new \
slot is stopped; the error names the step and shows the new service's last 50 log lines \
and its health-check responses. If the switch or the check after it fails, traffic goes \
back to the old slot. Without [proxy] the new version replaces the old in place: not \
zero-downtime, and the plan says so.

Exit status: 0 deployed, 1 the deploy failed or the product is locked, 2 usage error.";

const DEMO_LONG: &str = "\
Run berth's main job end to end on an embedded two-product example (bestays and \
realestate), in a fresh temporary git repository: deploy both products on the \
local-process runtime behind nginx, redeploy one with zero downtime, roll it back, \
and show history and status. Needs git and nginx (without nginx, deploys restart \
in place); no Docker. Services and nginx are stopped when it ends.

The demo checks the manifest, adds a third product modelled on the first, \
lints the strategy document's commit messages, explains which products two new \
commits affect, and shows the secret scan catching a committed .env file.";

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Skip the scan of tracked files for secrets
    #[arg(long)]
    pub no_secret_scan: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AffectedFormat {
    /// For people
    Text,
    /// For machines
    Json,
    /// `products=[...]` and `any=` lines for $GITHUB_OUTPUT (use as a job matrix)
    Github,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("since").required(true).args(["base", "since_deploy"])))]
pub struct AffectedArgs {
    /// Compare from the merge base of this ref and --head
    #[arg(long, value_name = "REF")]
    pub base: Option<String>,
    /// The newest commit to consider
    #[arg(long, value_name = "REF", default_value = "HEAD")]
    pub head: String,
    /// Compare each product from its latest deploy tag
    #[arg(long)]
    pub since_deploy: bool,
    /// Show, per product, the commits, rules and files that made it affected
    #[arg(long)]
    pub explain: bool,
    /// Read only first-parent commits (what landed on the branch): merges count with all
    /// they brought in, the merged branches' own commit messages are not read
    #[arg(long)]
    pub first_parent: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t = AffectedFormat::Text)]
    pub format: AffectedFormat,
}

#[derive(Debug, Subcommand)]
pub enum LintCommand {
    /// Check commit messages: a file (commit-msg hook), a range (CI), or a message on stdin
    Commit(LintCommitArgs),
    /// Check a branch name (default: the current branch)
    Branch(LintBranchArgs),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").args(["edit", "range"])))]
pub struct LintCommitArgs {
    /// Check the message in this file (what the commit-msg hook passes)
    #[arg(long, value_name = "FILE")]
    pub edit: Option<PathBuf>,
    /// Check every commit in a range, e.g. origin/main..HEAD, with the files each changes
    #[arg(long, value_name = "A..B")]
    pub range: Option<String>,
    /// With --edit: judge the staged files too (the commit being made)
    #[arg(long, requires = "edit")]
    pub staged: bool,
    /// Also check merge, revert, fixup! and squash! commits
    #[arg(long)]
    pub include_skipped: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct LintBranchArgs {
    /// The branch name [default: the current branch]
    pub name: Option<String>,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Subcommand)]
pub enum HooksCommand {
    /// Install commit-msg and pre-push hooks (honours core.hooksPath; an existing hook is kept and run first)
    Install(HooksArgs),
    /// Remove berth's hooks and restore any hook they had chained to
    Uninstall(HooksArgs),
    /// Run a hook's checks (called by the installed hooks)
    #[command(hide = true)]
    Run(HooksRunArgs),
}

#[derive(Debug, Args)]
pub struct HooksArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct HooksRunArgs {
    /// The hook: pre-push
    pub hook: String,
    /// Arguments git passed to the hook
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("filter").required(true).args(["product", "task", "story"])))]
pub struct LogArgs {
    /// Commits attributed to this product (name or alias)
    #[arg(long)]
    pub product: Option<String>,
    /// Commits referencing this task (TASK-001 or TASK-001-login-bestays)
    #[arg(long)]
    pub task: Option<String>,
    /// Commits referencing this story (US-001)
    #[arg(long)]
    pub story: Option<String>,
    /// Search all branches and tags, not only HEAD
    #[arg(long)]
    pub all: bool,
    /// Revisions to walk [default: HEAD]
    #[arg(value_name = "REV")]
    pub revs: Vec<String>,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeArg {
    /// berth.toml's [deploy] runtime
    Manifest,
    /// Local processes from each service's `command`
    Local,
    /// Docker Compose v2
    Compose,
    /// Docker Swarm ([deploy.swarm])
    Swarm,
}

impl RuntimeArg {
    /// The runtime kind asked for (`None`: berth.toml's).
    pub fn kind(self) -> Option<berth_runtime::Kind> {
        match self {
            Self::Manifest => None,
            Self::Local => Some(berth_runtime::Kind::Local),
            Self::Compose => Some(berth_runtime::Kind::Compose),
            Self::Swarm => Some(berth_runtime::Kind::Swarm),
        }
    }
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The product to deploy
    pub product: String,
    /// The commit to deploy
    #[arg(long = "ref", value_name = "REF", default_value = "HEAD")]
    pub git_ref: String,
    /// Print the plan and stop
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation on a terminal
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Deploy even though the work tree has uncommitted changes
    #[arg(long)]
    pub allow_dirty: bool,
    /// Wait this long for the product's deploy lock instead of failing at once (e.g. "2m")
    #[arg(long, value_name = "DURATION", default_value = "0s")]
    pub lock_wait: berth_manifest::duration::HumanDuration,
    /// Push the deploy tag to origin
    #[arg(long)]
    pub push_tags: bool,
    /// Which runtime runs the services
    #[arg(long, value_enum, default_value_t = RuntimeArg::Manifest)]
    pub runtime: RuntimeArg,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The product to roll back
    pub product: String,
    /// The deploy tag to return to [default: the deploy before the live one]
    #[arg(long, value_name = "TAG")]
    pub to: Option<String>,
    /// Print the plan and stop
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation on a terminal
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Wait this long for the product's deploy lock
    #[arg(long, value_name = "DURATION", default_value = "0s")]
    pub lock_wait: berth_manifest::duration::HumanDuration,
    /// Which runtime runs the services
    #[arg(long, value_enum, default_value_t = RuntimeArg::Manifest)]
    pub runtime: RuntimeArg,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The product
    pub product: String,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct BootArgs {
    /// Which runtime runs the services
    #[arg(long, value_enum, default_value_t = RuntimeArg::Manifest)]
    pub runtime: RuntimeArg,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this product
    pub product: Option<String>,
    /// Which runtime runs the services
    #[arg(long, value_enum, default_value_t = RuntimeArg::Manifest)]
    pub runtime: RuntimeArg,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

const TLS_LONG: &str = "Per-product HTTPS certificates. In mode `acme` berth orders one certificate per product naming all its domains (never another product's) from the `[tls.acme]` CA, answering HTTP-01 through its own nginx; in mode `files` it checks and serves the files you bring. nginx serves berth's validated copy in .berth/tls/live/<product>/, so one product's broken file never takes another offline. `berth deploy` issues before the switch when a product has no certificate or its domains changed; run `berth tls renew --all` twice a day (the rendered systemd timer or cron line does).";

#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Issue a product's certificate when it has none or its domains changed (mode files: install its files)
    Issue(TlsArgs),
    /// Renew certificates with a third of their lifetime left (and pick up changed files)
    Renew(TlsArgs),
    /// Per product: names, issuer, expiry, days left, last attempt and its error
    Status(TlsStatusArgs),
}

#[derive(Debug, Args)]
pub struct TlsArgs {
    /// The product
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub product: Option<String>,
    /// Every product with domains
    #[arg(long)]
    pub all: bool,
    /// Order a new certificate even when the current one is fine (or the CA asked to wait)
    #[arg(long)]
    pub force: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct TlsStatusArgs {
    /// Only this product
    pub product: Option<String>,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Subcommand)]
pub enum LockCommand {
    /// Who holds a product's lock (a running deploy or a manual hold)
    Status(LockArgs),
    /// Hold a product: deploys refuse until `berth lock release`
    Acquire(LockAcquireArgs),
    /// Release a manual hold
    Release(LockArgs),
}

#[derive(Debug, Args)]
pub struct LockArgs {
    /// The product [default: every product, for status]
    pub product: Option<String>,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct LockAcquireArgs {
    /// The product
    pub product: String,
    /// Why (shown to whoever tries to deploy)
    #[arg(long, short)]
    pub message: String,
}

const DOCTOR_LONG: &str = "\
Check what berth needs before a first deploy, and what went wrong after a bad day.

Each program berth will call (git, nginx, docker and compose, pg_dump and \
pg_restore for backups) answers with its version; PostgreSQL and Redis answer with the admin \
credentials and with each product's own; every declared secret has a value; the \
nginx config passes `nginx -t` and the running nginx is berth's; each slot's port \
is free or served by that slot; the backup directory has room for the next backup \
and a verify; who holds a lock; processes and containers berth started that no \
product accounts for.

Every problem says what, where and how to fix it. Exit status: 0 when nothing \
failed (warnings allowed), 1 when a check failed, 2 usage or configuration error.";

const LOGS_LONG: &str = "\
Show the log lines of a product's services, each prefixed with product, service, slot \
and version (--format json: one object per line with those fields and the timestamp; \
`berth schema logs` prints its schema). The live slot by default (the one the front door \
points at); --slot reads the other. Values of the product's secret file are masked.

-f follows until interrupted, and across a deploy: when the front door switches, the old \
slot's lines up to the switch are shown, then everything the new slot's run wrote.

The local runtime's log files record no times: --since works on compose only (use --tail), \
and a local line's timestamp is when berth read it.";

const RUN_LONG: &str = "\
Run a command once in the live version's environment: the service's env and the product's \
secrets, its network, its code (the live image on compose, the version's checkout on \
local). stdin, stdout and stderr are berth's own (a TTY when berth has one); berth exits \
with the command's exit code. The audit log records who ran what, when, and the exit code, \
never the environment.

  berth run bestays -- alembic upgrade head
  berth run bestays server --slot green -- sh -c 'echo $BERTH_VERSION'";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SlotArg {
    Blue,
    Green,
}

impl SlotArg {
    pub fn slot(self) -> berth_runtime::Slot {
        match self {
            Self::Blue => berth_runtime::Slot::Blue,
            Self::Green => berth_runtime::Slot::Green,
        }
    }
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The product
    pub product: String,
    /// One service [default: every service of the product]
    pub service: Option<String>,
    /// Read this slot instead of the live one (-f then stays on it)
    #[arg(long, value_enum)]
    pub slot: Option<SlotArg>,
    /// Follow: print new lines as they are written, across deploys, until interrupted
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only lines written in this last span (e.g. "10m"; compose)
    #[arg(long, value_name = "DURATION", conflicts_with = "tail")]
    pub since: Option<berth_manifest::duration::HumanDuration>,
    /// The last N lines of each service [default: 100]
    #[arg(long, short = 'n', value_name = "N")]
    pub tail: Option<usize>,
    /// Which runtime runs the services
    #[arg(long, value_enum, default_value_t = RuntimeArg::Manifest)]
    pub runtime: RuntimeArg,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The product
    pub product: String,
    /// The service whose environment and code to use [default: the first with a `migrate`, else the first]
    pub service: Option<String>,
    /// Run as the version of this slot instead of the live one
    #[arg(long, value_enum)]
    pub slot: Option<SlotArg>,
    /// Which runtime runs the services
    #[arg(long, value_enum, default_value_t = RuntimeArg::Manifest)]
    pub runtime: RuntimeArg,
    /// The command and its arguments, after `--`
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

const SECRETS_LONG: &str = "\
Set, unset, import, list and check a product's secrets.

A product's secrets live in .berth/secrets/<product>.env (mode 0600, git-ignored). \
The names a service reads are declared in berth.toml (`secrets = [\"CLERK_SECRET_KEY\"]`); \
the database and Redis credentials berth generates itself. Values are read from \
standard input or a prompt without echo, never from arguments (they would land in \
the shell history and in `ps`), and are never printed, logged or audited: the audit \
log records who changed which name, when.

A deploy refuses to start (exit 2) while a declared secret has no value.

Examples:
  printf %s \"$KEY\" | berth secrets set bestays CLERK_SECRET_KEY
  berth secrets set bestays CLERK_SECRET_KEY          prompts, without echo, on a terminal
  BESTAYS_CLERK_SECRET_KEY=... berth secrets import bestays --from-env BESTAYS_
  berth secrets list --format json
  berth secrets check                                  exit 1 when any declared secret is missing";

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Set a declared secret from standard input (a prompt without echo on a terminal)
    Set(SecretNameArgs),
    /// Remove a secret's value (deploys refuse until it is set again)
    Unset(SecretNameArgs),
    /// Fill a product's declared secrets from environment variables named PREFIX<NAME> (for CI)
    Import(SecretsImportArgs),
    /// Each product's secrets: which services read them, set or missing (never the values)
    List(SecretsListArgs),
    /// Exit 1 when a declared secret has no value
    Check(SecretsListArgs),
}

#[derive(Debug, Args)]
pub struct SecretNameArgs {
    /// The product
    pub product: String,
    /// The secret's name, as declared in a service's `secrets`
    pub name: String,
    /// Refused: a value is never taken from the command line (caught to say so without echoing it)
    #[arg(hide = true, num_args = 0.., allow_hyphen_values = true)]
    pub value_on_command_line: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SecretsImportArgs {
    /// The product
    pub product: String,
    /// Read each declared secret NAME from the environment variable PREFIX<NAME>
    #[arg(long, value_name = "PREFIX")]
    pub from_env: String,
    /// Fail (exit 1) unless every declared secret was found
    #[arg(long)]
    pub require_all: bool,
}

#[derive(Debug, Args)]
pub struct SecretsListArgs {
    /// The product [default: every product]
    pub product: Option<String>,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EnvArg {
    Dev,
    Prod,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Environment to render for [default: the `<env>` of `[proxy] nginx_config` when it
    /// lies under `deploy/<env>/`, else prod]
    #[arg(long, value_enum)]
    pub env: Option<EnvArg>,
    /// Output directory [default: deploy/<env> beside berth.toml]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Write nothing; exit 1 listing files that differ from what would be rendered
    #[arg(long)]
    pub check: bool,
    /// What to render: `host` (compose, nginx, SQL, ACL, backups, monitoring, CI) and/or
    /// `kubernetes` (`<out>/kubernetes/`: kustomize trees per product) [default: host, and
    /// kubernetes too once `<out>/kubernetes/` exists]
    #[arg(long, value_enum, value_delimiter = ',')]
    pub target: Vec<TargetArg>,
    /// The version the Kubernetes manifests deploy: image tags, `version` labels and the
    /// migration Jobs' names (lowercase letters, digits, `-`) [default: latest]
    #[arg(long, value_name = "VERSION")]
    pub release: Option<String>,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// What `berth render` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetArg {
    /// The files for this machine: compose, nginx, SQL, Redis ACL, backups, monitoring, CI.
    Host,
    /// Kubernetes manifests (kustomize) under `<out>/kubernetes/`.
    Kubernetes,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["product", "all"])))]
pub struct ProvisionArgs {
    /// The product to provision
    pub product: Option<String>,
    /// Provision every product
    #[arg(long)]
    pub all: bool,
    /// Environment whose rendered files to use
    #[arg(long, value_enum, default_value_t = EnvArg::Prod)]
    pub env: EnvArg,
    /// Generate new database and Redis passwords (updates the secret files)
    #[arg(long)]
    pub rotate_passwords: bool,
    /// Skip logging in to PostgreSQL and Redis from inside a container of each
    /// product's network (done when the products run in containers and the
    /// infrastructure is external)
    #[arg(long)]
    pub no_container_check: bool,
    /// Show what would be ensured for each product (databases, roles and their
    /// connection limit and statement timeout, Redis users) without connecting
    #[arg(long)]
    pub dry_run: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
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
    /// Which schema: berth.toml's, the audit log's records, or a command's `--format json` output
    #[arg(value_enum, default_value_t = SchemaName::Manifest)]
    pub name: SchemaName,
    /// Write the schema to this file instead of stdout
    #[arg(long, short, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Exit 1 if the file given by --output is not up to date
    #[arg(long, requires = "output")]
    pub check: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SchemaName {
    /// berth.toml (schema/berth.schema.json)
    Manifest,
    /// One record of the audit log (schema/audit.schema.json)
    Audit,
    /// One line of `berth logs --format json` (schema/logs.schema.json)
    Logs,
    /// `berth status --format json`
    Status,
    /// `berth history --format json`
    History,
    /// `berth lock status --format json`
    Lock,
    /// `berth deploy|rollback --format json`
    Deploy,
    /// `berth secrets list --format json`
    SecretsList,
    /// `berth doctor --format json`
    Doctor,
    /// `berth backup --format json`
    Backup,
    /// `berth backup list --format json`
    BackupList,
    /// `berth backup list --offsite --format json`
    BackupListOffsite,
    /// `berth backup verify --format json`
    Verify,
    /// `berth restore --format json`
    Restore,
    /// `berth product list --format json`
    ProductList,
    /// `berth check --format json`
    Check,
    /// `berth tls status --format json`
    TlsStatus,
    /// `berth tls issue|renew --format json`
    Tls,
    /// `berth affected --format json`
    Affected,
    /// `berth lint commit --format json`
    LintCommit,
    /// `berth lint branch --format json`
    LintBranch,
    /// `berth hooks install|uninstall --format json`
    Hooks,
    /// `berth log --format json`
    Log,
    /// `berth render --format json` (with or without --check)
    Render,
    /// `berth init --format json`
    Init,
    /// `berth product add --format json`
    ProductAdd,
    /// `berth provision --format json`
    Provision,
    /// `berth backup prune --format json`
    BackupPrune,
    /// `berth secrets check --format json`
    SecretsCheck,
    /// `berth deploy|rollback --dry-run --format json`
    DeployPlan,
    /// `berth lock release --format json`
    LockRelease,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to generate completions for
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DemoRuntime {
    /// Local processes (no Docker)
    Local,
    /// Containers on the Docker Engine of DOCKER_HOST
    Compose,
    /// Swarm services on the swarm whose manager is DOCKER_HOST (one node is enough; needs --registry)
    Swarm,
}

impl DemoRuntime {
    pub fn kind(self) -> berth_runtime::Kind {
        match self {
            Self::Local => berth_runtime::Kind::Local,
            Self::Compose => berth_runtime::Kind::Compose,
            Self::Swarm => berth_runtime::Kind::Swarm,
        }
    }
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Run the services as local processes (no Docker), as containers on a Docker Engine, or as services on a Docker Swarm
    #[arg(long, value_enum, default_value_t = DemoRuntime::Local)]
    pub runtime: DemoRuntime,
    /// `--runtime swarm`: the registry (host:port) the swarm's nodes pull the demo's images from, e.g. Debian's docker-registry on 127.0.0.1:5000 for a one-node swarm on this machine
    #[arg(long, value_name = "HOST:PORT")]
    pub registry: Option<String>,
    /// Run in this directory (must be empty or absent) instead of a temp directory, and keep it
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

const SERVE_LONG: &str = "\
Serve what berth knows, read-only, until interrupted (SIGINT or SIGTERM).

  GET /                          dashboard: a card per product (live version, health,
                                 last deploy, last backup) and its deploy timeline
  GET /metrics                   Prometheus text (OpenMetrics when the Accept header asks)
  GET /api/products              every product as JSON
  GET /api/products/NAME         one product
  GET /api/products/NAME/deploys its deploys, rollbacks and failures (audit log), newest first
  GET /healthz                   answers while the server runs

A prober checks every service's live slot on its health path at its interval, with \
its timeout. The runtime, deploy tags and backup records are re-read every \
--refresh, and the audit log from where the last refresh stopped. Data that may \
be out of date is flagged: /api/products says \"stale\": true with its reasons, \
berth_serve_stale is 1 and the page says why (a refresh stuck for 3 periods, or \
an audit log that did not answer; deploy totals read before are kept).

berth serve listens on loopback unless --listen says otherwise; a non-loopback \
address needs --token-env, naming the environment variable that holds a bearer \
token every request must send (`Authorization: Bearer ...`; a browser signs in \
once with a form that sets an HttpOnly cookie). The token itself never goes on \
the command line, in a log or on the page. After 5 wrong tokens within 60s, an \
address (an IPv6 /64) gets 429 Too Many Requests with Retry-After for 60s, on \
every path but /healthz, the right token included (a right token in between does \
not reset the count); one warning is logged per lockout. Behind a reverse proxy \
every client shares the proxy's address.";

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: [serve] listen, else 127.0.0.1:9400]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// Environment variable holding the bearer token every request must carry
    /// [default: [serve] token_env]
    #[arg(long, value_name = "VAR")]
    pub token_env: Option<String>,
    /// Listen on a non-loopback address without a token (anyone who can reach it reads it)
    #[arg(long)]
    pub no_token: bool,
    /// How often to re-read the runtime, deploy tags, audit log and backups
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    pub refresh: berth_manifest::duration::HumanDuration,
    /// How often the dashboard page reloads itself
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub page_refresh: berth_manifest::duration::HumanDuration,
    /// Which runtime runs the services
    #[arg(long, value_enum, default_value_t = RuntimeArg::Manifest)]
    pub runtime: RuntimeArg,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}

const BACKUP_LONG: &str = "\
Back up a product's database (and, with `[backup] redis = true`, its Redis keys).

pg_dump runs in one snapshot (its row counts are taken in the same snapshot) and \
streams through multithreaded zstd (and age, when `[backup] recipients` are set) into \
<dir>/<product>_<UTC stamp>.dump.zst, written under a temporary name with mode 0600 \
and renamed only when complete. A record beside it (<file>.json) holds the product, \
database, server and pg_dump versions, times, sizes, sha256 and the tables with \
their row counts; never a password.

  berth backup bestays                 one product
  berth backup --all                   every product with a database
  berth backup list [bestays]          what is there, newest last
  berth backup verify --latest bestays restore into a scratch database and compare
  berth backup prune bestays           what the 7/4/6 policy would delete (dry run)
  berth backup prune bestays --yes     delete it
  berth backup -- list                 a product named like a subcommand

Connects with $BERTH_POSTGRES_ADMIN_URL (or [infra.postgres] admin_url_env). \
Exit status: 0 done, 1 a backup or verification failed, 2 usage or configuration error.";

const RESTORE_LONG: &str = "\
Replace a product's database with a backup, without a window of data loss.

Steps: check the sha256 -> restore into a new database <db>_restore_<ts> with \
pg_restore -j, compare its tables and row counts with the backup record and ANALYZE \
it (planner statistics before the first query) -> stop the product's live services -> terminate remaining connections -> in one \
transaction rename the live database to <db>_pre_restore_<ts> and the restored one \
to the live name -> start the product and health-check it. A failure before the \
rename leaves the live database untouched; a failure after it renames back. The \
replaced database is kept (drop it yourself when satisfied). Other products, their \
databases and connections are never touched.

Asks you to type the product name unless --yes. FILE is a backup file, its record \
(.json), or `latest`.
Exit status: 0 restored, 1 the restore failed (and what was undone), 2 usage error.";

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BackupArgs {
    #[command(subcommand)]
    pub command: Option<BackupCommand>,
    /// The product to back up
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub product: Option<String>,
    /// Back up every product that has a database
    #[arg(long)]
    pub all: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// List backups (oldest first) with size, age and verification
    List(BackupListArgs),
    /// Check a backup's sha256, restore it into a scratch database and compare row counts
    Verify(BackupVerifyArgs),
    /// Delete backups outside the keep policy (dry run unless --yes)
    Prune(BackupPruneArgs),
}

#[derive(Debug, Args)]
pub struct BackupListArgs {
    /// Only this product
    pub product: Option<String>,
    /// List the off-site copies (`[backup.offsite]`), read from the remote
    #[arg(long)]
    pub offsite: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["file", "latest"])))]
pub struct BackupVerifyArgs {
    /// The backup file (or its .json record)
    pub file: Option<PathBuf>,
    /// Verify the newest backup of this product
    #[arg(long, value_name = "PRODUCT")]
    pub latest: Option<String>,
    /// age identity file for encrypted backups
    #[arg(long, env = "BERTH_AGE_IDENTITY", value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Parallel pg_restore jobs [default: CPU count]
    #[arg(long, short)]
    pub jobs: Option<u32>,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct BackupPruneArgs {
    /// Only this product [default: every product]
    pub product: Option<String>,
    /// Keep the newest backup of each of the last N days [default: from berth.toml]
    #[arg(long, value_name = "N")]
    pub keep_days: Option<u32>,
    /// Keep the newest backup of each of the last N ISO weeks [default: from berth.toml]
    #[arg(long, value_name = "N")]
    pub keep_weeks: Option<u32>,
    /// Keep the newest backup of each of the last N months [default: from berth.toml]
    #[arg(long, value_name = "N")]
    pub keep_months: Option<u32>,
    /// Delete (without it, only list what would be deleted and why)
    #[arg(long)]
    pub yes: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The product whose database is replaced
    pub product: String,
    /// The backup file, its .json record, or `latest`
    pub file: PathBuf,
    /// Do not ask for confirmation
    #[arg(long)]
    pub yes: bool,
    /// age identity file for encrypted backups
    #[arg(long, env = "BERTH_AGE_IDENTITY", value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Parallel pg_restore jobs [default: CPU count]
    #[arg(long, short)]
    pub jobs: Option<u32>,
    /// Also put back the product's Redis keys from the backup
    #[arg(long)]
    pub with_redis: bool,
    /// Which runtime runs the services
    #[arg(long, value_enum, default_value_t = RuntimeArg::Manifest)]
    pub runtime: RuntimeArg,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}
