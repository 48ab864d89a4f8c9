//! Rules for the proxy listen address, the derived URL schemes, database
//! extensions and `[ci]`: each value reaches a rendered file (nginx, the secret
//! file, provisioning SQL, the GitHub workflow), so each passes an allow-list.

use std::sync::LazyLock;

use regex::Regex;

use super::{Diagnostic, Validator, vpath};

/// RFC 3986 scheme grammar (lower case only).
static SCHEME: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[a-z][a-z0-9+.-]*$").unwrap());
/// An extension name: what `CREATE EXTENSION` takes as a quoted identifier, kept to
/// the characters real extensions use (`vector`, `uuid-ossp`, `postgis_topology`).
static EXTENSION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z][a-z0-9_-]{0,62}$").unwrap());
/// A crates.io version: semver with optional pre-release and build metadata.
static VERSION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$").unwrap()
});
/// An https URL without quotes, spaces, `$` or backticks (it becomes a shell word).
static HTTPS_URL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~%/+=?&:@,-]*)?$").unwrap()
});

impl Validator<'_> {
    pub(super) fn feature_fields(&mut self) {
        self.proxy_listen();
        self.url_schemes();
        self.extensions();
        self.ci();
    }

    fn proxy_listen(&mut self) {
        let Some(listen) = self.m.proxy.as_ref().and_then(|p| p.listen.as_deref()) else {
            return;
        };
        let bare = listen
            .strip_prefix('[')
            .and_then(|l| l.strip_suffix(']'))
            .unwrap_or(listen);
        if bare.parse::<std::net::IpAddr>().is_err() {
            let d = Diagnostic::error(
                "proxy-listen",
                format!("proxy.listen `{listen}` is not an IP address"),
            )
            .at(self.label(&vpath(&["proxy", "listen"]), "expected an IPv4 or IPv6 address"))
            .help("write an address without a port (the ports are http_port and https_port), e.g. `127.0.0.1`, `::1` or `0.0.0.0`; leave it out to listen on every interface");
            self.push(d);
        }
    }

    fn url_schemes(&mut self) {
        for (pname, product) in &self.m.products {
            let db = product
                .database
                .as_ref()
                .and_then(|d| d.url_scheme.as_deref());
            let redis = product.redis.as_ref().and_then(|r| r.url_scheme.as_deref());
            let mut checks = vec![
                (
                    vec!["database", "url_scheme"],
                    db,
                    "postgres",
                    "DATABASE_URL",
                ),
                (vec!["redis", "url_scheme"], redis, "redis", "REDIS_URL"),
            ];
            for (sname, svc) in &product.services {
                checks.push((
                    vec!["services", sname, "database_url_scheme"],
                    svc.database_url_scheme.as_deref(),
                    "postgres",
                    "DATABASE_URL",
                ));
                checks.push((
                    vec!["services", sname, "redis_url_scheme"],
                    svc.redis_url_scheme.as_deref(),
                    "redis",
                    "REDIS_URL",
                ));
            }
            for (key, scheme, family, var) in checks {
                let Some(scheme) = scheme else { continue };
                if SCHEME.is_match(scheme) && scheme.starts_with(family) {
                    continue;
                }
                let d = Diagnostic::error(
                    "url-scheme",
                    format!("`{pname}`: `{scheme}` is not a {family} URL scheme for {var}"),
                );
                let mut path = vec!["products", pname.as_str()];
                path.extend(key);
                let d = d
                    .at(self.label(
                        &vpath(&path),
                        format!("expected a scheme starting with `{family}`"),
                    ))
                    .help(format!(
                        "write only the scheme, lower case, without `://` (e.g. `{}`)",
                        if family == "postgres" {
                            "postgresql+asyncpg"
                        } else {
                            "rediss"
                        }
                    ));
                self.push(d);
            }
        }
    }

    fn extensions(&mut self) {
        for (pname, product) in &self.m.products {
            let Some(db) = &product.database else {
                continue;
            };
            for (i, ext) in db.extensions.iter().enumerate() {
                if EXTENSION.is_match(ext) {
                    continue;
                }
                let d = Diagnostic::error(
                    "database-extension",
                    format!("`{pname}`: `{ext}` is not a PostgreSQL extension name"),
                )
                .at(self.label(
                    &vpath(&["products", pname, "database", "extensions", &i.to_string()]),
                    "",
                ))
                .help("use the name `CREATE EXTENSION` takes: lowercase letters, digits, `_` and `-` (e.g. `vector`, `pg_trgm`, `uuid-ossp`)");
                self.push(d);
            }
        }
    }

    fn ci(&mut self) {
        let ci = &self.m.ci;
        let set: Vec<&str> = [
            ("berth_version", ci.berth_version.is_some()),
            ("berth_url", ci.berth_url.is_some()),
            ("install_command", ci.install_command.is_some()),
        ]
        .iter()
        .filter(|(_, s)| *s)
        .map(|(k, _)| *k)
        .collect();
        if set.len() > 1 {
            let d = Diagnostic::error(
                "ci-install",
                format!(
                    "[ci] sets {}: berth is installed one way",
                    set.join(" and ")
                ),
            )
            .at(self.label(&vpath(&["ci", set[1]]), ""))
            .help("keep one of berth_version, berth_url and install_command");
            self.push(d);
        }
        if let Some(v) = &ci.berth_version
            && !VERSION.is_match(v)
        {
            let d = Diagnostic::error(
                "ci-install",
                format!("ci.berth_version `{v}` is not a version"),
            )
            .at(self.label(
                &vpath(&["ci", "berth_version"]),
                "expected MAJOR.MINOR.PATCH",
            ))
            .help("write a released version of berth on crates.io, e.g. `0.1.0`");
            self.push(d);
        }
        if let Some(u) = &ci.berth_url
            && !HTTPS_URL.is_match(u)
        {
            let d = Diagnostic::error("ci-install", "ci.berth_url is not a plain https URL")
                .at(self.label(&vpath(&["ci", "berth_url"]), "expected https://host/path"))
                .help("an https:// URL of the binary, without spaces, quotes, `$` or backticks");
            self.push(d);
        }
        if let Some(c) = &ci.install_command {
            let problem = if c.trim().is_empty() {
                Some("is empty")
            } else if c.chars().any(char::is_control) {
                Some("holds a line break or control character")
            } else if c.contains("${{") {
                Some(
                    "holds a GitHub expression (`${{`), which Actions would expand into the script",
                )
            } else {
                None
            };
            if let Some(problem) = problem {
                let d = Diagnostic::error(
                    "ci-install",
                    format!("ci.install_command {problem}"),
                )
                .at(self.label(&vpath(&["ci", "install_command"]), ""))
                .help("one line of shell that puts `berth` on the PATH; read values from env, not ${{ }}");
                self.push(d);
            }
        }
    }
}
