//! Off-site backups (`[backup.offsite]`) through rclone to a real OpenSSH server and a
//! real S3-protocol server (s3s-fs), both started by the test on loopback: upload and
//! read-back, prune on both sides, restore from the remote when the local copy is
//! gone, and refused uploads failing the run; the credentials never show.

use std::path::{Path, PathBuf};

use berth_testkit::offsite::{S3, Sftp};

use crate::backup::Db;
use crate::deploy::Site;
use crate::logs::validate_json_docs;
use crate::serve::Serve;
use crate::support::{Outcome, temp_dir};

enum Server {
    Sftp(Sftp),
    S3(S3),
}

/// A product database, an off-site server and an rclone config (outside the repo).
struct Setup {
    db: Db,
    server: Server,
    _conf_dir: tempfile::TempDir,
    /// Where the server keeps bestays's copies, on this machine.
    remote_dir: PathBuf,
    /// A credential that must never be shown.
    secret: String,
    /// Everything berth printed.
    seen: String,
}

impl Setup {
    fn new(server: Server) -> Self {
        berth_testkit::require_program("rclone", &[], "apt-get install rclone");
        let db = Db::with_site(Site::new(300));
        let conf_dir = temp_dir();
        let conf = conf_dir.path().join("rclone.conf");
        let (text, remote, remote_dir, secret) = match &server {
            Server::Sftp(s) => (
                s.rclone_section("vault", false) + &s.rclone_section("vault-wrong", true),
                format!("vault:{}/berth", s.root.display()),
                s.root.join("berth/bestays"),
                s.client_key()
                    .lines()
                    .nth(2)
                    .expect("a private key line")
                    .to_string(),
            ),
            Server::S3(s) => (
                s.rclone_section("vault", false) + &s.rclone_section("vault-wrong", true),
                "vault:offsite/berth".to_string(),
                s.bucket("offsite").join("berth/bestays"),
                s.secret_key.clone(),
            ),
        };
        std::fs::write(&conf, text).unwrap();
        let before = std::fs::read_to_string(db.site.repo.path().join("berth.toml")).unwrap();
        db.site.repo.write(
            "berth.toml",
            &format!(
                "{before}\n[backup.offsite]\nremote = \"{remote}\"\nconfig = \"{}\"\n",
                conf.display()
            ),
        );
        Self {
            db,
            server,
            _conf_dir: conf_dir,
            remote_dir,
            secret,
            seen: String::new(),
        }
    }

    fn run(&mut self, args: &[&str]) -> Outcome {
        let out = self.db.run_env(args, &[]);
        self.seen.push_str(&out.stdout);
        self.seen.push_str(&out.stderr);
        out
    }

    fn backup(&mut self) -> serde_json::Value {
        let out = self.run(&["backup", "bestays", "--format", "json"]);
        out.assert_code(0);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        validate_json_docs("backup.schema.json", std::slice::from_ref(&v));
        v["backups"][0].clone()
    }

    fn remote_files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.remote_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        v.sort();
        v
    }

    /// Point `[backup.offsite]` at another section of the rclone config.
    fn use_remote(&self, name: &str) {
        let path = self.db.site.repo.path().join("berth.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let (head, tail) = text.split_once("[backup.offsite]\nremote = \"").unwrap();
        let (_, rest) = tail.split_once(':').unwrap();
        self.db.site.repo.write(
            "berth.toml",
            &format!("{head}[backup.offsite]\nremote = \"{name}:{rest}"),
        );
    }

    /// No credential in anything berth printed, recorded or audited.
    fn assert_no_secret(&self) {
        let repo = self.db.site.repo.path();
        let mut all = self.seen.clone();
        all.push_str(&std::fs::read_to_string(repo.join(".berth/audit.jsonl")).unwrap_or_default());
        for e in std::fs::read_dir(repo.join("backups/bestays"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.path().extension().is_some_and(|x| x == "json") {
                all.push_str(&std::fs::read_to_string(e.path()).unwrap());
            }
        }
        for secret in [self.secret.as_str(), &"0".repeat(40)] {
            assert!(!all.contains(secret), "a credential leaked:\n{all}");
        }
    }
}

fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

