//! Building a version's images, shared by the compose and swarm runtimes: where a
//! version's source is (the work tree when HEAD is the version, otherwise a temporary
//! checkout of its commit), and one build per shared image.
//!
//! One build per shared image: every built image carries the label
//! `berth.build-key=<key>`, a SHA-256 of what determines it, read from git without
//! reading a file: the build context's tree id at the version, the Dockerfile's blob
//! id, the build args (sorted) and the platform (`DOCKER_DEFAULT_PLATFORM`). Before
//! building, the engine is asked for an image with that label; if there is one it is
//! only tagged as the product's image of the version (`docker tag`, no build). So
//! services of different products built from the same context, Dockerfile and args
//! share one image, whichever deploy comes first and however many deploy commands
//! there are; a version whose build context did not change reuses the image of the
//! version before; a product with its own build args gets its own key and build.
//! No tag names the key: an image lives while any product's tag names it, so a
//! product's prune (`docker image rm <its tag>`) only untags an image another
//! product's kept version still names. A build from a work tree whose context or
//! Dockerfile has uncommitted changes gets no key (its content is not the commit's).
//! `BERTH_BUILD_SHARING=off` builds every image again, without a key (the bench's
//! "before").

use std::path::{Path, PathBuf};

use berth_cmd::Cmd;
use berth_manifest::Build;
use sha2::{Digest, Sha256};

use crate::RuntimeError;

/// The image label holding the build key.
pub const KEY_LABEL: &str = "berth.build-key";

/// The environment variable that turns sharing off (`off` or `0`).
pub const SHARING_ENV: &str = "BERTH_BUILD_SHARING";

/// `git <args>` in `cwd`, never prompting.
fn git(cwd: &Path, args: &[&str], summary: &str) -> Result<berth_cmd::Output, RuntimeError> {
    Ok(Cmd::new("git", summary.to_string())
        .args(args)
        .current_dir(cwd)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()?)
}

/// Whether the commit checked out in the repository of `cwd` is `version` (a commit
/// id, or a prefix of one).
pub fn head_is(cwd: &Path, version: &str) -> Result<bool, RuntimeError> {
    let head = git(cwd, &["rev-parse", "HEAD"], "read the checked-out commit")?.stdout_str();
    Ok(!version.is_empty() && head.trim().starts_with(version))
}

/// Whether the work tree of the repository of `cwd` has uncommitted changes.
pub fn dirty(cwd: &Path) -> Result<bool, RuntimeError> {
    Ok(!git(
        cwd,
        &["status", "--porcelain"],
        "look for uncommitted changes",
    )?
    .stdout_str()
    .trim()
    .is_empty())
}

/// A temporary checkout (`git worktree add --detach`) of a commit, removed on drop:
/// the source of a version that is not the one checked out.
pub struct Checkout {
    /// A directory of the repository it was added from (where `git worktree remove` runs).
    repo: PathBuf,
    /// That repository's top-level directory.
    top: PathBuf,
    path: PathBuf,
}

impl Checkout {
    /// Check out `version` of the repository of `cwd` into a temporary directory
    /// named after `name` and the version.
    pub fn add(cwd: &Path, name: &str, version: &str) -> Result<Self, RuntimeError> {
        let top = PathBuf::from(
            git(
                cwd,
                &["rev-parse", "--show-toplevel"],
                "locate the work tree",
            )?
            .stdout_str()
            .trim(),
        );
        let path = std::env::temp_dir().join(format!("{name}-{version}-{}", std::process::id()));
        let path_s = path.display().to_string();
        git(
            cwd,
            &["worktree", "add", "--detach", "--force", &path_s, version],
            "check out the commit to build",
        )?;
        Ok(Self {
            repo: cwd.to_path_buf(),
            top,
            path,
        })
    }

    /// Where `dir` (a directory of the repository's work tree) is in the checkout.
    pub fn path_of(&self, dir: &Path) -> PathBuf {
        self.path
            .join(dir.strip_prefix(&self.top).unwrap_or(Path::new("")))
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        let _ = git(
            &self.repo,
            &[
                "worktree",
                "remove",
                "--force",
                &self.path.display().to_string(),
            ],
            "remove the build checkout",
        );
    }
}

/// Is sharing on (`BERTH_BUILD_SHARING` is not `off` or `0`)?
pub fn sharing() -> bool {
    !matches!(
        std::env::var(SHARING_ENV).as_deref(),
        Ok("off") | Ok("0") | Ok("false")
    )
}

