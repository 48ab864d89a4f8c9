//! git, run through [`berth_cmd::Cmd`] with a clean environment.

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
