//! Per-product HTTPS against a real ACME server: Debian's `pebble` (RFC 8555) with
//! `pebble-challtestsrv` as its DNS (every name is 127.0.0.1), validating HTTP-01
//! on berth's own nginx. Certificates are checked with `openssl s_client` against
//! the root pebble issued from, never with berth's own code.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::*;

fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} never listened on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// pebble and its DNS, started as direct children (their pids are the ones stopped).
pub struct Pebble {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pebble: Option<Child>,
    dns: Child,
}

impl Pebble {
    /// pebble validating HTTP-01 on `http_port`, issuing certificates valid for
    /// `validity` seconds, with `env` (e.g. nonce rejection) on top of no VA sleep.
    pub fn start(http_port: u16, validity: u64, env: &[(&str, &str)]) -> Self {
        Self::start_with(http_port, validity, env, None)
    }

    /// The same, requiring an external account binding with key id `eab.0`, HMAC `eab.1`.
    pub fn start_with(
        http_port: u16,
        validity: u64,
        env: &[(&str, &str)],
        eab: Option<(&str, &str)>,
    ) -> Self {
        for bin in ["pebble", "pebble-challtestsrv"] {
            assert!(
                Command::new("sh")
                    .args(["-c", &format!("command -v {bin}")])
                    .stdout(Stdio::null())
                    .status()
                    .unwrap()
                    .success(),
                "{bin} is required (Debian package `pebble`; scripts/test.sh installs it)"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        // pebble ships no certificates: a CA and a localhost certificate per run.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "berth test CA for pebble");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        let port = berth_testkit::reserve_ports(5);
        let (mgmt, dns_port, dns_mgmt, tls_port) = (port + 1, port + 2, port + 3, port + 4);
        let mut config = serde_json::json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt}"),
            "certificate": dir.path().join("cert.pem"),
            "privateKey": dir.path().join("key.pem"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validity,
        }});
        if let Some((kid, hmac)) = eab {
            config["pebble"]["externalAccountBindingRequired"] = true.into();
            config["pebble"]["externalAccountMACKeys"] = serde_json::json!({ kid: hmac });
        }
        std::fs::write(dir.path().join("pebble.json"), config.to_string()).unwrap();
        let log = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();
        let dns = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-management", &format!("127.0.0.1:{dns_mgmt}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(log("challtestsrv.log"))
            .stderr(log("challtestsrv.err"))
            .spawn()
            .unwrap();
        let mut c = Command::new("pebble");
        c.args(["-config", dir.path().join("pebble.json").to_str().unwrap()])
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"));
        for (k, v) in env {
            c.env(k, v);
        }
        let pebble = c.spawn().unwrap();
        let p = Self {
            dir,
            port,
            pebble: Some(pebble),
            dns,
        };
        wait_port(dns_mgmt, "pebble-challtestsrv");
        wait_port(port, "pebble");
        wait_port(mgmt, "pebble's management interface");
        // The issuing root (new on every start).
        let root = Command::new("curl")
            .args(["-sfk", &format!("https://127.0.0.1:{mgmt}/roots/0")])
            .output()
            .unwrap();
        assert!(root.status.success(), "pebble's /roots/0 did not answer");
        std::fs::write(p.root(), &root.stdout).unwrap();
        p
    }

    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }
    /// The CA of pebble's own HTTPS (for `[tls.acme] root_ca`).
    pub fn https_ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
    /// The root pebble's certificates chain to.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("issuing-root.pem")
    }

    /// Stop pebble (its DNS keeps running): the CA is gone.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.pebble.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
        let _ = self.dns.kill();
        let _ = self.dns.wait();
    }
}

/// The example monorepo rendered for prod, nginx on free loopback ports, TLS from
/// `tls` (a `[tls]` table). nginx and the products' processes are stopped on drop.
pub struct TlsSite {
    pub repo: GitRepo,
    pub http_port: u16,
    pub https_port: u16,
}

