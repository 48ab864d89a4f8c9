//! Reading the audit log as it grows. Each [`AuditTail::read`] hands over only the
//! records written since the one before, so a reader that keeps running totals
//! (`berth serve`) pays for what is new, not for the whole history.
//!
//! - Local (`.berth/audit.jsonl`): the tail keeps the byte offset it has read up
//!   to. A last line without its newline is a record still being written: it is
//!   left for the next read. A file shorter than the offset, a different file (device
//!   and inode), or one that no longer starts with the bytes it started with has
//!   been truncated or replaced: the tail hands over [`Appended::Restart`] and reads
//!   it again from its first byte.
//! - PostgreSQL (`berth_audit`): the tail keeps the highest `id` it has read. Ids
//!   are handed out when an INSERT runs, not when it commits, so a row can become
//!   visible after a row with a higher id (two products deploying at once). Rows
//!   younger than [`SETTLE`] (by their `at`, the inserting transaction's start) are
//!   read again on the next pass and skipped if already handed over; the tail's
//!   low-water mark only moves past rows older than that. A table that was dropped
//!   and created again, rewritten (TRUNCATE, VACUUM FULL) or whose ids went back is
//!   a restart, read again from its first row. Rows deleted from the middle are not
//!   noticed: the log is append-only.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use berth_provision::session::PgSession;
use berth_provision::url::ServiceUrl;

use crate::store::{Store, dollar, local_audit_path, open_state_within};

/// What a read hands over, in the order the log holds it.
#[derive(Debug, Clone, PartialEq)]
pub enum Appended {
    /// The log was truncated or replaced: forget every record handed over before;
    /// the records that follow are the log from its start.
    Restart,
    Record(serde_json::Value),
}

/// A row of `berth_audit` younger than this may still have a lower id committing
/// behind it, so it is read again until it is older. berth writes each audit row
/// in a single-statement transaction, which takes milliseconds.
pub const SETTLE: Duration = Duration::from_secs(60);

/// How many leading bytes of the local file identify it.
const HEAD: usize = 256;

/// Rows per query on PostgreSQL (the first read of a long table is paged).
const PAGE: usize = 5000;

/// How long the state database may take to connect or answer one query of a read:
/// a stalled server or a partitioned network is an error after this, not a hang.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a reader of the audit log has got to; see the module documentation.
pub struct AuditTail {
    /// Only records of this step (every record when `None`).
    step: Option<String>,
    at: Position,
}

enum Position {
    Local(LocalTail),
    Postgres(Box<PgTail>),
}

struct LocalTail {
    path: PathBuf,
    /// Bytes read so far; always just after a newline.
    offset: u64,
    /// (device, inode) of the file that was read.
    id: Option<(u64, u64)>,
    /// The file's first bytes, as read: `min(offset, HEAD)` of them.
    head: Vec<u8>,
}

struct PgTail {
    url: ServiceUrl,
    /// Kept between reads; dropped after an error and opened again on the next read.
    session: Option<PgSession>,
    settle: Duration,
    /// Bounds connecting and each query ([`READ_TIMEOUT`]).
    timeout: Duration,
    /// (oid, file node) of the table that was read.
    table: Option<(String, String)>,
    /// Every row with an id up to this one has been handed over (or was younger
    /// than `settle` behind a row that is not).
    low: i64,
    /// Rows above `low` already handed over.
    seen: BTreeSet<i64>,
}

impl AuditTail {
    /// A tail at the start of `store`'s audit log, handing over the records whose
    /// `step` is `step` (every record when `None`).
    pub fn new(store: &Store, step: Option<&str>) -> Self {
        let at = match store {
            Store::Local(root) => Position::Local(LocalTail {
                path: local_audit_path(root),
                offset: 0,
                id: None,
                head: Vec::new(),
            }),
            Store::Postgres { url, .. } => Position::Postgres(Box::new(PgTail {
                url: url.clone(),
                session: None,
                settle: SETTLE,
                timeout: READ_TIMEOUT,
                table: None,
                low: 0,
                seen: BTreeSet::new(),
            })),
        };
        Self {
            step: step.map(str::to_string),
            at,
        }
    }

