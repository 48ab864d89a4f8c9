//! Every rule `berth check` applies to berth.toml. All problems are collected
//! (never stop at the first), each located at the value that is wrong, with the
//! place it collides with as a related label.

use std::collections::HashMap;
use std::sync::LazyLock;

use globset::{Glob, GlobMatcher};
use regex::Regex;

use crate::diag::{self, Diagnostic, Label};
use crate::load::Loaded;
use crate::model::{InfraMode, InfraService, Manifest};
use crate::secrets;
use crate::source::ManifestSource;

mod features;

static SLUG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$").unwrap());
static SQL_IDENT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z_][a-z0-9_]{0,62}$").unwrap());
static ENV_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z_][A-Za-z0-9_]*$").unwrap());
/// Notification secrets are named by upper-case variables (a token such as
/// `glsa_...` would pass as a lower-case "name").
static NOTIFY_ENV: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[A-Z_][A-Z0-9_]*$").unwrap());
static DOMAIN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
    )
    .unwrap()
});

/// An image reference as the OCI distribution grammar defines it:
/// `[registry[:port]/]path[:tag][@digest]`, lowercase path components.
static IMAGE_REF: LazyLock<Regex> = LazyLock::new(|| {
    let domain_part = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])";
    let component = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*";
    Regex::new(&format!(
        r"^(?:{domain_part}(?:\.{domain_part})*(?::[0-9]+)?/)?{component}(?:/{component})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{{32,}})?$"
    ))
    .unwrap()
});
/// A path of plain file-name characters, `/`-separated (no quotes, spaces, `$`, newlines).
static SAFE_PATH: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^/?[A-Za-z0-9._+@-]+(?:/[A-Za-z0-9._+@-]+)*/?$").unwrap());
/// A Redis key prefix: plain key characters, ending in a separator.
static REDIS_PREFIX: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9_:.-]*[A-Za-z0-9][A-Za-z0-9_:.-]*[:._-]$").unwrap());
/// An nginx prefix location: a `/`-leading path of URL characters nginx gives no meaning to.
static ROUTE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^/[A-Za-z0-9._~%!*+,:@=/-]*$").unwrap());
/// A URL path (and query) with no character a shell or an HTTP request line gives meaning to.
static URL_PATH: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^/[A-Za-z0-9._~%+,:@=/?-]*$").unwrap());
/// A host name or an IP address (IPv6 optionally in brackets).
static HOST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?|\[?[0-9A-Fa-f:.]+\]?)$").unwrap()
});

/// Characters that end or reorder a line of text: control characters, line and
/// paragraph separators, zero-width and bidirectional formatting marks.
pub fn breaks_a_line(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// Could one of two ACL key patterns `a*` and `b*` match a key of the other's? Exactly
/// when one prefix begins with the other (`p1:` and `p10:` never share a key).
pub fn redis_prefixes_overlap(a: &str, b: &str) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// Run every rule over a parsed manifest.
pub fn validate(loaded: &Loaded) -> Vec<Diagnostic> {
    let mut v = Validator {
        m: &loaded.manifest,
        src: &loaded.source,
        out: Vec::new(),
    };
    v.names();
    v.ports();
    v.redis();
    v.databases();
    v.domains();
    v.paths();
    v.aliases();
    v.services();
    v.process_commands();
    v.shared_refs();
    v.project();
    v.conventions();
    v.infra();
    v.containers();
    v.swarm();
    v.backup();
    v.standby();
    v.serve();
    v.notify();
    v.tls();
    v.allow_lists();
    v.inline_secrets();
    v.feature_fields();
    v.limits();
    diag::sort(&mut v.out);
    v.out.iter_mut().for_each(secrets::mask_diagnostic);
    v.out
}

struct Validator<'a> {
    m: &'a Manifest,
    src: &'a ManifestSource,
    out: Vec<Diagnostic>,
}

/// Remembers the first place each value was seen, to report later duplicates against it.
struct FirstSeen<K> {
    seen: HashMap<K, (String, Vec<String>)>,
}

impl<K: std::hash::Hash + Eq> FirstSeen<K> {
    fn new() -> Self {
        Self {
            seen: HashMap::new(),
        }
    }
    /// Record `key`; if it was seen before, return who had it and where.
    fn insert(
        &mut self,
        key: K,
        owner: String,
        path: Vec<String>,
    ) -> Option<&(String, Vec<String>)> {
        use std::collections::hash_map::Entry;
        match self.seen.entry(key) {
            Entry::Occupied(e) => Some(e.into_mut()),
            Entry::Vacant(e) => {
                e.insert((owner, path));
                None
            }
        }
    }
}

fn p(path: &[String]) -> Vec<&str> {
    path.iter().map(String::as_str).collect()
}

