//! Property test: nothing from berth.toml changes the structure of a rendered file.
//!
//! A seeded generator builds random manifests whose strings are drawn from
//! hostile material (quotes, newlines, `$`, braces, semicolons, `#`,
//! backslashes, globs, Unicode line separators, control characters) mixed with
//! plausible values. Three properties:
//! 1. every manifest that passes validation renders files whose structure is
//!    only what berth writes (compose keys, nginx blocks and directives, ACL
//!    rules of the product's own prefix, `.env.example` names);
//! 2. the renderers' escaping holds on its own: the same holds for manifests
//!    that were never validated (names kept valid, every value hostile);
//! 3. a hostile character in an allow-listed field is always rejected.

use std::collections::BTreeSet;

use berth_manifest::Manifest;
use berth_render::{Env, RenderInput};
use serde_json::json;
use serde_norway::Value as Yaml;

/// xorshift64*: small, seeded, reproducible; `.1` is how often (percent) a field is hostile.
struct Rng(u64, usize);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const HOSTILE: &[&str] = &[
    "\"",
    "'",
    "\n",
    "\r",
    "\r\n",
    "\t",
    "$",
    "${HOME}",
    "$$",
    "$(touch x)",
    "`id`",
    "{",
    "}",
    ";",
    "#",
    "\\",
    "\\\"",
    "*",
    "?",
    "[",
    "]",
    " ",
    ": ",
    "- ",
    "\n    privileged: true\n",
    "\"\n    x: \"",
    "} server { listen 9; return 200 x; } #",
    " +@all ~*",
    "\nuser evil on nopass ~* +@all",
    "\u{85}",
    "\u{2028}",
    "\u{feff}",
    "\u{1b}[31m",
    "\u{0}",
    "\u{7f}",
    "é",
    "日本",
    "%0d%0a",
    "&",
    "|",
    "<",
    ">",
    "@",
    "+",
    "~",
    "=",
    ",",
    "!",
    "(",
    ")",
    "'\\''",
];
const PLAIN: &[&str] = &[
    "a", "b", "z", "api", "v1", "0", "9", "/", ":", ".", "-", "_", "x1", "health", "srv",
];

fn hostile(rng: &mut Rng) -> String {
    let mut s = String::new();
    for _ in 0..1 + rng.below(5) {
        if rng.chance(50) {
            s.push_str(rng.pick(HOSTILE));
        } else {
            s.push_str(rng.pick(PLAIN));
        }
    }
    s
}

/// A value for a field: plausible (from `valid`) or hostile.
fn field(rng: &mut Rng, valid: impl FnOnce(&mut Rng) -> String) -> String {
    if rng.chance(rng.1) {
        hostile(rng)
    } else {
        valid(rng)
    }
}

fn word(rng: &mut Rng) -> String {
    rng.pick(&["api", "web", "x1", "srv", "data", "a", "v2"])
        .to_string()
}

fn image(rng: &mut Rng) -> String {
    let mut s = String::new();
    if rng.chance(30) {
        s.push_str(rng.pick(&["ghcr.io/", "localhost:5000/", "registry.example.com/acme/"]));
    }
    s.push_str(&word(rng));
    if rng.chance(60) {
        s.push(':');
        s.push_str(rng.pick(&["latest", "15", "7.2-alpine", "v1.2.3", "pg16"]));
    }
    s
}

fn rel_path(rng: &mut Rng) -> String {
    (0..1 + rng.below(3))
        .map(|_| word(rng))
        .collect::<Vec<_>>()
        .join("/")
}

fn url_path(rng: &mut Rng, extra: &[&str]) -> String {
    let mut s = "/".to_string();
    for _ in 0..rng.below(4) {
        s.push_str(&word(rng));
        s.push_str(rng.pick(extra));
    }
    s
}

fn title(rng: &mut Rng) -> String {
    rng.pick(&[
        "BeStays",
        "Real Estate",
        "Shop \"Pro\" {beta}; #1 $5",
        "Ünïcødé 日本",
        "a\\b 'c'",
    ])
    .to_string()
}

fn env_value(rng: &mut Rng) -> String {
    // Any text is allowed: renderers must escape it.
    if rng.chance(50) {
        hostile(rng)
    } else {
        rng.pick(&[
            "http://localhost:8011",
            "true",
            "pa$$word",
            "${NOT_EXPANDED}",
            "",
        ])
        .to_string()
    }
}

const PRODUCT_NAMES: &[&str] = &["bestays", "realestate", "p1", "p10", "villas"];
const SERVICE_NAMES: &[&str] = &["server", "frontend", "worker", "api"];

