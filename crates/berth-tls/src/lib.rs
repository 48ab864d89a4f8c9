//! Per-product TLS: one certificate per product for all its domains (never
//! another product's), issued eagerly from an ACME CA over HTTP-01 through berth's
//! own nginx, or copied from files you bring; renewed when a third of its lifetime
//! is left; served from berth's validated copy, so one product's broken file never
//! reaches nginx and never takes another product offline.
//!
//! nginx is reached through [`FrontDoor`] only: write the product's server blocks,
//! `nginx -t`, reload; the previous files come back when anything fails.

pub mod acme;
pub mod cert;
pub mod store;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use berth_cmd::progress::Progress;
use berth_manifest::{Manifest, TlsMode};
use serde::Serialize;

pub use cert::{CertInfo, check_pair, inspect, rfc3339};
pub use store::{State, Store};

/// Renewal starts when this fraction of the certificate's lifetime is left.
pub const RENEW_FRACTION: i64 = 3;
/// Under this many days left, every command that looks at a certificate warns loudly.
pub const WARN_DAYS: i64 = 7;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Setup problems: no `[proxy]`, a render that does not serve the product over TLS.
    #[error("{0}")]
    Config(String),
    /// The attempt failed; the previous certificate (if any) keeps serving.
    #[error("{0}")]
    Failed(String),
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Why a product needs a new certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Missing,
    DomainsChanged,
    RenewalDue,
    /// The CA's suggested renewal window (ARI, RFC 9773) has started.
    AriWindow,
    Forced,
}

impl Need {
    pub fn describe(self) -> &'static str {
        match self {
            Need::Missing => "it has no certificate",
            Need::DomainsChanged => "its domains changed",
            Need::RenewalDue => "a third of its lifetime is left",
            Need::AriWindow => "the CA's renewal window (ARI) has started",
            Need::Forced => "--force",
        }
    }
}

/// What a command asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `berth tls issue`: a certificate when the product has none or its domains changed.
    Issue,
    /// `berth tls renew`: also when a third of the lifetime is left.
    Renew,
    /// `berth deploy`, before the switch: like `Issue`.
    Deploy,
}

/// What was done for a product.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub product: String,
    /// `issued`, `renewed`, `installed` (files), `unchanged`, `off`.
    pub action: &'static str,
    pub why: Option<String>,
    pub certificate: Option<CertInfo>,
}

/// nginx, as far as TLS needs it: test the configuration, reload it.
pub trait FrontDoor {
    /// Where the product's server blocks live (`sites/<product>.conf` beside the config).
    fn site_file(&self, product: &str) -> PathBuf;
    /// Whether the loaded configuration includes that file.
    fn serves_site(&self, product: &str) -> bool;
    fn test(&self) -> Result<(), String>;
    fn reload(&self) -> Result<(), String>;
}

/// berth-deploy's nginx as the front door.
pub struct NginxDoor<'a> {
    nginx: berth_deploy::proxy::Nginx<'a>,
}

impl<'a> NginxDoor<'a> {
    pub fn new(m: &'a Manifest, root: &Path) -> Option<Self> {
        berth_deploy::front_door::nginx(m, root).map(|nginx| Self { nginx })
    }
    fn dir(&self) -> PathBuf {
        self.nginx
            .root
            .join(&self.nginx.proxy.nginx_config)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.nginx.root.clone())
    }
}

impl FrontDoor for NginxDoor<'_> {
    fn site_file(&self, product: &str) -> PathBuf {
        self.dir().join("sites").join(format!("{product}.conf"))
    }
    fn serves_site(&self, product: &str) -> bool {
        std::fs::read_to_string(self.dir().join("berth.conf"))
            .is_ok_and(|t| t.contains(&format!("include sites/{product}.conf;")))
    }
    fn test(&self) -> Result<(), String> {
        self.nginx.test().map_err(|e| e.to_string())
    }
    /// Reload and return once every new connection gets the new configuration (the
    /// old workers stopped accepting; 10 s at most).
    fn reload(&self) -> Result<(), String> {
        let before = self.nginx.accepting_workers();
        self.nginx.reload().map_err(|e| e.to_string())?;
        self.nginx
            .old_workers_stopped(&before, std::time::Duration::from_secs(10));
        Ok(())
    }
}