/// A path relative to berth.toml as git's `<rev>:./<path>` (relative to `root`).
fn rev_path(version: &str, path: &str) -> String {
    let p = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/");
    format!("{version}:./{p}")
}

/// The Dockerfile of a build, relative to berth.toml.
pub fn dockerfile(b: &Build) -> String {
    b.dockerfile
        .clone()
        .unwrap_or_else(|| format!("{}/Dockerfile", b.context.trim_end_matches('/')))
}

/// The build key of `b` at `version` of the repository at `root` (berth.toml's
/// directory), or `None` when there is none: the context or Dockerfile is not in the
/// commit, or (`work_tree`: the build reads the work tree) has uncommitted changes.
pub fn key(root: &Path, version: &str, b: &Build, work_tree: bool) -> Option<String> {
    let id = |path: &str| -> Option<String> {
        let out = Cmd::new("git", "read a build's source id from git")
            .args(["rev-parse", "--verify", "-q", &rev_path(version, path)])
            .current_dir(root)
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .ok()?;
        let id = out.stdout_str().trim().to_string();
        (!id.is_empty()).then_some(id)
    };
    let dockerfile = dockerfile(b);
    if work_tree {
        let changed = Cmd::new("git", "look for uncommitted changes to a build's source")
            .args(["status", "--porcelain", "--untracked-files=all", "--"])
            .arg(rev_path("", &b.context).trim_start_matches(':'))
            .arg(rev_path("", &dockerfile).trim_start_matches(':'))
            .current_dir(root)
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .ok()?;
        if !out_is_empty(&changed) {
            return None;
        }
    }
    let mut h = Sha256::new();
    h.update(b"berth build key 1\n");
    h.update(format!("context {}\n", id(&b.context)?));
    h.update(format!("dockerfile {}\n", id(&dockerfile)?));
    let mut args: Vec<(&String, &String)> = b.args.iter().collect();
    args.sort();
    for (k, v) in args {
        h.update(format!("arg {k} {}:{v}\n", v.len()));
    }
    let platform = std::env::var("DOCKER_DEFAULT_PLATFORM").unwrap_or_default();
    h.update(format!("platform {platform}\n"));
    Some(
        h.finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    )
}

fn out_is_empty(o: &berth_cmd::Output) -> bool {
    o.stdout_str().trim().is_empty()
}

/// An image to make: a service's build and the name:tag it ends up as.
pub struct Wanted<'a> {
    pub build: &'a Build,
    pub image: String,
}

/// How a runtime builds: the repository, the version, and its `docker`.
pub struct Builder<'a> {
    /// berth.toml's directory in the work tree.
    pub root: &'a Path,
    pub version: &'a str,
    /// Build from the work tree (HEAD is the version); otherwise from a checkout of it.
    pub from_work_tree: bool,
    /// The prefix of a checkout's directory name.
    pub checkout_name: String,
    /// `docker` talking to the engine that builds (and keeps the images).
    pub docker: &'a dyn Fn(String) -> Cmd,
    /// Labels every built image carries besides the key (`name=value`).
    pub labels: Vec<String>,
}

