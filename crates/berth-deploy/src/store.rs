//! Where deploy locks, manual holds and the audit log live: this machine
//! (`local`: OS file locks, `.berth/audit.jsonl`) or a shared PostgreSQL
//! (`postgres`: advisory locks held by a session berth owns for the whole deploy, so
//! they vanish with the session if berth dies; the audit in a `berth_audit` table).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_manifest::{Manifest, StateBackend};
use berth_provision::session::PgSession;
use berth_provision::url::ServiceUrl;

use crate::lock::{self, DeployLock, Holder, LockError};

/// A session on the state database, its tables created.
pub(crate) fn open_state(url: &ServiceUrl) -> Result<PgSession, String> {
    open_state_within(url, Some(STATE_TIMEOUT))
}

/// How long the state database may take to connect or answer one statement (its
/// statements are small: a lock, a row): a stalled server fails the step, not hangs it.
const STATE_TIMEOUT: Duration = Duration::from_secs(60);

/// [`open_state`], connecting and answering each statement within `timeout`.
pub(crate) fn open_state_within(
    url: &ServiceUrl,
    timeout: Option<Duration>,
) -> Result<PgSession, String> {
    let s = match timeout {
        Some(t) => PgSession::open_within(url, None, t),
        None => PgSession::open(url, None),
    };
    let mut s = s.map_err(|e| format!("the state database is not reachable: {e}"))?;
    s.query(
        "CREATE TABLE IF NOT EXISTS berth_audit (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), product text NOT NULL, record jsonb NOT NULL); \
         CREATE TABLE IF NOT EXISTS berth_locks (product text PRIMARY KEY, holder jsonb NOT NULL); \
         CREATE TABLE IF NOT EXISTS berth_holds (product text PRIMARY KEY, holder jsonb NOT NULL)",
    )
    .map_err(|e| format!("the state database at {} is not usable: {e}", url.redacted()))?;
    Ok(s)
}

/// The holder row written by the session that holds the lock now. The winner of a
/// race writes its row just after it locks: wait a moment for it rather than
/// report the row an earlier, finished deploy left.
fn live_holder(s: &mut PgSession, project: &str, product: &str) -> Option<Holder> {
    let sql = format!(
        "SELECT b.holder FROM berth_locks b WHERE b.product = {} AND EXISTS (SELECT 1 FROM pg_locks l \
         WHERE l.locktype = 'advisory' AND l.granted AND l.pid = (b.holder->>'session_pid')::int \
         AND ((l.classid::bigint << 32) | l.objid::bigint) = {})",
        dollar(product),
        Store::key(project, product)
    );
    lock::within_a_moment(|| {
        s.query(&sql)
            .ok()
            .and_then(|rows| rows.first().and_then(|h| serde_json::from_str(h).ok()))
    })
}

/// A failure talking to the state database, as a lock error naming it (password hidden).
fn io_err(url: &ServiceUrl) -> impl Fn(String) -> LockError + '_ {
    move |e| LockError::Io {
        path: url.redacted(),
        source: std::io::Error::other(e),
    }
}

pub(crate) fn dollar(s: &str) -> String {
    format!("$berth${}$berth$", s.replace("$berth$", ""))
}

fn insert_audit(product: &str, record: &serde_json::Value) -> String {
    format!(
        "INSERT INTO berth_audit (product, record) VALUES ({}, {}::jsonb)",
        dollar(product),
        dollar(&record.to_string())
    )
}

/// Where audit records wait while the PostgreSQL state database is unreachable.
pub(crate) fn pending_path(root: &Path) -> PathBuf {
    root.join(".berth/audit.pending.jsonl")
}

/// Keep one audit record for the state database (`{"product", "record"}` per line).
fn append_pending(path: &Path, product: &str, record: &serde_json::Value) -> std::io::Result<()> {
    protect_local_audit(path)?;
    let f = std::fs::OpenOptions::new().append(true).open(path)?;
    f.lock()?;
    append_local_record(
        path,
        &serde_json::json!({"product": product, "record": record}),
    )
}

