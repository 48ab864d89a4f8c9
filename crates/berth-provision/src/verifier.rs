//! Does a password stored on the server (`pg_authid.rolpassword`) belong to a
//! given plain password? Checked the way PostgreSQL checks a login, without
//! logging in: SCRAM-SHA-256 (RFC 5802/7677: PBKDF2 with the stored salt and
//! iterations, then `StoredKey = H(HMAC(salted, "Client Key"))`) or the old md5 form.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key size");
    m.update(msg);
    m.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA-256 with one block: SCRAM's `Hi()`.
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut first = salt.to_vec();
    first.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password, &first);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        out.iter_mut().zip(u.iter()).for_each(|(o, x)| *o ^= x);
    }
    out
}

/// Standard base64 with padding, as PostgreSQL writes verifiers.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        acc = (acc << 6) | u32::from(val(c)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// Whether `stored` (a `pg_authid.rolpassword` value) verifies `password` for `role`.
/// `None` when the form is not one berth knows (or the role has no password).
pub fn matches(stored: &str, role: &str, password: &str) -> Option<bool> {
    if let Some(rest) = stored.strip_prefix("SCRAM-SHA-256$") {
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored_key, _server_key) = keys.split_once(':')?;
        let iterations: u32 = iterations.parse().ok().filter(|i| *i > 0)?;
        let salt = base64_decode(salt)?;
        let stored_key = base64_decode(stored_key)?;
        // berth's passwords are ASCII letters and digits: SASLprep leaves them as they are.
        let salted = hi(password.as_bytes(), &salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        return Some(Sha256::digest(client_key).as_slice() == stored_key.as_slice());
    }
    if stored.starts_with("md5") && stored.len() == 35 {
        return Some(postgres_protocol::password::md5(password.as_bytes(), role) == stored);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scram_verifiers_made_by_the_protocol_crate_match_only_their_password() {
        let v = postgres_protocol::password::scram_sha_256(b"Secret123");
        assert_eq!(matches(&v, "r", "Secret123"), Some(true));
        assert_eq!(matches(&v, "r", "Secret124"), Some(false));
    }

    #[test]
    fn base64_as_postgres_writes_it() {
        assert_eq!(base64_decode("cGVuY2ls").unwrap(), b"pencil");
        assert_eq!(base64_decode("cGVuY2lsMQ==").unwrap(), b"pencil1");
        assert_eq!(base64_decode("c$"), None);
    }

    #[test]
    fn md5_verifiers() {
        let v = postgres_protocol::password::md5(b"pw", "app_user");
        assert_eq!(matches(&v, "app_user", "pw"), Some(true));
        assert_eq!(matches(&v, "app_user", "other"), Some(false));
        assert_eq!(matches("", "app_user", "pw"), None);
    }
}
