//! git, run through [`berth_cmd::Cmd`] with a clean environment.

pub mod affected;
pub mod attribution;
pub mod history;
pub mod hooks;
pub mod lint;
pub mod message;
pub mod scan;

use std::path::{Path, PathBuf};

use berth_cmd::{Cmd, CmdError};

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error(transparent)]
    Cmd(#[from] CmdError),
    #[error("{0} is not inside a git work tree")]
    NotARepo(String),
}

/// Variables that would point git somewhere other than where berth aims it.
const GIT_ENV: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_CEILING_DIRECTORIES",
];

/// A directory inside a git work tree; commands run there.
#[derive(Debug, Clone)]
pub struct Repo {
    dir: PathBuf,
}

impl Repo {
    /// The repository containing `dir`, or `None` if `dir` is not in a work tree.
    pub fn discover(dir: &Path) -> Result<Option<Self>, GitError> {
        let out = git_in(dir, "find the git repository")
            .args(["rev-parse", "--is-inside-work-tree"])
            .output_unchecked()?;
        if out.status.success() && out.stdout_str().trim() == "true" {
            Ok(Some(Self {
                dir: dir.to_path_buf(),
            }))
        } else {
            Ok(None)
        }
    }

    pub fn open(dir: &Path) -> Result<Self, GitError> {
        Self::discover(dir)?.ok_or_else(|| GitError::NotARepo(dir.display().to_string()))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A git command in this repository with a clean environment.
    pub fn git(&self, summary: impl Into<String>) -> Cmd {
        git_in(&self.dir, summary)
    }

    /// Files git tracks under this directory, relative to it, `/`-separated.
    pub fn tracked_files(&self) -> Result<Vec<String>, GitError> {
        let out = self
            .git("list the files git tracks")
            .args(["-c", "core.quotePath=false", "ls-files", "-z", "--cached"])
            .output()?;
        Ok(out
            .stdout
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect())
    }
}

fn git_in(dir: &Path, summary: impl Into<String>) -> Cmd {
    let mut c = Cmd::new("git", summary)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .hint_if_missing("install git, e.g. `apt-get install git`");
    for k in GIT_ENV {
        c = c.env_remove(k);
    }
    c
}

impl Repo {
    /// The commit id `rev` names, or `None` if it names nothing here.
    pub fn resolve(&self, rev: &str) -> Result<Option<String>, GitError> {
        let out = self
            .git(format!("resolve `{rev}`"))
            .args(["rev-parse", "--verify", "--quiet", "--end-of-options"])
            .arg(format!("{rev}^{{commit}}"))
            .output_unchecked()?;
        Ok(out
            .status
            .success()
            .then(|| out.stdout_str().trim().to_string()))
    }

    pub fn is_shallow(&self) -> Result<bool, GitError> {
        let out = self
            .git("check whether this is a shallow clone")
            .args(["rev-parse", "--is-shallow-repository"])
            .output()?;
        Ok(out.stdout_str().trim() == "true")
    }

    /// The boundary commits of a shallow clone (their parents were not fetched, so
    /// git shows every file as added in them); empty in a full clone.
    pub fn shallow_boundary(&self) -> Result<Vec<String>, GitError> {
        let out = self
            .git("find the shallow clone's boundary commits")
            .args(["rev-parse", "--git-path", "shallow"])
            .output()?;
        let path = self.dir.join(out.stdout_str().trim());
        Ok(std::fs::read_to_string(path)
            .map(|t| t.lines().map(|l| l.trim().to_string()).collect())
            .unwrap_or_default())
    }

    /// The best common ancestor of `a` and `b`, or `None` if they share no history here.
    pub fn merge_base(&self, a: &str, b: &str) -> Result<Option<String>, GitError> {
        let out = self
            .git("find the merge base")
            .args(["merge-base", a, b])
            .output_unchecked()?;
        Ok(out
            .status
            .success()
            .then(|| out.stdout_str().trim().to_string()))
    }

    /// The checked-out branch, or `None` when HEAD is detached.
    pub fn current_branch(&self) -> Result<Option<String>, GitError> {
        let out = self
            .git("read the current branch")
            .args(["symbolic-ref", "--quiet", "--short", "HEAD"])
            .output_unchecked()?;
        Ok(out
            .status
            .success()
            .then(|| out.stdout_str().trim().to_string()))
    }

    /// Tags matching `pattern` (e.g. `bestays-deploy-*`), newest name first, with the commit each points at.
    pub fn tags(&self, pattern: &str) -> Result<Vec<(String, String)>, GitError> {
        let out = self
            .git("list deploy tags")
            .args([
                "for-each-ref",
                "--sort=-refname",
                "--format=%(refname:short)%09%(*objectname)%09%(objectname)",
            ])
            .arg(format!("refs/tags/{pattern}"))
            .output()?;
        Ok(out
            .stdout_str()
            .lines()
            .filter_map(|l| {
                let mut it = l.split('\t');
                let name = it.next()?.to_string();
                let peeled = it.next().unwrap_or_default();
                let direct = it.next().unwrap_or_default();
                let commit = if peeled.is_empty() { direct } else { peeled };
                Some((name, commit.to_string()))
            })
            .collect())
    }

    /// Paths staged for the next commit (relative to this directory). Inside a
    /// hook git points GIT_INDEX_FILE at the index being committed (e.g. for
    /// `git commit -a`); that one is used, made absolute.
    pub fn staged_files(&self) -> Result<Vec<String>, GitError> {
        let mut cmd = self.git("list staged files");
        if let Some(index) = std::env::var_os("GIT_INDEX_FILE") {
            let p = PathBuf::from(index);
            let abs = if p.is_absolute() {
                p
            } else {
                std::env::current_dir().map(|d| d.join(&p)).unwrap_or(p)
            };
            cmd = cmd.env("GIT_INDEX_FILE", abs);
        }
        let out = cmd
            .args([
                "-c",
                "core.quotePath=false",
                "diff",
                "--cached",
                "--name-only",
                "--no-renames",
                "--relative",
                "-z",
            ])
            .output()?;
        Ok(out
            .stdout
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect())
    }

    /// `git rev-parse --git-path <p>` made absolute (honours core.hooksPath for `hooks`).
    pub fn git_path(&self, p: &str) -> Result<PathBuf, GitError> {
        let out = self
            .git("locate the git directory")
            .args(["rev-parse", "--path-format=absolute", "--git-path", p])
            .output()?;
        Ok(PathBuf::from(out.stdout_str().trim()))
    }

    /// The top of the work tree.
    pub fn toplevel(&self) -> Result<PathBuf, GitError> {
        let out = self
            .git("locate the work tree")
            .args(["rev-parse", "--show-toplevel"])
            .output()?;
        Ok(PathBuf::from(out.stdout_str().trim()))
    }
}

impl Repo {
    /// Whether git ignores `path` (relative to this directory).
    pub fn is_ignored(&self, path: &str) -> Result<bool, GitError> {
        let out = self
            .git("check whether a path is git-ignored")
            .args(["check-ignore", "-q", "--no-index", path])
            .output_unchecked()?;
        Ok(out.status.code() == Some(0))
    }
}
