use std::io::Write;
use std::process::Stdio;

use crate::support::*;

/// (message, expected failing rules; empty = passes). Run against the example manifest.
const TABLE: &[(&str, &[&str])] = &[
    // The strategy document's own examples.
    ("feat: implement login (US-001 TASK-001-login-bestays)", &[]),
    ("TASK-050-port-login-realestate", &[]),
    ("TASK-002-database-schema", &["no-product"]),
    (
        "feat: implement login flow (US-001 TASK-001-login-bestays)\n\nSubagent: dev-frontend-svelte\nProduct: bestays\nFiles: apps/frontend/src/routes/login/+page.svelte\n\nStory: US-001\nTask: TASK-001-login-bestays",
        &[],
    ),
    // Task references.
    ("fix: typo", &["task-required", "no-product"]),
    ("fix: typo in login page", &["task-required", "no-product"]),
    (
        "feat: login (task-12 login bestays)",
        &["task-required", "no-product"],
    ),
    ("feat: login (TASK-12)", &["task-required", "no-product"]),
    ("feat: login TASK-7-login-bestays", &[]),
    ("feat(auth): login (TASK-7-login-bestays)", &[]),
    ("feat(auth)!: drop v1 login (TASK-8-login-v2-bestays)", &[]),
    ("chore: bump deps (TASK-9-deps-bestays-realestate)", &[]),
    (
        "chore: bump deps (TASK-9-deps-bestays) (TASK-10-deps-realestate)",
        &[],
    ),
    ("feat: x (TASK-11-search-real-estate)", &[]),
    ("feat: x (TASK-11-re-index-bestays)", &[]),
    ("feat: x (TASK-11-search-real)", &["no-product"]),
    ("feat: x (TASK-12-search-bestayss)", &["no-product"]),
    ("feat: x (TASK-13-bestays)", &[]),
    ("feat: x (TASK-14-realestate-search)", &[]),
    ("feat: x (TASK-15-port-search-bestays)", &[]),
    ("feat: x (TASK-16-port-search-bestays-realestate)", &[]),
    ("feat: x (TASK-17-bestaysish-search)", &["no-product"]),
    (
        "feat: x (TASK-18-Search-Bestays)",
        &["task-required", "no-product"],
    ),
    ("feat: x (TASK-019-login-bestays US-002)", &[]),
    // Trailers.
    ("feat: x (TASK-20-login)\n\nProduct: bestays", &[]),
    ("feat: x (TASK-21-login)\n\nProduct: realestate", &[]),
    ("feat: x (TASK-22-login)\n\nProduct: real-estate", &[]),
    (
        "feat: x (TASK-23-login)\n\nProduct: bestay",
        &["unknown-product", "no-product"],
    ),
    (
        "feat: x (TASK-24-login)\n\nProduct: shop",
        &["unknown-product", "no-product"],
    ),
    (
        "feat: x (TASK-25-login-bestays)\n\nProduct: realestate",
        &["trailer-contradicts-slug"],
    ),
    ("feat: x (TASK-26-login-bestays)\n\nProduct: bestays", &[]),
    (
        "feat: x (TASK-27-login-bestays)\n\nProduct: bestays, realestate",
        &[],
    ),
    ("feat: x (TASK-28-login-bestays)\n\nProduct: Bestays", &[]),
    (
        "feat: x (TASK-29-login)\n\nThis mentions Product: bestays in prose.\nNot a trailer.",
        &["no-product"],
    ),
    ("feat: x\n\nTask: TASK-30-login-bestays", &[]),
    // Skipped kinds.
    ("Merge branch 'feat/TASK-1-x' into main", &[]),
    ("Merge pull request #12 from org/feat", &[]),
    ("Revert \"feat: x (TASK-25-login-bestays)\"", &[]),
    ("fixup! feat: login (TASK-7-login-bestays)", &[]),
    ("squash! anything at all", &[]),
    (
        "Merge user data (no task)",
        &["task-required", "no-product"],
    ),
    ("amend! feat: x", &[]),
    // Shape.
    ("", &["empty-message", "task-required", "no-product"]),
    // On stdin a `#` line is text (git keeps `-m "#42 ..."`); the --edit file strips git's comments.
    ("# only a comment\n", &["task-required", "no-product"]),
    (
        "feat: x (TASK-31-login-bestays)\n# Please enter the commit message for your changes.\n# Lines starting with '#' will be ignored.",
        &[],
    ),
    ("WIP", &["task-required", "no-product"]),
];