impl TlsSite {
    pub fn new(http_port: u16, tls: &str, extra_product_tls: &[(&str, &str)]) -> Self {
        let repo = GitRepo::new();
        // nginx's workers (nobody) read the challenge webroot, as on a server's checkout.
        std::fs::set_permissions(repo.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        repo.copy_tree(&example_dir());
        let https_port = berth_testkit::free_port();
        let mut m = std::fs::read_to_string(repo.path().join("berth.toml")).unwrap();
        m = m.replace(
            "nginx_config = \"deploy/prod/nginx/nginx.conf\"",
            &format!(
                "nginx_config = \"deploy/prod/nginx/nginx.conf\"\nlisten = \"127.0.0.1\"\nhttp_port = {http_port}\nhttps_port = {https_port}"
            ),
        );
        m = m.replace(
            "[secret_scan]",
            &format!("[deploy]\nruntime = \"local\"\nslot_port_offset = 1\ndrain = \"1s\"\nstandby = \"0\"\n\n{tls}\n\n[secret_scan]"),
        );
        for old in [
            "host_port = 8011",
            "host_port = 5183",
            "host_port = 8012",
            "host_port = 5184",
        ] {
            m = m.replace(
                old,
                &format!("host_port = {}", berth_testkit::reserve_ports(2)),
            );
        }
        for (product, table) in extra_product_tls {
            m.push_str(&format!("\n[products.{product}.tls]\n{table}\n"));
        }
        repo.write("berth.toml", &m);
        let site = Self {
            repo,
            http_port,
            https_port,
        };
        site.berth(&["render", "--env", "prod"]).assert_code(0);
        site.repo
            .commit_all("chore: the example, rendered for prod (TASK-0-setup-bestays)");
        site
    }

    pub fn berth(&self, args: &[&str]) -> Outcome {
        run(self.repo.path(), args)
    }

    /// The leaf certificate nginx presents for `name`, verified (chain and host name)
    /// against `root` by openssl: (its PEM, its SANs, its serial).
    pub fn served(&self, name: &str, root: &Path) -> Result<(String, Vec<String>, String), String> {
        let out = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{}", self.https_port),
            ])
            .args(["-servername", name, "-verify_hostname", name])
            .args(["-CAfile", root.to_str().unwrap(), "-verify_return_error"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() || !text.contains("Verify return code: 0 (ok)") {
            return Err(format!("s_client {name}: {text}\n{err}"));
        }
        let start = text
            .find("-----BEGIN CERTIFICATE-----")
            .ok_or("no certificate")?;
        let end = text
            .find("-----END CERTIFICATE-----")
            .ok_or("no certificate")?;
        let pem = format!("{}-----END CERTIFICATE-----\n", &text[start..end]);
        let x509 = |args: &[&str]| {
            let mut c = Command::new("openssl")
                .arg("x509")
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            c.stdin.take().unwrap().write_all(pem.as_bytes()).unwrap();
            String::from_utf8_lossy(&c.wait_with_output().unwrap().stdout).into_owned()
        };
        let sans: Vec<String> = x509(&["-noout", "-ext", "subjectAltName"])
            .split([',', '\n'])
            .filter_map(|s| s.trim().strip_prefix("DNS:").map(str::to_string))
            .collect();
        let serial = x509(&["-noout", "-serial"]).trim().to_string();
        Ok((pem, sans, serial))
    }

    /// One plain-HTTP request to nginx's port 80: (status, Location).
    pub fn http(&self, host: &str, path: &str) -> (u16, String) {
        let r = berth_testkit::http::get(self.http_port, host, path).unwrap();
        (r.status, r.header("location").unwrap_or("").to_string())
    }

    pub fn status_json(&self) -> serde_json::Value {
        json(self.repo.path(), &["tls", "status"], 0)
    }

    pub fn product_status(&self, product: &str) -> serde_json::Value {
        self.status_json()["products"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["product"] == product)
            .unwrap()
            .clone()
    }
}

impl Drop for TlsSite {
    fn drop(&mut self) {
        let _ = Command::new("nginx")
            .args(["-p", self.repo.path().to_str().unwrap()])
            .args(["-c", "deploy/prod/nginx/nginx.conf", "-s", "stop"])
            .stderr(Stdio::null())
            .status();
        crate::deploy::stop_local_products(self.repo.path());
    }
}

fn acme_table(pebble: &Pebble) -> String {
    format!(
        "[tls]\nmode = \"acme\"\n\n[tls.acme]\ndirectory = \"{}\"\ncontact = \"ops@bestays.app\"\nroot_ca = \"{}\"",
        pebble.directory(),
        pebble.https_ca().display()
    )
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn challenge_requests(site: &TlsSite) -> usize {
    std::fs::read_to_string(site.repo.path().join(".berth/nginx/access.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("/.well-known/acme-challenge/"))
        .count()
}

#[test]
fn two_products_get_one_certificate_each_with_nonce_rejection_and_authz_reuse() {
    let http_port = berth_testkit::free_port();
    // Random nonce rejection and authorization reuse on: a real client must cope.
    let pebble = Pebble::start(
        http_port,
        90 * 86_400,
        &[
            ("PEBBLE_WFE_NONCEREJECT", "10"),
            ("PEBBLE_AUTHZREUSE", "100"),
        ],
    );
    let site = TlsSite::new(http_port, &acme_table(&pebble), &[]);
    let root = site.repo.path();

    // Before any certificate: port 80 serves, nothing is redirected yet.
    let out = site.berth(&["tls", "issue", "--all"]);
    out.assert_code(0);
    assert!(out.stderr.contains("bestays: issued"), "{}", out.all());
    assert!(out.stderr.contains("realestate: issued"), "{}", out.all());
    // Progress, one plain line per stage (stderr is no terminal here), prefixed by product.
    for stage in [
        "[bestays] order a certificate for bestays.app, www.bestays.app (it has no certificate)",
        "[bestays] wait for the CA to validate every name",
        "[bestays] send the certificate request, wait for the certificate",
        "[bestays] install the certificate (nginx -t, reload)",
        "[realestate] order a certificate for realestate.app, www.realestate.app",
    ] {
        assert!(out.stderr.contains(stage), "no `{stage}`:\n{}", out.all());
    }
    assert!(
        out.stderr
            .contains("[bestays] bestays.app: answer the CA's http-01 challenge")
            || out
                .stderr
                .contains("[bestays] bestays.app: the CA still trusts"),
        "{}",
        out.all()
    );

    // One certificate per product, naming exactly its own domains, chain verified.
    for (product, names) in [
        ("bestays", ["bestays.app", "www.bestays.app"]),
        ("realestate", ["realestate.app", "www.realestate.app"]),
    ] {
        for name in names {
            let (_, sans, _) = site.served(name, &pebble.root()).unwrap();
            assert_eq!(
                sorted(sans),
                sorted(names.map(String::from).to_vec()),
                "{product} served for {name}"
            );
        }
    }
    // HTTP redirects to HTTPS, except the challenge path.
    let (status, location) = site.http("bestays.app", "/listings?x=1");
    assert_eq!(status, 301);
    assert_eq!(location, "https://bestays.app/listings?x=1");
    let (status, _) = site.http("www.realestate.app", "/.well-known/acme-challenge/none");
    assert_eq!(
        status, 404,
        "the challenge path is answered, not redirected"
    );
    // Token files are gone once the order is done.
    let tokens = root.join(".berth/tls/challenge/.well-known/acme-challenge");
    assert_eq!(std::fs::read_dir(&tokens).unwrap().count(), 0);

    // Storage: keys 0600 in 0700 directories, the account 0600 in a 0700 directory.
    assert_eq!(mode(&root.join(".berth/tls/live/bestays")), 0o700);
    assert_eq!(
        mode(&root.join(".berth/tls/live/bestays/privkey.pem")),
        0o600
    );
    let accounts: Vec<_> = std::fs::read_dir(root.join(".berth/tls/accounts"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(accounts.len(), 1, "one account per directory");
    assert_eq!(mode(&accounts[0].path()), 0o700);
    assert_eq!(mode(&accounts[0].path().join("account.json")), 0o600);
    // Nothing of it in git.
    assert_eq!(site.repo.git(&["status", "--porcelain"]).trim(), "");
    let key = std::fs::read_to_string(root.join(".berth/tls/live/bestays/privkey.pem")).unwrap();
    assert!(!out.all().contains(key.lines().nth(1).unwrap()));

    // Status: both products, their names, issuer, expiry, days left.
    let s = site.product_status("bestays");
    assert_eq!(s["health"], "ok", "{s}");
    assert_eq!(s["mode"], "acme");
    assert!(s["days_left"].as_i64().is_some(), "{s}");
    assert!(
        s["certificate"]["issuer"]
            .as_str()
            .unwrap()
            .contains("Pebble"),
        "{s}"
    );
    assert!(s["last_error"].is_null());

    // Nothing to do the second time.
    let again = site.berth(&["tls", "issue", "--all"]);
    again.assert_code(0);
    assert!(
        again.stderr.contains("bestays: unchanged"),
        "{}",
        again.all()
    );

    // Authorization reuse: a forced new order proves nothing again on port 80.
    let (_, _, serial) = site.served("bestays.app", &pebble.root()).unwrap();
    let before = challenge_requests(&site);
    let forced = site.berth(&["tls", "issue", "bestays", "--force"]);
    forced.assert_code(0);
    let (_, _, new_serial) = site.served("bestays.app", &pebble.root()).unwrap();
    assert_ne!(
        serial,
        new_serial,
        "a new certificate is served: {}",
        forced.all()
    );
    assert_eq!(
        challenge_requests(&site),
        before,
        "authorizations were reused"
    );
}

#[test]
fn with_the_ca_gone_renew_fails_loudly_and_the_old_certificate_keeps_serving() {
    let http_port = berth_testkit::free_port();
    let mut pebble = Pebble::start(http_port, 3600, &[]);
    let site = TlsSite::new(http_port, &acme_table(&pebble), &[]);
    site.berth(&["tls", "issue", "bestays"]).assert_code(0);
    let (_, _, serial) = site.served("bestays.app", &pebble.root()).unwrap();

    pebble.stop();
    let out = site.berth(&["tls", "renew", "bestays", "--force"]);
    out.assert_code(1);
    assert!(out.stderr.contains("bestays:"), "{}", out.all());
    assert!(
        out.stderr.contains("HTTP request failure") || out.stderr.contains("onnect"),
        "says what failed: {}",
        out.all()
    );
    // Loud under 7 days.
    assert!(
        out.stderr
            .contains("warning: the certificate of bestays expires in 0 days"),
        "{}",
        out.all()
    );
    // The old certificate keeps serving.
    let (_, _, still) = site.served("bestays.app", &pebble.root()).unwrap();
    assert_eq!(serial, still);
    // Status shows the error and the days left.
    let s = site.product_status("bestays");
    assert!(
        s["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{s}"
    );
    assert!(s["days_left"].as_i64().is_some(), "{s}");
    assert_eq!(
        s["health"], "expiring",
        "an hour-long certificate is under 7 days: {s}"
    );
    // `berth doctor` names it too, with the fix, and counts it as a warning.
    let (doc, cert) = doctor_finding(&site, "certificate bestays");
    assert_eq!(cert["status"], "warn", "{cert}");
    let detail = cert["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("0 days left (expiring)") && detail.contains("the last attempt failed"),
        "{cert}"
    );
    assert_eq!(cert["fix"], "`berth tls renew bestays`", "{cert}");
    crate::logs::validate_json_docs("doctor.schema.json", &[doc]);
    let text = site.berth(&["tls", "status"]);
    assert!(
        text.stdout.contains("last attempt failed"),
        "{}",
        text.all()
    );

    // The same in `berth status`, on the dashboard and in /metrics.
    let st = json(site.repo.path(), &["status"], 0);
    // Both outputs, with a certificate and an error in them, have their published shape.
    crate::logs::validate_json_docs("status.schema.json", std::slice::from_ref(&st));
    crate::logs::validate_json_docs("tls-status.schema.json", &[site.status_json()]);
    let tls = st["tls"].as_array().unwrap();
    let b = tls.iter().find(|t| t["product"] == "bestays").unwrap();
    assert!(b["last_error"].as_str().is_some(), "{st}");
    let text = site.berth(&["status"]);
    assert!(text.stdout.contains("TLS\n"), "{}", text.all());
    assert!(
        text.stderr
            .contains("the certificate of bestays expires in 0 days"),
        "{}",
        text.all()
    );
    let not_after = s["certificate"]["not_after"].as_i64().unwrap();
    let serve = crate::serve::Serve::start(site.repo.path(), &["--refresh", "200ms"], &[]);
    let metrics = serve.get("/metrics").1;
    assert!(
        metrics.contains(&format!(
            "berth_tls_certificate_expiry_timestamp_seconds{{product=\"bestays\"}} {not_after}"
        )),
        "{metrics}"
    );
    assert!(
        !metrics.contains("berth_tls_certificate_expiry_timestamp_seconds{product=\"realestate\"}"),
        "no certificate, no sample: {metrics}"
    );
    let api = serve.json("/api/products/bestays");
    assert!(api["tls"]["last_error"].as_str().is_some(), "{api}");
    let page = serve.get("/").1;
    assert!(page.contains(r#"data-tls="expiring""#), "{page}");
    assert!(page.contains("last attempt failed"), "{page}");
}

#[test]
fn a_short_lived_certificate_is_renewed_when_a_third_of_its_life_is_left() {
    let http_port = berth_testkit::free_port();
    let pebble = Pebble::start(http_port, 45, &[]);
    let site = TlsSite::new(http_port, &acme_table(&pebble), &[]);
    site.berth(&["tls", "issue", "bestays"]).assert_code(0);
    let (_, _, serial) = site.served("bestays.app", &pebble.root()).unwrap();
    // Not yet: more than a third (15 s) is left.
    let out = site.berth(&["tls", "renew", "bestays"]);
    out.assert_code(0);
    assert!(out.stderr.contains("bestays: unchanged"), "{}", out.all());
    // Then, as the lifetime runs down, renew orders a new one (the twice-a-day timer's job).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = site.berth(&["tls", "renew", "--all"]);
        out.assert_code(0);
        if out.stderr.contains("bestays: renewed") {
            break;
        }
        assert!(Instant::now() < deadline, "never renewed: {}", out.all());
        std::thread::sleep(Duration::from_millis(500));
    }
    let (_, _, renewed) = site.served("bestays.app", &pebble.root()).unwrap();
    assert_ne!(serial, renewed);
}

/// A self-signed certificate for `names` (a Cloudflare origin certificate stands in).
fn own_certificate(names: &[&str]) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap()
            .self_signed(&key)
            .unwrap();
    (cert.pem(), key.serialize_pem())
}

#[test]
fn a_broken_certificate_file_of_one_product_never_takes_another_offline() {
    let http_port = berth_testkit::free_port();
    let pebble = Pebble::start(http_port, 90 * 86_400, &[]);
    let site = TlsSite::new(
        http_port,
        &acme_table(&pebble),
        &[(
            "realestate",
            "mode = \"files\"\ncert = \"certs/realestate.crt\"\nkey = \"certs/realestate.key\"",
        )],
    );
    let (cert, key) = own_certificate(&["realestate.app", "www.realestate.app"]);
    site.repo.write("certs/realestate.crt", &cert);
    site.repo.write("certs/realestate.key", &key);
    site.berth(&["tls", "issue", "--all"]).assert_code(0);
    let own = tempfile::tempdir().unwrap();
    let own_root = own.path().join("realestate-root.pem");
    std::fs::write(&own_root, &cert).unwrap();
    let (served, _, _) = site.served("realestate.app", &own_root).unwrap();
    assert_eq!(
        served.trim(),
        cert.trim(),
        "bring-your-own files are served"
    );
    let (_, _, bestays_serial) = site.served("bestays.app", &pebble.root()).unwrap();
    // Files mode has the same expiry visibility.
    let s = site.product_status("realestate");
    assert_eq!(s["mode"], "files");
    assert!(s["days_left"].as_i64().unwrap() > 300, "{s}");
    let (_, finding) = doctor_finding(&site, "certificate realestate");
    assert_eq!(finding["status"], "ok", "{finding}");
    assert!(
        finding["detail"].as_str().unwrap().ends_with(" days left"),
        "{finding}"
    );

    // realestate's file breaks: its renew fails, nobody goes offline.
    site.repo.write(
        "certs/realestate.crt",
        "-----BEGIN CERTIFICATE-----\ngarbage\n",
    );
    let out = site.berth(&["tls", "renew", "--all"]);
    out.assert_code(1);
    assert!(out.stderr.contains("realestate:"), "{}", out.all());
    assert!(!out.stderr.contains("bestays: nginx"), "{}", out.all());
    // The same as JSON: one outcome, one failure, in the published shape.
    let out = site.berth(&["tls", "renew", "--all", "--format", "json"]);
    out.assert_code(1);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["failures"][0]["product"], "realestate", "{doc}");
    assert_eq!(doc["outcomes"][0]["product"], "bestays", "{doc}");
    crate::logs::validate_json_docs("tls.schema.json", &[doc]);
    // Another product's change reloads nginx fine: the broken file never reached it.
    site.berth(&["tls", "issue", "bestays", "--force"])
        .assert_code(0);
    let (_, _, new_serial) = site.served("bestays.app", &pebble.root()).unwrap();
    assert_ne!(bestays_serial, new_serial);
    let (still, _, _) = site.served("realestate.app", &own_root).unwrap();
    assert_eq!(
        still.trim(),
        cert.trim(),
        "realestate keeps its last good certificate"
    );
    // A key that is not the certificate's is refused the same way.
    let (_, other_key) = own_certificate(&["realestate.app"]);
    site.repo.write("certs/realestate.crt", &cert);
    site.repo.write("certs/realestate.key", &other_key);
    let out = site.berth(&["tls", "renew", "realestate"]);
    out.assert_code(1);
    assert!(out.stderr.contains("does not belong"), "{}", out.all());
    let s = site.product_status("realestate");
    assert!(
        s["last_error"]
            .as_str()
            .unwrap()
            .contains("does not belong"),
        "{s}"
    );
}

/// A tiny ACME server that answers every new order with a recorded `rateLimited`
/// problem document and `Retry-After`, counting the orders it was sent.
struct RateLimitedCa {
    port: u16,
    orders: Arc<AtomicUsize>,
}

const RATE_LIMITED: &str = r#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many new orders (300) from this account in the last 3h0m0s, retry after 2026-11-30 15:00:00 UTC: see https://letsencrypt.org/docs/rate-limits/#new-orders-per-account","status":429}"#;

impl RateLimitedCa {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let orders = Arc::new(AtomicUsize::new(0));
        let counter = orders.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    continue;
                }
                let mut len = 0;
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                let _ = r.read_exact(&mut body);
                let base = format!("http://127.0.0.1:{port}");
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (status, headers, body) = match path.as_str() {
                    "/dir" => (
                        "200 OK",
                        String::new(),
                        format!(
                            r#"{{"newNonce":"{base}/nonce","newAccount":"{base}/account","newOrder":"{base}/order"}}"#
                        ),
                    ),
                    "/nonce" => ("200 OK", String::new(), String::new()),
                    "/account" => (
                        "201 Created",
                        format!("Location: {base}/account/1\r\n"),
                        r#"{"status":"valid"}"#.to_string(),
                    ),
                    "/order" => {
                        counter.fetch_add(1, Ordering::SeqCst);
                        (
                            "429 Too Many Requests",
                            "Retry-After: 7200\r\n".to_string(),
                            RATE_LIMITED.to_string(),
                        )
                    }
                    _ => ("404 Not Found", String::new(), String::new()),
                };
                let ctype = if status.starts_with("429") {
                    "application/problem+json"
                } else {
                    "application/json"
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nReplay-Nonce: n{}\r\nContent-Type: {ctype}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    rand_nonce(),
                    body.len()
                );
            }
        });
        Self { port, orders }
    }
}

/// `berth doctor --format json`, and its finding named `check`.
fn doctor_finding(site: &TlsSite, check: &str) -> (serde_json::Value, serde_json::Value) {
    let out = site.berth(&["doctor", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let finding = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == check)
        .unwrap_or_else(|| panic!("doctor has no `{check}`: {doc}"))
        .clone();
    (doc, finding)
}

fn rand_nonce() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now())
}