/// Per-product TLS status, for `berth tls status`, `berth status` and `berth serve`.
#[derive(Debug, Clone, Serialize)]
pub struct ProductStatus {
    pub product: String,
    pub mode: &'static str,
    /// The product's domains (what its certificate must name).
    pub domains: Vec<String>,
    /// The certificate nginx serves (berth's copy), when there is one.
    pub certificate: Option<CertInfo>,
    /// Whole days until it expires (negative: expired).
    pub days_left: Option<i64>,
    /// `ok`, `renewal-due`, `expiring` (under 7 days), `expired`, `missing`, `off`.
    pub health: &'static str,
    pub last_attempt: Option<i64>,
    pub last_success: Option<i64>,
    pub last_error: Option<String>,
    pub retry_not_before: Option<i64>,
}

fn mode_name(m: TlsMode) -> &'static str {
    match m {
        TlsMode::Acme => "acme",
        TlsMode::Files => "files",
        TlsMode::Off => "off",
    }
}

/// The products TLS applies to: those with domains whose mode is not `off`.
pub fn products(m: &Manifest) -> Vec<String> {
    berth_render::tls_sites(m, berth_render::Env::Prod)
        .into_keys()
        .collect()
}

/// The status of every product with domains (mode `off` included, as `off`).
pub fn status(m: &Manifest, root: &Path) -> Vec<ProductStatus> {
    let store = Store::new(root);
    let now = now();
    m.products
        .iter()
        .filter(|(_, p)| !p.domains.is_empty())
        .map(|(name, p)| {
            let mode = m.tls_mode(name);
            let state = store.state(name);
            let cert = store
                .live(name)
                .and_then(|(c, k)| check_pair(&c, &k, i64::MIN).ok());
            let days_left = cert
                .as_ref()
                .map(|c| (c.not_after - now).div_euclid(86_400));
            let health = match (&cert, mode) {
                (_, TlsMode::Off) => "off",
                (None, _) => "missing",
                (Some(c), _) if c.not_after <= now => "expired",
                (Some(c), _) if c.not_after - now < WARN_DAYS * 86_400 => "expiring",
                (Some(c), TlsMode::Acme) if c.not_after - now < c.lifetime() / RENEW_FRACTION => {
                    "renewal-due"
                }
                _ => "ok",
            };
            ProductStatus {
                product: name.clone(),
                mode: mode_name(mode),
                domains: p.domains.clone(),
                certificate: cert,
                days_left,
                health,
                last_attempt: state.last_attempt,
                last_success: state.last_success,
                last_error: state.last_error,
                retry_not_before: state.retry_not_before,
            }
        })
        .collect()
}

/// The CA settings of the manifest, the EAB values read from their variables.
pub fn ca(m: &Manifest, root: &Path) -> Result<acme::Ca, TlsError> {
    let acme = m
        .tls
        .as_ref()
        .and_then(|t| t.acme.clone())
        .unwrap_or(berth_manifest::Acme {
            directory: "letsencrypt".into(),
            contact: None,
            eab_kid_env: None,
            eab_hmac_env: None,
            root_ca: None,
        });
    let eab = match (&acme.eab_kid_env, &acme.eab_hmac_env) {
        (Some(kid), Some(hmac)) => {
            let read = |name: &str| {
                std::env::var(name).map_err(|_| {
                    TlsError::Config(format!(
                        "tls.acme: the external account binding variable {name} is not set"
                    ))
                })
            };
            let kid_v = read(kid)?;
            let hmac_v = base64url(&read(hmac)?).ok_or_else(|| {
                TlsError::Config(format!(
                    "tls.acme: {hmac} is not base64url (the CA's HMAC key)"
                ))
            })?;
            Some((kid_v, hmac_v))
        }
        _ => None,
    };
    Ok(acme::Ca {
        directory: acme.directory_url().to_string(),
        contact: acme.contact.clone(),
        eab,
        root_ca: acme.root_ca.as_ref().map(|r| root.join(r)),
    })
}

fn base64url(s: &str) -> Option<Vec<u8>> {
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.trim().trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        } as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    Some(out)
}

/// TLS for the products of one berth.toml.
pub struct Tls<'a, D: FrontDoor> {
    pub m: &'a Manifest,
    pub root: PathBuf,
    pub store: Store,
    pub door: D,
}

impl<'a, D: FrontDoor> Tls<'a, D> {
    pub fn new(m: &'a Manifest, root: &Path, door: D) -> Self {
        Self {
            m,
            root: root.to_path_buf(),
            store: Store::new(root),
            door,
        }
    }

