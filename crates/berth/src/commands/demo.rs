//! `berth demo`: berth's main job, end to end, on the embedded example in a
//! fresh git repository: check, add a product, render, deploy two products on
//! the local runtime behind nginx, redeploy with zero downtime, roll back, show
//! history and status, lint, affected, and the secret scan. Every step runs the
//! real command (this binary); services and nginx are stopped at the end.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

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

/// Stops the demo's services and nginx, whatever happens.
struct Cleanup {
    dir: PathBuf,
    nginx: bool,
    /// The runtime the demo deployed with.
    runtime: berth_runtime::Kind,
    /// The node label the demo put on the swarm's manager (swarm), removed at the end.
    node_label: Option<(&'static str, &'static str)>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.nginx {
            let _ = Command::new("nginx")
                .args([
                    "-p",
                    &self.dir.display().to_string(),
                    "-c",
                    "deploy/dev/nginx/nginx.conf",
                    "-s",
                    "stop",
                ])
                .stderr(std::process::Stdio::null())
                .status();
        }
        // The runtime takes down what it made for each product (processes or
        // containers or swarm services, images, networks, secrets).
        if let Ok(text) = std::fs::read_to_string(self.dir.join("berth.toml"))
            && let Ok(loaded) = berth_manifest::parse_str("berth.toml", &text)
        {
            let rt = berth_runtime::open(Some(self.runtime), &loaded.manifest, &self.dir);
            for product in loaded.manifest.products.keys() {
                if let Err(e) = rt.teardown(product) {
                    eprintln!("could not take down the demo's {product}: {e}");
                }
            }
        }
        if let Some((key, value)) = self.node_label
            && let Err(e) = berth_runtime::swarm::label_environment_manager(key, value, false)
        {
            eprintln!("could not remove the demo's node label {key}: {e}");
        }
    }
}

/// A static build of demo-app (rustc alone: it is one file without dependencies).
fn static_demo_app(dir: &Path) -> Result<PathBuf> {
    let build = dir.join(".berth/build");
    std::fs::create_dir_all(&build).map_err(io)?;
    let src = build.join("demo-app.rs");
    write(&src, crate::demo_files::DEMO_APP_SOURCE).map_err(io)?;
    let out = build.join("demo-app");
    berth_cmd::Cmd::new("rustc", "build a static demo-app for FROM scratch images")
        .args([
            "--edition",
            "2024",
            "-O",
            "-C",
            "target-feature=+crt-static",
            "--target",
            "x86_64-unknown-linux-gnu",
        ])
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .timeout(Some(Duration::from_secs(300)))
        .hint_if_missing("the container demo compiles its product server with rustc (install Rust)")
        .output()?;
    Ok(out)
}

struct Demo<'a> {
    dir: PathBuf,
    exe: PathBuf,
    printer: &'a Printer,
    step: usize,
}

impl Demo<'_> {
    fn step(&mut self, what: &str) {
        self.step += 1;
        println!();
        println!(
            "{}",
            self.printer
                .styles
                .bold
                .paint(&format!("[{}] {what}", self.step))
        );
    }

    /// Run `berth <args>` in the demo repository, show its output indented; returns (code, output).
    fn berth(&self, args: &[&str]) -> Result<(i32, String)> {
        self.berth_env(args, &[])
    }

    /// [`Demo::berth`] with extra environment variables for that one run.
    fn berth_env(&self, args: &[&str], env: &[(&str, &str)]) -> Result<(i32, String)> {
        let out = Command::new(&self.exe)
            .args(args)
            .current_dir(&self.dir)
            .env("NO_COLOR", "1")
            .env("BERTH_OPERATOR", "demo")
            .envs(env.iter().copied())
            .output()
            .map_err(|e| CliError::Failed(format!("cannot run berth: {e}")))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        println!("    $ berth {}", args.join(" "));
        for l in text.lines() {
            println!("      {l}");
        }
        Ok((out.status.code().unwrap_or(-1), text))
    }

    fn must(&self, args: &[&str], code: i32) -> Result<String> {
        let (c, text) = self.berth(args)?;
        if c != code {
            return Err(CliError::Failed(format!(
                "demo step failed: `berth {}` exited {c}, expected {code}",
                args.join(" ")
            )));
        }
        Ok(text)
    }

    fn git(&self, args: &[&str]) -> Result<()> {
        berth_cmd::Cmd::new("git", "run git in the demo repository")
            .args(args)
            .current_dir(&self.dir)
            .env("GIT_AUTHOR_NAME", "berth demo")
            .env("GIT_AUTHOR_EMAIL", "demo@berth.invalid")
            .env("GIT_COMMITTER_NAME", "berth demo")
            .env("GIT_COMMITTER_EMAIL", "demo@berth.invalid")
            .hint_if_missing("berth demo needs git: apt-get install git")
            .output()?;
        Ok(())
    }

    fn commit(&self, message: &str) -> Result<()> {
        self.git(&["add", "-A"])?;
        self.git(&["-c", "commit.gpgsign=false", "commit", "-q", "-m", message])
    }
}