#[test]
fn a_rate_limited_order_backs_off_until_the_cas_retry_after() {
    let ca = RateLimitedCa::start();
    let http_port = berth_testkit::free_port();
    let site = TlsSite::new(
        http_port,
        &format!(
            "[tls]\nmode = \"acme\"\n\n[tls.acme]\ndirectory = \"http://127.0.0.1:{}/dir\"",
            ca.port
        ),
        &[],
    );
    let started = berth_tls_now();
    let out = site.berth(&["tls", "issue", "bestays"]);
    out.assert_code(1);
    assert!(out.stderr.contains("rateLimited"), "{}", out.all());
    assert_eq!(ca.orders.load(Ordering::SeqCst), 1);
    let s = site.product_status("bestays");
    let not_before = s["retry_not_before"]
        .as_i64()
        .expect("a backoff is recorded");
    assert!(
        (started + 7200 - 5..=started + 7200 + 60).contains(&not_before),
        "the CA's Retry-After is honoured: {s}"
    );
    assert!(
        s["last_error"]
            .as_str()
            .unwrap()
            .contains("too many new orders")
    );
    // Until then berth does not ask again (renew from the timer, or issue).
    for args in [
        &["tls", "renew", "bestays"][..],
        &["tls", "issue", "bestays"],
    ] {
        let out = site.berth(args);
        out.assert_code(1);
        assert!(out.stderr.contains("rate limited"), "{}", out.all());
    }
    assert_eq!(
        ca.orders.load(Ordering::SeqCst),
        1,
        "no new order during the backoff"
    );
    // --force asks anyway.
    site.berth(&["tls", "issue", "bestays", "--force"])
        .assert_code(1);
    assert_eq!(ca.orders.load(Ordering::SeqCst), 2);

    // A deploy goes on without a certificate, loudly, and does not ask the CA during
    // the backoff: the product is served on port 80 until its certificate exists.
    fill_declared_secrets(site.repo.path());
    let out = site.berth(&["deploy", "bestays", "--yes"]);
    out.assert_code(0);
    assert!(
        out.stderr.contains("no new certificate for bestays"),
        "{}",
        out.all()
    );
    assert_eq!(ca.orders.load(Ordering::SeqCst), 2);
    let (status, location) = site.http("bestays.app", "/api/health");
    assert_eq!((status, location.as_str()), (200, ""), "served on port 80");
    let no_cert = site.served("bestays.app", &site.repo.path().join("berth.toml"));
    assert!(no_cert.is_err(), "no HTTPS for bestays yet");
}