/// Write the audit records kept while the state database was unreachable, in the
/// order they were kept, in one transaction; then empty the file. Under the file's
/// lock, so two berth processes never write them twice.
fn flush_pending(root: &Path, s: &mut PgSession) {
    use std::io::{Read, Seek};
    let path = pending_path(root);
    let Ok(mut f) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
    else {
        return;
    };
    if f.lock().is_err() {
        return;
    }
    let mut text = String::new();
    if f.read_to_string(&mut text).is_err() || text.trim().is_empty() {
        return;
    }
    let mut rows = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        // A torn line (a writer killed mid-record) cannot be parsed: it is dropped.
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if let (Some(p), Some(r)) = (v["product"].as_str(), v.get("record")) {
            rows.push(format!(
                "({}, {}::jsonb)",
                dollar(p),
                dollar(&r.to_string())
            ));
        }
    }
    if rows.is_empty() {
        return;
    }
    // One statement: all of them or none.
    let sql = format!(
        "INSERT INTO berth_audit (product, record) VALUES {}",
        rows.join(", ")
    );
    match s.query(&sql) {
        Ok(_) => {
            let _ = f
                .set_len(0)
                .and_then(|_| f.rewind())
                .and_then(|_| f.sync_all());
            tracing::info!(
                "wrote {} audit records kept in {} while the state database was unreachable",
                rows.len(),
                path.display()
            );
        }
        Err(e) => {
            tracing::warn!(
                "could not write the audit records kept in {}: {e}",
                path.display()
            );
        }
    }
}

/// Append one record as one line. A torn last line (a writer killed mid-record)
/// is ended first, so it cannot swallow this record.
fn append_local_record(path: &Path, record: &serde_json::Value) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    let len = f.metadata()?.len();
    let mut torn = false;
    if len > 0 {
        let mut last = [0u8];
        f.seek(SeekFrom::Start(len - 1))?;
        f.read_exact(&mut last)?;
        torn = last[0] != b'\n';
    }
    // One write per record: an appended line never interleaves with another
    // writer's, and a reader sees it whole or as an unfinished last line.
    let line = format!("{}{record}\n", if torn { "\n" } else { "" });
    let written = f.write_all(line.as_bytes());
    if written.is_err() {
        // A full disk took part of the line: take that part back (only when what
        // follows the old end is a piece of this line, not another writer's record).
        let mut tail = Vec::new();
        if f.seek(SeekFrom::Start(len)).is_ok()
            && f.read_to_end(&mut tail).is_ok()
            && !tail.is_empty()
            && line.as_bytes().starts_with(&tail)
        {
            let _ = f.set_len(len);
        }
    }
    written
}

/// The local audit log of the project at `root`.
pub(crate) fn local_audit_path(root: &Path) -> PathBuf {
    root.join(".berth/audit.jsonl")
}

