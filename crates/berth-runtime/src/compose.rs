//! The compose runtime: Docker Compose v2 on a Docker Engine (local, or remote
//! through `DOCKER_HOST` / the docker context). One compose project per product
//! and slot (`<project>-<product>-<slot>`), from the files `berth render` wrote;
//! state is read back from container labels.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use berth_cmd::Cmd;
use berth_manifest::Manifest;

use crate::{
    Address, Instance, LogFrom, LogLine, LogStream, Runtime, RuntimeError, Slot, slot_port,
};

pub struct ComposeRuntime {
    manifest: Manifest,
    /// The directory of berth.toml.
    root: PathBuf,
    /// The rendered `compose/` directory.
    compose_dir: PathBuf,
}

/// Where deploys find the rendered compose files: beside the nginx config's
/// directory (`deploy/<env>/compose`), or `deploy/prod/compose` without a proxy.
pub fn compose_dir(manifest: &Manifest, root: &Path) -> PathBuf {
    match &manifest.proxy {
        Some(p) => root
            .join(&p.nginx_config)
            .parent()
            .and_then(Path::parent)
            .map(|d| d.join("compose"))
            .unwrap_or_else(|| root.join("deploy/prod/compose")),
        None => root.join("deploy/prod/compose"),
    }
}

/// The compose project of a product's slot: `<project>-<product>-<slot>` (the one rule
/// for the name; its containers carry it as `com.docker.compose.project`).
pub fn project_name(manifest: &Manifest, product: &str, slot: Slot) -> String {
    format!(
        "{}-{product}-{slot}",
        berth_manifest::slug(&manifest.project.name)
    )
}

/// `docker`, as `berth doctor` checks it.
pub(crate) const DOCKER: crate::Program = crate::Program {
    label: "program docker",
    program: "docker",
    version_args: &["version", "--format", "{{.Server.Version}}"],
    fix: "install Docker Engine and start it (`systemctl start docker`)",
};

/// Whether a container of compose project `compose`, labelled `berth.product=product`,
/// is this project's but no slot of a product of the manifest (another project's
/// containers are not).
fn stray(manifest: &Manifest, compose: &str, product: &str) -> bool {
    let ours = format!("{}-", berth_manifest::slug(&manifest.project.name));
    if !compose.starts_with(&ours) {
        return false;
    }
    !(manifest.products.contains_key(product)
        && [Slot::Blue, Slot::Green]
            .into_iter()
            .any(|s| compose == project_name(manifest, product, s)))
}

impl ComposeRuntime {
    /// The compose runtime of the manifest at `root`, with the compose files where
    /// deploys render them ([`compose_dir`]).
    pub fn new(manifest: Manifest, root: PathBuf) -> Self {
        let compose_dir = compose_dir(&manifest, &root);
        Self::in_dir(manifest, root, compose_dir)
    }

    /// The compose runtime with its compose files in `compose_dir`.
    pub fn in_dir(manifest: Manifest, root: PathBuf, compose_dir: PathBuf) -> Self {
        Self {
            manifest,
            root,
            compose_dir,
        }
    }

    /// Is a Docker Engine answering?
    pub fn available() -> bool {
        Cmd::new("docker", "ask the Docker Engine for its version")
            .args(["version", "--format", "{{.Server.Version}}"])
            .timeout(Some(Duration::from_secs(5)))
            .output()
            .is_ok()
    }

    fn project_name(&self, product: &str, slot: Slot) -> String {
        project_name(&self.manifest, product, slot)
    }

    fn project_label(&self) -> String {
        format!(
            "berth.project={}",
            berth_manifest::slug(&self.manifest.project.name)
        )
    }

    fn compose(
        &self,
        product: &str,
        slot: Slot,
        version: &str,
        summary: String,
    ) -> Result<Cmd, RuntimeError> {
        let file = self.compose_dir.join(format!("{product}.yml"));
        if !file.exists() {
            return Err(RuntimeError::Failed(format!(
                "{} does not exist: run `berth render` first",
                file.display()
            )));
        }
        let masker = berth_render::secrets::product_masker(self.root(), product)
            .map_err(|e| RuntimeError::Failed(e.to_string()))?;
        let mut c = docker_cmd(summary)
            .mask_with(&masker)
            .args(["compose", "-p", &self.project_name(product, slot), "-f"])
            .arg(&file)
            .env("BERTH_SLOT", slot.name())
            .env("BERTH_VERSION", version)
            .timeout(Some(Duration::from_secs(900)))
            .hint_if_missing("install Docker and Compose v2, or use the local runtime");
        for (name, svc) in &self.manifest.products[product].services {
            if let Some(p) = slot_port(&self.manifest, svc, slot) {
                c = c.env(
                    format!("BERTH_PORT_{}", berth_render::ident(name).to_uppercase()),
                    p.to_string(),
                );
            }
        }
        Ok(c)
    }