fn berth_tls_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// An HTTPS GET through nginx (curl, verifying against `root`): (status, body).
fn https_get(site: &TlsSite, root: &Path, host: &str, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "--cacert", root.to_str().unwrap()])
        .args([
            "--resolve",
            &format!("{host}:{}:127.0.0.1", site.https_port),
        ])
        .args(["-w", "\n%{http_code}"])
        .arg(format!("https://{host}:{}{path}", site.https_port))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn deploy_issues_the_certificate_and_a_domain_added_gets_a_new_one_on_the_next_deploy() {
    let http_port = berth_testkit::free_port();
    let pebble = Pebble::start(http_port, 90 * 86_400, &[]);
    let site = TlsSite::new(http_port, &acme_table(&pebble), &[]);
    fill_declared_secrets(site.repo.path());
    // The first deploy issues before the switch: the product has no certificate.
    let out = site.berth(&["deploy", "bestays", "--yes"]);
    out.assert_code(0);
    assert!(
        out.stderr
            .contains("bestays: issued (it has no certificate)"),
        "{}",
        out.all()
    );
    let (status, _) = https_get(&site, &pebble.root(), "bestays.app", "/api/health");
    assert_eq!(status, 200, "bestays is served over HTTPS");
    // The next deploy with nothing changed orders nothing.
    site.repo.write("products/bestays/a.md", "a");
    site.repo.commit_all("feat: a (TASK-1-a-bestays)");
    let out = site.berth(&["deploy", "bestays", "--yes"]);
    out.assert_code(0);
    assert!(!out.stderr.contains("issued"), "{}", out.all());

    // A domain added: the next deploy gets a certificate naming it.
    let m = std::fs::read_to_string(site.repo.path().join("berth.toml")).unwrap();
    site.repo.write(
        "berth.toml",
        &m.replace(
            "domains = [\"bestays.app\", \"www.bestays.app\"]",
            "domains = [\"bestays.app\", \"www.bestays.app\", \"book.bestays.app\"]",
        ),
    );
    site.berth(&["render", "--env", "prod"]).assert_code(0);
    site.repo
        .commit_all("feat: book.bestays.app (TASK-2-domain-bestays)");
    let out = site.berth(&["deploy", "bestays", "--yes"]);
    out.assert_code(0);
    assert!(
        out.stderr.contains("bestays: issued (its domains changed)"),
        "{}",
        out.all()
    );
    let want = sorted(vec![
        "bestays.app".into(),
        "www.bestays.app".into(),
        "book.bestays.app".into(),
    ]);
    for name in ["book.bestays.app", "bestays.app"] {
        let (_, sans, _) = site.served(name, &pebble.root()).unwrap();
        assert_eq!(sorted(sans), want, "never another product's domain");
    }
    let (status, _) = https_get(&site, &pebble.root(), "book.bestays.app", "/api/health");
    assert_eq!(status, 200);
}