fn io(e: std::io::Error) -> CliError {
    CliError::Failed(format!("demo: {e}"))
}

/// GET through nginx: the body the product answered with (its health, naming its version).
fn through_nginx(port: u16, host: &str) -> String {
    berth_runtime::http::Client::new(Duration::from_secs(5))
        .get(
            &format!("http://127.0.0.1:{port}/api/health"),
            Some(host),
            64 * 1024,
        )
        .map(|a| a.body.trim().to_string())
        .unwrap_or_else(|e| format!("no answer: {e}"))
}

fn nginx_installed() -> bool {
    Command::new("nginx")
        .arg("-v")
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

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
            (None, super::render::absolute(d))
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
    let exe = std::env::current_exe()
        .map_err(|e| CliError::Failed(format!("cannot locate berth: {e}")))?;
    let nginx = nginx_installed();
    use crate::cli::DemoRuntime;
    let kind = args.runtime.kind();
    // As --runtime names it, which is also berth.toml's name for it.
    let runtime_name = clap::ValueEnum::to_possible_value(&args.runtime)
        .map(|v| v.get_name().to_string())
        .unwrap_or_default();
    // Images to build: the runtime runs containers.
    let containers = kind.needs_docker();
    let swarm = args.runtime == DemoRuntime::Swarm;
    let registry = match (&args.registry, swarm) {
        (Some(r), true) => Some(r.clone()),
        (None, true) => {
            return Err(CliError::Config(
                "--runtime swarm needs --registry HOST:PORT: the registry the swarm's nodes pull the demo's images from (for a one-node swarm on this machine, Debian's docker-registry on 127.0.0.1:5000 works: Docker trusts a registry on 127.0.0.0/8 over plain HTTP)".into(),
            ));
        }
        (Some(_), false) => {
            return Err(CliError::Config(
                "--registry is for --runtime swarm (the other runtimes build images where they run)".into(),
            ));
        }
        (None, false) => None,
    };
    berth_runtime::available(kind)
        .map_err(|e| CliError::Config(format!("--runtime {runtime_name}: {e}")))?;
    let project = format!("berth-demo-{}", std::process::id());
    // A one-node swarm carries every product's placement label.
    const NODE_LABEL: (&str, &str) = ("berth.demo", "yes");
    let _cleanup = Cleanup {
        dir: dir.clone(),
        nginx,
        runtime: kind,
        node_label: swarm.then_some(NODE_LABEL),
    };
    let mut d = Demo {
        dir: dir.clone(),
        exe,
        printer,
        step: 0,
    };

    d.step(&format!(
        "a two-product monorepo (bestays, realestate) shaped like the strategy document's, in {}",
        dir.display()
    ));
    let http_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(io)?;
    for (rel, body) in EXAMPLE {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().expect("file has a parent")).map_err(io)?;
        let body = if *rel == "berth.toml" {
            let mut b = body.replace(
                "[secret_scan]",
                "[deploy]\nruntime = \"local\"\ndrain = \"300ms\"\n\n[secret_scan]",
            );
            if containers {
                b = b
                    .replace(
                        "runtime = \"local\"",
                        &format!("runtime = \"{runtime_name}\""),
                    )
                    .replace(
                        "name = \"bestays-monorepo\"",
                        &format!("name = \"{project}\""),
                    )
                    .replace(
                        "migrate = \"demo-app migrate\"",
                        "migrate = \"/demo-app migrate\"",
                    );
            }
            if let Some(registry) = &registry {
                // Every product's tasks on the nodes with the demo's label (the manager).
                let (k, v) = NODE_LABEL;
                let mut swarm_block = format!("[deploy.swarm]\nregistry = \"{registry}\"\n");
                for product in ["bestays", "realestate"] {
                    swarm_block.push_str(&format!(
                        "\n[deploy.swarm.products.{product}]\nnode_label = \"{k}={v}\"\n"
                    ));
                }
                b = b.replace(
                    "drain = \"300ms\"\n\n[secret_scan]",
                    &format!("drain = \"300ms\"\n\n{swarm_block}\n[secret_scan]"),
                );
            } else if containers {
                b = b.replace(
                    "deadline = \"60s\" }",
                    "deadline = \"60s\", command = [\"/demo-app\", \"health\"] }",
                );
            }
            if nginx {
                b.replace(
                    "nginx_config = \"deploy/prod/nginx/nginx.conf\"",
                    &format!(
                        "nginx_config = \"deploy/dev/nginx/nginx.conf\"\nhttp_port = {http_port}"
                    ),
                )
            } else {
                println!(
                    "    nginx is not installed: deploys will restart in place (NOT zero-downtime); apt-get install nginx to see the switch"
                );
                b.replace(
                    "[proxy]\nnginx_config = \"deploy/prod/nginx/nginx.conf\"\n",
                    "",
                )
            }
        } else {
            body.to_string()
        };
        write(&p, body).map_err(io)?;
    }
    if containers {
        println!("    containers on Docker: images FROM scratch around a static build of demo-app");
        let bin = static_demo_app(&dir)?;
        let dockerfile = "FROM scratch\nCOPY demo-app /demo-app\nCMD [\"/demo-app\"]\n";
        for (app, df) in [
            ("apps/server", "docker/server.Dockerfile"),
            ("apps/frontend", "docker/frontend.Dockerfile"),
        ] {
            std::fs::copy(&bin, dir.join(app).join("demo-app")).map_err(io)?;
            write(dir.join(df), dockerfile).map_err(io)?;
        }
    }
    d.git(&["init", "-q", "-b", "main"])?;
    d.commit("chore: import the multi-product example (TASK-000-setup-bestays)")?;

    d.step("berth check: the manifest's rules, and every tracked file scanned for secrets");
    d.must(&["check"], 0)?;

    d.step("berth product add villas --like bestays: next free ports, Redis db, prefix, database, domains");
    d.must(&["product", "add", "villas", "--like", "bestays"], 0)?;
    d.must(&["render", "--env", "dev"], 0)?;
    // The API keys the services declare, as CI would set them: from the environment,
    // never from arguments; deploys refuse while one is missing.
    let keys = [
        ("DEMO_CLERK_SECRET_KEY", "sk_test_demo-not-a-real-key"),
        ("DEMO_OPENROUTER_API_KEY", "sk-or-v1-demo-not-a-real-key"),
        (
            "DEMO_VITE_CLERK_PUBLISHABLE_KEY",
            "pk_test_demo-not-a-real-key",
        ),
    ];
    for product in ["bestays", "realestate", "villas"] {
        let (c, _) = d.berth_env(
            &[
                "secrets",
                "import",
                product,
                "--from-env",
                "DEMO_",
                "--require-all",
            ],
            &keys,
        )?;
        if c != 0 {
            return Err(CliError::Failed(format!(
                "demo step failed: `berth secrets import {product}` exited {c}"
            )));
        }
    }
    d.commit("feat: add the villas product (TASK-001-add-villas)")?;

    if swarm {
        let (k, v) = NODE_LABEL;
        berth_runtime::swarm::label_environment_manager(k, v, true)
            .map_err(|e| CliError::Failed(format!("demo: {e}")))?;
        println!(
            "    the swarm's manager carries the label {k}={v}: every product's tasks run there (removed at the end)"
        );
    }
    d.step(match args.runtime {
        DemoRuntime::Swarm => {
            "berth deploy bestays and realestate: swarm services behind nginx, health-gated, tagged"
        }
        DemoRuntime::Compose => {
            "berth deploy bestays and realestate: containers behind nginx, health-gated, tagged"
        }
        DemoRuntime::Local => {
            "berth deploy bestays and realestate: local processes behind nginx, health-gated, tagged"
        }
    });
    d.must(&["deploy", "bestays", "--yes"], 0)?;
    d.must(&["deploy", "realestate", "--yes"], 0)?;
    if nginx {
        println!(
            "    through nginx: {}",
            through_nginx(http_port, "bestays.app")
        );
    }

    d.step(
        "a change to bestays, redeployed: the idle slot starts, is checked, then takes the traffic",
    );
    write(
        dir.join("products/bestays/listings.yaml"),
        "kinds: [villa, condo]\n",
    )
    .map_err(io)?;
    d.commit("feat: listing kinds (US-002 TASK-002-listings-bestays)")?;
    d.must(&["deploy", "bestays", "--yes"], 0)?;
    if nginx {
        println!(
            "    through nginx: {}",
            through_nginx(http_port, "bestays.app")
        );
    }

    d.step("berth rollback bestays: back to the previous deploy, still running as a warm standby: only a switch");
    d.must(&["rollback", "bestays", "--yes"], 0)?;
    if nginx {
        println!(
            "    through nginx: {}",
            through_nginx(http_port, "bestays.app")
        );
    }

    d.step("berth history and berth status: from the deploy tags and the runtime");
    d.must(&["history", "bestays"], 0)?;
    d.must(&["status"], 0)?;

    d.step("guard rails: the strategy document's commit messages, and what a push affects");
    for message in [
        "feat: implement login (US-001 TASK-001-login-bestays)",
        "TASK-050-port-login-realestate",
        "TASK-002-database-schema",
    ] {
        let mut child = Command::new(&d.exe)
            .args(["lint", "commit"])
            .current_dir(&dir)
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(io)?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(message.as_bytes())
            .map_err(io)?;
        let out = child.wait_with_output().map_err(io)?;
        let verdict = if out.status.success() {
            "ok    "
        } else {
            "REJECT"
        };
        println!("    {verdict} {message}");
        if !out.status.success() {
            for l in String::from_utf8_lossy(&out.stdout).lines().skip(1).take(3) {
                println!("           {l}");
            }
        }
    }
    write(
        dir.join("apps/server/app/health.py"),
        "def ok():\n    return True\n",
    )
    .map_err(io)?;
    d.commit("fix: health check (TASK-003-health-bestays)")?;
    d.must(&["affected", "--base", "HEAD~1", "--explain"], 0)?;

    d.step(
        "the strategy document's .env, force-committed as it was: berth check fails, values masked",
    );
    write(dir.join(".env"), SEED_ENV).map_err(io)?;
    d.git(&["add", "-f", ".env"])?;
    d.commit("chore: share dev settings (TASK-004-env-bestays)")?;
    let text = d.must(&["check"], 1)?;
    let caught = text.matches("error[committed-secret]").count();
    if caught != 3 {
        return Err(CliError::Failed(format!(
            "demo step failed: expected 3 committed secrets, found {caught}"
        )));
    }

    d.step("done");
    println!(
        "    check, product add, render, deploy, rollback, history, status, lint, affected and the secret scan ran for real in {}.",
        dir.display()
    );
    println!("    The demo's services and nginx are stopped now.");
    if args.dir.is_none() {
        println!("    (a temp directory, removed now; pass --dir DIR to keep it)");
    }
    Ok(ExitCode::SUCCESS)
}

/// Every file of the demo is written atomically, like every file berth writes.
fn write(path: impl AsRef<Path>, body: impl AsRef<[u8]>) -> std::io::Result<()> {
    berth_cmd::fs::write_atomic(path.as_ref(), body.as_ref())
}
