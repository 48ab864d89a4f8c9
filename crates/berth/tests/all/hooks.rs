use std::process::Command;

use crate::support::*;

/// `git` with the test's berth binary on PATH-free hooks (they carry its absolute path).
fn git(repo: &GitRepo, args: &[&str]) -> (bool, String) {
    let out = Command::new("git")
        .args(args)
        .current_dir(repo.path())
        .env_remove("GIT_DIR")
        .env_remove("GIT_INDEX_FILE")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn commit_msg_hook_rejects_and_accepts_real_commits() {
    let repo = example_repo();
    let out = run(repo.path(), &["hooks", "install"]);
    out.assert_code(0);
    // Both hooks are reported installed, and both are executable files in the repository.
    for hook in ["commit-msg", "pre-push"] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.split_whitespace().take(2).eq([hook, "installed"])),
            "{hook} not reported installed\n{}",
            out.snapshot()
        );
        let path = repo.path().join(".git/hooks").join(hook);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                .permissions(),
        );
        assert!(mode & 0o111 != 0, "{} is not executable", path.display());
    }

    repo.write("products/bestays/a.yaml", "a: 1");
    repo.git(&["add", "-A"]);
    let (ok, text) = git(&repo, &["commit", "-q", "-m", "fix stuff"]);
    assert!(!ok, "a message without a task must be rejected:\n{text}");
    assert!(text.contains("task-required"), "{text}");
    // The commit did not happen.
    assert_eq!(repo.git(&["rev-list", "--count", "HEAD"]).trim(), "1");

    // Staged files are judged: the message names realestate, the files are bestays'.
    let (ok, text) = git(
        &repo,
        &["commit", "-q", "-m", "feat: a (TASK-1-a-realestate)"],
    );
    assert!(!ok, "{text}");
    assert!(
        text.contains("message-contradicts-paths") && text.contains("did you mean `bestays`?"),
        "{text}"
    );

    let (ok, text) = git(&repo, &["commit", "-q", "-m", "feat: a (TASK-1-a-bestays)"]);
    assert!(ok, "{text}");
    assert_eq!(repo.git(&["rev-list", "--count", "HEAD"]).trim(), "2");

    // `git commit -a` stages into a temporary index; the hook reads that one.
    repo.write("products/bestays/a.yaml", "a: 2");
    let (ok, text) = git(
        &repo,
        &["commit", "-q", "-a", "-m", "feat: a2 (TASK-2-a-realestate)"],
    );
    assert!(!ok && text.contains("message-contradicts-paths"), "{text}");
}

#[test]
fn pre_push_hook_checks_the_pushed_range() {
    let repo = example_repo();
    let remote = temp_dir();
    let (ok, text) = git(
        &repo,
        &["init", "-q", "--bare", remote.path().to_str().unwrap()],
    );
    assert!(ok, "{text}");
    repo.git(&["remote", "add", "origin", remote.path().to_str().unwrap()]);
    // A commit that breaks the rules reaches the remote before the hooks exist: later
    // pushes must not judge it again (only commits the remote lacks are checked).
    repo.write("products/bestays/legacy.yaml", "l: 1");
    repo.git(&["add", "-A"]);
    repo.git(&["commit", "-q", "--no-verify", "-m", "legacy junk"]);
    let (ok, text) = git(&repo, &["push", "-q", "origin", "main"]);
    assert!(ok, "{text}");
    run(repo.path(), &["hooks", "install"]).assert_code(0);
    // The pre-push hook would refuse that commit if it were in the pushed range.
    let out = run(repo.path(), &["lint", "commit", "--range", "HEAD~1..HEAD"]);
    out.assert_code(1);
    assert!(out.stdout.contains("legacy junk"), "{}", out.snapshot());

    // A bad commit made with --no-verify is stopped at push time.
    repo.write("products/realestate/b.yaml", "b: 1");
    repo.git(&["add", "-A"]);
    repo.git(&["commit", "-q", "--no-verify", "-m", "wip"]);
    let (ok, text) = git(&repo, &["push", "-q", "origin", "main"]);
    assert!(!ok, "push must be refused:\n{text}");
    assert!(
        text.contains("push refused by berth") && text.contains("wip"),
        "{text}"
    );

    repo.git(&[
        "commit",
        "-q",
        "--amend",
        "--no-verify",
        "-m",
        "feat: b (TASK-3-b-realestate)",
    ]);
    let (ok, text) = git(&repo, &["push", "-q", "origin", "main"]);
    assert!(ok, "{text}");

    // A new branch: only commits not on the remote are checked.
    repo.git(&["checkout", "-q", "-b", "feat/TASK-4-c-realestate"]);
    repo.write("products/realestate/c.yaml", "c: 1");
    repo.git(&["add", "-A"]);
    repo.git(&[
        "commit",
        "-q",
        "--no-verify",
        "-m",
        "feat: c (TASK-4-c-realestate)",
    ]);
    let (ok, text) = git(&repo, &["push", "-q", "origin", "feat/TASK-4-c-realestate"]);
    assert!(ok, "{text}");
}