#[test]
fn a_short_lived_certificate_is_renewed_under_load_with_no_failed_request() {
    use berth_testkit::load::LoadConfig;
    let http_port = berth_testkit::free_port();
    let pebble = Pebble::start(http_port, 75, &[]);
    let site = TlsSite::new(http_port, &acme_table(&pebble), &[]);
    fill_declared_secrets(site.repo.path());
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let (_, _, serial) = site.served("bestays.app", &pebble.root()).unwrap();
    // The load generator speaks HTTP: socat carries each of its connections over its
    // own TLS connection to nginx, verified against pebble's root with SNI.
    let tunnel = berth_testkit::free_port();
    let mut socat = Command::new("socat")
        .arg(format!("TCP-LISTEN:{tunnel},bind=127.0.0.1,fork,reuseaddr"))
        .arg(format!(
            "OPENSSL:127.0.0.1:{},cafile={},snihost=bestays.app,commonname=bestays.app,verify=1",
            site.https_port,
            pebble.root().display()
        ))
        .stderr(Stdio::null())
        .spawn()
        .expect("socat is required (scripts/test.sh installs it)");
    wait_port(tunnel, "socat");
    let load = LoadConfig::new(tunnel, "bestays.app")
        .paths(&["/api/health", "/", "/api/listings/7"])
        .workers(3, 2)
        .start();
    load.wait_for_answers(50);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = site.berth(&["tls", "renew", "--all"]);
        out.assert_code(0);
        if out.stderr.contains("bestays: renewed") {
            break;
        }
        assert!(Instant::now() < deadline, "never renewed: {}", out.all());
        std::thread::sleep(Duration::from_millis(500));
    }
    // Requests keep being answered after the reload, on both kinds of connection.
    load.wait_for_answers(50);
    let report = load.finish();
    let _ = socat.kill();
    let _ = socat.wait();
    report.assert_clean(100).assert_covered();
    let (_, _, renewed) = site.served("bestays.app", &pebble.root()).unwrap();
    assert_ne!(serial, renewed);
}