    /// The directory of berth.toml.
    fn root(&self) -> &Path {
        &self.root
    }

    fn images(&self, product: &str, version: &str) -> Vec<String> {
        self.manifest.products[product]
            .services
            .iter()
            .filter(|(_, s)| s.build.is_some())
            .map(|(n, s)| {
                format!(
                    "{}:{version}",
                    berth_render::image_name(&self.manifest, product, n, s)
                )
            })
            .collect()
    }

    fn shared_network(&self) -> Result<(), RuntimeError> {
        match berth_render::infra_network(&self.manifest) {
            Some(name) => self.ensure_network(&name, None, "the shared network"),
            None => Ok(()),
        }
    }

    /// The product's own network, which both slots join, with the subnet berth rendered.
    fn product_network(&self, product: &str) -> Result<(), RuntimeError> {
        let net = self.manifest.product_network(product);
        self.ensure_network(
            &net.name,
            Some(&net.subnet),
            &format!("the network of {product}"),
        )
    }

    /// Create a network unless it exists. Two deploys at once must not both create it
    /// (docker would make two networks of one name): creation is serialized by a file lock.
    fn ensure_network(
        &self,
        name: &str,
        subnet: Option<&str>,
        what: &str,
    ) -> Result<(), RuntimeError> {
        let locks = self.root().join(".berth/locks");
        let _ = std::fs::create_dir_all(&locks);
        let guard = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(locks.join("network.lock"))
            .ok();
        if let Some(f) = &guard {
            let _ = f.lock();
        }
        let result = (|| {
            let found = Cmd::new("docker", format!("look for {what}"))
                .args([
                    "network",
                    "inspect",
                    "--format",
                    "{{range .IPAM.Config}}{{.Subnet}} {{end}}",
                    name,
                ])
                .output();
            match (found, subnet) {
                (Ok(out), Some(want)) => {
                    let have = out.stdout_str();
                    if !have.split_whitespace().any(|s| s == want) {
                        return Err(RuntimeError::Failed(format!(
                            "the Docker network {name} exists with subnet {} but berth renders {want} (which pg_hba.conf may name): remove it (`docker network rm {name}`) once no container uses it",
                            have.trim()
                        )));
                    }
                    Ok(())
                }
                (Ok(_), None) => Ok(()),
                (Err(_), _) => {
                    let mut c = Cmd::new("docker", format!("create {what}"))
                        .args(["network", "create", "--label"])
                        .arg(self.project_label());
                    if let Some(s) = subnet {
                        c = c.args(["--subnet", s]);
                    }
                    c.arg(name).output()?;
                    Ok(())
                }
            }
        })();
        if let Some(f) = &guard {
            let _ = f.unlock();
        }
        result
    }

    /// Remove the product's network when no container of any slot is on it (a failed
    /// first deploy, or every slot stopped). Returns whether it was removed.
    fn remove_product_network_if_unused(&self, product: &str) -> bool {
        let net = self.manifest.product_network(product).name;
        let users = Cmd::new("docker", format!("list the containers on {net}"))
            .args(["ps", "-aq", "--filter"])
            .arg(format!("network={net}"))
            .output();
        match users {
            Ok(out) if out.stdout_str().trim().is_empty() => {
                Cmd::new("docker", format!("remove the unused network {net}"))
                    .args(["network", "rm", &net])
                    .output()
                    .is_ok()
            }
            _ => false,
        }
    }

