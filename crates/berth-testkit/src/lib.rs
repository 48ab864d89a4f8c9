//! Fixtures for berth's tests: real git repositories in temp directories.
//! `load`: the one HTTP load generator of the tests and the bench; `http`: the tests'
//! one HTTP client (one request, answered whole).
//! `swarm`: a real multi-node Docker Swarm on this machine, with a registry.
//! A fixture that cannot set up its real dependency panics with a clear
//! message: tests never pass by skipping.

pub mod contract;
pub mod http;
pub mod load;
pub mod offsite;
pub mod swarm;

use std::path::{Path, PathBuf};
use std::process::Command;

/// A git repository in a temporary directory, removed on drop.
pub struct GitRepo {
    dir: tempfile::TempDir,
}

impl GitRepo {
    /// `git init` a fresh repository with a pinned identity and `main` branch.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-test-")
            .tempdir()
            .expect("create a temp dir for a test git repository");
        let repo = Self { dir };
        repo.git(&["init", "-q", "-b", "main"]);
        repo.git(&["config", "user.name", "Berth Test"]);
        repo.git(&["config", "user.email", "test@berth.invalid"]);
        repo.git(&["config", "commit.gpgsign", "false"]);
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Run git in the repository; panics with git's output if it fails.
    pub fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(self.path())
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
            .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z")
            .output()
            .unwrap_or_else(|e| panic!("git is required for this test and could not run: {e}"));
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Write a file (creating directories).
    pub fn write(&self, rel: &str, contents: &str) -> PathBuf {
        let p = self.path().join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("create parent directories");
        }
        std::fs::write(&p, contents).expect("write fixture file");
        p
    }

    /// Stage everything and commit with `message`; returns the new commit id.
    pub fn commit_all(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.git(&["rev-parse", "HEAD"]).trim().to_string()
    }

    /// Copy a directory tree (e.g. an example) into the repository.
    pub fn copy_tree(&self, from: &Path) {
        copy_dir(from, self.path());
    }
}

impl Default for GitRepo {
    fn default() -> Self {
        Self::new()
    }
}

/// Recursively copy `from` into `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create destination");
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display()))
    {
        let entry = entry.expect("dir entry");
        let dest = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).expect("copy file");
        }
    }
}

/// The workspace root (for examples and fixtures).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("workspace root")
        .to_path_buf()
}

/// A free TCP port on 127.0.0.1 for a server a test starts (see [`reserve_ports`]).
pub fn free_port() -> u16 {
    reserve_ports(1)
}

/// `count` consecutive free TCP ports on 127.0.0.1; returns the first.
///
/// Handing out a port the kernel picked (bind to 0, release) races: the ephemeral range is
/// where outgoing connections take their ports, and another test process may be handed the
/// same one before the caller's server binds it. These ports come from below the ephemeral
/// range (20000-32767), and each is held by a lock file in the temp directory until this
/// process exits, so no two test processes (nor two tests of one process) get the same port.
pub fn reserve_ports(count: u16) -> u16 {
    use std::sync::Mutex;
    static HELD: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());
    const LOW: u32 = 20_000;
    const HIGH: u32 = 32_767;
    let dir = std::env::temp_dir().join("berth-test-ports");
    std::fs::create_dir_all(&dir).expect("create the port lock directory");
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    let span = HIGH - LOW - u32::from(count);
    let start = random_u32() % span;
    for step in 0..span {
        let first = (LOW + (start + step) % span) as u16;
        let mut locks = Vec::new();
        let all = (first..first + count).all(|port| {
            let Ok(file) = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join(format!("{port}.lock")))
            else {
                return false;
            };
            if file.try_lock().is_err() {
                return false;
            }
            locks.push(file);
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
        });
        if all {
            held.extend(locks);
            return first;
        }
        // Dropping the files releases what this attempt locked.
    }
    panic!("no {count} consecutive free ports between {LOW} and {HIGH}")
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").expect("open /dev/urandom"),
        &mut b,
    )
    .expect("read /dev/urandom");
    u32::from_le_bytes(b)
}

/// Find a program on PATH or in the given extra directories, or panic saying how to get it.
pub fn require_program(name: &str, extra: &[&str], install: &str) -> PathBuf {
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    for pattern in extra {
        for dir in glob_dirs(pattern) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "`{name}` is required for this test but is not installed ({install}); ./scripts/test.sh installs it"
    )
}