#[test]
fn install_chains_to_an_existing_hook_honours_hooks_path_and_uninstall_restores() {
    let repo = example_repo();
    repo.git(&["config", "core.hooksPath", ".githooks"]);
    let mine = "#!/bin/sh\necho \"team hook saw $1\" >> \"$(git rev-parse --show-toplevel)/team-hook.log\"\n";
    let hook = repo.write(".githooks/commit-msg", mine);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = run(repo.path(), &["hooks", "install", "--format", "json"]);
    out.assert_code(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["hooks"][0]["action"], "chained");
    assert_eq!(v["hooks"][1]["action"], "installed");
    assert!(
        v["hooks"][0]["path"]
            .as_str()
            .unwrap()
            .ends_with(".githooks/commit-msg")
    );
    assert_eq!(
        std::fs::read_to_string(repo.path().join(".githooks/commit-msg.pre-berth")).unwrap(),
        mine
    );

    // Idempotent.
    let v = json(repo.path(), &["hooks", "install"], 0);
    assert_eq!(v["hooks"][0]["action"], "unchanged");
    assert_eq!(v["hooks"][1]["action"], "unchanged");

    // Both hooks run on a real commit.
    repo.write("products/bestays/z.yaml", "z: 1");
    repo.git(&["add", "products/bestays/z.yaml"]);
    let (ok, text) = git(&repo, &["commit", "-q", "-m", "feat: z (TASK-5-z-bestays)"]);
    assert!(ok, "{text}");
    assert!(
        std::fs::read_to_string(repo.path().join("team-hook.log"))
            .unwrap()
            .contains("team hook saw")
    );

    let v = json(repo.path(), &["hooks", "uninstall"], 0);
    assert_eq!(v["hooks"][0]["action"], "restored");
    assert_eq!(v["hooks"][1]["action"], "removed");
    assert_eq!(
        std::fs::read_to_string(repo.path().join(".githooks/commit-msg")).unwrap(),
        mine
    );
    assert!(!repo.path().join(".githooks/pre-push").exists());
    assert!(!repo.path().join(".githooks/commit-msg.pre-berth").exists());
}

#[test]
fn hooks_work_for_a_manifest_in_a_subdirectory() {
    let repo = GitRepo::new();
    repo.copy_tree(&example_dir());
    std::fs::create_dir_all(repo.path().join("deploy")).unwrap();
    std::fs::rename(
        repo.path().join("berth.toml"),
        repo.path().join("deploy/berth.toml"),
    )
    .unwrap();
    repo.commit_all("chore: import (TASK-0-setup-bestays)");
    run(
        repo.path(),
        &["--manifest", "deploy/berth.toml", "hooks", "install"],
    )
    .assert_code(0);
    let (ok, text) = git(&repo, &["commit", "-q", "--allow-empty", "-m", "nope"]);
    assert!(!ok && text.contains("task-required"), "{text}");
}

#[test]
fn a_global_hooks_path_is_refused() {
    let repo = example_repo();
    let shared = temp_dir();
    // `run` points HOME at the repository, so this is berth's global git config.
    repo.write(
        ".gitconfig",
        &format!("[core]\n\thooksPath = {}\n", shared.path().display()),
    );
    let out = run(repo.path(), &["hooks", "install"]);
    out.assert_code(2);
    assert!(
        out.stderr
            .contains("core.hooksPath is set in the global git config"),
        "{}",
        out.snapshot()
    );
    assert_eq!(
        std::fs::read_dir(shared.path()).unwrap().count(),
        0,
        "nothing written to the shared directory"
    );
}

#[test]
fn pre_push_after_someone_else_pushed_does_not_break() {
    let repo = example_repo();
    let remote = temp_dir();
    git(
        &repo,
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            remote.path().to_str().unwrap(),
        ],
    );
    repo.git(&["remote", "add", "origin", remote.path().to_str().unwrap()]);
    assert!(git(&repo, &["push", "-q", "origin", "main"]).0);
    // Another clone pushes a commit this one never fetches.
    let other = temp_dir();
    let ok = Command::new("git")
        .args(["clone", "-q", remote.path().to_str().unwrap(), "o"])
        .current_dir(other.path())
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let o = other.path().join("o");
    for args in [
        &["config", "user.name", "o"][..],
        &["config", "user.email", "o@o"],
        &[
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "chore: x (TASK-8-x-bestays)",
        ],
        &["push", "-q", "origin", "main"],
    ] {
        assert!(
            Command::new("git")
                .args(args)
                .current_dir(&o)
                .status()
                .unwrap()
                .success()
        );
    }
    run(repo.path(), &["hooks", "install"]).assert_code(0);
    repo.commit_all("feat: mine (TASK-9-mine-bestays)");
    let (ok, text) = git(&repo, &["push", "-q", "--force", "origin", "main"]);
    assert!(ok, "{text}");
    assert!(!text.contains("Invalid revision range"), "{text}");
}