    /// Why `product` needs a new ACME certificate for `purpose`, if it does.
    pub fn need(&self, product: &str, purpose: Purpose, force: bool) -> Option<Need> {
        let domains = &self.m.products[product].domains;
        let live = self
            .store
            .live(product)
            .and_then(|(c, k)| check_pair(&c, &k, now()).ok());
        let Some(c) = live else {
            return Some(Need::Missing);
        };
        let mut have: Vec<String> = c.names.iter().map(|n| n.to_ascii_lowercase()).collect();
        let mut want: Vec<String> = domains.iter().map(|n| n.to_ascii_lowercase()).collect();
        have.sort();
        want.sort();
        if have != want {
            return Some(Need::DomainsChanged);
        }
        if force {
            return Some(Need::Forced);
        }
        if purpose == Purpose::Renew && c.not_after - now() < c.lifetime() / RENEW_FRACTION {
            return Some(Need::RenewalDue);
        }
        if purpose == Purpose::Renew
            && let Ok(ca) = ca(self.m, &self.root)
            && let Some((chain, _)) = self.store.live(product)
            && acme::ari_due(&ca, &self.store, &chain) == Some(true)
        {
            return Some(Need::AriWindow);
        }
        None
    }

    /// Bring `product` to what `purpose` asks: issue, renew or copy its certificate,
    /// then serve it. On failure the previous certificate keeps serving. Each stage
    /// (the order, each challenge, the CA's validation, the install) is reported to
    /// `progress`.
    pub fn ensure(
        &self,
        product: &str,
        purpose: Purpose,
        force: bool,
        progress: &dyn Progress,
    ) -> Result<Outcome, TlsError> {
        let mode = self.m.tls_mode(product);
        let p = self
            .m
            .products
            .get(product)
            .ok_or_else(|| TlsError::Config(format!("no product `{product}` in berth.toml")))?;
        if mode == TlsMode::Off || p.domains.is_empty() {
            return Ok(Outcome {
                product: product.into(),
                action: "off",
                why: Some(if p.domains.is_empty() {
                    "it has no domains".into()
                } else {
                    "[tls] mode is off".into()
                }),
                certificate: None,
            });
        }
        self.store.prepare().map_err(|e| {
            TlsError::Failed(format!(
                "could not create {}: {e}",
                self.store.dir.display()
            ))
        })?;
        // One TLS operation per product at a time (the renewal timer, a deploy, an
        // operator): the key, chain and site files change together. Released on drop.
        let lock_path = self.store.dir.join("state").join(format!("{product}.lock"));
        let _lock = store::private_dir(&self.store.dir.join("state"), 0o700)
            .and_then(|_| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&lock_path)
            })
            .and_then(|f| f.lock().map(|_| f))
            .map_err(|e| {
                TlsError::Failed(format!("could not lock {}: {e}", lock_path.display()))
            })?;
        if !self.door.serves_site(product) {
            return Err(TlsError::Config(format!(
                "the nginx configuration does not serve {product} over TLS ({} is not included): render it with `berth render --env prod` and point [proxy] nginx_config at it",
                self.door.site_file(product).display()
            )));
        }
        match mode {
            TlsMode::Files => {
                progress.step(&format!(
                    "check {product}'s certificate files and serve them"
                ));
                self.install_files(product)
            }
            _ => self.acme(product, purpose, force, progress),
        }
    }

    fn acme(
        &self,
        product: &str,
        purpose: Purpose,
        force: bool,
        progress: &dyn Progress,
    ) -> Result<Outcome, TlsError> {
        let Some(need) = self.need(product, purpose, force) else {
            // Nothing to order; make sure nginx serves what is there.
            let info = self.serve_current(product)?;
            return Ok(Outcome {
                product: product.into(),
                action: "unchanged",
                why: None,
                certificate: info,
            });
        };
        // The CA settings first: a missing EAB variable is a configuration error, before
        // anything is touched.
        let ca = ca(self.m, &self.root)?;
        let mut state = self.store.state(product);
        let now = now();
        if let Some(t) = state.retry_not_before
            && t > now
            && !force
        {
            return Err(TlsError::Failed(format!(
                "{product}: the CA asked berth to wait (rate limited) until {}; not ordering before then (--force orders anyway)",
                rfc3339(t)
            )));
        }
        // Port 80 must answer the challenge before the order: the site as it is now,
        // and nginx running (a reload starts it).
        self.serve_current(product)?;
        self.door
            .test()
            .and_then(|_| self.door.reload())
            .map_err(|e| {
                TlsError::Failed(format!("{product}: nginx cannot answer the challenge: {e}"))
            })?;
        state.last_attempt = Some(now);
        let names = self.m.products[product].domains.clone();
        let previous = self.store.live(product).map(|(c, _)| c);
        progress.step(&format!(
            "order a certificate for {} ({})",
            names.join(", "),
            need.describe()
        ));
        let result = acme::order_replacing(&ca, &self.store, &names, previous.as_deref(), progress)
            .map_err(|e| {
                if e.rate_limited || e.retry_after.is_some() {
                    state.rate_limited += u32::from(e.rate_limited);
                    // The CA's Retry-After, else an hour doubling per limited attempt (max a day).
                    let backoff = 3600i64 << state.rate_limited.saturating_sub(1).min(5);
                    state.retry_not_before =
                        Some(e.retry_after.unwrap_or(now + backoff.min(86_400)));
                }
                e.message
            })
            .and_then(|(chain, key)| {
                let info = check_pair(&chain, &key, now)
                    .map_err(|e| format!("the CA's certificate is unusable: {e}"))?;
                if let Some(n) = info
                    .names
                    .iter()
                    .find(|n| !names.iter().any(|d| d.eq_ignore_ascii_case(n)))
                {
                    return Err(format!(
                        "the CA's certificate names {n}, which is not {product}'s"
                    ));
                }
                if let Some(d) = names.iter().find(|d| !info.covers(d)) {
                    return Err(format!("the CA's certificate does not name {d}"));
                }
                progress.step("install the certificate (nginx -t, reload)");
                self.install(product, &chain, &key).map(|_| info)
            });
        match result {
            Ok(info) => {
                state.last_success = Some(now);
                state.last_error = None;
                state.retry_not_before = None;
                state.rate_limited = 0;
                let _ = self.store.save_state(product, &state);
                Ok(Outcome {
                    product: product.into(),
                    action: if matches!(need, Need::RenewalDue | Need::AriWindow) {
                        "renewed"
                    } else {
                        "issued"
                    },
                    why: Some(need.describe().into()),
                    certificate: Some(info),
                })
            }
            Err(e) => {
                state.last_error = Some(e.clone());
                let _ = self.store.save_state(product, &state);
                Err(TlsError::Failed(format!("{product}: {e}")))
            }
        }
    }

    /// Mode `files`: validate the product's files, copy them to what nginx serves.
    fn install_files(&self, product: &str) -> Result<Outcome, TlsError> {
        let (cert, key) = self.m.tls_files(product).expect("a product with domains");
        let mut state = self.store.state(product);
        state.last_attempt = Some(now());
        let read = |p: &str| {
            std::fs::read_to_string(self.root.join(p))
                .map_err(|e| format!("could not read {p}: {e}"))
        };
        let result = read(&cert)
            .and_then(|c| read(&key).map(|k| (c, k)))
            .and_then(|(c, k)| {
                let info = check_pair(&c, &k, now()).map_err(|e| format!("{cert}: {e}"))?;
                if let Some(d) = self.m.products[product]
                    .domains
                    .iter()
                    .find(|d| !info.covers(d))
                {
                    return Err(format!("{cert} does not name {d}"));
                }
                if self.store.live(product).as_ref() == Some(&(c.clone(), k.clone())) {
                    self.serve_current(product).map_err(|e| e.to_string())?;
                    return Ok(("unchanged", info));
                }
                self.install(product, &c, &k).map(|_| ("installed", info))
            });
        match result {
            Ok((action, info)) => {
                state.last_success = Some(now());
                state.last_error = None;
                let _ = self.store.save_state(product, &state);
                Ok(Outcome {
                    product: product.into(),
                    action,
                    why: None,
                    certificate: Some(info),
                })
            }
            Err(e) => {
                state.last_error = Some(e.clone());
                let _ = self.store.save_state(product, &state);
                Err(TlsError::Failed(format!(
                    "{product}: {e}; nginx keeps serving what it served"
                )))
            }
        }
    }

    /// Make nginx serve the product's current certificate (HTTPS) or, without a
    /// usable one, port 80 only. Returns the certificate served.
    fn serve_current(&self, product: &str) -> Result<Option<CertInfo>, TlsError> {
        let info = self
            .store
            .live(product)
            .and_then(|(c, k)| check_pair(&c, &k, now()).ok());
        self.write_site(product, info.is_some(), &[])
            .map_err(TlsError::Failed)?;
        Ok(info)
    }

    /// Install a certificate and serve it: key (0600) and chain written atomically,
    /// the HTTPS site written, `nginx -t`, reload; everything restored on failure.
    fn install(&self, product: &str, chain: &str, key: &str) -> Result<(), String> {
        let files = [
            (self.store.key_path(product), key, 0o600),
            (self.store.cert_path(product), chain, 0o644),
        ];
        let dir = self.store.live_dir(product);
        store::private_dir(&dir, 0o700)
            .map_err(|e| format!("could not create {}: {e}", dir.display()))?;
        let mut previous = Vec::new();
        for (path, body, mode) in &files {
            previous.push((path.clone(), std::fs::read(path).ok(), *mode));
            if let Err(e) = store::write_file(path, body.as_bytes(), *mode) {
                restore(&previous);
                return Err(format!("could not write {}: {e}", path.display()));
            }
        }
        self.write_site(product, true, &previous)?;
        self.wait_served(product, chain)
    }

    /// A reload is graceful: old workers serve on for a moment. Return once nginx
    /// presents the new certificate for the product's first domain (10 s at most).
    fn wait_served(&self, product: &str, chain: &str) -> Result<(), String> {
        let Some(px) = &self.m.proxy else {
            return Ok(());
        };
        let want = pem_leaf(chain);
        let host = match px.listen.as_deref().map(|l| l.trim_matches(['[', ']'])) {
            Some(l)
                if l.parse::<std::net::IpAddr>()
                    .is_ok_and(|a| !a.is_unspecified()) =>
            {
                l.parse().unwrap()
            }
            _ => std::net::IpAddr::from([127, 0, 0, 1]),
        };
        let addr = std::net::SocketAddr::new(host, px.https_port);
        let name = &self.m.products[product].domains[0];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if want.is_some() && presented(addr, name) == want {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(format!(
                    "nginx reloaded but does not present the new certificate of {product} for {name} on {addr}"
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Write the product's site (`https` or port 80 only), test, reload; on failure
    /// put back the site and `also` (path, previous contents, mode) and fail.
    fn write_site(
        &self,
        product: &str,
        https: bool,
        also: &[(PathBuf, Option<Vec<u8>>, u32)],
    ) -> Result<(), String> {
        let live = self.store.live_dir(product).display().to_string();
        let body = berth_render::render_site(self.m, product, https.then_some(live.as_str()))
            .map_err(|e| e.to_string())?;
        let path = self.door.site_file(product);
        let before = std::fs::read(&path).ok();
        if before.as_deref() == Some(body.as_bytes()) && also.is_empty() {
            return Ok(());
        }
        let mut undo = also.to_vec();
        undo.push((path.clone(), before, 0o644));
        if let Err(e) = berth_runtime::write_atomic(&path, body.as_bytes()) {
            restore(&undo);
            return Err(format!("could not write {}: {e}", path.display()));
        }
        if let Err(e) = self.door.test().and_then(|_| self.door.reload()) {
            restore(&undo);
            let _ = self.door.reload();
            return Err(format!(
                "nginx refused the new configuration of {product}, the previous files are back: {e}"
            ));
        }
        Ok(())
    }
}

/// The first certificate of a PEM chain, as DER.
fn pem_leaf(chain: &str) -> Option<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(chain.as_bytes())
        .flatten()
        .find(|p| p.label == "CERTIFICATE")
        .map(|p| p.contents)
}

fn restore(files: &[(PathBuf, Option<Vec<u8>>, u32)]) {
    for (path, prev, mode) in files {
        match prev {
            Some(b) => {
                let _ = store::write_file(path, b, *mode);
            }
            None => {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// The leaf certificate (DER) a TLS server presents for `sni`, read with a client
/// that verifies nothing (it only looks).
pub fn presented(addr: std::net::SocketAddr, sni: &str) -> Option<Vec<u8>> {
    use std::sync::Arc;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .ok()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(berth_provision::tls::Unverified(provider)))
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from(sni.to_string()).ok()?;
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).ok()?;
    let mut sock =
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)).ok()?;
    let _ = sock.set_read_timeout(Some(std::time::Duration::from_secs(2)));
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).ok()?;
    }
    conn.peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64url_decodes() {
        assert_eq!(super::base64url("aGVsbG8").unwrap(), b"hello");
        assert_eq!(super::base64url("_-8").unwrap(), vec![0xff, 0xef]);
        assert!(super::base64url("a b").is_none());
    }
}
