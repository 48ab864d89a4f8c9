//! The ACME (RFC 8555) side: the account per directory, one order per product
//! for all its names, HTTP-01 tokens in the webroot nginx serves, the CSR from a
//! fresh key. The HTTP client remembers the CA's `Retry-After`, so a rate limit
//! turns into a backoff berth honours.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_cmd::progress::Progress;
use bytes::Bytes;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    ExternalAccountKey, HttpClient, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};

use crate::store::{Store, write_file};

/// What an order failed with.
#[derive(Debug)]
pub struct OrderError {
    pub message: String,
    /// The CA answered `urn:ietf:params:acme:error:rateLimited`.
    pub rate_limited: bool,
    /// The CA's Retry-After, as Unix seconds, when it sent one.
    pub retry_after: Option<i64>,
}

impl OrderError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            rate_limited: false,
            retry_after: None,
        }
    }
}

/// The CA to talk to and how.
pub struct Ca {
    pub directory: String,
    pub contact: Option<String>,
    pub eab: Option<(String, Vec<u8>)>,
    pub root_ca: Option<PathBuf>,
}

/// Where the client leaves the CA's last `Retry-After`.
type RetrySlot = Arc<Mutex<Option<SystemTime>>>;

/// The HTTP client: hyper + rustls (ring), the system roots or the configured root,
/// remembering the last `Retry-After` the CA sent on an error.
struct Client {
    inner: Box<dyn HttpClient>,
    retry_after: RetrySlot,
}

impl HttpClient for Client {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let fut = self.inner.request(req);
        let slot = self.retry_after.clone();
        Box::pin(async move {
            let rsp = fut.await?;
            if !rsp.parts.status.is_success()
                && let Some(at) = rsp
                    .parts
                    .headers
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after)
            {
                *slot.lock().unwrap() = Some(at);
            }
            Ok(rsp)
        })
    }
}

/// `Retry-After`: delay-seconds (an HTTP date is read as "retry later" too, an hour).
fn parse_retry_after(v: &str) -> Option<SystemTime> {
    let v = v.trim();
    match v.parse::<u64>() {
        Ok(s) => Some(SystemTime::now() + Duration::from_secs(s)),
        Err(_) if !v.is_empty() => Some(SystemTime::now() + Duration::from_secs(3600)),
        Err(_) => None,
    }
}

fn client(root_ca: Option<&Path>) -> Result<(Client, RetrySlot), OrderError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match root_ca {
        Some(path) => {
            let pem = std::fs::read_to_string(path).map_err(|e| {
                OrderError::new(format!(
                    "could not read tls.acme.root_ca {}: {e}",
                    path.display()
                ))
            })?;
            let mut roots = rustls::RootCertStore::empty();
            use rustls_pki_types::pem::PemObject;
            for der in rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let der = der.map_err(|e| {
                    OrderError::new(format!("tls.acme.root_ca {}: {e}", path.display()))
                })?;
                roots.add(der).map_err(|e| {
                    OrderError::new(format!("tls.acme.root_ca {}: {e}", path.display()))
                })?;
            }
            builder.with_tls_config(
                rustls::ClientConfig::builder()
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            )
        }
        None => builder
            .try_with_platform_verifier()
            .map_err(|e| OrderError::new(format!("no system root certificates: {e}")))?,
    };
    let connector = builder
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build();
    let hyper = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, BodyWrapper<Bytes>>(connector);
    let slot = Arc::new(Mutex::new(None));
    Ok((
        Client {
            inner: Box::new(hyper),
            retry_after: slot.clone(),
        },
        slot,
    ))
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn from_acme(e: instant_acme::Error, retry: &RetrySlot) -> OrderError {
    let rate_limited = matches!(&e, instant_acme::Error::Api(p)
        if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:rateLimited"));
    OrderError {
        message: e.to_string(),
        rate_limited,
        retry_after: retry.lock().unwrap().map(unix),
    }
}

/// The account for the CA's directory: loaded from the store, or created (and stored
/// 0600 in a 0700 directory).
async fn account(
    ca: &Ca,
    store: &Store,
    http: Client,
    retry: &RetrySlot,
) -> Result<Account, OrderError> {
    let path = store.account_path(&ca.directory);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let creds: AccountCredentials = serde_json::from_str(&text).map_err(|e| {
            OrderError::new(format!(
                "the ACME account file {} is unreadable: {e}",
                path.display()
            ))
        })?;
        return Account::builder_with_http(Box::new(http))
            .from_credentials(creds)
            .await
            .map_err(|e| from_acme(e, retry));
    }
    let contact = ca
        .contact
        .as_ref()
        .map(|c| format!("mailto:{}", c.trim_start_matches("mailto:")));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let eab = ca
        .eab
        .as_ref()
        .map(|(kid, hmac)| ExternalAccountKey::new(kid.clone(), hmac));
    let (acct, creds) = Account::builder_with_http(Box::new(http))
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            ca.directory.clone(),
            eab.as_ref(),
        )
        .await
        .map_err(|e| from_acme(e, retry))?;
    if let Some(dir) = path.parent() {
        crate::store::private_dir(dir, 0o700)
            .map_err(|e| OrderError::new(format!("could not create {}: {e}", dir.display())))?;
    }
    let body = serde_json::to_vec_pretty(&creds).map_err(|e| OrderError::new(e.to_string()))?;
    write_file(&path, &body, 0o600)
        .map_err(|e| OrderError::new(format!("could not write {}: {e}", path.display())))?;
    Ok(acct)
}

