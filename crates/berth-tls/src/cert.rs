//! Reading certificates: names, issuer, validity, and whether a key belongs to
//! a certificate. Nothing reaches nginx that did not pass [`check_pair`].

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::*;

/// What berth shows of a certificate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CertInfo {
    /// The DNS names it is valid for (subjectAltName).
    pub names: Vec<String>,
    /// The issuer's distinguished name.
    pub issuer: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
}

impl CertInfo {
    /// The certificate's whole lifetime, in seconds.
    pub fn lifetime(&self) -> i64 {
        (self.not_after - self.not_before).max(1)
    }

    /// Whether `name` is covered (exactly, or by a `*.` wildcard one label deep).
    pub fn covers(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        self.names.iter().any(|n| {
            let n = n.to_ascii_lowercase();
            n == name
                || n.strip_prefix("*.").is_some_and(|rest| {
                    name.split_once('.')
                        .is_some_and(|(label, tail)| !label.is_empty() && tail == rest)
                })
        })
    }
}

/// The PEM blocks of `label` (`CERTIFICATE`) in `text`, as DER.
fn pem_blocks(text: &str) -> Result<Vec<Pem>, String> {
    let mut out = Vec::new();
    for pem in Pem::iter_from_buffer(text.as_bytes()) {
        out.push(pem.map_err(|e| format!("not PEM: {e}"))?);
    }
    Ok(out)
}

/// The leaf (first) certificate of a PEM chain.
pub fn inspect(chain_pem: &str) -> Result<CertInfo, String> {
    let blocks = pem_blocks(chain_pem)?;
    let leaf = blocks
        .iter()
        .find(|p| p.label == "CERTIFICATE")
        .ok_or("no CERTIFICATE block")?;
    let (_, cert) = X509Certificate::from_der(&leaf.contents)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    Ok(info(&cert))
}

fn info(cert: &X509Certificate<'_>) -> CertInfo {
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                names.push(d.to_string());
            }
        }
    }
    CertInfo {
        names,
        issuer: cert.issuer().to_string(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    }
}

/// A certificate chain and private key that nginx can serve: both parse, the key is
/// the certificate's, and it is valid now. Returns the leaf's details.
pub fn check_pair(chain_pem: &str, key_pem: &str, now: i64) -> Result<CertInfo, String> {
    let blocks = pem_blocks(chain_pem)?;
    let leaf = blocks
        .iter()
        .find(|p| p.label == "CERTIFICATE")
        .ok_or("the certificate file holds no CERTIFICATE block")?;
    let (_, cert) = X509Certificate::from_der(&leaf.contents)
        .map_err(|e| format!("the certificate file does not hold an X.509 certificate: {e}"))?;
    let key = rcgen::KeyPair::from_pem(key_pem).map_err(|_| {
        "the key file does not hold a private key berth can read (PKCS#8 PEM, `BEGIN PRIVATE KEY`)"
            .to_string()
    })?;
    use rcgen::PublicKeyData;
    if key.der_bytes() != cert.public_key().subject_public_key.data.as_ref() {
        return Err("the private key does not belong to the certificate".into());
    }
    let i = info(&cert);
    if i.not_after <= now {
        return Err(format!(
            "the certificate expired ({})",
            rfc3339(i.not_after)
        ));
    }
    Ok(i)
}

/// Unix seconds as `2026-11-30T12:00:00Z`.
pub fn rfc3339(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_wildcards() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_000_000), "2026-11-30T00:53:20Z");
        let c = CertInfo {
            names: vec!["*.example.com".into(), "example.com".into()],
            issuer: String::new(),
            not_before: 0,
            not_after: 1,
        };
        assert!(c.covers("www.example.com"));
        assert!(c.covers("example.com"));
        assert!(!c.covers("a.b.example.com"));
        assert!(!c.covers("example.org"));
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let k1 = rcgen::KeyPair::generate().unwrap();
        let k2 = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.test".to_string()])
            .unwrap()
            .self_signed(&k1)
            .unwrap();
        let now = 1_700_000_000;
        let ok = check_pair(&cert.pem(), &k1.serialize_pem(), now).unwrap();
        assert_eq!(ok.names, vec!["a.test"]);
        let err = check_pair(&cert.pem(), &k2.serialize_pem(), now).unwrap_err();
        assert!(err.contains("does not belong"), "{err}");
        assert!(check_pair("garbage", &k1.serialize_pem(), now).is_err());
    }
}