/// Directories matching a pattern with one `*` component (e.g. `/usr/lib/postgresql/*/bin`), newest first.
fn glob_dirs(pattern: &str) -> Vec<PathBuf> {
    let Some((head, tail)) = pattern.split_once('*') else {
        return vec![PathBuf::from(pattern)];
    };
    let mut out: Vec<PathBuf> = std::fs::read_dir(head)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| PathBuf::from(format!("{}{}", e.path().display(), tail)))
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    out.reverse();
    out
}

fn wait_for_port(port: u16, what: &str, log: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!(
        "{what} did not start listening on 127.0.0.1:{port} within 30s; its log ({}):\n{}",
        log.display(),
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// A certificate authority made for one test (rcgen), and the server
/// certificates it signs.
pub struct TestCa {
    key: rcgen::KeyPair,
    params: rcgen::CertificateParams,
    /// The CA's certificate, PEM (what a client's `sslrootcert` / CA file holds).
    pub cert_pem: String,
    dir: tempfile::TempDir,
}

/// A server certificate (PEM) and its private key (PEM).
pub struct ServerCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cert = params.self_signed(&key).expect("self-signed CA");
        let dir = tempfile::Builder::new()
            .prefix("berth-ca-")
            .tempdir()
            .expect("temp dir");
        let cert_pem = cert.pem();
        std::fs::write(dir.path().join("ca.crt"), &cert_pem).expect("write ca.crt");
        Self {
            key,
            params,
            cert_pem,
            dir,
        }
    }

    /// The CA's certificate as a file (for `sslrootcert=` and `--tls-ca-cert-file`).
    pub fn cert_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A server certificate for `names` (DNS names, or IP addresses as text).
    pub fn issue(&self, names: &[&str]) -> ServerCert {
        let key = rcgen::KeyPair::generate().expect("server key");
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("server params");
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            names.first().copied().unwrap_or("server"),
        );
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).expect("sign server cert");
        ServerCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A throwaway PostgreSQL cluster on a free port, run as the `postgres` user
/// (PostgreSQL refuses to run as root). The superuser is `postgres` with a
/// password; host connections use scram-sha-256. Stopped on drop.
pub struct Postgres {
    dir: tempfile::TempDir,
    pg_ctl: PathBuf,
    /// The server options it was started with (`pg_ctl start -o`).
    opts: String,
    pub port: u16,
    pub password: String,
}

impl Postgres {
    pub fn start() -> Self {
        Self::start_listening("127.0.0.1")
    }

    /// Started with `listen_addresses` set to `listen` (e.g. `127.0.0.1,172.17.0.1`
    /// for containers reaching the host's PostgreSQL through Docker's gateway).
    pub fn start_listening(listen: &str) -> Self {
        Self::start_with(listen, None)
    }

    /// Started with `ssl = on`, serving `cert` (signed by a test CA) on TCP.
    pub fn start_tls(cert: &ServerCert) -> Self {
        Self::start_with("127.0.0.1", Some(cert))
    }

