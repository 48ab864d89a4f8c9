//! `berth hooks install|uninstall`: commit-msg and pre-push hooks that run
//! berth's guard rails. They honour `core.hooksPath`, chain to a hook that was
//! already there (kept as `<hook>.pre-berth`), and are idempotent.

use std::path::{Path, PathBuf};

use crate::{GitError, Repo};

/// Marks a hook file as written by berth.
pub const MARKER: &str = "# berth-managed-hook";
pub const HOOKS: &[&str] = &["commit-msg", "pre-push"];

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(
        "core.hooksPath is set in the {scope} git config ({path}), so hooks there run in every repository; \
         set it for this repository only (`git config core.hooksPath .githooks`) or unset the {scope} one, then run `berth hooks install` again"
    )]
    SharedHooksPath { scope: String, path: String },
    #[error("could not {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What happened to each hook.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HookChange {
    pub hook: String,
    pub path: String,
    /// `installed`, `updated`, `chained` (an existing hook kept and called first),
    /// `removed`, `restored` (the previous hook put back), `absent`.
    pub action: &'static str,
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> HookError + 'a {
    move |source| HookError::Io {
        action,
        path: path.display().to_string(),
        source,
    }
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The script of one hook. `berth` is the binary to run; `manifest` the
/// manifest path relative to the work tree root (hooks run at the root).
fn script(hook: &str, berth: &Path, manifest: &str) -> String {
    let bin = sh_quote(&berth.display().to_string());
    let manifest = sh_quote(manifest);
    let head = format!(
        "#!/bin/sh\n{MARKER}: {hook}\n# Installed by `berth hooks install`; `berth hooks uninstall` removes it and restores any previous hook.\n\
         BERTH=${{BERTH_BIN:-{bin}}}\n[ -x \"$BERTH\" ] || BERTH=berth\nhook_dir=$(dirname \"$0\")\n"
    );
    match hook {
        "commit-msg" => format!(
            "{head}if [ -x \"$hook_dir/commit-msg.pre-berth\" ]; then\n    \"$hook_dir/commit-msg.pre-berth\" \"$@\" || exit $?\nfi\n\
             exec \"$BERTH\" --manifest {manifest} lint commit --edit \"$1\" --staged\n"
        ),
        "pre-push" => format!(
            "{head}input=$(cat)\nif [ -x \"$hook_dir/pre-push.pre-berth\" ]; then\n    printf '%s\\n' \"$input\" | \"$hook_dir/pre-push.pre-berth\" \"$@\" || exit $?\nfi\n\
             printf '%s\\n' \"$input\" | exec \"$BERTH\" --manifest {manifest} hooks run pre-push \"$@\"\n"
        ),
        _ => unreachable!("unknown hook {hook}"),
    }
}

/// The hooks directory git uses here (core.hooksPath or .git/hooks).
pub fn hooks_dir(repo: &Repo) -> Result<PathBuf, GitError> {
    repo.git_path("hooks")
}

pub fn install(
    repo: &Repo,
    berth: &Path,
    manifest_from_root: &str,
) -> Result<Vec<HookChange>, HookError> {
    // A hooks path from the global or system config is shared by every repository:
    // berth's hooks there would run (and fail) in repositories without a berth.toml.
    let scope = repo
        .git("read where core.hooksPath is set")
        .args(["config", "--show-scope", "--get", "core.hooksPath"])
        .output_unchecked()
        .map_err(GitError::from)?;
    let line = scope.stdout_str();
    if let Some((where_, path)) = line.trim().split_once('\t')
        && !matches!(where_, "local" | "worktree")
    {
        return Err(HookError::SharedHooksPath {
            scope: where_.to_string(),
            path: path.to_string(),
        });
    }
    let dir = hooks_dir(repo)?;
    std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
    let mut changes = Vec::new();
    for hook in HOOKS {
        let path = dir.join(hook);
        let chained = dir.join(format!("{hook}.pre-berth"));
        let body = script(hook, berth, manifest_from_root);
        let action = match std::fs::read_to_string(&path) {
            Ok(existing) if existing.contains(MARKER) => {
                if existing == body {
                    "unchanged"
                } else {
                    "updated"
                }
            }
            Ok(_) => {
                // Someone else's hook: keep it and call it first.
                if chained.exists() {
                    return Err(HookError::Io {
                        action: "keep the existing hook as",
                        path: chained.display().to_string(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::AlreadyExists,
                            "that file already exists; move it away first",
                        ),
                    });
                }
                std::fs::rename(&path, &chained).map_err(io("move aside", &path))?;
                "chained"
            }
            Err(_) => "installed",
        };
        if action != "unchanged" {
            write_executable(&path, &body)?;
        }
        changes.push(HookChange {
            hook: hook.to_string(),
            path: path.display().to_string(),
            action,
        });
    }
    Ok(changes)
}

pub fn uninstall(repo: &Repo) -> Result<Vec<HookChange>, HookError> {
    let dir = hooks_dir(repo)?;
    let mut changes = Vec::new();
    for hook in HOOKS {
        let path = dir.join(hook);
        let chained = dir.join(format!("{hook}.pre-berth"));
        let ours = std::fs::read_to_string(&path)
            .map(|s| s.contains(MARKER))
            .unwrap_or(false);
        let action = if ours {
            std::fs::remove_file(&path).map_err(io("remove", &path))?;
            if chained.exists() {
                std::fs::rename(&chained, &path).map_err(io("restore", &chained))?;
                "restored"
            } else {
                "removed"
            }
        } else {
            "absent"
        };
        changes.push(HookChange {
            hook: hook.to_string(),
            path: path.display().to_string(),
            action,
        });
    }
    Ok(changes)
}

fn write_executable(path: &Path, body: &str) -> Result<(), HookError> {
    berth_cmd::fs::write_atomic_mode(path, body.as_bytes(), Some(0o755)).map_err(io("write", path))
}

/// The ranges a pre-push hook must check, from the lines git writes on its stdin:
/// `<local ref> <local sha> <remote ref> <remote sha>`.
pub fn pre_push_ranges(stdin: &str, known: &dyn Fn(&str) -> bool) -> Vec<Vec<String>> {
    stdin
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (local, remote) = (*f.get(1)?, *f.get(3)?);
            if local.trim_matches('0').is_empty() {
                return None; // deleting a remote branch
            }
            Some(if remote.trim_matches('0').is_empty() || !known(remote) {
                // A new branch, or a force push over a tip this clone never fetched:
                // everything not already on a remote.
                vec![local.to_string(), "--not".into(), "--remotes".into()]
            } else {
                vec![format!("{remote}..{local}")]
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_push_lines() {
        let z = "0".repeat(40);
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        let input = format!(
            "refs/heads/x {a} refs/heads/x {b}\nrefs/heads/new {a} refs/heads/new {z}\n(delete) {z} refs/heads/old {b}\n"
        );
        let r = pre_push_ranges(&input, &|_| true);
        assert_eq!(
            r,
            vec![
                vec![format!("{b}..{a}")],
                vec![a.clone(), "--not".into(), "--remotes".into()]
            ]
        );
        // A force push over a remote tip this clone never fetched.
        let r = pre_push_ranges(&format!("refs/heads/x {a} refs/heads/x {b}\n"), &|_| false);
        assert_eq!(r, vec![vec![a.clone(), "--not".into(), "--remotes".into()]]);
    }
}