    /// Log in to PostgreSQL and Redis as the product, from inside a container on the
    /// product's network (as its services will): `targets` are `(kind, url)` pairs,
    /// `kind` is `postgres` or `redis`. The URLs (with passwords) go to the probe on
    /// stdin, never in its arguments or environment.
    pub fn reach_from_network(
        &self,
        product: &str,
        targets: &[(String, String)],
    ) -> Result<Vec<crate::reach::Reach>, RuntimeError> {
        let probe = crate::probe::install(self.root())?;
        let image = format!("berth-probe:{}", crate::probe::digest());
        let have = Cmd::new("docker", "look for the probe image")
            .args(["image", "inspect", "--format", "{{.Id}}", &image])
            .output()
            .is_ok();
        if !have {
            let ctx = probe.parent().expect("the probe is in a directory");
            crate::write_atomic(
                &ctx.join("Dockerfile"),
                b"FROM scratch\nCOPY berth-probe /berth-probe\nENTRYPOINT [\"/berth-probe\"]\n",
            )
            .map_err(|source| RuntimeError::Io {
                action: "write",
                path: ctx.join("Dockerfile").display().to_string(),
                source,
            })?;
            Cmd::new("docker", "build the probe image (FROM scratch)")
                .args(["build", "-q", "-t", &image])
                .arg(ctx)
                .timeout(Some(Duration::from_secs(300)))
                .output()?;
        }
        self.product_network(product)?;
        let net = self.manifest.product_network(product).name;
        let mut input = String::new();
        let mut c = Cmd::new(
            "docker",
            format!("log in to PostgreSQL and Redis as {product} from its network"),
        )
        .args(["run", "--rm", "-i", "--network", &net, "--add-host"])
        .arg(format!(
            "{}:host-gateway",
            berth_manifest::HOST_GATEWAY_NAME
        ))
        .args([
            "--label",
            &format!("berth.probe={product}"),
            &image,
            "check",
        ])
        .timeout(Some(Duration::from_secs(60)));
        for (kind, url) in targets {
            input.push_str(&format!("{kind} {url}\n"));
            if let Some(pw) = crate::reach::password_of(url) {
                c = c.redact(pw);
            }
        }
        let out = c.stdin(input).output_unchecked()?;
        let reaches = crate::reach::parse(&out.stdout_str());
        if reaches.len() != targets.len() {
            return Err(RuntimeError::Failed(format!(
                "the probe container did not answer for every target: {}{}",
                out.stdout_str(),
                out.stderr_str()
            )));
        }
        Ok(reaches)
    }
}

