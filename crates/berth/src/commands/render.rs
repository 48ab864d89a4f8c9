//! `berth render`: write (or --check) every derived file, and make sure each
//! product's secret file exists and is git-ignored.

use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use berth_render::secrets;
use berth_render::{Env, RenderInput, render};
use serde_json::json;

use crate::cli::{Cli, EnvArg, RenderArgs, TargetArg};
use crate::exit::{CliError, Result};
use crate::output::{Format, Printer};

pub fn env_of(e: EnvArg) -> Env {
    match e {
        EnvArg::Dev => Env::Dev,
        EnvArg::Prod => Env::Prod,
    }
}

/// `path` made absolute against the current directory, with `.` and `..` resolved lexically.
pub fn absolute(path: &Path) -> PathBuf {
    let base = if path.is_absolute() {
        PathBuf::new()
    } else {
        std::env::current_dir().unwrap_or_default()
    };
    let mut out = PathBuf::new();
    for c in base.join(path).components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

pub use berth_runtime::compose::relative;

/// Where rendered files go: `--out`, or `deploy/<env>` beside the manifest.
pub fn out_dir(manifest: &Path, env: Env, out: Option<&Path>) -> PathBuf {
    match out {
        Some(o) => absolute(o),
        None => absolute(&super::manifest_dir(manifest))
            .join("deploy")
            .join(env.name()),
    }
}

/// The environment `[proxy] nginx_config` belongs to: `dev` for `deploy/dev/nginx/nginx.conf`.
pub fn env_of_proxy(m: &berth_manifest::Manifest) -> Option<Env> {
    let conf = Path::new(&m.proxy.as_ref()?.nginx_config);
    let mut parts = conf
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .map(|c| c.as_os_str().to_string_lossy().into_owned());
    if parts.next()? != "deploy" {
        return None;
    }
    match parts.next()?.as_str() {
        "dev" => Some(Env::Dev),
        "prod" => Some(Env::Prod),
        _ => None,
    }
}

pub fn run(cli: &Cli, args: &RenderArgs, printer: &Printer) -> Result<ExitCode> {
    let path = super::find_manifest(cli)?;
    let ctx = super::load_manifest(&path, printer)?;
    let root = absolute(&super::manifest_dir(&path));
    let env = args
        .env
        .map(env_of)
        .or_else(|| env_of_proxy(&ctx))
        .unwrap_or(Env::Prod);
    let out = out_dir(&path, env, args.out.as_deref());
    let release = args
        .release
        .clone()
        .unwrap_or_else(|| berth_render::kubernetes::DEFAULT_VERSION.to_string());
    if !berth_render::kubernetes::valid_version(&release) {
        return Err(CliError::Config(format!(
            "--release `{}` cannot be a Kubernetes version: use 1 to 40 lowercase letters, digits and `-`, starting and ending with a letter or digit (e.g. a commit's first 12 hex digits)",
            berth_manifest::diag::escape_controls(&release)
        )));
    }
    // Kubernetes is rendered when asked, and kept up to date (and checked) once it is there.
    let (host, kubernetes) = if args.target.is_empty() {
        (true, out.join("kubernetes/kustomization.yaml").exists())
    } else {
        (
            args.target.contains(&TargetArg::Host),
            args.target.contains(&TargetArg::Kubernetes),
        )
    };
    let skipped = if host {
        berth_render::skipped(&ctx, env)
    } else {
        Vec::new()
    };
    if args.format == Format::Text {
        for s in &skipped {
            printer.status("Skipped", &format!("{}: {}", s.files, s.reason));
        }
    }
    let mut files = if host {
        render(&RenderInput {
            manifest: &ctx,
            env,
            root_from_out: relative(&out, &root),
            out_from_root: relative(&root, &out),
        })
        .map_err(|e| CliError::Failed(e.to_string()))?
    } else {
        Vec::new()
    };
    if kubernetes {
        let problems = berth_render::kubernetes::name_problems(&ctx, &release);
        if !problems.is_empty() {
            return Err(CliError::Config(problems.join("\n")));
        }
        files.extend(
            berth_render::kubernetes::render(&ctx, env, &release)
                .map_err(|e| CliError::Failed(e.to_string()))?,
        );
    }

    let mut stale = Vec::new();
    for f in &files {
        let p = out.join(&f.path);
        let current = std::fs::read_to_string(&p).ok();
        // Live-slot upstreams belong to deploys once written.
        let differs = if f.state {
            current.is_none()
        } else {
            current.as_deref() != Some(f.contents.as_str())
        };
        if differs {
            stale.push(f.path.clone());
        }
    }
    let shown = |p: &str| out.join(p).display().to_string();
    if args.check {
        match args.format {
            Format::Json => {
                printer.json(&json!({ "out": out, "env": env.name(), "files": files.len(), "stale": stale, "skipped": skipped }))
            }
            Format::Text => {
                for s in &stale {
                    println!("stale: {}", shown(s));
                }
                if stale.is_empty() {
                    println!(
                        "{} rendered files in {} are up to date",
                        files.len(),
                        out.display()
                    );
                }
            }
        }
        if !stale.is_empty() {
            printer.error(&format!(
                "{} of {} rendered files are stale; run `berth render --env {}` and commit the result",
                stale.len(),
                files.len(),
                env.name()
            ));
            return Ok(ExitCode::from(1));
        }
        return Ok(ExitCode::SUCCESS);
    }

    let mut skipped = Vec::new();
    for f in files.iter().filter(|f| stale.contains(&f.path)) {
        let p = out.join(&f.path);
        let contents = match missing_include(&ctx, &root, &f.path, &p, printer) {
            Include::Rendered => f.contents.clone(),
            Include::Derived(body) => body,
            Include::LeftToDeploy => {
                skipped.push(f.path.clone());
                continue;
            }
        };
        super::write_atomic_mkdir(&p, &contents)?;
    }
    stale.retain(|s| !skipped.contains(s));
    // Runtime directory for the rendered nginx.conf (pid, logs, temp files).
    for d in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        let dir = root.join(".berth/nginx").join(d);
        std::fs::create_dir_all(&dir)
            .map_err(|e| CliError::Failed(format!("cannot create {}: {e}", dir.display())))?;
    }
    let mut secret_changes = ensure_secrets(&ctx, &root, env)?;
    if kubernetes {
        secret_changes.extend(kubernetes_secrets(&ctx, &root, &out)?);
    }
    let ignore_note = ensure_ignored(&root, &ctx)?;
    match args.format {
        Format::Json => printer.json(&json!({
            "out": out,
            "env": env.name(),
            "files": files.iter().map(|f| &f.path).collect::<Vec<_>>(),
            "skipped": skipped,
            "changed": stale,
            "secrets_changed": secret_changes,
            "gitignore": ignore_note,
        })),
        Format::Text => {
            for s in &stale {
                printer.status("Wrote", &shown(s));
            }
            for (file, keys) in &secret_changes {
                printer.status("Secrets", &format!("{file}: set {}", keys.join(", ")));
            }
            if let Some(n) = &ignore_note {
                printer.status("Ignored", n);
            }
            println!(
                "rendered {} files for {} into {} ({} changed)",
                files.len(),
                env.name(),
                out.display(),
                stale.len()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Generate missing secrets and the Redis ACL copy with password hashes.
/// Returns, per secret file changed, the names set (never the values).
pub fn ensure_secrets(
    m: &berth_manifest::Manifest,
    root: &Path,
    env: Env,
) -> Result<Vec<(String, Vec<String>)>> {
    let err = |e: secrets::SecretError| CliError::Failed(e.to_string());
    let mut changes = Vec::new();
    let mut redis_pw = std::collections::HashMap::new();
    for name in m.products.keys() {
        let (f, changed) = secrets::ensure_product(m, root, name).map_err(err)?;
        if let Some(pw) = f.get("REDIS_PASSWORD") {
            redis_pw.insert(name.clone(), secrets::sha256_hex(pw));
        }
        if !changed.is_empty() {
            changes.push((relative(root, &f.path).replace("../", ""), changed));
        }
    }
    let (infra, changed) = secrets::ensure_infra(m, root).map_err(err)?;
    if let Some(pw) = infra.get("REDIS_ADMIN_PASSWORD") {
        redis_pw.insert("berth-admin".to_string(), secrets::sha256_hex(pw));
    }
    if !changed.is_empty() {
        changes.push((format!("{}/infra.env", secrets::SECRETS_DIR), changed));
    }
    if m.infra.redis.is_some() {
        let lookup = |u: &str| redis_pw.get(u).cloned();
        // Redis ACL files allow no comments: this copy (with password hashes) is explained
        // by the tracked redis/users.acl's place in the docs, not by a header.
        let mut body = String::new();
        for l in berth_render::redis_acl_lines(m, env, Some(&lookup)) {
            body.push_str(&l);
            body.push('\n');
        }
        let p = root
            .join(secrets::SECRETS_DIR)
            .join(format!("redis-users.{}.acl", env.name()));
        if std::fs::read_to_string(&p).ok().as_deref() != Some(body.as_str()) {
            secrets::write_private(&p, &body).map_err(err)?;
            changes.push((relative(root, &p).replace("../", ""), vec!["users".into()]));
        }
    }
    Ok(changes)
}

/// The values kustomize's secretGenerator reads (`kubernetes/<product>/base/*.env`,
/// git-ignored, 0600), from each product's secret file with the cluster's addresses of
/// PostgreSQL and Redis. Returns the files changed with the names they hold.
fn kubernetes_secrets(
    m: &berth_manifest::Manifest,
    root: &Path,
    out: &Path,
) -> Result<Vec<(String, Vec<String>)>> {
    let err = |e: secrets::SecretError| CliError::Failed(e.to_string());
    let mut changes = Vec::new();
    for name in m.products.keys() {
        let base = out.join("kubernetes").join(name).join("base");
        for (file, body, keys) in secrets::kubernetes_env(m, root, name).map_err(err)? {
            let p = base.join(&file);
            if std::fs::read_to_string(&p).ok().as_deref() != Some(body.as_str()) {
                secrets::write_private(&p, &body).map_err(err)?;
                changes.push((relative(root, &p).replace("../", ""), keys));
            }
        }
    }
    Ok(changes)
}

enum Include {
    /// Not the live proxy's upstream include (or nothing runs): the rendered default.
    Rendered,
    /// The include nginx loads, pointing at the slot the runtime runs.
    Derived(String),
    /// Both slots run: which is live is not berth render's to decide.
    LeftToDeploy,
}

/// A missing upstream include is runtime state: when it is the one the proxy loads,
/// it points at the slot that runs (never at a stopped one), like `berth deploy` sees it.
fn missing_include(
    m: &berth_manifest::Manifest,
    root: &Path,
    rel: &str,
    path: &Path,
    printer: &Printer,
) -> Include {
    let Some(product) = rel
        .strip_prefix("nginx/upstreams/")
        .and_then(|n| n.strip_suffix(".conf"))
    else {
        return Include::Rendered;
    };
    let Some(nginx) = berth_deploy::front_door::nginx(m, root) else {
        return Include::Rendered;
    };
    if !m.products.contains_key(product) || absolute(&nginx.upstream_file(product)) != path {
        return Include::Rendered;
    }
    let rt = berth_runtime::open(None, m, root);
    let instances = match rt.instances(product) {
        Ok(i) => i,
        Err(e) => {
            printer.warn(&format!(
                "could not ask the runtime which slot of {product} runs ({e}): {} points at blue",
                path.display()
            ));
            return Include::Rendered;
        }
    };
    match nginx.live(product, &instances, rt.as_ref()) {
        Ok(None) => Include::Rendered,
        Ok(Some(slot)) => match nginx.upstream_body(product, slot, rt.as_ref()) {
            Ok(body) => {
                printer.status(
                    "Live",
                    &format!("{product} runs in {slot}: its upstream include points there"),
                );
                Include::Derived(body)
            }
            Err(_) => Include::Rendered,
        },
        Err(e) => {
            printer.warn(&format!("{} not written: {e}", path.display()));
            Include::LeftToDeploy
        }
    }
}

/// Make sure git ignores `.berth/` (secrets, runtime state) and the `[backup] dir` when it
/// lies inside the repository (database dumps); returns a note when rules were added.
fn ensure_ignored(root: &Path, m: &berth_manifest::Manifest) -> Result<Option<String>> {
    let Some(repo) = berth_git::Repo::discover(root)? else {
        return Ok(None);
    };
    let mut rules = Vec::new();
    // Secrets, and the checkouts and homes of the local runtime.
    let mut berth_ignored = true;
    for probe in [
        ".berth/secrets/probe.env",
        ".berth/versions/probe/x",
        ".berth/home/probe/x",
    ] {
        berth_ignored &= repo.is_ignored(probe)?;
    }
    if !berth_ignored {
        rules.push((
            "# berth: secrets and runtime state, never committed",
            "/.berth/".to_string(),
        ));
    }
    let backups = m.backup.dir.trim_start_matches("./").trim_end_matches('/');
    let inside = !backups.is_empty()
        && !Path::new(backups).is_absolute()
        && !Path::new(backups)
            .components()
            .any(|c| matches!(c, Component::ParentDir));
    if inside && !repo.is_ignored(&format!("{backups}/probe/probe.dump"))? {
        rules.push((
            "# berth: database backups, never committed",
            format!("/{backups}/"),
        ));
    }
    if rules.is_empty() {
        return Ok(None);
    }
    let gi = root.join(".gitignore");
    let mut text = std::fs::read_to_string(&gi).unwrap_or_default();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    for (comment, rule) in &rules {
        text.push_str(&format!("{comment}\n{rule}\n"));
    }
    super::write_atomic(&gi, &text)?;
    Ok(Some(format!(
        "added {} to {}",
        rules
            .iter()
            .map(|(_, r)| r.as_str())
            .collect::<Vec<_>>()
            .join(" and "),
        gi.display()
    )))
}
