//! Admin URLs (`postgres://user:pw@host:port/db`, `redis://user:pw@host:port/0`),
//! split so the password never travels on a command line or into a log.

/// A parsed service URL. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceUrl {
    pub scheme: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    pub path: String,
}

impl std::fmt::Debug for ServiceUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.redacted())
    }
}

impl ServiceUrl {
    pub fn parse(url: &str) -> Option<Self> {
        let (scheme, rest) = url.split_once("://")?;
        let (auth, hostpart) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        let (hostport, path) = match hostpart.find(['/', '?']) {
            Some(i) => (
                &hostpart[..i],
                hostpart[i..].trim_start_matches('/').to_string(),
            ),
            None => (hostpart, String::new()),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => {
                (h.to_string(), Some(p.parse().ok()?))
            }
            _ => (hostport.to_string(), None),
        };
        let (user, password) = match auth {
            Some(a) => match a.split_once(':') {
                Some((u, p)) => (Some(decode(u)).filter(|u| !u.is_empty()), Some(decode(p))),
                None => (Some(decode(a)), None),
            },
            None => (None, None),
        };
        Some(Self {
            scheme: scheme.to_string(),
            user,
            password,
            host: if host.is_empty() {
                "localhost".into()
            } else {
                host
            },
            port,
            path,
        })
    }

    /// The URL with the password replaced, for messages.
    pub fn redacted(&self) -> String {
        let auth = match (&self.user, &self.password) {
            (Some(u), Some(_)) => format!("{u}:****@"),
            (Some(u), None) => format!("{u}@"),
            (None, Some(_)) => ":****@".to_string(),
            (None, None) => String::new(),
        };
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        format!("{}://{auth}{}{port}/{}", self.scheme, self.host, self.path)
    }
}

pub(crate) fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_redacts() {
        let u =
            ServiceUrl::parse("postgresql://admin:p%40ss@db.local:5433/postgres?sslmode=disable")
                .unwrap();
        assert_eq!(u.user.as_deref(), Some("admin"));
        assert_eq!(u.password.as_deref(), Some("p@ss"));
        assert_eq!((u.host.as_str(), u.port), ("db.local", Some(5433)));
        assert_eq!(u.path, "postgres?sslmode=disable");
        assert_eq!(
            u.redacted(),
            "postgresql://admin:****@db.local:5433/postgres?sslmode=disable"
        );
        assert!(!format!("{u:?}").contains("p@ss"));
        let r = ServiceUrl::parse("redis://127.0.0.1:6379").unwrap();
        assert_eq!((r.user, r.password, r.port), (None, None, Some(6379)));
        let r = ServiceUrl::parse("redis://:secret@h:1/0").unwrap();
        assert_eq!((r.user, r.password.as_deref()), (None, Some("secret")));
    }
}
