//! A long-lived psql session: one connection, many queries, for work that must
//! stay in one transaction or hold a session-level lock (advisory locks, an
//! exported snapshot). The password travels in PGPASSWORD, never argv.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use crate::url::ServiceUrl;

const SENTINEL: &str = "__berth_end_of_reply__";
const ERROR_MARK: &str = "__berth_error__";

pub struct PgSession {
    child: Child,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
}

/// libpq connection parameters for `url` on database `db` (no password).
pub fn conninfo(url: &ServiceUrl, db: &str) -> String {
    let mut conn = format!("host={} dbname={db}", url.host);
    if let Some(p) = url.port {
        conn.push_str(&format!(" port={p}"));
    }
    if let Some(u) = &url.user {
        conn.push_str(&format!(" user={u}"));
    }
    conn
}

/// The database named in the URL's path, or `postgres`.
pub fn url_database(url: &ServiceUrl) -> &str {
    url.path
        .split('?')
        .next()
        .filter(|d| !d.is_empty())
        .unwrap_or("postgres")
}

impl PgSession {
    /// Connect to `db` (the URL's own database when `None`).
    pub fn open(url: &ServiceUrl, db: Option<&str>) -> Result<Self, String> {
        let db = db.unwrap_or_else(|| url_database(url));
        let mut c = Command::new("psql");
        c.args(["-X", "-q", "-At", "--no-password", "-d", &conninfo(url, db)])
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(pw) = &url.password {
            c.env("PGPASSWORD", pw);
        }
        let mut child = c.spawn().map_err(|e| {
            format!(
                "could not start psql for {} (install postgresql-client): {e}",
                url.redacted()
            )
        })?;
        let stdin = child.stdin.take().expect("piped");
        let out = BufReader::new(child.stdout.take().expect("piped"));
        let mut s = Self { child, stdin, out };
        s.query("SELECT 1")
            .map_err(|e| format!("could not connect to {} database {db}: {e}", url.redacted()))?;
        Ok(s)
    }

    /// Run one SQL statement and return its output lines (`-At`: unaligned, tuples
    /// only, `|` between columns). A failed statement is an `Err` with the server's message.
    pub fn query(&mut self, sql: &str) -> Result<Vec<String>, String> {
        writeln!(
            self.stdin,
            "{sql};\n\\if :ERROR\n\\echo {ERROR_MARK} :LAST_ERROR_MESSAGE\n\\endif\n\\echo {SENTINEL}"
        )
        .map_err(|e| format!("psql went away: {e}"))?;
        self.stdin
            .flush()
            .map_err(|e| format!("psql went away: {e}"))?;
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            match self.out.read_line(&mut line) {
                Ok(0) => {
                    return Err("the connection closed (check the URL and credentials)".into());
                }
                Ok(_) => {
                    let l = line.trim_end().to_string();
                    if l == SENTINEL {
                        return Ok(lines);
                    }
                    if let Some(msg) = l.strip_prefix(ERROR_MARK) {
                        // Read up to the sentinel so the session stays usable.
                        let mut rest = String::new();
                        while self.out.read_line(&mut rest).is_ok_and(|n| n > 0) {
                            if rest.trim_end() == SENTINEL {
                                break;
                            }
                            rest.clear();
                        }
                        return Err(msg.trim().to_string());
                    }
                    lines.push(l);
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

impl Drop for PgSession {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "\\q");
        let _ = self.child.wait();
    }
}