/// A random manifest. With `valid_names`, the project name is kept plain too;
/// keys, domains and database identifiers are always valid, so only values are hostile.
/// Built as JSON so fields added to the model later keep their defaults.
fn manifest(rng: &mut Rng, valid_names: bool) -> Manifest {
    let mut products = serde_json::Map::new();
    let mut port = 8000u16;
    for (i, pname) in PRODUCT_NAMES.iter().take(1 + rng.below(3)).enumerate() {
        let mut services = serde_json::Map::new();
        for sname in SERVICE_NAMES.iter().take(1 + rng.below(3)) {
            port += 1;
            let mut svc = serde_json::Map::new();
            let mut env = serde_json::Map::new();
            for k in ["API_URL", "FEATURE", "GREETING"].iter().take(rng.below(4)) {
                env.insert(k.to_string(), env_value(rng).into());
            }
            svc.insert("env".into(), env.into());
            if rng.chance(40) {
                let mut b = json!({ "context": field(rng, rel_path) });
                if rng.chance(50) {
                    b["dockerfile"] = field(rng, rel_path).into();
                }
                svc.insert("build".into(), b);
            } else {
                svc.insert("image".into(), field(rng, image).into());
            }
            if rng.chance(80) {
                svc.insert("port".into(), port.into());
                svc.insert("host_port".into(), (port + 100).into());
                if rng.chance(60) {
                    let route = field(rng, |r| url_path(r, &["/", "-", ":", "@", "%20"]));
                    svc.insert("route".into(), route.into());
                }
                if rng.chance(60) {
                    let path = field(rng, |r| url_path(r, &["/", "?x=1", "-", "."]));
                    svc.insert("health".into(), json!({ "path": path }));
                }
            }
            if rng.chance(50) {
                svc.insert("secrets".into(), json!(["API_KEY"]));
            }
            if rng.chance(25) {
                svc.insert(
                    "limits".into(),
                    json!({ "cpus": 0.5, "cpu_priority": "background" }),
                );
            }
            services.insert(sname.to_string(), svc.into());
        }
        let ident = pname.replace('-', "_");
        let mut p = serde_json::Map::new();
        p.insert("services".into(), services.into());
        if rng.chance(70) {
            p.insert("display_name".into(), field(rng, title).into());
        }
        if rng.chance(80) {
            p.insert("domains".into(), json!([format!("{pname}.app")]));
        }
        if rng.chance(60) {
            p.insert(
                "database".into(),
                json!({ "name": ident, "role": format!("{ident}_user") }),
            );
        }
        if rng.chance(70) {
            let prefix = field(rng, |_| format!("{pname}:"));
            p.insert("redis".into(), json!({ "db": i, "prefix": prefix }));
        }
        products.insert(pname.to_string(), p.into());
    }
    let mut infra = json!({
        "postgres": { "mode": "container", "port": 5433 },
        "redis": { "mode": "container", "port": 6380 },
    });
    for kind in ["postgres", "redis"] {
        if rng.chance(60) {
            infra[kind]["image"] = field(rng, image).into();
        }
    }
    if rng.chance(30) {
        infra["postgres"]["app_host"] = field(rng, |_| "db.internal".into()).into();
    }
    let name = if valid_names {
        "shop".to_string()
    } else {
        field(rng, |_| "shop".into())
    };
    let mut m = json!({ "project": { "name": name }, "infra": infra, "products": products });
    if rng.chance(70) {
        m["proxy"] = json!({
            "nginx_config": "deploy/prod/nginx/nginx.conf",
            "certs_dir": field(rng, |_| "/etc/letsencrypt/live".into()),
        });
    }
    serde_json::from_value(m).expect("a manifest")
}

fn render_all(m: &Manifest) -> Vec<((Env, String), String)> {
    let mut out = Vec::new();
    for env in [Env::Dev, Env::Prod] {
        let input = RenderInput {
            manifest: m,
            env,
            root_from_out: "../..".into(),
            out_from_root: format!("deploy/{}", env.name()),
        };
        for f in berth_render::render(&input).expect("render") {
            out.push(((env, f.path), f.contents));
        }
    }
    out
}

// ---- compose -------------------------------------------------------------