#[test]
fn bad_tls_settings_are_located_errors() {
    let repo = example_repo();
    let m = std::fs::read_to_string(repo.path().join("berth.toml")).unwrap();
    let m = m.replace(
        "[secret_scan]",
        "[tls]\nmode = \"acme\"\n\n[tls.acme]\ndirectory = \"ftp://ca.example/dir\"\neab_kid_env = \"kid-name\"\n\n[secret_scan]",
    );
    repo.write(
        "berth.toml",
        &format!("{m}\n[products.realestate.tls]\nmode = \"files\"\ncert = \"certs/$HOME.pem\"\n"),
    );
    let out = run(repo.path(), &["check"]);
    out.assert_code(2);
    for (code, what) in [
        (
            "tls-acme-directory",
            "tls.acme.directory `ftp://ca.example/dir`",
        ),
        ("tls-acme-env", "tls.acme.eab_kid_env `kid-name`"),
        ("tls-acme-eab", "needs both eab_kid_env and eab_hmac_env"),
        ("tls-path", "products.realestate.tls.cert"),
    ] {
        assert!(
            out.stderr.contains(&format!("error[{code}]: ")),
            "{code}: {}",
            out.all()
        );
        assert!(out.stderr.contains(what), "{what}: {}", out.all());
    }
    assert!(
        out.stderr.contains("--> berth.toml:"),
        "located: {}",
        out.all()
    );
    // Nothing was rendered or ordered.
    assert!(!repo.path().join(".berth/tls").exists());
}

