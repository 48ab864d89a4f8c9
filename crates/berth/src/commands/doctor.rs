//! `berth doctor`: what a newcomer needs before a first deploy and an operator after a
//! bad day, checked against the real programs and servers. Each problem says what is
//! wrong, where, and how to fix it; exit 1 when any check fails.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use berth_cmd::Cmd;
use berth_provision::url::ServiceUrl;
use berth_render::secrets::{self, SecretFile};
use berth_runtime::{Slot, slot_port};
use serde::Serialize;
use serde_json::json;

use crate::cli::{Cli, DoctorArgs, RuntimeArg};
use crate::exit::Result;
use crate::output::{Format, Printer};

use super::deploy::Loaded;

/// A backup directory with less room than this cannot take even a small dump.
const MIN_FREE: u64 = 64 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Serialize)]
struct Finding {
    /// What was checked: `program nginx`, `postgres bestays`, `port 8011`.
    check: String,
    status: Status,
    /// What was found.
    detail: String,
    /// How to fix it (problems only).
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

#[derive(Default)]
struct Report(Vec<Finding>);

impl Report {
    fn ok(&mut self, check: impl Into<String>, detail: impl Into<String>) {
        self.push(check, Status::Ok, detail, None);
    }
    fn warn(
        &mut self,
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.push(check, Status::Warn, detail, Some(fix.into()));
    }
    fn fail(
        &mut self,
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.push(check, Status::Fail, detail, Some(fix.into()));
    }
    fn push(
        &mut self,
        check: impl Into<String>,
        status: Status,
        detail: impl Into<String>,
        fix: Option<String>,
    ) {
        self.0.push(Finding {
            check: check.into(),
            status,
            detail: detail.into(),
            fix,
        });
    }
}

pub fn run(cli: &Cli, args: &DoctorArgs, printer: &Printer) -> Result<ExitCode> {
    let l = super::deploy::load(cli, printer)?;
    let mut r = Report::default();
    programs(&l, &mut r);
    secret_files(&l, &mut r);
    postgres(&l, &mut r);
    redis(&l, &mut r);
    nginx(&l, &mut r);
    ports(&l, &mut r);
    disk(&l, &mut r);
    locks(&l, &mut r);
    certificates(&l, &mut r);
    leftovers(&l, &mut r);
    let failed = r.0.iter().filter(|f| f.status == Status::Fail).count();
    let warned = r.0.iter().filter(|f| f.status == Status::Warn).count();
    match args.format {
        Format::Json => printer.json(&json!({
            "ok": failed == 0,
            "failed": failed,
            "warnings": warned,
            "checks": r.0,
        })),
        Format::Text => {
            for f in &r.0 {
                let tag = match f.status {
                    Status::Ok => "ok  ",
                    Status::Warn => "warn",
                    Status::Fail => "FAIL",
                };
                println!("{tag}  {:<28} {}", f.check, f.detail);
                if let Some(fix) = &f.fix {
                    println!("      {:<28} fix: {fix}", "");
                }
            }
            println!(
                "{} checks: {} failed, {} warnings",
                r.0.len(),
                failed,
                warned
            );
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The runtime berth.toml names (`auto` resolved), if it opens.
fn manifest_runtime(l: &Loaded) -> Option<Box<dyn berth_runtime::Runtime + Send + Sync>> {
    super::deploy::runtime(l, RuntimeArg::Manifest).ok()
}

fn has_databases(l: &Loaded) -> bool {
    l.manifest.products.values().any(|p| p.database.is_some())
}

/// The first line a program prints about its version, or why it could not run.
fn version(program: &str, args: &[&str]) -> std::result::Result<String, String> {
    Cmd::new(program, format!("ask {program} its version"))
        .args(args)
        .timeout(Some(Duration::from_secs(10)))
        .output()
        .map(|o| {
            let text = format!("{}{}", o.stdout_str(), o.stderr_str());
            text.lines().next().unwrap_or("").trim().to_string()
        })
        .map_err(|e| e.to_string().lines().next().unwrap_or("").to_string())
}

fn programs(l: &Loaded, r: &mut Report) {
    let program = |program: &'static str, args: &'static [&'static str], fix: &'static str| {
        berth_runtime::Program {
            label: "",
            program,
            version_args: args,
            fix,
        }
    };
    let mut want = vec![program("git", &["--version"], "apt-get install git")];
    if l.manifest.proxy.is_some() {
        want.push(program("nginx", &["-v"], "apt-get install nginx"));
    }
    // What the runtime runs (docker, docker compose), as it says.
    want.extend(
        manifest_runtime(l)
            .map(|rt| rt.programs())
            .unwrap_or_default(),
    );
    if has_databases(l) {
        want.push(program(
            "pg_dump",
            &["--version"],
            "apt-get install postgresql-client (the same major version as the server or newer)",
        ));
        want.push(program(
            "pg_restore",
            &["--version"],
            "apt-get install postgresql-client",
        ));
    }
    for p in want {
        let label = if p.label.is_empty() {
            format!("program {}", p.program)
        } else {
            p.label.to_string()
        };
        match version(p.program, p.version_args) {
            Ok(v) if !v.is_empty() => r.ok(label, v),
            Ok(_) => r.ok(label, "present"),
            Err(e) => r.fail(label, e, p.fix),
        }
    }
}

fn secret_files(l: &Loaded, r: &mut Report) {
    for (name, p) in &l.manifest.products {
        let path = secrets::product_secret_path(&l.root, name);
        if !path.exists()
            && (!secrets::generated_names(p).is_empty() || !secrets::declared(p).is_empty())
        {
            r.fail(
                format!("secrets {name}"),
                format!("{} does not exist", path.display()),
                "run `berth render` (it generates the product's passwords)",
            );
            continue;
        }
        match secrets::missing(&l.manifest, &l.root, name) {
            Ok(missing) if missing.is_empty() => r.ok(
                format!("secrets {name}"),
                "every declared secret has a value",
            ),
            Ok(missing) => {
                let names: Vec<String> = missing.into_iter().map(|(n, _)| n).collect();
                r.fail(
                    format!("secrets {name}"),
                    format!("no value for {} (deploys refuse)", names.join(", ")),
                    format!("`berth secrets set {name} {}`", names[0]),
                );
            }
            Err(e) => r.fail(
                format!("secrets {name}"),
                e.to_string(),
                "fix the file's syntax: NAME=value lines",
            ),
        }
    }
}

/// The admin URL with another user's credentials (the product's), on the same server.
fn as_user(admin: &ServiceUrl, user: &str, password: &str, path: &str) -> ServiceUrl {
    ServiceUrl {
        user: Some(user.to_string()),
        password: Some(password.to_string()),
        // The admin URL's settings (sslmode, sslrootcert) hold for the product's login too.
        path: match admin.path.split_once('?') {
            Some((_, q)) => format!("{path}?{q}"),
            None => path.to_string(),
        },
        ..admin.clone()
    }
}

fn first_line(e: impl ToString) -> String {
    let text = e.to_string();
    // The last non-empty line of a command failure is the server's own words.
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .chars()
        .take(300)
        .collect()
}

fn postgres(l: &Loaded, r: &mut Report) {
    if !has_databases(l) {
        return;
    }
    let admin = match berth_provision::postgres_admin_url(&l.manifest, &l.root) {
        Ok(u) => u,
        Err(e) => {
            r.fail(
                "postgres admin",
                first_line(e),
                "set the admin URL (see `berth provision --help`)",
            );
            return;
        }
    };
    let server = berth_provision::session::PgSession::open(&admin, None).and_then(|mut s| {
        s.set_timeout(Duration::from_secs(15));
        s.query("SHOW server_version")
    });
    match server {
        Ok(o) => {
            let v = o.first().map(|v| v.trim().to_string()).unwrap_or_default();
            r.ok(
                "postgres admin",
                format!("{} answers: PostgreSQL {v}", admin.redacted()),
            );
            let major = |s: &str| {
                s.split(|c: char| !c.is_ascii_digit())
                    .find(|p| !p.is_empty())
                    .and_then(|p| p.parse::<u32>().ok())
            };
            if let (Some(server), Ok(dump)) = (major(&v), version("pg_dump", &["--version"])) {
                let dump_major = dump.split_whitespace().find_map(major);
                if dump_major.is_some_and(|d| d < server) {
                    r.fail(
                        "program pg_dump",
                        format!("{dump} is older than the server ({v}): it refuses to dump it"),
                        format!("install postgresql-client-{server} or newer"),
                    );
                }
            }
        }
        Err(e) => {
            r.fail(
                "postgres admin",
                format!("{}: {}", admin.redacted(), first_line(e)),
                format!(
                    "start PostgreSQL at {}:{}, or point the admin URL variable at where it runs",
                    admin.host,
                    admin.port.unwrap_or(5432)
                ),
            );
            return;
        }
    }
    for (name, p) in &l.manifest.products {
        let Some(db) = &p.database else { continue };
        let file = SecretFile::load(&secrets::product_secret_path(&l.root, name)).ok();
        let Some(pw) = file
            .as_ref()
            .and_then(|f| f.get("DATABASE_PASSWORD"))
            .map(str::to_string)
        else {
            continue; // reported by the secrets check
        };
        let url = as_user(&admin, &db.role, &pw, &db.name);
        let out = berth_provision::session::PgSession::open(&url, None).and_then(|mut s| {
            s.set_timeout(Duration::from_secs(15));
            s.query("SELECT 1")
        });
        match out {
            Ok(_) => r.ok(format!("postgres {name}"), format!("{} logs in to {}", db.role, db.name)),
            Err(e) => r.fail(
                format!("postgres {name}"),
                format!("{} cannot log in to {}: {}", db.role, db.name, first_line(e)),
                format!("run `berth provision {name}` (it creates the role and database and sets the password from the secret file)"),
            ),
        }
    }
}

fn redis(l: &Loaded, r: &mut Report) {
    if !l.manifest.products.values().any(|p| p.redis.is_some()) {
        return;
    }
    let admin = match berth_provision::redis_admin_url(&l.manifest, &l.root) {
        Ok(u) => u,
        Err(e) => {
            r.fail(
                "redis admin",
                first_line(e),
                "set the admin URL (see `berth provision --help`)",
            );
            return;
        }
    };
    let ping = |url: &ServiceUrl| -> std::result::Result<(), String> {
        let mut conn = berth_provision::redis_connect(url, 0).map_err(first_line)?;
        match conn.query::<String>(&berth_provision::redis_session::cmd("PING")) {
            Ok(s) if s == "PONG" => Ok(()),
            Ok(other) => Err(format!("PING answered {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    };
    if let Err(e) = ping(&admin) {
        r.fail(
            "redis admin",
            format!("{}: {e}", admin.redacted()),
            format!(
                "start Redis at {}:{}, or point the admin URL variable at where it runs",
                admin.host,
                admin.port.unwrap_or(6379)
            ),
        );
        return;
    }
    r.ok("redis admin", format!("{} answers", admin.redacted()));
    for (name, p) in &l.manifest.products {
        if p.redis.is_none() {
            continue;
        }
        let file = SecretFile::load(&secrets::product_secret_path(&l.root, name)).ok();
        let Some(pw) = file
            .as_ref()
            .and_then(|f| f.get("REDIS_PASSWORD"))
            .map(str::to_string)
        else {
            continue;
        };
        match ping(&as_user(&admin, name, &pw, "")) {
            Ok(()) => r.ok(format!("redis {name}"), format!("user {name} authenticates")),
            Err(e) => r.fail(
                format!("redis {name}"),
                format!("user {name}: {e}"),
                format!("run `berth provision {name}` (it creates the Redis user with the secret file's password)"),
            ),
        }
    }
}

fn nginx(l: &Loaded, r: &mut Report) {
    let Some(proxy) = &l.manifest.proxy else {
        return;
    };
    let config = l.root.join(&proxy.nginx_config);
    if !config.exists() {
        r.fail(
            "nginx config",
            format!("{} does not exist", config.display()),
            "run `berth render`",
        );
        return;
    }
    match berth_deploy::front_door::nginx(&l.manifest, &l.root).map(|n| n.test()) {
        Some(Ok(())) => r.ok("nginx config", format!("{} passes `nginx -t`", proxy.nginx_config)),
        Some(Err(e)) => r.fail(
            "nginx config",
            {
                // nginx's own complaint names the file and line: `[emerg] ... in FILE:LINE`.
                let text = e.to_string();
                text.lines()
                    .find(|l| l.contains("[emerg]") || l.contains("[error]"))
                    .map(|l| l.trim().to_string())
                    .unwrap_or_else(|| first_line(&text))
            },
            "fix the file nginx names (or run `berth render` to rewrite what berth owns); deploys refuse to switch until it passes",
        ),
        None => {}
    }
    // The nginx berth starts writes its pid under .berth/nginx (see the rendered nginx.conf).
    let pid_file = l.root.join(".berth/nginx/nginx.pid");
    let pid = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok());
    let cmdline = pid
        .and_then(|p| std::fs::read(format!("/proc/{p}/cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "));
    match (pid, cmdline) {
        (Some(p), Some(cmd)) if cmd.contains("nginx") && cmd.contains(proxy.nginx_config.as_str()) => {
            r.ok("nginx running", format!("pid {p} serves {}", proxy.nginx_config))
        }
        (Some(p), Some(cmd)) if cmd.contains("nginx") => r.warn(
            "nginx running",
            format!("pid {p} is nginx, but not started with {}", proxy.nginx_config),
            "make sure the running nginx includes berth's config (or stop it and let `berth deploy` start berth's)",
        ),
        _ => {
            let deployed = l.manifest.products.keys().any(|p| berth_deploy::tags::history(&l.repo, p).is_ok_and(|h| !h.is_empty()));
            let msg = format!("no nginx runs with berth's config (no live pid in {})", pid_file.display());
            if deployed {
                r.fail("nginx running", msg, format!("start it: `{}`", proxy.start_command.replace("{root}", &l.root.display().to_string()).replace("{config}", &proxy.nginx_config)));
            } else {
                r.ok("nginx running", format!("{msg}; the first deploy starts it"));
            }
        }
    }
}

/// Who listens on a TCP port of this machine: (pid, program), read from /proc.
fn listener(port: u16) -> Option<(u32, String)> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "0A" {
                continue;
            }
            let local_port = f[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path())
                && inodes.iter().any(|i| target.as_os_str() == i.as_str())
            {
                let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                return Some((pid, comm.trim().to_string()));
            }
        }
    }
    Some((0, "a process this user cannot see".into()))
}

fn ports(l: &Loaded, r: &mut Report) {
    let rt = super::deploy::runtime(l, RuntimeArg::Manifest).ok();
    for (name, p) in &l.manifest.products {
        let live: Vec<berth_runtime::Instance> = rt
            .as_ref()
            .and_then(|rt| rt.instances(name).ok())
            .unwrap_or_default()
            .into_iter()
            .filter(|i| i.alive)
            .collect();
        for (service, svc) in &p.services {
            for slot in [Slot::Blue, Slot::Green] {
                let Some(port) = slot_port(&l.manifest, svc, slot) else {
                    continue;
                };
                let check = format!("port {port}");
                let owner = format!("{name}.{service} ({slot})");
                if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                    continue; // free: nothing to say for each idle slot
                }
                if live.iter().any(|i| i.service == *service && i.slot == slot) {
                    r.ok(check, format!("served by {owner}"));
                    continue;
                }
                let who = match listener(port) {
                    Some((pid, comm)) if pid > 0 => format!("pid {pid} ({comm})"),
                    Some((_, what)) => what,
                    None => "another program".into(),
                };
                r.fail(
                    check,
                    format!("{owner}'s port is taken by {who}, not by berth"),
                    format!(
                        "stop that program, or move {owner} to a free `host_port` in berth.toml"
                    ),
                );
            }
        }
    }
    if let Some(proxy) = &l.manifest.proxy
        && std::net::TcpListener::bind(("127.0.0.1", proxy.http_port)).is_err()
    {
        match listener(proxy.http_port) {
            Some((_, comm)) if comm.contains("nginx") => {}
            Some((pid, comm)) => r.fail(
                format!("port {}", proxy.http_port),
                format!("nginx's HTTP port is taken by pid {pid} ({comm})"),
                "stop that program, or change [proxy] http_port",
            ),
            None => {}
        }
    }
}

fn disk(l: &Loaded, r: &mut Report) {
    for name in l.manifest.products.keys() {
        if l.manifest.products[name].database.is_none() {
            continue;
        }
        let dir = berth_backup::catalog::backup_dir(&l.manifest, &l.root, name);
        // The nearest existing directory: the backups go on its file system.
        let Some(existing) = dir.ancestors().find(|d| d.exists()) else {
            continue;
        };
        let Some(free) = berth_backup::free_bytes(existing) else {
            continue;
        };
        let largest = berth_backup::catalog::list(&l.manifest, &l.root, Some(name))
            .iter()
            .map(|b| b.dump_bytes + b.file_bytes)
            .max()
            .unwrap_or(0);
        // A backup needs its file; verify and restore need the decoded dump beside it.
        let need = MIN_FREE.max(largest.saturating_mul(2));
        let check = format!("disk {name}");
        if free < need {
            r.fail(
                check,
                format!(
                    "{} has {} free; {} needs {} for its next backup and a verify",
                    existing.display(),
                    berth_backup::human_bytes(free),
                    name,
                    berth_backup::human_bytes(need)
                ),
                format!("free space there (`berth backup prune {name} --yes` removes old backups), or set [backup] dir to a larger disk"),
            );
        } else {
            r.ok(
                check,
                format!(
                    "{} free in {}",
                    berth_backup::human_bytes(free),
                    existing.display()
                ),
            );
        }
    }
}

fn locks(l: &Loaded, r: &mut Report) {
    for name in l.manifest.products.keys() {
        if let Some(h) = l.store.read_hold(name) {
            r.warn(
                format!("lock {name}"),
                format!("held: {h}"),
                format!("deploys of {name} refuse until `berth lock release {name}`"),
            );
        } else if let Some(h) = l.store.current_holder(name) {
            r.warn(
                format!("lock {name}"),
                format!("a deploy runs: {h}"),
                "wait for it to finish (the lock goes with its process)",
            );
        }
    }
}

/// Each served certificate's days left: expired fails, expiring, due or missing warns.
fn certificates(l: &Loaded, r: &mut Report) {
    for s in berth_tls::status(&l.manifest, &l.root) {
        let check = format!("certificate {}", s.product);
        let p = &s.product;
        let last = s
            .last_error
            .as_deref()
            .map(|e| format!("; the last attempt failed: {}", first_line(e)))
            .unwrap_or_default();
        let days = s.days_left.unwrap_or_default();
        match s.health {
            "off" => continue,
            "missing" => r.warn(
                check,
                format!("no certificate yet{last}"),
                format!("`berth tls issue {p}` (a deploy also gets one before its switch)"),
            ),
            "expired" => r.fail(
                check,
                format!("expired {} days ago{last}", -days),
                format!("`berth tls renew {p}` now: browsers refuse {p}'s domains"),
            ),
            "expiring" | "renewal-due" => r.warn(
                check,
                format!("{days} days left ({}){last}", s.health),
                format!("`berth tls renew {p}`"),
            ),
            _ => r.ok(check, format!("{days} days left{last}")),
        }
    }
}

/// Processes or containers berth started that no product of the manifest accounts for.
fn leftovers(l: &Loaded, r: &mut Report) {
    let run = l.root.join(".berth/run");
    if let Ok(dirs) = std::fs::read_dir(&run) {
        for d in dirs.flatten() {
            let product = d.file_name().to_string_lossy().into_owned();
            if l.manifest.products.contains_key(&product) {
                continue;
            }
            let alive = pids_under(&d.path())
                .into_iter()
                .filter(|p| Path::new(&format!("/proc/{p}")).exists())
                .collect::<Vec<_>>();
            if !alive.is_empty() {
                r.fail(
                    format!("leftover {product}"),
                    format!("processes {alive:?} of `{product}`, which berth.toml no longer names, still run"),
                    format!("stop them (`kill {}`) and remove {}", alive.iter().map(u32::to_string).collect::<Vec<_>>().join(" "), d.path().display()),
                );
            }
        }
    }
    // What the runtime made that berth.toml no longer accounts for (containers).
    for x in manifest_runtime(l)
        .map(|rt| rt.leftovers())
        .unwrap_or_default()
    {
        r.fail(format!("leftover {}", x.name), x.problem, x.fix);
    }
}

/// The pids recorded in the pid files under a product's run directory.
fn pids_under(dir: &Path) -> Vec<u32> {
    let mut out = Vec::new();
    for slot in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(slot.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if f.path().extension().is_some_and(|e| e == "json")
                && let Ok(text) = std::fs::read_to_string(f.path())
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
                && let Some(pid) = v["pid"].as_u64()
            {
                out.push(pid as u32);
            }
        }
    }
    out
}