fn vpath(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

impl Validator<'_> {
    fn label(&self, path: &[String], msg: impl Into<String>) -> Label {
        self.src.label(&p(path), msg)
    }

    fn push(&mut self, d: Diagnostic) {
        self.out.push(d);
    }

    fn names(&mut self) {
        if self.m.products.is_empty() {
            let d = Diagnostic::warning("no-products", "berth.toml defines no products")
                .at(self.src.label(&["project"], ""))
                .help("add one with `berth product add <name>` or a `[products.<name>]` table");
            self.push(d);
        }
        for (name, product) in &self.m.products {
            if !SLUG.is_match(name) {
                let d = Diagnostic::error(
                    "product-name",
                    format!("product name `{name}` is not a lowercase slug"),
                )
                .at(self.src.key_label(&["products", name], "used in container, tag and database names"))
                .help(format!(
                    "use lowercase letters, digits and single hyphens, starting with a letter (e.g. `{}`)",
                    slugify(name)
                ));
                self.push(d);
            }
            for svc in product.services.keys() {
                if !SLUG.is_match(svc) {
                    let d = Diagnostic::error(
                        "service-name",
                        format!("service name `{svc}` in product `{name}` is not a lowercase slug"),
                    )
                    .at(self.src.key_label(&["products", name, "services", svc], ""))
                    .help(format!("rename it to `{}`", slugify(svc)));
                    self.push(d);
                }
            }
        }
        for group in self.m.shared.keys() {
            if !SLUG.is_match(group) {
                let d = Diagnostic::error(
                    "shared-name",
                    format!("shared group name `{group}` is not a lowercase slug"),
                )
                .at(self.src.key_label(&["shared", group], ""))
                .help(format!("rename it to `{}`", slugify(group)));
                self.push(d);
            }
        }
    }

    fn ports(&mut self) {
        let mut seen = FirstSeen::new();
        let mut check = |v: &mut Self, port: u16, owner: String, path: Vec<String>| {
            if port == 0 {
                let d = Diagnostic::error("port-range", format!("{owner} has port 0"))
                    .at(v.label(&path, "not a usable port"))
                    .help("ports run from 1 to 65535");
                v.push(d);
                return;
            }
            if let Some((first, fpath)) = seen.insert(port, owner.clone(), path.clone()) {
                let d = Diagnostic::error(
                    "port-collision",
                    format!("host port {port} is used by both {first} and {owner}"),
                )
                .at(v.label(&path, format!("{owner} binds {port}")))
                .related(v.label(fpath, format!("already bound by {first}")));
                v.push(d);
            }
        };
        for (kind, infra) in [
            ("postgres", &self.m.infra.postgres),
            ("redis", &self.m.infra.redis),
        ] {
            if let Some(InfraService {
                mode: InfraMode::Container,
                port: Some(port),
                ..
            }) = infra
            {
                check(
                    self,
                    *port,
                    format!("infra.{kind}"),
                    vpath(&["infra", kind, "port"]),
                );
            }
        }
        // Green slots listen at host_port + offset: those must be free too.
        let offset = self.m.deploy.slot_port_offset;
        let mut blue: Vec<(u16, String)> = Vec::new();
        for (pname, product) in &self.m.products {
            for (sname, svc) in &product.services {
                if let Some(hp) = svc.host_port {
                    blue.push((hp, format!("{pname}.{sname}")));
                }
            }
        }
        for (kind, infra) in [
            ("postgres", &self.m.infra.postgres),
            ("redis", &self.m.infra.redis),
        ] {
            if let Some(InfraService {
                mode: InfraMode::Container,
                port: Some(port),
                ..
            }) = infra
            {
                blue.push((*port, format!("infra.{kind}")));
            }
        }
        for (pname, product) in &self.m.products {
            for (sname, svc) in &product.services {
                let Some(hp) = svc.host_port else { continue };
                let path = vpath(&["products", pname, "services", sname, "host_port"]);
                match hp.checked_add(offset) {
                    None => {
                        let d = Diagnostic::error("slot-port-range", format!("{pname}.{sname}: the green slot port {hp} + {offset} is above 65535"))
                            .at(self.label(&path, ""))
                            .help("use a lower host_port or a smaller [deploy] slot_port_offset");
                        self.push(d);
                    }
                    Some(green) if offset > 0 => {
                        if let Some((_, owner)) = blue.iter().find(|(p, _)| *p == green) {
                            let d = Diagnostic::error(
                                "slot-port-collision",
                                format!("the green slot of {pname}.{sname} would listen on {green}, which {owner} uses"),
                            )
                            .at(self.label(&path, ""))
                            .help("change a host_port or [deploy] slot_port_offset");
                            self.push(d);
                        }
                    }
                    Some(_) => {}
                }
            }
        }
        for (pname, product) in &self.m.products {
            for (sname, svc) in &product.services {
                if let Some(hp) = svc.host_port {
                    check(
                        self,
                        hp,
                        format!("{pname}.{sname}"),
                        vpath(&["products", pname, "services", sname, "host_port"]),
                    );
                }
                if svc.port == Some(0) {
                    check(
                        self,
                        0,
                        format!("{pname}.{sname}"),
                        vpath(&["products", pname, "services", sname, "port"]),
                    );
                }
            }
        }
    }

    fn redis(&mut self) {
        let mut dbs = FirstSeen::new();
        let mut prefixes: Vec<(String, String, Vec<String>)> = Vec::new();
        for (pname, product) in &self.m.products {
            let Some(r) = &product.redis else { continue };
            let dpath = vpath(&["products", pname, "redis", "db"]);
            if r.db > 15 {
                let d = Diagnostic::error(
                    "redis-db-range",
                    format!("product `{pname}` uses Redis database {}", r.db),
                )
                .at(self.label(&dpath, "out of range"))
                .help("a default Redis server has databases 0-15");
                self.push(d);
            }
            if let Some((first, fpath)) = dbs.insert(r.db, pname.clone(), dpath.clone()) {
                let d = Diagnostic::error(
                    "redis-db-duplicate",
                    format!(
                        "products `{first}` and `{pname}` both use Redis database {}",
                        r.db
                    ),
                )
                .at(self.label(&dpath, format!("{pname} uses db {}", r.db)))
                .related(self.label(fpath, format!("already used by {first}")))
                .help("give each product its own Redis database number");
                self.push(d);
            }
            let ppath = vpath(&["products", pname, "redis", "prefix"]);
            if !REDIS_PREFIX.is_match(&r.prefix) {
                let (code, what) = if r.prefix.trim_end_matches([':', '-', '_', '.']).is_empty() {
                    (
                        "redis-prefix-empty",
                        "an empty Redis key prefix".to_string(),
                    )
                } else {
                    (
                        "redis-prefix",
                        format!(
                            "the Redis key prefix `{}`, which is not plain key characters ending in a separator",
                            r.prefix.escape_debug()
                        ),
                    )
                };
                let d = Diagnostic::error(code, format!("product `{pname}` has {what}"))
                    .at(self.label(&ppath, "expected letters, digits, `_`, `:`, `.`, `-`, ending in `:`"))
                    .help(format!("use `{pname}:`; the prefix becomes the ACL key pattern `{pname}:*`, so spaces, `*`, `?`, `[` or a newline would widen or rewrite the product's Redis permissions"));
                self.push(d);
                continue;
            }
            for (other, oprefix, opath) in &prefixes {
                if redis_prefixes_overlap(&r.prefix, oprefix) {
                    let (long, short) = if r.prefix.len() >= oprefix.len() {
                        (r.prefix.as_str(), oprefix.as_str())
                    } else {
                        (oprefix.as_str(), r.prefix.as_str())
                    };
                    // Suggest a prefix the product does not already have.
                    let suggestion = if r.prefix == format!("{pname}:") {
                        format!("`{other}:` for `{other}`")
                    } else {
                        format!("`{pname}:`")
                    };
                    let d = Diagnostic::error(
                        "redis-prefix-overlap",
                        format!(
                            "Redis prefix `{}` of `{pname}` overlaps `{oprefix}` of `{other}`",
                            r.prefix
                        ),
                    )
                    .at(self.label(&ppath, ""))
                    .related(self.label(opath, format!("prefix of `{other}`")))
                    .help(format!(
                        "`{long}` begins with `{short}`, so the pattern `{short}*` also matches the other's keys; pick prefixes where neither starts with the other, e.g. {suggestion}"
                    ));
                    self.push(d);
                }
            }
            prefixes.push((pname.clone(), r.prefix.clone(), ppath));
        }
    }

    fn databases(&mut self) {
        let mut names = FirstSeen::new();
        let mut roles = FirstSeen::new();
        for (pname, product) in &self.m.products {
            let Some(db) = &product.database else {
                continue;
            };
            for (what, value, seen, code) in [
                ("database", &db.name, &mut names, "database-duplicate"),
                ("role", &db.role, &mut roles, "role-duplicate"),
            ] {
                let key = if what == "database" { "name" } else { "role" };
                let path = vpath(&["products", pname, "database", key]);
                if !SQL_IDENT.is_match(value) {
                    let d = Diagnostic::error(
                        "database-identifier",
                        format!("{what} `{value}` of `{pname}` is not a plain PostgreSQL identifier"),
                    )
                    .at(self.label(&path, ""))
                    .help("use lowercase letters, digits and underscores, starting with a letter (at most 63)");
                    self.out.push(d);
                }
                if let Some((first, fpath)) =
                    seen.insert(value.clone(), pname.clone(), path.clone())
                {
                    let d = Diagnostic::error(
                        code,
                        format!("products `{first}` and `{pname}` both use the {what} `{value}`"),
                    )
                    .at(self.label(&path, ""))
                    .related(self.label(fpath, format!("already used by {first}")))
                    .help(format!("each product needs its own {what} so it cannot reach another product's data"));
                    self.out.push(d);
                }
            }
        }
        if self.m.infra.postgres.is_none()
            && let Some((pname, _)) = self.m.products.iter().find(|(_, p)| p.database.is_some())
        {
            let d = Diagnostic::warning(
                "no-postgres",
                format!("`{pname}` has a database but there is no [infra.postgres]"),
            )
            .at(self.src.label(&["products", pname, "database"], ""))
            .help("add [infra.postgres] with mode = \"container\" or mode = \"external\"");
            self.push(d);
        }
        if self.m.infra.redis.is_none()
            && let Some((pname, _)) = self.m.products.iter().find(|(_, p)| p.redis.is_some())
        {
            let d = Diagnostic::warning(
                "no-redis",
                format!("`{pname}` has a Redis key space but there is no [infra.redis]"),
            )
            .at(self.src.label(&["products", pname, "redis"], ""))
            .help("add [infra.redis] with mode = \"container\" or mode = \"external\"");
            self.push(d);
        }
    }

    fn domains(&mut self) {
        let mut seen = FirstSeen::new();
        for (pname, product) in &self.m.products {
            for (i, domain) in product.domains.iter().enumerate() {
                let path = vpath(&["products", pname, "domains", &i.to_string()]);
                let lower = domain.to_ascii_lowercase();
                if !DOMAIN.is_match(&lower) {
                    let d = Diagnostic::error("domain-invalid", format!("`{domain}` is not a domain name"))
                        .at(self.label(&path, ""))
                        .help("write the bare host name, without scheme, port or path (e.g. `bestays.app`)");
                    self.push(d);
                }
                if let Some((first, fpath)) = seen.insert(lower, pname.clone(), path.clone()) {
                    let d = Diagnostic::error(
                        "domain-duplicate",
                        format!("domain `{domain}` is claimed by both `{first}` and `{pname}`"),
                    )
                    .at(self.label(&path, ""))
                    .related(self.label(fpath, format!("already served for {first}")))
                    .help("nginx routes a domain to exactly one product");
                    self.push(d);
                }
            }
        }
    }

    /// `[tls]`, `[tls.acme]` and `[products.<name>.tls]`: every value reaches a file
    /// berth writes, a command line or a request to the CA.
    fn tls(&mut self) {
        static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
            Regex::new(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$").unwrap()
        });
        if let Some(acme) = self.m.tls.as_ref().and_then(|t| t.acme.as_ref()) {
            let url = acme.directory_url();
            let loopback = ["http://127.0.0.1:", "http://localhost:", "http://[::1]:"]
                .iter()
                .any(|p| url.starts_with(p));
            let ok = (url.starts_with("https://") || loopback)
                && url.len() > 8
                && !url
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '"');
            if !ok {
                let d = Diagnostic::error(
                    "tls-acme-directory",
                    format!("tls.acme.directory `{}` is not an ACME directory", acme.directory.escape_debug()),
                )
                .at(self.label(&vpath(&["tls", "acme", "directory"]), "expected `letsencrypt`, `letsencrypt-staging` or an https:// URL"))
                .help("RFC 8555 directories are served over HTTPS (plain http:// is accepted on loopback only, for a test CA)");
                self.push(d);
            }
            if let Some(c) = &acme.contact
                && !EMAIL.is_match(c.trim_start_matches("mailto:"))
            {
                let d = Diagnostic::error(
                    "tls-acme-contact",
                    format!(
                        "tls.acme.contact `{}` is not an email address",
                        c.escape_debug()
                    ),
                )
                .at(self.label(
                    &vpath(&["tls", "acme", "contact"]),
                    "expected e.g. `ops@example.com`",
                ))
                .help("the CA writes to it about expiring certificates");
                self.push(d);
            }
            for (key, v) in [
                ("eab_kid_env", &acme.eab_kid_env),
                ("eab_hmac_env", &acme.eab_hmac_env),
            ] {
                if let Some(v) = v
                    && !NOTIFY_ENV.is_match(v)
                {
                    let d = Diagnostic::error("tls-acme-env", format!("tls.acme.{key} `{}` is not an environment variable name", v.escape_debug()))
                        .at(self.label(&vpath(&["tls", "acme", key]), "expected a name like `ACME_EAB_HMAC`"))
                        .help("give the NAME of the variable that holds the value: berth.toml is committed, secrets never are");
                    self.push(d);
                }
            }
            if acme.eab_kid_env.is_some() != acme.eab_hmac_env.is_some() {
                let d = Diagnostic::error(
                    "tls-acme-eab",
                    "tls.acme: an external account binding needs both eab_kid_env and eab_hmac_env",
                )
                .at(self.label(&vpath(&["tls", "acme"]), "one of the two is missing"))
                .help("the CA gives a key id and an HMAC key together");
                self.push(d);
            }
            if let Some(r) = &acme.root_ca
                && !SAFE_PATH.is_match(r)
            {
                let d = Diagnostic::error(
                    "tls-path",
                    format!(
                        "tls.acme.root_ca `{}` is not a plain path",
                        r.escape_debug()
                    ),
                )
                .at(self.label(
                    &vpath(&["tls", "acme", "root_ca"]),
                    "expected letters, digits, `._+@-` and `/`",
                ));
                self.push(d);
            }
        }
        for (pname, product) in &self.m.products {
            if let Some(t) = &product.tls {
                for (key, v) in [("cert", &t.cert), ("key", &t.key)] {
                    if let Some(v) = v
                        && !SAFE_PATH.is_match(v)
                    {
                        let d = Diagnostic::error("tls-path", format!("products.{pname}.tls.{key} `{}` is not a plain path", v.escape_debug()))
                            .at(self.label(&vpath(&["products", pname, "tls", key]), "expected letters, digits, `._+@-` and `/`"))
                            .help("the path is read by berth and its copy served by nginx; rename directories with spaces, quotes or `$`");
                        self.push(d);
                    }
                }
            }
            let mode = self.m.tls_mode(pname);
            if mode == crate::TlsMode::Acme && product.domains.len() > 100 {
                let d = Diagnostic::error("tls-too-many-names", format!("`{pname}` has {} domains; one ACME certificate names at most 100", product.domains.len()))
                    .at(self.label(&vpath(&["products", pname, "domains"]), "more than 100 names"))
                    .help("split the product, or bring a certificate with `[products.<name>.tls] mode = \"files\"`");
                self.push(d);
            }
        }
    }

    fn paths(&mut self) {
        let mut owned: Vec<(String, String, GlobMatcher, Vec<String>)> = Vec::new();
        for (pname, product) in &self.m.products {
            for (i, pat) in product.paths.iter().enumerate() {
                let path = vpath(&["products", pname, "paths", &i.to_string()]);
                let Some(matcher) = self.glob(pat, &path) else {
                    continue;
                };
                for (other, opat, omatcher, opath) in &owned {
                    if other == pname {
                        continue;
                    }
                    if globs_overlap(pat, &matcher, opat, omatcher) {
                        let d = Diagnostic::error(
                            "path-overlap",
                            format!("path `{pat}` of `{pname}` overlaps `{opat}` owned by `{other}`"),
                        )
                        .at(self.label(&path, ""))
                        .related(self.label(opath, format!("owned by {other}")))
                        .help("a path belongs to one product; move code used by several products into a [shared.<group>]");
                        self.out.push(d);
                    }
                }
                owned.push((pname.clone(), pat.clone(), matcher, path));
            }
        }
        for (group, g) in &self.m.shared {
            for (i, pat) in g.paths.iter().enumerate() {
                self.glob(pat, &vpath(&["shared", group, "paths", &i.to_string()]));
            }
        }
        for (i, pat) in self.m.secret_scan.exclude.iter().enumerate() {
            self.glob(pat, &vpath(&["secret_scan", "exclude", &i.to_string()]));
        }
    }

    fn glob(&mut self, pat: &str, path: &[String]) -> Option<GlobMatcher> {
        match compile_glob(pat) {
            Ok(m) => Some(m),
            Err(e) => {
                let d =
                    Diagnostic::error("glob-invalid", format!("`{pat}` is not a valid glob: {e}"))
                        .at(self.label(path, ""))
                        .help("globs are relative to berth.toml, like `apps/bestays/**`");
                self.push(d);
                None
            }
        }
    }

    fn aliases(&mut self) {
        let mut seen: FirstSeen<String> = FirstSeen::new();
        for pname in self.m.products.keys() {
            seen.insert(pname.clone(), pname.clone(), vpath(&["products", pname]));
        }
        for (pname, product) in &self.m.products {
            for (i, alias) in product.aliases.iter().enumerate() {
                let path = vpath(&["products", pname, "aliases", &i.to_string()]);
                if !SLUG.is_match(alias) {
                    let d = Diagnostic::error("alias-invalid", format!("alias `{alias}` of `{pname}` is not a lowercase word"))
                        .at(self.label(&path, ""))
                        .help("aliases are matched as whole words of task slugs (`login-bestays`), so use lowercase letters and digits");
                    self.push(d);
                }
                if alias.len() < 3 {
                    let d = Diagnostic::warning("alias-short", format!("alias `{alias}` of `{pname}` is very short"))
                        .at(self.label(&path, ""))
                        .help(format!("a task slug word like `{alias}` (`TASK-5-{alias}-index`) would name `{pname}` by accident; prefer a longer alias"));
                    self.push(d);
                }
                if alias == pname {
                    continue;
                }
                match seen.insert(alias.clone(), pname.clone(), path.clone()) {
                    Some((first, _)) if first == pname => {}
                    Some((first, fpath)) => {
                        let what = if alias == first {
                            "the name"
                        } else {
                            "an alias"
                        };
                        let d = Diagnostic::error(
                            "alias-collision",
                            format!("alias `{alias}` of `{pname}` is also {what} of `{first}`"),
                        )
                        .at(self.label(&path, ""))
                        .related(self.src.key_label(&p(fpath), format!("`{first}`")))
                        .help(
                            "a task slug must name exactly one product; remove or rename the alias",
                        );
                        self.push(d);
                    }
                    None => {}
                }
            }
        }
    }

    fn services(&mut self) {
        for (pname, product) in &self.m.products {
            for (sname, svc) in &product.services {
                let base = ["products", pname.as_str(), "services", sname.as_str()];
                let at = |k: &str| {
                    let mut v = vpath(&base);
                    v.push(k.to_string());
                    v
                };
                let owner = format!("{pname}.{sname}");
                if svc.build.is_some() && svc.image.is_some() {
                    let d = Diagnostic::error(
                        "service-source",
                        format!("{owner} has both `build` and `image`"),
                    )
                    .at(self.label(&at("image"), ""))
                    .help("keep `build` to build from source, or `image` to run a prebuilt image");
                    self.push(d);
                }
                if svc.build.is_none() && svc.image.is_none() && svc.command.is_none() {
                    let d = Diagnostic::error("service-source", format!("{owner} has no `build`, `image` or `command`"))
                        .at(self.src.key_label(&base, ""))
                        .help("add `build = { context = \"apps/server\" }`, `image = \"...\"`, or `command = \"...\"` for the local runtime");
                    self.push(d);
                }
                if let Some(h) = &svc.health {
                    let mut hp = at("health");
                    hp.push("path".into());
                    if !h.path.starts_with('/') {
                        let d = Diagnostic::error(
                            "health-path",
                            format!(
                                "health path `{}` of {owner} does not start with `/`",
                                h.path.escape_debug()
                            ),
                        )
                        .at(self.label(&hp, ""))
                        .help(format!("write it as `/{}`", h.path.trim_start_matches('/')));
                        self.push(d);
                    } else if !URL_PATH.is_match(&h.path) {
                        let d = Diagnostic::error(
                            "health-path",
                            format!(
                                "health path `{}` of {owner} is not a plain URL path",
                                h.path.escape_debug()
                            ),
                        )
                        .at(self.label(&hp, "expected `/` then letters, digits and `._~%+,:@=/?-`"))
                        .help("the path goes into the compose healthcheck command and the HTTP probe's request line: percent-encode anything else (a space is %20)");
                        self.push(d);
                    }
                    if h.timeout >= h.deadline {
                        let mut hp = at("health");
                        hp.push("timeout".into());
                        let d = Diagnostic::error(
                            "health-timing",
                            format!("health timeout ({}) of {owner} is not shorter than its deadline ({})", h.timeout, h.deadline),
                        )
                        .at(self.label(&hp, ""))
                        .help("the deadline bounds the whole wait for a healthy deploy; it must allow several probes");
                        self.push(d);
                    }
                    if svc.port.is_none() {
                        let d = Diagnostic::error(
                            "health-port",
                            format!("{owner} has a health check but no `port` to probe"),
                        )
                        .at(self.src.label(&p(&at("health")), ""))
                        .help("add `port = <the port the service listens on>`");
                        self.push(d);
                    }
                }
                if svc.host_port.is_some() && svc.port.is_none() {
                    let d = Diagnostic::error(
                        "host-port-without-port",
                        format!("{owner} publishes `host_port` but has no `port`"),
                    )
                    .at(self.label(&at("host_port"), ""))
                    .help("add `port = <container port>`; host_port maps to it");
                    self.push(d);
                }
                let mut names: HashMap<&str, Vec<String>> = HashMap::new();
                for (k, _) in &svc.env {
                    let mut e = at("env");
                    e.push(k.clone());
                    if !ENV_NAME.is_match(k) {
                        let d = Diagnostic::error(
                            "env-name",
                            format!("`{k}` in {owner} is not an environment variable name"),
                        )
                        .at(self.src.key_label(&p(&e), ""))
                        .help("use letters, digits and underscores");
                        self.push(d);
                    }
                    names.insert(k, e);
                }
                for (i, s) in svc.secrets.iter().enumerate() {
                    let mut sp = at("secrets");
                    sp.push(i.to_string());
                    if !ENV_NAME.is_match(s) {
                        let d = Diagnostic::error("secret-name", format!("secret `{s}` in {owner} is not an environment variable name"))
                            .at(self.label(&sp, ""))
                            .help("list the variable's name here (e.g. `CLERK_SECRET_KEY`); its value goes in the product's secret file");
                        self.push(d);
                    }
                    if let Some(epath) = names.get(s.as_str()) {
                        let d = Diagnostic::error(
                            "secret-also-env",
                            format!("`{s}` of {owner} is both a plain env var and a secret"),
                        )
                        .at(self.label(&sp, ""))
                        .related(self.src.key_label(&p(epath), "plain value here"))
                        .help(
                            "remove it from `env`; secrets are read from the product's secret file",
                        );
                        self.push(d);
                    }
                }
            }
        }
    }

    /// What the local runtime runs: `command`, `migrate` and `build_command` are shell
    /// text for `sh -c` (the same shell for all three), run in `workdir`, which must be a
    /// directory of the repository (checked when berth.toml is a file on disk).
    fn process_commands(&mut self) {
        let file = std::path::Path::new(&self.src.file);
        let root = file
            .is_file()
            .then(|| file.parent().map(std::path::Path::to_path_buf))
            .flatten()
            .map(|d| {
                if d.as_os_str().is_empty() {
                    ".".into()
                } else {
                    d
                }
            });
        for (pname, product) in &self.m.products {
            for (sname, svc) in &product.services {
                let owner = format!("{pname}.{sname}");
                let at = |k: &str| vpath(&["products", pname, "services", sname, k]);
                for (key, value) in [
                    ("command", &svc.command),
                    ("migrate", &svc.migrate),
                    ("build_command", &svc.build_command),
                ] {
                    let Some(v) = value else { continue };
                    if v.trim().is_empty() {
                        let d = Diagnostic::error(
                            "command-empty",
                            format!("`{key}` of {owner} is empty"),
                        )
                        .at(self.label(&at(key), ""))
                        .help(format!("write the shell command to run, or remove `{key}`"));
                        self.push(d);
                    } else if v.contains('\0') {
                        let d = Diagnostic::error(
                            "command-invalid",
                            format!("`{key}` of {owner} holds a NUL character"),
                        )
                        .at(self.label(&at(key), ""))
                        .help("a command line cannot hold NUL; remove it");
                        self.push(d);
                    }
                }
                let Some(w) = &svc.workdir else { continue };
                let path = std::path::Path::new(w);
                let escapes = path.components().any(|c| {
                    !matches!(
                        c,
                        std::path::Component::Normal(_) | std::path::Component::CurDir
                    )
                });
                if w.is_empty() || escapes || w.chars().any(char::is_control) {
                    let d = Diagnostic::error(
                        "workdir-invalid",
                        format!("workdir `{w}` of {owner} is not a relative path inside the repository"),
                    )
                    .at(self.label(&at("workdir"), ""))
                    .help("write it relative to berth.toml's directory, without `..`, like `apps/server`");
                    self.push(d);
                    continue;
                }
                let Some(root) = &root else { continue };
                let dir = root.join(path);
                let inside = match (dir.canonicalize(), root.canonicalize()) {
                    (Ok(d), Ok(r)) => d.is_dir().then_some(d.starts_with(r)),
                    _ => None,
                };
                match inside {
                    Some(true) => {}
                    Some(false) => {
                        let d = Diagnostic::error(
                            "workdir-invalid",
                            format!("workdir `{w}` of {owner} leads outside the repository (through a symlink)"),
                        )
                        .at(self.label(&at("workdir"), ""))
                        .help("point it at a directory of the repository itself");
                        self.push(d);
                    }
                    None => {
                        let d = Diagnostic::error(
                            "workdir-missing",
                            format!("workdir `{w}` of {owner} is not a directory of the repository"),
                        )
                        .at(self.label(&at("workdir"), ""))
                        .help("create and commit it, or fix the path (relative to berth.toml's directory)");
                        self.push(d);
                    }
                }
            }
        }
    }

    fn shared_refs(&mut self) {
        for (pname, product) in &self.m.products {
            for (i, g) in product.depends_on_shared.iter().enumerate() {
                if !self.m.shared.contains_key(g) {
                    let known: Vec<_> = self.m.shared.keys().map(|k| format!("`{k}`")).collect();
                    let help = if known.is_empty() {
                        format!("define it: [shared.{g}] paths = [\"...\"]")
                    } else {
                        format!("known groups: {}", known.join(", "))
                    };
                    let d = Diagnostic::error(
                        "unknown-shared-group",
                        format!("`{pname}` depends on shared group `{g}`, which is not defined"),
                    )
                    .at(self.label(
                        &vpath(&["products", pname, "depends_on_shared", &i.to_string()]),
                        "",
                    ))
                    .help(help);
                    self.push(d);
                }
            }
        }
    }

    fn project(&mut self) {
        if let Some(f) = &self.m.project.fallback_product
            && !f.is_empty()
            && !self.m.products.contains_key(f)
        {
            let d = Diagnostic::error(
                "unknown-fallback",
                format!("fallback_product `{f}` is not a product"),
            )
            .at(self.src.label(&["project", "fallback_product"], ""))
            .help(format!("products: {}", self.product_list()));
            self.push(d);
        }
    }

    fn serve(&mut self) {
        let sv = &self.m.serve;
        if sv.listen.parse::<std::net::SocketAddr>().is_err() {
            let d = Diagnostic::error(
                "serve-listen",
                format!(
                    "serve.listen `{}` is not an address like 127.0.0.1:9400",
                    sv.listen
                ),
            )
            .at(self.label(&vpath(&["serve", "listen"]), "expected IP:PORT"));
            self.push(d);
        }
        if let Some(env) = &sv.token_env
            && !NOTIFY_ENV.is_match(env)
        {
            let d = Diagnostic::error(
                "serve-token-env",
                "serve.token_env must name an environment variable, not hold the token",
            )
            .at(masked_label(
                self.label(
                    &vpath(&["serve", "token_env"]),
                    "expected an upper-case variable name",
                ),
                env,
            ));
            self.push(d);
        }
    }

    /// `[deploy] standby` and each product's override: at most a day (a standby
    /// holds its memory the whole time).
    fn standby(&mut self) {
        let mut values = vec![(vpath(&["deploy", "standby"]), self.m.deploy.standby)];
        for (name, p) in &self.m.products {
            if let Some(s) = p.deploy.as_ref().and_then(|d| d.standby) {
                values.push((vpath(&["products", name, "deploy", "standby"]), s));
            }
        }
        for (path, s) in values {
            if s.0 > crate::model::MAX_STANDBY {
                let d = Diagnostic::error(
                    "standby-too-long",
                    format!("standby `{s}` is longer than a day: the old slot would hold its memory that long"),
                )
                .at(self.label(&path, "at most \"24h\""))
                .help("a few minutes covers a rollback after a bad deploy; write \"0\" to stop the old slot right after its drain");
                self.push(d);
            }
        }
    }

    /// The PostgreSQL limits belong to a product's role: a service cannot set them, and a
    /// statement timeout under a millisecond would be 0 (no timeout) on the server.
    fn limits(&mut self) {
        let mut layers: Vec<(Vec<String>, &crate::limits::Limits)> = Vec::new();
        let mut services: Vec<(Vec<String>, &crate::limits::Limits)> = Vec::new();
        if let Some(l) = &self.m.limits {
            layers.push((vpath(&["limits"]), l));
        }
        for (pname, prod) in &self.m.products {
            if let Some(l) = &prod.limits {
                layers.push((vpath(&["products", pname, "limits"]), l));
                if l.enforce.is_some() {
                    let d = Diagnostic::error(
                        "limits-enforce-on-product",
                        format!("{pname}: `enforce` is set for every product, in [limits]"),
                    )
                    .at(self.src.key_label(
                        &["products", pname, "limits", "enforce"],
                        "set on a product",
                    ))
                    .help("move it to [limits]");
                    self.push(d);
                }
            }
            for (sname, s) in &prod.services {
                let Some(l) = &s.limits else { continue };
                services.push((vpath(&["products", pname, "services", sname, "limits"]), l));
                for (key, set) in [
                    ("db_connections", l.db_connections.is_some()),
                    ("statement_timeout", l.statement_timeout.is_some()),
                    ("enforce", l.enforce.is_some()),
                ] {
                    if set {
                        let mut path = vpath(&["products", pname, "services", sname, "limits"]);
                        path.push(key.to_string());
                        let d = Diagnostic::error(
                            "limits-db-on-service",
                            if key == "enforce" {
                                format!("{pname}.{sname}: `enforce` is set for every product, in [limits]")
                            } else {
                                format!("{pname}.{sname}: `{key}` limits the product's PostgreSQL role, not one service")
                            },
                        )
                        .at(self.src.key_label(&p(&path), "set on a service"))
                        .help(if key == "enforce" {
                            "move it to [limits]".to_string()
                        } else {
                            format!("move it to [products.{pname}.limits] (or [limits] for every product)")
                        });
                        self.push(d);
                    }
                }
            }
        }
        let swarm = self.m.deploy.runtime == crate::model::RuntimeKind::Swarm;
        for (path, l) in layers.iter().chain(&services) {
            if swarm && l.cpu_priority == Some(crate::limits::CpuPriority::Background) {
                let mut path = path.clone();
                path.push("cpu_priority".into());
                let d = Diagnostic::error(
                    "limits-background-on-swarm",
                    "cpu_priority = \"background\" cannot be applied by the swarm runtime: a swarm service has no CPU weight",
                )
                .at(self.label(&path, "not on swarm"))
                .help("remove it (its `cpus` stays the service's ceiling), or run the product on the local, compose or Kubernetes runtime");
                self.push(d);
            }
        }
        for (path, l) in layers {
            if let Some(t) = l.statement_timeout
                && t.0 < std::time::Duration::from_millis(1)
            {
                let mut path = path.clone();
                path.push("statement_timeout".into());
                let d = Diagnostic::error(
                    "limits-statement-timeout",
                    format!("statement_timeout `{t}` is under a millisecond (PostgreSQL would run statements with no timeout)"),
                )
                .at(self.label(&path, "too short"))
                .help("write at least \"1ms\", e.g. \"30s\"");
                self.push(d);
            }
        }
    }

    fn backup(&mut self) {
        let b = &self.m.backup;
        let mut schedules = vec![(vpath(&["backup", "schedule"]), b.schedule.clone())];
        let mut recipients: Vec<(Vec<String>, usize, String)> = b
            .recipients
            .iter()
            .enumerate()
            .map(|(i, r)| (vpath(&["backup", "recipients"]), i, r.clone()))
            .collect();
        for (name, p) in &self.m.products {
            if let Some(o) = &p.backup {
                if let Some(s) = &o.schedule {
                    schedules.push((vpath(&["products", name, "backup", "schedule"]), s.clone()));
                }
                for (i, r) in o.recipients.iter().flatten().enumerate() {
                    recipients.push((
                        vpath(&["products", name, "backup", "recipients"]),
                        i,
                        r.clone(),
                    ));
                }
                if o.enabled == Some(true) && p.database.is_none() {
                    let d = Diagnostic::error(
                        "backup-nothing",
                        format!("product `{name}` enables backups but has no database"),
                    )
                    .at(self.label(&vpath(&["products", name, "backup", "enabled"]), ""))
                    .help("a backup is of the product's database (its Redis keys go beside it): add [products.<name>.database]");
                    self.push(d);
                }
            }
        }
        for (path, s) in schedules {
            if crate::parse_daily_time(&s).is_none() {
                let d = Diagnostic::error(
                    "backup-schedule",
                    format!("backup schedule `{s}` is not a daily UTC time like `03:00`"),
                )
                .at(self.label(&path, "expected HH:MM (00:00-23:59)"));
                self.push(d);
            }
        }
        for (path, i, r) in recipients {
            let ok = r.starts_with("age1")
                && r.len() > 50
                && r[4..]
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
            if !ok {
                let mut path = path;
                path.push(i.to_string());
                let d = Diagnostic::error(
                    "backup-recipient",
                    format!("backup recipient `{r}` is not an age public key"),
                )
                .at(self.label(&path, "expected `age1...` (see `age-keygen -y`)"));
                self.push(d);
            }
        }
        if let Some(o) = &b.offsite {
            if let Err(why) = crate::model::check_offsite_remote(&o.remote) {
                let d = Diagnostic::error(
                    "backup-offsite-remote",
                    format!("off-site remote `{}` is not usable: {why}", o.remote.escape_debug()),
                )
                .at(self.label(&vpath(&["backup", "offsite", "remote"]), "expected `<rclone remote>:<path>`"))
                .help("name a remote defined in rclone's config file (`rclone config`), e.g. `offsite:berth-backups`; credentials stay in that file, never in berth.toml");
                self.push(d);
            }
            if let Some(c) = &o.config
                && (!c.starts_with('/') || c.chars().any(char::is_control))
            {
                let d = Diagnostic::error(
                    "backup-offsite-config",
                    format!("rclone config path `{}` is not an absolute path", c.escape_debug()),
                )
                .at(self.label(&vpath(&["backup", "offsite", "config"]), "expected an absolute path outside the repository"))
                .help("keep rclone's config (it holds the credentials) outside the repository, e.g. /etc/berth/rclone.conf");
                self.push(d);
            }
        }
        if !(1..=19).contains(&b.level) {
            let d = Diagnostic::error(
                "backup-level",
                format!("backup level {} is out of range", b.level),
            )
            .at(self.label(&vpath(&["backup", "level"]), "zstd levels run 1-19"));
            self.push(d);
        }
    }

    fn product_list(&self) -> String {
        let v: Vec<_> = self.m.products.keys().map(|k| format!("`{k}`")).collect();
        if v.is_empty() {
            "none defined".into()
        } else {
            v.join(", ")
        }
    }

    fn conventions(&mut self) {
        let c = &self.m.conventions;
        for (key, pat, groups) in [
            ("task_pattern", &c.task_pattern, &["slug"][..]),
            ("story_pattern", &c.story_pattern, &[][..]),
            ("branch_pattern", &c.branch_pattern, &[][..]),
        ] {
            let path = vpath(&["conventions", key]);
            match Regex::new(pat) {
                Err(e) => {
                    let msg = e.to_string();
                    let last = msg.lines().last().unwrap_or("").trim().to_string();
                    let d = Diagnostic::error(
                        "regex-invalid",
                        format!("conventions.{key} is not a valid regex: {last}"),
                    )
                    .at(self.label(&path, ""));
                    self.push(d);
                }
                Ok(re) => {
                    for g in groups {
                        if !re.capture_names().flatten().any(|n| n == *g) {
                            let d = Diagnostic::error(
                                "regex-group",
                                format!("conventions.{key} has no `(?P<{g}>...)` group"),
                            )
                            .at(self.label(&path, ""))
                            .help(format!(
                                "berth reads the product from the `{g}` group, e.g. `{}`",
                                crate::model::DEFAULT_TASK_PATTERN
                            ));
                            self.push(d);
                        }
                    }
                }
            }
        }
    }

    fn infra(&mut self) {
        for (kind, infra) in [
            ("postgres", &self.m.infra.postgres),
            ("redis", &self.m.infra.redis),
        ] {
            let Some(i) = infra else { continue };
            let at = |k: &str| vpath(&["infra", kind, k]);
            match i.mode {
                InfraMode::External => {
                    if i.admin_url_env.is_none() {
                        let d = Diagnostic::error("infra-external", format!("infra.{kind} is external but has no `admin_url_env`"))
                            .at(self.label(&at("mode"), ""))
                            .help(format!("name the environment variable that holds the admin URL, e.g. admin_url_env = \"BERTH_{}_ADMIN_URL\"", kind.to_uppercase()));
                        self.push(d);
                    }
                    for k in ["image", "port"] {
                        let set = if k == "image" {
                            i.image.is_some()
                        } else {
                            i.port.is_some()
                        };
                        if set {
                            let d = Diagnostic::error(
                                "infra-external",
                                format!("infra.{kind}.{k} only applies to mode = \"container\""),
                            )
                            .at(self.label(&at(k), ""))
                            .help("remove it, or set mode = \"container\"");
                            self.push(d);
                        }
                    }
                }
                InfraMode::Container => {
                    if i.admin_url_env.is_some() {
                        let d = Diagnostic::error(
                            "infra-container",
                            format!(
                                "infra.{kind}.admin_url_env only applies to mode = \"external\""
                            ),
                        )
                        .at(self.label(&at("admin_url_env"), ""))
                        .help("remove it, or set mode = \"external\"");
                        self.push(d);
                    }
                }
            }
            if let Some(env) = &i.admin_url_env
                && !ENV_NAME.is_match(env)
            {
                let d = Diagnostic::error("infra-admin-url", format!("infra.{kind}.admin_url_env must name an environment variable, not hold a URL"))
                    .at(masked_label(self.label(&at("admin_url_env"), ""), env))
                    .help(format!("export the URL as e.g. BERTH_{}_ADMIN_URL and write admin_url_env = \"BERTH_{}_ADMIN_URL\"", kind.to_uppercase(), kind.to_uppercase()));
                self.push(d);
            }
        }
    }

    /// Services in containers: what `public` exposes, and where they look for the
    /// database and Redis (`localhost` inside a container is the container).
    fn containers(&mut self) {
        for (pname, product) in &self.m.products {
            for (sname, svc) in &product.services {
                if svc.public && svc.port.is_none() {
                    let d = Diagnostic::error(
                        "service-public",
                        format!("{pname}.{sname} is `public` but has no `port` to publish"),
                    )
                    .at(self.label(
                        &vpath(&["products", pname, "services", sname, "public"]),
                        "",
                    ))
                    .help("remove `public`, or add `port = <the port the service listens on>`");
                    self.push(d);
                }
            }
        }
        for (kind, infra) in [
            ("postgres", &self.m.infra.postgres),
            ("redis", &self.m.infra.redis),
        ] {
            let Some(host) = infra.as_ref().and_then(|i| i.app_host.as_deref()) else {
                continue;
            };
            if !crate::model::is_loopback_host(host) {
                continue;
            }
            let in_containers: Vec<&str> = self
                .m
                .products
                .keys()
                .filter(|p| self.m.in_containers(p))
                .map(String::as_str)
                .collect();
            if in_containers.is_empty() {
                continue;
            }
            let d = Diagnostic::warning(
                "app-host-loopback",
                format!(
                    "infra.{kind}.app_host `{host}` is the container itself for the containers of {}",
                    in_containers.join(", ")
                ),
            )
            .at(self.label(&vpath(&["infra", kind, "app_host"]), ""))
            .help(format!(
                "remove app_host: containers then reach the host at {} (extra_hosts: host-gateway); `berth provision` checks the connection from inside a container",
                crate::model::HOST_GATEWAY_NAME
            ));
            self.push(d);
        }
    }

    /// `runtime = "swarm"` and `[deploy.swarm]`: a registry, a manager named one way,
    /// products and services that exist, placement labels as `key=value`, at least one
    /// replica, and no two tasks of a service with a port on one node (docs/swarm.md:
    /// the host-mode port would deadlock the second).
    fn swarm(&mut self) {
        use crate::model::RuntimeKind;
        let Some(sw) = &self.m.deploy.swarm else {
            if self.m.deploy.runtime == RuntimeKind::Swarm {
                let d = Diagnostic::error(
                    "swarm-settings",
                    "runtime = \"swarm\" needs [deploy.swarm]: the registry images are pushed to",
                )
                .at(self.label(&vpath(&["deploy", "runtime"]), ""))
                .help("add [deploy.swarm] with registry = \"host:port\" (and manager = \"<DOCKER_HOST of a manager>\" unless berth's DOCKER_HOST is one)");
                self.push(d);
            }
            return;
        };
        if sw.registry.trim().is_empty()
            || sw.registry.chars().any(|c| c.is_whitespace() || c == '@')
        {
            let d = Diagnostic::error(
                "swarm-registry",
                format!("deploy.swarm.registry `{}` is not a registry address", sw.registry),
            )
            .at(self.label(&vpath(&["deploy", "swarm", "registry"]), "expected host:port"))
            .help("the registry every node pulls from, e.g. registry.internal:5000 (credentials go through `docker login`, never here)");
            self.push(d);
        }
        if sw.manager.is_some() && sw.context.is_some() {
            let d = Diagnostic::error(
                "swarm-manager",
                "deploy.swarm sets both manager and context: name the manager one way",
            )
            .at(self.label(&vpath(&["deploy", "swarm", "context"]), ""))
            .help("keep manager (a DOCKER_HOST value) or context (a docker context), not both");
            self.push(d);
        }
        if let Some(m) = &sw.manager
            && !["unix://", "tcp://", "ssh://", "npipe://"]
                .iter()
                .any(|s| m.starts_with(s))
        {
            let d = Diagnostic::error(
                "swarm-manager",
                format!("deploy.swarm.manager `{m}` is not a DOCKER_HOST value"),
            )
            .at(self.label(
                &vpath(&["deploy", "swarm", "manager"]),
                "expected unix://, tcp:// or ssh://",
            ))
            .help("e.g. ssh://admin@manager.internal or unix:///run/docker.sock");
            self.push(d);
        }
        for (pname, sp) in &sw.products {
            let Some(product) = self.m.products.get(pname) else {
                let d = Diagnostic::error(
                    "swarm-product",
                    format!("deploy.swarm.products.{pname} is not a product"),
                )
                .at(self.label(&vpath(&["deploy", "swarm", "products", pname]), ""))
                .help(format!("products: {}", self.product_list()));
                self.push(d);
                continue;
            };
            if let Some(l) = &sp.node_label {
                let ok = l.split_once('=').is_some_and(|(k, v)| {
                    !k.is_empty()
                        && !v.is_empty()
                        && l.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "._-=".contains(c))
                        && l.matches('=').count() == 1
                });
                if !ok {
                    let d = Diagnostic::error(
                        "swarm-node-label",
                        format!("deploy.swarm.products.{pname}.node_label `{l}` is not key=value"),
                    )
                    .at(self.label(
                        &vpath(&["deploy", "swarm", "products", pname, "node_label"]),
                        "expected key=value",
                    ))
                    .help("a node label, e.g. berth.product=bestays (docker node update --label-add berth.product=bestays NODE)");
                    self.push(d);
                }
            }
            for (sname, n) in &sp.replicas {
                let path = vpath(&["deploy", "swarm", "products", pname, "replicas", sname]);
                if !product.services.contains_key(sname) {
                    let d = Diagnostic::error(
                        "swarm-replicas",
                        format!("{pname} has no service `{sname}`"),
                    )
                    .at(self.label(&path, ""))
                    .help(format!(
                        "services of {pname}: {}",
                        product
                            .services
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                    self.push(d);
                } else if *n == 0 {
                    let d = Diagnostic::error(
                        "swarm-replicas",
                        format!("{pname}.{sname} runs 0 tasks"),
                    )
                    .at(self.label(&path, "expected at least 1"))
                    .help("remove the service instead, or run at least one task");
                    self.push(d);
                }
            }
        }
    }

    /// `[notify]`: secrets only by environment variable name; URLs are http(s) without credentials.
    fn notify(&mut self) {
        let Some(n) = &self.m.notify else { return };
        let mut envs: Vec<(Vec<String>, &str)> = Vec::new();
        let mut urls: Vec<(Vec<String>, &str)> = Vec::new();
        if let Some(w) = &n.webhook {
            envs.push((vpath(&["notify", "webhook", "url_env"]), &w.url_env));
        }
        if let Some(g) = &n.grafana {
            envs.push((vpath(&["notify", "grafana", "token_env"]), &g.token_env));
            urls.push((vpath(&["notify", "grafana", "url"]), &g.url));
        }
        if let Some(se) = &n.sentry {
            envs.push((vpath(&["notify", "sentry", "token_env"]), &se.token_env));
            urls.push((vpath(&["notify", "sentry", "url"]), &se.url));
            if se.org.trim().is_empty() {
                let d = Diagnostic::error("notify-sentry", "notify.sentry.org is empty")
                    .at(self.label(&vpath(&["notify", "sentry", "org"]), ""))
                    .help("write the organisation slug from the Sentry URL");
                self.push(d);
            }
        }
        for (path, env) in envs {
            if !NOTIFY_ENV.is_match(env) {
                let key = path.last().cloned().unwrap_or_default();
                let d = Diagnostic::error(
                    "notify-env",
                    format!(
                        "notify `{key}` must name an environment variable (upper case), not hold the secret"
                    ),
                )
                .at(masked_label(self.label(&path, "not a variable name"), env))
                .help("export the value as e.g. BERTH_NOTIFY_TOKEN and write the variable's name here");
                self.push(d);
            }
        }
        for (path, url) in urls {
            let rest = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"));
            let host = rest.map(|r| r.split('/').next().unwrap_or(""));
            let problem = match host {
                _ if url.chars().any(|c| c.is_whitespace() || breaks_a_line(c)) => {
                    Some("holds spaces or control characters")
                }
                None => Some("is not an http(s) URL"),
                Some(h) if h.contains('@') => {
                    Some("holds credentials; name them in token_env instead")
                }
                Some("") => Some("has no host"),
                Some(_) => None,
            };
            if let Some(why) = problem {
                let d = Diagnostic::error("notify-url", format!("this URL {why}"))
                    .at(masked_label(self.label(&path, why), url))
                    .help("write the base URL, e.g. https://grafana.example.com");
                self.push(d);
            }
        }
    }

    /// One allow-list per kind of value that reaches a rendered file or a command,
    /// applied to every field of that kind, so no value can change the structure of
    /// what it is pasted into (a compose key, an nginx block, an ACL rule, a shell word).
    /// `command`, `migrate`, `health.command` and the `[proxy]` commands are the
    /// user's own command lines by design; env values may hold any text (renderers
    /// escape them).
    fn allow_lists(&mut self) {
        for (kind, infra) in [
            ("postgres", &self.m.infra.postgres),
            ("redis", &self.m.infra.redis),
        ] {
            let Some(i) = infra else { continue };
            if let Some(image) = &i.image {
                self.image(
                    image,
                    &vpath(&["infra", kind, "image"]),
                    &format!("infra.{kind}"),
                );
            }
            if let Some(host) = &i.app_host
                && !HOST.is_match(host)
            {
                let d = Diagnostic::error(
                    "infra-app-host",
                    format!("infra.{kind}.app_host `{}` is not a host name or IP address", host.escape_debug()),
                )
                .at(self.label(&vpath(&["infra", kind, "app_host"]), "expected a host like `postgres`, `db.internal` or `172.17.0.1`"))
                .help("it is written into the products' connection URLs; give the bare host, without scheme, port or credentials");
                self.push(d);
            }
        }
        if let Some(px) = &self.m.proxy {
            if px.read_timeout.0 < std::time::Duration::from_secs(1) {
                let d = Diagnostic::error(
                    "proxy-read-timeout",
                    format!(
                        "proxy.read_timeout `{}` is shorter than a second: nginx would give up on answers that are merely slow",
                        px.read_timeout
                    ),
                )
                .at(self.label(&vpath(&["proxy", "read_timeout"]), "at least \"1s\""))
                .help("it bounds how long a request in flight on a dead address waits before nginx retries the next one; a few seconds suits a slot with several addresses, the default is 60s");
                self.push(d);
            }
            for (key, value) in [
                ("nginx_config", &px.nginx_config),
                ("certs_dir", &px.certs_dir),
            ] {
                if !SAFE_PATH.is_match(value) {
                    let d = Diagnostic::error(
                        "proxy-path",
                        format!("proxy.{key} `{}` is not a plain path", value.escape_debug()),
                    )
                    .at(self.label(&vpath(&["proxy", key]), "expected letters, digits, `._+@-` and `/`"))
                    .help("the path is written into the nginx configuration and the nginx command lines; rename directories with spaces, quotes or `$`");
                    self.push(d);
                }
            }
        }
        let name = &self.m.project.name;
        if name.trim().is_empty() || name.chars().any(breaks_a_line) {
            let d = Diagnostic::error(
                "project-name",
                "[project] name is empty or holds a line break or a control character",
            )
            .at(self.label(&vpath(&["project", "name"]), "expected one line of printable text"))
            .help("berth derives compose project, image and network names from it, and prints it on the dashboard");
            self.push(d);
        }
        for (pname, product) in &self.m.products {
            if let Some(title) = &product.display_name {
                let path = vpath(&["products", pname, "display_name"]);
                let problem = if title.trim().is_empty() {
                    Some("is empty")
                } else if title.chars().any(breaks_a_line) {
                    Some("holds a line break or a control character")
                } else if title.chars().count() > 100 {
                    Some("is longer than 100 characters")
                } else {
                    None
                };
                if let Some(why) = problem {
                    let d = Diagnostic::error(
                        "display-name",
                        format!("display name of `{pname}` {why}"),
                    )
                    .at(self.label(&path, "expected one line of printable text"))
                    .help("the display name is written into comments of the rendered nginx, compose and env files; keep it to one short line");
                    self.push(d);
                }
            }
            let mut routes: HashMap<String, (String, Vec<String>)> = HashMap::new();
            for (sname, route) in product.routes() {
                let svc = &product.services[&sname];
                let base = vpath(&["products", pname, "services", &sname]);
                let at = |k: &str| {
                    let mut v = base.clone();
                    v.push(k.to_string());
                    v
                };
                // A default route sits at the service's table.
                let rpath = if svc.route.is_some() {
                    at("route")
                } else {
                    base.clone()
                };
                if svc.route.is_some() && !ROUTE.is_match(&route) {
                    let d = Diagnostic::error(
                        "route-invalid",
                        format!("route `{}` of {pname}.{sname} is not a plain nginx location path", route.escape_debug()),
                    )
                    .at(self.label(&rpath, "expected `/` then letters, digits and `._~%!*+,:@=/-`"))
                    .help("a route is an nginx prefix location such as `/api/`; spaces, quotes, braces, `;`, `#`, `$` and newlines would change the nginx configuration");
                    self.push(d);
                    continue;
                }
                if let Some((first, fpath)) = routes.get(&route) {
                    let label = if svc.route.is_some() {
                        self.label(&rpath, "")
                    } else {
                        self.src
                            .key_label(&p(&rpath), format!("routed at `{route}` by default"))
                    };
                    let first_label = if product.services[first].route.is_some() {
                        self.label(fpath, format!("already the route of {pname}.{first}"))
                    } else {
                        self.src.key_label(
                            &p(fpath),
                            format!("{pname}.{first} is routed at `{route}` by default"),
                        )
                    };
                    let d = Diagnostic::error(
                        "route-duplicate",
                        format!("{pname}.{sname} and {pname}.{first} are both routed at `{route}`"),
                    )
                    .at(label)
                    .related(first_label)
                    .help("nginx refuses two identical locations in one server: give each service of a product its own route");
                    self.push(d);
                    continue;
                }
                routes.insert(route, (sname.clone(), rpath));
            }
            for (sname, svc) in &product.services {
                let at = |k: &[&str]| {
                    let mut v = vpath(&["products", pname, "services", sname]);
                    v.extend(k.iter().map(|s| s.to_string()));
                    v
                };
                if let Some(image) = &svc.image {
                    self.image(image, &at(&["image"]), &format!("{pname}.{sname}"));
                }
                if let Some(b) = &svc.build {
                    for k in b.args.keys() {
                        if !ENV_NAME.is_match(k) {
                            let mut a = at(&["build", "args"]);
                            a.push(k.clone());
                            let d = Diagnostic::error(
                                "build-arg-name",
                                format!("build arg `{}` of {pname}.{sname} is not a build argument name", k.escape_debug()),
                            )
                            .at(self.src.key_label(&p(&a), ""))
                            .help("use letters, digits and underscores, as the Dockerfile's `ARG` names it");
                            self.push(d);
                        }
                    }
                    let mut paths = vec![("context", &b.context)];
                    if let Some(d) = &b.dockerfile {
                        paths.push(("dockerfile", d));
                    }
                    for (key, value) in paths {
                        let outside = value.starts_with('/') || value.split('/').any(|c| c == "..");
                        if outside || !SAFE_PATH.is_match(value) {
                            let why = if outside {
                                "leaves the repository"
                            } else {
                                "is not a plain relative path"
                            };
                            let d = Diagnostic::error(
                                "build-path",
                                format!("build.{key} `{}` of {pname}.{sname} {why}", value.escape_debug()),
                            )
                            .at(self.label(&at(&["build", key]), "expected a path relative to berth.toml, of letters, digits, `._+@-` and `/`"))
                            .help("build paths are relative to berth.toml and stay inside the repository (no leading `/`, no `..`); they are written into the compose file and docker's command line");
                            self.push(d);
                        }
                    }
                }
            }
        }
    }

    fn image(&mut self, image: &str, path: &[String], owner: &str) {
        if image.len() <= 255 && IMAGE_REF.is_match(image) {
            return;
        }
        let d = Diagnostic::error(
            "image-reference",
            format!("image of {owner} `{}` is not an image reference", image.escape_debug()),
        )
        .at(self.label(path, "expected `[registry/]name[:tag][@digest]`"))
        .help("write a reference such as `postgres:15`, `ghcr.io/acme/server:1.2` or `name@sha256:<digest>`: lowercase name components, no spaces, quotes or newlines");
        self.push(d);
    }

    /// No secret value may be written in berth.toml: not in `env`, not in any string.
    fn inline_secrets(&mut self) {
        for (path, value, span) in self.src.strings() {
            if path.first().map(String::as_str) == Some("infra")
                && path.last().map(String::as_str) == Some("admin_url_env")
            {
                continue; // reported by infra() with the right advice
            }
            // Build args are named like env vars and end up in the image's history.
            let env_name = (path.len() >= 2
                && matches!(path[path.len() - 2].as_str(), "env" | "args"))
            .then(|| path[path.len() - 1].as_str());
            let hits = secrets::scan_value(&value);
            let kind = if let Some(h) = hits.first() {
                Some(h.kind.describe())
            } else if let Some(name) = env_name.filter(|n| secrets::is_secret_name(n))
                && !secrets::is_placeholder(&value)
            {
                let _ = name;
                Some(secrets::SecretKind::SecretAssignment.describe())
            } else {
                None
            };
            let Some(kind) = kind else { continue };
            let label = masked_label(
                self.src.label_span(Some(span), "secret value (masked)"),
                &value,
            );
            let owner = path.join(".");
            let build_arg = path.len() >= 2 && path[path.len() - 2] == "args";
            let help = match env_name {
                Some(_) if build_arg => "build args stay in the image's history: give the secret to the service at run time instead (`secrets = [...]` and the product's untracked secret file)".to_string(),
                Some(name) => format!(
                    "move it out of berth.toml: list `{name}` under `secrets = [...]` of the service and put the value in the product's untracked secret file"
                ),
                None => "secret values never belong in berth.toml; reference them by the name of an environment variable".into(),
            };
            let d = Diagnostic::error(
                "inline-secret",
                format!("{owner} holds {kind}: {}", secrets::mask(&value)),
            )
            .at(label)
            .help(help);
            self.push(d);
        }
    }
}