    /// Hand the records written since the last read to `each`, oldest first
    /// (records that are not JSON are skipped: the log is a record, not a source
    /// of truth). On an error, what was handed over before it stays read.
    pub fn read(&mut self, mut each: impl FnMut(Appended)) -> Result<(), String> {
        let step = self.step.as_deref();
        match &mut self.at {
            Position::Local(t) => t.read(step, &mut each),
            Position::Postgres(t) => {
                // A kept session may have been closed meanwhile (idle_session_timeout,
                // a pooler, a restart): one more try on a fresh one before an error.
                // Not after a timeout: a stalled server would stall the fresh one too.
                let kept = t.session.is_some();
                let mut r = t.read(step, &mut each);
                if r.is_err() {
                    let stalled = t.session.as_ref().is_some_and(PgSession::timed_out);
                    t.session = None;
                    if kept && !stalled {
                        r = t.read(step, &mut each);
                        if r.is_err() {
                            t.session = None;
                        }
                    }
                }
                r
            }
        }
    }
}

/// The text every compact record of `step` holds: lines without it are skipped
/// before they are parsed.
fn needle(step: Option<&str>) -> Option<String> {
    step.map(|st| format!("\"step\":{}", serde_json::json!(st)))
}

/// One line of the local log as a record, if it is one of `step`.
fn record(line: &[u8], needle: Option<&str>, step: Option<&str>) -> Option<serde_json::Value> {
    let line = std::str::from_utf8(line).ok()?;
    if needle.is_some_and(|n| !line.contains(n)) {
        return None;
    }
    let r: serde_json::Value = serde_json::from_str(line).ok().or_else(|| {
        // A record glued onto a torn line (a writer killed mid-record, then an
        // append by a berth that did not end the torn line first): the record
        // is the longest tail of the line that is a JSON object.
        line.match_indices("{\"")
            .skip_while(|(i, _)| *i == 0)
            .find_map(|(i, _)| serde_json::from_str::<serde_json::Value>(&line[i..]).ok())
            .filter(serde_json::Value::is_object)
    })?;
    step.is_none_or(|st| r["step"].as_str() == Some(st))
        .then_some(r)
}

#[cfg(unix)]
fn file_id(meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn file_id(_: &std::fs::Metadata) -> Option<(u64, u64)> {
    None
}

impl LocalTail {
    fn forget(&mut self) {
        self.offset = 0;
        self.head.clear();
    }

    fn read(&mut self, step: Option<&str>, each: &mut dyn FnMut(Appended)) -> Result<(), String> {
        let path = self.path.clone();
        let err = |e: std::io::Error| format!("could not read {}: {e}", path.display());
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if self.offset > 0 {
                    self.forget();
                    each(Appended::Restart);
                }
                return Ok(());
            }
            Err(e) => return Err(err(e)),
        };
        let meta = file.metadata().map_err(err)?;
        let id = file_id(&meta);
        if self.offset > 0 && !self.still_same(&mut file, id, meta.len()).map_err(err)? {
            self.forget();
            each(Appended::Restart);
        }
        self.id = id;
        file.seek(SeekFrom::Start(self.offset)).map_err(err)?;
        let mut reader = BufReader::with_capacity(64 * 1024, file);
        let needle = needle(step);
        let mut line = Vec::with_capacity(1024);
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).map_err(err)?;
            if n == 0 || line.last() != Some(&b'\n') {
                // The end, or a record still being written: left for the next read.
                return Ok(());
            }
            if self.head.len() < HEAD {
                let more = (HEAD - self.head.len()).min(n);
                self.head.extend_from_slice(&line[..more]);
            }
            self.offset += n as u64;
            if let Some(r) = record(&line, needle.as_deref(), step) {
                each(Appended::Record(r));
            }
        }
    }

    /// Whether `file` is the file read so far, grown or not: the same inode, at
    /// least as long, starting with the same bytes, and a newline just before the offset.
    fn still_same(
        &self,
        file: &mut File,
        id: Option<(u64, u64)>,
        len: u64,
    ) -> std::io::Result<bool> {
        if id != self.id || len < self.offset {
            return Ok(false);
        }
        let mut head = vec![0; self.head.len()];
        file.seek(SeekFrom::Start(0))?;
        file.read_exact(&mut head)?;
        if head != self.head {
            return Ok(false);
        }
        let mut last = [0u8];
        file.seek(SeekFrom::Start(self.offset - 1))?;
        file.read_exact(&mut last)?;
        Ok(last[0] == b'\n')
    }
}