fn keys(v: &Yaml) -> BTreeSet<String> {
    v.as_mapping()
        .unwrap_or_else(|| panic!("expected a mapping, got {v:?}"))
        .keys()
        .map(|k| k.as_str().expect("string key").to_string())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn check_compose(m: &Manifest, pname: &str, text: &str) {
    let p = &m.products[pname];
    let y: Yaml = serde_norway::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let top = keys(&y);
    assert!(
        top.is_subset(&set(&["name", "services", "networks"])),
        "{top:?}\n{text}"
    );
    let services = &y["services"];
    let names: BTreeSet<String> = p.services.keys().cloned().collect();
    assert_eq!(keys(services), names, "{text}");
    let allowed = set(&[
        "image",
        "build",
        "restart",
        "init",
        "stop_grace_period",
        "env_file",
        "environment",
        "ports",
        "labels",
        "healthcheck",
        "networks",
        "volumes",
        "extra_hosts",
        "deploy",
        "ulimits",
        "cpu_period",
        "cpu_quota",
        "cpu_shares",
    ]);
    for (sname, svc) in &p.services {
        let s = &services[sname.as_str()];
        assert!(
            keys(s).is_subset(&allowed),
            "{sname}: {:?}\n{text}",
            keys(s)
        );
        let image = berth_render::image_name(m, pname, sname, svc);
        assert_eq!(
            s["image"].as_str().unwrap(),
            format!("{}:${{BERTH_VERSION:-latest}}", image.replace('$', "$$")),
            "{text}"
        );
        if let Some(b) = &svc.build {
            let ctx = s["build"]["context"].as_str().unwrap();
            assert_eq!(ctx, format!("../../../{}", b.context).replace('$', "$$"));
            assert!(keys(&s["build"]).is_subset(&set(&["context", "dockerfile"])));
        }
        // The effective limits, in the form Compose applies to plain containers.
        let l = berth_manifest::effective_limits(m, pname, sname);
        assert_eq!(keys(&s["deploy"]), set(&["resources"]), "{text}");
        assert_eq!(keys(&s["deploy"]["resources"]), set(&["limits"]), "{text}");
        let lim = &s["deploy"]["resources"]["limits"];
        assert_eq!(keys(lim), set(&["memory", "pids"]), "{text}");
        // CPUs: a quota over berth's short period, and a weight.
        let (quota, period) = (s["cpu_quota"].as_u64(), s["cpu_period"].as_u64());
        assert_eq!((quota.unwrap(), period.unwrap()), l.cfs(), "{text}");
        let cpus = quota.unwrap() as f64 / period.unwrap() as f64;
        assert!(
            (cpus - l.cpus).abs() < 0.0005,
            "{cpus} vs {}\n{text}",
            l.cpus
        );
        // (The lowest weight for a background service.)
        assert_eq!(
            s["cpu_shares"].as_u64(),
            Some(l.container_cpu_shares()),
            "{text}"
        );
        // berth status tells a background service's containers by their label.
        let label = s["labels"]
            .get("berth.cpu-priority")
            .and_then(|v| v.as_str());
        if l.cpu_priority == berth_manifest::CpuPriority::Background {
            assert_eq!(s["cpu_shares"].as_u64(), Some(2), "{text}");
            assert_eq!(label, Some("background"), "{text}");
        } else {
            assert_eq!(label, None, "{text}");
        }
        assert_eq!(
            lim["memory"].as_str(),
            Some(format!("{}b", l.memory).as_str())
        );
        assert_eq!(lim["pids"].as_u64(), Some(l.pids), "{text}");
        assert_eq!(keys(&s["ulimits"]), set(&["nofile"]), "{text}");
        assert_eq!(s["ulimits"]["nofile"]["soft"].as_u64(), Some(l.nofile));
        assert_eq!(s["ulimits"]["nofile"]["hard"].as_u64(), Some(l.nofile));
        let env = &s["environment"];
        let mut want = set(&[
            "BERTH_PRODUCT",
            "BERTH_SERVICE",
            "BERTH_SLOT",
            "BERTH_VERSION",
        ]);
        if svc.port.is_some() {
            want.insert("PORT".into());
        }
        want.extend(svc.env.keys().cloned());
        assert_eq!(keys(env), want, "{text}");
        for (k, v) in &svc.env {
            assert_eq!(
                env[k.as_str()].as_str(),
                Some(v.replace('$', "$$").as_str()),
                "{text}"
            );
        }
        // Only berth's probe is mounted, read-only, and only the host gateway is named.
        if let Some(v) = s.get("volumes") {
            let v = v.as_sequence().unwrap();
            assert_eq!(v.len(), 1, "{text}");
            assert!(
                v[0].as_str().unwrap().ends_with(":/berth-probe:ro"),
                "{text}"
            );
        }
        if let Some(h) = s.get("extra_hosts") {
            let h = h.as_sequence().unwrap();
            assert_eq!(h.len(), 1, "{text}");
            assert_eq!(
                h[0].as_str(),
                Some("host.docker.internal:host-gateway"),
                "{text}"
            );
        }
        if let (Some(h), Some(port)) = (&svc.health, svc.port) {
            let test: Vec<String> = s["healthcheck"]["test"]
                .as_sequence()
                .unwrap()
                .iter()
                // What the container gets once compose has turned `$$` back into `$`.
                .map(|w| w.as_str().unwrap().replace("$$", "$"))
                .collect();
            match &h.command {
                Some(cmd) => {
                    assert_eq!(test[0], "CMD", "{text}");
                    assert_eq!(&test[1..], cmd.as_slice(), "{text}");
                }
                None => {
                    // Exec form, no shell: the probe, the URL as one word, the timeout.
                    let url = format!("http://127.0.0.1:{port}{}", h.path);
                    assert_eq!(test.len(), 4, "{text}");
                    assert_eq!(
                        (test[0].as_str(), test[1].as_str()),
                        ("CMD", "/berth-probe")
                    );
                    assert_eq!(test[2], url, "{text}");
                    assert!(test[3].parse::<u64>().is_ok(), "{text}");
                }
            }
        }
    }
}

fn check_infra_compose(m: &Manifest, text: &str) {
    let y: Yaml = serde_norway::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(keys(&y).is_subset(&set(&["name", "services", "networks", "volumes"])));
    assert_eq!(keys(&y["services"]), set(&["postgres", "redis"]), "{text}");
    for (name, i, default) in [
        ("postgres", &m.infra.postgres, "postgres:15"),
        ("redis", &m.infra.redis, "redis:7"),
    ] {
        let want = i.as_ref().unwrap().image.clone().unwrap_or(default.into());
        assert_eq!(
            y["services"][name]["image"].as_str(),
            Some(want.replace('$', "$$").as_str())
        );
        assert!(keys(&y["services"][name]).is_subset(&set(&[
            "image",
            "restart",
            "env_file",
            "ports",
            "volumes",
            "healthcheck",
            "networks",
            "command"
        ])));
    }
}

// ---- nginx ---------------------------------------------------------------

#[derive(Debug)]
struct Directive {
    args: Vec<String>,
    block: Option<Vec<Directive>>,
}

/// nginx's own tokenizer, in small: words, quoted strings with `\` escapes,
/// `;`, `{`, `}` and comments to the end of the line.
fn nginx_tokens(text: &str) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '#' => while chars.next().is_some_and(|c| c != '\n') {},
            ';' | '{' | '}' => {
                out.push((true, c.to_string()));
                chars.next();
            }
            '"' | '\'' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next().expect("unterminated quote") {
                        '\\' => {
                            let n = chars.next().unwrap();
                            match n {
                                '"' | '\'' | '\\' => s.push(n),
                                _ => {
                                    s.push('\\');
                                    s.push(n)
                                }
                            }
                        }
                        q if q == c => break,
                        o => s.push(o),
                    }
                }
                out.push((false, s));
            }
            _ => {
                let mut s = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || matches!(c, ';' | '{' | '}' | '"' | '\'') {
                        break;
                    }
                    s.push(c);
                    chars.next();
                }
                out.push((false, s));
            }
        }
    }
    out
}