/// Replace `value` in the label's line text with its mask, so the snippet never shows it.
fn masked_label(mut label: Label, value: &str) -> Label {
    if let Some(t) = &label.line_text
        && !value.is_empty()
    {
        let masked = secrets::mask(value);
        label.line_text = Some(t.replace(value, &masked));
        label.width = masked.chars().count() + 2;
    }
    label
}

pub(crate) fn compile_glob(pat: &str) -> Result<GlobMatcher, globset::Error> {
    globset::GlobBuilder::new(&crate::glob_source(pat))
        .literal_separator(true)
        .build()
        .map(|g: Glob| g.compile_matcher())
}

/// The literal directory a glob starts with (`apps/bestays` for `apps/bestays/**`).
fn literal_base(pat: &str) -> &str {
    let Some(meta) = pat.find(['*', '?', '[', '{']) else {
        return pat;
    };
    pat[..meta].rfind('/').map_or("", |i| &pat[..i])
}

/// Could two ownership globs claim the same file? Equal patterns, or one
/// matching a path under the other's literal base.
fn globs_overlap(a: &str, am: &GlobMatcher, b: &str, bm: &GlobMatcher) -> bool {
    if a == b {
        return true;
    }
    let probe = |base: &str, m: &GlobMatcher| {
        !base.is_empty()
            && (m.is_match(base)
                || m.is_match(format!("{base}/berth-probe"))
                || m.is_match(format!("{base}/berth-probe/x")))
    };
    probe(literal_base(b), am) || probe(literal_base(a), bm)
}

