//! Off-site backup targets for the tests: a real OpenSSH server (Debian's sshd, on
//! a free loopback port, with its own host key, its own config file and key-only
//! auth; never the system's sshd) and a real S3-protocol server (`s3s-fs`, files under
//! a temp directory, signature V4 checked against its own access key), plus an
//! rclone config file for both, written to a temp directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::{free_port, require_program};

fn spawn_logged(c: &mut Command, log: &Path) -> Child {
    let out = std::fs::File::create(log).expect("create the server log");
    c.stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup log"))
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("start {c:?}: {e}"))
}

fn wait_listening(child: &mut Child, port: u16, what: &str, log: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        let exited = child.try_wait().ok().flatten();
        if exited.is_some() || std::time::Instant::now() > deadline {
            panic!(
                "{what} did not start on 127.0.0.1:{port} ({}); its log:\n{}",
                exited.map_or("timed out".to_string(), |s| format!("exited: {s}")),
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").expect("open /dev/urandom"),
        &mut b,
    )
    .expect("read /dev/urandom");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn keygen(path: &Path) {
    let keygen = require_program("ssh-keygen", &[], "apt-get install openssh-client");
    let ok = Command::new(keygen)
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "berth-test", "-f"])
        .arg(path)
        .status()
        .expect("run ssh-keygen");
    assert!(ok.success(), "ssh-keygen failed");
}

/// sshd on loopback, key-only, for the user running the tests.
pub struct Sftp {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub port: u16,
    /// The directory uploads go to (absolute, on this machine).
    pub root: PathBuf,
    sshd: PathBuf,
}

impl Sftp {
    pub fn start() -> Self {
        let sshd = require_program("sshd", &["/usr/sbin"], "apt-get install openssh-server");
        let dir = tempfile::Builder::new()
            .prefix("berth-sftp-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        keygen(&d.join("host_key"));
        keygen(&d.join("client_key"));
        keygen(&d.join("wrong_key"));
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys"))
            .expect("authorized_keys");
        let root = d.join("remote");
        std::fs::create_dir_all(&root).expect("remote dir");
        // sshd's privilege separation directory (Debian's package creates it at boot).
        let _ = std::fs::create_dir_all("/run/sshd");
        let mut this = Self {
            child: None,
            port: free_port(),
            root,
            sshd,
            dir,
        };
        this.resume();
        this
    }

    /// (Re)start sshd on the same port.
    pub fn resume(&mut self) {
        let d = self.dir.path();
        let config = d.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile none\n\
                 AuthorizedKeysFile {d}/authorized_keys\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n\
                 UsePAM no\nStrictModes no\nSubsystem sftp internal-sftp\nLogLevel ERROR\n",
                port = self.port,
                d = d.display()
            ),
        )
        .expect("write sshd_config");
        let log = d.join("sshd.log");
        let mut child = spawn_logged(
            Command::new(&self.sshd)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&config),
            &log,
        );
        wait_listening(&mut child, self.port, "sshd", &log);
        self.child = Some(child);
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The public host key line for a known_hosts file.
    fn known_hosts(&self) -> String {
        let key = std::fs::read_to_string(self.dir.path().join("host_key.pub")).expect("host key");
        let mut parts = key.split_whitespace();
        format!(
            "[127.0.0.1]:{} {} {}\n",
            self.port,
            parts.next().unwrap_or(""),
            parts.next().unwrap_or("")
        )
    }

    /// An rclone config section `[name]` for this server; `wrong_key` logs in with a
    /// key the server does not accept.
    pub fn rclone_section(&self, name: &str, wrong_key: bool) -> String {
        let d = self.dir.path();
        let kh = d.join("known_hosts");
        std::fs::write(&kh, self.known_hosts()).expect("known_hosts");
        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        format!(
            "[{name}]\ntype = sftp\nhost = 127.0.0.1\nport = {}\nuser = {user}\nkey_file = {}\nknown_hosts_file = {}\n\n",
            self.port,
            d.join(if wrong_key { "wrong_key" } else { "client_key" })
                .display(),
            kh.display()
        )
    }

    /// The private key the good section logs in with (a secret for the leak checks).
    pub fn client_key(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("client_key")).expect("client key")
    }
}

impl Drop for Sftp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An S3-protocol server (`s3s-fs`) on loopback, its data under a temp directory,
/// requiring signature V4 with its own access key.
pub struct S3 {
    child: Option<Child>,
    _dir: tempfile::TempDir,
    pub port: u16,
    /// Where the server keeps bucket `b`'s objects: `data/b/<key>`.
    pub data: PathBuf,
    pub access_key: String,
    pub secret_key: String,
}

impl S3 {
    pub fn start() -> Self {
        let server = std::env::var_os("BERTH_TEST_S3FS").map_or_else(
            || {
                require_program(
                    "s3s-fs",
                    &["/var/cache/berth/s3s-fs/bin"],
                    "cargo install s3s-fs --features binary",
                )
            },
            PathBuf::from,
        );
        let dir = tempfile::Builder::new()
            .prefix("berth-s3-")
            .tempdir()
            .expect("temp dir");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        let port = free_port();
        let access_key = format!("berthtest{}", random_hex(4));
        let secret_key = random_hex(20);
        let log = dir.path().join("s3.log");
        let mut child = spawn_logged(
            Command::new(server)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", &access_key, "--secret-key", &secret_key])
                .arg(&data),
            &log,
        );
        wait_listening(&mut child, port, "s3s-fs", &log);
        Self {
            child: Some(child),
            _dir: dir,
            port,
            data,
            access_key,
            secret_key,
        }
    }

    /// Create bucket `name` (a directory of the server's store).
    pub fn bucket(&self, name: &str) -> PathBuf {
        let p = self.data.join(name);
        std::fs::create_dir_all(&p).expect("bucket dir");
        p
    }

    /// An rclone config section `[name]` for this server (`wrong_secret`: a secret
    /// key the server refuses).
    pub fn rclone_section(&self, name: &str, wrong_secret: bool) -> String {
        format!(
            "[{name}]\ntype = s3\nprovider = Other\naccess_key_id = {}\nsecret_access_key = {}\n\
             endpoint = http://127.0.0.1:{}\nregion = us-east-1\nforce_path_style = true\n\n",
            self.access_key,
            if wrong_secret {
                "0".repeat(40)
            } else {
                self.secret_key.clone()
            },
            self.port
        )
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        self.stop();
    }
}