    fn start_with(listen: &str, tls: Option<&ServerCert>) -> Self {
        const PG: &[&str] = &["/usr/lib/postgresql/*/bin"];
        let install = "apt-get install postgresql";
        let initdb = require_program("initdb", PG, install);
        let pg_ctl = require_program("pg_ctl", PG, install);
        let dir = tempfile::Builder::new()
            .prefix("berth-pg-")
            .tempdir()
            .expect("temp dir");
        let data = dir.path().join("data");
        let password = "admin-pw-for-tests".to_string();
        std::fs::write(dir.path().join("pw"), &password).expect("write pwfile");
        as_postgres_owner(dir.path());
        let port = free_port();
        let out = postgres_cmd(&initdb)
            .args([
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .arg(format!("--pwfile={}", dir.path().join("pw").display()))
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let log = dir.path().join("postgres.log");
        let mut ssl = String::new();
        if let Some(c) = tls {
            use std::os::unix::fs::PermissionsExt;
            let (crt, key) = (data.join("server.crt"), data.join("server.key"));
            std::fs::write(&crt, &c.cert_pem).expect("write server.crt");
            std::fs::write(&key, &c.key_pem).expect("write server.key");
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
                .expect("chmod server.key");
            as_postgres_owner(dir.path());
            ssl = " -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key".into();
        }
        let opts = format!(
            "-p {port} -k {} -c listen_addresses={listen} -c fsync=off{ssl}",
            dir.path().display()
        );
        let out = postgres_cmd(&pg_ctl)
            .args([
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "start",
                "-o",
            ])
            .arg(&opts)
            .stdout(std::process::Stdio::null())
            .output()
            .expect("run pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        wait_for_port(port, "PostgreSQL", &log);
        Self {
            dir,
            pg_ctl,
            opts,
            port,
            password,
        }
    }

    /// Stop the server at once (`pg_ctl stop -m immediate`: every session ends as
    /// in a crash), keeping its data; [`Postgres::restart`] brings it back.
    pub fn stop_immediate(&self) {
        let data = self.dir.path().join("data");
        let out = postgres_cmd(&self.pg_ctl)
            .args([
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .output()
            .expect("run pg_ctl stop");
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Start the stopped server again on its port, with its data (crash recovery).
    pub fn restart(&self) {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("postgres.log");
        let out = postgres_cmd(&self.pg_ctl)
            .args(["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap()])
            .args(["-w", "-t", "60", "start", "-o", &self.opts])
            .stdout(std::process::Stdio::null())
            .output()
            .expect("run pg_ctl start");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        wait_for_port(self.port, "PostgreSQL", &log);
    }

    /// Append `line` to pg_hba.conf and reload the configuration.
    pub fn add_hba_line(&self, line: &str) {
        use std::io::Write;
        let path = self.dir.path().join("data/pg_hba.conf");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open pg_hba.conf");
        writeln!(f, "{line}").expect("append to pg_hba.conf");
        self.admin("SELECT pg_reload_conf()");
    }

    /// Refuse TCP connections without TLS (`host` lines of pg_hba.conf become
    /// `hostssl`), so a client that gets in has proven it spoke TLS.
    pub fn require_tls_for_tcp(&self) {
        let path = self.dir.path().join("data/pg_hba.conf");
        let text = std::fs::read_to_string(&path).expect("read pg_hba.conf");
        let text: String = text
            .lines()
            .map(|l| match l.strip_prefix("host ") {
                Some(rest) => format!("hostssl {rest}\n"),
                None => format!("{l}\n"),
            })
            .collect();
        std::fs::write(&path, text).expect("write pg_hba.conf");
        self.admin("SELECT pg_reload_conf()");
    }

    /// The cluster's processes: the postmaster (from `postmaster.pid`) and its children.
    fn processes(&self) -> Vec<u32> {
        let pidfile = self.dir.path().join("data/postmaster.pid");
        let main: u32 = std::fs::read_to_string(&pidfile)
            .expect("read postmaster.pid")
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .expect("a pid in postmaster.pid");
        let mut pids = vec![main];
        for e in std::fs::read_dir("/proc").expect("read /proc").flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            // `pid (comm) state ppid ...`: the fields after the last `)`.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(main) {
                pids.push(pid);
            }
        }
        pids
    }

    fn signal_all(&self, signal: &str) {
        let pids: Vec<String> = self.processes().iter().map(u32::to_string).collect();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .args(&pids)
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {pids:?} failed");
    }

    /// Stop every process of the cluster (SIGSTOP): connections stay open, nothing
    /// answers, as with a stalled server or a network partition. [`resume`](Self::resume) undoes it.
    pub fn pause(&self) {
        self.signal_all("STOP");
    }

    /// Continue the processes [`pause`](Self::pause) stopped (SIGCONT).
    pub fn resume(&self) {
        self.signal_all("CONT");
    }

    /// The admin URL (superuser `postgres`).
    pub fn admin_url(&self) -> String {
        format!(
            "postgresql://postgres:{}@127.0.0.1:{}/postgres",
            self.password, self.port
        )
    }

    /// Run SQL with psql as `user`/`password` against `db`; returns (success, stdout+stderr).
    pub fn psql_as(&self, user: &str, password: &str, db: &str, sql: &str) -> (bool, String) {
        let psql = require_program(
            "psql",
            &["/usr/lib/postgresql/*/bin"],
            "apt-get install postgresql-client",
        );
        let out = Command::new(psql)
            .args([
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                user,
                "-d",
                db,
                "-c",
                sql,
            ])
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .expect("run psql");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Run SQL as the superuser; panics on failure.
    pub fn admin(&self, sql: &str) -> String {
        let (ok, out) = self.psql_as("postgres", &self.password, "postgres", sql);
        assert!(ok, "admin SQL failed: {sql}\n{out}");
        out
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = postgres_cmd(&self.pg_ctl)
            .args([
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.uid() == 0
        })
        .unwrap_or(false)
}

/// A command that runs as the `postgres` user when we are root.
fn postgres_cmd(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn as_postgres_owner(dir: &Path) {
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir)
            .status()
            .expect("run chown");
        assert!(
            status.success(),
            "chown {} to postgres failed (does the postgres user exist? apt-get install postgresql)",
            dir.display()
        );
    }
}

/// A throwaway Redis on a free port, with an ACL file. Killed on drop.
pub struct Redis {
    child: std::process::Child,
    _dir: tempfile::TempDir,
    pub port: u16,
    /// For a TLS-only server: the CA file redis-cli checks the server with.
    tls_ca: Option<PathBuf>,
}

impl Redis {
    /// Start redis-server loading `acl` (a users.acl file) as its ACL file.
    pub fn start_with_acl(acl: &str) -> Self {
        Self::start_with(acl, None)
    }

    /// Start redis-server speaking only TLS (`--port 0 --tls-port <port>`), serving
    /// `cert` (signed by `ca`); clients are not asked for certificates.
    pub fn start_tls(acl: &str, cert: &ServerCert, ca: &TestCa) -> Self {
        Self::start_with(acl, Some((cert, ca)))
    }

    fn start_with(acl: &str, tls: Option<(&ServerCert, &TestCa)>) -> Self {
        let server = require_program("redis-server", &[], "apt-get install redis-server");
        let dir = tempfile::Builder::new()
            .prefix("berth-redis-")
            .tempdir()
            .expect("temp dir");
        let acl_path = dir.path().join("users.acl");
        std::fs::write(&acl_path, acl).expect("write ACL");
        let port = free_port();
        let log = dir.path().join("redis.log");
        let mut c = Command::new(server);
        let mut tls_ca = None;
        match tls {
            None => {
                c.args(["--port", &port.to_string()]);
            }
            Some((cert, ca)) => {
                let (crt, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
                std::fs::write(&crt, &cert.cert_pem).expect("write server.crt");
                std::fs::write(&key, &cert.key_pem).expect("write server.key");
                c.args(["--port", "0", "--tls-port", &port.to_string()])
                    .arg("--tls-cert-file")
                    .arg(&crt)
                    .arg("--tls-key-file")
                    .arg(&key)
                    .arg("--tls-ca-cert-file")
                    .arg(ca.cert_file())
                    .args(["--tls-auth-clients", "no"]);
                tls_ca = Some(ca.cert_file());
            }
        }
        let child = c
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args([
                "--dir",
                dir.path().to_str().unwrap(),
                "--logfile",
                log.to_str().unwrap(),
            ])
            .args(["--aclfile", acl_path.to_str().unwrap()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start redis-server");
        let mut this = Self {
            child,
            _dir: dir,
            port,
            tls_ca,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited = this.child.try_wait().ok().flatten();
            if exited.is_some() || std::time::Instant::now() > deadline {
                panic!(
                    "Redis did not start on 127.0.0.1:{port} ({}); its log:\n{}",
                    exited.map_or("timed out".to_string(), |s| format!("exited: {s}")),
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        this
    }

    /// Run a command with redis-cli as `user` (over TLS, checked against the test
    /// CA, for a TLS server); returns its output (errors included).
    pub fn cli(&self, user: Option<(&str, &str)>, args: &[&str]) -> String {
        let cli = require_program("redis-cli", &[], "apt-get install redis-tools");
        let mut c = Command::new(cli);
        c.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "--no-auth-warning",
        ]);
        if let Some(ca) = &self.tls_ca {
            c.arg("--tls").arg("--cacert").arg(ca);
        }
        if let Some((u, p)) = user {
            c.args(["--user", u, "--pass", p]);
        }
        let out = c.args(args).output().expect("run redis-cli");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .trim()
        .to_string()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod port_tests {
    use super::*;

    #[test]
    fn reserved_ports_are_below_the_ephemeral_range_and_never_handed_out_twice() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let first = reserve_ports(2);
            assert!((20_000..32_767).contains(&first), "{first}");
            for p in [first, first + 1] {
                assert!(seen.insert(p), "port {p} handed out twice");
                // Held: another reservation (this or another process) cannot lock it.
                let lock = std::fs::OpenOptions::new()
                    .write(true)
                    .open(std::env::temp_dir().join(format!("berth-test-ports/{p}.lock")))
                    .unwrap();
                assert!(lock.try_lock().is_err(), "port {p} is not held");
            }
        }
    }
}