/// For each tracked file, the products whose owned paths match it; files
/// claimed by two or more products are `path-overlap` errors.
/// A service's `workdir` must hold files git tracks (`files`, relative to berth.toml):
/// the local runtime runs each version from a checkout of its commit, where an
/// untracked directory does not exist.
pub fn workdirs_untracked(loaded: &Loaded, files: &[String]) -> Vec<Diagnostic> {
    let root = std::path::Path::new(&loaded.source.file)
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let mut out = Vec::new();
    for (pname, product) in &loaded.manifest.products {
        for (sname, svc) in &product.services {
            let Some(w) = &svc.workdir else { continue };
            let parts: Vec<&str> = w
                .split('/')
                .filter(|c| !c.is_empty() && *c != ".")
                .collect();
            // `.`, and paths already reported as invalid or missing.
            if parts.is_empty() || parts.contains(&"..") || !root.join(w).is_dir() {
                continue;
            }
            let prefix = format!("{}/", parts.join("/"));
            if files.iter().any(|f| f.starts_with(&prefix)) {
                continue;
            }
            let d = Diagnostic::error(
                "workdir-untracked",
                format!("workdir `{w}` of {pname}.{sname} holds no file git tracks"),
            )
            .at(loaded.source.label(&["products", pname, "services", sname, "workdir"], ""))
            .help("the local runtime runs a checkout of the deployed commit: commit the directory's files");
            out.push(d);
        }
    }
    out
}