/// Make the local audit log exist readable by its owner only, before anything is
/// appended: it records who deployed what and why steps failed. A log an older
/// berth left 0644 is made 0600 too.
fn protect_local_audit(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    if f.metadata()?.permissions().mode() & 0o077 != 0 {
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// The store configured by `[state]`.
pub enum Store {
    Local(PathBuf),
    /// `root`: the project, whose `.berth/audit.pending.jsonl` keeps the audit records
    /// that could not be written while the state database was unreachable.
    Postgres {
        url: ServiceUrl,
        project: String,
        root: PathBuf,
    },
}

/// Holds a product's deploy lock until dropped.
pub enum Guard {
    Local(DeployLock),
    Postgres(Box<PgSession>),
}

impl Store {
    pub fn from_manifest(m: &Manifest, root: &Path) -> Result<Self, String> {
        match m.state.backend {
            StateBackend::Local => Ok(Self::Local(root.to_path_buf())),
            StateBackend::Postgres => {
                let var = &m.state.url_env;
                let value = std::env::var(var)
                    .ok()
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| format!("[state] backend = \"postgres\" needs ${var}: the URL of the shared PostgreSQL"))?;
                let url = ServiceUrl::parse(&value).ok_or_else(|| {
                    format!("${var} is not a URL like postgresql://user:password@host:port/db")
                })?;
                Ok(Self::Postgres {
                    url,
                    project: berth_manifest::slug(&m.project.name),
                    root: root.to_path_buf(),
                })
            }
        }
    }

    fn key(project: &str, product: &str) -> String {
        format!(
            "hashtext({})",
            dollar(&format!("berth:{project}:{product}"))
        )
    }

    pub fn acquire(
        &self,
        product: &str,
        holder: &Holder,
        wait: Duration,
    ) -> Result<Guard, LockError> {
        match self {
            Self::Local(root) => DeployLock::acquire(root, product, holder, wait).map(Guard::Local),
            Self::Postgres { url, project, root } => {
                let io = io_err(url);
                let mut s = open_state(url).map_err(&io)?;
                flush_pending(root, &mut s);
                let held = s
                    .query(&format!(
                        "SELECT holder FROM berth_holds WHERE product = {}",
                        dollar(product)
                    ))
                    .map_err(|e| io(e.into()))?;
                if let Some(h) = held.first().and_then(|h| serde_json::from_str(h).ok()) {
                    return Err(LockError::Held {
                        product: product.to_string(),
                        holder: h,
                    });
                }
                let start = Instant::now();
                loop {
                    let got = s
                        .query(&format!(
                            "SELECT pg_try_advisory_lock({})",
                            Self::key(project, product)
                        ))
                        .map_err(|e| io(e.into()))?;
                    if got.first().map(String::as_str) == Some("t") {
                        let h = serde_json::to_string(holder).expect("serializable");
                        // The row names the session holding the lock, so a reader can tell it
                        // from the row a finished deploy left behind.
                        s.query(&format!(
                            "INSERT INTO berth_locks (product, holder) VALUES ({}, jsonb_set({}::jsonb, '{{session_pid}}', to_jsonb(pg_backend_pid()))) ON CONFLICT (product) DO UPDATE SET holder = EXCLUDED.holder",
                            dollar(product),
                            dollar(&h)
                        ))
                        .map_err(|e| io(e.into()))?;
                        return Ok(Guard::Postgres(Box::new(s)));
                    }
                    if start.elapsed() >= wait {
                        let holder = live_holder(&mut s, project, product).unwrap_or(Holder {
                            operator: "another berth process".into(),
                            pid: 0,
                            since: "unknown".into(),
                            message: String::new(),
                        });
                        return Err(LockError::Locked {
                            product: product.to_string(),
                            holder,
                        });
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }

    /// Append one typed audit record (through the lock's session when there is one).
    pub fn record(&self, guard: Option<&mut Guard>, record: &crate::record::AuditRecord) {
        self.audit(guard, &record.product, &record.to_value());
    }

    /// Append one audit record (through the lock's session when there is one).
    pub fn audit(&self, guard: Option<&mut Guard>, product: &str, record: &serde_json::Value) {
        if let Self::Local(root) = self
            && let Err(e) = protect_local_audit(&local_audit_path(root))
        {
            tracing::warn!("could not make the audit log private: {e}");
        }
        match self {
            Self::Local(root) => {
                let path = local_audit_path(root);
                if let Err(e) = append_local_record(&path, record) {
                    tracing::warn!(
                        "could not write the audit record to {}: {e}",
                        path.display()
                    );
                }
            }
            Self::Postgres { url, root, .. } => {
                let sql = insert_audit(product, record);
                let mut result = match guard {
                    Some(Guard::Postgres(s)) => s.execute(&sql).map(|_| ()).map_err(String::from),
                    _ => Err(String::new()),
                };
                // The lock's session is gone (the state database restarted or went
                // away): a new session, when the server answers again.
                if result.is_err() {
                    result = open_state(url).and_then(|mut s| {
                        flush_pending(root, &mut s);
                        s.execute(&sql).map(|_| ()).map_err(String::from)
                    });
                }
                if let Err(e) = result {
                    let pending = pending_path(root);
                    let kept = append_pending(&pending, product, record);
                    tracing::warn!(
                        "could not write the audit record to {}: {e}; {}",
                        url.redacted(),
                        match kept {
                            Ok(()) => format!(
                                "kept in {} until the next berth command reaches it",
                                pending.display()
                            ),
                            Err(k) =>
                                format!("keeping it in {} failed too: {k}", pending.display()),
                        }
                    );
                }
            }
        }
    }

    /// Who holds the deploy lock now.
    pub fn current_holder(&self, product: &str) -> Option<Holder> {
        match self {
            Self::Local(root) => lock::current_holder(root, product),
            Self::Postgres { url, project, .. } => {
                let mut s = open_state(url).ok()?;
                let got = s
                    .query(&format!(
                        "SELECT pg_try_advisory_lock({})",
                        Self::key(project, product)
                    ))
                    .ok()?;
                if got.first().map(String::as_str) == Some("t") {
                    return None; // free (and released when this session ends)
                }
                live_holder(&mut s, project, product)
            }
        }
    }

    /// Whether the deploy lock `guard` was taken with is still held: with the
    /// PostgreSQL backend, the advisory lock lives as long as the session that took
    /// it, and a state database that restarted or went away took it with it.
    pub fn still_held(&self, guard: Option<&mut Guard>) -> Result<(), String> {
        match (self, guard) {
            (Self::Postgres { url, .. }, Some(Guard::Postgres(s))) => {
                s.query("SELECT 1").map(|_| ()).map_err(|e| {
                    format!(
                        "the deploy lock was lost: its session on the state database {} ended ({e}); \
                         another deploy may have taken the lock meanwhile, so traffic was not switched",
                        url.redacted()
                    )
                })
            }
            _ => Ok(()),
        }
    }

    pub fn read_hold(&self, product: &str) -> Option<Holder> {
        match self {
            Self::Local(root) => lock::read_hold(root, product),
            Self::Postgres { url, .. } => {
                let mut s = open_state(url).ok()?;
                let h = s
                    .query(&format!(
                        "SELECT holder FROM berth_holds WHERE product = {}",
                        dollar(product)
                    ))
                    .ok()?;
                h.first().and_then(|h| serde_json::from_str(h).ok())
            }
        }
    }

    pub fn hold(&self, product: &str, holder: &Holder) -> Result<(), LockError> {
        match self {
            Self::Local(root) => lock::hold(root, product, holder),
            Self::Postgres { url, .. } => {
                if let Some(h) = self.read_hold(product) {
                    return Err(LockError::Held {
                        product: product.to_string(),
                        holder: h,
                    });
                }
                let mut s = open_state(url).map_err(io_err(url))?;
                s.query(&format!(
                    "INSERT INTO berth_holds (product, holder) VALUES ({}, {}::jsonb)",
                    dollar(product),
                    dollar(&serde_json::to_string(holder).expect("serializable"))
                ))
                .map(|_| ())
                .map_err(|e| io_err(url)(e.into()))
            }
        }
    }

    pub fn release(&self, product: &str) -> Result<Option<Holder>, LockError> {
        match self {
            Self::Local(root) => lock::release(root, product),
            Self::Postgres { url, .. } => {
                let h = self.read_hold(product);
                if h.is_some() {
                    let mut s = open_state(url).map_err(io_err(url))?;
                    let _ = s.query(&format!(
                        "DELETE FROM berth_holds WHERE product = {}",
                        dollar(product)
                    ));
                }
                Ok(h)
            }
        }
    }
}