/// Backup, read-back, prune on both sides, then restore from the remote with the
/// local backups gone.
fn round_trip(mut s: Setup, checked_by: &[&str]) {
    let first = s.backup();
    assert_eq!(first["offsite"]["ok"], true, "{first}");
    // rclone 1.60 (Debian 12) reads sha256 from neither backend: it streams the copy
    // back; a newer rclone asks an SFTP server to run sha256sum.
    assert!(
        checked_by.contains(&first["offsite"]["checked_by"].as_str().unwrap()),
        "{first}"
    );
    let file = first["file"].as_str().unwrap().to_string();
    let local = PathBuf::from(first["path"].as_str().unwrap());
    assert_eq!(
        bytes(&s.remote_dir.join(&file)),
        bytes(&local),
        "the remote copy is the backup"
    );
    assert!(
        s.remote_files().contains(&format!("{file}.json")),
        "{:?}",
        s.remote_files()
    );
    let audit = std::fs::read_to_string(s.db.site.repo.path().join(".berth/audit.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(audit.lines().last().unwrap()).unwrap();
    assert_eq!(last["step"], "backup");
    assert_eq!(last["offsite"], "ok", "{last}");
    validate_json_docs("audit.schema.json", &[last]);

    // A second backup the same day: the policy keeps only the newest of the day, here
    // and there.
    let second = s.backup();
    let second_file = second["file"].as_str().unwrap().to_string();
    assert_eq!(s.remote_files().len(), 4, "{:?}", s.remote_files());
    s.run(&["backup", "prune", "bestays", "--yes"])
        .assert_code(0);
    assert_eq!(
        s.remote_files(),
        vec![second_file.clone(), format!("{second_file}.json")],
        "the older copy is pruned off-site too"
    );
    assert!(!local.exists(), "the older local backup is pruned");

    let serve = Serve::start(s.db.site.repo.path(), &[], &[]);
    let (_, metrics) = serve.get("/metrics");
    assert!(
        metrics.contains("berth_backup_offsite_failed{product=\"bestays\"} 0")
            && metrics.contains("berth_backup_offsite_failures_total{product=\"bestays\"} 0")
            && metrics.contains(
                "berth_backup_offsite_last_success_timestamp_seconds{product=\"bestays\"}"
            ),
        "{metrics}"
    );
    let (_, page) = serve.get("/");
    assert!(
        page.contains("Last off-site copy</dt><dd><span class=\"ok\">ok"),
        "{page}"
    );
    drop(serve);
    let listed = s.run(&["backup", "list", "--offsite", "--format", "json"]);
    listed.assert_code(0);
    let v: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    validate_json_docs("backup-list-offsite.schema.json", std::slice::from_ref(&v));
    assert_eq!(v["backups"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["backups"][0]["file"], second_file.as_str());
    assert_eq!(v["backups"][0]["local"], true);

    // The machine loses its backups; the data changes; restore brings back the copy.
    let before = s.db.fingerprint("bestays");
    std::fs::remove_dir_all(s.db.site.repo.path().join("backups/bestays")).unwrap();
    s.db.sql(
        "bestays",
        "SET ROLE bestays_user; TRUNCATE audit_log; DELETE FROM bookings WHERE id % 2 = 0",
    );
    assert_ne!(s.db.fingerprint("bestays"), before);
    let out = s.run(&["restore", "bestays", "latest", "--yes"]);
    out.assert_code(0);
    assert!(
        out.stderr.contains("fetched it from off-site"),
        "{}",
        out.snapshot()
    );
    assert_eq!(
        s.db.fingerprint("bestays"),
        before,
        "the off-site copy is restored"
    );
    // Only the file goes (its record stays): verify fetches it too.
    std::fs::remove_file(
        s.db.site
            .repo
            .path()
            .join("backups/bestays")
            .join(&second_file),
    )
    .unwrap();
    let out = s.run(&["backup", "verify", "--latest", "bestays"]);
    out.assert_code(0);
    assert!(
        out.stderr.contains("fetched it from off-site"),
        "{}",
        out.snapshot()
    );
    s.assert_no_secret();
}

/// A refused upload fails the run (exit 1) and shows in `berth status`, the dashboard
/// and /metrics, where the failed runs so far count `failures`.
fn refused(s: &mut Setup, why: &str, failures: u64) {
    let out = s.run(&["backup", "bestays"]);
    assert_eq!(out.code, 1, "{why}: {}", out.snapshot());
    assert!(
        out.stderr.contains("off-site copy failed"),
        "{why}: {}",
        out.snapshot()
    );
    let st = s.run(&["status", "bestays", "--format", "json"]);
    st.assert_code(0);
    let v: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    validate_json_docs("status.schema.json", std::slice::from_ref(&v));
    let copy = &v["services"][0]["last_offsite_copy"];
    assert_eq!(copy["ok"], false, "{why}: {v}");
    assert!(
        copy["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{why}: {v}"
    );
    let text = s.run(&["status", "bestays"]);
    assert!(
        text.stderr.contains("last off-site copy FAILED"),
        "{why}: {}",
        text.snapshot()
    );
    let serve = Serve::start(s.db.site.repo.path(), &[], &[]);
    let (_, metrics) = serve.get("/metrics");
    assert!(
        metrics.contains("berth_backup_offsite_failed{product=\"bestays\"} 1"),
        "{why}: {metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "berth_backup_offsite_failures_total{{product=\"bestays\"}} {failures}\n"
        )) && metrics.contains("berth_backup_offsite_failures_total{product=\"realestate\"} 0\n"),
        "{why}: {metrics}"
    );
    let (_, page) = serve.get("/");
    assert!(
        page.contains("Last off-site copy</dt><dd><span class=\"bad\">FAILED"),
        "{why}: {page}"
    );
    drop(serve);
    let audit = std::fs::read_to_string(s.db.site.repo.path().join(".berth/audit.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(audit.lines().last().unwrap()).unwrap();
    assert_eq!(
        (last["result"].as_str(), last["offsite"].as_str()),
        (Some("failed"), Some("failed")),
        "{last}"
    );
}

#[test]
fn sftp_copies_are_read_back_pruned_and_restored_when_the_local_copy_is_gone() {
    round_trip(
        Setup::new(Server::Sftp(Sftp::start())),
        &["backend", "download"],
    );
}

#[test]
fn s3_copies_are_read_back_pruned_and_restored_when_the_local_copy_is_gone() {
    round_trip(Setup::new(Server::S3(S3::start())), &["download"]);
}

#[test]
fn refused_sftp_uploads_fail_the_backup_and_show_in_status() {
    let mut s = Setup::new(Server::Sftp(Sftp::start()));
    s.use_remote("vault-wrong");
    refused(&mut s, "sftp, a key the server refuses", 1);
    s.assert_no_secret();
    // The server goes away.
    s.use_remote("vault");
    if let Server::Sftp(sftp) = &mut s.server {
        sftp.stop();
    }
    refused(&mut s, "sftp, server stopped", 2);
}

#[test]
fn refused_s3_uploads_fail_the_backup_and_show_in_status() {
    let mut s = Setup::new(Server::S3(S3::start()));
    s.use_remote("vault-wrong");
    refused(&mut s, "s3, a wrong secret key", 1);
    s.assert_no_secret();
}