pub fn ownership_conflicts(loaded: &Loaded, files: &[String]) -> Vec<Diagnostic> {
    let m = &loaded.manifest;
    let mut matchers = Vec::new();
    for (pname, product) in &m.products {
        for (i, pat) in product.paths.iter().enumerate() {
            if let Ok(g) = compile_glob(pat) {
                matchers.push((pname.as_str(), i, pat.as_str(), g));
            }
        }
    }
    let mut reported = std::collections::HashSet::new();
    let mut out = Vec::new();
    for f in files {
        let hits: Vec<_> = matchers
            .iter()
            .filter(|(_, _, _, g)| g.is_match(f))
            .collect();
        let Some(first) = hits.first() else { continue };
        for h in hits.iter().skip(1).filter(|h| h.0 != first.0) {
            if !reported.insert((first.0, first.1, h.0, h.1)) {
                continue;
            }
            let d = Diagnostic::error(
                "path-overlap",
                format!("tracked file `{f}` is owned by both `{}` (`{}`) and `{}` (`{}`)", first.0, first.2, h.0, h.2),
            )
            .at(loaded.source.label(&["products", h.0, "paths", &h.1.to_string()], ""))
            .related(loaded.source.label(&["products", first.0, "paths", &first.1.to_string()], format!("owned by {}", first.0)))
            .help("a path belongs to one product; narrow the globs or move the code into a [shared.<group>]");
            out.push(d);
        }
    }
    out
}