fn lint_stdin(dir: &std::path::Path, message: &str) -> Outcome {
    let mut child = berth(dir)
        .args(["lint", "commit", "--format", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(message.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn table_of_messages() {
    assert!(TABLE.len() >= 40, "{} messages", TABLE.len());
    let repo = example_repo();
    let mut failures = Vec::new();
    for (message, want) in TABLE {
        let out = lint_stdin(repo.path(), message);
        let v: serde_json::Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("{message:?}: {e}\n{}", out.snapshot()));
        let got: Vec<String> = v["commits"][0]["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["level"] == "error")
            .map(|f| f["rule"].as_str().unwrap().to_string())
            .collect();
        let want_code = if want.is_empty() { 0 } else { 1 };
        if got != *want || out.code != want_code {
            failures.push(format!(
                "{message:?}: want {want:?} (exit {want_code}), got {got:?} (exit {})",
                out.code
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn failures_say_what_was_expected_with_a_hint() {
    let repo = example_repo();
    let mut child = berth(repo.path())
        .args(["lint", "commit"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"feat: search (TASK-12-search-bestyas)")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    insta::assert_snapshot!(String::from_utf8_lossy(&out.stdout));
}

#[test]
fn edit_file_and_staged_paths() {
    let repo = example_repo();
    let msg = repo.write(
        ".git/COMMIT_EDITMSG",
        "feat: listing (TASK-40-listing-bestays)\n# comment\n",
    );
    run(
        repo.path(),
        &["lint", "commit", "--edit", msg.to_str().unwrap()],
    )
    .assert_code(0);
    // Staged files owned by realestate contradict a message naming bestays.
    repo.write("products/realestate/x.yaml", "a: 1");
    repo.git(&["add", "products/realestate/x.yaml"]);
    let out = run(
        repo.path(),
        &[
            "lint",
            "commit",
            "--edit",
            msg.to_str().unwrap(),
            "--staged",
        ],
    );
    out.assert_code(1);
    assert!(
        out.stdout.contains("message-contradicts-paths"),
        "{}",
        out.snapshot()
    );
    assert!(
        out.stdout.contains("did you mean `realestate`?"),
        "{}",
        out.snapshot()
    );
}

#[test]
fn range_in_one_process_with_short_shas_and_subjects() {
    let repo = example_repo();
    let base = repo.git(&["rev-parse", "HEAD"]).trim().to_string();
    repo.write("products/bestays/a.yaml", "a: 1");
    repo.commit_all("feat: a (TASK-41-a-bestays)");
    repo.write("products/realestate/b.yaml", "b: 1");
    repo.commit_all("feat: b (TASK-42-b-bestays)");
    repo.commit_all("fixup! feat: b (TASK-42-b-bestays)");
    let bad = repo
        .git(&["rev-parse", "--short=7", "HEAD~1"])
        .trim()
        .to_string();
    let out = run(
        repo.path(),
        &["lint", "commit", "--range", &format!("{base}..HEAD")],
    );
    out.assert_code(1);
    assert!(
        out.stdout
            .contains(&format!("✗ {bad} feat: b (TASK-42-b-bestays)")),
        "{}",
        out.snapshot()
    );
    assert!(
        out.stdout
            .contains("3 commit(s) checked: 1 failed, 1 skipped"),
        "{}",
        out.snapshot()
    );
    let out = run(
        repo.path(),
        &[
            "lint",
            "commit",
            "--range",
            &format!("{base}..HEAD"),
            "--include-skipped",
        ],
    );
    out.assert_code(1);
    // The empty fixup commit names bestays and changes nothing: it passes when checked too.
    assert!(
        out.stdout
            .contains("3 commit(s) checked: 1 failed, 0 skipped"),
        "{}",
        out.snapshot()
    );
}

#[test]
fn required_trailers_from_conventions() {
    let repo = example_repo();
    let m = std::fs::read_to_string(repo.path().join("berth.toml"))
        .unwrap()
        .replace(
            "required_trailers = []",
            "required_trailers = [\"Product\"]",
        );
    repo.write("berth.toml", &m);
    let out = lint_stdin(repo.path(), "feat: x (TASK-1-x-bestays)");
    out.assert_code(1);
    assert!(out.stdout.contains("missing-trailer"), "{}", out.snapshot());
    lint_stdin(
        repo.path(),
        "feat: x (TASK-1-x-bestays)\n\nProduct: bestays",
    )
    .assert_code(0);
}

#[test]
fn branches() {
    let repo = example_repo();
    for (name, code) in [
        ("feat/TASK-001-login-bestays-US-001", 0),
        ("fix/TASK-2-typo-realestate", 0),
        ("main", 0),
        ("release/2026-11", 0),
        ("feature/login", 1),
        ("feat/TASK-3-database-schema", 1),
        ("feat/login-bestays", 1),
    ] {
        let out = run(repo.path(), &["lint", "branch", name]);
        assert_eq!(out.code, code, "{name}\n{}", out.snapshot());
    }
    repo.git(&["checkout", "-q", "-b", "feat/TASK-4-search-bestays"]);
    let out = run(repo.path(), &["lint", "branch"]);
    out.assert_code(0);
    assert_eq!(out.stdout, "branch `feat/TASK-4-search-bestays`: ok\n");
    let out = run(
        repo.path(),
        &[
            "lint",
            "branch",
            "feat/TASK-5-search-bestyas",
            "--format",
            "json",
        ],
    );
    out.assert_code(1);
    assert!(
        out.stdout.contains("did you mean `bestays`?"),
        "{}",
        out.snapshot()
    );
}

#[test]
fn bad_revisions_are_usage_errors_and_options_cannot_be_smuggled_in() {
    let repo = example_repo();
    let out = run(repo.path(), &["lint", "commit", "--range", "nope..HEAD"]);
    out.assert_code(2);
    assert!(
        out.stderr.contains("`nope` names no commit"),
        "{}",
        out.snapshot()
    );
    let target = repo.path().join("leak.txt");
    let out = run(
        repo.path(),
        &[
            "lint",
            "commit",
            &format!("--range=--output={}", target.display()),
        ],
    );
    out.assert_code(2);
    assert!(!target.exists(), "git must not have been handed the option");
    let out = run(
        repo.path(),
        &[
            "log",
            "--product",
            "bestays",
            "--",
            &format!("--output={}", target.display()),
        ],
    );
    out.assert_code(2);
    assert!(!target.exists());
    let empty = GitRepo::new();
    empty.write("berth.toml", "[project]\nname = \"x\"\n\n[products.a]\n");
    let out = run(empty.path(), &["log", "--product", "a"]);
    out.assert_code(2);
    assert!(out.stderr.contains("no commits yet"), "{}", out.snapshot());
}

#[test]
fn a_custom_task_pattern_with_the_slug_first_gets_a_correct_hint() {
    let repo = example_repo();
    let m = std::fs::read_to_string(repo.path().join("berth.toml")).unwrap().replace(
        "[conventions]\n",
        "[conventions]\ntask_pattern = '(?P<slug>[a-z]+(?:-[a-z]+)*)/TASK-(?P<number>\\d+)é*'\n",
    );
    repo.write("berth.toml", &m);
    let out = lint_stdin(repo.path(), "search-bestyas/TASK-1ééééé");
    out.assert_code(1);
    assert!(
        out.stdout.contains("search-bestays/TASK-1"),
        "{}",
        out.snapshot()
    );
}

#[test]
fn git_commit_v_diff_below_the_scissors_is_not_linted() {
    let repo = example_repo();
    run(repo.path(), &["hooks", "install"]).assert_code(0);
    repo.write("products/bestays/notes.md", "see TASK-77-fix-bestays\n");
    repo.git(&["add", "-A"]);
    let out = std::process::Command::new("git")
        .args(["commit", "-q", "-v", "-e", "-m", "fix: typo"])
        .current_dir(repo.path())
        .env("GIT_EDITOR", "true")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the task in the diff must not count");
    // git sends a hook's output to stderr.
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("task-required"), "{text}");
}

#[test]
fn control_sequences_from_commits_branches_and_input_never_reach_the_terminal_raw() {
    let repo = attribution_repo();
    repo.write("products/bestays/a.py", "x");
    // A title-setting OSC and a clear-screen CSI in a commit subject and its body.
    let hostile =
        "fix: \u{1b}]0;pwned\u{7} x \u{1b}[2J (TASK-1-a-bestays)\n\nbody \u{1b}[2J\u{9b}31m";
    repo.commit_all(hostile);
    repo.write("products/bestays/b.py", "x");
    repo.commit_all("fix: \u{1b}]0;pwned\u{7} no task here \u{1b}[2J");
    let outs = [
        run(repo.path(), &["lint", "commit", "--range", "HEAD~2..HEAD"]),
        run(repo.path(), &["log", "--product", "bestays"]),
        run(
            repo.path(),
            &["lint", "branch", "feat/\u{1b}]0;pwned\u{7}\u{1b}[2J"],
        ),
        run(repo.path(), &["log", "--product", "\u{1b}[2Jbestays"]),
    ];
    for out in &outs {
        let all = out.all();
        assert!(
            !all.contains('\u{1b}') && !all.contains('\u{7}') && !all.contains('\u{9b}'),
            "a raw control character was printed: {all:?}"
        );
        assert!(all.contains("\\x1b"), "shown escaped: {all:?}");
    }
    outs[0].assert_code(1);
    assert!(
        outs[0].stdout.contains("\\x1b]0;pwned\\x07"),
        "{}",
        outs[0].stdout
    );
    outs[1].assert_code(0);
    assert!(outs[1].stdout.contains("\\x1b[2J"), "{}", outs[1].stdout);
    outs[3].assert_code(2);
}