fn nginx_parse(
    tokens: &mut std::iter::Peekable<std::vec::IntoIter<(bool, String)>>,
) -> Vec<Directive> {
    let mut out = Vec::new();
    loop {
        let mut args = Vec::new();
        loop {
            match tokens.next() {
                None => {
                    assert!(args.is_empty(), "unterminated directive {args:?}");
                    return out;
                }
                Some((true, p)) if p == "}" => {
                    assert!(args.is_empty(), "unterminated directive {args:?}");
                    return out;
                }
                Some((true, p)) if p == ";" => {
                    out.push(Directive { args, block: None });
                    break;
                }
                Some((true, _)) => {
                    let block = nginx_parse(tokens);
                    out.push(Directive {
                        args,
                        block: Some(block),
                    });
                    break;
                }
                Some((false, w)) => args.push(w),
            }
        }
    }
}

/// berth.conf with every `include sites/<p>.conf;` replaced by the product's server
/// blocks as `berth tls` writes them (`https`: once its certificate exists).
fn with_sites(m: &Manifest, text: &str, https: bool) -> String {
    let mut out = text.to_string();
    for name in m.products.keys() {
        let include = format!("include sites/{name}.conf;");
        if out.contains(&include) {
            out = out.replace(
                &include,
                &berth_render::render_site(
                    m,
                    name,
                    https.then(|| berth_render::tls_live_dir(name)).as_deref(),
                )
                .expect("render site"),
            );
        }
    }
    out
}

fn check_nginx(m: &Manifest, env: Env, text: &str, https: bool) {
    let text = &with_sites(m, text, https);
    let tree = nginx_parse(&mut nginx_tokens(text).into_iter().peekable());
    let tls = env == Env::Prod && https;
    let with_domains: Vec<_> = m
        .products
        .iter()
        .filter(|(_, p)| !p.domains.is_empty())
        .collect();
    let names: Vec<&str> = tree.iter().map(|d| d.args[0].as_str()).collect();
    let servers = tree.iter().filter(|d| d.args[0] == "server").count();
    assert_eq!(
        servers,
        1 + with_domains.len() * if tls { 2 } else { 1 },
        "server blocks: {names:?}\n{text}"
    );
    assert_eq!(
        tree.iter().filter(|d| d.args[0] == "include").count(),
        m.products.len(),
        "{text}"
    );
    assert!(
        names
            .iter()
            .all(|n| ["include", "map", "server"].contains(n)),
        "{names:?}\n{text}"
    );
    let server_directives = set(&[
        "listen",
        "server_name",
        "return",
        "ssl_reject_handshake",
        "ssl_certificate",
        "ssl_certificate_key",
        "ssl_protocols",
        "ssl_prefer_server_ciphers",
        "ssl_session_cache",
        "add_header",
        "location",
    ]);
    let location_directives = set(&[
        "proxy_pass",
        "proxy_http_version",
        "proxy_set_header",
        "proxy_connect_timeout",
        "proxy_read_timeout",
        "proxy_next_upstream",
    ]);
    // The product servers, in order: the ones holding locations.
    let product_servers: Vec<&Directive> =
        tree.iter()
            .filter(|d| d.args[0] == "server")
            .filter(|d| {
                d.block.as_ref().unwrap().iter().any(|x| {
                    x.args[0] == "location" || x.args[0] == "server_name" && x.args[1] != "_"
                }) && !d.block.as_ref().unwrap().iter().any(|x| {
                    x.args[0] == "return"
                        || x.block
                            .as_ref()
                            .is_some_and(|b| b.iter().any(|y| y.args[0] == "return"))
                })
            })
            .collect();
    assert_eq!(product_servers.len(), with_domains.len(), "{text}");
    for ((pname, p), server) in with_domains.iter().zip(product_servers) {
        let block = server.block.as_ref().unwrap();
        for d in block {
            assert!(
                server_directives.contains(&d.args[0]),
                "{:?}\n{text}",
                d.args
            );
        }
        let locations: Vec<&Directive> = block.iter().filter(|d| d.args[0] == "location").collect();
        let routes = p.routes();
        assert_eq!(locations.len(), routes.len(), "{pname}\n{text}");
        for (loc, (_, route)) in locations.iter().zip(&routes) {
            assert_eq!(
                loc.args,
                vec!["location".to_string(), route.clone()],
                "{text}"
            );
            for d in loc.block.as_ref().expect("a location block") {
                assert!(
                    location_directives.contains(&d.args[0]),
                    "{:?}\n{text}",
                    d.args
                );
                assert!(d.block.is_none());
            }
        }
        if tls {
            let certs = &m
                .proxy
                .as_ref()
                .map_or("/etc/letsencrypt/live".into(), |p| p.certs_dir.clone());
            let cert = block
                .iter()
                .find(|d| d.args[0] == "ssl_certificate")
                .unwrap();
            // berth's validated copy of the product's certificate, never another's.
            let _ = certs;
            assert_eq!(
                cert.args[1],
                format!("{}/fullchain.pem", berth_render::tls_live_dir(pname))
            );
        }
    }
}