/// How the CA is shown that berth controls a name: one challenge type, answered for
/// each name of an order and taken down when the solver is dropped (whether the order
/// succeeded, failed or panicked).
///
/// Built: [`Http01`], a file in the webroot every port-80 server block of berth's
/// nginx serves at `/.well-known/acme-challenge/`. Designed, not built:
/// - DNS-01 (wildcards, names not reachable on port 80): `present` writes the TXT
///   record `_acme-challenge.<name>` = base64url(SHA-256(key authorization)) through
///   the DNS provider's API (credentials by env var name, as the EAB key), then waits
///   until the zone's authoritative servers answer it; `Drop` deletes the record.
/// - TLS-ALPN-01 (only port 443 open): `present` makes a self-signed certificate for
///   the name with the critical acmeIdentifier extension (SHA-256 of the key
///   authorization), which nginx's stream module answers for ALPN `acme-tls/1`
///   (routed by `ssl_preread`) before the product's HTTPS server; `Drop` removes it.
trait Solver {
    /// The challenge type the CA must offer for each name.
    fn kind(&self) -> ChallengeType;
    /// Answer the challenge for `name` (`token` and `key_authorization` from the CA).
    fn present(
        &mut self,
        name: &str,
        token: &str,
        key_authorization: &str,
    ) -> Result<(), OrderError>;
}

/// HTTP-01 from the webroot berth's nginx serves; removes its token files on drop.
struct Http01 {
    dir: PathBuf,
    tokens: Vec<PathBuf>,
}

impl Solver for Http01 {
    fn kind(&self) -> ChallengeType {
        ChallengeType::Http01
    }

    fn present(
        &mut self,
        name: &str,
        token: &str,
        key_authorization: &str,
    ) -> Result<(), OrderError> {
        if token.is_empty()
            || !token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(OrderError::new(format!(
                "the CA sent an http-01 token for {name} that is not base64url"
            )));
        }
        let path = self.dir.join(token);
        self.tokens.push(path.clone());
        write_file(&path, key_authorization.as_bytes(), 0o644)
            .map_err(|e| OrderError::new(format!("could not write {}: {e}", path.display())))
    }
}

impl Drop for Http01 {
    fn drop(&mut self) {
        for p in &self.tokens {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// One order for `names`: returns (certificate chain PEM, private key PEM).
/// The certificate's ARI identifier (`<AKI>.<serial>`, RFC 9773), when it has an AKI.
fn cert_id(chain_pem: &str) -> Option<instant_acme::CertificateIdentifier<'static>> {
    let der = x509_parser::pem::Pem::iter_from_buffer(chain_pem.as_bytes())
        .flatten()
        .find(|p| p.label == "CERTIFICATE")?
        .contents;
    let der = rustls_pki_types::CertificateDer::from(der);
    instant_acme::CertificateIdentifier::try_from(&der)
        .ok()
        .map(|id| id.into_owned())
}

/// ARI (RFC 9773): whether the CA's suggested renewal window for the certificate has
/// started. `None` when the directory offers no `renewalInfo` (or the certificate has no
/// AKI, or the CA cannot be asked): the one-third rule decides then.
pub fn ari_due(ca: &Ca, store: &Store, chain_pem: &str) -> Option<bool> {
    let id = cert_id(chain_pem)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        let (http, retry) = client(ca.root_ca.as_deref()).ok()?;
        let acct = account(ca, store, http, &retry).await.ok()?;
        let (info, _) = acct.renewal_info(&id).await.ok()?;
        let now = time::OffsetDateTime::now_utc();
        Some(now >= info.suggested_window.start)
    })
}

pub fn order(ca: &Ca, store: &Store, names: &[String]) -> Result<(String, String), OrderError> {
    order_replacing(ca, store, names, None, &berth_cmd::progress::Silent)
}

