use std::path::{Path, PathBuf};
use std::process::Command;

pub use berth_testkit::{GitRepo, copy_dir, workspace_root};

/// The result of one `berth` run.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// Exit code, stdout and stderr together, for snapshots.
    pub fn snapshot(&self) -> String {
        format!(
            "exit: {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit code\n{}", self.snapshot());
        self
    }

    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// `berth` with a pinned environment: no colour, fixed width, no user config.
/// `BERTH_BENCH_BIN` names another berth binary to run (a bench measuring the release
/// build users install); by default, the one `cargo test` built.
pub fn berth(cwd: &Path) -> Command {
    let bin =
        std::env::var_os("BERTH_BENCH_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_berth").into());
    let mut c = Command::new(bin);
    c.current_dir(cwd)
        .env("NO_COLOR", "1")
        .env("COLUMNS", "100")
        .env("HOME", cwd)
        .env_remove("BERTH_LOG")
        .env_remove("RUST_LOG")
        .env_remove("BERTH_MANIFEST")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        // docker keeps its client config under $HOME; keep it out of the test repositories,
        // and give each test process its own (two runs never share a client config).
        .env("DOCKER_CONFIG", docker_config());
    c
}

/// This test process's docker client configuration directory (removed with the process's
/// temp files by the OS; small and empty unless docker writes to it).
pub fn docker_config() -> PathBuf {
    std::env::temp_dir().join(format!("berth-test-docker-config-{}", std::process::id()))
}

pub fn run(cwd: &Path, args: &[&str]) -> Outcome {
    let out = berth(cwd)
        .args(args)
        .output()
        .expect("run the berth binary");
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn example_dir() -> PathBuf {
    workspace_root().join("examples/multi-product")
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The example monorepo committed into a fresh git repository.
pub fn example_repo() -> GitRepo {
    let repo = GitRepo::new();
    repo.copy_tree(&example_dir());
    repo.commit_all("chore: import example (TASK-000-setup-bestays)");
    repo
}

/// A plain temp directory (no git).
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("berth-test-")
        .tempdir()
        .expect("create temp dir")
}

/// Replace temp paths so snapshots are stable.
pub fn redact_paths(s: &str, dir: &Path) -> String {
    s.replace(&dir.display().to_string(), "[DIR]")
}

/// A small two-product manifest for attribution tests.
pub const ATTRIBUTION_MANIFEST: &str = r#"[project]
name = "shop"

[shared.server]
paths = ["apps/server/**"]

[products.bestays]
paths = ["products/bestays/**"]
aliases = ["bestays"]
depends_on_shared = ["server"]

[products.realestate]
paths = ["products/realestate/**"]
aliases = ["realestate", "real-estate"]
depends_on_shared = ["server"]

[products.docs]
paths = ["docs/**"]
"#;

/// A repository with the attribution manifest committed as its first commit.
pub fn attribution_repo() -> GitRepo {
    let repo = GitRepo::new();
    repo.write("berth.toml", ATTRIBUTION_MANIFEST);
    repo.commit_all("chore: berth manifest (TASK-000-setup-docs)");
    repo
}

/// `berth <args> --format json`, parsed; asserts the exit code.
pub fn json(dir: &Path, args: &[&str], code: i32) -> serde_json::Value {
    let mut a = args.to_vec();
    a.extend(["--format", "json"]);
    let out = run(dir, &a);
    out.assert_code(code);
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", out.snapshot()))
}

/// Give every secret the example's services declare a value (deploys refuse without), as an
/// operator does with `berth secrets set`; run after `berth render` made the files.
pub fn fill_declared_secrets(root: &Path) {
    for product in ["bestays", "realestate"] {
        let path = root.join(format!(".berth/secrets/{product}.env"));
        let mut file = berth_render::secrets::SecretFile::load(&path).unwrap();
        for name in [
            "CLERK_SECRET_KEY",
            "OPENROUTER_API_KEY",
            "VITE_CLERK_PUBLISHABLE_KEY",
        ] {
            if file.get(name).is_none() {
                file.set(name, &format!("test-{product}-{}", name.to_lowercase()));
            }
        }
        file.save(product).unwrap();
    }
}

/// Give every declared secret of every product in the manifest at `root` a value, as
/// `berth secrets list` names them (for manifests other than the example's).
pub fn fill_every_declared_secret(root: &Path) {
    let out = run(root, &["secrets", "list", "--format", "json"]);
    out.assert_code(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    for row in v["secrets"].as_array().unwrap() {
        if row["kind"] != "declared" || row["set"] == true {
            continue;
        }
        let (product, name) = (
            row["product"].as_str().unwrap(),
            row["name"].as_str().unwrap(),
        );
        let path = root.join(format!(".berth/secrets/{product}.env"));
        let mut file = berth_render::secrets::SecretFile::load(&path).unwrap();
        file.set(name, &format!("test-{product}-{}", name.to_lowercase()));
        file.save(product).unwrap();
    }
}