// ---- Kubernetes ----------------------------------------------------------

fn yaml_docs(text: &str) -> Vec<Yaml> {
    use serde::Deserialize;
    serde_norway::Deserializer::from_str(text)
        .map(|d| Yaml::deserialize(d).unwrap_or_else(|e| panic!("{e}\n{text}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// Every key path of a YAML value (`spec.template.spec.containers[].env[].name`).
fn key_paths(v: &Yaml, at: &str, out: &mut BTreeSet<String>) {
    match v {
        Yaml::Mapping(m) => {
            for (k, x) in m {
                let k = k.as_str().unwrap_or_else(|| panic!("non-string key {k:?}"));
                let p = format!("{at}.{k}");
                out.insert(p.clone());
                key_paths(x, &p, out);
            }
        }
        Yaml::Sequence(s) => {
            for x in s {
                key_paths(x, &format!("{at}[]"), out);
            }
        }
        _ => {}
    }
}

/// The key paths each kind of object (and kustomization) may have: those of a manifest
/// that uses every feature the Kubernetes templates have, rendered for dev and prod.
fn kubernetes_shapes() -> &'static std::collections::BTreeMap<String, BTreeSet<String>> {
    static SHAPES: std::sync::LazyLock<std::collections::BTreeMap<String, BTreeSet<String>>> =
        std::sync::LazyLock::new(|| {
            let m: Manifest = serde_json::from_value(json!({
                "project": { "name": "shop" },
                "infra": { "postgres": { "mode": "container" }, "redis": { "mode": "container" } },
                "products": { "full": {
                    "domains": ["full.app", "www.full.app"],
                    "database": { "name": "full", "role": "full_user" },
                    "redis": { "db": 0, "prefix": "full:" },
                    "services": {
                        "server": { "image": "s", "port": 80, "migrate": "m up",
                            "env": { "A": "b" }, "secrets": ["K"],
                            "database_url_scheme": "postgresql+asyncpg",
                            "health": { "path": "/h" } },
                        "probe": { "image": "p", "port": 81,
                            "health": { "path": "/", "command": ["/probe", "x"] } },
                        "worker": { "image": "w" }
                    }
                } }
            }))
            .unwrap();
            let mut shapes = std::collections::BTreeMap::new();
            for env in [Env::Dev, Env::Prod] {
                for f in berth_render::kubernetes::render(&m, env, "latest").unwrap() {
                    if !f.path.ends_with(".yaml") {
                        continue;
                    }
                    for d in yaml_docs(&f.contents) {
                        let kind = d["kind"].as_str().unwrap().to_string();
                        key_paths(&d, "", shapes.entry(kind).or_default());
                    }
                }
            }
            shapes
        });
    &SHAPES
}

fn check_kubernetes(m: &Manifest, envs: &[Env]) {
    let project = berth_manifest::slug(&m.project.name);
    for &env in envs {
        let files = berth_render::kubernetes::render(m, env, "latest").expect("render");
        let paths: BTreeSet<String> = files.iter().map(|f| f.path.clone()).collect();
        let mut want = set(&["kubernetes/kustomization.yaml", "kubernetes/.gitignore"]);
        for (pname, p) in &m.products {
            let at = |f: &str| format!("kubernetes/{pname}/{f}");
            for f in [
                "kustomization.yaml",
                "base/kustomization.yaml",
                "base/namespace.yaml",
                "base/network-policy.yaml",
                "services.yaml",
            ] {
                want.insert(at(f));
            }
            if !p.domains.is_empty() && !p.routes().is_empty() {
                want.insert(at("ingress.yaml"));
            }
            if p.database.is_some() && m.backup_settings(pname).enabled {
                want.insert(at("backup.yaml"));
            }
            if p.services
                .values()
                .any(|s| s.migrate.as_deref().is_some_and(|c| !c.trim().is_empty()))
            {
                want.insert(at("migrate/kustomization.yaml"));
                want.insert(at("migrate/jobs.yaml"));
            }
        }
        assert_eq!(paths, want);
        for f in &files {
            if f.path.ends_with(".gitignore") {
                assert!(
                    f.contents
                        .lines()
                        .all(|l| l.starts_with('#') || l == "*.env")
                );
                continue;
            }
            let docs = yaml_docs(&f.contents);
            let product = f
                .path
                .split('/')
                .nth(1)
                .filter(|p| m.products.contains_key(*p));
            let mut objects = BTreeSet::new();
            for d in &docs {
                let kind = d["kind"].as_str().unwrap();
                let mut shape = BTreeSet::new();
                key_paths(d, "", &mut shape);
                let allowed = &kubernetes_shapes()[kind];
                let extra: Vec<&String> = shape.difference(allowed).collect();
                assert!(
                    extra.is_empty(),
                    "{}: {kind} has {extra:?}\n{}",
                    f.path,
                    f.contents
                );
                if kind == "Kustomization" {
                    continue;
                }
                let name = d["metadata"]["name"].as_str().unwrap().to_string();
                let pname = product.unwrap_or_else(|| panic!("{}", f.path));
                let ns = format!("{project}-{pname}");
                if kind == "Namespace" {
                    assert_eq!(name, ns);
                } else {
                    assert_eq!(
                        d["metadata"]["namespace"].as_str(),
                        Some(ns.as_str()),
                        "{}",
                        f.path
                    );
                }
                objects.insert(format!("{kind}/{name}"));
                check_k8s_values(m, pname, kind, &name, d, f);
            }
            // Only the objects berth writes, in the file berth writes them to.
            let Some(pname) = product else {
                assert_eq!(docs.len(), 1);
                continue;
            };
            let p = &m.products[pname];
            let file = f.path.splitn(3, '/').nth(2).unwrap();
            let want: BTreeSet<String> = match file {
                "base/namespace.yaml" => [
                    format!("Namespace/{project}-{pname}"),
                    format!("ResourceQuota/{pname}"),
                    format!("LimitRange/{pname}"),
                ]
                .into(),
                "base/network-policy.yaml" => {
                    let mut w = set(&[
                        "NetworkPolicy/default-deny",
                        "NetworkPolicy/from-the-product",
                        "NetworkPolicy/egress",
                    ]);
                    if p.services.values().any(|s| s.port.is_some()) {
                        w.insert("NetworkPolicy/from-the-ingress-controller".into());
                    }
                    w
                }
                "services.yaml" => p
                    .services
                    .iter()
                    .flat_map(|(n, s)| {
                        std::iter::once(format!("Deployment/{n}"))
                            .chain(s.port.map(|_| format!("Service/{n}")))
                    })
                    .collect(),
                "ingress.yaml" => [format!("Ingress/{pname}")].into(),
                "backup.yaml" => [
                    format!("PersistentVolumeClaim/{pname}-backups"),
                    format!("CronJob/{pname}-backup"),
                ]
                .into(),
                "migrate/jobs.yaml" => p
                    .services
                    .iter()
                    .filter(|(_, s)| s.migrate.as_deref().is_some_and(|c| !c.trim().is_empty()))
                    .map(|(n, _)| format!("Job/{n}-migrate-latest"))
                    .collect(),
                _ => {
                    assert_eq!(docs.len(), 1, "{}", f.path);
                    continue;
                }
            };
            assert_eq!(objects, want, "{}\n{}", f.path, f.contents);
        }
    }
}

/// The values from berth.toml land where berth puts them, unchanged.
fn check_k8s_values(
    m: &Manifest,
    pname: &str,
    kind: &str,
    name: &str,
    d: &Yaml,
    f: &berth_render::RenderedFile,
) {
    let p = &m.products[pname];
    let container = |spec: &Yaml| spec["containers"][0].clone();
    let check_container = |c: &Yaml, sname: &str| {
        let svc = &p.services[sname];
        assert_eq!(
            c["image"].as_str().unwrap(),
            format!("{}:latest", berth_render::image_name(m, pname, sname, svc)),
            "{}",
            f.contents
        );
        let env: Vec<(String, String)> = c["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap().to_string(),
                    e["value"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let mut want = vec![
            ("BERTH_PRODUCT".to_string(), pname.to_string()),
            ("BERTH_SERVICE".into(), sname.to_string()),
            ("BERTH_VERSION".into(), "latest".into()),
        ];
        if let Some(port) = svc.port {
            want.push(("PORT".into(), port.to_string()));
        }
        want.extend(svc.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        assert_eq!(env, want, "{}", f.contents);
    };
    match kind {
        "Deployment" => {
            let c = container(&d["spec"]["template"]["spec"]);
            check_container(&c, name);
            let svc = &p.services[name];
            if let (Some(h), Some(_)) = (&svc.health, svc.port) {
                for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
                    match &h.command {
                        None => {
                            assert_eq!(c[probe]["httpGet"]["path"].as_str(), Some(h.path.as_str()))
                        }
                        Some(cmd) => {
                            let got: Vec<String> =
                                serde_norway::from_value(c[probe]["exec"]["command"].clone())
                                    .unwrap();
                            assert_eq!(&got, cmd);
                        }
                    }
                }
            }
        }
        "Job" => {
            let sname = name.strip_suffix("-migrate-latest").unwrap();
            let c = container(&d["spec"]["template"]["spec"]);
            check_container(&c, sname);
            let got: Vec<String> = serde_norway::from_value(c["command"].clone()).unwrap();
            let want: Vec<String> = p.services[sname]
                .migrate
                .as_deref()
                .unwrap()
                .split_whitespace()
                .map(String::from)
                .collect();
            assert_eq!(got, want, "{}", f.contents);
        }
        "Ingress" => {
            let rules = d["spec"]["rules"].as_sequence().unwrap();
            let hosts: Vec<&str> = rules.iter().map(|r| r["host"].as_str().unwrap()).collect();
            assert_eq!(
                hosts,
                p.domains.iter().map(String::as_str).collect::<Vec<_>>()
            );
            let routes = p.routes();
            for r in rules {
                let got: Vec<(String, String)> = r["http"]["paths"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .map(|x| {
                        (
                            x["backend"]["service"]["name"]
                                .as_str()
                                .unwrap()
                                .to_string(),
                            x["path"].as_str().unwrap().to_string(),
                        )
                    })
                    .collect();
                assert_eq!(got, routes, "{}", f.contents);
            }
        }
        _ => {}
    }
}

/// The Kubernetes renderer escapes what no generator above sets: migration commands,
/// health commands and limits, hostile everywhere and never validated.
#[test]
fn hostile_commands_cannot_change_the_kubernetes_structure() {
    for seed in 1..=CASES / 2 {
        let mut rng = Rng(seed.wrapping_mul(0xA076_1D64_78BD_642F) | 1, 50);
        let mut m = manifest(&mut rng, true);
        for p in m.products.values_mut() {
            for s in p.services.values_mut() {
                if rng.chance(60) {
                    s.migrate = Some(hostile(&mut rng));
                }
                if let Some(h) = s.health.as_mut()
                    && rng.chance(40)
                {
                    h.command = Some(vec![hostile(&mut rng), hostile(&mut rng)]);
                }
                if rng.chance(40) {
                    s.limits = Some(berth_manifest::Limits {
                        cpus: Some(berth_manifest::limits::Cpus(
                            0.001 + rng.below(4000) as f64 / 1000.0,
                        )),
                        memory: Some(format!("{}MiB", 1 + rng.below(4096)).parse().unwrap()),
                        pids: Some(berth_manifest::limits::Count(1 + rng.below(5000) as u64)),
                        nofile: None,
                        cpu_priority: rng
                            .chance(30)
                            .then_some(berth_manifest::CpuPriority::Background),
                        ..Default::default()
                    });
                }
            }
            if rng.chance(30) {
                p.limits = Some(berth_manifest::Limits {
                    memory: Some("3GB".parse().unwrap()),
                    ..Default::default()
                });
            }
        }
        check_kubernetes(&m, &[Env::Dev, Env::Prod]);
    }
}

// ---- Redis ACL and .env.example -----------------------------------------

/// The keys a Redis glob matches are exactly those starting with `prefix`:
/// every glob character escaped, one final `*`.
fn glob_is_literal_prefix(pattern: &str, prefix: &str) -> bool {
    let Some(body) = pattern.strip_suffix('*') else {
        return false;
    };
    let mut out = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => out.push(n),
                None => return false,
            },
            '*' | '?' | '[' | ']' => return false,
            c => out.push(c),
        }
    }
    // Whitespace and control characters cannot be in one ACL token: they become `_`.
    let expected: String = prefix
        .chars()
        .map(|c| {
            if c.is_whitespace() || berth_manifest::validate::breaks_a_line(c) {
                '_'
            } else {
                c
            }
        })
        .collect();
    out == expected
}

fn check_acl(m: &Manifest, env: Env) {
    let lines = berth_render::redis_acl_lines(m, env, Some(&|_: &str| Some("ab".repeat(32))));
    let with_redis: Vec<_> = m
        .products
        .iter()
        .filter_map(|(n, p)| p.redis.as_ref().map(|r| (n, r)))
        .collect();
    assert_eq!(lines.len(), 2 + with_redis.len(), "{lines:#?}");
    let rule_words: BTreeSet<String> = berth_render::redis_user_rules("x:")
        .split_whitespace()
        .filter(|w| !w.starts_with('~') && !w.starts_with('&') && !w.starts_with("%"))
        .map(String::from)
        .collect();
    for ((name, r), line) in with_redis.iter().zip(&lines[2..]) {
        assert!(!line.contains('\n') && !line.contains('\r'), "{line}");
        let words: Vec<&str> = line.split(' ').collect();
        assert_eq!(&words[..3], &["user", name.as_str(), "on"], "{line}");
        assert_eq!(words[3], format!("#{}", "ab".repeat(32)));
        let keys: Vec<&&str> = words.iter().filter(|w| w.starts_with('~')).collect();
        let chans: Vec<&&str> = words.iter().filter(|w| w.starts_with('&')).collect();
        assert_eq!(keys.len(), 1, "{line}");
        assert_eq!(chans.len(), 1, "{line}");
        assert!(
            glob_is_literal_prefix(&keys[0][1..], &r.prefix),
            "{line} for {:?}",
            r.prefix
        );
        assert!(glob_is_literal_prefix(&chans[0][1..], &r.prefix), "{line}");
        for w in &words[4..] {
            if !w.starts_with('~') && !w.starts_with('&') {
                assert!(
                    rule_words.contains(*w),
                    "unexpected ACL rule {w:?} in {line}"
                );
            }
        }
    }
}

fn check_env_example(m: &Manifest, pname: &str, text: &str) {
    let names = berth_render::secrets::secret_names(&m.products[pname]);
    let got: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            l.strip_suffix('=')
                .unwrap_or_else(|| panic!("not NAME=: {l:?}\n{text}"))
        })
        .collect();
    assert_eq!(got, names, "{text}");
}

fn check_all(m: &Manifest) {
    let files = render_all(m);
    for ((env, path), text) in &files {
        if let Some(p) = path
            .strip_prefix("compose/")
            .and_then(|p| p.strip_suffix(".yml"))
        {
            if p == "infra" {
                check_infra_compose(m, text);
            } else {
                check_compose(m, p, text);
            }
        } else if path == "nginx/berth.conf" {
            check_nginx(m, *env, text, false);
            check_nginx(m, *env, text, true);
        } else if let Some(p) = path
            .strip_prefix("env/")
            .and_then(|p| p.strip_suffix(".env.example"))
        {
            check_env_example(m, p, text);
        }
    }
    check_acl(m, Env::Dev);
    check_acl(m, Env::Prod);
    // Prod only here (dev differs in the Ingress's TLS alone); both in the test below.
    check_kubernetes(m, &[Env::Prod]);
}

/// Values of allow-listed fields: (where, value).
fn allow_listed(m: &Manifest) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (kind, i) in [("postgres", &m.infra.postgres), ("redis", &m.infra.redis)] {
        if let Some(i) = i {
            out.extend(i.image.clone().map(|v| (format!("infra.{kind}.image"), v)));
            out.extend(
                i.app_host
                    .clone()
                    .map(|v| (format!("infra.{kind}.app_host"), v)),
            );
        }
    }
    if let Some(px) = &m.proxy {
        out.push(("proxy.certs_dir".into(), px.certs_dir.clone()));
    }
    for (pname, p) in &m.products {
        out.extend(
            p.display_name
                .clone()
                .map(|v| (format!("{pname}.display_name"), v)),
        );
        out.extend(
            p.redis
                .as_ref()
                .map(|r| (format!("{pname}.redis.prefix"), r.prefix.clone())),
        );
        for (sname, s) in &p.services {
            let at = |k: &str| format!("{pname}.{sname}.{k}");
            out.extend(s.image.clone().map(|v| (at("image"), v)));
            out.extend(s.route.clone().map(|v| (at("route"), v)));
            out.extend(
                s.health
                    .as_ref()
                    .map(|h| (at("health.path"), h.path.clone())),
            );
            if let Some(b) = &s.build {
                out.push((at("build.context"), b.context.clone()));
                out.extend(b.dockerfile.clone().map(|v| (at("build.dockerfile"), v)));
            }
        }
    }
    out
}