#[test]
fn an_external_account_binding_comes_from_the_variables_it_names() {
    const HMAC: &str = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    let http_port = berth_testkit::free_port();
    let pebble = Pebble::start_with(http_port, 90 * 86_400, &[], Some(("kid-berth", HMAC)));
    let site = TlsSite::new(
        http_port,
        &format!(
            "{}\neab_kid_env = \"TEST_ACME_KID\"\neab_hmac_env = \"TEST_ACME_HMAC\"",
            acme_table(&pebble)
        ),
        &[],
    );
    // Without the variables: a configuration error naming the missing one, exit 2.
    let out = site.berth(&["tls", "issue", "bestays"]);
    out.assert_code(2);
    assert!(
        out.stderr.contains("TEST_ACME_KID is not set"),
        "{}",
        out.all()
    );
    let mut c = berth(site.repo.path());
    c.args(["tls", "issue", "bestays"])
        .env("TEST_ACME_KID", "kid-berth")
        .env("TEST_ACME_HMAC", HMAC);
    let out = c.output().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(!all.contains(HMAC), "the HMAC key is never printed");
    site.served("bestays.app", &pebble.root()).unwrap();
    // The account file holds the account key, never the HMAC.
    let accounts = site.repo.path().join(".berth/tls/accounts");
    for e in std::fs::read_dir(&accounts).unwrap().flatten() {
        let text = std::fs::read_to_string(e.path().join("account.json")).unwrap();
        assert!(!text.contains(HMAC));
    }
}

fn base64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn unbase64url(s: &str) -> Vec<u8> {
    let (mut bits, mut n, mut out) = (0u32, 0, Vec::new());
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            _ => 63,
        };
        bits = (bits << 6) | u32::from(v);
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    out
}

/// A tiny ACME CA offering ARI (RFC 9773): its suggested window opens when told; new
/// orders are recorded (their JWS payloads) and answered `rateLimited`.
struct AriCa {
    port: u16,
    window_open: Arc<std::sync::atomic::AtomicBool>,
    asked: Arc<std::sync::Mutex<Vec<String>>>,
    orders: Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

impl AriCa {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let ca = Self {
            port,
            window_open: Default::default(),
            asked: Default::default(),
            orders: Default::default(),
        };
        let (open, asked, orders) = (ca.window_open.clone(), ca.asked.clone(), ca.orders.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    continue;
                }
                let mut len = 0;
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                let _ = r.read_exact(&mut body);
                let base = format!("http://127.0.0.1:{port}");
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (status, headers, body) = if path == "/dir" {
                    (
                        "200 OK",
                        String::new(),
                        format!(
                            r#"{{"newNonce":"{base}/nonce","newAccount":"{base}/account","newOrder":"{base}/order","renewalInfo":"{base}/ari"}}"#
                        ),
                    )
                } else if path == "/nonce" {
                    ("200 OK", String::new(), String::new())
                } else if path == "/account" {
                    (
                        "201 Created",
                        format!("Location: {base}/account/1\r\n"),
                        r#"{"status":"valid"}"#.into(),
                    )
                } else if let Some(id) = path.strip_prefix("/ari/") {
                    asked.lock().unwrap().push(id.to_string());
                    let (start, end) = if open.load(Ordering::SeqCst) {
                        ("2020-01-01T00:00:00Z", "2020-01-02T00:00:00Z")
                    } else {
                        ("2090-01-01T00:00:00Z", "2090-01-02T00:00:00Z")
                    };
                    (
                        "200 OK",
                        "Retry-After: 21600\r\n".into(),
                        format!(r#"{{"suggestedWindow":{{"start":"{start}","end":"{end}"}}}}"#),
                    )
                } else if path == "/order" {
                    let jws: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    let payload = unbase64url(jws["payload"].as_str().unwrap_or(""));
                    orders
                        .lock()
                        .unwrap()
                        .push(serde_json::from_slice(&payload).unwrap_or_default());
                    (
                        "429 Too Many Requests",
                        "Retry-After: 60\r\n".into(),
                        RATE_LIMITED.to_string(),
                    )
                } else {
                    ("404 Not Found", String::new(), String::new())
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nReplay-Nonce: n{}\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    rand_nonce(),
                    body.len()
                );
            }
        });
        ca
    }
}

