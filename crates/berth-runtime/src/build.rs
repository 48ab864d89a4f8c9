//! Building a version's images, shared by the compose and swarm runtimes: where a
//! version's source is (the work tree when HEAD is the version, otherwise a temporary
//! checkout of its commit).

use std::path::{Path, PathBuf};

use berth_cmd::Cmd;

use crate::RuntimeError;

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