/// Characters no allow-listed field accepts (display names take quotes,
/// braces and `$` as text, but never a line break or a control character).
fn never_allowed(field: &str, c: char) -> bool {
    let breaks = c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}');
    if field.ends_with("display_name") {
        return breaks;
    }
    breaks
        || matches!(
            c,
            ' ' | '"'
                | '\''
                | '$'
                | '{'
                | '}'
                | ';'
                | '#'
                | '\\'
                | '`'
                | '('
                | ')'
                | '|'
                | '<'
                | '>'
                | '&'
        )
        || (c == '*' && !field.ends_with("route"))
}

const CASES: u64 = 300;

#[test]
fn validated_manifests_render_only_berths_structure() {
    let (mut accepted, mut rejected) = (0, 0);
    for seed in 1..=CASES {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1, 8);
        let m = manifest(&mut rng, seed % 2 == 0);
        let text = toml::to_string(&m).expect("serialize");
        let result = berth_manifest::check_str("berth.toml", &text);
        // Property 3: a hostile character in an allow-listed field is never accepted.
        let hostile: Vec<_> = allow_listed(&m)
            .into_iter()
            .filter(|(f, v)| v.chars().any(|c| never_allowed(f, c)))
            .collect();
        match result {
            Ok((loaded, _)) => {
                assert!(
                    hostile.is_empty(),
                    "seed {seed}: accepted {hostile:?}\n{text}"
                );
                accepted += 1;
                // Property 1: what passes renders to berth's structure only.
                check_all(&loaded.manifest);
            }
            Err(_) => rejected += 1,
        }
    }
    eprintln!("{accepted} manifests accepted and rendered, {rejected} rejected");
    // The generator must exercise both sides.
    assert!(
        accepted >= CASES / 10,
        "only {accepted} of {CASES} manifests passed validation"
    );
    assert!(
        rejected >= CASES / 10,
        "only {rejected} of {CASES} manifests were rejected"
    );
}

/// Property 2: the renderers' escaping holds even for manifests that never
/// went through validation (valid names, hostile values everywhere).
#[test]
fn unvalidated_hostile_values_cannot_change_the_structure() {
    for seed in 1..=CASES {
        let mut rng = Rng(seed.wrapping_mul(0xD1B5_4A32_D192_ED03) | 1, 50);
        let m = manifest(&mut rng, true);
        check_all(&m);
    }
}