pub(crate) fn slugify(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let out = out.trim_end_matches('-').to_string();
    if out.is_empty() || !out.as_bytes()[0].is_ascii_alphabetic() {
        format!("p-{out}")
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_bases() {
        assert_eq!(literal_base("apps/bestays/**"), "apps/bestays");
        assert_eq!(literal_base("**/*.py"), "");
        assert_eq!(
            literal_base("docker/bestays.Dockerfile"),
            "docker/bestays.Dockerfile"
        );
    }

    #[test]
    fn overlap_detection() {
        let o = |a: &str, b: &str| {
            globs_overlap(a, &compile_glob(a).unwrap(), b, &compile_glob(b).unwrap())
        };
        assert!(o("apps/**", "apps/bestays/**"));
        assert!(o("apps/bestays/**", "apps/bestays/**"));
        assert!(o("apps/bestays/src/**", "apps/*/src/**"));
        assert!(!o("apps/bestays/**", "apps/realestate/**"));
        assert!(!o("products/bestays/**", "products/bestays-admin/**"));
        // A plain directory owns what is under it.
        assert!(o("products/a", "products/a/src/**"));
        assert!(
            compile_glob("products/a")
                .unwrap()
                .is_match("products/a/f.py")
        );
        assert!(
            !compile_glob("products/a")
                .unwrap()
                .is_match("products/ab/f.py")
        );
    }

    #[test]
    fn image_references() {
        for ok in [
            "postgres:15",
            "pgvector/pgvector:pg16",
            "ghcr.io/acme/server:1.2",
            "localhost:5000/x",
            "registry.example.com:443/a/b/c:v1.2.3-rc_1",
            "redis@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "a__b--c.d",
        ] {
            assert!(IMAGE_REF.is_match(ok), "{ok}");
        }
        for bad in [
            "",
            "Postgres:15",
            "postgres:15 --privileged",
            "postgres:15\"\n    privileged: true",
            "postgres:${TAG}",
            "a//b",
            "-a",
            "a:",
            "a@sha256:short",
        ] {
            assert!(!IMAGE_REF.is_match(bad), "{bad:?}");
        }
    }

    #[test]
    fn redis_prefixes() {
        for ok in ["bestays:", "p1:", "a.b.", "x_", "v-", "shop:bestays:"] {
            assert!(REDIS_PREFIX.is_match(ok), "{ok}");
        }
        for bad in ["", ":", "bestays", "*", "a*:", "a :", "a\n:", "a[1]:", "ä:"] {
            assert!(!REDIS_PREFIX.is_match(bad), "{bad:?}");
        }
        assert!(!redis_prefixes_overlap("p1:", "p10:"));
        assert!(!redis_prefixes_overlap("best:", "bestays:"));
        assert!(redis_prefixes_overlap("shop:", "shop:bestays:"));
        assert!(redis_prefixes_overlap("a:", "a:"));
    }

    #[test]
    fn routes_and_paths() {
        assert!(ROUTE.is_match("/api/v1:x@y=z+a,b!c*d~e%20/"));
        for bad in ["api/", "/a b", "/a;", "/a{", "/a\"", "/$x", "/a#b", "/a\n"] {
            assert!(!ROUTE.is_match(bad), "{bad:?}");
        }
        assert!(URL_PATH.is_match("/api/health?full=1"));
        for bad in ["/a$(x)", "/a`x`", "/a b", "/a\r\n", "/a;b", "/a&b", "/a'b"] {
            assert!(!URL_PATH.is_match(bad), "{bad:?}");
        }
        assert!(breaks_a_line('\u{2028}') && breaks_a_line('\u{202e}') && !breaks_a_line('é'));
    }

    #[test]
    fn slugs() {
        assert_eq!(slugify("Best Stays"), "best-stays");
        assert_eq!(slugify("real_estate"), "real-estate");
        assert_eq!(slugify("9lives"), "p-9lives");
    }
}

#[cfg(test)]
mod build_arg_tests {
    /// Build args: named like env vars, located by line:column, and never a secret
    /// (they stay in the image's history), masked wherever the line is shown.
    #[test]
    fn build_args_are_named_like_env_vars_and_hold_no_secret() {
        let text = r#"[project]
name = "p"

[products.a]
domains = ["a.app"]

[products.a.services.server]
build = { context = "apps/server", args = { "bad-name" = "x", GOOD = "1", KEY = "sk_live_4eC39HqLyjWDarjtT1zdp7dc" } }
port = 8000
"#;
        let Err(diags) = crate::check_str("berth.toml", text) else {
            panic!("refused")
        };
        let codes: Vec<(&str, usize, usize)> = diags
            .iter()
            .map(|d| {
                let l = d.primary.as_ref().unwrap();
                (d.code, l.line, l.column)
            })
            .collect();
        assert_eq!(
            codes,
            [("build-arg-name", 8, 45), ("inline-secret", 8, 81)],
            "{diags:#?}"
        );
        let shown = format!("{diags:?}");
        assert!(!shown.contains("4eC39HqLyjWDarjtT1zdp7dc"), "{shown}");
        // A secret-looking name with a value: refused as well.
        let named = text.replace(
            "\"bad-name\" = \"x\", GOOD = \"1\", KEY = \"sk_live_4eC39HqLyjWDarjtT1zdp7dc\"",
            "STRIPE_SECRET_KEY = \"rk_live_abcdefgh12345678\"",
        );
        let Err(diags) = crate::check_str("berth.toml", &named) else {
            panic!("refused")
        };
        assert_eq!(
            diags.iter().map(|d| d.code).collect::<Vec<_>>(),
            ["inline-secret"],
            "{diags:#?}"
        );
        let ok = text
            .replace("\"bad-name\" = \"x\", ", "")
            .replace(", KEY = \"sk_live_4eC39HqLyjWDarjtT1zdp7dc\"", "");
        let m = crate::check_str("berth.toml", &ok)
            .expect("valid")
            .0
            .manifest;
        let b = m.products["a"].services["server"].build.clone().unwrap();
        assert_eq!(b.args.get("GOOD").map(String::as_str), Some("1"));
    }
}