impl Runtime for ComposeRuntime {
    fn name(&self) -> &'static str {
        "compose"
    }

    fn programs(&self) -> Vec<crate::Program> {
        vec![
            DOCKER,
            crate::Program {
                label: "program docker compose",
                program: "docker",
                version_args: &["compose", "version", "--short"],
                fix: "install Docker Compose v2 (the `docker compose` plugin)",
            },
        ]
    }

    /// Containers of this project whose compose project is no slot of a product of
    /// berth.toml.
    fn leftovers(&self) -> Vec<crate::Leftover> {
        let Ok(out) = Cmd::new("docker", "list berth's containers")
            .args([
                "ps",
                "-a",
                "--filter",
                "label=berth.product",
                "--format",
                "{{.Label \"com.docker.compose.project\"}}\t{{.Label \"berth.product\"}}\t{{.Names}}",
            ])
            .timeout(Some(Duration::from_secs(20)))
            .output()
        else {
            return Vec::new();
        };
        out.stdout_str()
            .lines()
            .filter_map(|line| {
                let mut f = line.split('\t');
                let (compose, product, names) = (f.next()?, f.next()?, f.next()?);
                stray(&self.manifest, compose, product).then(|| crate::Leftover {
                    name: names.to_string(),
                    problem: format!(
                        "container {names} (compose project {compose}) belongs to no slot of berth.toml"
                    ),
                    fix: format!("remove it: `docker compose -p {compose} down`"),
                })
            })
            .collect()
    }

    /// The compose file a deploy starts must say what berth.toml says now.
    fn preflight(&self, product: &str, _dirty: bool) -> Result<Vec<String>, RuntimeError> {
        let out = self
            .compose_dir
            .parent()
            .unwrap_or(&self.root)
            .to_path_buf();
        let env = if out.file_name().is_some_and(|n| n == "dev") {
            berth_render::Env::Dev
        } else {
            berth_render::Env::Prod
        };
        let files = berth_render::render(&berth_render::RenderInput {
            manifest: &self.manifest,
            env,
            root_from_out: relative(&out, &self.root),
            out_from_root: relative(&self.root, &out),
        })
        .map_err(|e| RuntimeError::Failed(e.to_string()))?;
        let want = files
            .iter()
            .find(|f| f.path == format!("compose/{product}.yml"))
            .map(|f| f.contents.as_str());
        let path = self.compose_dir.join(format!("{product}.yml"));
        if want.is_none() && self.manifest.deploy.runtime == crate::Kind::Local {
            return Err(RuntimeError::Preflight(format!(
                "berth.toml sets [deploy] runtime = \"local\", so `berth render` writes no compose file for {product}: set runtime = \"compose\" (or \"auto\") and render, or deploy with the local runtime"
            )));
        }
        if std::fs::read_to_string(&path).ok().as_deref() != want {
            return Err(RuntimeError::Preflight(format!(
                "{} does not match berth.toml: run `berth render --env {}` and commit it before deploying",
                path.display(),
                env.name()
            )));
        }
        Ok(Vec::new())
    }

    fn addresses(&self, product: &str, service: &str, slot: Slot) -> Vec<Address> {
        crate::loopback(&self.manifest, product, service, slot)
    }

    fn slot_free(&self, product: &str, slot: Slot) -> Result<(), RuntimeError> {
        crate::loopback_free(&self.manifest, product, slot)
    }

    /// Both slots' projects down, every image of the product removed, then its
    /// network and (when no other product uses it) the shared one.
    fn teardown(&self, product: &str) -> Result<Vec<String>, RuntimeError> {
        let mut removed = Vec::new();
        for slot in [Slot::Blue, Slot::Green] {
            let file = self.compose_dir.join(format!("{product}.yml"));
            if !file.exists() {
                continue;
            }
            self.compose(
                product,
                slot,
                "latest",
                format!("take down the {slot} slot of {product}"),
            )?
            .args(["down", "--timeout", "2", "--remove-orphans"])
            .output()?;
            removed.push(self.project_name(product, slot));
        }
        removed.extend(self.prune(product, &[])?);
        if let Some(shared) = berth_render::infra_network(&self.manifest)
            && Cmd::new("docker", format!("remove the network {shared} if unused"))
                .args(["network", "rm", &shared])
                .output()
                .is_ok()
        {
            removed.push(format!("network {shared}"));
        }
        Ok(removed)
    }

    /// Each built service's image: the engine's image of its build key tagged, or a
    /// `docker build` from the work tree (HEAD is the version) or a checkout of the
    /// version's commit (a rollback whose images are gone). See [`crate::build`].
    fn build(&self, product: &str, version: &str) -> Result<Option<String>, RuntimeError> {
        let wanted: Vec<crate::build::Wanted> = self.manifest.products[product]
            .services
            .iter()
            .filter_map(|(n, s)| {
                Some(crate::build::Wanted {
                    build: s.build.as_ref()?,
                    image: format!(
                        "{}:{version}",
                        berth_render::image_name(&self.manifest, product, n, s)
                    ),
                })
            })
            .collect();
        if wanted.is_empty() {
            return Ok(None);
        }
        let docker = |summary: String| docker_cmd(summary);
        let builder = crate::build::Builder {
            root: &self.root,
            version,
            from_work_tree: crate::build::head_is(&self.root, version)?,
            checkout_name: format!("berth-build-{product}"),
            docker: &docker,
            labels: vec![self.project_label()],
        };
        Ok(Some(builder.make(&wanted, |_| Ok(()))?))
    }

    fn has_version(&self, product: &str, version: &str) -> bool {
        self.images(product, version).iter().all(|i| {
            Cmd::new("docker", "look for a retained image")
                .args(["image", "inspect", "--format", "{{.Id}}", i])
                .output()
                .is_ok()
        })
    }

    fn migrate(
        &self,
        product: &str,
        service: &str,
        version: &str,
        slot: Slot,
    ) -> Result<String, RuntimeError> {
        let Some(migrate) = self.manifest.products[product].services[service]
            .migrate
            .clone()
        else {
            return Ok(String::new());
        };
        self.shared_network()?;
        self.product_network(product)?;
        crate::probe::install(self.root())?;
        let out = self
            .compose(
                product,
                slot,
                version,
                format!("run the migration of {product}.{service}"),
            )?
            .args(["run", "--rm", "--no-deps", "-T", service])
            .args(migrate.split_whitespace())
            .output()?;
        Ok(format!("{}{}", out.stdout_str(), out.stderr_str()))
    }

    fn start(&self, product: &str, slot: Slot, version: &str) -> Result<(), RuntimeError> {
        self.shared_network()?;
        self.product_network(product)?;
        crate::probe::install(self.root())?;
        self.compose(
            product,
            slot,
            version,
            format!("start {product} {version} in the {slot} slot"),
        )?
        .args(["up", "-d", "--no-build", "--remove-orphans"])
        .output()?;
        Ok(())
    }

    fn stop(&self, product: &str, slot: Slot) -> Result<(), RuntimeError> {
        // `down` keeps images: they are what a rollback starts again.
        self.compose(
            product,
            slot,
            "latest",
            format!("stop the {slot} slot of {product}"),
        )?
        .args(["down", "--timeout", "10"])
        .output()?;
        Ok(())
    }

    fn instances(&self, product: &str) -> Result<Vec<Instance>, RuntimeError> {
        let out = Cmd::new("docker", format!("list the containers of {product}"))
            .args(["ps", "-a", "--no-trunc", "--filter"])
            .arg(format!("label=berth.product={product}"))
            .args(["--format", "{{json .}}"])
            .output()?;
        let mut instances = Vec::new();
        for line in out.stdout_str().lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let labels: std::collections::HashMap<&str, &str> = v["Labels"]
                .as_str()
                .unwrap_or("")
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .collect();
            let (Some(service), Some(slot)) = (
                labels.get("berth.service"),
                labels.get("berth.slot").and_then(|s| Slot::parse(s)),
            ) else {
                continue;
            };
            // A one-off container (`berth run`, a migration) carries its service's labels but
            // is no instance of the slot.
            if labels.get("com.docker.compose.oneoff") == Some(&"True")
                || labels.contains_key("berth.run")
            {
                continue;
            }
            // Only this project's containers (another checkout may run a product of the same name).
            if labels.get("com.docker.compose.project")
                != Some(&self.project_name(product, slot).as_str())
            {
                continue;
            }
            let svc = self.manifest.products[product].services.get(*service);
            instances.push(Instance {
                service: service.to_string(),
                slot,
                version: labels.get("berth.version").unwrap_or(&"").to_string(),
                alive: v["State"].as_str() == Some("running"),
                id: v["ID"].as_str().unwrap_or("").chars().take(12).collect(),
                started: Some(
                    SystemTime::now() - parse_running_for(v["RunningFor"].as_str().unwrap_or("")),
                ),
                port: svc.and_then(|s| slot_port(&self.manifest, s, slot)),
                node: None,
                state: None,
            });
        }
        Ok(instances)
    }

    fn prune(&self, product: &str, keep: &[String]) -> Result<Vec<String>, RuntimeError> {
        let mut removed = Vec::new();
        for (name, svc) in self.manifest.products[product]
            .services
            .iter()
            .filter(|(_, s)| s.build.is_some())
        {
            let repo = berth_render::image_name(&self.manifest, product, name, svc);
            let out = Cmd::new("docker", format!("list the images of {product}.{name}"))
                .args(["image", "ls", &repo, "--format", "{{.Tag}}"])
                .output()?;
            for tag in out
                .stdout_str()
                .lines()
                .filter(|t| *t != "<none>" && *t != "latest" && !keep.iter().any(|k| k == t))
            {
                let image = format!("{repo}:{tag}");
                if Cmd::new("docker", format!("remove the old image {image}"))
                    .args(["image", "rm", &image])
                    .output()
                    .is_ok()
                {
                    removed.push(image);
                }
            }
        }
        if self.remove_product_network_if_unused(product) {
            removed.push(format!(
                "network {}",
                self.manifest.product_network(product).name
            ));
        }
        Ok(removed)
    }

    /// `docker compose logs --timestamps` of the slot's project (with `--follow`, until
    /// the stream is dropped or the containers go); each line's time is docker's.
    fn log_stream(
        &self,
        product: &str,
        slot: Slot,
        service: &str,
        from: LogFrom,
        follow: bool,
    ) -> Result<LogStream, RuntimeError> {
        use std::io::BufRead;
        use std::process::Stdio;
        let c = self
            .compose(
                product,
                slot,
                "latest",
                format!("read the logs of {product}.{service} ({slot})"),
            )?
            .args(["logs", "--no-color", "--no-log-prefix", "--timestamps"]);
        // A slot's containers are made by its `up`: their logs are its run.
        let mut cmd = log_window(c, from, follow).arg(service).to_command();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| {
            RuntimeError::Failed(format!(
                "could not read the logs of {product}.{service}: docker: {e}"
            ))
        })?;
        let (tx, rx) = std::sync::mpsc::channel();
        let out = child.stdout.take().expect("piped");
        let err = child.stderr.take().expect("piped");
        let tx_err = tx.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let (at, text) = split_timestamp(&line);
                if tx.send(LogLine::new(at, text)).is_err() {
                    return;
                }
            }
        });
        // What compose itself says (a missing service, no engine) is shown as it is.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx_err.send(LogLine::new(None, line));
            }
        });
        let child = std::sync::Arc::new(std::sync::Mutex::new(child));
        let reaper = child.clone();
        std::thread::spawn(move || {
            // Reap it when it ends by itself (the containers went).
            loop {
                if let Ok(mut c) = reaper.lock()
                    && !matches!(c.try_wait(), Ok(None))
                {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        Ok(LogStream::new(rx, move || {
            if let Ok(mut c) = child.lock() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }))
    }

    /// `docker compose run --rm --no-deps` of the service in the slot's project: the
    /// version's image, the product's network, its env and secret file.
    fn run_once(
        &self,
        product: &str,
        service: &str,
        slot: Slot,
        version: &str,
        argv: &[String],
        tty: bool,
    ) -> Result<i32, RuntimeError> {
        if argv.is_empty() {
            return Err(RuntimeError::Failed("no command to run".into()));
        }
        self.shared_network()?;
        self.product_network(product)?;
        crate::probe::install(self.root())?;
        let mut c = self
            .compose(
                product,
                slot,
                version,
                format!("run a command in {product}.{service} ({slot}, {version})"),
            )?
            .args(["run", "--rm", "--no-deps", "--label"])
            .arg(format!("berth.run={product}"));
        if !tty {
            c = c.arg("-T");
        }
        let child = c
            .arg(service)
            .args(argv)
            .to_command()
            .spawn()
            .map_err(|e| {
                RuntimeError::Failed(format!(
                    "could not run a command in {product}.{service}: docker: {e}"
                ))
            })?;
        Ok(crate::local::exit_code(crate::local::wait_in_foreground(
            child,
        )?))
    }

    /// `docker stats` (memory and CPU in use, processes) and the container's limits
    /// as the engine holds them.
    fn usage(&self, _product: &str, i: &Instance) -> Option<crate::ResourceUsage> {
        if !i.alive {
            return None;
        }
        let (memory, cpus, pids) = docker_stats(
            Cmd::new("docker", format!("read the usage of container {}", i.id)),
            &i.id,
        )?;
        let limits = Cmd::new("docker", format!("read the limits of container {}", i.id))
            .args([
                "inspect",
                "--format",
                "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.PidsLimit}} {{.HostConfig.CpuQuota}} {{.HostConfig.CpuPeriod}} {{index .Config.Labels \"berth.cpu-priority\"}}",
                &i.id,
            ])
            .output()
            .ok()?;
        // (A quota of -1 is none.)
        let text = limits.stdout_str();
        let words: Vec<&str> = text.split_whitespace().collect();
        let l: Vec<u64> = words.iter().map(|w| w.parse().unwrap_or(0)).collect();
        let some = |n: Option<&u64>| n.copied().filter(|n| *n > 0);
        // berth's compose files give a quota and period; a container made by an older
        // compose file has NanoCpus.
        let cpus_limit = match (some(l.get(3)), some(l.get(4))) {
            (Some(q), Some(p)) => Some(q as f64 / p as f64),
            _ => some(l.get(1)).map(|n| n as f64 / 1e9),
        };
        Some(crate::ResourceUsage {
            memory_bytes: Some(memory),
            memory_limit_bytes: some(l.first()),
            cpus,
            cpus_limit,
            // (berth's compose files label a background service's containers.)
            background: Some(words.get(5) == Some(&"background")),
            pids,
            pids_limit: some(l.get(2)),
            oom_kills: None,
        })
    }

    fn logs(&self, product: &str, slot: Slot, service: &str, lines: usize) -> String {
        let Ok(c) = self.compose(
            product,
            slot,
            "latest",
            format!("read the logs of {product}.{service}"),
        ) else {
            return String::new();
        };
        c.args(["logs", "--no-color", "--tail", &lines.to_string(), service])
            .output_unchecked()
            .map(|o| format!("{}{}", o.stdout_str(), o.stderr_str()))
            .unwrap_or_default()
    }
}

/// `docker stats` of one container (`docker` names the engine it runs on): memory in
/// use, CPUs in use now, processes; None when the engine does not know the container.
pub(crate) fn docker_stats(docker: Cmd, id: &str) -> Option<(u64, Option<f64>, Option<u64>)> {
    let stats = docker
        .args([
            "stats",
            "--no-stream",
            "--no-trunc",
            "--format",
            "{{json .}}",
            id,
        ])
        .timeout(Some(std::time::Duration::from_secs(15)))
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_str(stats.stdout_str().trim()).ok()?;
    let (used, _) = v["MemUsage"].as_str()?.split_once('/')?;
    let cpus = v["CPUPerc"]
        .as_str()
        .and_then(|p| p.trim().trim_end_matches('%').parse::<f64>().ok())
        .map(|p| (p * 10.0).round() / 1000.0);
    let pids = v["PIDs"].as_str().and_then(|p| p.trim().parse().ok());
    Some((docker_bytes(used)?, cpus, pids))
}

/// Variables `docker compose` keeps from berth's environment: what finds and talks
/// to the engine (PATH, HOME for ~/.docker, the docker CLI's own settings, the ssh
/// agent for `DOCKER_HOST=ssh://...`) and the locale. Nothing else reaches it, so
/// nothing else can be interpolated into a container (compose interpolates `${NAME}`
/// in the compose file and in `env_file` values): not the admin URLs
/// (`BERTH_POSTGRES_ADMIN_URL`, an `admin_url_env`), not a registry password, not
/// what the operator exported. The slot variables (BERTH_SLOT, BERTH_VERSION,
/// BERTH_PORT_*) are set by the runtime itself.
fn passes_to_docker(name: &str) -> bool {
    matches!(
        name,
        "PATH"
            | "HOME"
            | "USER"
            | "LANG"
            | "TZ"
            | "TMPDIR"
            | "XDG_RUNTIME_DIR"
            | "SSH_AUTH_SOCK"
            | "DOCKER_HOST"
            | "DOCKER_CONTEXT"
            | "DOCKER_CONFIG"
            | "DOCKER_CERT_PATH"
            | "DOCKER_TLS"
            | "DOCKER_TLS_VERIFY"
            | "DOCKER_API_VERSION"
            | "DOCKER_BUILDKIT"
            | "DOCKER_DEFAULT_PLATFORM"
    ) || name.starts_with("LC_")
}

/// `docker` with a cleared environment plus [`passes_to_docker`]'s allow-list.
/// `--tail N` or `--since <unix time>`, and `--follow`: where a `docker compose logs`
/// or `docker service logs` starts (both take the same flags); `Run` adds nothing.
pub(crate) fn log_window(c: Cmd, from: LogFrom, follow: bool) -> Cmd {
    let c = match from {
        LogFrom::Tail(n) => c.args(["--tail", &n.to_string()]),
        LogFrom::Since(t) => {
            let d = t
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or(Duration::ZERO);
            c.args([
                "--since".to_string(),
                format!("{}.{:09}", d.as_secs(), d.subsec_nanos()),
            ])
        }
        LogFrom::Run => c,
    };
    if follow { c.arg("--follow") } else { c }
}

pub(crate) fn docker_cmd(summary: impl Into<String>) -> Cmd {
    let mut c = Cmd::new("docker", summary).env_clear();
    for (k, v) in std::env::vars_os() {
        if k.to_str().is_some_and(passes_to_docker) {
            c = c.env(k, v);
        }
    }
    c
}

/// A line of `docker compose logs --timestamps`: its RFC 3339 time (UTC) and the text.
fn split_timestamp(line: &str) -> (Option<SystemTime>, &str) {
    match line.split_once(' ') {
        Some((stamp, text)) => match parse_rfc3339_utc(stamp) {
            Some(t) => (Some(t), text),
            None => (None, line),
        },
        None => match parse_rfc3339_utc(line) {
            Some(t) => (Some(t), ""),
            None => (None, line),
        },
    }
}

/// `2026-11-30T12:01:02.123456789Z` as a time (only the UTC form docker writes).
pub(crate) fn parse_rfc3339_utc(s: &str) -> Option<SystemTime> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = match time.split_once('.') {
        Some((a, b)) => (a, b),
        None => (time, ""),
    };
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<u64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos: u32 = format!("{:0<9}", &frac[..frac.len().min(9)]).parse().ok()?;
    // Days from the civil date (proleptic Gregorian), after Howard Hinnant.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days).ok()? * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
}

/// The relative path leading from directory `from` to directory `to` (both absolute).
pub fn relative(from: &Path, to: &Path) -> String {
    let f: Vec<_> = from.components().collect();
    let t: Vec<_> = to.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = std::iter::repeat_n("..".to_string(), f.len() - common).collect();
    parts.extend(
        t[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

/// `docker ps`'s "5 minutes ago" as a duration (coarse; for uptime display only).
fn parse_running_for(s: &str) -> Duration {
    let mut parts = s.split_whitespace();
    let n: u64 = match parts.next() {
        Some("About") | Some("an") | Some("a") => 1,
        Some(x) => x.parse().unwrap_or(0),
        None => 0,
    };
    let unit = parts
        .find(|p| p.chars().all(|c| c.is_ascii_alphabetic()) && *p != "an" && *p != "a")
        .unwrap_or("seconds");
    let secs = match unit.trim_end_matches('s') {
        "second" => 1,
        "minute" => 60,
        "hour" => 3600,
        "day" => 86_400,
        "week" => 604_800,
        _ => 1,
    };
    Duration::from_secs(n * secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_timestamps_parse() {
        let t = parse_rfc3339_utc("2026-11-30T12:01:02.5Z").unwrap();
        let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(d.as_secs(), 1_796_040_062);
        assert_eq!(d.subsec_millis(), 500);
        assert_eq!(
            parse_rfc3339_utc("1970-01-01T00:00:00Z"),
            Some(SystemTime::UNIX_EPOCH)
        );
        assert_eq!(parse_rfc3339_utc("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_utc("hello"), None);
        let (at, text) = split_timestamp("2026-11-30T12:01:02.000000001Z demo-app: tick 3");
        assert!(at.is_some());
        assert_eq!(text, "demo-app: tick 3");
        assert_eq!(split_timestamp("no time here").1, "no time here");
    }

    /// `berth doctor`'s leftover rule: a container of this project is stray when its
    /// compose project is no slot of a product berth.toml names; other projects'
    /// containers are never reported.
    #[test]
    fn stray_containers_are_this_projects_outside_every_slot() {
        let text = include_str!("../../../examples/multi-product/berth.toml");
        let m = berth_manifest::parse_str("berth.toml", text)
            .unwrap()
            .manifest;
        let blue = project_name(&m, "bestays", Slot::Blue);
        let green = project_name(&m, "bestays", Slot::Green);
        assert!(!stray(&m, &blue, "bestays"));
        assert!(!stray(&m, &green, "bestays"));
        // A removed product, or a slot name berth never makes.
        assert!(stray(&m, "bestays-monorepo-villas-blue", "villas"));
        assert!(stray(&m, "bestays-monorepo-bestays-red", "bestays"));
        // A product's label on another product's project.
        assert!(stray(&m, &blue, "realestate"));
        // Another project's containers.
        assert!(!stray(&m, "shop-villas-blue", "villas"));
    }
}

/// An amount as `docker stats` prints it (`12.5MiB`, `1.2GiB`, `900kB`, `0B`) in bytes.
fn docker_bytes(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let factor: f64 = match unit.trim() {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "TiB" => 1024.0f64.powi(4),
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        _ => return None,
    };
    Some((n * factor).round() as u64)
}

#[cfg(test)]
mod usage_tests {
    #[test]
    fn docker_stats_amounts() {
        assert_eq!(super::docker_bytes("12.5MiB "), Some(13_107_200));
        assert_eq!(super::docker_bytes(" 64MiB"), Some(64 << 20));
        assert_eq!(super::docker_bytes("0B"), Some(0));
        assert_eq!(super::docker_bytes("900kB"), Some(900_000));
        assert_eq!(super::docker_bytes("1.5GiB"), Some(3 << 29));
        assert_eq!(super::docker_bytes("lots"), None);
    }
}