impl PgTail {
    fn read(&mut self, step: Option<&str>, each: &mut dyn FnMut(Appended)) -> Result<(), String> {
        let s = match &mut self.session {
            Some(s) => s,
            None => self
                .session
                .insert(open_state_within(&self.url, Some(self.timeout))?),
        };
        s.set_timeout(self.timeout);
        let what = |e: String| format!("reading the audit table at {}: {e}", self.url.redacted());
        let head = s
            .query(
                "SELECT 'berth_audit'::regclass::oid, pg_relation_filenode('berth_audit'), coalesce(max(id), 0) FROM berth_audit",
            )
            .map_err(|e| what(e.into()))?;
        let mut head = head.first().map(|l| l.split('|')).into_iter().flatten();
        let (Some(oid), Some(node), Some(top)) = (head.next(), head.next(), head.next()) else {
            return Err(what("no answer to a query of its size".into()));
        };
        let table = Some((oid.to_string(), node.to_string()));
        let top: i64 = top
            .parse()
            .map_err(|_| what(format!("`{top}` is not an id")))?;
        let high = self.seen.last().copied().unwrap_or(0).max(self.low);
        if self.table.is_some() && (table != self.table || top < high) {
            self.low = 0;
            self.seen.clear();
            each(Appended::Restart);
        }
        self.table = table;
        let filter = step
            .map(|st| format!(" AND record->>'step' = {}", dollar(st)))
            .unwrap_or_default();
        let settle_ms = self.settle.as_millis();
        let mut after = self.low;
        let mut settled = self.low;
        loop {
            let rows = s
                .query(&format!(
                    "SELECT id, at < now() - interval '{settle_ms} milliseconds', record::text FROM berth_audit \
                     WHERE id > {after}{filter} ORDER BY id LIMIT {PAGE}"
                ))
                .map_err(|e| what(e.into()))?;
            for row in &rows {
                let mut cols = row.splitn(3, '|');
                let (Some(id), Some(old), Some(text)) = (cols.next(), cols.next(), cols.next())
                else {
                    return Err(what("a row without its id, age and record".into()));
                };
                let id: i64 = id
                    .parse()
                    .map_err(|_| what(format!("`{id}` is not an id")))?;
                after = id;
                if old == "t" {
                    settled = id;
                }
                if self.seen.insert(id)
                    && let Ok(r) = serde_json::from_str(text)
                {
                    each(Appended::Record(r));
                }
            }
            if rows.len() < PAGE {
                break;
            }
        }
        // Nothing below a row older than `settle` can still commit: keep only what is above it.
        self.low = settled;
        self.seen = self.seen.split_off(&(settled + 1));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn records(tail: &mut AuditTail) -> Vec<Appended> {
        let mut out = Vec::new();
        tail.read(|a| out.push(a)).expect("read the audit log");
        out
    }

    /// The `n` fields of the records handed over (`R` for a restart).
    fn ns(got: &[Appended]) -> Vec<String> {
        got.iter()
            .map(|a| match a {
                Appended::Restart => "R".to_string(),
                Appended::Record(r) => r["n"].to_string(),
            })
            .collect()
    }

    fn line(n: u32, step: &str) -> String {
        format!("{{\"product\":\"a\",\"step\":\"{step}\",\"n\":{n}}}\n")
    }

    fn append(path: &std::path::Path, text: &str) {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }

    #[test]
    fn local_tail_reads_only_what_was_appended_and_waits_for_a_whole_line() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::Local(dir.path().to_path_buf());
        let path = local_audit_path(dir.path());
        let mut tail = AuditTail::new(&store, Some("deploy"));
        assert!(records(&mut tail).is_empty(), "no log yet: nothing");

        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        append(
            &path,
            &format!(
                "{}{}not json\n{}",
                line(1, "deploy"),
                line(2, "lock"),
                line(3, "deploy")
            ),
        );
        assert_eq!(ns(&records(&mut tail)), ["1", "3"]);
        assert!(records(&mut tail).is_empty(), "nothing new");

        // A record half written: nothing until its newline arrives.
        let next = line(4, "deploy");
        let (first, rest) = next.split_at(10);
        append(&path, first);
        assert!(records(&mut tail).is_empty(), "a partial line waits");
        append(&path, rest);
        append(&path, &line(5, "deploy"));
        assert_eq!(ns(&records(&mut tail)), ["4", "5"]);

        // Every step, from a second tail: the whole log.
        let mut all = AuditTail::new(&store, None);
        assert_eq!(ns(&records(&mut all)), ["1", "2", "3", "4", "5"]);
    }

