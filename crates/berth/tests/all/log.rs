use crate::support::*;

fn subjects(v: &serde_json::Value) -> Vec<String> {
    v["commits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["subject"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn log_by_product_task_and_story() {
    let repo = attribution_repo();
    repo.write("products/bestays/a.py", "x");
    repo.commit_all("feat: a (US-001 TASK-001-login-bestays)");
    repo.commit_all("feat: port login (US-001 TASK-050-port-login-realestate)");
    repo.write("apps/server/s.py", "x");
    repo.commit_all("fix: server (US-002 TASK-051-server-bestays)");
    repo.commit_all("docs: mention bestays in prose only (TASK-052-notes-docs)");

    let v = json(repo.path(), &["log", "--product", "realestate"], 0);
    assert_eq!(
        subjects(&v),
        [
            "fix: server (US-002 TASK-051-server-bestays)",
            "feat: port login (US-001 TASK-050-port-login-realestate)"
        ]
    );
    // Unlike `git log --grep=bestays`, prose mentions do not count.
    let v = json(repo.path(), &["log", "--product", "bestays"], 0);
    assert_eq!(
        subjects(&v),
        [
            "fix: server (US-002 TASK-051-server-bestays)",
            "feat: a (US-001 TASK-001-login-bestays)"
        ]
    );
    let v = json(repo.path(), &["log", "--task", "TASK-050"], 0);
    assert_eq!(
        subjects(&v),
        ["feat: port login (US-001 TASK-050-port-login-realestate)"]
    );
    let v = json(repo.path(), &["log", "--task", "TASK-001-login-bestays"], 0);
    assert_eq!(subjects(&v).len(), 1);
    let v = json(repo.path(), &["log", "--story", "US-001"], 0);
    assert_eq!(subjects(&v).len(), 2);
    // Aliases resolve; unknown names are usage errors with a hint.
    let v = json(repo.path(), &["log", "--product", "real-estate"], 0);
    assert_eq!(subjects(&v).len(), 2);
    let out = run(repo.path(), &["log", "--product", "bestay"]);
    out.assert_code(2);
    assert!(
        out.stderr.contains("did you mean `bestays`?"),
        "{}",
        out.snapshot()
    );
    let out = run(repo.path(), &["log", "--product", "bestays"]);
    out.assert_code(0);
    assert_eq!(out.stdout.lines().count(), 2);
}

#[test]
fn log_in_a_shallow_clone_warns_about_the_boundary_commit() {
    let repo = attribution_repo();
    repo.write("products/bestays/a.py", "x");
    repo.commit_all("feat: a (TASK-001-login-bestays)");
    repo.write("products/bestays/b.py", "x");
    let boundary = repo.commit_all("feat: b (TASK-002-search-bestays)");
    repo.write("products/realestate/c.py", "x");
    repo.commit_all("feat: c (TASK-003-list-realestate)");
    let dir = temp_dir();
    let clone = dir.path().join("clone");
    let url = format!("file://{}", repo.path().display());
    for (depth, path) in [("2", clone.clone()), ("0", dir.path().join("full"))] {
        let mut git = std::process::Command::new("git");
        git.args(["clone", "-q"]);
        if depth != "0" {
            git.args(["--depth", depth]);
        }
        assert!(git.arg(&url).arg(&path).status().unwrap().success());
    }
    let out = run(&clone, &["log", "--product", "realestate"]);
    out.assert_code(0);
    let short = &boundary.trim()[..7];
    assert!(
        out.stderr.contains("shallow clone")
            && out.stderr.contains(short)
            && out.stderr.contains("git fetch --unshallow"),
        "{}",
        out.snapshot()
    );
    // The full clone attributes the same commit correctly, without a word.
    let out = run(
        &dir.path().join("full"),
        &["log", "--product", "realestate"],
    );
    out.assert_code(0);
    assert_eq!(out.stderr, "", "{}", out.snapshot());
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.snapshot());
}
