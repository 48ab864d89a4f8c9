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