#[test]
fn inside_the_cas_ari_window_renew_orders_a_replacement_naming_the_old_certificate() {
    let ca = AriCa::start();
    let http_port = berth_testkit::free_port();
    let site = TlsSite::new(
        http_port,
        &format!(
            "[tls]\nmode = \"acme\"\n\n[tls.acme]\ndirectory = \"http://127.0.0.1:{}/dir\"",
            ca.port
        ),
        &[],
    );
    // The certificate the CA issued earlier: long-lived (the one-third rule says wait),
    // with an Authority Key Identifier and a known serial.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["bestays.app".into(), "www.bestays.app".into()])
            .unwrap();
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(rcgen::SerialNumber::from(vec![0x12, 0x34, 0x56]));
    let cert = params.signed_by(&key, &issuer).unwrap();
    let live = site.repo.path().join(".berth/tls/live/bestays");
    std::fs::create_dir_all(&live).unwrap();
    std::fs::write(live.join("fullchain.pem"), cert.pem()).unwrap();
    std::fs::write(live.join("privkey.pem"), key.serialize_pem()).unwrap();
    // Its ARI identifier, from openssl: base64url(AKI) "." base64url(serial).
    let aki = {
        let mut c = Command::new("openssl")
            .args(["x509", "-noout", "-ext", "authorityKeyIdentifier"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin
            .take()
            .unwrap()
            .write_all(cert.pem().as_bytes())
            .unwrap();
        let text = String::from_utf8_lossy(&c.wait_with_output().unwrap().stdout).into_owned();
        let hex: String = text
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .trim_start_matches("keyid:")
            .replace(':', "");
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect::<Vec<u8>>()
    };
    let id = format!("{}.{}", base64url(&aki), base64url(&[0x12, 0x34, 0x56]));

    // Window not open yet: nothing is ordered.
    let out = site.berth(&["tls", "renew", "bestays"]);
    out.assert_code(0);
    assert!(out.stderr.contains("bestays: unchanged"), "{}", out.all());
    assert!(
        ca.asked.lock().unwrap().contains(&id),
        "{:?} {id}",
        ca.asked
    );
    assert!(ca.orders.lock().unwrap().is_empty());

    // Window open: renew orders at once, naming the certificate it replaces.
    ca.window_open.store(true, Ordering::SeqCst);
    let out = site.berth(&["tls", "renew", "bestays"]);
    out.assert_code(1);
    let orders = ca.orders.lock().unwrap();
    assert_eq!(orders.len(), 1, "{}", out.all());
    assert_eq!(orders[0]["replaces"], id.as_str(), "{}", orders[0]);
}

#[test]
fn concurrent_issues_of_one_product_take_turns_and_leave_a_matching_pair_served() {
    let http_port = berth_testkit::free_port();
    let pebble = Pebble::start(http_port, 90 * 86_400, &[]);
    let site = TlsSite::new(http_port, &acme_table(&pebble), &[]);
    site.berth(&["tls", "issue", "bestays"]).assert_code(0);
    let children: Vec<_> = (0..3)
        .map(|_| {
            berth(site.repo.path())
                .args(["tls", "issue", "bestays", "--force"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // What is stored is one pair, and it is what nginx serves.
    let live = site.repo.path().join(".berth/tls/live/bestays");
    let pubkey = |args: &[&str], file: &Path| {
        let out = Command::new("openssl")
            .args(args)
            .arg(file)
            .output()
            .unwrap();
        assert!(out.status.success());
        out.stdout
    };
    assert_eq!(
        pubkey(
            &["x509", "-noout", "-pubkey", "-in"],
            &live.join("fullchain.pem")
        ),
        pubkey(&["pkey", "-pubout", "-in"], &live.join("privkey.pem")),
        "the key belongs to the certificate"
    );
    let (served, _, _) = site.served("bestays.app", &pebble.root()).unwrap();
    let stored = std::fs::read_to_string(live.join("fullchain.pem")).unwrap();
    assert!(
        stored.starts_with(served.trim()),
        "nginx serves the stored certificate"
    );
}
