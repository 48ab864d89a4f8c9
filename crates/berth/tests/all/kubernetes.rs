//! `berth render --target kubernetes`: the example's manifests, validated against the
//! Kubernetes OpenAPI schemas (PyPI `kubernetes-validate --strict`), built by the real
//! `kubectl kustomize`, with no secret value in any rendered file, every product in its
//! own namespace, and network policies that keep products apart (evaluated here).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_norway::Value as Yaml;

use crate::support::*;

const PROJECT: &str = "bestays-monorepo";

/// kubectl with kustomize v4 or newer: the one ./scripts/test.sh put in scripts/tools/venv
/// when the packaged one is older, else the one on the PATH.
fn kubectl() -> PathBuf {
    let venv = workspace_root().join("scripts/tools/venv/bin/kubectl");
    if venv.is_file() {
        return venv;
    }
    berth_testkit::require_program("kubectl", &[], "apt-get install kubernetes-client")
}

fn kubernetes_validate() -> PathBuf {
    let venv = workspace_root().join("scripts/tools/venv/bin");
    berth_testkit::require_program(
        "kubernetes-validate",
        &[venv.to_str().unwrap()],
        "pip install kubernetes-validate",
    )
}

fn output(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("run a tool");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `kubectl kustomize DIR`: the objects it builds, as YAML text.
fn kustomize(dir: &Path) -> String {
    let (ok, out, err) = output(Command::new(kubectl()).arg("kustomize").arg(dir));
    assert!(ok, "kubectl kustomize {} failed:\n{err}", dir.display());
    out
}

/// `kubernetes-validate --strict` on a file of objects: (passed, output).
fn validate_strict(file: &Path) -> (bool, String) {
    let (ok, out, err) = output(
        Command::new(kubernetes_validate())
            .args(["--strict", "--no-warn"])
            .arg(file),
    );
    (ok, format!("{out}{err}"))
}

fn docs(text: &str) -> Vec<Yaml> {
    use serde::Deserialize;
    serde_norway::Deserializer::from_str(text)
        .map(|d| Yaml::deserialize(d).expect("YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn s<'a>(v: &'a Yaml, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_str()
}

/// The example rendered for Kubernetes (and for the host) in a git repository.
fn rendered_example() -> GitRepo {
    let repo = example_repo();
    run(repo.path(), &["render"]).assert_code(0);
    run(repo.path(), &["render", "--target", "kubernetes"]).assert_code(0);
    repo
}

fn k8s_dir(repo: &GitRepo) -> PathBuf {
    repo.path().join("deploy/prod/kubernetes")
}

fn files_under(dir: &Path) -> Vec<String> {
    fn walk(d: &Path, base: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, base, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Golden files: every rendered manifest of the example (the untracked secret values aside).
#[test]
fn snapshots_of_the_example_manifests() {
    let repo = rendered_example();
    let dir = k8s_dir(&repo);
    let files: Vec<String> = files_under(&dir)
        .into_iter()
        .filter(|f| !f.ends_with(".env"))
        .collect();
    assert!(files.len() > 10, "{files:?}");
    for f in files {
        let text = std::fs::read_to_string(dir.join(&f)).unwrap();
        insta::assert_snapshot!(format!("k8s_prod_{}", f.replace('/', "_")), text);
    }
}

/// Every object of the app and of each product's migration validates against the
/// Kubernetes OpenAPI schemas in strict mode, and the same validator rejects a misspelt
/// field in them (so the check has teeth).
#[test]
fn every_object_validates_against_the_kubernetes_schemas_and_kustomize_builds_the_tree() {
    let repo = rendered_example();
    let dir = k8s_dir(&repo);
    let tmp = temp_dir();
    let mut built = vec![("app", kustomize(&dir))];
    for p in ["bestays", "realestate"] {
        built.push((p, kustomize(&dir.join(p).join("migrate"))));
    }
    // dev (no TLS) too.
    run(
        repo.path(),
        &["render", "--env", "dev", "--target", "kubernetes"],
    )
    .assert_code(0);
    built.push(("dev", kustomize(&repo.path().join("deploy/dev/kubernetes"))));
    let mut kinds = std::collections::BTreeSet::new();
    for (name, text) in &built {
        for d in docs(text) {
            kinds.insert(s(&d, &["kind"]).unwrap().to_string());
        }
        let file = tmp.path().join(format!("{name}.yaml"));
        std::fs::write(&file, text).unwrap();
        let (ok, out) = validate_strict(&file);
        assert!(ok, "{name} does not validate:\n{out}");
    }
    for kind in [
        "Namespace",
        "ResourceQuota",
        "LimitRange",
        "Secret",
        "Deployment",
        "Service",
        "Ingress",
        "NetworkPolicy",
        "Job",
        "CronJob",
        "PersistentVolumeClaim",
    ] {
        assert!(kinds.contains(kind), "no {kind} in {kinds:?}");
    }
    // A misspelt field fails strict validation, naming the field.
    for (from, to) in [
        ("revisionHistoryLimit:", "revisionHistoryLimt:"),
        ("concurrencyPolicy:", "concurencyPolicy:"),
        ("podSelector:", "podselector:"),
    ] {
        let text = built[0].1.replacen(from, to, 1);
        assert_ne!(text, built[0].1, "{from} is in the app");
        let file = tmp.path().join("misspelt.yaml");
        std::fs::write(&file, &text).unwrap();
        let (ok, out) = validate_strict(&file);
        assert!(!ok, "a misspelt {from} passed:\n{out}");
        assert!(out.contains(to.trim_end_matches(':')), "{out}");
    }
}

/// No value of any secret file reaches a rendered (tracked) file; the files kustomize reads
/// the values from are git-ignored and private.
#[test]
fn no_secret_value_in_any_rendered_file() {
    let repo = rendered_example();
    let dir = k8s_dir(&repo);
    crate::support::fill_declared_secrets(repo.path());
    run(repo.path(), &["render", "--target", "kubernetes"]).assert_code(0);
    let mut values = Vec::new();
    let secret_files: Vec<PathBuf> = std::fs::read_dir(repo.path().join(".berth/secrets"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .chain(
            files_under(&dir)
                .into_iter()
                .filter(|f| f.ends_with(".env"))
                .map(|f| dir.join(f)),
        )
        .collect();
    for f in &secret_files {
        for line in std::fs::read_to_string(f).unwrap().lines() {
            if let Some((k, v)) = line.split_once('=')
                && !line.starts_with('#')
                // Not secrets: the prefix, and the admin's user name.
                && !["REDIS_KEY_PREFIX", "POSTGRES_USER"].contains(&k)
                && v.len() >= 8
            {
                values.push(v.to_string());
            }
        }
    }
    assert!(values.len() >= 10, "{values:?}");
    let env_files: Vec<String> = files_under(&dir)
        .into_iter()
        .filter(|f| f.ends_with(".env"))
        .collect();
    assert_eq!(
        env_files,
        ["bestays/base/secrets.env", "realestate/base/secrets.env"]
    );
    for f in files_under(&dir) {
        let path = dir.join(&f);
        let ignored = Command::new("git")
            .arg("-C")
            .arg(repo.path())
            .args(["check-ignore", "-q"])
            .arg(&path)
            .status()
            .unwrap()
            .success();
        if f.ends_with(".env") {
            assert!(ignored, "{f} is not git-ignored");
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
            // The cluster's addresses, not this machine's.
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                text.contains(&format!(
                    "@postgres.{PROJECT}-shared.svc.cluster.local:5432/"
                )),
                "{f}"
            );
            continue;
        }
        assert!(!ignored, "{f} is a rendered file and must be tracked");
        let text = std::fs::read_to_string(&path).unwrap();
        for v in &values {
            assert!(!text.contains(v.as_str()), "{f} holds a secret value");
        }
    }
    // git would commit none of them.
    repo.commit_all("chore: render kubernetes (TASK-1-render-bestays)");
    let tracked = Command::new("git")
        .arg("-C")
        .arg(repo.path())
        .args(["ls-files", "deploy/prod/kubernetes"])
        .output()
        .unwrap();
    let tracked = String::from_utf8_lossy(&tracked.stdout);
    assert!(!tracked.contains(".env"), "{tracked}");
    assert!(tracked.contains("bestays/services.yaml"), "{tracked}");
    run(repo.path(), &["check"]).assert_code(0);
}

/// Everything of a product lives in its own namespace, `<project>-<product>`.
#[test]
fn every_products_objects_live_in_its_own_namespace() {
    let repo = rendered_example();
    let dir = k8s_dir(&repo);
    let mut texts = vec![kustomize(&dir)];
    for p in ["bestays", "realestate"] {
        texts.push(kustomize(&dir.join(p).join("migrate")));
    }
    let mut seen = BTreeMap::new();
    for d in texts.iter().flat_map(|t| docs(t)) {
        let kind = s(&d, &["kind"]).unwrap();
        let name = s(&d, &["metadata", "name"]).unwrap();
        let ns = if kind == "Namespace" {
            name
        } else {
            s(&d, &["metadata", "namespace"])
                .unwrap_or_else(|| panic!("{kind}/{name} has no namespace"))
        };
        let product = ns
            .strip_prefix(&format!("{PROJECT}-"))
            .unwrap_or_else(|| panic!("{kind}/{name} is in {ns}"));
        assert!(
            ["bestays", "realestate"].contains(&product),
            "{kind}/{name} in {ns}"
        );
        if let Some(label) = s(&d, &["metadata", "labels", "product"]) {
            assert_eq!(label, product, "{kind}/{name}");
        }
        // Secrets are the product's own (kustomize adds a content hash).
        if kind == "Secret" {
            assert!(name.starts_with(&format!("{product}-secrets-")), "{name}");
        }
        *seen.entry(product.to_string()).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
}

// ---- network policies, evaluated ---------------------------------------------

#[derive(Debug, Clone)]
struct Pod {
    what: String,
    ns: String,
    labels: BTreeMap<String, String>,
}

struct Policy {
    ns: String,
    selector: Yaml,
    ingress: Option<Vec<Yaml>>,
    egress: Option<Vec<Yaml>>,
}

/// Whether a label selector (matchLabels only: berth writes nothing else) selects `labels`.
fn selects(selector: &Yaml, labels: &BTreeMap<String, String>) -> bool {
    if let Some(m) = selector.as_mapping() {
        for k in m.keys() {
            assert!(
                k.as_str() == Some("matchLabels"),
                "selector with {k:?}: not evaluated here"
            );
        }
    }
    match selector.get("matchLabels").and_then(|m| m.as_mapping()) {
        None => true,
        Some(m) => m
            .iter()
            .all(|(k, v)| labels.get(k.as_str().unwrap()).map(String::as_str) == v.as_str()),
    }
}

fn ns_labels(ns: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("kubernetes.io/metadata.name".to_string(), ns.to_string())])
}

/// Whether a peer (`from`/`to` entry) of a policy in `policy_ns` matches `pod`.
fn peer_matches(peer: &Yaml, policy_ns: &str, pod: &Pod) -> bool {
    assert!(
        peer.get("ipBlock").is_none(),
        "ipBlock peers are not allowed"
    );
    let ns_ok = match peer.get("namespaceSelector") {
        None => pod.ns == policy_ns,
        Some(sel) => selects(sel, &ns_labels(&pod.ns)),
    };
    let pod_ok = peer
        .get("podSelector")
        .is_none_or(|sel| selects(sel, &pod.labels));
    ns_ok && pod_ok
}

/// Kubernetes semantics: a direction is open unless a policy selecting the pod covers it;
/// then only what one of its rules allows (ports ignored: an over-approximation).
fn allows(policies: &[Policy], from: &Pod, to: &Pod) -> bool {
    let direction = |pod: &Pod,
                     other: &Pod,
                     rules: &dyn Fn(&Policy) -> Option<&Vec<Yaml>>,
                     key: &str| {
        let applying: Vec<&Policy> = policies
            .iter()
            .filter(|p| p.ns == pod.ns && selects(&p.selector, &pod.labels) && rules(p).is_some())
            .collect();
        applying.is_empty()
            || applying.iter().any(|p| {
                rules(p).unwrap().iter().any(|rule| match rule.get(key) {
                    None => true,
                    Some(peers) => peers
                        .as_sequence()
                        .unwrap()
                        .iter()
                        .any(|peer| peer_matches(peer, &p.ns, other)),
                })
            })
    };
    direction(from, to, &|p| p.egress.as_ref(), "to")
        && direction(to, from, &|p| p.ingress.as_ref(), "from")
}

#[test]
fn no_network_policy_lets_one_products_pods_reach_anothers() {
    let repo = rendered_example();
    let dir = k8s_dir(&repo);
    let mut texts = vec![kustomize(&dir)];
    for p in ["bestays", "realestate"] {
        texts.push(kustomize(&dir.join(p).join("migrate")));
    }
    let mut pods = Vec::new();
    let mut policies = Vec::new();
    for d in texts.iter().flat_map(|t| docs(t)) {
        let kind = s(&d, &["kind"]).unwrap();
        let ns = s(&d, &["metadata", "namespace"])
            .unwrap_or_default()
            .to_string();
        let template = match kind {
            "Deployment" | "Job" => d["spec"]["template"].clone(),
            "CronJob" => d["spec"]["jobTemplate"]["spec"]["template"].clone(),
            "NetworkPolicy" => {
                let spec = &d["spec"];
                let types: Vec<&str> = spec["policyTypes"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_str().unwrap())
                    .collect();
                let rules = |key: &str, t: &str| {
                    types.contains(&t).then(|| {
                        spec.get(key)
                            .and_then(|r| r.as_sequence().cloned())
                            .unwrap_or_default()
                    })
                };
                policies.push(Policy {
                    ns,
                    selector: spec["podSelector"].clone(),
                    ingress: rules("ingress", "Ingress"),
                    egress: rules("egress", "Egress"),
                });
                continue;
            }
            _ => continue,
        };
        let labels: BTreeMap<String, String> =
            serde_norway::from_value(template["metadata"]["labels"].clone()).unwrap();
        pods.push(Pod {
            what: format!("{kind}/{}", s(&d, &["metadata", "name"]).unwrap()),
            ns,
            labels,
        });
    }
    assert!(policies.len() >= 6 && pods.len() >= 6, "{pods:?}");
    let outside = |what: &str, ns: &str, labels: &[(&str, &str)]| Pod {
        what: what.into(),
        ns: ns.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let controller = outside(
        "ingress controller",
        "ingress-nginx",
        &[("app.kubernetes.io/name", "ingress-nginx")],
    );
    let shared = format!("{PROJECT}-shared");
    let postgres = outside(
        "postgres",
        &shared,
        &[("app.kubernetes.io/name", "postgres")],
    );
    let redis = outside("redis", &shared, &[("app.kubernetes.io/name", "redis")]);
    let stranger = outside("a pod elsewhere", "default", &[("app", "x")]);
    let shared_other = outside("another pod in shared", &shared, &[("app", "x")]);
    let product = |p: &Pod| p.labels["product"].clone();

    for a in &pods {
        for b in &pods {
            let same = product(a) == product(b);
            assert_eq!(
                allows(&policies, a, b),
                same,
                "{} ({}) -> {} ({})",
                a.what,
                a.ns,
                b.what,
                b.ns
            );
        }
        // Only PostgreSQL and Redis (and DNS) out of the namespace; nothing in but the
        // ingress controller.
        assert!(allows(&policies, a, &postgres), "{} -> postgres", a.what);
        assert!(allows(&policies, a, &redis), "{} -> redis", a.what);
        for other in [&stranger, &shared_other, &controller] {
            assert!(!allows(&policies, a, other), "{} -> {}", a.what, other.what);
        }
        for other in [&stranger, &postgres, &shared_other] {
            assert!(!allows(&policies, other, a), "{} -> {}", other.what, a.what);
        }
        let serves = a.what.starts_with("Deployment/");
        assert_eq!(
            allows(&policies, &controller, a),
            serves,
            "ingress controller -> {}",
            a.what
        );
    }
}

// ---- the CLI -----------------------------------------------------------------------

/// Once rendered, the Kubernetes files are kept and checked like the others: a plain
/// `berth render --check` reports a changed one.
#[test]
fn render_check_covers_the_kubernetes_files() {
    let repo = rendered_example();
    run(repo.path(), &["render", "--check"]).assert_code(0);
    let f = k8s_dir(&repo).join("bestays/services.yaml");
    let text = std::fs::read_to_string(&f).unwrap();
    std::fs::write(&f, text.replace("maxUnavailable: 0", "maxUnavailable: 1")).unwrap();
    let out = run(repo.path(), &["render", "--check"]);
    out.assert_code(1);
    assert!(
        out.stdout.contains("stale:") && out.stdout.contains("kubernetes/bestays/services.yaml"),
        "{}",
        out.snapshot()
    );
    run(
        repo.path(),
        &["render", "--check", "--target", "kubernetes"],
    )
    .assert_code(1);
    run(repo.path(), &["render", "--check", "--target", "host"]).assert_code(0);
    run(repo.path(), &["render"]).assert_code(0);
    run(repo.path(), &["render", "--check"]).assert_code(0);
    // A version of its own changes the image tags, labels and the migration Jobs' names.
    let out = run(
        repo.path(),
        &[
            "render",
            "--check",
            "--target",
            "kubernetes",
            "--release",
            "0123456789ab",
        ],
    );
    out.assert_code(1);
    run(
        repo.path(),
        &[
            "render",
            "--target",
            "kubernetes",
            "--release",
            "0123456789ab",
        ],
    )
    .assert_code(0);
    let jobs = std::fs::read_to_string(k8s_dir(&repo).join("bestays/migrate/jobs.yaml")).unwrap();
    assert!(jobs.contains("name: server-migrate-0123456789ab"), "{jobs}");
    assert!(
        jobs.contains("image: \"bestays-monorepo-bestays-server:0123456789ab\""),
        "{jobs}"
    );
}

#[test]
fn a_bad_release_is_a_usage_error_and_writes_nothing() {
    let repo = example_repo();
    for bad in ["V1", "a b", "x\n- evil", "-a", &"a".repeat(41)] {
        let out = run(
            repo.path(),
            &[
                "render",
                "--target",
                "kubernetes",
                &format!("--release={bad}"),
            ],
        );
        out.assert_code(2);
        assert!(out.stderr.contains("--release"), "{}", out.snapshot());
    }
    assert!(!repo.path().join("deploy").exists());
}

/// `[limits]`, a product's and a service's limits become the containers' resources, the
/// limit range and the namespace's quota.
#[test]
fn limits_shape_the_containers_the_limit_range_and_the_quota() {
    let repo = example_repo();
    let m = std::fs::read_to_string(repo.path().join("berth.toml")).unwrap();
    let m = m
        .replace(
            "[secret_scan]",
            "[limits]\nmemory = \"256MiB\"\n\n[secret_scan]",
        )
        .replace(
            "[products.bestays.services.server]\n",
            "[products.bestays.services.server]\nlimits = { cpus = 0.5, memory = \"1GiB\", pids = 200 }\n",
        )
        .replace(
            "redis = { db = 1, prefix = \"realestate:\" }\n",
            "redis = { db = 1, prefix = \"realestate:\" }\nlimits = { cpus = 2 }\n",
        )
        .replace(
            "[products.realestate.services.server]\n",
            "[products.realestate.services.server]\nlimits = { cpu_priority = \"background\" }\n",
        );
    repo.write("berth.toml", &m);
    run(repo.path(), &["render", "--target", "kubernetes"]).assert_code(0);
    let dir = k8s_dir(&repo);
    let resources = |product: &str, service: &str| -> (String, String, String) {
        let text = std::fs::read_to_string(dir.join(product).join("services.yaml")).unwrap();
        let d = docs(&text)
            .into_iter()
            .find(|d| {
                s(d, &["kind"]) == Some("Deployment")
                    && s(d, &["metadata", "name"]) == Some(service)
            })
            .unwrap();
        let spec = &d["spec"]["template"];
        let c = &spec["spec"]["containers"][0]["resources"];
        assert_eq!(c["limits"]["memory"], c["requests"]["memory"]);
        // Requests are the limits, but a background service's CPU request is the
        // lowest weight.
        let request = if (product, service) == ("realestate", "server") {
            "1m".to_string()
        } else {
            c["limits"]["cpu"].as_str().unwrap().to_string()
        };
        assert_eq!(c["requests"]["cpu"].as_str(), Some(request.as_str()));
        (
            c["limits"]["cpu"].as_str().unwrap().to_string(),
            c["limits"]["memory"].as_str().unwrap().to_string(),
            s(spec, &["metadata", "annotations", "berth.dev/pids-limit"])
                .unwrap()
                .to_string(),
        )
    };
    let own = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
    assert_eq!(resources("bestays", "server"), own("500m", "1Gi", "200"));
    assert_eq!(
        resources("bestays", "frontend"),
        own("1000m", "256Mi", "1024")
    );
    assert_eq!(
        resources("realestate", "server"),
        own("2000m", "256Mi", "1024")
    );
    let ns = docs(&std::fs::read_to_string(dir.join("bestays/base/namespace.yaml")).unwrap());
    let quota = ns
        .iter()
        .find(|d| s(d, &["kind"]) == Some("ResourceQuota"))
        .unwrap();
    // server x3 (surge + migration) at 0.5 CPU/1GiB, frontend x2 at 1/256MiB, backup 1/256MiB.
    assert_eq!(s(quota, &["spec", "hard", "limits.cpu"]), Some("4500m"));
    assert_eq!(s(quota, &["spec", "hard", "limits.memory"]), Some("3840Mi"));
    assert_eq!(s(quota, &["spec", "hard", "pods"]), Some("6"));
    let range = ns
        .iter()
        .find(|d| s(d, &["kind"]) == Some("LimitRange"))
        .unwrap();
    let l = &range["spec"]["limits"][0];
    assert_eq!(l["default"]["memory"].as_str(), Some("256Mi"));
    assert_eq!(l["max"]["memory"].as_str(), Some("1Gi"));
    assert_eq!(l["max"]["cpu"].as_str(), Some("1000m"));

    // A bad limit is a located configuration error, and nothing is written.
    let bad = m.replace("memory = \"256MiB\"", "memory = \"256 megs\"");
    repo.write("berth.toml", &bad);
    std::fs::remove_dir_all(repo.path().join("deploy")).unwrap();
    let out = run(repo.path(), &["render", "--target", "kubernetes"]);
    out.assert_code(2);
    let line = bad.lines().position(|l| l.contains("256 megs")).unwrap() + 1;
    assert!(
        out.stderr.contains(&format!("berth.toml:{line}:10")),
        "{}",
        out.snapshot()
    );
    assert!(
        out.stderr.contains("unknown unit `megs`"),
        "{}",
        out.snapshot()
    );
    assert!(!repo.path().join("deploy").exists());
}

/// Names Kubernetes would refuse are a configuration error before anything is written.
#[test]
fn names_kubernetes_refuses_are_a_usage_error() {
    let repo = example_repo();
    let m = std::fs::read_to_string(repo.path().join("berth.toml")).unwrap();
    let long = "a".repeat(60);
    repo.write(
        "berth.toml",
        &m.replace("name = \"bestays-monorepo\"", &format!("name = \"{long}\"")),
    );
    let out = run(repo.path(), &["render", "--target", "kubernetes"]);
    out.assert_code(2);
    assert!(
        out.stderr
            .contains(&format!("`{long}-bestays`, is 68 characters long")),
        "{}",
        out.snapshot()
    );
    assert!(!repo.path().join("deploy").exists());
}

/// A service with its own URL scheme reads its own DATABASE_URL from a Secret of its own,
/// generated like the product's, pointing at the cluster's PostgreSQL.
#[test]
fn a_service_with_its_own_url_scheme_gets_its_own_secret() {
    let repo = example_repo();
    let m = std::fs::read_to_string(repo.path().join("berth.toml")).unwrap();
    repo.write(
        "berth.toml",
        &m.replacen(
            "migrate = \"demo-app migrate\"\n",
            "migrate = \"demo-app migrate\"\ndatabase_url_scheme = \"postgresql+psycopg\"\n",
            1,
        ),
    );
    run(repo.path(), &["render", "--target", "kubernetes"]).assert_code(0);
    let dir = k8s_dir(&repo);
    let own = std::fs::read_to_string(dir.join("bestays/base/server.env")).unwrap();
    assert!(
        own.contains("DATABASE_URL=postgresql+psycopg://bestays_user:")
            && own.contains(&format!(
                "@postgres.{PROJECT}-shared.svc.cluster.local:5432/bestays\n"
            )),
        "{own}"
    );
    let text = kustomize(&dir);
    let objects = docs(&text);
    let secret = objects
        .iter()
        .find(|d| {
            s(d, &["kind"]) == Some("Secret")
                && s(d, &["metadata", "name"])
                    .is_some_and(|n| n.starts_with("bestays-server-urls-"))
        })
        .expect("the service's own Secret");
    let name = s(secret, &["metadata", "name"]).unwrap();
    assert!(secret["data"].get("DATABASE_URL").is_some());
    let server = objects
        .iter()
        .find(|d| {
            s(d, &["kind"]) == Some("Deployment")
                && s(d, &["metadata", "namespace"]) == Some(&format!("{PROJECT}-bestays"))
                && s(d, &["metadata", "name"]) == Some("server")
        })
        .unwrap();
    let refs: Vec<&str> = server["spec"]["template"]["spec"]["containers"][0]["envFrom"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| e["secretRef"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(refs.len(), 2, "{refs:?}");
    assert!(refs[0].starts_with("bestays-secrets-"), "{refs:?}");
    assert_eq!(
        refs[1], name,
        "the product's first, then its own (later wins)"
    );
    let tmp = temp_dir();
    let file = tmp.path().join("app.yaml");
    std::fs::write(&file, &text).unwrap();
    let (ok, out) = validate_strict(&file);
    assert!(ok, "{out}");
}