impl Builder<'_> {
    /// The image of the engine labelled with `key`, if any.
    fn find(&self, key: &str) -> Option<String> {
        let out = (self.docker)("look for an image of the same build key".to_string())
            .args(["image", "ls", "-q", "--no-trunc", "--filter"])
            .arg(format!("label={KEY_LABEL}={key}"))
            .output()
            .ok()?;
        out.stdout_str()
            .lines()
            .next()
            .map(|l| l.trim().to_string())
    }

    /// Make every wanted image: tag the image of its build key when the engine has
    /// one, else build it. `after` runs for each image made (the swarm pushes it).
    /// Returns what was done, for the deploy's output.
    pub fn make(
        &self,
        wanted: &[Wanted],
        mut after: impl FnMut(&str) -> Result<(), RuntimeError>,
    ) -> Result<String, RuntimeError> {
        let share = sharing();
        let mut checkout: Option<Checkout> = None;
        let mut built = Vec::new();
        let mut reused = Vec::new();
        for w in wanted {
            let key = if share {
                key(self.root, self.version, w.build, self.from_work_tree)
            } else {
                None
            };
            if let Some(k) = &key
                && let Some(id) = self.find(k)
                && (self.docker)(format!(
                    "tag the image of build key {} as {}",
                    &k[..12],
                    w.image
                ))
                .args(["tag", &id, &w.image])
                .output()
                .is_ok()
            {
                after(&w.image)?;
                reused.push(format!("{} (build key {})", w.image, &k[..12]));
                continue;
            }
            let src = if self.from_work_tree {
                self.root.to_path_buf()
            } else {
                if checkout.is_none() {
                    checkout = Some(Checkout::add(self.root, &self.checkout_name, self.version)?);
                }
                checkout.as_ref().expect("just added").path_of(self.root)
            };
            let mut c = (self.docker)(format!("build {}", w.image))
                .args(["build", "-q"])
                .timeout(Some(std::time::Duration::from_secs(900)));
            if let Some(k) = &key {
                c = c.arg("--label").arg(format!("{KEY_LABEL}={k}"));
            }
            for l in &self.labels {
                c = c.arg("--label").arg(l);
            }
            for (k, v) in &w.build.args {
                c = c.arg("--build-arg").arg(format!("{k}={v}"));
            }
            c.args(["-t", &w.image, "-f"])
                .arg(src.join(dockerfile(w.build)))
                .arg(src.join(&w.build.context))
                .output()?;
            after(&w.image)?;
            built.push(w.image.clone());
        }
        drop(checkout);
        let mut note = Vec::new();
        if !built.is_empty() {
            if self.from_work_tree {
                note.push(format!("built {}", built.join(", ")));
            } else {
                note.push(format!(
                    "rebuilt {} from commit {}",
                    built.join(", "),
                    self.version
                ));
            }
        }
        if !reused.is_empty() {
            note.push(format!(
                "reused the image of the same source for {} (no build)",
                reused.join(", ")
            ));
        }
        Ok(note.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn commit(dir: &Path) -> String {
        git(dir, &["add", "-A"]);
        git(dir, &["commit", "-qm", "x"]);
        git(dir, &["rev-parse", "--short=12", "HEAD"])
    }

    /// The key follows the context's tree, the Dockerfile and the args, and nothing
    /// else; a context with uncommitted changes has none (berth.toml in a subdirectory).
    #[test]
    fn the_build_key_is_the_source_and_nothing_else() {
        let repo = std::env::temp_dir().join(format!("berth-build-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&repo);
        std::fs::create_dir_all(&repo).unwrap();
        git(&repo, &["init", "-q"]);
        let root = repo.join("site");
        write(&root, "apps/server/main.py", "print(1)\n");
        write(&root, "docker/server.Dockerfile", "FROM scratch\n");
        write(&root, "products/a.md", "a\n");
        let v1 = commit(&repo);
        let b = Build {
            context: "apps/server".into(),
            dockerfile: Some("docker/server.Dockerfile".into()),
            args: Default::default(),
        };
        let k1 = key(&root, &v1, &b, true).expect("a committed source has a key");
        assert_eq!(k1.len(), 64);
        assert_eq!(key(&root, &v1, &b, false), Some(k1.clone()));
        // Outside the context: the same key at the next commit.
        write(&root, "products/a.md", "b\n");
        let v2 = commit(&repo);
        assert_eq!(key(&root, &v2, &b, true), Some(k1.clone()));
        // Args, sorted: their own key.
        let mut with_args = b.clone();
        with_args.args.insert("B".into(), "2".into());
        with_args.args.insert("A".into(), "1".into());
        let ka = key(&root, &v2, &with_args, true).unwrap();
        assert_ne!(ka, k1);
        let mut reordered = b.clone();
        reordered.args.insert("A".into(), "1".into());
        reordered.args.insert("B".into(), "2".into());
        assert_eq!(key(&root, &v2, &reordered, true), Some(ka));
        // The Dockerfile (outside the context) and the context change it.
        write(
            &root,
            "docker/server.Dockerfile",
            "FROM scratch\nCOPY . /\n",
        );
        let v3 = commit(&repo);
        let k3 = key(&root, &v3, &b, true).unwrap();
        assert_ne!(k3, k1);
        write(&root, "apps/server/main.py", "print(2)\n");
        let v4 = commit(&repo);
        assert_ne!(key(&root, &v4, &b, true).unwrap(), k3);
        // The old version's key is still read from its commit.
        assert_eq!(key(&root, &v1, &b, false), Some(k1));
        // Uncommitted changes in the context: no key from the work tree.
        write(&root, "apps/server/new.py", "x\n");
        assert_eq!(key(&root, &v4, &b, true), None);
        assert!(key(&root, &v4, &b, false).is_some());
        // A context not in the commit: none.
        let missing = Build {
            context: "apps/nowhere".into(),
            dockerfile: None,
            args: Default::default(),
        };
        assert_eq!(key(&root, &v4, &missing, false), None);
        std::fs::remove_dir_all(&repo).unwrap();
    }
}