    #[test]
    fn a_torn_line_swallows_no_record_written_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::Local(dir.path().to_path_buf());
        let path = local_audit_path(dir.path());
        let mut tail = AuditTail::new(&store, Some("deploy"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        // A writer killed in the middle of its record.
        let torn = line(1, "deploy");
        append(&path, &torn[..15]);
        assert!(records(&mut tail).is_empty(), "a partial line waits");
        // The next record is written by berth's store: it ends the torn line first.
        store.audit(
            None,
            "a",
            &serde_json::json!({"product": "a", "step": "deploy", "n": 2}),
        );
        store.audit(
            None,
            "a",
            &serde_json::json!({"product": "a", "step": "deploy", "n": 3}),
        );
        assert_eq!(ns(&records(&mut tail)), ["2", "3"]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(
            text.lines()
                .skip(1)
                .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
        );

        // A log written by an older berth, with a record glued onto a torn line.
        append(&path, &format!("{}{}", &torn[..15], line(4, "deploy")));
        assert_eq!(ns(&records(&mut tail)), ["4"]);
        let mut all = AuditTail::new(&store, None);
        assert_eq!(ns(&records(&mut all)), ["2", "3", "4"]);
    }

    #[test]
    fn local_tail_starts_over_when_the_log_is_truncated_replaced_or_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::Local(dir.path().to_path_buf());
        let path = local_audit_path(dir.path());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut tail = AuditTail::new(&store, Some("deploy"));
        append(
            &path,
            &format!("{}{}", line(1, "deploy"), line(2, "deploy")),
        );
        assert_eq!(ns(&records(&mut tail)), ["1", "2"]);

        // Truncated to less than was read.
        std::fs::write(&path, line(3, "deploy")).unwrap();
        assert_eq!(ns(&records(&mut tail)), ["R", "3"]);

        // Truncated in place and written past the old offset before the next read:
        // same inode, longer, but it no longer starts as it did.
        std::fs::write(
            &path,
            format!(
                "{}{}{}",
                line(6, "deploy"),
                line(7, "deploy"),
                line(8, "deploy")
            ),
        )
        .unwrap();
        assert_eq!(ns(&records(&mut tail)), ["R", "6", "7", "8"]);

        // Replaced by another file (a rotation) that starts the same and is longer.
        let copy = dir.path().join("copy.jsonl");
        std::fs::copy(&path, &copy).unwrap();
        append(&copy, &line(9, "deploy"));
        std::fs::rename(&copy, &path).unwrap();
        assert_eq!(ns(&records(&mut tail)), ["R", "6", "7", "8", "9"]);

        // Removed, then written again.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(ns(&records(&mut tail)), ["R"]);
        assert!(
            records(&mut tail).is_empty(),
            "one restart, not one per read"
        );
        append(&path, &line(10, "deploy"));
        assert_eq!(ns(&records(&mut tail)), ["10"]);
    }

    fn pg_store(pg: &berth_testkit::Postgres) -> (Store, ServiceUrl) {
        let url = ServiceUrl::parse(&pg.admin_url()).unwrap();
        (
            Store::Postgres {
                url: url.clone(),
                project: "p".into(),
                root: std::env::temp_dir(),
            },
            url,
        )
    }

    fn audit(store: &Store, n: u32, step: &str) {
        store.audit(
            None,
            "a",
            &serde_json::json!({"product": "a", "step": step, "n": n}),
        );
    }

    #[test]
    fn postgres_tail_reads_new_rows_and_a_row_that_commits_after_a_higher_id() {
        let pg = berth_testkit::Postgres::start();
        let (store, url) = pg_store(&pg);
        let mut tail = AuditTail::new(&store, Some("deploy"));
        assert!(records(&mut tail).is_empty(), "an empty table: nothing");
        audit(&store, 1, "deploy");
        audit(&store, 2, "lock");
        audit(&store, 3, "deploy");
        assert_eq!(ns(&records(&mut tail)), ["1", "3"]);
        assert!(records(&mut tail).is_empty(), "nothing new");

        // A transaction takes an id and commits after a later insert has.
        let mut slow = PgSession::open(&url, None).unwrap();
        slow.query("BEGIN").unwrap();
        slow.query(r#"INSERT INTO berth_audit (product, record) VALUES ('a', '{"product":"a","step":"deploy","n":4}')"#)
            .unwrap();
        audit(&store, 5, "deploy");
        assert_eq!(ns(&records(&mut tail)), ["5"]);
        slow.query("COMMIT").unwrap();
        assert_eq!(
            ns(&records(&mut tail)),
            ["4"],
            "the row that committed late is read, once"
        );
        assert!(records(&mut tail).is_empty());

        // Rows older than the settle time move the low-water mark: they are not read again.
        let Position::Postgres(t) = &mut tail.at else {
            unreachable!()
        };
        t.settle = Duration::ZERO;
        audit(&store, 6, "deploy");
        assert_eq!(ns(&records(&mut tail)), ["6"]);
        let Position::Postgres(t) = &tail.at else {
            unreachable!()
        };
        assert!(t.seen.is_empty() && t.low > 0, "low {}", t.low);
        assert!(records(&mut tail).is_empty());

        // Paged: more rows than one query returns.
        let many = PAGE as u32 + 10;
        pg.admin(&format!(
            "INSERT INTO berth_audit (product, record) SELECT 'a', jsonb_build_object('product', 'a', 'step', 'deploy', 'n', g) FROM generate_series(100, {}) g",
            99 + many
        ));
        let got = records(&mut tail);
        assert_eq!(got.len(), many as usize);
        assert_eq!(ns(&got[..1]), ["100"]);

        // Emptied and its ids restarted: read again from its first row.
        pg.admin("TRUNCATE berth_audit RESTART IDENTITY");
        audit(&store, 7, "deploy");
        assert_eq!(ns(&records(&mut tail)), ["R", "7"]);
        // The kept session closed by the server (an idle timeout, a restart): the
        // next read opens another one without reporting an error.
        pg.admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
        );
        audit(&store, 9, "deploy");
        assert_eq!(ns(&records(&mut tail)), ["9"]);
        // Dropped: the kept session fails, the fresh one (which creates the table, as
        // every state session does) reads the new, empty table from its start.
        pg.admin("DROP TABLE berth_audit");
        assert_eq!(ns(&records(&mut tail)), ["R"]);
        audit(&store, 10, "deploy");
        assert_eq!(ns(&records(&mut tail)), ["10"]);
    }

    /// A stalled server (every process of the cluster SIGSTOPped): the read is an
    /// error within the tail's timeout, not a hang; after SIGCONT the next read
    /// recovers on a fresh session and hands over what was written meanwhile.
    #[test]
    fn postgres_tail_notices_a_stalled_server_and_recovers() {
        let pg = berth_testkit::Postgres::start();
        let (store, _) = pg_store(&pg);
        let mut tail = AuditTail::new(&store, Some("deploy"));
        audit(&store, 1, "deploy");
        assert_eq!(ns(&records(&mut tail)), ["1"]);
        let Position::Postgres(t) = &mut tail.at else {
            unreachable!()
        };
        t.timeout = Duration::from_secs(2);

        pg.pause();
        let start = std::time::Instant::now();
        let r = tail.read(|_| {});
        let took = start.elapsed();
        pg.resume();
        let e = r.expect_err("a stalled server is an error");
        assert!(e.contains("no answer within 2s"), "{e}");
        assert!(!e.contains(&pg.password), "{e}");
        assert!(took < Duration::from_secs(6), "noticed after {took:?}");

        audit(&store, 2, "deploy");
        assert_eq!(ns(&records(&mut tail)), ["2"], "recovered");
    }
}