/// An order that, when the CA offers ARI, says which certificate it replaces.
pub fn order_replacing(
    ca: &Ca,
    store: &Store,
    names: &[String],
    previous: Option<&str>,
    progress: &dyn Progress,
) -> Result<(String, String), OrderError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| OrderError::new(format!("could not start the async runtime: {e}")))?;
    // A CA may reject any nonce (RFC 8555 6.5); the client retries each request a
    // few times, and berth the whole order (earlier proofs are reused) a few more.
    let mut attempt = 0;
    loop {
        attempt += 1;
        match rt.block_on(order_async(ca, store, names, previous, progress)) {
            Err(e) if attempt < 4 && e.message.contains("urn:ietf:params:acme:error:badNonce") => {
                tracing::warn!(
                    "the CA rejected a nonce again ({}); ordering anew",
                    e.message
                );
            }
            other => return other,
        }
    }
}

async fn order_async(
    ca: &Ca,
    store: &Store,
    names: &[String],
    previous: Option<&str>,
    progress: &dyn Progress,
) -> Result<(String, String), OrderError> {
    let (http, retry) = client(ca.root_ca.as_deref())?;
    let acct = account(ca, store, http, &retry).await?;
    let ids: Vec<Identifier> = names.iter().map(|n| Identifier::Dns(n.clone())).collect();
    // `replaces` only where the CA offers ARI (else the order would be refused).
    let mut replaces = None;
    if let Some(id) = previous.and_then(cert_id)
        && acct.renewal_info(&id).await.is_ok()
    {
        replaces = Some(id);
    }
    let mut new = NewOrder::new(&ids);
    if let Some(id) = replaces {
        new = new.replaces(id);
    }
    let mut order = acct
        .new_order(&new)
        .await
        .map_err(|e| from_acme(e, &retry))?;
    let challenge_dir = store.challenge_dir();
    store.prepare().map_err(|e| {
        OrderError::new(format!("could not create {}: {e}", challenge_dir.display()))
    })?;
    let mut solver = Http01 {
        dir: challenge_dir,
        tokens: Vec::new(),
    };
    {
        let mut authzs = order.authorizations();
        while let Some(a) = authzs.next().await {
            let mut a = a.map_err(|e| from_acme(e, &retry))?;
            let name = a.identifier().to_string();
            match a.status {
                AuthorizationStatus::Pending => {}
                // Authorization reuse: the CA still trusts an earlier proof.
                AuthorizationStatus::Valid => {
                    progress.step(&format!("{name}: the CA still trusts an earlier proof"));
                    continue;
                }
                s => {
                    return Err(OrderError::new(format!(
                        "the CA's authorization for {name} is {s:?}"
                    )));
                }
            }
            let kind = solver.kind();
            let mut ch = a.challenge(kind.clone()).ok_or_else(|| {
                OrderError::new(format!("the CA offers no {kind:?} challenge for {name}"))
            })?;
            progress.step(&format!(
                "{name}: answer the CA's {} challenge",
                kind_name(&kind)
            ));
            let token = ch.token.clone();
            solver.present(&name, &token, ch.key_authorization().as_str())?;
            ch.set_ready().await.map_err(|e| from_acme(e, &retry))?;
        }
    }
    let poll = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .timeout(Duration::from_secs(90));
    progress.step("wait for the CA to validate every name");
    let status = order
        .poll_ready(&poll)
        .await
        .map_err(|e| from_acme(e, &retry))?;
    if status != OrderStatus::Ready {
        return Err(OrderError::new(format!(
            "the CA did not validate every name (order {status:?}); is port 80 of {} answered by this nginx?",
            names.join(", ")
        )));
    }
    let key = rcgen::KeyPair::generate()
        .map_err(|e| OrderError::new(format!("could not generate a key: {e}")))?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())
        .map_err(|e| OrderError::new(format!("could not build the request: {e}")))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .map_err(|e| OrderError::new(format!("could not build the request: {e}")))?;
    progress.step("send the certificate request, wait for the certificate");
    order
        .finalize_csr(csr.der())
        .await
        .map_err(|e| from_acme(e, &retry))?;
    let chain = order
        .poll_certificate(&poll)
        .await
        .map_err(|e| from_acme(e, &retry))?;
    drop(solver);
    Ok((chain, key.serialize_pem()))
}

/// A challenge type as RFC 8555 writes it.
fn kind_name(kind: &ChallengeType) -> &'static str {
    match kind {
        ChallengeType::Http01 => "http-01",
        ChallengeType::Dns01 => "dns-01",
        ChallengeType::TlsAlpn01 => "tls-alpn-01",
        _ => "other",
    }
}
